//! The PostgreSQL backend (scale-out). The schema mirrors SQLite's table for table and column
//! for column, times and amounts as BIGINT integers and JSON as text, so the row mapping is the
//! same. What differs is concurrency: SQLite serialises writers with one database lock, while
//! PostgreSQL runs READ COMMITTED transactions with row locks. Where the SQLite code relies on
//! that single lock, the code here says which row it locks first. To stay free of deadlocks,
//! transactions that lock several rows take them in one order: queue row, job row (several in
//! id order), idempotency key, account (`users`) row, then a webhook before its messages.
//! Claims and leases use `FOR UPDATE SKIP LOCKED`, so workers and dispatchers never wait for
//! each other.
//!
//! Queue events reach every process on the database: a transaction that queues or cancels a
//! job also sends a `NOTIFY` (delivered when it commits), and each process forwards what it
//! hears on its own `LISTEN` connection to its subscribers. A process tells its own subscribers
//! directly once it has committed, as SQLite does, and skips its own notifications.

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
use sqlx::{
    postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions},
    PgConnection,
};
use std::{str::FromStr, time::Duration};
use tokio::{sync::broadcast, task::AbortHandle};

/// The channel queue events travel on. A payload is the sending process's origin, a space,
/// and [`QueueEvent::to_payload`].
const CHANNEL: &str = "convertrilo_queue";

pub struct PgRepo {
    pool: PgPool,
    events: broadcast::Sender<QueueEvent>,
    /// Random per repository (so per process): marks the notifications it sent.
    origin: String,
    /// The task forwarding other processes' notifications; ended with the repository.
    listener: AbortHandle,
}

impl PgRepo {
    pub async fn connect(url: &str) -> DbResult<Self> {
        let options = PgConnectOptions::from_str(url)?;
        // One plain connection first: the pool would hide why it cannot connect (a refused
        // port, a wrong password) behind "pool timed out" after its whole acquire timeout.
        use sqlx::Connection as _;
        PgConnection::connect_with(&options).await?.close().await?;
        // Each PostgreSQL connection is a server process: enough for the API, in-process
        // workers and dispatchers of one node, while many nodes still fit the server's limit.
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(15))
            .connect_with(options)
            .await?;
        // sqlx holds an advisory lock while migrating, so nodes that start together take turns.
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let events = broadcast::channel(1024).0;
        let origin = uuid::Uuid::new_v4().simple().to_string();
        let listener = listen(url, origin.clone(), events.clone()).await?;
        Ok(Self {
            pool,
            events,
            origin,
            listener,
        })
    }

    /// Sends `event` to the other processes when the caller's transaction commits (and never
    /// if it rolls back).
    async fn notify(&self, conn: &mut PgConnection, event: &QueueEvent) -> DbResult<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(format!("{} {}", self.origin, event.to_payload()))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Tells this process's subscribers; called after the change is committed.
    fn announce(&self, event: QueueEvent) {
        // No receiver is fine: nobody is waiting.
        let _ = self.events.send(event);
    }
}

impl Drop for PgRepo {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Listens on [`CHANNEL`] (before returning, so nothing committed afterwards is missed) and
/// forwards other processes' events to `events` from a task of its own.
async fn listen(
    url: &str,
    origin: String,
    events: broadcast::Sender<QueueEvent>,
) -> DbResult<AbortHandle> {
    // A connection of its own, outside the pool, re-established when lost.
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    let task = tokio::spawn(async move {
        loop {
            match listener.recv().await {
                Ok(n) => {
                    let Some((from, payload)) = n.payload().split_once(' ') else {
                        continue;
                    };
                    if from != origin {
                        if let Some(event) = QueueEvent::from_payload(payload) {
                            let _ = events.send(event);
                        }
                    }
                }
                // Events are best effort (subscribers also poll): wait, then let the listener
                // reconnect on the next call. Notifications sent meanwhile are lost.
                Err(e) => {
                    tracing::warn!(error = %e, "queue notifications unavailable; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    Ok(task.abort_handle())
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}
