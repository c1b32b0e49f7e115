//! `/public/jobs…`: encodes without an account, for demos and try-it pages. Off unless
//! `public_jobs_enabled`; free, so capped (480p/720p, ≤ 60 fps, a maximum source duration
//! and size), limited per client IP, and queued behind paying jobs. Each job belongs to one
//! system account; its status needs the token returned at creation.

use crate::{
    accounts::hash_api_key,
    http::{
        dto::*,
        error::{AppError, AppResult, ErrorBody},
        extract::{JobPath, JsonBody},
        limits::RateSlot,
    },
    jobs::{self, Draft},
    state::AppState,
};
use axum::{
    extract::{ConnectInfo, FromRequestParts, Query, State},
    http::{request::Parts, StatusCode},
    routing::{get, post},
    Json, Router,
};
use convertrilo_core::{
    pricing::Factor,
    request::{self, SourceRequest},
    spec::{Codec, Container, Priority, Resolution},
    ErrorCode, JobStatus, Neu, UserId,
};
use convertrilo_db::{Job, JobKind};
use rand::{distributions::Alphanumeric, Rng};
use serde::{Deserialize, Serialize};
use std::{collections::HashMap, net::SocketAddr};
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/public/jobs", post(create))
        .route("/public/jobs/{id}/probe-duration", get(probe_duration))
        .route("/public/jobs/{id}/confirm", post(confirm))
        .route("/public/jobs/{id}/status", get(status))
}

/// A request to the public surface: allowed when it is on, within the client IP's rate.
pub struct PublicCaller {
    /// The system account public jobs belong to.
    pub owner: UserId,
}

impl FromRequestParts<AppState> for PublicCaller {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(owner) = state.public_owner else {
            return Err(AppError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "public jobs are turned off on this server; use an API key (the operator can enable them with CONVERTRILO_PUBLIC_JOBS_ENABLED=true)",
            ));
        };
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_default();
        let decision = state.limits.check(
            &format!("public:{ip}"),
            state.config.public_rate_limit_per_minute,
        );
        RateSlot::record(parts, decision);
        if !decision.allowed {
            return Err(AppError::rate_limited(decision));
        }
        Ok(PublicCaller { owner })
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // documents the body; parsing is done by convertrilo_core::request
pub struct PublicJobCreateRequest {
    pub codec: Codec,
    /// 480p or 720p.
    pub resolution: Resolution,
    #[schema(minimum = 1, maximum = 60)]
    pub fps: i64,
    pub container: Option<Container>,
    /// Direct HTTP(S) ingest; without it the response carries a signed upload URL.
    #[schema(format = "uri")]
    pub source_url: Option<String>,
    pub original_filename: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublicJobCreateResponse {
    #[serde(flatten)]
    pub job: JobCreateResponse,
    /// Needed for `GET /public/jobs/{id}/status?token=…`; shown once.
    pub status_token: String,
}

async fn public_job(
    state: &AppState,
    owner: UserId,
    id: convertrilo_core::JobId,
) -> AppResult<Job> {
    state
        .repos
        .jobs
        .job(id, Some(owner))
        .await?
        .ok_or_else(|| AppError::not_found(format!("no public job with id {id}")))
}

/// Create a free, capped job without an account.
#[utoipa::path(post, path = "/public/jobs", tag = "public", request_body = PublicJobCreateRequest,
    responses((status = 200, body = PublicJobCreateResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: PublicCaller,
    JsonBody(body): JsonBody,
) -> AppResult<Json<PublicJobCreateResponse>> {
    let req = request::parse_public_create(&body).map_err(AppError::invalid_body)?;
    let token: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    let draft = Draft {
        spec: req.spec,
        source: req
            .source_url
            .map_or(SourceRequest::Upload, SourceRequest::Url),
        original_filename: req.original_filename,
        external_id: None,
        metadata: None,
        confirm: false,
        kind: JobKind::Public,
        priority: Priority::Normal,
        price_factor: Factor::from_thousandths(0),
        // Free outputs are not kept forever: they go when their download link would expire.
        output_expiry_secs: Some(state.config.download_url_ttl_secs as i64),
        callback_url: None,
        status_token_hash: Some(hash_api_key(&token)),
        output: convertrilo_core::request::OutputRequest::Cdn,
        lenient_probe: false,
    };
    let new = jobs::prepare(&state, caller.owner, draft).await?;
    let response = JobCreateResponse::of(&state, &new.job, Neu::ZERO);
    jobs::insert(&state, &[new], None).await?;
    Ok(Json(PublicJobCreateResponse {
        job: response,
        status_token: token,
    }))
}

/// Probe the source's duration (refused above the public maximum).
#[utoipa::path(get, path = "/public/jobs/{id}/probe-duration", tag = "public", params(("id" = String, Path)),
    responses((status = 200, body = ProbeDurationResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn probe_duration(
    State(state): State<AppState>,
    caller: PublicCaller,
    JobPath(id): JobPath,
) -> AppResult<Json<ProbeDurationResponse>> {
    let job = public_job(&state, caller.owner, id).await?;
    let update = jobs::estimate(&state, &job, &job.spec).await?;
    if job.status == JobStatus::Created {
        state.repos.jobs.save_estimate(job.id, &update).await?;
    }
    let duration = update.duration_sec.unwrap_or(0.0);
    Ok(Json(ProbeDurationResponse {
        duration_sec: duration,
        duration_minutes: (duration / 60.0 * 1000.0).round() / 1000.0,
    }))
}

/// Queue the public job once its source is in limits.
#[utoipa::path(post, path = "/public/jobs/{id}/confirm", tag = "public", params(("id" = String, Path)),
    request_body(content = Option<ConfirmRequest>),
    responses((status = 200, body = ConfirmResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn confirm(
    State(state): State<AppState>,
    caller: PublicCaller,
    JobPath(id): JobPath,
    JsonBody(body): JsonBody,
) -> AppResult<Json<ConfirmResponse>> {
    let job = public_job(&state, caller.owner, id).await?;
    let spec = request::parse_confirm(&body, &job.spec).map_err(AppError::invalid_body)?;
    let job = jobs::confirm_request(&state, job, spec).await?;
    Ok(Json(ConfirmResponse {
        ok: true,
        status: job.status,
    }))
}

/// Status of a public job; `token` is the `statusToken` returned at creation.
#[utoipa::path(get, path = "/public/jobs/{id}/status", tag = "public", params(("id" = String, Path), ("token" = String, Query)),
    responses((status = 200, body = StatusResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn status(
    State(state): State<AppState>,
    caller: PublicCaller,
    JobPath(id): JobPath,
    Query(q): Query<HashMap<String, String>>,
) -> AppResult<Json<StatusResponse>> {
    let job = public_job(&state, caller.owner, id).await?;
    // A wrong or missing token looks exactly like an unknown job.
    let matches = q
        .get("token")
        .is_some_and(|t| job.status_token_hash.as_deref() == Some(hash_api_key(t).as_str()));
    if !matches {
        return Err(AppError::not_found(format!("no public job with id {id}")));
    }
    Ok(Json(StatusResponse::of(&state, &job, Neu::ZERO, Neu::ZERO)))
}
