//! `RateLimit-*` headers: extractors record their limit decision in a per-request slot, and
//! this middleware copies it onto the response (with `Retry-After` when refused).

use crate::ratelimit::Decision;
use axum::{
    extract::Request,
    http::{request::Parts, HeaderValue},
    middleware::Next,
    response::Response,
};
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct RateSlot(Arc<Mutex<Option<Decision>>>);

impl RateSlot {
    pub fn record(parts: &Parts, decision: Decision) {
        if let Some(slot) = parts.extensions.get::<RateSlot>() {
            slot.set(decision);
        }
    }

    pub fn set(&self, decision: Decision) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(decision);
    }
}

pub async fn rate_limit_headers(mut req: Request, next: Next) -> Response {
    let slot = RateSlot::default();
    req.extensions_mut().insert(slot.clone());
    let mut response = next.run(req).await;
    let decision = *slot.0.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(d) = decision {
        let h = response.headers_mut();
        h.insert("ratelimit-limit", HeaderValue::from(d.limit));
        h.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
        h.insert("ratelimit-reset", HeaderValue::from(d.reset_secs));
        if !d.allowed {
            h.insert("retry-after", HeaderValue::from(d.reset_secs));
        }
    }
    response
}
