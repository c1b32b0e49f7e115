//! The SQLite backend (embedded default). WAL mode lets the admin CLI write while the server
//! runs; `busy_timeout` turns lock contention into short waits instead of errors.

mod accounts;
mod auth;
mod batch;
mod callbacks;
mod idempotency;
mod jobs;
mod ledger;
mod queue;
mod rows;
mod secrets;
mod webhooks;
mod workers;

use crate::{DbResult, QueueEvent};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::{str::FromStr, time::Duration};
use tokio::sync::broadcast;

pub struct SqliteRepo {
    pool: SqlitePool,
    /// Queue events reach this process's listeners only: other processes on the same file
    /// find out by polling (SQLite has no cross-process notification).
    events: broadcast::Sender<QueueEvent>,
}

impl SqliteRepo {
    pub async fn connect(url: &str) -> DbResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across process crashes in WAL mode (only an OS crash can lose
            // the last commits), and much faster than FULL.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(15))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self {
            pool,
            events: broadcast::channel(1024).0,
        })
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

impl SqliteRepo {
    /// Tells this process's listeners; called after the change is committed.
    fn announce(&self, event: QueueEvent) {
        // No receiver is fine: nobody is waiting.
        let _ = self.events.send(event);
    }
}
