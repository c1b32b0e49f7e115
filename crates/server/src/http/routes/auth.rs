//! `/auth/login`, `/auth/refresh`, `/auth/logout`: password sessions.

use crate::{
    http::{
        error::{AppError, AppResult, ErrorBody},
        extract::JsonBody,
        limits::RateSlot,
    },
    session::{new_refresh_token, refresh_digest},
    state::AppState,
};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use axum::{
    extract::{ConnectInfo, FromRequestParts, State},
    http::{request::Parts, StatusCode},
    routing::post,
    Extension, Json, Router,
};
use convertrilo_core::{request::Issue, time::now_ms, ErrorCode, UserId};
use convertrilo_db::{RefreshToken, Rotation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::SocketAddr;
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the body; parsing is `string_fields`
pub struct AuthLoginRequest {
    #[schema(format = "email")]
    pub email: String,
    #[schema(min_length = 8)]
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthLoginResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// Reads required string fields, naming each missing or mistyped one.
fn string_fields<const N: usize>(body: &Value, names: [&str; N]) -> AppResult<[String; N]> {
    let mut issues = Vec::new();
    let values = names.map(|name| match body.get(name) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            issues.push(Issue {
                path: name.into(),
                message: "is required".into(),
            });
            String::new()
        }
        Some(_) => {
            issues.push(Issue {
                path: name.into(),
                message: "must be a string".into(),
            });
            String::new()
        }
    });
    if issues.is_empty() {
        Ok(values)
    } else {
        Err(AppError::invalid_body(issues))
    }
}

fn bad_credentials() -> AppError {
    AppError::unauthorized(ErrorCode::InvalidCredentials, "wrong email or password")
}

/// The client's address, for per-IP limits (absent when served without connect info).
struct ClientIp(Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let info = ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
            .await
            .ok();
        Ok(ClientIp(info.map(|ConnectInfo(addr)| addr.ip())))
    }
}

/// A new refresh token for `user` (raw, and the row that stores its digest).
fn new_refresh(state: &AppState, user: UserId) -> (String, RefreshToken) {
    let now = now_ms();
    let (raw, digest) = new_refresh_token();
    let id = uuid::Uuid::now_v7();
    let token = RefreshToken {
        id,
        user_id: user,
        family_id: id,
        token_hash: digest,
        expires_at: now + state.config.refresh_token_ttl_days as i64 * 86_400_000,
        created_at: now,
    };
    (raw, token)
}

/// The response for a signed-in `user`: a new access token beside the refresh token.
fn session(state: &AppState, user: UserId, refresh_token: String) -> AuthLoginResponse {
    let ttl = state.config.access_token_ttl_secs;
    let access_token = state
        .sessions
        .access_token(user, now_ms() / 1000, ttl as i64);
    AuthLoginResponse {
        access_token,
        refresh_token,
        token_type: "Bearer",
        expires_in: ttl,
    }
}

/// Log in with email and password: a short-lived access token and a rotating refresh token.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = AuthLoginRequest, security(),
    responses((status = 200, body = AuthLoginResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Extension(slot): Extension<RateSlot>,
    JsonBody(body): JsonBody,
) -> AppResult<Json<AuthLoginResponse>> {
    let key = format!("login:{}", ip.map(|i| i.to_string()).unwrap_or_default());
    let decision = state
        .limits
        .check(&key, state.config.login_rate_limit_per_minute);
    slot.set(decision);
    if !decision.allowed {
        return Err(AppError::rate_limited(decision));
    }
    let [email, password] = string_fields(&body, ["email", "password"])?;
    let user = state
        .repos
        .accounts
        .user_by_email(&email.trim().to_ascii_lowercase())
        .await?;
    // Verify against a real hash even for unknown emails, so timing does not reveal accounts.
    let hash = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| DUMMY_HASH.to_string());
    let ok = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
    .await
    .map_err(AppError::internal)?;
    let user = user.filter(|_| ok).ok_or_else(bad_credentials)?;
    if user.banned {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::AccountBanned,
            "this account is banned; contact the operator",
        ));
    }
    let (raw, token) = new_refresh(&state, user.id);
    state.repos.auth.store_refresh_token(&token).await?;
    Ok(Json(session(&state, user.id, raw)))
}

/// Trade a refresh token for a new pair; the old refresh token stops working.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest, security(),
    responses((status = 200, body = AuthLoginResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn refresh(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> AppResult<Json<AuthLoginResponse>> {
    let [raw] = string_fields(&body, ["refreshToken"])?;
    // The repository takes the new token's user and family from the token it replaces.
    let (new_raw, next) = new_refresh(&state, UserId::new());
    let user = match state.repos.auth.rotate_refresh_token(&refresh_digest(&raw), &next, now_ms()).await? {
        Rotation::Rotated { user_id } => user_id,
        Rotation::Invalid => return Err(AppError::unauthorized(ErrorCode::InvalidCredentials, "the refresh token is unknown, expired or revoked; log in again")),
        Rotation::Reused => {
            return Err(AppError::unauthorized(
                ErrorCode::InvalidCredentials,
                "this refresh token was already used; for safety every session of that login is now signed out: log in again",
            ))
        }
    };
    let account = state
        .repos
        .accounts
        .user(user)
        .await?
        .ok_or_else(bad_credentials)?;
    if account.banned {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::AccountBanned,
            "this account is banned; contact the operator",
        ));
    }
    Ok(Json(session(&state, user, new_raw)))
}

/// Sign out: the refresh token and every token rotated from the same login stop working.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", request_body = RefreshRequest, security(),
    responses((status = 204, description = "signed out"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn logout(State(state): State<AppState>, JsonBody(body): JsonBody) -> AppResult<StatusCode> {
    let [raw] = string_fields(&body, ["refreshToken"])?;
    if state
        .repos
        .auth
        .revoke_refresh_family(&refresh_digest(&raw), now_ms())
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::unauthorized(
            ErrorCode::InvalidCredentials,
            "the refresh token is unknown; nothing to sign out",
        ))
    }
}

/// An argon2id hash of a random string: verified against when the email is unknown.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0iC0sOYb5AsV6xwt4sbyaWkGHFS0yL33EWsoIw0Th4M";
