//! Periodic clean-up that no request waits for: idempotency keys past their retention.

use crate::{idempotency, state::AppState};
use convertrilo_core::time::now_ms;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const EVERY: Duration = Duration::from_secs(600);

pub fn spawn(state: AppState, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now = now_ms();
            match state
                .repos
                .idempotency
                .sweep(now - idempotency::retention_ms(&state), now)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "expired idempotency keys removed"),
                Err(e) => tracing::warn!(error = %e, "could not sweep idempotency keys"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
    })
}
