//! The outbox of one-off job callbacks on SQLite. Rows are queued by the transaction that
//! ends the job, so a callback exists exactly when the job ended; dispatchers lease due rows
//! by moving their `next_attempt_at` forward in the statement that picks them.

use super::rows;
use crate::{model::Callback, DbResult};
use convertrilo_core::{time::now_ms, JobStatus};
use sqlx::{Row, SqliteConnection, SqlitePool};

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
    conn: &mut SqliteConnection,
    job_id: &str,
    status: JobStatus,
    now: i64,
) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO job_callbacks (job_id, event, next_attempt_at, created_at)
         SELECT id, ?, ?, ? FROM jobs WHERE id = ? AND callback_url IS NOT NULL",
    )
    .bind(event_of(status))
    .bind(now)
    .bind(now)
    .bind(job_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn due(
    pool: &SqlitePool,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> DbResult<Vec<Callback>> {
    // A plain read first: the dispatcher polls every second and should not take SQLite's
    // write lock when nothing is due (almost always).
    let any: Option<i64> =
        sqlx::query_scalar("SELECT id FROM job_callbacks WHERE next_attempt_at <= ? LIMIT 1")
            .bind(now)
            .fetch_optional(pool)
            .await?;
    if any.is_none() {
        return Ok(Vec::new());
    }
    let mut tx = pool.begin().await?;
    let picked = sqlx::query(
        "UPDATE job_callbacks SET next_attempt_at = ?
         WHERE id IN (SELECT id FROM job_callbacks WHERE next_attempt_at <= ?
                      ORDER BY next_attempt_at, id LIMIT ?)
         RETURNING id, job_id, event, attempts, created_at",
    )
    .bind(lease_until)
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Vec::with_capacity(picked.len());
    for row in picked {
        let job_id: String = row.try_get("job_id")?;
        let job = sqlx::query("SELECT * FROM jobs WHERE id = ?")
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
    pool: &SqlitePool,
    id: i64,
    error: Option<&str>,
    retry_at: Option<i64>,
) -> DbResult<()> {
    let delivered = error.is_none().then(now_ms);
    sqlx::query(
        "UPDATE job_callbacks SET attempts = attempts + 1, delivered_at = ?, last_error = ?,
           next_attempt_at = ?
         WHERE id = ?",
    )
    .bind(delivered)
    .bind(error)
    .bind(if error.is_none() { None } else { retry_at })
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}
