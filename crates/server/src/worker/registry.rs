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

pub(super) async fn run(
    state: AppState,
    id: String,
    caps: WorkerCaps,
    drain: CancellationToken,
    shutdown: CancellationToken,
) {
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
    let workers = &state.repos.workers;
    let every = Duration::from_secs(state.config.worker_heartbeat_secs.max(1));
    let mut registered = false;
    loop {
        let stopping = drain.is_cancelled();
        let result = if registered {
            workers.touch_worker(&id, now_ms(), stopping).await
        } else {
            let r = WorkerRecord {
                last_seen: now_ms(),
                stopping,
                ..record.clone()
            };
            workers.register_worker(&r).await.map(|()| true)
        };
        match result {
            Ok(present) => {
                if !registered {
                    tracing::info!(worker = %id, slots = record.caps.slots, "worker registered");
                }
                // A row pruned during a long stall is written again on the next round.
                registered = present;
            }
            Err(e) => tracing::warn!(error = %e, "cannot reach the worker registry; retrying"),
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
