//! The queue half of the jobs repository on PostgreSQL: claiming a job under a lease,
//! heartbeats, finishing, handing back and failing queued jobs no worker can run. The
//! `JobRepo` implementation in `jobs.rs` delegates here; the locking rules in its module note
//! hold for these too.

use super::{
    callbacks,
    jobs::json,
    ledger::Book,
    ms, rows, secrets,
    webhooks::{emit, emit_for_job},
    PgRepo,
};
use crate::{model::*, ClaimFilter, DbResult, QueueEvent};
use convertrilo_core::{time::now_ms, JobId, JobStatus, Neu};
use sqlx::{PgConnection, Row};
use std::time::Duration;

/// Fails a job that will not run (too many attempts, or no worker can run it): its queue
/// row, reservation and credentials go in the caller's transaction, which holds the queue row
/// already. False when the job had already ended.
async fn give_up(conn: &mut PgConnection, job_id: &str, msg: &str, now: i64) -> DbResult<bool> {
    sqlx::query("DELETE FROM queue WHERE job_id = $1")
        .bind(job_id)
        .execute(&mut *conn)
        .await?;
    let failed = sqlx::query(
        "UPDATE jobs SET status = 'failed', failure_message = $1, finished_at = $2, updated_at = $2
         WHERE id = $3 AND status IN ('queued', 'running') RETURNING user_id",
    )
    .bind(msg)
    .bind(now)
    .bind(job_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(failed) = &failed {
        let owner = rows::parse_id(failed.try_get::<&str, _>("user_id")?)?;
        let mut book = Book::open(&mut *conn, owner, now).await?;
        book.release(&mut *conn, rows::parse_id(job_id)?, None)
            .await?;
        callbacks::queue(&mut *conn, job_id, JobStatus::Failed, now).await?;
        emit_for_job(&mut *conn, job_id, "job.failed", JobStatus::Failed, now).await?;
    }
    // The job will not run again: its credentials go with this transition.
    secrets::delete(&mut *conn, job_id).await?;
    Ok(failed.is_some())
}

impl PgRepo {
    pub(super) async fn queue_claim(
        &self,
        worker: &str,
        lease: Duration,
        max_attempts: i32,
        can: &ClaimFilter,
    ) -> DbResult<Option<Job>> {
        loop {
            let now = now_ms();
            let mut tx = self.pool.begin().await?;
            // One statement picks and leases the row. SKIP LOCKED passes over rows another
            // claimer is taking (so two never get the same job, nor wait for each other) and
            // over jobs being canceled or finished; `seq` orders rows queued at the same
            // millisecond, as SQLite's rowid does. Only jobs the worker can run: `$4` lists its
            // tokens as ',h264,gpu:h264,' (empty: any job).
            let claimed = sqlx::query(
                "WITH next AS (
                   SELECT q.job_id FROM queue q JOIN jobs j ON j.id = q.job_id
                   WHERE (q.lease_until IS NULL OR q.lease_until < $3)
                     AND (q.not_before IS NULL OR q.not_before <= $3)
                     AND ($4 = '' OR q.need_encoder = '' OR strpos($4, ',' || q.need_encoder || ',') > 0)
                     AND (NOT q.need_vmaf OR $5)
                   ORDER BY q.priority DESC, q.enqueued_at, q.seq LIMIT 1
                   FOR NO KEY UPDATE OF q, j SKIP LOCKED)
                 UPDATE queue q SET lease_owner = $1, lease_until = $2, attempts = q.attempts + 1
                 FROM next WHERE q.job_id = next.job_id
                 RETURNING q.job_id, q.attempts",
            )
            .bind(worker)
            .bind(now + ms(lease))
            .bind(now)
            .bind(&can.tokens)
            .bind(can.vmaf)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(claimed) = claimed else {
                return Ok(None);
            };
            let job_id: String = claimed.try_get("job_id")?;
            let attempts: i32 = claimed.try_get("attempts")?;
            if attempts > max_attempts {
                let msg = interrupted_message(attempts - 1);
                give_up(&mut tx, &job_id, &msg, now).await?;
                tx.commit().await?;
                continue;
            }
            let row = sqlx::query(
                "UPDATE jobs SET status = 'running', attempts = $1, pct = 0, started_at = $2, updated_at = $2
                 WHERE id = $3 AND status IN ('queued', 'running') RETURNING *",
            )
            .bind(attempts)
            .bind(now)
            .bind(&job_id)
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                Some(row) => {
                    let job = rows::job(&row)?;
                    let (o, j) = (job.user_id.to_string(), job.id.to_string());
                    emit(&mut tx, &o, &j, "job.running", JobStatus::Running, now).await?;
                    tx.commit().await?;
                    return Ok(Some(job));
                }
                None => {
                    // A queue row without a live job (should not happen): drop it and look again.
                    sqlx::query("DELETE FROM queue WHERE job_id = $1")
                        .bind(&job_id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                }
            }
        }
    }

    pub(super) async fn queue_heartbeat(
        &self,
        id: JobId,
        worker: &str,
        lease: Duration,
        p: &Progress,
    ) -> DbResult<Heartbeat> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let held =
            sqlx::query("UPDATE queue SET lease_until = $1 WHERE job_id = $2 AND lease_owner = $3")
                .bind(now + ms(lease))
                .bind(id.to_string())
                .bind(worker)
                .execute(&mut *tx)
                .await?;
        if held.rows_affected() == 0 {
            return Ok(Heartbeat::Lost);
        }
        sqlx::query(
            "UPDATE jobs SET pct = COALESCE($1, pct), encoder = COALESCE($2, encoder), updated_at = $3
             WHERE id = $4 AND status = 'running'",
        )
        .bind(p.pct)
        .bind(&p.encoder)
        .bind(now)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Heartbeat::Continue)
    }

    pub(super) async fn queue_finish(
        &self,
        id: JobId,
        worker: &str,
        outcome: &Outcome,
    ) -> DbResult<bool> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // Deleting the queue row locks it; a cancel that got there first has deleted it.
        let held = sqlx::query("DELETE FROM queue WHERE job_id = $1 AND lease_owner = $2")
            .bind(id.to_string())
            .bind(worker)
            .execute(&mut *tx)
            .await?;
        if held.rows_affected() == 0 {
            return Ok(false);
        }
        let (finished, cost, status) = match outcome {
            Outcome::Success {
                output_size,
                duration_sec,
                cost,
                vmaf,
            } => {
                let row = sqlx::query(
                    "UPDATE jobs SET status = 'success', pct = 100, output_size = $1,
                       output_duration_sec = $2, vmaf = $3, finished_at = $4, updated_at = $4
                     WHERE id = $5 AND status = 'running' RETURNING user_id",
                )
                .bind(output_size)
                .bind(duration_sec)
                .bind(vmaf.as_ref().map(json))
                .bind(now)
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
                (row, *cost, JobStatus::Success)
            }
            Outcome::Failed { message } => {
                let row = sqlx::query(
                    "UPDATE jobs SET status = 'failed', failure_message = $1, finished_at = $2, updated_at = $2
                     WHERE id = $3 AND status = 'running' RETURNING user_id",
                )
                .bind(message)
                .bind(now)
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
                (row, Neu::ZERO, JobStatus::Failed)
            }
        };
        if let Some(row) = &finished {
            let owner = rows::parse_id(row.try_get::<&str, _>("user_id")?)?;
            let mut book = Book::open(&mut tx, owner, now).await?;
            book.settle(&mut tx, id, cost).await?;
            callbacks::queue(&mut tx, &id.to_string(), status, now).await?;
            secrets::delete(&mut tx, &id.to_string()).await?;
            let event = callbacks::event_of(status);
            emit(
                &mut tx,
                &owner.to_string(),
                &id.to_string(),
                event,
                status,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(finished.is_some())
    }

    pub(super) async fn queue_release(
        &self,
        id: JobId,
        worker: &str,
        why: HandBack<'_>,
    ) -> DbResult<HandedBack> {
        let now = now_ms();
        let job_id = id.to_string();
        let mut tx = self.pool.begin().await?;
        // Either way the attempt is refunded: attempts count the runs a worker did not survive.
        let held = sqlx::query(
            "UPDATE queue SET lease_owner = NULL, lease_until = NULL, attempts = attempts - 1,
               retries = retries + $1
             WHERE job_id = $2 AND lease_owner = $3 RETURNING retries",
        )
        .bind(why.retry_count())
        .bind(&job_id)
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(held) = held else {
            return Ok(HandedBack::NotHeld);
        };
        let retries: i32 = held.try_get("retries")?;
        let after = match why.wait(retries) {
            Ok(after) => after,
            Err(msg) => {
                give_up(&mut tx, &job_id, &msg, now).await?;
                tx.commit().await?;
                return Ok(HandedBack::GivenUp);
            }
        };
        sqlx::query("UPDATE queue SET not_before = $1 WHERE job_id = $2")
            .bind((after > Duration::ZERO).then(|| now + ms(after)))
            .bind(&job_id)
            .execute(&mut *tx)
            .await?;
        let back = sqlx::query(
            "UPDATE jobs SET status = 'queued', pct = NULL, updated_at = $1
             WHERE id = $2 AND status = 'running'",
        )
        .bind(now)
        .bind(&job_id)
        .execute(&mut *tx)
        .await?;
        if back.rows_affected() == 1 {
            emit_for_job(&mut tx, &job_id, "job.queued", JobStatus::Queued, now).await?;
        }
        self.notify(&mut tx, &QueueEvent::Queued).await?;
        tx.commit().await?;
        self.announce(QueueEvent::Queued);
        Ok(HandedBack::Queued { after })
    }

    pub(super) async fn queue_fail_queued(&self, id: JobId, message: &str) -> DbResult<bool> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // Locks the queue row while it waits under no live lease: a claim that took it first
        // has leased it (the re-check then finds nothing), and a later claim skips it.
        let waiting: Option<String> = sqlx::query_scalar(
            "SELECT job_id FROM queue
             WHERE job_id = $1 AND (lease_until IS NULL OR lease_until < $2) FOR UPDATE",
        )
        .bind(id.to_string())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if waiting.is_none() {
            return Ok(false);
        }
        let failed = give_up(&mut tx, &id.to_string(), message, now).await?;
        tx.commit().await?;
        Ok(failed)
    }
}
