//! In-process encode workers. Each one loops: claim a job from the database queue, run it,
//! repeat; idle workers sleep until a job is queued (or a poll interval passes, which also
//! picks up jobs whose worker died and whose lease has expired).

mod customer;
mod fetch;
mod run;

use crate::state::AppState;
use convertrilo_db::ClaimFilter;
use convertrilo_media::ScratchRoot;
use std::{sync::Arc, time::Duration};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How often an idle worker looks at the queue without being woken.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Starts `count` workers sharing one scratch root. They stop when `shutdown` is canceled,
/// handing running jobs back to the queue.
pub fn spawn(
    state: AppState,
    scratch: Arc<ScratchRoot>,
    count: usize,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let process = uuid::Uuid::now_v7().simple().to_string();
    (0..count)
        .map(|n| {
            let worker_id = format!("{}-{n}", &process[..12]);
            let span = tracing::info_span!("worker", id = %worker_id);
            tokio::spawn(
                worker_loop(state.clone(), scratch.clone(), worker_id, shutdown.clone())
                    .instrument(span),
            )
        })
        .collect()
}

async fn worker_loop(
    state: AppState,
    scratch: Arc<ScratchRoot>,
    worker_id: String,
    shutdown: CancellationToken,
) {
    let lease = Duration::from_secs(state.config.lease_secs.max(1));
    let can = ClaimFilter::of(&state.caps.worker_caps(1));
    while !shutdown.is_cancelled() {
        match state
            .repos
            .jobs
            .claim(&worker_id, lease, state.config.max_attempts, &can)
            .await
        {
            Ok(Some(job)) => {
                let span = tracing::info_span!("job", id = %job.id, attempt = job.attempts);
                run::run_job(&state, &scratch, &worker_id, job, &shutdown)
                    .instrument(span)
                    .await;
            }
            Ok(None) => {
                tokio::select! {
                    _ = state.queue_wake.notified() => {}
                    _ = tokio::time::sleep(POLL_INTERVAL) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot claim from the queue; retrying");
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
    }
}
