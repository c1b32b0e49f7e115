//! `/jobs/bulk…`: create up to 500 jobs in one request (each item validated on its own, all
//! of them written, queued and reserved in one transaction), check many statuses at once,
//! and queue many created jobs with one reservation that fits or fails as a whole.

use crate::{
    http::{
        auth::Caller,
        dto::*,
        error::{AppError, AppResult, ErrorBody},
        extract::JsonBody,
    },
    idempotency::{self, Saved},
    jobs::{self, Draft},
    state::AppState,
};
use axum::{
    extract::{Query, State},
    http::HeaderMap,
    response::Response,
    routing::{get, post},
    Json, Router,
};
use convertrilo_core::{
    request::{self, Issue, MAX_BULK_JOBS},
    ErrorCode, JobId, JobStatus, Neu, Scope, WireEnum,
};
use convertrilo_db::{BatchEnqueued, EnqueueItem, Job, NewJob};
use futures::{stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use utoipa::ToSchema;

/// Sources probed at once while preparing a batch.
const PROBES_AT_ONCE: usize = 8;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/jobs/bulk", post(create_bulk))
        .route("/jobs/bulk/status", get(bulk_status))
        .route("/jobs/bulk/confirm", post(bulk_confirm))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // documents the body; parsing is done by convertrilo_core::request
pub struct BulkSettings {
    /// Create nothing when any item is invalid (the response is then 400 naming each).
    pub fail_fast: Option<bool>,
    /// Validate and estimate without creating anything.
    pub dry_run: Option<bool>,
    /// Queue every job (URL sources now, uploads as soon as they arrive); the reservations
    /// must fit the account together.
    pub confirm: Option<bool>,
    pub container: Option<convertrilo_core::spec::Container>,
    pub quality: Option<convertrilo_core::spec::Quality>,
    pub optimize: Option<convertrilo_core::spec::Optimize>,
    #[schema(minimum = 50, maximum = 99)]
    pub vmaf_target: Option<f64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct BulkCreateRequest {
    /// 1 to 500 jobs, each as for `POST /jobs`.
    pub jobs: Vec<JobCreateRequest>,
    pub settings: Option<BulkSettings>,
}

#[derive(Serialize, ToSchema)]
pub struct BulkEstimate {
    #[schema(value_type = f64)]
    pub neu: Neu,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkItem {
    /// Position in the request's `jobs`.
    pub index: usize,
    pub job_id: Option<String>,
    pub external_id: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    /// The job's status, `valid` in a dry run, or `rejected`.
    pub status: String,
    /// Why the item was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub code: Option<ErrorCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<BulkEstimate>,
    /// Signed link to PUT the source to, for upload jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadTarget>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkCreateResponse {
    /// Jobs created (in a dry run: that would be created).
    pub total_jobs: usize,
    /// Items rejected.
    pub rejected: usize,
    #[schema(value_type = f64)]
    pub total_estimated_neu: Neu,
    #[schema(value_type = f64)]
    pub reserved: Neu,
    pub dry_run: bool,
    pub jobs: Vec<BulkItem>,
}

/// When a bulk request stops probing (`bulk_probe_budget_secs` from now).
fn probe_deadline(state: &AppState) -> tokio::time::Instant {
    tokio::time::Instant::now()
        + std::time::Duration::from_secs(state.config.bulk_probe_budget_secs)
}

fn out_of_time(state: &AppState) -> String {
    format!(
        "the source was not probed within this request's {} s budget; send this item again, or the batch in smaller parts",
        state.config.bulk_probe_budget_secs
    )
}

fn summary(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|i| format!("{} {}", i.path, i.message).trim().to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Create up to 500 jobs; each item is validated on its own.
#[utoipa::path(post, path = "/jobs/bulk", tag = "bulk", request_body = BulkCreateRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry safely: the same key and body replay the first response; a different body is 409.")),
    security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = BulkCreateResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 402, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn create_bulk(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> AppResult<Response> {
    caller.require(Scope::JobsCreate)?;
    let req = request::parse_bulk(&body).map_err(AppError::invalid_body)?;
    let state = &state;
    let owner = caller.user_id;
    let raw_items: &[Value] = body["jobs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    idempotency::run(
        state,
        owner,
        &headers,
        "POST /jobs/bulk",
        &body,
        |claim| async move {
            let dry_run = req.settings.dry_run;
            // Prepare every valid item, probing URL sources a few at a time, in order.
            let prepared: Vec<Result<NewJob, (Option<ErrorCode>, String)>> =
                stream::iter(req.items.into_iter().map(|item| async move {
                    let mut item =
                        item.map_err(|issues| (Some(ErrorCode::InvalidBody), summary(&issues)))?;
                    // A dry run estimates URL sources too, which takes their probe.
                    item.confirm |= dry_run;
                    jobs::prepare(state, owner, Draft::standard(item))
                        .await
                        .map_err(|e| (Some(e.code), e.message))
                }))
                .buffered(PROBES_AT_ONCE)
                .collect()
                .await;
            let rejected: Vec<Issue> = prepared
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    p.as_ref().err().map(|(_, m)| Issue {
                        path: format!("jobs[{i}]"),
                        message: m.clone(),
                    })
                })
                .collect();
            if req.settings.fail_fast && !rejected.is_empty() {
                let n = rejected.len();
                return Err(AppError {
                    message: format!(
                    "{n} of {} jobs are invalid and failFast is set, so nothing was created: {}",
                    prepared.len(),
                    summary(&rejected)
                ),
                    ..AppError::invalid_body(rejected)
                });
            }
            let mut items = Vec::with_capacity(prepared.len());
            let mut batch = Vec::new();
            let (mut total, mut reserved) = (0i64, 0i64);
            for (index, p) in prepared.into_iter().enumerate() {
                match p {
                    Ok(new) => {
                        let job = &new.job;
                        let estimate = job.estimate;
                        total += estimate.map_or(0, Neu::millis);
                        reserved += new.reserve.map_or(0, Neu::millis);
                        let created =
                            JobCreateResponse::of(state, job, new.reserve.unwrap_or(Neu::ZERO));
                        items.push(BulkItem {
                            index,
                            job_id: (!dry_run).then(|| job.id.to_string()),
                            external_id: job.external_id.clone(),
                            metadata: job.metadata.clone(),
                            status: if dry_run {
                                "valid".into()
                            } else {
                                job.status.as_str().into()
                            },
                            error: None,
                            code: None,
                            estimate: estimate.map(|neu| BulkEstimate { neu }),
                            upload: if dry_run { None } else { created.upload },
                        });
                        batch.push(new);
                    }
                    Err((code, message)) => items.push(BulkItem {
                        index,
                        job_id: None,
                        // Echoed when usable, so the caller can match the rejection to its record.
                        external_id: raw_items
                            .get(index)
                            .and_then(|i| i.get("externalId"))
                            .and_then(Value::as_str)
                            .filter(|s| s.chars().count() <= 255)
                            .map(String::from),
                        metadata: raw_items
                            .get(index)
                            .and_then(|i| i.get("metadata"))
                            .and_then(Value::as_object)
                            .cloned(),
                        status: "rejected".into(),
                        error: Some(message),
                        code,
                        estimate: None,
                        upload: None,
                    }),
                }
            }
            if dry_run {
                batch.clear();
                reserved = 0;
            }
            let response = BulkCreateResponse {
                total_jobs: items.iter().filter(|i| i.status != "rejected").count(),
                rejected: items.iter().filter(|i| i.status == "rejected").count(),
                total_estimated_neu: Neu::from_millis(total),
                reserved: Neu::from_millis(reserved),
                dry_run,
                jobs: items,
            };
            let saved = Saved::json(&response)?;
            jobs::insert(state, &batch, saved.with_claim(claim.as_ref()).as_ref()).await?;
            Ok(saved)
        },
    )
    .await
}

#[derive(Serialize, ToSchema)]
pub struct BulkStatusResponse {
    pub jobs: Vec<StatusResponse>,
    /// Ids that are malformed, unknown or another account's.
    pub missing: Vec<String>,
}

/// Ids split from a comma-separated list: the parsed ones and the rest as given.
fn parse_ids(raw: &[String]) -> (Vec<JobId>, Vec<String>) {
    let mut ids = Vec::new();
    let mut missing = Vec::new();
    for s in raw {
        match s.parse::<JobId>() {
            Ok(id) if !ids.contains(&id) => ids.push(id),
            Ok(_) => {}
            Err(_) => missing.push(s.clone()),
        }
    }
    (ids, missing)
}

fn not_found_among(ids: &[JobId], found: &[Job]) -> Vec<String> {
    ids.iter()
        .filter(|id| !found.iter().any(|j| j.id == **id))
        .map(ToString::to_string)
        .collect()
}

/// Status of many jobs at once.
#[utoipa::path(get, path = "/jobs/bulk/status", tag = "bulk", params(("ids" = String, Query, description = "Comma-separated job ids, at most 500")),
    security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = BulkStatusResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn bulk_status(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> AppResult<Json<BulkStatusResponse>> {
    caller.require(Scope::JobsRead)?;
    let raw: Vec<String> = q
        .get("ids")
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if raw.is_empty() {
        return Err(AppError::bad_request(
            "give the jobs to look up as ?ids=<id>,<id>,…",
        ));
    }
    if raw.len() > MAX_BULK_JOBS {
        return Err(AppError::bad_request(format!(
            "{} ids given; ask for at most {MAX_BULK_JOBS} at a time",
            raw.len()
        )));
    }
    let (ids, mut missing) = parse_ids(&raw);
    let found = state.repos.jobs.jobs_by_ids(&ids, caller.user_id).await?;
    missing.extend(not_found_among(&ids, &found));
    let mut jobs = Vec::with_capacity(found.len());
    for job in &found {
        let (reserved, charged) = state.repos.ledger.job_totals(job.id).await?;
        jobs.push(StatusResponse::of(&state, job, reserved, charged));
    }
    Ok(Json(BulkStatusResponse { jobs, missing }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct BulkConfirmSettings {
    pub container: Option<convertrilo_core::spec::Container>,
    pub quality: Option<convertrilo_core::spec::Quality>,
    /// Our addition, as on a single confirm: `vmaf` searches for the smallest file that meets
    /// `vmafTarget`.
    pub optimize: Option<convertrilo_core::spec::Optimize>,
    /// 1–100, as on a single confirm; needs `optimize: "vmaf"`.
    pub vmaf_target: Option<f64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct BulkConfirmRequest {
    /// At most 500.
    pub job_ids: Vec<String>,
    pub settings: Option<BulkConfirmSettings>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkConfirmItem {
    pub job_id: String,
    #[schema(value_type = String)]
    pub status: JobStatus,
    /// Why the job was not queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<BulkEstimate>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkConfirmResponse {
    /// Jobs queued by this request.
    pub queued: usize,
    pub jobs: Vec<BulkConfirmItem>,
    /// Ids that are malformed, unknown or another account's.
    pub missing: Vec<String>,
}

/// Queue many created jobs; their reservations fit the account together or nothing is queued.
#[utoipa::path(post, path = "/jobs/bulk/confirm", tag = "bulk", request_body = BulkConfirmRequest,
    security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = BulkConfirmResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 402, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn bulk_confirm(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> AppResult<Json<BulkConfirmResponse>> {
    caller.require(Scope::JobsCreate)?;
    let req = request::parse_bulk_confirm(&body).map_err(AppError::invalid_body)?;
    let (ids, mut missing) = parse_ids(&req.job_ids);
    let found = state.repos.jobs.jobs_by_ids(&ids, caller.user_id).await?;
    missing.extend(not_found_among(&ids, &found));
    let state = &state;
    let overrides = &req.overrides;
    let deadline = probe_deadline(state);
    // Probe and price the created jobs a few at a time; the others are reported as they are.
    let updates: Vec<Option<AppResult<convertrilo_db::EstimateUpdate>>> =
        // Owned jobs: a stream of futures borrowing from `found` trips the borrow checker's
        // higher-ranked lifetimes.
        stream::iter(found.iter().cloned().map(|job| async move {
            if job.status != JobStatus::Created {
                return None;
            }
            let mut spec = job.spec.clone();
            overrides.apply(&mut spec);
            let update = tokio::time::timeout_at(deadline, jobs::confirm_update(state, &job, Some(spec)));
            Some(update.await.unwrap_or_else(|_| {
                Err(AppError::new(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::ProbeFailed,
                    out_of_time(state),
                ))
            }))
        }))
        .buffered(PROBES_AT_ONCE)
        .collect()
        .await;
    let mut enqueue = Vec::new();
    let mut items = Vec::with_capacity(found.len());
    for (job, update) in found.iter().zip(updates) {
        let mut item = BulkConfirmItem {
            job_id: job.id.to_string(),
            status: job.status,
            error: None,
            estimate: None,
        };
        match update {
            None => {}
            Some(Err(e)) => item.error = Some(e.message),
            Some(Ok(update)) => {
                item.estimate = update.estimate.map(|neu| BulkEstimate { neu });
                enqueue.push(EnqueueItem {
                    id: job.id,
                    reserve: update.estimate,
                    update,
                });
            }
        }
        items.push(item);
    }
    let mut queued = 0;
    if !enqueue.is_empty() {
        match state.repos.jobs.enqueue_many(&enqueue).await? {
            BatchEnqueued::Insufficient {
                required,
                available,
            } => return Err(AppError::insufficient_tokens(required, available)),
            BatchEnqueued::Done(done) => {
                for (e, job) in enqueue.iter().zip(done) {
                    let Some(item) = items.iter_mut().find(|i| i.job_id == e.id.to_string()) else {
                        continue;
                    };
                    match job {
                        Some(job) => {
                            item.status = job.status;
                            queued += 1;
                        }
                        None => item.error = Some(
                            "the job changed meanwhile (confirmed or canceled by another request)"
                                .into(),
                        ),
                    }
                }
            }
        }
    }
    Ok(Json(BulkConfirmResponse {
        queued,
        jobs: items,
        missing,
    }))
}
