//! `Idempotency-Key` on the creating endpoints. A request claims its key before any work; the
//! work saves its response with the key in the transaction that writes its jobs (see
//! `convertrilo_db::idempotency`); a request that fails gives the key back so that a
//! corrected retry can use it. Requests are compared as canonical JSON (object keys sorted,
//! whitespace dropped) together with the endpoint, so the same key sent to another endpoint
//! is a different request.

use crate::{
    http::error::{AppError, AppResult},
    state::AppState,
};
use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use convertrilo_core::{time::now_ms, ErrorCode, UserId};
use convertrilo_db::{IdemBegin, IdemClaim, IdempotentResponse};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::future::Future;

pub const HEADER: &str = "idempotency-key";
pub const MAX_KEY_LEN: usize = 255;
/// Keys are kept at least this long, whatever the configuration says.
const MIN_RETENTION_HOURS: u64 = 24;
/// How long a claim holds without renewal. A running request renews it every
/// [`RENEW_EVERY`]; one whose process died lets it lapse, and a retry takes over after this.
const CLAIM_LOCK_MS: i64 = 60_000;
const RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(20);
/// What a 409 `idempotency_in_progress` suggests waiting before the retry.
const RETRY_AFTER_SECS: u32 = 2;

/// Holds a claim while its request runs: renews the lock in the background, and gives the
/// key back if the request ends without saving a response, including when the client goes
/// away and the request's future is dropped half-way.
struct ClaimGuard {
    state: AppState,
    claim: Option<IdemClaim>,
    renewer: tokio::task::JoinHandle<()>,
}

impl ClaimGuard {
    fn hold(state: &AppState, claim: &IdemClaim) -> ClaimGuard {
        let (s, c) = (state.clone(), claim.clone());
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                match s
                    .repos
                    .idempotency
                    .extend(&c, now_ms() + CLAIM_LOCK_MS)
                    .await
                {
                    Ok(true) => {}
                    // Answered or taken over: nothing left to hold.
                    Ok(false) => break,
                    Err(e) => tracing::warn!(error = %e, "could not renew an idempotency key"),
                }
            }
        });
        ClaimGuard {
            state: state.clone(),
            claim: Some(claim.clone()),
            renewer,
        }
    }

    /// The response was saved with the key: nothing to give back.
    fn answered(mut self) {
        self.claim = None;
    }

    /// The request failed: give the key back before answering, so an immediate retry can
    /// use it.
    async fn give_back(mut self) {
        if let Some(claim) = self.claim.take() {
            if let Err(e) = self.state.repos.idempotency.abandon(&claim).await {
                tracing::warn!(error = %e, "could not give back an idempotency key");
            }
        }
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        self.renewer.abort();
        let Some(claim) = self.claim.take() else {
            return;
        };
        // Giving back only deletes a claim that is still ours and unanswered, so it is safe
        // even if the response was saved just before the drop.
        let state = self.state.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = state.repos.idempotency.abandon(&claim).await {
                    tracing::warn!(error = %e, "could not give back an idempotency key");
                }
            });
        }
    }
}

pub fn retention_ms(state: &AppState) -> i64 {
    (state
        .config
        .idempotency_retention_hours
        .max(MIN_RETENTION_HOURS)
        * 3600
        * 1000) as i64
}

/// Writes `v` with object keys sorted and no whitespace.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

pub fn request_hash(endpoint: &str, body: &Value) -> String {
    let mut text = String::with_capacity(256);
    text.push_str(endpoint);
    text.push('\n');
    canonical(body, &mut text);
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The key from the request headers, checked.
pub fn key_of(headers: &HeaderMap) -> AppResult<Option<String>> {
    let Some(raw) = headers.get(HEADER) else {
        return Ok(None);
    };
    let key = raw.to_str().map_err(|_| {
        AppError::bad_request("Idempotency-Key must be visible ASCII text (for example a UUID)")
    })?;
    if key.trim().is_empty() {
        return Err(AppError::bad_request(
            "Idempotency-Key is empty; send 1 to 255 characters (for example a UUID), or leave the header out",
        ));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(AppError::bad_request(format!(
            "Idempotency-Key is {} characters long; the limit is {MAX_KEY_LEN}",
            key.len()
        )));
    }
    Ok(Some(key.to_string()))
}

/// A JSON response whose bytes are fixed before it is saved, so a replay is byte for byte.
pub struct Saved {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Saved {
    pub fn json<T: serde::Serialize>(value: &T) -> AppResult<Saved> {
        Ok(Saved {
            status: StatusCode::OK,
            body: serde_json::to_vec(value).map_err(AppError::internal)?,
        })
    }

    pub fn with_claim(&self, claim: Option<&IdemClaim>) -> Option<IdempotentResponse> {
        claim.map(|c| IdempotentResponse {
            claim: c.clone(),
            status: self.status.as_u16(),
            body: self.body.clone(),
        })
    }

    fn into_response(self, replayed: bool) -> Response {
        let mut r = (self.status, self.body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if replayed {
            r.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        r
    }
}

/// Runs `work` under the request's idempotency key, if it has one. `work` receives the claim
/// and must save its response with it (via `Saved::with_claim`) in the transaction that
/// writes its jobs; when it fails the key is given back.
pub async fn run<F, Fut>(
    state: &AppState,
    owner: UserId,
    headers: &HeaderMap,
    endpoint: &str,
    body: &Value,
    work: F,
) -> AppResult<Response>
where
    F: FnOnce(Option<IdemClaim>) -> Fut,
    Fut: Future<Output = AppResult<Saved>>,
{
    let Some(key) = key_of(headers)? else {
        return Ok(work(None).await?.into_response(false));
    };
    let claim = IdemClaim {
        user_id: owner,
        key,
        request_hash: request_hash(endpoint, body),
        attempt: uuid::Uuid::new_v4().to_string(),
    };
    let now = now_ms();
    let begun = state
        .repos
        .idempotency
        .begin(&claim, now, now + CLAIM_LOCK_MS, now - retention_ms(state))
        .await?;
    match begun {
        IdemBegin::Started => {}
        IdemBegin::Replay { status, body } => {
            return Ok(Saved {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                body,
            }
            .into_response(true))
        }
        IdemBegin::Conflict => {
            return Err(AppError::new(
                StatusCode::CONFLICT,
                ErrorCode::IdempotencyConflict,
                "this Idempotency-Key was already used with a different request; send a new key for a new request",
            ))
        }
        IdemBegin::InProgress => {
            let mut r = AppError::new(
                StatusCode::CONFLICT,
                ErrorCode::IdempotencyInProgress,
                "a request with this Idempotency-Key is still being processed; retry in a moment to get its response",
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            return Ok(r);
        }
    }
    let guard = ClaimGuard::hold(state, &claim);
    let result = work(Some(claim)).await;
    match result {
        Ok(saved) => {
            guard.answered();
            Ok(saved.into_response(false))
        }
        Err(e) => {
            guard.give_back().await;
            Err(e)
        }
    }
}

/// The error for a save that found its key taken over (the request ran past its lock).
pub fn key_lost() -> AppError {
    AppError::new(
        StatusCode::CONFLICT,
        ErrorCode::IdempotencyInProgress,
        "this request took too long and its Idempotency-Key was taken over by a retry; retry to get that request's response",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_ignores_key_order_and_spacing_only() {
        let a = request_hash("POST /jobs", &json!({"b": 1, "a": {"y": [1, 2], "x": "é"}}));
        let b: Value = serde_json::from_str(r#"{ "a" : { "x":"é", "y":[1,2] }, "b":1 }"#).unwrap();
        assert_eq!(a, request_hash("POST /jobs", &b));
        assert_ne!(a, request_hash("POST /jobs/bulk", &b), "endpoint counts");
        let c = json!({"b": 1, "a": {"y": [2, 1], "x": "é"}});
        assert_ne!(a, request_hash("POST /jobs", &c), "array order counts");
    }
}
