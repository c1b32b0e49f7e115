//! Who is calling: an `X-API-Key` (scoped) or a login's `Authorization: Bearer` access token
//! (every scope), resolved to an account that is not banned, within its request rate.

use super::{error::AppError, limits::RateSlot};
use crate::{accounts::hash_api_key, state::AppState};
use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{request::Parts, StatusCode},
};
use convertrilo_core::{time::now_ms, ErrorCode, Scope, UserId, WireEnum};
use std::net::SocketAddr;

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    ApiKey,
    Bearer,
}

/// An authenticated caller. Handlers call [`Caller::require`] with their scope.
pub struct Caller {
    pub user_id: UserId,
    pub scopes: Vec<Scope>,
    pub credential: Credential,
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

fn unauthorized(code: ErrorCode, message: &str) -> AppError {
    AppError::unauthorized(code, message)
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Caller, AppError> {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if parts
        .headers
        .get("x-api-key")
        .is_some_and(|v| v.to_str().is_err())
    {
        return Err(unauthorized(
            ErrorCode::InvalidApiKey,
            "the API key holds characters no key has; check it was copied whole",
        ));
    }
    // The key lookup returns its owner too, saving a query on every API-key request.
    let (user_id, scopes, credential, owner) = if let Some(raw) = header("x-api-key") {
        let Some((key, owner)) = state
            .repos
            .accounts
            .api_key_by_hash(&hash_api_key(raw))
            .await?
        else {
            return Err(unauthorized(
                ErrorCode::InvalidApiKey,
                "the API key is not valid; check it was copied whole",
            ));
        };
        if key.revoked_at.is_some() {
            return Err(unauthorized(
                ErrorCode::InvalidApiKey,
                "the API key has been revoked; create a new one",
            ));
        }
        if key.expires_at.is_some_and(|t| t <= now_ms()) {
            return Err(unauthorized(
                ErrorCode::ApiKeyExpired,
                "the API key has expired; create a new one",
            ));
        }
        (key.user_id, key.scopes, Credential::ApiKey, Some(owner))
    } else if let Some(bearer) = header("authorization").and_then(|h| {
        // Scheme names are case-insensitive (RFC 9110 §11.1).
        let (scheme, token) = h.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then_some(token)
    }) {
        let user = state
            .sessions
            .verify_access(bearer.trim(), now_ms() / 1000)
            .map_err(|m| unauthorized(ErrorCode::InvalidApiKey, m))?;
        (user, Scope::ALL.to_vec(), Credential::Bearer, None)
    } else {
        return Err(unauthorized(
            ErrorCode::InvalidApiKey,
            "missing credentials: send an API key in the X-API-Key header, or a login token as Authorization: Bearer",
        ));
    };
    let user = match owner {
        Some(owner) => owner,
        None => state.repos.accounts.user(user_id).await?.ok_or_else(|| {
            unauthorized(
                ErrorCode::UserNotFound,
                "the account behind these credentials no longer exists",
            )
        })?,
    };
    if user.banned {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::AccountBanned,
            "this account is banned; contact the operator",
        ));
    }
    Ok(Caller {
        user_id,
        scopes,
        credential,
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = match authenticate(parts, state).await {
            Ok(caller) => caller,
            Err(e) if e.status == StatusCode::UNAUTHORIZED => {
                // Failed credentials are limited per client address, so guessing keys costs
                // the guesser, not the database.
                let ip = parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0.ip().to_string())
                    .unwrap_or_default();
                let decision = state.limits.check(
                    &format!("authfail:{ip}"),
                    state.config.rate_limit_per_minute,
                );
                if !decision.allowed {
                    RateSlot::record(parts, decision);
                    return Err(AppError::rate_limited(decision));
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let decision = state.limits.check(
            &format!("account:{}", caller.user_id),
            state.config.rate_limit_per_minute,
        );
        RateSlot::record(parts, decision);
        if !decision.allowed {
            return Err(AppError::rate_limited(decision));
        }
        Ok(caller)
    }
}

/// A caller signed in with a password login (Bearer); the contract keeps `/api-keys` to these.
pub struct LoginCaller(pub Caller);

impl FromRequestParts<AppState> for LoginCaller {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.credential != Credential::Bearer {
            return Err(AppError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "API keys are managed with a login token: POST /auth/login, then send Authorization: Bearer <accessToken>",
            ));
        }
        Ok(LoginCaller(caller))
    }
}
