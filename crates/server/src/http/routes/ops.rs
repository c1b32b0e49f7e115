//! Operations endpoints (`/healthz`, the process answers, is in `docs`): `/readyz` (it can reach its
//! database and object store), `/metrics` (Prometheus text format) and
//! `GET /admin/workers` (the worker registry, for administrators).

use crate::{
    http::{
        auth::Caller,
        error::{AppError, AppResult},
    },
    state::AppState,
};
use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use convertrilo_core::{
    capability::WorkerCaps,
    time::{now_ms, rfc3339},
    ErrorCode, JobStatus, WireEnum,
};
use serde::Serialize;
use std::fmt::Write;
use utoipa::ToSchema;

const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/workers", get(workers))
}

/// 200 when this process should receive traffic; 503 with the failing check otherwise.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, description = "ready: the database and object store answer"),
    (status = 503, description = "`{\"status\": \"unavailable\", \"failed\": [...]}` naming each failed check")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut failed = Vec::new();
    // Load balancers give up on a probe after a few seconds; answer before they do.
    match tokio::time::timeout(READY_TIMEOUT, state.repos.stats.ping()).await {
        Ok(Ok(())) => {}
        // Named once: the error's own text may start with the same word.
        Ok(Err(e)) => failed.push(labelled("database", &e)),
        Err(_) => failed.push(format!("database: no answer within {READY_TIMEOUT:?}")),
    }
    // One HEAD (or stat) of the store's name: cheap, and it fails when the store was moved,
    // emptied or replaced under this process, not only when it cannot be reached.
    let store = crate::ownstore::probe_store(state.store.as_ref(), &state.store_id);
    match tokio::time::timeout(READY_TIMEOUT, store).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failed.push(labelled("object store", &e)),
        Err(_) => failed.push(format!("object store: no answer within {READY_TIMEOUT:?}")),
    }
    if failed.is_empty() {
        (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "ready" })),
        )
            .into_response()
    } else {
        tracing::warn!(checks = ?failed, "not ready");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "unavailable", "failed": failed })),
        )
            .into_response()
    }
}

/// `label: error`, without saying the label twice when the error already starts with it.
fn labelled(label: &str, e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    match text.strip_prefix(label).and_then(|t| t.strip_prefix(": ")) {
        Some(rest) => format!("{label}: {rest}"),
        None => format!("{label}: {text}"),
    }
}

/// Prometheus text format: queue depth, jobs by state, encode seconds, live workers.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> AppResult<Response> {
    let now = now_ms();
    let stats = state.repos.stats.stats(now).await?;
    let workers = state.repos.workers.workers().await?;
    let live_since = state.config.worker_live_since(now);
    let live: Vec<_> = workers
        .iter()
        .filter(|w| w.worker.last_seen >= live_since && !w.worker.stopping)
        .collect();
    let slots: u32 = live.iter().map(|w| w.worker.caps.slots).sum();
    let mut out = String::new();
    let simple = [
        (
            "convertrilo_queue_depth",
            "gauge",
            "Jobs waiting for a worker.",
            stats.queue_depth as f64,
        ),
        (
            "convertrilo_jobs_running",
            "gauge",
            "Jobs held by a worker under a live lease.",
            stats.running as f64,
        ),
        (
            "convertrilo_encode_seconds_total",
            "counter",
            "Seconds from start to end of every successful job.",
            stats.encode_seconds,
        ),
        (
            "convertrilo_encodes_total",
            "counter",
            "Successful jobs.",
            stats.encodes as f64,
        ),
        (
            "convertrilo_workers",
            "gauge",
            "Live worker processes.",
            live.len() as f64,
        ),
        (
            "convertrilo_worker_slots",
            "gauge",
            "Concurrent job slots of the live workers.",
            slots as f64,
        ),
    ];
    for (name, kind, help, value) in simple {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    let name = "convertrilo_jobs";
    let _ = writeln!(out, "# HELP {name} Jobs by state.\n# TYPE {name} gauge");
    for status in JobStatus::ALL {
        let count = stats
            .jobs_by_status
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, c)| *c);
        let _ = writeln!(out, "{name}{{state=\"{}\"}} {count}", status.as_str());
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

/// One worker process in `GET /admin/workers`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerView {
    pub id: String,
    pub host: String,
    pub version: String,
    /// `live`, `draining` (finishing its jobs after SIGTERM) or `lost` (not heard from within
    /// `worker_timeout_secs`; its jobs return to the queue when their leases expire).
    pub state: String,
    #[schema(value_type = Object)]
    pub capabilities: WorkerCaps,
    pub slots: u32,
    pub current_jobs: Vec<String>,
    pub started_at: String,
    pub last_heartbeat: String,
    pub seconds_since_heartbeat: f64,
}

#[derive(Serialize, ToSchema)]
pub struct WorkersResponse {
    pub workers: Vec<WorkerView>,
}

/// The worker registry: every worker process, its capabilities, current jobs and last
/// heartbeat. Administrators only.
#[utoipa::path(get, path = "/admin/workers", tag = "Admin",
    responses((status = 200, body = WorkersResponse), (status = 403, description = "not an administrator")))]
pub async fn workers(
    State(state): State<AppState>,
    caller: Caller,
) -> AppResult<Json<WorkersResponse>> {
    let user = state.repos.accounts.user(caller.user_id).await?;
    if !user.is_some_and(|u| u.is_admin) {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "only administrators may list workers; use an administrator's API key",
        ));
    }
    let now = now_ms();
    let live_since = state.config.worker_live_since(now);
    let workers = state
        .repos
        .workers
        .workers()
        .await?
        .into_iter()
        .map(|w| {
            let r = w.worker;
            let state = if r.last_seen < live_since {
                "lost"
            } else if r.stopping {
                "draining"
            } else {
                "live"
            };
            WorkerView {
                id: r.id,
                host: r.host,
                version: r.version,
                state: state.into(),
                slots: r.caps.slots,
                capabilities: r.caps,
                current_jobs: w.jobs.iter().map(|j| j.to_string()).collect(),
                started_at: rfc3339(r.started_at),
                last_heartbeat: rfc3339(r.last_seen),
                seconds_since_heartbeat: (now - r.last_seen).max(0) as f64 / 1000.0,
            }
        })
        .collect();
    Ok(Json(WorkersResponse { workers }))
}
