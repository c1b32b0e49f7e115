//! `/tokens/…`: the account's NEU balance and manual ledger moves for a job.
//!
//! Manual moves apply only to jobs that are still `created`: once a job is queued the service
//! settles its reservation itself (deduct the real cost on success, release the rest), and a
//! manual release could otherwise let an encode run unpaid.

use crate::{
    http::{
        auth::Caller,
        error::{AppError, AppResult, ErrorBody},
        extract::JsonBody,
    },
    jobs,
    state::AppState,
};
use axum::{
    extract::State,
    routing::{get, post},
    Json, Router,
};
use convertrilo_core::{
    request::Issue,
    time::{now_ms, rfc3339},
    JobId, JobStatus, Neu, Scope,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tokens/balance", get(balance))
        .route("/tokens/reserve", post(reserve))
        .route("/tokens/release", post(release))
        .route("/tokens/deduct", post(deduct))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenBalanceResponse {
    #[schema(value_type = f64)]
    pub available: Neu,
    #[schema(value_type = f64)]
    pub reserved: Neu,
    /// Trial tokens still available (spent before paid ones).
    #[schema(value_type = f64)]
    pub trial_grant_remaining: Neu,
    pub trial_expires_at: Option<String>,
    /// Everything ever granted; `available + reserved + spent + expired == granted`.
    #[schema(value_type = f64)]
    pub granted: Neu,
    #[schema(value_type = f64)]
    pub spent: Neu,
    #[schema(value_type = f64)]
    pub expired: Neu,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // documents the body; parsing is `parse_move`
pub struct TokenReserveRequest {
    #[schema(format = "uuid")]
    pub job_id: String,
    #[schema(minimum = 1)]
    pub amount: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenMoveResponse {
    pub ok: bool,
    pub job_id: String,
    /// NEU this request moved.
    #[schema(value_type = f64)]
    pub amount: Neu,
    /// NEU the job holds in reserve afterwards.
    #[schema(value_type = f64)]
    pub job_reserved: Neu,
    #[schema(value_type = f64)]
    pub available: Neu,
}

fn parse_move(body: &Value) -> AppResult<(JobId, Neu)> {
    let mut issues = Vec::new();
    let job = match body
        .get("jobId")
        .and_then(Value::as_str)
        .map(str::parse::<JobId>)
    {
        Some(Ok(id)) => Some(id),
        _ => {
            issues.push(Issue {
                path: "jobId".into(),
                message: "is required: the id of one of your jobs".into(),
            });
            None
        }
    };
    let amount = match body.get("amount") {
        Some(v) => match v.as_i64() {
            Some(a) if (1..=1_000_000_000).contains(&a) => Some(Neu::from_whole(a)),
            _ => {
                let message =
                    format!("{v} is not allowed: use a whole number of NEU from 1 to 1000000000");
                issues.push(Issue {
                    path: "amount".into(),
                    message,
                });
                None
            }
        },
        None => {
            let message = "is required: a whole number of NEU, at least 1".to_string();
            issues.push(Issue {
                path: "amount".into(),
                message,
            });
            None
        }
    };
    match (job, amount) {
        (Some(j), Some(a)) if issues.is_empty() => Ok((j, a)),
        _ => Err(AppError::invalid_body(issues)),
    }
}

/// The job, which must be the caller's and still `created`.
async fn manual_job(
    state: &AppState,
    caller: &Caller,
    id: JobId,
) -> AppResult<convertrilo_db::Job> {
    let job = state
        .repos
        .jobs
        .job(id, Some(caller.user_id))
        .await?
        .ok_or_else(|| AppError::not_found(format!("no job with id {id}")))?;
    if job.status != JobStatus::Created {
        return Err(AppError::bad_request(format!(
            "the job is {}; its tokens are settled by the service once it is queued (manual moves apply to created jobs)",
            job.status
        )));
    }
    Ok(job)
}

async fn moved(
    state: &AppState,
    caller: &Caller,
    job: JobId,
    amount: Neu,
) -> AppResult<Json<TokenMoveResponse>> {
    let job_reserved = state.repos.ledger.job_reserved(job).await?;
    let balance = state.repos.ledger.balance(caller.user_id, now_ms()).await?;
    Ok(Json(TokenMoveResponse {
        ok: true,
        job_id: job.to_string(),
        amount,
        job_reserved,
        available: balance.available,
    }))
}

/// The account's balance.
#[utoipa::path(get, path = "/tokens/balance", tag = "tokens", security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = TokenBalanceResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn balance(
    State(state): State<AppState>,
    caller: Caller,
) -> AppResult<Json<TokenBalanceResponse>> {
    caller.require(Scope::TokensRead)?;
    let b = state.repos.ledger.balance(caller.user_id, now_ms()).await?;
    Ok(Json(TokenBalanceResponse {
        available: b.available,
        reserved: b.reserved,
        trial_grant_remaining: b.trial_remaining,
        trial_expires_at: b.trial_expires_at.map(rfc3339),
        granted: b.granted,
        spent: b.spent,
        expired: b.expired,
    }))
}

/// Hold `amount` NEU for a created job (tops its reservation up to `amount`).
#[utoipa::path(post, path = "/tokens/reserve", tag = "tokens", request_body = TokenReserveRequest, security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = TokenMoveResponse), (status = 400, body = ErrorBody), (status = 402, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn reserve(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> AppResult<Json<TokenMoveResponse>> {
    caller.require(Scope::TokensWrite)?;
    let (id, amount) = parse_move(&body)?;
    let job = manual_job(&state, &caller, id).await?;
    let before = state.repos.ledger.job_reserved(id).await?;
    let held = jobs::reserve_estimate(&state, &job, amount).await?;
    moved(
        &state,
        &caller,
        id,
        Neu::from_millis(held.millis() - before.millis()),
    )
    .await
}

/// Give back up to `amount` NEU of a created job's reservation.
#[utoipa::path(post, path = "/tokens/release", tag = "tokens", request_body = TokenReserveRequest, security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = TokenMoveResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn release(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> AppResult<Json<TokenMoveResponse>> {
    settle_manually(&state, &caller, &body, Settle::Release).await
}

/// Charge up to `amount` NEU from a created job's reservation.
#[utoipa::path(post, path = "/tokens/deduct", tag = "tokens", request_body = TokenReserveRequest, security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = TokenMoveResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn deduct(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> AppResult<Json<TokenMoveResponse>> {
    settle_manually(&state, &caller, &body, Settle::Deduct).await
}

enum Settle {
    Release,
    Deduct,
}

/// Release or deduct part of a created job's reservation.
async fn settle_manually(
    state: &AppState,
    caller: &Caller,
    body: &Value,
    how: Settle,
) -> AppResult<Json<TokenMoveResponse>> {
    caller.require(Scope::TokensWrite)?;
    let (id, amount) = parse_move(body)?;
    manual_job(state, caller, id).await?;
    let ledger = &state.repos.ledger;
    let moved_amount = match how {
        Settle::Release => ledger.release_for_job(caller.user_id, id, amount).await?,
        Settle::Deduct => ledger.deduct_for_job(caller.user_id, id, amount).await?,
    };
    moved(state, caller, id, moved_amount).await
}
