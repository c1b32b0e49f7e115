//! What every handler and worker shares.

use crate::config::Config;
use convertrilo_core::JobId;
use convertrilo_db::Repos;
use convertrilo_media::{Capabilities, Tools};
use convertrilo_storage::{ObjectStore, UrlSigner};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub repos: Repos,
    pub store: Arc<dyn ObjectStore>,
    /// The name in the store's `store-id` object, checked at start-up (see `ownstore`).
    pub store_id: String,
    pub signer: UrlSigner,
    pub tools: Arc<Tools>,
    pub caps: Arc<Capabilities>,
    pub running: RunningJobs,
    /// This process's id in the worker registry (its job leases are `<id>/<slot>`).
    pub worker_id: String,
    /// The only way to reach a customer-given URL (sources, webhooks): vetted and pinned.
    pub outbound: crate::outbound::Outbound,
    /// Where ffprobe reads URL sources (a loopback proxy to the vetted address).
    pub probe_proxy: crate::outbound::ProbeProxy,
    pub sessions: crate::session::SessionKeys,
    pub limits: crate::ratelimit::RateLimiter,
    /// The system account public jobs belong to; `None` while public jobs are off.
    pub public_owner: Option<convertrilo_core::UserId>,
    /// Seals and opens customers' credentials (see `crate::secrets`).
    pub secrets: Arc<crate::secrets::SecretBox>,
    /// Customers' S3-compatible buckets.
    pub s3: convertrilo_storage::s3::S3Client,
    /// Customers' Google Drive.
    pub drive: crate::external::drive::DriveApi,
}

/// Cancellation handles of the jobs this process is encoding, so that a cancel request can
/// kill ffmpeg at once instead of waiting for the worker's next heartbeat.
#[derive(Clone, Default)]
pub struct RunningJobs {
    // A std mutex: the critical sections are map operations, never held across an await.
    inner: Arc<Mutex<HashMap<JobId, CancellationToken>>>,
}

impl RunningJobs {
    /// The token is a child of `parent` (process shutdown), so either can stop the job.
    pub fn register(&self, id: JobId, parent: &CancellationToken) -> CancellationToken {
        let token = parent.child_token();
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, token.clone());
        token
    }
    pub fn remove(&self, id: JobId) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
    /// True when the job was running here and has been told to stop.
    pub fn cancel(&self, id: JobId) -> bool {
        match self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }
}
