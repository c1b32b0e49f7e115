//! Sign-in state on PostgreSQL.

use super::{rows, PgRepo};
use crate::{auth::*, ApiKey, DbResult};
use async_trait::async_trait;
use convertrilo_core::{ApiKeyId, UserId};
use sqlx::Row;

#[async_trait]
impl AuthRepo for PgRepo {
    async fn list_api_keys(&self, user: UserId) -> DbResult<Vec<ApiKey>> {
        let found = sqlx::query("SELECT * FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC, id DESC")
            .bind(user.to_string())
            .fetch_all(&self.pool)
            .await?;
        found.iter().map(rows::api_key).collect()
    }

    async fn revoke_api_key(&self, user: UserId, id: ApiKeyId, now: i64) -> DbResult<bool> {
        let r = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL")
            .bind(now)
            .bind(id.to_string())
            .bind(user.to_string())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn set_banned(&self, user: UserId, banned: bool) -> DbResult<bool> {
        let r = sqlx::query("UPDATE users SET banned = $1 WHERE id = $2")
            .bind(banned)
            .bind(user.to_string())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn store_refresh_token(&self, t: &RefreshToken) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(t.id.to_string())
        .bind(t.user_id.to_string())
        .bind(t.family_id.to_string())
        .bind(&t.token_hash)
        .bind(t.expires_at)
        .bind(t.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        next: &RefreshToken,
        now: i64,
    ) -> DbResult<Rotation> {
        let mut tx = self.pool.begin().await?;
        // Marking the token used locks its row. A concurrent refresh with the same token waits
        // for this transaction, then finds the row used (PostgreSQL re-checks the WHERE clause
        // on the new row version) and counts as a replay: only one of them succeeds.
        let used = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1
             WHERE token_hash = $2 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1
             RETURNING user_id, family_id",
        )
        .bind(now)
        .bind(old_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = used else {
            let replay = sqlx::query(
                "SELECT family_id FROM refresh_tokens WHERE token_hash = $1 AND used_at IS NOT NULL",
            )
            .bind(old_hash)
            .fetch_optional(&mut *tx)
            .await?;
            let outcome = match replay {
                Some(r) => {
                    let family: String = r.try_get("family_id")?;
                    sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL")
                        .bind(now)
                        .bind(family)
                        .execute(&mut *tx)
                        .await?;
                    Rotation::Reused
                }
                None => Rotation::Invalid,
            };
            tx.commit().await?;
            return Ok(outcome);
        };
        let user_id: String = row.try_get("user_id")?;
        let family: String = row.try_get("family_id")?;
        sqlx::query(
            "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(next.id.to_string())
        .bind(&user_id)
        .bind(&family)
        .bind(&next.token_hash)
        .bind(next.expires_at)
        .bind(next.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Rotation::Rotated {
            user_id: rows::parse_id(&user_id)?,
        })
    }

    async fn revoke_refresh_family(&self, token_hash: &str, now: i64) -> DbResult<bool> {
        let r = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1
             WHERE family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $2) AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(token_hash)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }
}
