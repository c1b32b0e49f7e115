//! Accounts, API keys and settings on PostgreSQL (the token journal is in `ledger`).

use super::{ledger, rows, PgRepo};
use crate::{model::*, AccountRepo, DbError, DbResult, Trial};
use async_trait::async_trait;
use convertrilo_core::{Neu, UserId};
use sqlx::Row;

#[async_trait]
impl AccountRepo for PgRepo {
    async fn create_user(
        &self,
        user: &User,
        grant: Option<Neu>,
        trial: Option<Trial>,
    ) -> DbResult<()> {
        let mut tx = self.pool.begin().await?;
        // A concurrent insert of the same email makes this one wait for it, then do nothing.
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, password_hash, is_admin, banned, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (email) DO NOTHING",
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
        ledger::open_account(&mut tx, user.id, grant, trial).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn user_by_email(&self, email: &str) -> DbResult<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::user).transpose()
    }

    async fn user(&self, id: UserId) -> DbResult<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1")
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
        // One query: this runs on every API-key request.
        let Some(row) = sqlx::query(
            "SELECT k.*, u.email AS u_email, u.password_hash AS u_password_hash, u.is_admin AS u_is_admin,
                    u.banned AS u_banned, u.created_at AS u_created_at
             FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.key_hash = $1",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let key = rows::api_key(&row)?;
        let user = User {
            id: key.user_id,
            email: row.try_get("u_email")?,
            password_hash: row.try_get("u_password_hash")?,
            is_admin: row.try_get("u_is_admin")?,
            banned: row.try_get("u_banned")?,
            created_at: row.try_get("u_created_at")?,
        };
        Ok(Some((key, user)))
    }

    async fn setting_or_insert(&self, key: &str, value: &str) -> DbResult<String> {
        // An insert that meets a concurrent uncommitted one waits for it, so the read below
        // sees whichever value was committed first.
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }

    async fn delete_setting(&self, key: &str, only_if: Option<&str>) -> DbResult<bool> {
        let gone =
            sqlx::query("DELETE FROM settings WHERE key = $1 AND ($2 IS NULL OR value = $2)")
                .bind(key)
                .bind(only_if)
                .execute(&self.pool)
                .await?;
        Ok(gone.rows_affected() > 0)
    }
}
