//! Managed webhook delivery: at-least-once, signed, in order per job. Events come from the
//! outbox that job state changes write in their own transaction (`convertrilo_db::webhooks`),
//! so nothing is lost to a crash or restart. A fixed number of delivery slots run at once,
//! each attempt bounded by a timeout, so a receiver that never answers holds one slot for that
//! long and nothing else. Failures retry with exponential backoff and jitter for about three
//! days; a `410 Gone` or too many consecutive failures disable the webhook (its pending events
//! wait, and go out in order once it is re-enabled).

pub mod sign;

use crate::state::AppState;
use axum::http::{HeaderMap, HeaderValue};
use convertrilo_core::{
    time::{now_ms, rfc3339},
    JobStatus, WireEnum,
};
use convertrilo_db::{AfterAttempt, Delivery, DueMessage, Job, Webhook};
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Response bodies and errors are kept to this many characters.
pub const CAPTURE_CHARS: usize = 2048;
/// How long a picked message is reserved beyond its attempt's timeout. A process that dies
/// mid-attempt holds its webhook's slot that long; a stopping one hands it back at once.
const LEASE_MARGIN_MS: i64 = 5_000;
/// Retry waits double from `webhook_retry_base_secs` up to this.
const MAX_WAIT_SECS: i64 = 12 * 3600;

/// The failure code a job status is reported with.
pub fn failure_code(status: JobStatus) -> Option<&'static str> {
    match status {
        JobStatus::Failed => Some("job_failed"),
        JobStatus::Canceled => Some("job_canceled"),
        _ => None,
    }
}

/// An event body: `{event, timestamp, data: {…}}` describing `job` at `status`.
pub fn event_payload(
    event: &str,
    at_ms: i64,
    job: &Job,
    status: JobStatus,
    final_neu: Option<f64>,
) -> Value {
    let ended_badly = matches!(status, JobStatus::Failed | JobStatus::Canceled);
    json!({
        "event": event,
        "timestamp": rfc3339(at_ms),
        "data": {
            "jobId": job.id.to_string(),
            "userId": job.user_id.to_string(),
            "status": status.as_str(),
            "encoder": job.encoder,
            "durationSec": job.output_duration_sec.or(job.duration_sec),
            "finalNeu": final_neu,
            "externalId": job.external_id,
            "metadata": job.metadata,
            "error": if ended_badly { job.failure_message.clone() } else { None },
            "failureCode": failure_code(status),
            // An addition to the contract: what an optimize: "vmaf" job reached (null for
            // other jobs, and before success).
            "vmaf": job.vmaf,
        }
    })
}

/// Checks a webhook URL before it is stored or called: the network-level rules of URL ingest
/// (no private, loopback or metadata addresses unless the operator allows private networks).
pub async fn check_url(state: &AppState, url: &str) -> crate::http::error::AppResult<()> {
    state
        .outbound
        .vet(url)
        .await
        .map(drop)
        .map_err(|e| e.into_app(crate::outbound::Purpose::Webhook))
}

/// Cuts `text` to [`CAPTURE_CHARS`] characters.
pub fn capped(text: &str) -> String {
    text.chars().take(CAPTURE_CHARS).collect()
}

/// The wait before attempt `attempts + 1`: base × 2^(attempts-1), capped, ±20% jitter.
pub fn backoff_ms(base_secs: u64, attempts: i32) -> i64 {
    let exp = (attempts.max(1) - 1).min(30) as u32;
    let wait = (base_secs.max(1) as i64)
        .saturating_mul(1i64 << exp.min(20))
        .min(MAX_WAIT_SECS)
        * 1000;
    let jitter = (rand::random::<u64>() % (wait as u64 * 2 / 5 + 1)) as i64;
    wait - wait / 5 + jitter
}

/// What one POST to a receiver came to.
pub struct Sent {
    pub status_code: Option<u16>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

impl Sent {
    pub fn ok(&self) -> bool {
        self.status_code.is_some_and(|c| (200..300).contains(&c))
    }
}

/// Reads at most a few KiB of a response body: enough for the record, never a memory risk.
async fn capture(response: reqwest::Response) -> String {
    let mut stream = response.bytes_stream();
    let mut bytes = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        bytes.extend_from_slice(&chunk);
        if bytes.len() >= CAPTURE_CHARS * 4 {
            break;
        }
    }
    capped(&String::from_utf8_lossy(&bytes))
}

/// POSTs `body` to the webhook with every signature header, through the outbound guard (the
/// address is vetted and pinned at each attempt; redirects are not followed).
pub async fn send(state: &AppState, hook: &Webhook, msg_id: &str, event: &str, body: &str) -> Sent {
    let started = Instant::now();
    let ts = now_ms() / 1000;
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    put("content-type", "application/json");
    put(
        "x-webhook-signature",
        &sign::contract_signature(&hook.secret, body.as_bytes()),
    );
    put("x-webhook-event", event);
    put("x-webhook-id", &hook.id.to_string());
    put("webhook-id", msg_id);
    put("webhook-timestamp", &ts.to_string());
    put(
        "webhook-signature",
        &sign::standard_signature(&hook.secret, msg_id, ts, body.as_bytes()),
    );
    let timeout = Duration::from_secs(state.config.webhook_timeout_secs);
    let sent = state
        .outbound
        .post_bytes(&hook.url, body.as_bytes().to_vec(), headers, timeout)
        .await;
    let duration_ms = started.elapsed().as_millis() as i64;
    match sent {
        Ok(response) => {
            let code = response.status().as_u16();
            let text = capture(response).await;
            Sent {
                status_code: Some(code),
                error: (!(200..300).contains(&code))
                    .then(|| format!("the receiver answered HTTP {code}")),
                response_body: Some(text),
                duration_ms,
            }
        }
        Err(e) => {
            let message = e.to_string();
            // A timeout reads as such: the receiver did not answer in time.
            let message = if started.elapsed() >= timeout {
                format!("no answer within {} s", state.config.webhook_timeout_secs)
            } else {
                message
            };
            Sent {
                status_code: None,
                response_body: None,
                error: Some(capped(&message)),
                duration_ms,
            }
        }
    }
}

/// The body of a message, built once (at its first attempt) and then resent as is.
async fn body_of(state: &AppState, m: &DueMessage) -> String {
    if let Some(p) = &m.payload {
        return p.clone();
    }
    let status = m
        .status
        .as_deref()
        .and_then(JobStatus::parse)
        .unwrap_or(JobStatus::Created);
    let value = match &m.job {
        Some(job) => {
            let final_neu = if status == JobStatus::Success {
                match state.repos.ledger.job_totals(job.id).await {
                    Ok((_, charged)) => Some(charged.as_f64()),
                    Err(_) => None,
                }
            } else {
                None
            };
            event_payload(&m.event, m.created_at, job, status, final_neu)
        }
        // The job row is gone (its account was deleted): say what is known.
        None => {
            json!({"event": m.event, "timestamp": rfc3339(m.created_at), "data": {"status": status.as_str()}})
        }
    };
    value.to_string()
}

async fn deliver(state: &AppState, m: DueMessage) {
    let body = body_of(state, &m).await;
    let sent = send(state, &m.webhook, &m.id, &m.event, &body).await;
    let attempt = m.attempts + 1;
    let now = now_ms();
    let gone = sent.status_code == Some(410);
    let after = if sent.ok() {
        AfterAttempt::Delivered
    } else if attempt >= state.config.webhook_max_attempts {
        AfterAttempt::GiveUp
    } else {
        AfterAttempt::RetryAt(now + backoff_ms(state.config.webhook_retry_base_secs, attempt))
    };
    let record = Delivery {
        id: uuid::Uuid::now_v7(),
        message_id: m.id.clone(),
        webhook_id: m.webhook.id,
        job_id: m.job.as_ref().map(|j| j.id),
        event: m.event.clone(),
        success: sent.ok(),
        status_code: sent.status_code.map(i32::from),
        duration_ms: Some(sent.duration_ms),
        response_body: sent.response_body,
        error: sent.error,
        attempt,
        next_retry_at: match after {
            AfterAttempt::RetryAt(t) => Some(t),
            _ => None,
        },
        retried_at: (attempt > 1).then_some(now),
        created_at: now,
    };
    match after {
        AfterAttempt::Delivered => {}
        AfterAttempt::GiveUp => {
            tracing::warn!(webhook = %m.webhook.id, message = %m.id, attempt, "webhook event given up")
        }
        AfterAttempt::RetryAt(_) => {
            tracing::info!(webhook = %m.webhook.id, message = %m.id, attempt, error = ?record.error, "webhook delivery failed; will retry")
        }
    }
    if let Err(e) = state
        .repos
        .webhooks
        .record_attempt(
            &record,
            &body,
            after,
            gone,
            state.config.webhook_max_failures,
        )
        .await
    {
        // The lease runs out and the message is sent again: at least once, never lost.
        tracing::warn!(error = %e, "could not record a webhook attempt");
    }
}

/// Delivers due events until `shutdown`.
pub fn spawn(state: AppState, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let slots = state.config.webhook_delivery_slots.max(1) as i64;
        let lease = state.config.webhook_timeout_secs as i64 * 1000 + LEASE_MARGIN_MS;
        let mut sending = JoinSet::new();
        // Message ids in flight, by task, to hand their leases back when stopping.
        let mut in_flight = std::collections::HashMap::new();
        loop {
            let free = slots - sending.len() as i64;
            if free > 0 {
                let now = now_ms();
                match state
                    .repos
                    .webhooks
                    .due_messages(now, now + lease, free)
                    .await
                {
                    Ok(due) => {
                        for m in due {
                            let state = state.clone();
                            let id = m.id.clone();
                            let task = sending.spawn(async move { deliver(&state, m).await });
                            in_flight.insert(task.id(), id);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not read due webhook events"),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                Some(done) = sending.join_next_with_id(), if !sending.is_empty() => {
                    if let Ok((task, ())) = done {
                        in_flight.remove(&task);
                    }
                }
            }
            while let Some(done) = sending.try_join_next_with_id() {
                if let Ok((task, ())) = done {
                    in_flight.remove(&task);
                }
            }
        }
        // Attempts cut short are sent again (at least once), right after the next start.
        sending.abort_all();
        for id in in_flight.into_values() {
            if let Err(e) = state.repos.webhooks.release_lease(&id).await {
                tracing::warn!(error = %e, "could not hand back a webhook lease");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_spans_about_three_days() {
        for attempt in 1..=20 {
            let nominal = (5i64 << (attempt - 1).min(20)).min(MAX_WAIT_SECS) * 1000;
            let w = backoff_ms(5, attempt);
            assert!(
                w >= nominal * 4 / 5 && w <= nominal * 6 / 5,
                "attempt {attempt}: {w}"
            );
        }
        // 18 waits (19 attempts) at the defaults.
        let total: i64 = (1..19).map(|a| (5i64 << (a - 1)).min(MAX_WAIT_SECS)).sum();
        assert!(
            (2.5 * 86400.0..3.5 * 86400.0).contains(&(total as f64)),
            "{total} s"
        );
    }
}
