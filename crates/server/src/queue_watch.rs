//! Watches the queue for jobs that would wait forever: a job no live worker can run (a
//! `gpu_only` job with no GPU worker, a VMAF job with no libvmaf worker, or any job while the
//! only live workers lack its codec) fails after `unrunnable_grace_secs` with a message that
//! says what to change, and its reservation is released. Runs in every API process; two of
//! them failing the same job is harmless (`fail_queued` acts once). Also prunes registry rows
//! of workers gone for an hour.

use crate::state::AppState;
use convertrilo_core::time::now_ms;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const EVERY: Duration = Duration::from_secs(2);
/// Rows of dead workers stay listed this long (operators want to see what died), then go.
const FORGET_DEAD_AFTER_MS: i64 = 3600 * 1000;
const BATCH: i64 = 100;

pub fn spawn(state: AppState, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(EVERY) => {}
            }
            run_once(&state, now_ms()).await;
        }
    })
}

/// One round as of `now` (ms); returns how many jobs were failed.
pub async fn run_once(state: &AppState, now: i64) -> usize {
    let config = &state.config;
    let live_since = config.worker_live_since(now);
    let queued_before = now - (config.unrunnable_grace_secs * 1000) as i64;
    let mut failed = 0;
    match state
        .repos
        .workers
        .unrunnable(live_since, queued_before, BATCH)
        .await
    {
        Ok(jobs) => {
            // What the live workers can do, so each message names only what is missing.
            let live: Vec<_> = if jobs.is_empty() {
                Vec::new()
            } else {
                match state.repos.workers.workers().await {
                    Ok(all) => all
                        .into_iter()
                        .map(|w| w.worker)
                        .filter(|w| w.last_seen >= live_since && !w.stopping)
                        .map(|w| w.caps)
                        .collect(),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not list the workers");
                        return failed;
                    }
                }
            };
            for u in jobs {
                let message = u.needs.unmet_message(&live);
                match state.repos.jobs.fail_queued(u.job, &message).await {
                    Ok(true) => {
                        failed += 1;
                        tracing::warn!(job = %u.job, reason = %message, "job failed: no worker can run it");
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(job = %u.job, error = %e, "could not fail an unrunnable job")
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not look for unrunnable jobs"),
    }
    if let Err(e) = state
        .repos
        .workers
        .prune_workers(now - FORGET_DEAD_AFTER_MS)
        .await
    {
        tracing::warn!(error = %e, "could not prune the worker registry");
    }
    failed
}
