//! Who is calling: the `X-API-Key` header resolved to an account, with its scopes.

use super::error::AppError;
use crate::{accounts::hash_api_key, state::AppState};
use axum::{extract::FromRequestParts, http::request::Parts};
use convertrilo_core::{time::now_ms, ErrorCode, Scope, UserId};

/// An authenticated caller. Handlers call [`Caller::require`] with their scope.
pub struct Caller {
    pub user_id: UserId,
    pub scopes: Vec<Scope>,
}

impl Caller {
    pub fn require(&self, scope: Scope) -> Result<(), AppError> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(AppError::missing_scope(scope))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(raw) = parts
            .headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
        else {
            return Err(AppError::unauthorized(
                ErrorCode::InvalidApiKey,
                "missing API key: send it in the X-API-Key header",
            ));
        };
        let Some((key, user)) = state
            .repos
            .accounts
            .api_key_by_hash(&hash_api_key(raw))
            .await?
        else {
            return Err(AppError::unauthorized(
                ErrorCode::InvalidApiKey,
                "the API key is not valid; check it was copied whole",
            ));
        };
        if key.revoked_at.is_some() {
            return Err(AppError::unauthorized(
                ErrorCode::InvalidApiKey,
                "the API key has been revoked; create a new one",
            ));
        }
        if key.expires_at.is_some_and(|t| t <= now_ms()) {
            return Err(AppError::unauthorized(
                ErrorCode::ApiKeyExpired,
                "the API key has expired; create a new one",
            ));
        }
        if user.banned {
            return Err(AppError::new(
                axum::http::StatusCode::FORBIDDEN,
                ErrorCode::AccountBanned,
                "this account is banned",
            ));
        }
        Ok(Caller {
            user_id: user.id,
            scopes: key.scopes,
        })
    }
}
