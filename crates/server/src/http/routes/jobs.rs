//! `/jobs…`: create, probe, approve, confirm, cancel, status.

use crate::idempotency::{self, Saved};
use crate::{
    http::{
        auth::Caller,
        dto::*,
        error::{AppError, AppResult, ErrorBody},
        extract::{JobPath, JsonBody},
    },
    jobs,
    state::AppState,
};
use axum::{
    extract::State,
    http::HeaderMap,
    response::Response,
    routing::{get, post},
    Json, Router,
};
use convertrilo_core::{request, JobStatus, Neu, Scope};
use convertrilo_db::Job;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/jobs", post(create_job))
        .route("/jobs/{id}/probe-duration", get(probe_duration))
        .route("/jobs/{id}/approve-unified", post(approve_unified))
        .route("/jobs/{id}/confirm", post(confirm_job))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/jobs/{id}/status", get(job_status))
}

async fn owned_job(
    state: &AppState,
    caller: &Caller,
    id: convertrilo_core::JobId,
) -> AppResult<Job> {
    state
        .repos
        .jobs
        .job(id, Some(caller.user_id))
        .await?
        .ok_or_else(|| AppError::not_found(format!("no job with id {id}")))
}

fn must_be_created(job: &Job, action: &str) -> AppResult<()> {
    if job.status == JobStatus::Created {
        Ok(())
    } else {
        Err(AppError::bad_request(format!(
            "the job is already {}; {action} applies only to jobs that are still created",
            job.status
        )))
    }
}

/// Create an encode job (upload, or URL ingest with `sourceUrl`).
#[utoipa::path(post, path = "/jobs", tag = "jobs", request_body = JobCreateRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry safely: the same key and body replay the first response (with `Idempotent-Replayed: true`); a different body is 409.")),
    security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = JobCreateResponse), (status = 400, body = ErrorBody), (status = 402, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn create_job(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> AppResult<Response> {
    caller.require(Scope::JobsCreate)?;
    let req = request::parse_job_create(&body).map_err(AppError::invalid_body)?;
    let state = &state;
    idempotency::run(
        state,
        caller.user_id,
        &headers,
        "POST /jobs",
        &body,
        |claim| async move {
            let new = jobs::prepare(state, caller.user_id, jobs::Draft::standard(req)).await?;
            let reserved = new.reserve.unwrap_or(Neu::ZERO);
            let saved = Saved::json(&JobCreateResponse::of(state, &new.job, reserved))?;
            jobs::insert(state, &[new], saved.with_claim(claim.as_ref()).as_ref()).await?;
            Ok(saved)
        },
    )
    .await
}

/// Probe the input's duration.
#[utoipa::path(get, path = "/jobs/{id}/probe-duration", tag = "jobs", params(("id" = String, Path)),
    security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = ProbeDurationResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn probe_duration(
    State(state): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
) -> AppResult<Json<ProbeDurationResponse>> {
    caller.require(Scope::JobsRead)?;
    let job = owned_job(&state, &caller, id).await?;
    let duration = match job.duration_sec {
        Some(d) => d,
        None => {
            let update = jobs::estimate(&state, &job, &job.spec).await?;
            if job.status == JobStatus::Created {
                state.repos.jobs.save_estimate(job.id, &update).await?;
            }
            update.duration_sec.unwrap_or(0.0)
        }
    };
    Ok(Json(ProbeDurationResponse {
        duration_sec: duration,
        duration_minutes: (duration / 60.0 * 1000.0).round() / 1000.0,
    }))
}

/// Apply settings, probe and return the estimate (does not queue).
#[utoipa::path(post, path = "/jobs/{id}/approve-unified", tag = "jobs", params(("id" = String, Path)),
    request_body(content = Option<ApproveUnifiedRequest>), security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = ApproveUnifiedResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 402, body = ErrorBody), (status = 413, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn approve_unified(
    State(state): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
    JsonBody(body): JsonBody,
) -> AppResult<Json<ApproveUnifiedResponse>> {
    caller.require(Scope::JobsCreate)?;
    let job = owned_job(&state, &caller, id).await?;
    let spec = request::parse_approve(&body, &job.spec).map_err(AppError::invalid_body)?;
    must_be_created(&job, "approve")?;
    jobs::check_spec(&state, &spec)?;
    let update = jobs::estimate(&state, &job, &spec).await?;
    let estimate = update.estimate.unwrap_or(Neu::ZERO);
    // Reserve first: when the account is short, nothing about the job changes.
    let reserved = if estimate > Neu::ZERO {
        jobs::reserve_estimate(&state, &job, estimate).await?
    } else {
        Neu::ZERO
    };
    state.repos.jobs.save_estimate(job.id, &update).await?;
    Ok(Json(ApproveUnifiedResponse {
        ok: true,
        estimate: ApproveEstimate {
            per_minute_neu: update.per_minute.unwrap_or(Neu::ZERO),
            duration_sec: update.duration_sec.unwrap_or(0.0),
            total_neu: update.estimate.unwrap_or(Neu::ZERO),
            reserved,
        },
    }))
}

/// Queue the job (probing and pricing it first when not done yet).
#[utoipa::path(post, path = "/jobs/{id}/confirm", tag = "jobs", params(("id" = String, Path)),
    request_body(content = Option<ConfirmRequest>), security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = ConfirmResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 402, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn confirm_job(
    State(state): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
    JsonBody(body): JsonBody,
) -> AppResult<Json<ConfirmResponse>> {
    caller.require(Scope::JobsCreate)?;
    let job = owned_job(&state, &caller, id).await?;
    let spec = request::parse_confirm(&body, &job.spec).map_err(AppError::invalid_body)?;
    let job = jobs::confirm_request(&state, job, spec).await?;
    Ok(Json(ConfirmResponse {
        ok: true,
        status: job.status,
    }))
}

/// Cancel a job that has not finished; a running encode is stopped and its files removed.
#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path)),
    security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = CancelResponse), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn cancel_job(
    State(state): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
) -> AppResult<Json<CancelResponse>> {
    caller.require(Scope::JobsCancel)?;
    let previous = jobs::cancel(&state, id, caller.user_id).await?.previous;
    Ok(Json(CancelResponse {
        ok: true,
        status: if previous.is_terminal() {
            previous
        } else {
            JobStatus::Canceled
        },
        previous_status: previous,
    }))
}

/// Status, progress and (on success) a signed download link.
#[utoipa::path(get, path = "/jobs/{id}/status", tag = "jobs", params(("id" = String, Path)),
    security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = StatusResponse), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn job_status(
    State(state): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
) -> AppResult<Json<StatusResponse>> {
    caller.require(Scope::JobsRead)?;
    let job = owned_job(&state, &caller, id).await?;
    let (reserved, charged) = state.repos.ledger.job_totals(job.id).await?;
    Ok(Json(StatusResponse::of(&state, &job, reserved, charged)))
}
