//! The worker registry and what operators read about the fleet. Every worker process (the
//! in-process workers of `serve` and each `convertrilo worker`) registers a row with its
//! capabilities and touches it on a timer; a row not touched for a while belongs to a process
//! that died. Jobs name the process holding them through their lease owner, `<worker id>/<slot>`.
//! The same rows let the API fail a queued job that no live worker can run (`unrunnable`)
//! instead of letting it wait forever.

use crate::DbResult;
use async_trait::async_trait;
use convertrilo_core::{
    capability::{Needs, WorkerCaps},
    JobId, JobStatus,
};
use tokio::sync::broadcast;

/// One worker process as it registers.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRecord {
    pub id: String,
    pub host: String,
    pub version: String,
    pub caps: WorkerCaps,
    pub started_at: i64,
    pub last_seen: i64,
    /// Draining after SIGTERM: takes no new jobs.
    pub stopping: bool,
}

/// A registered worker with the jobs it holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerStatus {
    pub worker: WorkerRecord,
    pub jobs: Vec<JobId>,
}

/// What a claiming worker can run (see `convertrilo_core::capability`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimFilter {
    /// `WorkerCaps::token_list`.
    pub tokens: String,
    pub vmaf: bool,
}

impl ClaimFilter {
    pub fn of(caps: &WorkerCaps) -> Self {
        Self {
            tokens: caps.token_list(),
            vmaf: caps.libvmaf,
        }
    }

    /// Takes any job (tests and tools that do not model capabilities).
    pub fn any() -> Self {
        Self {
            tokens: String::new(),
            vmaf: true,
        }
    }
}

/// The lease owner of slot `slot` of worker process `worker`.
pub fn slot_owner(worker: &str, slot: usize) -> String {
    format!("{worker}/{slot}")
}

/// A queued job that no live worker can run.
#[derive(Debug, Clone, PartialEq)]
pub struct Unrunnable {
    pub job: JobId,
    pub needs: Needs,
}

#[async_trait]
pub trait WorkerRepo: Send + Sync {
    /// Creates or replaces the row of `w.id`.
    async fn register_worker(&self, w: &WorkerRecord) -> DbResult<()>;
    /// Marks the worker alive at `now` (and draining when `stopping`); false when its row is
    /// gone (pruned after a long stall), so the caller registers again.
    async fn touch_worker(&self, id: &str, now: i64, stopping: bool) -> DbResult<bool>;
    /// Removes the row of a worker that stopped cleanly.
    async fn remove_worker(&self, id: &str) -> DbResult<()>;
    /// Every registered worker, most recently started first, with the jobs it holds.
    async fn workers(&self) -> DbResult<Vec<WorkerStatus>>;
    /// Deletes rows not touched since `seen_before`; returns how many.
    async fn prune_workers(&self, seen_before: i64) -> DbResult<u64>;
    /// Queued jobs, waiting since before `queued_before` with no live lease, that no worker
    /// touched since `live_since` (and not draining) can run. Jobs any worker could run are
    /// only listed while some live worker exists: with no worker at all, ordinary jobs wait
    /// for one to start; special needs (a GPU, libvmaf) are listed regardless.
    async fn unrunnable(
        &self,
        live_since: i64,
        queued_before: i64,
        limit: i64,
    ) -> DbResult<Vec<Unrunnable>>;
}

/// Counts for `/metrics` and a liveness probe of the database for `/readyz`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub jobs_by_status: Vec<(JobStatus, i64)>,
    /// Jobs waiting for a worker (no live lease).
    pub queue_depth: i64,
    /// Jobs held by a worker under a live lease.
    pub running: i64,
    /// Successful jobs and the seconds from their start to their end, summed.
    pub encodes: i64,
    pub encode_seconds: f64,
}

#[async_trait]
pub trait StatsRepo: Send + Sync {
    async fn ping(&self) -> DbResult<()>;
    async fn stats(&self, now: i64) -> DbResult<Stats>;
}

/// A change in the queue that other parts of this process (and, on PostgreSQL, of every
/// process on the database) may want at once rather than at their next poll.
#[derive(Debug, Clone, PartialEq)]
pub enum QueueEvent {
    /// A job became claimable.
    Queued,
    /// A job was canceled: whoever runs it must stop.
    Canceled(JobId),
}

impl QueueEvent {
    /// The NOTIFY payload form: `queued` or `cancel:<job id>`.
    pub fn to_payload(&self) -> String {
        match self {
            Self::Queued => "queued".into(),
            Self::Canceled(id) => format!("cancel:{id}"),
        }
    }

    pub fn from_payload(s: &str) -> Option<Self> {
        match s.split_once(':') {
            None if s == "queued" => Some(Self::Queued),
            Some(("cancel", id)) => id.parse().ok().map(Self::Canceled),
            _ => None,
        }
    }
}

/// Subscriptions to [`QueueEvent`]s. Delivery is best effort (a lagging receiver misses
/// events): listeners also poll, so an event only makes things faster.
pub trait QueueEvents: Send + Sync {
    fn subscribe(&self) -> broadcast::Receiver<QueueEvent>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let id = JobId::new();
        for ev in [QueueEvent::Queued, QueueEvent::Canceled(id)] {
            assert_eq!(QueueEvent::from_payload(&ev.to_payload()), Some(ev));
        }
        assert_eq!(QueueEvent::from_payload("cancel:nope"), None);
        assert_eq!(QueueEvent::from_payload("other"), None);
    }
}
