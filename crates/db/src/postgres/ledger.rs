//! The NEU ledger on PostgreSQL (rules in `crate::ledger`).
//!
//! Every move runs inside a transaction through a [`Book`]: opening it bumps the account's
//! `ledger_seq`, which locks the account's `users` row until commit. Ledger transactions of one
//! account therefore queue on that row, and since READ COMMITTED gives each statement a fresh
//! snapshot, the sums read right after the lock include every move committed before it: no
//! other move can slip between our balance check and our insert. The book then closes a
//! lapsed trial and keeps the sums up to date as it appends entries, so a transaction reads
//! the journal once however many entries it adds.

use super::{rows::parse_id, PgRepo};
use crate::{ledger::*, DbError, DbResult};
use async_trait::async_trait;
use convertrilo_core::{time::now_ms, JobId, JobStatus, Neu, UserId, WireEnum};
use sqlx::{postgres::PgRow, Executor, PgConnection, Postgres, Row};

/// The sums of one account's entries by bucket, each indexed like [`EntryKind::ALL`].
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    trial: [i64; 5],
    paid: [i64; 5],
    trial_expires_at: Option<i64>,
}

impl Sums {
    /// One statement, so one consistent snapshot even outside a transaction. SUM over BIGINT
    /// is NUMERIC in PostgreSQL; one account's totals fit a BIGINT again.
    async fn read<'e, E: Executor<'e, Database = Postgres>>(ex: E, user: UserId) -> DbResult<Sums> {
        let found = sqlx::query(
            "SELECT bucket, kind, SUM(amount)::BIGINT AS total, MAX(expires_at) AS expires_at
             FROM ledger_entries WHERE user_id = $1 GROUP BY bucket, kind",
        )
        .bind(user.to_string())
        .fetch_all(ex)
        .await?;
        let mut sums = Sums::default();
        for row in &found {
            let (bucket, kind) = bucket_and_kind(row)?;
            sums.add(bucket, kind, row.try_get("total")?);
            if (bucket, kind) == (Bucket::Trial, EntryKind::Grant) {
                sums.trial_expires_at = row.try_get("expires_at")?;
            }
        }
        Ok(sums)
    }

    fn add(&mut self, bucket: Bucket, kind: EntryKind, amount: i64) {
        let b = match bucket {
            Bucket::Trial => &mut self.trial,
            Bucket::Paid => &mut self.paid,
        };
        b[kind as usize] += amount;
    }

    fn balance(&self) -> Balance {
        Balance::new(
            BucketBalance::from_sums(self.trial),
            BucketBalance::from_sums(self.paid),
            self.trial_expires_at,
        )
    }

    /// The unreserved trial tokens that should already have expired.
    fn lapsed_trial(&self, now: i64) -> i64 {
        match self.trial_expires_at {
            Some(at) if now >= at => self.balance().trial.available.millis(),
            _ => 0,
        }
    }
}

fn bucket_and_kind(row: &PgRow) -> DbResult<(Bucket, EntryKind)> {
    let (bucket, kind): (&str, &str) = (row.try_get("bucket")?, row.try_get("kind")?);
    match (Bucket::parse(bucket), EntryKind::parse(kind)) {
        (Some(b), Some(k)) => Ok((b, k)),
        _ => Err(DbError::Corrupt(format!("ledger entry {bucket}/{kind}"))),
    }
}

/// What a job holds reserved, per bucket.
#[derive(Debug, Clone, Copy, Default)]
struct Held {
    trial: i64,
    paid: i64,
}

impl Held {
    fn total(self) -> i64 {
        self.trial + self.paid
    }
}

async fn held<'e, E: Executor<'e, Database = Postgres>>(ex: E, job: JobId) -> DbResult<Held> {
    let found = sqlx::query(
        "SELECT bucket, SUM(CASE kind WHEN 'reserve' THEN amount ELSE -amount END)::BIGINT AS held
         FROM ledger_entries WHERE job_id = $1 AND kind IN ('reserve', 'release', 'deduct')
         GROUP BY bucket",
    )
    .bind(job.to_string())
    .fetch_all(ex)
    .await?;
    let mut h = Held::default();
    for row in &found {
        let amount: i64 = row.try_get("held")?;
        match row.try_get::<&str, _>("bucket")? {
            "trial" => h.trial = amount,
            "paid" => h.paid = amount,
            other => return Err(DbError::Corrupt(format!("ledger bucket {other}"))),
        }
    }
    Ok(h)
}

/// One account's ledger inside one transaction.
pub(super) struct Book {
    user: UserId,
    now: i64,
    sums: Sums,
}

impl Book {
    /// Locks the account, reads its sums and closes a lapsed trial. `NotFound` for an
    /// unknown user.
    pub(super) async fn open(conn: &mut PgConnection, user: UserId, now: i64) -> DbResult<Book> {
        // The account's row lock, held to commit: a concurrent move of this account waits here.
        let locked = sqlx::query("UPDATE users SET ledger_seq = ledger_seq + 1 WHERE id = $1")
            .bind(user.to_string())
            .execute(&mut *conn)
            .await?;
        if locked.rows_affected() == 0 {
            return Err(DbError::NotFound(format!("user {user}")));
        }
        let sums = Sums::read(&mut *conn, user).await?;
        let mut book = Book { user, now, sums };
        book.close_lapsed_trial(conn, None).await?;
        Ok(book)
    }

    pub(super) fn balance(&self) -> Balance {
        self.sums.balance()
    }

    /// Appends an entry (nothing for a zero amount) and keeps the sums in step.
    async fn write(
        &mut self,
        conn: &mut PgConnection,
        job: Option<JobId>,
        kind: EntryKind,
        bucket: Bucket,
        amount: i64,
        expires_at: Option<i64>,
    ) -> DbResult<()> {
        if amount <= 0 {
            return Ok(());
        }
        insert(
            conn, self.user, job, kind, bucket, amount, expires_at, self.now,
        )
        .await?;
        self.sums.add(bucket, kind, amount);
        Ok(())
    }

    /// After its expiry a trial keeps nothing available: whatever is (or, after a release,
    /// becomes) available expires. `job` names the release that caused it, if any.
    async fn close_lapsed_trial(
        &mut self,
        conn: &mut PgConnection,
        job: Option<JobId>,
    ) -> DbResult<()> {
        let lapsed = self.sums.lapsed_trial(self.now);
        self.write(conn, job, EntryKind::Expire, Bucket::Trial, lapsed, None)
            .await
    }

    pub(super) async fn grant(&mut self, conn: &mut PgConnection, amount: Neu) -> DbResult<()> {
        let amount = amount.millis();
        self.write(conn, None, EntryKind::Grant, Bucket::Paid, amount, None)
            .await
    }

    /// Tops the job's reservation up to `amount`, trial tokens first. On `Insufficient`
    /// nothing was written by this call; the caller rolls back whatever else it wrote.
    pub(super) async fn reserve(
        &mut self,
        conn: &mut PgConnection,
        job: JobId,
        amount: Neu,
    ) -> DbResult<Reservation> {
        let held = held(&mut *conn, job).await?.total();
        let need = amount.millis() - held;
        if need <= 0 {
            return Ok(Reservation::Reserved {
                added: Neu::ZERO,
                held: Neu::from_millis(held),
            });
        }
        let b = self.balance();
        if need > b.available.millis() {
            return Ok(Reservation::Insufficient {
                required: Neu::from_millis(need),
                available: b.available,
            });
        }
        let from_trial = need.min(b.trial.available.millis());
        let from_paid = need - from_trial;
        let job_id = Some(job);
        self.write(
            conn,
            job_id,
            EntryKind::Reserve,
            Bucket::Trial,
            from_trial,
            None,
        )
        .await?;
        self.write(
            conn,
            job_id,
            EntryKind::Reserve,
            Bucket::Paid,
            from_paid,
            None,
        )
        .await?;
        Ok(Reservation::Reserved {
            added: Neu::from_millis(need),
            held: Neu::from_millis(held + need),
        })
    }

    /// Releases up to `amount` (everything when `None`) of the job's reservation, paid tokens
    /// first; trial tokens released after the trial's expiry expire at once.
    pub(super) async fn release(
        &mut self,
        conn: &mut PgConnection,
        job: JobId,
        amount: Option<Neu>,
    ) -> DbResult<Neu> {
        let held = held(&mut *conn, job).await?;
        let want = amount.map_or(held.total(), |a| a.millis().clamp(0, held.total()));
        let paid = want.min(held.paid);
        let trial = want - paid;
        let job_id = Some(job);
        self.write(conn, job_id, EntryKind::Release, Bucket::Paid, paid, None)
            .await?;
        self.write(conn, job_id, EntryKind::Release, Bucket::Trial, trial, None)
            .await?;
        self.close_lapsed_trial(conn, job_id).await?;
        Ok(Neu::from_millis(want))
    }

    /// Spends up to `amount` of the job's reservation, trial tokens first.
    pub(super) async fn deduct(
        &mut self,
        conn: &mut PgConnection,
        job: JobId,
        amount: Neu,
    ) -> DbResult<Neu> {
        let held = held(&mut *conn, job).await?;
        let want = amount.millis().clamp(0, held.total());
        let trial = want.min(held.trial);
        let paid = want - trial;
        let job_id = Some(job);
        self.write(conn, job_id, EntryKind::Deduct, Bucket::Trial, trial, None)
            .await?;
        self.write(conn, job_id, EntryKind::Deduct, Bucket::Paid, paid, None)
            .await?;
        Ok(Neu::from_millis(want))
    }

    /// Closes the job's reservation: deducts `min(cost, held)` and releases the rest.
    pub(super) async fn settle(
        &mut self,
        conn: &mut PgConnection,
        job: JobId,
        cost: Neu,
    ) -> DbResult<()> {
        self.deduct(conn, job, cost).await?;
        self.release(conn, job, None).await?;
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)] // one column each; a struct would only rename them
async fn insert(
    conn: &mut PgConnection,
    user: UserId,
    job: Option<JobId>,
    kind: EntryKind,
    bucket: Bucket,
    amount: i64,
    expires_at: Option<i64>,
    now: i64,
) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO ledger_entries (id, user_id, job_id, kind, bucket, amount, expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(user.to_string())
    .bind(job.map(|j| j.to_string()))
    .bind(kind.as_str())
    .bind(bucket.as_str())
    .bind(amount)
    .bind(expires_at)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The grants of a new account, inside the transaction that creates it.
pub(super) async fn open_account(
    conn: &mut PgConnection,
    user: UserId,
    grant: Option<Neu>,
    trial: Option<Trial>,
) -> DbResult<()> {
    let now = now_ms();
    if let Some(g) = grant.filter(|g| g.millis() > 0) {
        insert(
            conn,
            user,
            None,
            EntryKind::Grant,
            Bucket::Paid,
            g.millis(),
            None,
            now,
        )
        .await?;
    }
    if let Some(t) = trial.filter(|t| t.amount.millis() > 0) {
        let (kind, bucket) = (EntryKind::Grant, Bucket::Trial);
        insert(
            conn,
            user,
            None,
            kind,
            bucket,
            t.amount.millis(),
            Some(t.expires_at),
            now,
        )
        .await?;
    }
    Ok(())
}

fn positive(amount: Neu) -> DbResult<()> {
    if amount.millis() > 0 {
        Ok(())
    } else {
        Err(DbError::Invalid(format!(
            "amount {amount}: a ledger move needs an amount above zero"
        )))
    }
}

/// The job's status if it belongs to `user`; `NotFound` otherwise.
/// Manual settlement applies only before the job is queued: from then on the service settles
/// the reservation itself. Checked inside the ledger transaction, after the account's row lock:
/// a confirm or cancel whose status change is not yet committed reads the ledger only once it
/// holds that lock too, so it behaves exactly as if it came after this move.
fn still_created(status: JobStatus) -> DbResult<()> {
    if status == JobStatus::Created {
        Ok(())
    } else {
        Err(DbError::Invalid(format!(
            "the job is {status}; its tokens are settled by the service once it is queued (manual moves apply to created jobs)"
        )))
    }
}

async fn owned_job_status(
    conn: &mut PgConnection,
    user: UserId,
    job: JobId,
) -> DbResult<JobStatus> {
    let row = sqlx::query("SELECT status FROM jobs WHERE id = $1 AND user_id = $2")
        .bind(job.to_string())
        .bind(user.to_string())
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| DbError::NotFound(format!("job {job}")))?;
    let status: &str = row.try_get("status")?;
    JobStatus::parse(status).ok_or_else(|| DbError::Corrupt(format!("status {status}")))
}

#[async_trait]
impl LedgerRepo for PgRepo {
    async fn balance(&self, user: UserId, now_ms: i64) -> DbResult<Balance> {
        // Most reads find nothing to expire and need no lock.
        let sums = Sums::read(&self.pool, user).await?;
        if sums.lapsed_trial(now_ms) == 0 {
            return Ok(sums.balance());
        }
        let mut tx = self.pool.begin().await?;
        let book = Book::open(&mut tx, user, now_ms).await?;
        tx.commit().await?;
        Ok(book.balance())
    }

    async fn grant(&self, user: UserId, amount: Neu) -> DbResult<Balance> {
        positive(amount)?;
        if amount > crate::ledger::MAX_GRANT {
            return Err(DbError::Invalid(format!(
                "a single grant may be at most {} NEU",
                crate::ledger::MAX_GRANT
            )));
        }
        let mut tx = self.pool.begin().await?;
        let mut book = Book::open(&mut tx, user, now_ms()).await?;
        book.grant(&mut tx, amount).await?;
        tx.commit().await?;
        Ok(book.balance())
    }

    async fn reserve_for_job(
        &self,
        user: UserId,
        job: JobId,
        amount: Neu,
    ) -> DbResult<Reservation> {
        positive(amount)?;
        let mut tx = self.pool.begin().await?;
        let mut book = Book::open(&mut tx, user, now_ms()).await?;
        let status = owned_job_status(&mut tx, user, job).await?;
        // A finished job's reservation would never be settled.
        if status.is_terminal() {
            return Ok(Reservation::Finished(status));
        }
        let r = book.reserve(&mut tx, job, amount).await?;
        if matches!(r, Reservation::Reserved { .. }) {
            tx.commit().await?;
        }
        Ok(r)
    }

    async fn release_for_job(&self, user: UserId, job: JobId, amount: Neu) -> DbResult<Neu> {
        positive(amount)?;
        let mut tx = self.pool.begin().await?;
        let mut book = Book::open(&mut tx, user, now_ms()).await?;
        still_created(owned_job_status(&mut tx, user, job).await?)?;
        let released = book.release(&mut tx, job, Some(amount)).await?;
        tx.commit().await?;
        Ok(released)
    }

    async fn deduct_for_job(&self, user: UserId, job: JobId, amount: Neu) -> DbResult<Neu> {
        positive(amount)?;
        let mut tx = self.pool.begin().await?;
        let mut book = Book::open(&mut tx, user, now_ms()).await?;
        still_created(owned_job_status(&mut tx, user, job).await?)?;
        let deducted = book.deduct(&mut tx, job, amount).await?;
        tx.commit().await?;
        Ok(deducted)
    }

    async fn job_reserved(&self, job: JobId) -> DbResult<Neu> {
        Ok(Neu::from_millis(held(&self.pool, job).await?.total()))
    }

    async fn job_totals(&self, job: JobId) -> DbResult<(Neu, Neu)> {
        // A job's reservation is what it reserved less what was released or deducted.
        let row = sqlx::query(
            "SELECT COALESCE(SUM(CASE kind WHEN 'reserve' THEN amount WHEN 'release' THEN -amount
                                          WHEN 'deduct' THEN -amount ELSE 0 END), 0)::BIGINT AS held,
                    COALESCE(SUM(CASE kind WHEN 'deduct' THEN amount ELSE 0 END), 0)::BIGINT AS charged
             FROM ledger_entries WHERE job_id = $1",
        )
        .bind(job.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok((
            Neu::from_millis(row.try_get("held")?),
            Neu::from_millis(row.try_get("charged")?),
        ))
    }

    async fn entries(&self, user: UserId) -> DbResult<Vec<LedgerEntry>> {
        let found =
            sqlx::query("SELECT * FROM ledger_entries WHERE user_id = $1 ORDER BY created_at, id")
                .bind(user.to_string())
                .fetch_all(&self.pool)
                .await?;
        found.iter().map(entry).collect()
    }
}

fn entry(row: &PgRow) -> DbResult<LedgerEntry> {
    let (bucket, kind) = bucket_and_kind(row)?;
    let job: Option<&str> = row.try_get("job_id")?;
    Ok(LedgerEntry {
        id: parse_id(row.try_get::<&str, _>("id")?)?,
        user_id: parse_id(row.try_get::<&str, _>("user_id")?)?,
        job_id: job.map(parse_id).transpose()?,
        kind,
        bucket,
        amount: Neu::from_millis(row.try_get("amount")?),
        expires_at: row.try_get("expires_at")?,
        created_at: row.try_get("created_at")?,
    })
}
