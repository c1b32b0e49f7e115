//! Encode workers, in the API process (`serve`) or in a process of their own
//! (`convertrilo worker`). A process registers once in the worker registry with what its
//! ffmpeg can do (see `registry`), then runs one loop per slot: claim a job this machine can
//! run, run it, repeat. Idle slots sleep until a queue event (a job queued anywhere, on
//! PostgreSQL through LISTEN/NOTIFY) or a poll interval, which also picks up jobs whose worker
//! died and whose lease has expired. A cancel event stops the job at once wherever it runs.
//!
//! Stopping has two steps: `drain` stops taking jobs and lets running ones finish; `shutdown`
//! stops running jobs and hands them back to the queue without using up an attempt.

mod customer;
mod fetch;
mod registry;
mod run;

use crate::state::AppState;
use convertrilo_db::{slot_owner, ClaimFilter, QueueEvent};
use convertrilo_media::ScratchRoot;
use std::{sync::Arc, time::Duration};
use tokio::{sync::broadcast::error::RecvError, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use registry::new_worker_id;

/// How often an idle worker looks at the queue without being woken.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A running worker process's tasks.
pub struct Workers {
    /// One per slot; they end once drained (or shut down).
    pub slots: Vec<JoinHandle<()>>,
    /// The registry heartbeat and the cancel listener; they end at shutdown.
    pub support: Vec<JoinHandle<()>>,
}

/// Registers worker process `id` and starts `count` slots sharing one scratch root.
pub async fn spawn(
    state: AppState,
    scratch: Arc<ScratchRoot>,
    id: String,
    count: usize,
    drain: CancellationToken,
    shutdown: CancellationToken,
) -> Workers {
    let caps = state.caps.worker_caps(count as u32);
    let can = ClaimFilter::of(&caps);
    let support = vec![
        registry::start(
            state.clone(),
            id.clone(),
            caps,
            drain.clone(),
            shutdown.clone(),
        )
        .await,
        tokio::spawn(cancel_listener(state.clone(), shutdown.clone())),
    ];
    let slots = (0..count)
        .map(|n| {
            let owner = slot_owner(&id, n);
            let span = tracing::info_span!("worker", id = %owner);
            tokio::spawn(
                slot_loop(
                    state.clone(),
                    scratch.clone(),
                    owner,
                    can.clone(),
                    drain.clone(),
                    shutdown.clone(),
                )
                .instrument(span),
            )
        })
        .collect();
    Workers { slots, support }
}

async fn slot_loop(
    state: AppState,
    scratch: Arc<ScratchRoot>,
    owner: String,
    can: ClaimFilter,
    drain: CancellationToken,
    shutdown: CancellationToken,
) {
    let lease = Duration::from_secs(state.config.lease_secs.max(1));
    // Subscribed before the first claim, so a job queued in between still wakes this slot.
    let mut events = state.repos.events.subscribe();
    while !drain.is_cancelled() {
        // The lease a claim sets runs from no earlier than this moment (see run::LeaseGuard).
        let asked = std::time::Instant::now();
        match state
            .repos
            .jobs
            .claim(&owner, lease, state.config.max_attempts, &can)
            .await
        {
            Ok(Some(job)) => {
                let span = tracing::info_span!("job", id = %job.id, attempt = job.attempts);
                run::run_job(&state, &scratch, &owner, job, asked, &shutdown)
                    .instrument(span)
                    .await;
            }
            Ok(None) => {
                let sleep = tokio::time::sleep(POLL_INTERVAL);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        ev = events.recv() => match ev {
                            Ok(QueueEvent::Queued) | Err(RecvError::Lagged(_)) => break,
                            Ok(QueueEvent::Canceled(_)) => continue,
                            // The sender lives as long as the repository: only at exit.
                            Err(RecvError::Closed) => { sleep.as_mut().await; break }
                        },
                        _ = &mut sleep => break,
                        _ = drain.cancelled() => break,
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot claim from the queue; retrying");
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
    }
}

/// Stops a job running here as soon as it is canceled, from this process or (on PostgreSQL)
/// any other; the heartbeat's lost lease is the fallback.
async fn cancel_listener(state: AppState, shutdown: CancellationToken) {
    let mut events = state.repos.events.subscribe();
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(QueueEvent::Canceled(id)) => {
                    if state.running.cancel(id) {
                        tracing::info!(job = %id, "job canceled; stopping it");
                    }
                }
                Ok(QueueEvent::Queued) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = shutdown.cancelled() => return,
        }
    }
}
