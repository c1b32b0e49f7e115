//! Persistent state: accounts, API keys, the token journal, jobs and the job queue.
//! Repositories are traits used behind `Arc<dyn …>`; the backend is chosen from the database
//! URL: `sqlite://…` (embedded, the default) or `postgres://…` / `postgresql://…` (shared by
//! any number of servers and workers). Each backend keeps its own migrations, numbered alike,
//! and one conformance suite (`tests/db.rs`) holds both to the same behaviour. The queue is a table:
//! `enqueue`, `claim` with a lease, `heartbeat`, `complete`; a job whose worker died is
//! claimed again once its lease expires, up to a cap on attempts. Token moves that belong to
//! a job state change (reserve on enqueue, deduct and release on finish, release on cancel)
//! happen in the same transaction as that change; the rules are in [`ledger`]. A job's
//! customer credentials live sealed in a table of their own, written with the job and
//! deleted by the transition that ends it.

pub mod auth;
pub mod idempotency;
pub mod ledger;
pub mod model;
pub mod postgres;
mod row_mapping;
pub mod sqlite;
pub mod webhooks;
pub mod workers;

pub use auth::{AuthRepo, RefreshToken, Rotation};
pub use idempotency::{IdemBegin, IdemClaim, IdempotencyRepo, IdempotentResponse};
pub use ledger::{
    Balance, Bucket, BucketBalance, EntryKind, LedgerEntry, LedgerRepo, Reservation, Trial,
};
pub use model::*;
pub use webhooks::{AfterAttempt, Delivery, DueMessage, Webhook, WebhookRepo, WebhookUpdate};
pub use workers::{
    slot_owner, ClaimFilter, QueueEvent, QueueEvents, Stats, StatsRepo, Unrunnable, WorkerRecord,
    WorkerRepo, WorkerStatus,
};

use async_trait::async_trait;
use convertrilo_core::{JobId, Neu, UserId};
use std::{sync::Arc, time::Duration};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error(
        "unsupported database URL {0:?}: use sqlite://path/to/file.db or postgres://user:password@host/database (postgresql:// works too)"
    )]
    UnsupportedUrl(String),
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The named row does not exist (for a ledger move: not for this user).
    #[error("{0} not found")]
    NotFound(String),
    /// A caller's mistake the repository refuses, e.g. a ledger move of zero.
    #[error("{0}")]
    Invalid(String),
}

impl DbError {
    /// The database could not be reached in time (no pooled connection came free, the
    /// connection broke): a passing condition, not a fault of the request.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            DbError::Sqlx(
                sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
            )
        )
    }
}

pub type DbResult<T> = Result<T, DbError>;

#[async_trait]
pub trait AccountRepo: Send + Sync {
    /// Creates a user with its opening grants in one transaction: paid tokens when `grant`
    /// is given, a trial (at most one per account) when `trial` is.
    async fn create_user(
        &self,
        user: &User,
        grant: Option<Neu>,
        trial: Option<Trial>,
    ) -> DbResult<()>;
    async fn user_by_email(&self, email: &str) -> DbResult<Option<User>>;
    async fn user(&self, id: UserId) -> DbResult<Option<User>>;
    async fn count_users(&self) -> DbResult<i64>;
    async fn create_api_key(&self, key: &ApiKey, key_hash: &str) -> DbResult<()>;
    /// The key with this hash and its owner, whatever its state (the caller judges expiry).
    async fn api_key_by_hash(&self, key_hash: &str) -> DbResult<Option<(ApiKey, User)>>;
    /// Returns the stored value, storing `value` first when the key is absent (first writer wins).
    async fn setting_or_insert(&self, key: &str, value: &str) -> DbResult<String>;
    /// Removes a setting (only while it holds `only_if`, when given); true when one went.
    async fn delete_setting(&self, key: &str, only_if: Option<&str>) -> DbResult<bool>;
}

#[async_trait]
pub trait JobRepo: Send + Sync {
    async fn insert_job(&self, job: &Job) -> DbResult<()>;
    /// Inserts jobs (one account's) all or nothing: each `created`, or `queued` with its
    /// queue row and reservation. The reservations must fit the account's available tokens
    /// together. When `idem` is given its response is saved in the same transaction.
    async fn insert_jobs(
        &self,
        batch: &[NewJob],
        idem: Option<&IdempotentResponse>,
    ) -> DbResult<Inserted>;
    /// Jobs of `owner` among `ids` (unknown ids and other accounts' jobs are left out).
    async fn jobs_by_ids(&self, ids: &[JobId], owner: UserId) -> DbResult<Vec<Job>>;
    /// A job, scoped to its owner when `owner` is given (another account's job is `None`).
    async fn job(&self, id: JobId, owner: Option<UserId>) -> DbResult<Option<Job>>;
    /// Points a `created` job at a newly uploaded object and forgets any probe and estimate
    /// of the previous upload. Returns the previous object key (to delete), or `None` when
    /// the job is no longer `created` (the new object is then unused).
    async fn mark_uploaded(&self, id: JobId, key: &str, size: u64) -> DbResult<Option<String>>;
    /// Stores probe results, the (possibly updated) spec and the estimate; only while `created`.
    async fn save_estimate(&self, id: JobId, update: &EstimateUpdate) -> DbResult<bool>;
    /// `created` → `queued` plus a queue row and, when `reserve` is given, the job's
    /// reservation topped up to that amount (see [`LedgerRepo`]), all in one transaction.
    /// When the account cannot cover it, nothing changes and `Insufficient` says by how much.
    async fn enqueue(
        &self,
        id: JobId,
        update: Option<&EstimateUpdate>,
        priority: i32,
        reserve: Option<Neu>,
    ) -> DbResult<Enqueued>;
    /// Like [`JobRepo::enqueue`] for several jobs of one account, all or nothing: the
    /// reservations of the jobs still `created` must fit together.
    async fn enqueue_many(&self, items: &[EnqueueItem]) -> DbResult<BatchEnqueued>;
    /// Cancels a job that has not finished and releases its whole reservation; says what
    /// status it had before and how much was released. Terminal jobs are left alone.
    async fn cancel(&self, id: JobId, owner: UserId) -> DbResult<Option<Canceled>>;

    /// Claims the next queued job (or one whose lease expired) that `can` run for `worker`,
    /// marking it `running`. Jobs that have used up `max_attempts` are failed instead of
    /// handed out, and their reservations released.
    async fn claim(
        &self,
        worker: &str,
        lease: Duration,
        max_attempts: i32,
        can: &ClaimFilter,
    ) -> DbResult<Option<Job>>;
    /// Extends the lease and records progress. `Lost` when the job was canceled or the lease
    /// passed to another worker: the caller must stop working on it.
    async fn heartbeat(
        &self,
        id: JobId,
        worker: &str,
        lease: Duration,
        progress: &Progress,
    ) -> DbResult<Heartbeat>;
    /// Finishes a job this worker holds, settling its reservation in the same transaction:
    /// on success `min(cost, reserved)` is deducted and the rest released; on failure all of
    /// it is released. False (and no ledger move) when the lease was lost meanwhile.
    async fn finish(&self, id: JobId, worker: &str, outcome: &Outcome) -> DbResult<bool>;
    /// Gives a held job back to the queue (see [`HandBack`] for what each reason does).
    async fn release(&self, id: JobId, worker: &str, why: HandBack<'_>) -> DbResult<HandedBack>;
    /// Fails a job that waits in the queue under no live lease, releasing its reservation;
    /// false when it is no longer waiting (claimed, canceled or ended meanwhile).
    async fn fail_queued(&self, id: JobId, message: &str) -> DbResult<bool>;
    /// How many jobs wait in the queue without a live lease.
    async fn queue_depth(&self) -> DbResult<i64>;

    /// The sealed credentials of a job that has not ended (`None` once it has: `finish`,
    /// `cancel` and the give-up in `claim` delete them in their own transactions).
    async fn job_secret(&self, id: JobId) -> DbResult<Option<Vec<u8>>>;
    /// Replaces a job's sealed credentials (a refreshed OAuth token); false, and nothing
    /// written, when the job has ended meanwhile.
    async fn replace_job_secret(&self, id: JobId, sealed: &[u8]) -> DbResult<bool>;

    /// Stored objects no job needs any more, oldest first (at most `limit`): the uploads of
    /// ended upload jobs (`input_key`; the caller also clears what belongs with it, such as
    /// unfinished stream parts), and outputs whose `output_expiry_secs` has passed at `now`.
    async fn purgeable(&self, now: i64, limit: i64) -> DbResult<Vec<Purge>>;
    /// Records that the objects of `p` were deleted.
    async fn mark_purged(&self, p: &Purge, now: i64) -> DbResult<()>;

    /// Callbacks due at `now` (at most `limit`), each leased until `lease_until` so that
    /// another dispatcher does not send it at the same time.
    async fn due_callbacks(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> DbResult<Vec<Callback>>;
    /// Records an attempt: delivered, or failed with `error` and retried at `retry_at`
    /// (given up when `None`).
    async fn callback_attempted(
        &self,
        id: i64,
        error: Option<&str>,
        retry_at: Option<i64>,
    ) -> DbResult<()>;
}

/// The repositories over one backend.
#[derive(Clone)]
pub struct Repos {
    pub accounts: Arc<dyn AccountRepo>,
    pub jobs: Arc<dyn JobRepo>,
    pub auth: Arc<dyn AuthRepo>,
    pub ledger: Arc<dyn LedgerRepo>,
    pub idempotency: Arc<dyn IdempotencyRepo>,
    pub webhooks: Arc<dyn WebhookRepo>,
    pub workers: Arc<dyn WorkerRepo>,
    pub stats: Arc<dyn StatsRepo>,
    pub events: Arc<dyn QueueEvents>,
}

impl Repos {
    fn over<R>(repo: Arc<R>) -> Self
    where
        R: AccountRepo
            + JobRepo
            + AuthRepo
            + LedgerRepo
            + IdempotencyRepo
            + WebhookRepo
            + WorkerRepo
            + StatsRepo
            + QueueEvents
            + 'static,
    {
        Self {
            accounts: repo.clone(),
            jobs: repo.clone(),
            auth: repo.clone(),
            ledger: repo.clone(),
            idempotency: repo.clone(),
            webhooks: repo.clone(),
            workers: repo.clone(),
            stats: repo.clone(),
            events: repo,
        }
    }
}

/// Opens and migrates the database at `url`: a SQLite file (created if needed), or a
/// PostgreSQL database (which must exist).
pub async fn connect(url: &str) -> DbResult<Repos> {
    if url.starts_with("sqlite:") {
        Ok(Repos::over(Arc::new(
            sqlite::SqliteRepo::connect(url).await?,
        )))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Repos::over(Arc::new(postgres::PgRepo::connect(url).await?)))
    } else {
        Err(DbError::UnsupportedUrl(url.to_string()))
    }
}
