//! Several jobs in one transaction on SQLite: insert a batch (with its reservations and its
//! idempotent response), queue a batch, read a batch. All or nothing, so a bulk request that
//! cannot be paid for leaves no trace.

use super::{
    idempotency,
    jobs::{insert_row, json, push},
    ledger::Book,
    rows, secrets,
    webhooks::emit,
};
use crate::{model::*, DbError, DbResult, IdempotentResponse};
use convertrilo_core::{time::now_ms, JobId, JobStatus, Neu, UserId};
use sqlx::SqlitePool;

/// One account's jobs only: a batch reserves from one account.
fn single_owner<'a>(mut owners: impl Iterator<Item = UserId> + 'a) -> DbResult<Option<UserId>> {
    let Some(first) = owners.next() else {
        return Ok(None);
    };
    if owners.any(|o| o != first) {
        return Err(DbError::Invalid(
            "a batch of jobs must belong to one account".into(),
        ));
    }
    Ok(Some(first))
}

pub(super) async fn insert_jobs(
    pool: &SqlitePool,
    batch: &[NewJob],
    idem: Option<&IdempotentResponse>,
) -> DbResult<Inserted> {
    let owner = single_owner(batch.iter().map(|n| n.job.user_id))?;
    let now = now_ms();
    let mut tx = pool.begin().await?;
    // Saving the response is a write, so it also takes SQLite's write lock before anything is
    // read; when the key is no longer ours nothing else is written.
    if let Some(r) = idem {
        if !idempotency::complete(&mut tx, r).await? {
            return Ok(Inserted::KeyLost);
        }
    }
    let total: i64 = batch
        .iter()
        .filter_map(|n| n.reserve)
        .map(Neu::millis)
        .sum();
    let mut book = if let (Some(owner), true) = (owner, total > 0) {
        let book = Book::open(&mut tx, owner, now).await?;
        let available = book.balance().available;
        if total > available.millis() {
            return Ok(Inserted::Insufficient {
                required: Neu::from_millis(total),
                available,
            });
        }
        Some(book)
    } else {
        None
    };
    for n in batch {
        insert_row(&mut tx, &n.job).await?;
        if let Some(sealed) = &n.secret {
            secrets::insert(&mut tx, n.job.id, sealed).await?;
        }
        let (owner, id) = (n.job.user_id.to_string(), n.job.id.to_string());
        emit(&mut tx, &owner, &id, "job.created", JobStatus::Created, now).await?;
        if n.job.status == JobStatus::Queued {
            emit(&mut tx, &owner, &id, "job.queued", JobStatus::Queued, now).await?;
            // One time for the whole batch: within it, insertion (index) order decides.
            push(&mut tx, &n.job, now).await?;
        }
        if let (Some(book), Some(amount)) = (book.as_mut(), n.reserve) {
            if let crate::Reservation::Insufficient { .. } =
                book.reserve(&mut tx, n.job.id, amount).await?
            {
                // Checked above against the total; only a concurrent writer could get here,
                // and SQLite's write lock rules that out.
                return Err(DbError::Invalid("reservation no longer fits".into()));
            }
        }
    }
    tx.commit().await?;
    Ok(Inserted::Done)
}

pub(super) async fn enqueue_many(
    pool: &SqlitePool,
    items: &[EnqueueItem],
) -> DbResult<BatchEnqueued> {
    let now = now_ms();
    let mut tx = pool.begin().await?;
    let mut queued: Vec<Option<Job>> = Vec::with_capacity(items.len());
    let mut owner = None;
    let mut total = 0i64;
    // Status changes first: they take the write lock and tell which jobs are still created.
    for item in items {
        let u = &item.update;
        let row = sqlx::query(
            "UPDATE jobs SET status = 'queued', queued_at = ?, updated_at = ?, spec = ?,
               output_filename = ?, duration_sec = ?, media_info = ?, per_minute = ?, estimate = ?
             WHERE id = ? AND status = 'created' RETURNING *",
        )
        .bind(now)
        .bind(now)
        .bind(json(&u.spec))
        .bind(&u.output_filename)
        .bind(u.duration_sec)
        .bind(u.media_info.as_ref().map(json))
        .bind(u.per_minute.map(|n| n.millis()))
        .bind(u.estimate.map(|n| n.millis()))
        .bind(item.id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let job = row.as_ref().map(rows::job).transpose()?;
        if let Some(job) = &job {
            if *owner.get_or_insert(job.user_id) != job.user_id {
                return Err(DbError::Invalid(
                    "a batch of jobs must belong to one account".into(),
                ));
            }
            total += item.reserve.map_or(0, Neu::millis);
            let (user, id) = (job.user_id.to_string(), job.id.to_string());
            emit(&mut tx, &user, &id, "job.queued", JobStatus::Queued, now).await?;
            push(&mut tx, job, now).await?;
        }
        queued.push(job);
    }
    if let (Some(owner), true) = (owner, total > 0) {
        let mut book = Book::open(&mut tx, owner, now).await?;
        let available = book.balance().available;
        if total > available.millis() {
            return Ok(BatchEnqueued::Insufficient {
                required: Neu::from_millis(total),
                available,
            });
        }
        for (item, job) in items.iter().zip(&queued) {
            if let (Some(_), Some(amount)) = (job, item.reserve) {
                book.reserve(&mut tx, item.id, amount).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(BatchEnqueued::Done(queued))
}

pub(super) async fn jobs_by_ids(
    pool: &SqlitePool,
    ids: &[JobId],
    owner: UserId,
) -> DbResult<Vec<Job>> {
    let mut found = Vec::with_capacity(ids.len());
    // SQLite allows 32766 parameters per statement; chunks keep far below it.
    for chunk in ids.chunks(500) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let sql = format!("SELECT * FROM jobs WHERE user_id = ? AND id IN ({marks})");
        let mut q = sqlx::query(&sql).bind(owner.to_string());
        for id in chunk {
            q = q.bind(id.to_string());
        }
        for row in q.fetch_all(pool).await? {
            found.push(rows::job(&row)?);
        }
    }
    // Keep the caller's order.
    let order: std::collections::HashMap<JobId, usize> =
        ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    found.sort_by_key(|j| order.get(&j.id).copied().unwrap_or(usize::MAX));
    Ok(found)
}
