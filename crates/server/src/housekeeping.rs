//! Periodic clean-up that no request waits for: idempotency keys past their retention,
//! uploaded sources of jobs that have ended (nothing reads them again), and outputs whose
//! `outputExpiry` has passed.

use crate::{idempotency, state::AppState};
use convertrilo_core::time::now_ms;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const EVERY: Duration = Duration::from_secs(600);

pub fn spawn(state: AppState, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            run_once(&state, now_ms()).await;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
    })
}

/// One round of clean-up as of `now` (ms).
pub async fn run_once(state: &AppState, now: i64) {
    match state
        .repos
        .idempotency
        .sweep(now - idempotency::retention_ms(state), now)
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "expired idempotency keys removed"),
        Err(e) => tracing::warn!(error = %e, "could not sweep idempotency keys"),
    }
    purge_objects(state, now).await;
}

/// Objects deleted per round; the next round picks up the rest.
const PURGE_BATCH: i64 = 500;

async fn purge_objects(state: &AppState, now: i64) {
    let due = match state.repos.jobs.purgeable(now, PURGE_BATCH).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "could not list objects to purge");
            return;
        }
    };
    let mut removed = 0;
    for p in &due {
        let mut ok = true;
        let mut keys: Vec<String> = p.input_key.iter().chain(&p.output_key).cloned().collect();
        if p.input_key.is_some() {
            // Parts of a stream that was never finalized or aborted.
            let prefix = crate::http::routes::stream::stream_prefix(p.job_id);
            match state.store.list(&prefix).await {
                Ok(parts) => keys.extend(parts.into_iter().map(|(k, _)| k)),
                Err(e) => {
                    tracing::warn!(job = %p.job_id, error = %e, "could not list stream parts");
                    ok = false;
                }
            }
        }
        for key in &keys {
            // Deleting a missing object is not an error (see the object store).
            if let Err(e) = state.store.delete(key).await {
                tracing::warn!(job = %p.job_id, key, error = %e, "could not delete an object");
                ok = false;
            }
        }
        if ok {
            removed += 1;
            if let Err(e) = state.repos.jobs.mark_purged(p, now).await {
                tracing::warn!(job = %p.job_id, error = %e, "could not record a purge");
            }
        }
    }
    if removed > 0 {
        tracing::info!(
            jobs = removed,
            "removed sources of ended jobs and expired outputs"
        );
    }
}
