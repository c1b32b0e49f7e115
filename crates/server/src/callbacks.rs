//! Delivery of one-off job callbacks (the on-demand `webhook`): a terminal event POSTed once
//! to the job's URL, unsigned, with a few retries. Rows come from the outbox the job's last
//! state change wrote (see `convertrilo_db`), so a callback survives a restart; delivery runs
//! on its own tasks, never inside a job's work, and a slow receiver holds one slot only.

use crate::state::AppState;
use convertrilo_core::time::now_ms;
use convertrilo_db::{Callback, Job};
use serde_json::Value;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Callbacks sent at once.
const SLOTS: i64 = 8;
/// A receiver gets this long to answer.
const TIMEOUT: Duration = Duration::from_secs(15);
/// How long a picked callback is reserved for this dispatcher (longer than one attempt).
const LEASE_MS: i64 = 60_000;
/// Waits before each retry, in multiples of `callback_retry_secs` (5 s: 5 s, 30 s, 2 min, 10 min).
const BACKOFF: [i64; 4] = [1, 6, 24, 120];

/// The event body: the same shape as managed webhook events.
pub fn payload(event: &str, at_ms: i64, job: &Job, final_neu: f64) -> Value {
    crate::webhooks::event_payload(event, at_ms, job, job.status, Some(final_neu))
}

async fn deliver(state: &AppState, c: &Callback) -> Result<(), String> {
    let url = c
        .job
        .callback_url
        .as_deref()
        .ok_or("the job has no callback URL")?;
    let (_, charged) = state
        .repos
        .ledger
        .job_totals(c.job.id)
        .await
        .map_err(|e| format!("ledger: {e}"))?;
    let body = payload(&c.event, c.created_at, &c.job, charged.as_f64());
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "x-webhook-event",
        reqwest::header::HeaderValue::from_str(&c.event).map_err(|e| e.to_string())?,
    );
    // Vetted and pinned again: the name may resolve elsewhere now than at creation.
    let response = state
        .outbound
        .post_json(url, &body, headers, TIMEOUT)
        .await
        .map_err(|e| format!("could not reach the receiver: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!(
            "the receiver answered HTTP {}",
            response.status().as_u16()
        ))
    }
}

/// Records the outcome and schedules the next attempt, if any is left.
async fn record(state: &AppState, c: &Callback, outcome: Result<(), String>) {
    let attempts = c.attempts + 1;
    let retry_at = match &outcome {
        Ok(()) => None,
        Err(_) if attempts >= state.config.callback_max_attempts => None,
        Err(_) => {
            let step = BACKOFF[(c.attempts.max(0) as usize).min(BACKOFF.len() - 1)];
            let wait = step * state.config.callback_retry_secs.max(1) as i64;
            // Up to 20% jitter, so receivers that failed together are not retried together.
            let jitter = rand::random::<u64>() % (wait as u64 * 200 + 1);
            Some(now_ms() + wait * 1000 + jitter as i64)
        }
    };
    match &outcome {
        Ok(()) => tracing::info!(job = %c.job.id, event = %c.event, "callback delivered"),
        Err(e) if retry_at.is_some() => {
            tracing::info!(job = %c.job.id, event = %c.event, attempts, error = %e, "callback failed; will retry")
        }
        Err(e) => {
            tracing::warn!(job = %c.job.id, event = %c.event, attempts, error = %e, "callback given up")
        }
    }
    let error = outcome.err();
    if let Err(e) = state
        .repos
        .jobs
        .callback_attempted(c.id, error.as_deref(), retry_at)
        .await
    {
        tracing::warn!(error = %e, "could not record a callback attempt; it will be sent again");
    }
}

/// Sends due callbacks until `shutdown`, polling once a second.
pub fn spawn(state: AppState, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut sending = JoinSet::new();
        loop {
            let free = SLOTS - sending.len() as i64;
            if free > 0 {
                let now = now_ms();
                match state
                    .repos
                    .jobs
                    .due_callbacks(now, now + LEASE_MS, free)
                    .await
                {
                    Ok(due) => {
                        for c in due {
                            let state = state.clone();
                            sending.spawn(async move {
                                let outcome = deliver(&state, &c).await;
                                record(&state, &c, outcome).await;
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not read due callbacks"),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                Some(_) = sending.join_next(), if !sending.is_empty() => {}
            }
            while sending.try_join_next().is_some() {}
        }
        // Unsent callbacks keep their rows and go out after the next start.
        sending.abort_all();
    })
}
