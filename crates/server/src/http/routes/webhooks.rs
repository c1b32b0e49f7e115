//! `/webhooks…` (scope `webhooks:manage`): subscriptions to job events, a signed test event,
//! and the log of recent delivery attempts. Delivery itself is `crate::webhooks`.

use crate::{
    http::{
        auth::Caller,
        error::{AppError, AppResult, ErrorBody},
        extract::JsonBody,
    },
    state::AppState,
    webhooks::{self, sign},
};
use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::get,
    Json, Router,
};
use convertrilo_core::{
    request::Issue,
    time::{now_ms, rfc3339},
    ErrorCode, Scope,
};
use convertrilo_db::{webhooks::JOB_EVENTS, Delivery, Webhook, WebhookUpdate};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route(
            "/webhooks/{id}",
            axum::routing::patch(update).delete(remove).post(test),
        )
        .route("/webhooks/{id}/deliveries", get(deliveries))
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the body; it is read by `parse_url` and `parse_events`
pub struct WebhookCreateRequest {
    #[schema(format = "uri")]
    pub url: String,
    /// job.created, job.queued, job.running, job.completed, job.failed, job.canceled.
    pub events: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct WebhookUpdateRequest {
    #[schema(format = "uri")]
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    /// `true` re-enables a disabled webhook and forgets its past failures.
    pub is_active: Option<bool>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookResponse {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    /// The signing secret: in the creation response only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub is_active: bool,
    /// Consecutive failed deliveries (10 disable the webhook).
    pub failure_count: i32,
    pub last_triggered_at: Option<String>,
    pub last_failed_at: Option<String>,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookListResponse {
    pub webhooks: Vec<WebhookResponse>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Success,
    Failed,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDeliveryResponse {
    pub id: String,
    pub webhook_id: String,
    /// The Standard Webhooks `webhook-id` of the event: the same on every retry.
    pub message_id: String,
    pub event: String,
    pub job_id: Option<String>,
    pub status: DeliveryStatus,
    pub status_code: Option<i32>,
    pub duration_ms: Option<i64>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub attempt: i32,
    pub next_retry_at: Option<String>,
    pub retried_at: Option<String>,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookDeliveryListResponse {
    pub deliveries: Vec<WebhookDeliveryResponse>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookTestResponse {
    /// The receiver answered 2xx.
    pub ok: bool,
    pub status_code: Option<i32>,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub delivery_id: String,
}

fn view(h: &Webhook, with_secret: bool) -> WebhookResponse {
    WebhookResponse {
        id: h.id.to_string(),
        url: h.url.clone(),
        events: h.events.clone(),
        secret: with_secret.then(|| h.secret.clone()),
        is_active: h.is_active,
        failure_count: h.failure_count,
        last_triggered_at: h.last_triggered_at.map(rfc3339),
        last_failed_at: h.last_failed_at.map(rfc3339),
        created_at: rfc3339(h.created_at),
    }
}

fn delivery_view(d: &Delivery) -> WebhookDeliveryResponse {
    WebhookDeliveryResponse {
        id: d.id.to_string(),
        webhook_id: d.webhook_id.to_string(),
        message_id: d.message_id.clone(),
        event: d.event.clone(),
        job_id: d.job_id.map(|j| j.to_string()),
        status: if d.success {
            DeliveryStatus::Success
        } else {
            DeliveryStatus::Failed
        },
        status_code: d.status_code,
        duration_ms: d.duration_ms,
        response_body: d.response_body.clone(),
        error: d.error.clone(),
        attempt: d.attempt,
        next_retry_at: d.next_retry_at.map(rfc3339),
        retried_at: d.retried_at.map(rfc3339),
        created_at: rfc3339(d.created_at),
    }
}

fn issue(path: &str, message: impl Into<String>) -> Issue {
    Issue {
        path: path.into(),
        message: message.into(),
    }
}

/// An http(s) URL with a host, or an issue. (Network-level checks are the ingest guard's.)
fn parse_url(v: &Value, issues: &mut Vec<Issue>) -> Option<String> {
    let Some(s) = v.as_str() else {
        issues.push(issue("url", "must be the http(s) URL to deliver events to"));
        return None;
    };
    match reqwest::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            Some(u.to_string())
        }
        _ => {
            issues.push(issue(
                "url",
                format!("{s:?} is not an http:// or https:// URL with a host"),
            ));
            None
        }
    }
}

fn parse_events(v: &Value, issues: &mut Vec<Issue>) -> Option<Vec<String>> {
    let allowed = JOB_EVENTS.join(", ");
    let Some(items) = v.as_array().filter(|a| !a.is_empty()) else {
        issues.push(issue(
            "events",
            format!("must be a non-empty array of event names: {allowed}"),
        ));
        return None;
    };
    let mut events: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str().filter(|e| JOB_EVENTS.contains(e)) {
            Some(e) if !events.iter().any(|x| x == e) => events.push(e.to_string()),
            Some(_) => {}
            None => issues.push(issue(
                &format!("events[{i}]"),
                format!("{item} is not an event; use {allowed}"),
            )),
        }
    }
    Some(events)
}

fn webhook_id(raw: &str) -> AppResult<uuid::Uuid> {
    raw.parse().map_err(|_| not_found(raw))
}

fn not_found(id: &str) -> AppError {
    AppError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::WebhookNotFound,
        format!("no webhook with id {id}"),
    )
}

/// List the account's webhooks (secrets are never shown again).
#[utoipa::path(get, path = "/webhooks", tag = "webhooks", security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = WebhookListResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> AppResult<Json<WebhookListResponse>> {
    caller.require(Scope::WebhooksManage)?;
    let hooks = state.repos.webhooks.webhooks(caller.user_id).await?;
    Ok(Json(WebhookListResponse {
        webhooks: hooks.iter().map(|h| view(h, false)).collect(),
    }))
}

/// Subscribe a URL to job events; the response carries the signing secret, once.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks", request_body = WebhookCreateRequest,
    security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = WebhookResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> AppResult<Json<WebhookResponse>> {
    caller.require(Scope::WebhooksManage)?;
    let mut issues = Vec::new();
    let url = parse_url(&body["url"], &mut issues);
    let events = parse_events(&body["events"], &mut issues);
    let (Some(url), Some(events), true) = (url, events, issues.is_empty()) else {
        return Err(AppError::invalid_body(issues));
    };
    crate::webhooks::check_url(&state, &url).await?;
    let hook = Webhook {
        id: uuid::Uuid::now_v7(),
        user_id: caller.user_id,
        url,
        events,
        secret: sign::new_secret(),
        is_active: true,
        failure_count: 0,
        last_triggered_at: None,
        last_failed_at: None,
        created_at: now_ms(),
    };
    let limit = state.config.webhook_limit_per_account;
    if !state
        .repos
        .webhooks
        .create_webhook(&hook, i64::from(limit))
        .await?
    {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::WebhookLimitExceeded,
            format!("an account may have {limit} webhooks; delete one first"),
        ));
    }
    Ok(Json(view(&hook, true)))
}

/// Change the URL or events, or re-enable with `isActive: true`.
#[utoipa::path(patch, path = "/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)), request_body = WebhookUpdateRequest,
    security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = WebhookResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody,
) -> AppResult<Json<WebhookResponse>> {
    caller.require(Scope::WebhooksManage)?;
    let id = webhook_id(&raw)?;
    let mut issues = Vec::new();
    let present = |k: &str| body.get(k).is_some_and(|v| !v.is_null());
    let mut u = WebhookUpdate::default();
    if present("url") {
        u.url = parse_url(&body["url"], &mut issues);
    }
    if present("events") {
        u.events = parse_events(&body["events"], &mut issues);
    }
    if present("isActive") {
        match body["isActive"].as_bool() {
            Some(b) => u.is_active = Some(b),
            None => issues.push(issue("isActive", "must be true or false")),
        }
    }
    if !issues.is_empty() {
        return Err(AppError::invalid_body(issues));
    }
    if u == WebhookUpdate::default() {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::NoUpdatesProvided,
            "nothing to change: send url, events or isActive",
        ));
    }
    if let Some(url) = &u.url {
        crate::webhooks::check_url(&state, url).await?;
    }
    let hook = state
        .repos
        .webhooks
        .update_webhook(id, caller.user_id, &u)
        .await?
        .ok_or_else(|| not_found(&raw))?;
    Ok(Json(view(&hook, false)))
}

/// Delete the webhook; its undelivered events go with it.
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 204, description = "deleted"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> AppResult<StatusCode> {
    caller.require(Scope::WebhooksManage)?;
    let id = webhook_id(&raw)?;
    if state
        .repos
        .webhooks
        .delete_webhook(id, caller.user_id)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&raw))
    }
}

/// Send a signed `webhook.test` event now and say how the receiver answered.
#[utoipa::path(post, path = "/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = WebhookTestResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn test(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> AppResult<Json<WebhookTestResponse>> {
    caller.require(Scope::WebhooksManage)?;
    let id = webhook_id(&raw)?;
    let hook = state
        .repos
        .webhooks
        .webhook(id, caller.user_id)
        .await?
        .ok_or_else(|| not_found(&raw))?;
    crate::webhooks::check_url(&state, &hook.url).await?;
    let now = now_ms();
    let msg_id = format!("msg_test_{}", uuid::Uuid::new_v4().simple());
    let body = json!({
        "event": "webhook.test",
        "timestamp": rfc3339(now),
        "data": {"webhookId": hook.id.to_string(), "message": "a test event from Convertrilo"}
    })
    .to_string();
    let sent = webhooks::send(&state, &hook, &msg_id, "webhook.test", &body).await;
    let record = Delivery {
        id: uuid::Uuid::now_v7(),
        message_id: msg_id,
        webhook_id: hook.id,
        job_id: None,
        event: "webhook.test".into(),
        success: sent.ok(),
        status_code: sent.status_code.map(i32::from),
        duration_ms: Some(sent.duration_ms),
        response_body: sent.response_body.clone(),
        error: sent.error.clone(),
        attempt: 1,
        next_retry_at: None,
        retried_at: None,
        created_at: now,
    };
    state.repos.webhooks.log_test_delivery(&record).await?;
    Ok(Json(WebhookTestResponse {
        ok: sent.ok(),
        status_code: record.status_code,
        duration_ms: sent.duration_ms,
        error: sent.error,
        delivery_id: record.id.to_string(),
    }))
}

/// The 50 most recent delivery attempts, newest first.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = String, Path)),
    security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = WebhookDeliveryListResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> AppResult<Json<WebhookDeliveryListResponse>> {
    caller.require(Scope::WebhooksManage)?;
    let id = webhook_id(&raw)?;
    state
        .repos
        .webhooks
        .webhook(id, caller.user_id)
        .await?
        .ok_or_else(|| not_found(&raw))?;
    let found = state.repos.webhooks.deliveries(id, 50).await?;
    Ok(Json(WebhookDeliveryListResponse {
        deliveries: found.iter().map(delivery_view).collect(),
    }))
}
