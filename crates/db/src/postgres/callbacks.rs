//! The outbox of one-off job callbacks on PostgreSQL. Rows are queued by the transaction that
//! ends the job, so a callback exists exactly when the job ended; dispatchers lease due rows
//! by moving their `next_attempt_at` forward in the statement that picks them, skipping rows
//! another dispatcher is leasing at that moment.

use super::rows;
use crate::{model::Callback, DbResult};
use convertrilo_core::{time::now_ms, JobStatus};
use sqlx::{PgConnection, PgPool, Row};

/// The event name a terminal status is announced with.
pub(crate) fn event_of(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Success => "job.completed",
        JobStatus::Canceled => "job.canceled",
        _ => "job.failed",
    }
}

/// Queues the job's callback, if it has a callback URL, inside the caller's transaction.
pub(super) async fn queue(
    conn: &mut PgConnection,
    job_id: &str,
    status: JobStatus,
    now: i64,
) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO job_callbacks (job_id, event, next_attempt_at, created_at)
         SELECT id, $1, $2, $2 FROM jobs WHERE id = $3 AND callback_url IS NOT NULL",
    )
    .bind(event_of(status))
    .bind(now)
    .bind(job_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn due(
    pool: &PgPool,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> DbResult<Vec<Callback>> {
    let mut tx = pool.begin().await?;
    // SKIP LOCKED: concurrent dispatchers lease disjoint rows and never wait for each other.
    // A row whose lease was extended meanwhile is re-checked and left out.
    let picked = sqlx::query(
        "WITH due AS (
           SELECT id FROM job_callbacks WHERE next_attempt_at <= $2
           ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
         UPDATE job_callbacks c SET next_attempt_at = $1 FROM due WHERE c.id = due.id
         RETURNING c.id, c.job_id, c.event, c.attempts, c.created_at",
    )
    .bind(lease_until)
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Vec::with_capacity(picked.len());
    for row in picked {
        let job_id: String = row.try_get("job_id")?;
        let job = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(&job_id)
            .fetch_optional(&mut *tx)
            .await?;
        // The job row and its callbacks go together (ON DELETE CASCADE).
        let Some(job) = job else { continue };
        out.push(Callback {
            id: row.try_get("id")?,
            event: row.try_get("event")?,
            attempts: row.try_get("attempts")?,
            created_at: row.try_get("created_at")?,
            job: rows::job(&job)?,
        });
    }
    tx.commit().await?;
    out.sort_by_key(|c| c.id);
    Ok(out)
}

pub(super) async fn attempted(
    pool: &PgPool,
    id: i64,
    error: Option<&str>,
    retry_at: Option<i64>,
) -> DbResult<()> {
    let delivered = error.is_none().then(now_ms);
    sqlx::query(
        "UPDATE job_callbacks SET attempts = attempts + 1, delivered_at = $1, last_error = $2,
           next_attempt_at = $3
         WHERE id = $4",
    )
    .bind(delivered)
    .bind(error)
    .bind(if error.is_none() { None } else { retry_at })
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}
