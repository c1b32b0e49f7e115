//! Sign-in state: API key management, account bans and rotating refresh tokens.

use crate::{ApiKey, DbResult};
use async_trait::async_trait;
use convertrilo_core::{ApiKeyId, UserId};

#[derive(Debug, Clone, PartialEq)]
pub struct RefreshToken {
    pub id: uuid::Uuid,
    pub user_id: UserId,
    /// Every token descended from one login shares the family of the first.
    pub family_id: uuid::Uuid,
    pub token_hash: String,
    pub expires_at: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rotation {
    /// The old token is now used; the new one is stored.
    Rotated { user_id: UserId },
    /// Unknown, expired or revoked.
    Invalid,
    /// Already used once: a replay. The whole family is now revoked.
    Reused,
}

#[async_trait]
pub trait AuthRepo: Send + Sync {
    /// The user's keys, newest first, revoked ones excluded.
    async fn list_api_keys(&self, user: UserId) -> DbResult<Vec<ApiKey>>;
    /// Revokes one of the user's keys; false when there is no such live key.
    async fn revoke_api_key(&self, user: UserId, id: ApiKeyId, now: i64) -> DbResult<bool>;
    /// Bans or unbans; false when the user does not exist.
    async fn set_banned(&self, user: UserId, banned: bool) -> DbResult<bool>;
    async fn store_refresh_token(&self, token: &RefreshToken) -> DbResult<()>;
    /// Exchanges a live refresh token (by digest) for `next`, in one transaction.
    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        next: &RefreshToken,
        now: i64,
    ) -> DbResult<Rotation>;
    /// Revokes the token's whole family (logout). False when the token is unknown.
    async fn revoke_refresh_family(&self, token_hash: &str, now: i64) -> DbResult<bool>;
}
