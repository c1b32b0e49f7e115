//! The worker registry, the unrunnable-job sweep and the `/metrics` counts on PostgreSQL.

use super::{rows, PgRepo};
use crate::{workers::*, DbError, DbResult};
use async_trait::async_trait;
use convertrilo_core::{capability::Needs, JobStatus, WireEnum};
use sqlx::{postgres::PgRow, Row};
use tokio::sync::broadcast;

fn worker(row: &PgRow) -> DbResult<WorkerRecord> {
    let caps: String = row.try_get("capabilities")?;
    Ok(WorkerRecord {
        id: row.try_get("id")?,
        host: row.try_get("host")?,
        version: row.try_get("version")?,
        caps: serde_json::from_str(&caps)
            .map_err(|e| DbError::Corrupt(format!("worker capabilities: {e}")))?,
        started_at: row.try_get("started_at")?,
        last_seen: row.try_get("last_seen")?,
        stopping: row.try_get("stopping")?,
    })
}

#[async_trait]
impl WorkerRepo for PgRepo {
    async fn register_worker(&self, w: &WorkerRecord) -> DbResult<()> {
        // Replaces every column, as SQLite's INSERT OR REPLACE does.
        sqlx::query(
            "INSERT INTO workers
               (id, host, version, capabilities, tokens, vmaf, slots, started_at, last_seen, stopping)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (id) DO UPDATE SET host = EXCLUDED.host, version = EXCLUDED.version,
               capabilities = EXCLUDED.capabilities, tokens = EXCLUDED.tokens,
               vmaf = EXCLUDED.vmaf, slots = EXCLUDED.slots, started_at = EXCLUDED.started_at,
               last_seen = EXCLUDED.last_seen, stopping = EXCLUDED.stopping",
        )
        .bind(&w.id)
        .bind(&w.host)
        .bind(&w.version)
        .bind(serde_json::to_string(&w.caps).unwrap_or_default())
        .bind(w.caps.token_list())
        .bind(w.caps.libvmaf)
        .bind(w.caps.slots as i64)
        .bind(w.started_at)
        .bind(w.last_seen)
        .bind(w.stopping)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn touch_worker(&self, id: &str, now: i64, stopping: bool) -> DbResult<bool> {
        let r = sqlx::query("UPDATE workers SET last_seen = $1, stopping = $2 WHERE id = $3")
            .bind(now)
            .bind(stopping)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn remove_worker(&self, id: &str) -> DbResult<()> {
        sqlx::query("DELETE FROM workers WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn workers(&self) -> DbResult<Vec<WorkerStatus>> {
        let rows = sqlx::query("SELECT * FROM workers ORDER BY started_at DESC, id")
            .fetch_all(&self.pool)
            .await?;
        let held = sqlx::query(
            "SELECT w.id AS worker, q.job_id FROM queue q JOIN workers w
               ON q.lease_owner LIKE w.id || '/%'
             WHERE q.lease_until >= $1 ORDER BY q.enqueued_at",
        )
        .bind(convertrilo_core::time::now_ms())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let worker = worker(row)?;
                let jobs = held
                    .iter()
                    .filter(|h| h.try_get::<&str, _>("worker").ok() == Some(worker.id.as_str()))
                    .map(|h| rows::parse_id(h.try_get::<&str, _>("job_id")?))
                    .collect::<DbResult<_>>()?;
                Ok(WorkerStatus { worker, jobs })
            })
            .collect()
    }

    async fn prune_workers(&self, seen_before: i64) -> DbResult<u64> {
        let r = sqlx::query("DELETE FROM workers WHERE last_seen < $1")
            .bind(seen_before)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    async fn unrunnable(
        &self,
        live_since: i64,
        queued_before: i64,
        limit: i64,
    ) -> DbResult<Vec<Unrunnable>> {
        let now = convertrilo_core::time::now_ms();
        let rows = sqlx::query(
            "SELECT q.job_id, q.need_encoder, q.need_vmaf FROM queue q
             WHERE (q.lease_until IS NULL OR q.lease_until < $1) AND q.enqueued_at < $2
               AND q.need_encoder <> ''
               AND NOT EXISTS (
                 SELECT 1 FROM workers w
                 WHERE w.last_seen >= $3 AND NOT w.stopping
                   AND strpos(w.tokens, ',' || q.need_encoder || ',') > 0
                   AND (NOT q.need_vmaf OR w.vmaf))
               AND (q.need_encoder LIKE 'gpu:%' OR q.need_vmaf OR EXISTS (
                 SELECT 1 FROM workers w WHERE w.last_seen >= $3 AND NOT w.stopping))
             ORDER BY q.enqueued_at LIMIT $4",
        )
        .bind(now)
        .bind(queued_before)
        .bind(live_since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Unrunnable {
                    job: rows::parse_id(r.try_get::<&str, _>("job_id")?)?,
                    needs: Needs {
                        encoder: r.try_get("need_encoder")?,
                        vmaf: r.try_get("need_vmaf")?,
                    },
                })
            })
            .collect()
    }
}

#[async_trait]
impl StatsRepo for PgRepo {
    async fn ping(&self) -> DbResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn stats(&self, now: i64) -> DbResult<Stats> {
        let by_status = sqlx::query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        let mut jobs_by_status = Vec::new();
        for r in &by_status {
            if let Some(s) = JobStatus::parse(r.try_get::<&str, _>("status")?) {
                jobs_by_status.push((s, r.try_get::<i64, _>("n")?));
            }
        }
        // SUM is NUMERIC in PostgreSQL: cast back to the BIGINT it counts.
        let queue = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN lease_until >= $1 THEN 0 ELSE 1 END), 0)::BIGINT AS waiting,
                    COALESCE(SUM(CASE WHEN lease_until >= $1 THEN 1 ELSE 0 END), 0)::BIGINT AS running
             FROM queue",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        let encodes = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(finished_at - started_at), 0)::BIGINT AS ms FROM jobs
             WHERE status = 'success' AND started_at IS NOT NULL AND finished_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Stats {
            jobs_by_status,
            queue_depth: queue.try_get("waiting")?,
            running: queue.try_get("running")?,
            encodes: encodes.try_get("n")?,
            encode_seconds: encodes.try_get::<i64, _>("ms")? as f64 / 1000.0,
        })
    }
}

impl QueueEvents for PgRepo {
    fn subscribe(&self) -> broadcast::Receiver<QueueEvent> {
        self.events.subscribe()
    }
}
