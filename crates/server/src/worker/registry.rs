//! Keeps this worker process's row in the worker registry: registered at start with its
//! capabilities, touched every `worker_heartbeat_secs`, marked draining once `drain` fires
//! (so the unrunnable sweep stops counting it), removed at a clean shutdown. A process killed
//! outright leaves its row behind; it ages out of the live set and is pruned later.

use crate::state::AppState;
use convertrilo_core::{capability::WorkerCaps, time::now_ms};
use convertrilo_db::WorkerRecord;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A fresh id for a worker process: random, so two processes started in the same
/// millisecond on different machines never share one.
pub fn new_worker_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Registers the worker (awaited, so a process that says it is running is listed from then
/// on) and returns the task that keeps its row fresh until shutdown.
pub(super) async fn start(
    state: AppState,
    id: String,
    caps: WorkerCaps,
    drain: CancellationToken,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let now = now_ms();
    let record = WorkerRecord {
        id: id.clone(),
        host: host_name(),
        version: env!("CARGO_PKG_VERSION").into(),
        caps,
        started_at: now,
        last_seen: now,
        stopping: false,
    };
    // A failure here is retried by the loop, every heartbeat.
    let registered = register(&state, &record, false).await;
    tokio::spawn(run(state, record, registered, drain, shutdown))
}

/// Writes the worker's row; false when the registry could not be reached.
async fn register(state: &AppState, record: &WorkerRecord, stopping: bool) -> bool {
    let r = WorkerRecord {
        last_seen: now_ms(),
        stopping,
        ..record.clone()
    };
    match state.repos.workers.register_worker(&r).await {
        Ok(()) => {
            tracing::info!(worker = %r.id, slots = r.caps.slots, "worker registered");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot reach the worker registry; retrying");
            false
        }
    }
}

async fn run(
    state: AppState,
    record: WorkerRecord,
    mut registered: bool,
    drain: CancellationToken,
    shutdown: CancellationToken,
) {
    let id = record.id.clone();
    let workers = &state.repos.workers;
    let every = Duration::from_secs(state.config.worker_heartbeat_secs.max(1));
    let mut first = true;
    loop {
        let stopping = drain.is_cancelled();
        // The first round was the registration itself (unless it failed).
        if !(std::mem::take(&mut first) && registered) {
            if registered {
                match workers.touch_worker(&id, now_ms(), stopping).await {
                    // A row pruned during a long stall is written again on the next round.
                    Ok(present) => registered = present,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reach the worker registry; retrying")
                    }
                }
            } else {
                registered = register(&state, &record, stopping).await;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            // Tell the registry at once that this process takes no new jobs.
            _ = drain.cancelled(), if !stopping => {}
            _ = shutdown.cancelled() => break,
        }
    }
    if let Err(e) = workers.remove_worker(&id).await {
        tracing::warn!(error = %e, "could not remove this worker from the registry");
    }
}
