//! Jobs and the queue on PostgreSQL (claims, leases and outcomes: `queue.rs`). Every state
//! change that touches both the job and its queue row happens in one transaction, and takes its
//! row locks in one order: the queue row, then the job row, then the account (through a ledger
//! `Book`). `claim` picks a queue row and its job together with `FOR UPDATE SKIP LOCKED`, so
//! claimers never wait for each other nor for a job that is being canceled; a wait in any other
//! order could deadlock. Token moves that belong to a state change (reserve on enqueue, settle
//! on finish, release on cancel or give-up) are made through the `Book` inside that
//! transaction.

use super::{batch, callbacks, ledger::Book, rows, secrets, webhooks::emit, PgRepo};
use crate::{
    model::*, ClaimFilter, DbResult, IdempotentResponse, JobRepo, QueueEvent, Reservation,
};
use async_trait::async_trait;
use convertrilo_core::{
    capability::Needs, external::Destination, time::now_ms, JobId, JobStatus, Neu, UserId, WireEnum,
};
use sqlx::{PgConnection, Row};
use std::time::Duration;

pub(super) fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Inserts one job row as given (status included); the caller owns the transaction.
pub(super) async fn insert_row(conn: &mut PgConnection, j: &Job) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO jobs (id, user_id, status, spec, ingest, source_url, input_key, input_size, output_key,
           output_size, original_filename, source_filename, output_filename, external_id, metadata,
           duration_sec, media_info, per_minute, estimate, encoder, pct, failure_message, attempts,
           auto_confirm, created_at, queued_at, started_at, finished_at, updated_at, kind, priority,
           price_factor, output_expiry_secs, callback_url, status_token_hash, source_ref, destination)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
           $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36,
           $37)",
    )
    .bind(j.id.to_string())
    .bind(j.user_id.to_string())
    .bind(j.status.as_str())
    .bind(json(&j.spec))
    .bind(j.ingest.as_str())
    .bind(&j.source_url)
    .bind(&j.input_key)
    .bind(j.input_size)
    .bind(&j.output_key)
    .bind(j.output_size)
    .bind(&j.original_filename)
    .bind(&j.source_filename)
    .bind(&j.output_filename)
    .bind(&j.external_id)
    .bind(j.metadata.as_ref().map(json))
    .bind(j.duration_sec)
    .bind(j.media_info.as_ref().map(json))
    .bind(j.per_minute.map(|n| n.millis()))
    .bind(j.estimate.map(|n| n.millis()))
    .bind(&j.encoder)
    .bind(j.pct)
    .bind(&j.failure_message)
    .bind(j.attempts)
    .bind(j.auto_confirm)
    .bind(j.created_at)
    .bind(j.queued_at)
    .bind(j.started_at)
    .bind(j.finished_at)
    .bind(j.created_at)
    .bind(j.kind.as_str())
    .bind(j.priority)
    .bind(j.price_factor.thousandths())
    .bind(j.output_expiry_secs)
    .bind(&j.callback_url)
    .bind(&j.status_token_hash)
    .bind(j.source_ref.as_ref().map(json))
    // NULL is the default destination, so rows from before destinations existed read alike.
    .bind((j.destination != Destination::Cdn).then(|| json(&j.destination)))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Adds a queue row for `job`, with what it needs from its worker; the caller owns the
/// transaction (and has made the job `queued`).
pub(super) async fn push(conn: &mut PgConnection, job: &Job, now: i64) -> DbResult<()> {
    let needs = Needs::of(&job.spec);
    sqlx::query(
        "INSERT INTO queue (job_id, priority, enqueued_at, need_encoder, need_vmaf)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(job.id.to_string())
    .bind(job.priority)
    .bind(now)
    .bind(needs.encoder)
    .bind(needs.vmaf)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[async_trait]
impl JobRepo for PgRepo {
    async fn insert_job(&self, j: &Job) -> DbResult<()> {
        let mut tx = self.pool.begin().await?;
        insert_row(&mut tx, j).await?;
        let (owner, id) = (j.user_id.to_string(), j.id.to_string());
        emit(
            &mut tx,
            &owner,
            &id,
            "job.created",
            JobStatus::Created,
            now_ms(),
        )
        .await?;
        if j.status == JobStatus::Queued {
            emit(
                &mut tx,
                &owner,
                &id,
                "job.queued",
                JobStatus::Queued,
                now_ms(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn insert_jobs(
        &self,
        batch: &[NewJob],
        idem: Option<&IdempotentResponse>,
    ) -> DbResult<Inserted> {
        let inserted = batch::insert_jobs(self, batch, idem).await?;
        if inserted == Inserted::Done && batch.iter().any(|n| n.job.status == JobStatus::Queued) {
            self.announce(QueueEvent::Queued);
        }
        Ok(inserted)
    }

    async fn jobs_by_ids(&self, ids: &[JobId], owner: UserId) -> DbResult<Vec<Job>> {
        batch::jobs_by_ids(&self.pool, ids, owner).await
    }

    async fn enqueue_many(&self, items: &[EnqueueItem]) -> DbResult<BatchEnqueued> {
        let enqueued = batch::enqueue_many(self, items).await?;
        if matches!(&enqueued, BatchEnqueued::Done(jobs) if jobs.iter().any(Option::is_some)) {
            self.announce(QueueEvent::Queued);
        }
        Ok(enqueued)
    }

    async fn job(&self, id: JobId, owner: Option<UserId>) -> DbResult<Option<Job>> {
        let row =
            sqlx::query("SELECT * FROM jobs WHERE id = $1 AND ($2::TEXT IS NULL OR user_id = $2)")
                .bind(id.to_string())
                .bind(owner.map(|o| o.to_string()))
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(rows::job).transpose()
    }

    async fn mark_uploaded(&self, id: JobId, key: &str, size: u64) -> DbResult<Option<String>> {
        let mut tx = self.pool.begin().await?;
        // Locks the row while it is still `created`, so the key read is the one replaced.
        let previous: Option<String> = sqlx::query_scalar(
            "SELECT input_key FROM jobs WHERE id = $1 AND status = 'created' FOR NO KEY UPDATE",
        )
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(previous) = previous else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE jobs SET input_key = $1, input_size = $2, media_info = NULL, duration_sec = NULL,
               per_minute = NULL, estimate = NULL, updated_at = $3 WHERE id = $4",
        )
        .bind(key)
        .bind(size as i64)
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(previous))
    }

    async fn save_estimate(&self, id: JobId, u: &EstimateUpdate) -> DbResult<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET spec = $1, output_filename = $2, duration_sec = $3, media_info = $4,
               per_minute = $5, estimate = $6, updated_at = $7
             WHERE id = $8 AND status = 'created'",
        )
        .bind(json(&u.spec))
        .bind(&u.output_filename)
        .bind(u.duration_sec)
        .bind(u.media_info.as_ref().map(json))
        .bind(u.per_minute.map(|n| n.millis()))
        .bind(u.estimate.map(|n| n.millis()))
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn enqueue(
        &self,
        id: JobId,
        u: Option<&EstimateUpdate>,
        priority: i32,
        reserve: Option<Neu>,
    ) -> DbResult<Enqueued> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // Locks the job; a concurrent confirm or cancel waits, then finds it no longer created.
        let moved = sqlx::query(
            "UPDATE jobs SET status = 'queued', queued_at = $1, updated_at = $1
             WHERE id = $2 AND status = 'created' RETURNING user_id",
        )
        .bind(now)
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(moved) = moved else {
            return Ok(Enqueued::NotCreated);
        };
        let owner_id: String = moved.try_get("user_id")?;
        emit(
            &mut tx,
            &owner_id,
            &id.to_string(),
            "job.queued",
            JobStatus::Queued,
            now,
        )
        .await?;
        if let Some(amount) = reserve {
            let owner = rows::parse_id(&owner_id)?;
            let mut book = Book::open(&mut tx, owner, now).await?;
            if let Reservation::Insufficient {
                required,
                available,
            } = book.reserve(&mut tx, id, amount).await?
            {
                // Dropping the transaction rolls back the status change too.
                return Ok(Enqueued::Insufficient {
                    required,
                    available,
                });
            }
        }
        if let Some(u) = u {
            sqlx::query(
                "UPDATE jobs SET spec = $1, output_filename = $2, duration_sec = $3, media_info = $4,
                   per_minute = $5, estimate = $6
                 WHERE id = $7",
            )
            .bind(json(&u.spec))
            .bind(&u.output_filename)
            .bind(u.duration_sec)
            .bind(u.media_info.as_ref().map(json))
            .bind(u.per_minute.map(|n| n.millis()))
            .bind(u.estimate.map(|n| n.millis()))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        }
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        let job = rows::job(&row)?;
        push(
            &mut tx,
            &Job {
                priority,
                ..job.clone()
            },
            now,
        )
        .await?;
        self.notify(&mut tx, &QueueEvent::Queued).await?;
        tx.commit().await?;
        self.announce(QueueEvent::Queued);
        Ok(Enqueued::Queued(job))
    }

    async fn cancel(&self, id: JobId, owner: UserId) -> DbResult<Option<Canceled>> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // The queue row first, as claim, heartbeat, finish and release lock it: taking the job
        // first could deadlock with a worker that holds the queue row and waits for the job.
        // (A queue row that appears while we wait for the job below was written by a confirm;
        // no worker waits for us while holding it, as a claim skips a job that is locked.)
        sqlx::query(
            "SELECT q.job_id FROM queue q JOIN jobs j ON j.id = q.job_id
             WHERE q.job_id = $1 AND j.user_id = $2 FOR UPDATE OF q",
        )
        .bind(id.to_string())
        .bind(owner.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let canceled = sqlx::query(
            "UPDATE jobs SET status = 'canceled', finished_at = $1, updated_at = $1,
               failure_message = 'canceled by the user'
             WHERE id = $2 AND user_id = $3 AND status IN ('created', 'queued', 'running')
             RETURNING status",
        )
        .bind(now)
        .bind(id.to_string())
        .bind(owner.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let previous = sqlx::query("SELECT status FROM jobs WHERE id = $1 AND user_id = $2")
            .bind(id.to_string())
            .bind(owner.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = previous else {
            return Ok(None);
        };
        let mut released = Neu::ZERO;
        let status = if canceled.is_some() {
            released = Book::open(&mut tx, owner, now)
                .await?
                .release(&mut tx, id, None)
                .await?;
            callbacks::queue(&mut tx, &id.to_string(), JobStatus::Canceled, now).await?;
            secrets::delete(&mut tx, &id.to_string()).await?;
            let (o, j) = (owner.to_string(), id.to_string());
            emit(&mut tx, &o, &j, "job.canceled", JobStatus::Canceled, now).await?;
            self.notify(&mut tx, &QueueEvent::Canceled(id)).await?;
            // The queue row, if any, tells whether it was waiting or running.
            let q = sqlx::query(
                "DELETE FROM queue WHERE job_id = $1 RETURNING lease_owner, lease_until",
            )
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            match q {
                Some(q)
                    if q.try_get::<Option<i64>, _>("lease_until")?
                        .is_some_and(|t| t >= now) =>
                {
                    JobStatus::Running
                }
                Some(_) => JobStatus::Queued,
                None => JobStatus::Created,
            }
        } else {
            let s: &str = row.try_get("status")?;
            JobStatus::parse(s).unwrap_or(JobStatus::Failed)
        };
        tx.commit().await?;
        if canceled.is_some() {
            self.announce(QueueEvent::Canceled(id));
        }
        Ok(Some(Canceled {
            previous: status,
            released,
        }))
    }

    async fn claim(
        &self,
        worker: &str,
        lease: Duration,
        max_attempts: i32,
        can: &ClaimFilter,
    ) -> DbResult<Option<Job>> {
        self.queue_claim(worker, lease, max_attempts, can).await
    }

    async fn heartbeat(
        &self,
        id: JobId,
        worker: &str,
        lease: Duration,
        p: &Progress,
    ) -> DbResult<Heartbeat> {
        self.queue_heartbeat(id, worker, lease, p).await
    }

    async fn finish(&self, id: JobId, worker: &str, outcome: &Outcome) -> DbResult<bool> {
        self.queue_finish(id, worker, outcome).await
    }

    async fn release(&self, id: JobId, worker: &str, why: HandBack<'_>) -> DbResult<HandedBack> {
        self.queue_release(id, worker, why).await
    }

    async fn fail_queued(&self, id: JobId, message: &str) -> DbResult<bool> {
        self.queue_fail_queued(id, message).await
    }

    async fn purgeable(&self, now: i64, limit: i64) -> DbResult<Vec<Purge>> {
        // Upload jobs whether or not their upload finished: a stream's parts may be left over.
        let input_due = "ingest = 'upload' AND input_purged_at IS NULL";
        let output_due = "status = 'success' AND output_expiry_secs IS NOT NULL
             AND output_purged_at IS NULL AND finished_at + output_expiry_secs * 1000 <= $1";
        let sql = format!(
            "SELECT id, CASE WHEN {input_due} THEN input_key END AS input_key,
               CASE WHEN {output_due} THEN output_key END AS output_key
             FROM jobs
             WHERE status IN ('success', 'failed', 'canceled') AND (({input_due}) OR ({output_due}))
             ORDER BY finished_at LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Purge {
                    job_id: rows::parse_id(row.try_get::<&str, _>("id")?)?,
                    input_key: row.try_get("input_key")?,
                    output_key: row.try_get("output_key")?,
                })
            })
            .collect()
    }

    async fn mark_purged(&self, p: &Purge, now: i64) -> DbResult<()> {
        sqlx::query(
            "UPDATE jobs SET
               input_purged_at = CASE WHEN $1 THEN $3 ELSE input_purged_at END,
               output_purged_at = CASE WHEN $2 THEN $3 ELSE output_purged_at END
             WHERE id = $4",
        )
        .bind(p.input_key.is_some())
        .bind(p.output_key.is_some())
        .bind(now)
        .bind(p.job_id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn due_callbacks(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> DbResult<Vec<Callback>> {
        callbacks::due(&self.pool, now, lease_until, limit).await
    }

    async fn callback_attempted(
        &self,
        id: i64,
        error: Option<&str>,
        retry_at: Option<i64>,
    ) -> DbResult<()> {
        callbacks::attempted(&self.pool, id, error, retry_at).await
    }

    async fn job_secret(&self, id: JobId) -> DbResult<Option<Vec<u8>>> {
        self.job_secret_row(id).await
    }

    async fn replace_job_secret(&self, id: JobId, sealed: &[u8]) -> DbResult<bool> {
        self.replace_job_secret_row(id, sealed).await
    }

    async fn queue_depth(&self) -> DbResult<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) FROM queue WHERE lease_until IS NULL OR lease_until < $1")
                .bind(now_ms())
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?,
        )
    }
}
