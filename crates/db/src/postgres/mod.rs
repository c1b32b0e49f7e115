//! The PostgreSQL backend (scale-out). The schema mirrors SQLite's table for table and column
//! for column, times and amounts as BIGINT integers and JSON as text, so the row mapping is the
//! same. What differs is concurrency: SQLite serialises writers with one database lock, while
//! PostgreSQL runs READ COMMITTED transactions with row locks. Where the SQLite code relies on
//! that single lock, the code here says which row it locks first. To stay free of deadlocks,
//! transactions that lock several rows take them in one order: queue row, job row (several in
//! id order), idempotency key, account (`users`) row, then a webhook before its messages.
//! Claims and leases use `FOR UPDATE SKIP LOCKED`, so workers and dispatchers never wait for
//! each other.

mod accounts;
mod auth;
mod batch;
mod callbacks;
mod idempotency;
mod jobs;
mod ledger;
mod rows;
mod secrets;
mod webhooks;

use crate::DbResult;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::{str::FromStr, time::Duration};

pub struct PgRepo {
    pool: PgPool,
}

impl PgRepo {
    pub async fn connect(url: &str) -> DbResult<Self> {
        let options = PgConnectOptions::from_str(url)?;
        // Each PostgreSQL connection is a server process: enough for the API, in-process
        // workers and dispatchers of one node, while many nodes still fit the server's limit.
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(15))
            .connect_with(options)
            .await?;
        // sqlx holds an advisory lock while migrating, so nodes that start together take turns.
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}
