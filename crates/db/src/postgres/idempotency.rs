//! Idempotency keys on PostgreSQL (rules in `crate::idempotency`).

use super::PgRepo;
use crate::{DbResult, IdemBegin, IdemClaim, IdempotencyRepo, IdempotentResponse};
use async_trait::async_trait;
use sqlx::{PgConnection, Row};

/// Saves the response with the key, inside the caller's transaction. False when the key is
/// no longer held by this attempt.
pub(super) async fn complete(conn: &mut PgConnection, r: &IdempotentResponse) -> DbResult<bool> {
    let done = sqlx::query(
        "UPDATE idempotency_keys SET status_code = $1, response_body = $2, locked_until = NULL
         WHERE user_id = $3 AND key = $4 AND attempt = $5 AND status_code IS NULL",
    )
    .bind(i64::from(r.status))
    .bind(&r.body)
    .bind(r.claim.user_id.to_string())
    .bind(&r.claim.key)
    .bind(&r.claim.attempt)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[async_trait]
impl IdempotencyRepo for PgRepo {
    async fn begin(
        &self,
        c: &IdemClaim,
        now: i64,
        locked_until: i64,
        expired_before: i64,
    ) -> DbResult<IdemBegin> {
        let mut tx = self.pool.begin().await?;
        let row = loop {
            // A conflicting insert that is not yet committed makes this one wait for it.
            let fresh = sqlx::query(
                "INSERT INTO idempotency_keys (user_id, key, request_hash, attempt, locked_until, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, key) DO NOTHING",
            )
            .bind(c.user_id.to_string())
            .bind(&c.key)
            .bind(&c.request_hash)
            .bind(&c.attempt)
            .bind(locked_until)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if fresh.rows_affected() == 1 {
                tx.commit().await?;
                return Ok(IdemBegin::Started);
            }
            // The key exists: lock its row, so that of two requests that both find it expired
            // or abandoned only the first takes it over (the second then reads the new holder).
            let row = sqlx::query(
                "SELECT request_hash, locked_until, status_code, response_body, created_at
                 FROM idempotency_keys WHERE user_id = $1 AND key = $2 FOR UPDATE",
            )
            .bind(c.user_id.to_string())
            .bind(&c.key)
            .fetch_optional(&mut *tx)
            .await?;
            // None: the holder gave the key back between the two statements; try again.
            if let Some(row) = row {
                break row;
            }
        };
        let hash: String = row.try_get("request_hash")?;
        let status: Option<i64> = row.try_get("status_code")?;
        let lock: Option<i64> = row.try_get("locked_until")?;
        let created: i64 = row.try_get("created_at")?;
        let expired = created < expired_before && (status.is_some() || lock < Some(now));
        let outcome = if expired || (status.is_none() && hash == c.request_hash && lock < Some(now))
        {
            // An expired key counts as unused; an abandoned claim (its process died) is
            // taken over. Either way this attempt now holds it.
            sqlx::query(
                "UPDATE idempotency_keys SET request_hash = $1, attempt = $2, locked_until = $3,
                       status_code = NULL, response_body = NULL,
                       created_at = CASE WHEN $4 THEN $5 ELSE created_at END
                     WHERE user_id = $6 AND key = $7",
            )
            .bind(&c.request_hash)
            .bind(&c.attempt)
            .bind(locked_until)
            .bind(expired)
            .bind(now)
            .bind(c.user_id.to_string())
            .bind(&c.key)
            .execute(&mut *tx)
            .await?;
            IdemBegin::Started
        } else if hash != c.request_hash {
            IdemBegin::Conflict
        } else if let Some(status) = status {
            IdemBegin::Replay {
                status: u16::try_from(status).unwrap_or(500),
                body: row.try_get("response_body")?,
            }
        } else {
            IdemBegin::InProgress
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn extend(&self, c: &IdemClaim, locked_until: i64) -> DbResult<bool> {
        let r = sqlx::query(
            "UPDATE idempotency_keys SET locked_until = $1
             WHERE user_id = $2 AND key = $3 AND attempt = $4 AND status_code IS NULL",
        )
        .bind(locked_until)
        .bind(c.user_id.to_string())
        .bind(&c.key)
        .bind(&c.attempt)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn abandon(&self, c: &IdemClaim) -> DbResult<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys
             WHERE user_id = $1 AND key = $2 AND attempt = $3 AND status_code IS NULL",
        )
        .bind(c.user_id.to_string())
        .bind(&c.key)
        .bind(&c.attempt)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn sweep(&self, before: i64, now: i64) -> DbResult<u64> {
        let r = sqlx::query(
            "DELETE FROM idempotency_keys
             WHERE created_at < $1 AND (status_code IS NOT NULL OR locked_until < $2)",
        )
        .bind(before)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }
}
