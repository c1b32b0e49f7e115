//! The queue half of the jobs repository on SQLite: claiming a job under a lease,
//! heartbeats, finishing, handing back and failing queued jobs no worker can run. The
//! `JobRepo` implementation in `jobs.rs` delegates here; the locking rules in its module note
//! hold for these too.

use super::{
    callbacks,
    jobs::json,
    ledger::Book,
    ms, rows, secrets,
    webhooks::{emit, emit_for_job},
    SqliteRepo,
};
use crate::{model::*, ClaimFilter, DbResult, QueueEvent};
use convertrilo_core::{time::now_ms, JobId, JobStatus, Neu};
use sqlx::{Row, SqliteConnection};
use std::time::Duration;

/// Fails a job that will not run (too many attempts, or no worker can run it): its queue
/// row, reservation and credentials go in the caller's transaction. False when the job had
/// already ended.
async fn give_up(conn: &mut SqliteConnection, job_id: &str, msg: &str, now: i64) -> DbResult<bool> {
    sqlx::query("DELETE FROM queue WHERE job_id = ?")
        .bind(job_id)
        .execute(&mut *conn)
        .await?;
    let failed = sqlx::query(
        "UPDATE jobs SET status = 'failed', failure_message = ?, finished_at = ?, updated_at = ?
         WHERE id = ? AND status IN ('queued', 'running') RETURNING user_id",
    )
    .bind(msg)
    .bind(now)
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

impl SqliteRepo {
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
            // One statement picks and leases the row, so two claimers never get the same job.
            let claimed = sqlx::query(
                "UPDATE queue SET lease_owner = ?, lease_until = ?, attempts = attempts + 1
                 WHERE job_id = (
                   SELECT job_id FROM queue WHERE (lease_until IS NULL OR lease_until < ?)
                     AND (not_before IS NULL OR not_before <= ?)
                     AND (? = '' OR need_encoder = '' OR instr(?, ',' || need_encoder || ',') > 0)
                     AND (need_vmaf = 0 OR ?)
                   ORDER BY priority DESC, enqueued_at, rowid LIMIT 1)
                 RETURNING job_id, attempts",
            )
            .bind(worker)
            .bind(now + ms(lease))
            .bind(now)
            .bind(now)
            .bind(&can.tokens)
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
                "UPDATE jobs SET status = 'running', attempts = ?, pct = 0, started_at = ?, updated_at = ?
                 WHERE id = ? AND status IN ('queued', 'running') RETURNING *",
            )
            .bind(attempts)
            .bind(now)
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
                    sqlx::query("DELETE FROM queue WHERE job_id = ?")
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
            sqlx::query("UPDATE queue SET lease_until = ? WHERE job_id = ? AND lease_owner = ?")
                .bind(now + ms(lease))
                .bind(id.to_string())
                .bind(worker)
                .execute(&mut *tx)
                .await?;
        if held.rows_affected() == 0 {
            return Ok(Heartbeat::Lost);
        }
        sqlx::query(
            "UPDATE jobs SET pct = COALESCE(?, pct), encoder = COALESCE(?, encoder), updated_at = ?
             WHERE id = ? AND status = 'running'",
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
        let held = sqlx::query("DELETE FROM queue WHERE job_id = ? AND lease_owner = ?")
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
                    "UPDATE jobs SET status = 'success', pct = 100, output_size = ?,
                       output_duration_sec = ?, vmaf = ?, finished_at = ?, updated_at = ?
                     WHERE id = ? AND status = 'running' RETURNING user_id",
                )
                .bind(output_size)
                .bind(duration_sec)
                .bind(vmaf.as_ref().map(json))
                .bind(now)
                .bind(now)
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
                (row, *cost, JobStatus::Success)
            }
            Outcome::Failed { message } => {
                let row = sqlx::query(
                    "UPDATE jobs SET status = 'failed', failure_message = ?, finished_at = ?, updated_at = ?
                     WHERE id = ? AND status = 'running' RETURNING user_id",
                )
                .bind(message)
                .bind(now)
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
               retries = retries + ?
             WHERE job_id = ? AND lease_owner = ? RETURNING retries",
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
        sqlx::query("UPDATE queue SET not_before = ? WHERE job_id = ?")
            .bind((after > Duration::ZERO).then(|| now + ms(after)))
            .bind(&job_id)
            .execute(&mut *tx)
            .await?;
        let back = sqlx::query(
            "UPDATE jobs SET status = 'queued', pct = NULL, updated_at = ?
             WHERE id = ? AND status = 'running'",
        )
        .bind(now)
        .bind(&job_id)
        .execute(&mut *tx)
        .await?;
        if back.rows_affected() == 1 {
            emit_for_job(&mut tx, &job_id, "job.queued", JobStatus::Queued, now).await?;
        }
        tx.commit().await?;
        self.announce(QueueEvent::Queued);
        Ok(HandedBack::Queued { after })
    }

    pub(super) async fn queue_fail_queued(&self, id: JobId, message: &str) -> DbResult<bool> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // Writing first takes the lock, so a claim cannot slip in between check and failure.
        let waiting = sqlx::query(
            "UPDATE queue SET lease_until = lease_until
             WHERE job_id = ? AND (lease_until IS NULL OR lease_until < ?)",
        )
        .bind(id.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if waiting.rows_affected() == 0 {
            return Ok(false);
        }
        let failed = give_up(&mut tx, &id.to_string(), message, now).await?;
        tx.commit().await?;
        Ok(failed)
    }
}
