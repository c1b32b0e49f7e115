//! Managed webhooks on PostgreSQL (rules in `crate::webhooks`). A webhook's row is the lock
//! that keeps one message per webhook in flight: `due_messages` takes the rows of the webhooks
//! it serves with `SKIP LOCKED`, so two dispatchers never serve the same webhook at once nor
//! wait for each other, and `record_attempt` locks the webhook before its message, the order
//! `due_messages` and `delete_webhook` use too.

use super::{rows, PgRepo};
use crate::{webhooks::*, DbError, DbResult};
use async_trait::async_trait;
use convertrilo_core::{time::now_ms, JobStatus, UserId, WireEnum};
use sqlx::{postgres::PgRow, PgConnection, Row};

/// Queues `event` for every active subscription of `owner` that asked for it, inside the
/// caller's transaction (the one that made the change the event reports).
pub(super) async fn emit(
    conn: &mut PgConnection,
    owner: &str,
    job_id: &str,
    event: &str,
    status: JobStatus,
    now: i64,
) -> DbResult<()> {
    // FOR KEY SHARE, the lock the foreign key check would take anyway, taken while reading:
    // a webhook deleted concurrently is then skipped rather than failing the job's change.
    sqlx::query(
        "INSERT INTO webhook_messages (id, webhook_id, job_id, event, status, next_attempt_at, created_at)
         SELECT 'msg_' || replace(gen_random_uuid()::TEXT, '-', ''), w.id, $1, $2, $3, $4, $4
         FROM webhooks w
         WHERE w.user_id = $5
           AND EXISTS (SELECT 1 FROM jsonb_array_elements_text(w.events::JSONB) AS e(value)
                       WHERE e.value = $2)
         FOR KEY SHARE OF w",
    )
    .bind(job_id)
    .bind(event)
    .bind(status.as_str())
    .bind(now)
    .bind(owner)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// [`emit`] for a job whose owner the caller does not have at hand.
pub(super) async fn emit_for_job(
    conn: &mut PgConnection,
    job_id: &str,
    event: &str,
    status: JobStatus,
    now: i64,
) -> DbResult<()> {
    let owner: Option<String> = sqlx::query_scalar("SELECT user_id FROM jobs WHERE id = $1")
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await?;
    match owner {
        Some(owner) => emit(conn, &owner, job_id, event, status, now).await,
        None => Ok(()),
    }
}

fn webhook(row: &PgRow) -> DbResult<Webhook> {
    let id: &str = row.try_get("id")?;
    let events: &str = row.try_get("events")?;
    Ok(Webhook {
        id: id
            .parse()
            .map_err(|_| DbError::Corrupt(format!("webhook id {id}")))?,
        user_id: rows::parse_id(row.try_get::<&str, _>("user_id")?)?,
        url: row.try_get("url")?,
        events: serde_json::from_str(events)
            .map_err(|e| DbError::Corrupt(format!("webhook events: {e}")))?,
        secret: row.try_get("secret")?,
        is_active: row.try_get("is_active")?,
        failure_count: row.try_get("failure_count")?,
        last_triggered_at: row.try_get("last_triggered_at")?,
        last_failed_at: row.try_get("last_failed_at")?,
        created_at: row.try_get("created_at")?,
    })
}

fn delivery(row: &PgRow) -> DbResult<Delivery> {
    let id: &str = row.try_get("id")?;
    let hook: &str = row.try_get("webhook_id")?;
    let job: Option<&str> = row.try_get("job_id")?;
    let status: &str = row.try_get("status")?;
    Ok(Delivery {
        id: id
            .parse()
            .map_err(|_| DbError::Corrupt(format!("delivery id {id}")))?,
        message_id: row.try_get("message_id")?,
        webhook_id: hook
            .parse()
            .map_err(|_| DbError::Corrupt(format!("webhook id {hook}")))?,
        job_id: job.map(rows::parse_id).transpose()?,
        event: row.try_get("event")?,
        success: status == "success",
        status_code: row.try_get("status_code")?,
        duration_ms: row.try_get("duration_ms")?,
        response_body: row.try_get("response_body")?,
        error: row.try_get("error")?,
        attempt: row.try_get("attempt")?,
        next_retry_at: row.try_get("next_retry_at")?,
        retried_at: row.try_get("retried_at")?,
        created_at: row.try_get("created_at")?,
    })
}

async fn insert_delivery(conn: &mut PgConnection, d: &Delivery) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, message_id, webhook_id, job_id, event, status, status_code,
           duration_ms, response_body, error, attempt, next_retry_at, retried_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(d.id.to_string())
    .bind(&d.message_id)
    .bind(d.webhook_id.to_string())
    .bind(d.job_id.map(|j| j.to_string()))
    .bind(&d.event)
    .bind(if d.success { "success" } else { "failed" })
    .bind(d.status_code)
    .bind(d.duration_ms)
    .bind(&d.response_body)
    .bind(&d.error)
    .bind(d.attempt)
    .bind(d.next_retry_at)
    .bind(d.retried_at)
    .bind(d.created_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A pending message `m` that is due at `$2` and the oldest pending one of its (webhook, job)
/// pair, which keeps each job's events in order.
const SENDABLE: &str = "m.state = 'pending' AND m.next_attempt_at <= $2
    AND NOT EXISTS (
      SELECT 1 FROM webhook_messages e
      WHERE e.webhook_id = m.webhook_id AND e.job_id IS NOT DISTINCT FROM m.job_id
        AND e.state = 'pending' AND e.seq < m.seq)";

/// No attempt of the webhook whose id is `hook` is in flight at `$2`.
fn idle(hook: &str) -> String {
    format!(
        "NOT EXISTS (
           SELECT 1 FROM webhook_messages l WHERE l.webhook_id = {hook} AND l.leased_until > $2)"
    )
}

#[async_trait]
impl WebhookRepo for PgRepo {
    async fn create_webhook(&self, h: &Webhook, limit: i64) -> DbResult<bool> {
        let mut tx = self.pool.begin().await?;
        // The owner's row lock makes creations of one account take turns, so the count below
        // sees every webhook created before it (READ COMMITTED reads afresh per statement).
        // NO KEY UPDATE does not hold up the inserts that merely reference the account.
        sqlx::query("SELECT id FROM users WHERE id = $1 FOR NO KEY UPDATE")
            .bind(h.user_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let r = sqlx::query(
            "INSERT INTO webhooks (id, user_id, url, events, secret, is_active, failure_count, created_at, updated_at)
             SELECT $1, $2, $3, $4, $5, $6, 0, $7, $7
             WHERE (SELECT COUNT(*) FROM webhooks WHERE user_id = $2) < $8",
        )
        .bind(h.id.to_string())
        .bind(h.user_id.to_string())
        .bind(&h.url)
        .bind(serde_json::to_string(&h.events).unwrap_or_else(|_| "[]".into()))
        .bind(&h.secret)
        .bind(h.is_active)
        .bind(h.created_at)
        .bind(limit)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    async fn webhooks(&self, user: UserId) -> DbResult<Vec<Webhook>> {
        let found =
            sqlx::query("SELECT * FROM webhooks WHERE user_id = $1 ORDER BY created_at, id")
                .bind(user.to_string())
                .fetch_all(&self.pool)
                .await?;
        found.iter().map(webhook).collect()
    }

    async fn webhook(&self, id: uuid::Uuid, user: UserId) -> DbResult<Option<Webhook>> {
        let row = sqlx::query("SELECT * FROM webhooks WHERE id = $1 AND user_id = $2")
            .bind(id.to_string())
            .bind(user.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(webhook).transpose()
    }

    async fn update_webhook(
        &self,
        id: uuid::Uuid,
        user: UserId,
        u: &WebhookUpdate,
    ) -> DbResult<Option<Webhook>> {
        let row = sqlx::query(
            "UPDATE webhooks SET url = COALESCE($1, url), events = COALESCE($2, events),
               is_active = COALESCE($3, is_active),
               failure_count = CASE WHEN $4 THEN 0 ELSE failure_count END,
               updated_at = $5
             WHERE id = $6 AND user_id = $7 RETURNING *",
        )
        .bind(&u.url)
        .bind(
            u.events
                .as_ref()
                .map(|e| serde_json::to_string(e).unwrap_or_default()),
        )
        .bind(u.is_active)
        .bind(u.is_active == Some(true))
        .bind(now_ms())
        .bind(id.to_string())
        .bind(user.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(webhook).transpose()
    }

    async fn delete_webhook(&self, id: uuid::Uuid, user: UserId) -> DbResult<bool> {
        let r = sqlx::query("DELETE FROM webhooks WHERE id = $1 AND user_id = $2")
            .bind(id.to_string())
            .bind(user.to_string())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn due_messages(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> DbResult<Vec<DueMessage>> {
        let mut tx = self.pool.begin().await?;
        // First the webhooks to serve: active, idle, with a message to send, oldest message
        // first. Their rows stay locked to commit; another dispatcher skips them.
        let first = format!(
            "SELECT w.id FROM webhooks w
             CROSS JOIN LATERAL (
               SELECT MIN(m.seq) AS seq FROM webhook_messages m
               WHERE m.webhook_id = w.id AND {SENDABLE}) d
             WHERE w.is_active AND d.seq IS NOT NULL AND {idle}
             ORDER BY d.seq LIMIT $1
             FOR NO KEY UPDATE OF w SKIP LOCKED",
            idle = idle("w.id"),
        );
        let hooks: Vec<String> = sqlx::query_scalar(&first)
            .bind(limit)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
        if hooks.is_empty() {
            return Ok(Vec::new());
        }
        // Then one message each. A second statement reads afresh: a webhook whose lease
        // another dispatcher committed just before we locked it is now seen as busy. The
        // outer conditions are re-checked should an attempt be recorded on a row meanwhile.
        let second = format!(
            "WITH leased AS (
               UPDATE webhook_messages SET leased_until = $1
               WHERE seq IN (
                 SELECT MIN(m.seq) FROM webhook_messages m
                 WHERE m.webhook_id = ANY($3) AND {SENDABLE} AND {idle}
                 GROUP BY m.webhook_id)
               AND state = 'pending' AND next_attempt_at <= $2
               RETURNING *)
             SELECT * FROM leased ORDER BY seq",
            idle = idle("m.webhook_id"),
        );
        let picked = sqlx::query(&second)
            .bind(lease_until)
            .bind(now)
            .bind(&hooks)
            .fetch_all(&mut *tx)
            .await?;
        let mut out = Vec::with_capacity(picked.len());
        for m in &picked {
            let hook_id: String = m.try_get("webhook_id")?;
            let job_id: Option<String> = m.try_get("job_id")?;
            let hook = sqlx::query("SELECT * FROM webhooks WHERE id = $1")
                .bind(&hook_id)
                .fetch_one(&mut *tx)
                .await?;
            let job = match &job_id {
                Some(j) => sqlx::query("SELECT * FROM jobs WHERE id = $1")
                    .bind(j)
                    .fetch_optional(&mut *tx)
                    .await?
                    .as_ref()
                    .map(rows::job)
                    .transpose()?,
                None => None,
            };
            out.push(DueMessage {
                id: m.try_get("id")?,
                webhook: webhook(&hook)?,
                job,
                event: m.try_get("event")?,
                status: m.try_get("status")?,
                attempts: m.try_get("attempts")?,
                payload: m.try_get("payload")?,
                created_at: m.try_get("created_at")?,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn record_attempt(
        &self,
        d: &Delivery,
        payload: &str,
        after: AfterAttempt,
        disable: bool,
        max_failures: i32,
    ) -> DbResult<()> {
        let now = d.created_at;
        let mut tx = self.pool.begin().await?;
        // The webhook before its message (see the module note).
        if d.success {
            sqlx::query(
                "UPDATE webhooks SET failure_count = 0, last_triggered_at = $1 WHERE id = $2",
            )
            .bind(now)
            .bind(d.webhook_id.to_string())
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "UPDATE webhooks SET failure_count = failure_count + 1, last_triggered_at = $1,
                   last_failed_at = $1,
                   is_active = CASE WHEN $2 OR failure_count + 1 >= $3 THEN FALSE ELSE is_active END
                 WHERE id = $4",
            )
            .bind(now)
            .bind(disable)
            .bind(max_failures)
            .bind(d.webhook_id.to_string())
            .execute(&mut *tx)
            .await?;
        }
        let (state, next) = match after {
            AfterAttempt::Delivered => ("delivered", None),
            AfterAttempt::RetryAt(t) => ("pending", Some(t)),
            AfterAttempt::GiveUp => ("failed", None),
        };
        sqlx::query(
            "UPDATE webhook_messages SET attempts = attempts + 1, state = $1, next_attempt_at = $2,
               leased_until = NULL, payload = COALESCE(payload, $3)
             WHERE id = $4",
        )
        .bind(state)
        .bind(next)
        .bind(payload)
        .bind(&d.message_id)
        .execute(&mut *tx)
        .await?;
        insert_delivery(&mut tx, d).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_lease(&self, message_id: &str) -> DbResult<()> {
        sqlx::query("UPDATE webhook_messages SET leased_until = NULL WHERE id = $1")
            .bind(message_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn log_test_delivery(&self, d: &Delivery) -> DbResult<()> {
        let mut conn = self.pool.acquire().await?;
        insert_delivery(&mut conn, d).await?;
        sqlx::query("UPDATE webhooks SET last_triggered_at = $1 WHERE id = $2")
            .bind(d.created_at)
            .bind(d.webhook_id.to_string())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn deliveries(&self, hook: uuid::Uuid, limit: i64) -> DbResult<Vec<Delivery>> {
        let found = sqlx::query(
            "SELECT * FROM webhook_deliveries WHERE webhook_id = $1
             ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(hook.to_string())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(delivery).collect()
    }
}
