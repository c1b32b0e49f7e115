//! `/api-keys`: list, create and revoke API keys (login tokens only, as in the contract).

use crate::{
    accounts,
    http::{
        auth::LoginCaller,
        error::{AppError, AppResult, ErrorBody},
        extract::JsonBody,
    },
    state::AppState,
};
use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::{delete, get},
    Json, Router,
};
use convertrilo_core::{
    request::Issue,
    time::{now_ms, rfc3339},
    ApiKeyId, Scope, WireEnum,
};
use convertrilo_db::ApiKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api-keys", get(list_keys).post(create_key))
        .route("/api-keys/{id}", delete(revoke_key))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // documents the body; parsing is `parse_create`
pub struct ApiKeyCreateRequest {
    #[schema(max_length = 100)]
    pub name: String,
    /// Defaults to every scope; grant the fewest your integration needs.
    pub scopes: Option<Vec<Scope>>,
    #[schema(minimum = 1, maximum = 365)]
    pub expires_in_days: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyResponse {
    pub id: String,
    pub name: String,
    /// The raw key: present only in the response that creates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub expires_at: Option<String>,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyListResponse {
    pub keys: Vec<ApiKeyResponse>,
}

impl ApiKeyResponse {
    fn of(key: &ApiKey, raw: Option<String>) -> Self {
        Self {
            id: key.id.to_string(),
            name: key.name.clone(),
            key: raw,
            prefix: key.prefix.clone(),
            scopes: key.scopes.clone(),
            expires_at: key.expires_at.map(rfc3339),
            created_at: rfc3339(key.created_at),
        }
    }
}

fn parse_create(body: &Value) -> Result<(String, Vec<Scope>, Option<u32>), Vec<Issue>> {
    let mut issues = Vec::new();
    let mut issue = |path: &str, message: String| {
        issues.push(Issue {
            path: path.into(),
            message,
        })
    };
    let name = match body.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= 100 => {
            s.trim().to_string()
        }
        Some(Value::String(s)) if !s.trim().is_empty() => {
            issue(
                "name",
                format!("is {} characters long; the limit is 100", s.chars().count()),
            );
            String::new()
        }
        _ => {
            issue(
                "name",
                "is required: a label for the key, up to 100 characters".into(),
            );
            String::new()
        }
    };
    let scopes = match body.get("scopes") {
        None | Some(Value::Null) => Scope::ALL.to_vec(),
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut scopes = Vec::new();
            for item in items {
                match item.as_str().and_then(Scope::parse) {
                    Some(s) if !scopes.contains(&s) => scopes.push(s),
                    Some(_) => {}
                    None => issue(
                        "scopes",
                        format!("{item} is not a scope; use any of {}", Scope::allowed()),
                    ),
                }
            }
            scopes
        }
        Some(_) => {
            issue(
                "scopes",
                format!("must be a non-empty array of scopes: {}", Scope::allowed()),
            );
            Vec::new()
        }
    };
    let expires = match body.get("expiresInDays") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64().filter(|d| (1..=365).contains(d)) {
            Some(d) => Some(d as u32),
            None => {
                issue(
                    "expiresInDays",
                    format!("{v} is out of range; use an integer from 1 to 365"),
                );
                None
            }
        },
    };
    if issues.is_empty() {
        Ok((name, scopes, expires))
    } else {
        Err(issues)
    }
}

/// The caller's live API keys (without their secrets).
#[utoipa::path(get, path = "/api-keys", tag = "api-keys", security(("BearerAuth" = [])),
    responses((status = 200, body = ApiKeyListResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_keys(
    State(state): State<AppState>,
    LoginCaller(caller): LoginCaller,
) -> AppResult<Json<ApiKeyListResponse>> {
    let keys = state.repos.auth.list_api_keys(caller.user_id).await?;
    Ok(Json(ApiKeyListResponse {
        keys: keys.iter().map(|k| ApiKeyResponse::of(k, None)).collect(),
    }))
}

/// Create an API key; the raw `key` is in this response only.
#[utoipa::path(post, path = "/api-keys", tag = "api-keys", request_body = ApiKeyCreateRequest, security(("BearerAuth" = [])),
    responses((status = 200, body = ApiKeyResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_key(
    State(state): State<AppState>,
    LoginCaller(caller): LoginCaller,
    JsonBody(body): JsonBody,
) -> AppResult<Json<ApiKeyResponse>> {
    let (name, scopes, expires) = parse_create(&body).map_err(AppError::invalid_body)?;
    let (key, raw) =
        accounts::create_api_key_for(&state.repos, caller.user_id, &name, scopes, expires)
            .await
            .map_err(AppError::internal)?;
    Ok(Json(ApiKeyResponse::of(&key, Some(raw))))
}

/// Revoke an API key at once.
#[utoipa::path(delete, path = "/api-keys/{id}", tag = "api-keys", params(("id" = String, Path)), security(("BearerAuth" = [])),
    responses((status = 204, description = "revoked"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke_key(
    State(state): State<AppState>,
    LoginCaller(caller): LoginCaller,
    Path(id): Path<String>,
) -> AppResult<StatusCode> {
    let not_found = || AppError::not_found(format!("no API key with id {id}"));
    let key_id: ApiKeyId = id.parse().map_err(|_| not_found())?;
    if state
        .repos
        .auth
        .revoke_api_key(caller.user_id, key_id, now_ms())
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}
