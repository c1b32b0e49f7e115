//! Accounts, API keys, the token journal and settings on SQLite.

use super::{rows, SqliteRepo};
use crate::{model::*, AccountRepo, DbError, DbResult};
use async_trait::async_trait;
use convertrilo_core::{time::now_ms, Neu, UserId};
use sqlx::Row;

#[async_trait]
impl AccountRepo for SqliteRepo {
    async fn create_user(&self, user: &User, grant: Option<Neu>) -> DbResult<()> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, password_hash, is_admin, banned, created_at) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT(email) DO NOTHING",
        )
        .bind(user.id.to_string())
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(user.is_admin)
        .bind(user.banned)
        .bind(user.created_at)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(DbError::Conflict(format!(
                "a user with email {}",
                user.email
            )));
        }
        if let Some(amount) = grant.filter(|g| g.millis() > 0) {
            sqlx::query("INSERT INTO ledger_entries (id, user_id, job_id, kind, amount, created_at) VALUES (?, ?, NULL, 'grant', ?, ?)")
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(user.id.to_string())
                .bind(amount.millis())
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn user_by_email(&self, email: &str) -> DbResult<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE email = ?")
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::user).transpose()
    }

    async fn user(&self, id: UserId) -> DbResult<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::user).transpose()
    }

    async fn count_users(&self) -> DbResult<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }

    async fn create_api_key(&self, key: &ApiKey, key_hash: &str) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, scopes, expires_at, revoked_at, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(key.id.to_string())
        .bind(key.user_id.to_string())
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(key_hash)
        .bind(rows::scopes_to_text(&key.scopes))
        .bind(key.expires_at)
        .bind(key.revoked_at)
        .bind(key.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> DbResult<Option<(ApiKey, User)>> {
        let Some(row) = sqlx::query("SELECT * FROM api_keys WHERE key_hash = ?")
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let key = rows::api_key(&row)?;
        Ok(self.user(key.user_id).await?.map(|u| (key, u)))
    }

    async fn ledger_total(&self, user: UserId, kind: &str) -> DbResult<Neu> {
        let total: Option<i64> =
            sqlx::query("SELECT SUM(amount) FROM ledger_entries WHERE user_id = ? AND kind = ?")
                .bind(user.to_string())
                .bind(kind)
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?;
        Ok(Neu::from_millis(total.unwrap_or(0)))
    }

    async fn setting_or_insert(&self, key: &str, value: &str) -> DbResult<String> {
        sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }
}
