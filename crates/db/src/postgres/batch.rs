//! Several jobs in one transaction on PostgreSQL: insert a batch (with its reservations and its
//! idempotent response), queue a batch, read a batch. All or nothing, so a bulk request that
//! cannot be paid for leaves no trace.

use super::{
    idempotency,
    jobs::{insert_row, json, push},
    ledger::Book,
    rows, secrets,
    webhooks::emit,
    PgRepo,
};
use crate::{model::*, DbError, DbResult, IdempotentResponse, QueueEvent};
use convertrilo_core::{time::now_ms, JobId, JobStatus, Neu, UserId};
use sqlx::PgPool;

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
    repo: &PgRepo,
    batch: &[NewJob],
    idem: Option<&IdempotentResponse>,
) -> DbResult<Inserted> {
    let owner = single_owner(batch.iter().map(|n| n.job.user_id))?;
    let now = now_ms();
    let mut tx = repo.pool.begin().await?;
    // Saving the response locks the key's row, so a retry that takes the key over waits for
    // this transaction (or wins, and then nothing here is written).
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
    // The account's row lock (taken by the book) is held from the check to the commit.
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
            // One time for the whole batch: within it, insertion (`seq`) order decides.
            push(&mut tx, &n.job, now).await?;
        }
        if let (Some(book), Some(amount)) = (book.as_mut(), n.reserve) {
            if let crate::Reservation::Insufficient { .. } =
                book.reserve(&mut tx, n.job.id, amount).await?
            {
                // Checked above against the total; only a concurrent writer could get here,
                // and the account's row lock rules that out.
                return Err(DbError::Invalid("reservation no longer fits".into()));
            }
        }
    }
    if batch.iter().any(|n| n.job.status == JobStatus::Queued) {
        repo.notify(&mut tx, &QueueEvent::Queued).await?;
    }
    tx.commit().await?;
    Ok(Inserted::Done)
}

pub(super) async fn enqueue_many(repo: &PgRepo, items: &[EnqueueItem]) -> DbResult<BatchEnqueued> {
    let now = now_ms();
    let mut tx = repo.pool.begin().await?;
    // Lock the jobs still created in one statement, in id order: two batches that share jobs
    // then lock them in the same order and cannot deadlock. A job that is no longer created
    // is left alone (it may have a queue row, which is locked before its job elsewhere).
    let ids: Vec<String> = items.iter().map(|i| i.id.to_string()).collect();
    sqlx::query(
        "SELECT id FROM jobs WHERE id = ANY($1) AND status = 'created' ORDER BY id FOR NO KEY UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut queued: Vec<Option<Job>> = Vec::with_capacity(items.len());
    let mut owner = None;
    let mut total = 0i64;
    for item in items {
        let u = &item.update;
        let row = sqlx::query(
            "UPDATE jobs SET status = 'queued', queued_at = $1, updated_at = $1, spec = $2,
               output_filename = $3, duration_sec = $4, media_info = $5, per_minute = $6, estimate = $7
             WHERE id = $8 AND status = 'created' RETURNING *",
        )
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
    if owner.is_some() {
        repo.notify(&mut tx, &QueueEvent::Queued).await?;
    }
    tx.commit().await?;
    Ok(BatchEnqueued::Done(queued))
}

pub(super) async fn jobs_by_ids(pool: &PgPool, ids: &[JobId], owner: UserId) -> DbResult<Vec<Job>> {
    // One array parameter, however many ids.
    let ids_text: Vec<String> = ids.iter().map(JobId::to_string).collect();
    let found = sqlx::query("SELECT * FROM jobs WHERE user_id = $1 AND id = ANY($2)")
        .bind(owner.to_string())
        .bind(&ids_text)
        .fetch_all(pool)
        .await?;
    let mut found = found.iter().map(rows::job).collect::<DbResult<Vec<_>>>()?;
    // Keep the caller's order.
    let order: std::collections::HashMap<JobId, usize> =
        ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    found.sort_by_key(|j| order.get(&j.id).copied().unwrap_or(usize::MAX));
    Ok(found)
}
