//! Persistent state: accounts, API keys, the token journal, jobs and the job queue.
//! Repositories are traits used behind `Arc<dyn …>`; the backend is chosen from the database
//! URL (`sqlite://…` today). Each backend keeps its own migrations. The queue is a table:
//! `enqueue`, `claim` with a lease, `heartbeat`, `complete`; a job whose worker died is
//! claimed again once its lease expires, up to a cap on attempts.

pub mod auth;
pub mod model;
pub mod sqlite;

pub use auth::{AuthRepo, RefreshToken, Rotation};
pub use model::*;

use async_trait::async_trait;
use convertrilo_core::{JobId, JobStatus, Neu, UserId};
use std::{sync::Arc, time::Duration};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("unsupported database URL {0:?}: use sqlite://path/to/file.db")]
    UnsupportedUrl(String),
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

pub type DbResult<T> = Result<T, DbError>;

#[async_trait]
pub trait AccountRepo: Send + Sync {
    /// Creates a user, and a grant journal entry when `grant` is given, in one transaction.
    async fn create_user(&self, user: &User, grant: Option<Neu>) -> DbResult<()>;
    async fn user_by_email(&self, email: &str) -> DbResult<Option<User>>;
    async fn user(&self, id: UserId) -> DbResult<Option<User>>;
    async fn count_users(&self) -> DbResult<i64>;
    async fn create_api_key(&self, key: &ApiKey, key_hash: &str) -> DbResult<()>;
    /// The key with this hash and its owner, whatever its state (the caller judges expiry).
    async fn api_key_by_hash(&self, key_hash: &str) -> DbResult<Option<(ApiKey, User)>>;
    /// Sum of the journal entries of one kind.
    async fn ledger_total(&self, user: UserId, kind: &str) -> DbResult<Neu>;
    /// Returns the stored value, storing `value` first when the key is absent (first writer wins).
    async fn setting_or_insert(&self, key: &str, value: &str) -> DbResult<String>;
}

#[async_trait]
pub trait JobRepo: Send + Sync {
    async fn insert_job(&self, job: &Job) -> DbResult<()>;
    /// A job, scoped to its owner when `owner` is given (another account's job is `None`).
    async fn job(&self, id: JobId, owner: Option<UserId>) -> DbResult<Option<Job>>;
    /// Records a finished upload; only while the job is `created`. False otherwise.
    async fn mark_uploaded(&self, id: JobId, size: u64) -> DbResult<bool>;
    /// Stores probe results, the (possibly updated) spec and the estimate; only while `created`.
    async fn save_estimate(&self, id: JobId, update: &EstimateUpdate) -> DbResult<bool>;
    /// `created` → `queued` plus a queue row, atomically. `None` when the job was not `created`.
    async fn enqueue(
        &self,
        id: JobId,
        update: Option<&EstimateUpdate>,
        priority: i32,
    ) -> DbResult<Option<Job>>;
    /// Cancels a job that has not finished; returns the status it had before. Terminal jobs
    /// are left alone and their status is returned.
    async fn cancel(&self, id: JobId, owner: UserId) -> DbResult<Option<JobStatus>>;

    /// Claims the next queued job (or one whose lease expired) for `worker`, marking it
    /// `running`. Jobs that have used up `max_attempts` are failed instead of handed out.
    async fn claim(
        &self,
        worker: &str,
        lease: Duration,
        max_attempts: i32,
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
    /// Finishes a job this worker holds; false when the lease was lost meanwhile.
    async fn finish(&self, id: JobId, worker: &str, outcome: &Outcome) -> DbResult<bool>;
    /// Gives a held job back to the queue (graceful shutdown, transient failure).
    async fn release(&self, id: JobId, worker: &str) -> DbResult<()>;
    /// How many jobs wait in the queue without a live lease.
    async fn queue_depth(&self) -> DbResult<i64>;
}

/// Both repositories over one backend.
#[derive(Clone)]
pub struct Repos {
    pub accounts: Arc<dyn AccountRepo>,
    pub jobs: Arc<dyn JobRepo>,
    pub auth: Arc<dyn AuthRepo>,
}

/// Opens (creating if needed) and migrates the database at `url`.
pub async fn connect(url: &str) -> DbResult<Repos> {
    if url.starts_with("sqlite:") {
        let repo = Arc::new(sqlite::SqliteRepo::connect(url).await?);
        Ok(Repos {
            accounts: repo.clone(),
            jobs: repo.clone(),
            auth: repo,
        })
    } else {
        Err(DbError::UnsupportedUrl(url.to_string()))
    }
}
