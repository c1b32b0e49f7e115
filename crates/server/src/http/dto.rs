//! Request and response bodies as they appear on the wire, with the contract's field names.
//! Responses are built from these types; request types document what the validators in
//! `convertrilo_core::request` accept (a test keeps the two in step).

use crate::{jobs::upload_slot, state::AppState};
use convertrilo_core::{
    external::Destination,
    spec::{BitrateTier, Codec, Container, Optimize, Policy, Preset, Quality, Resolution},
    time::rfc3339,
    vmaf::VmafReport,
    JobStatus, Neu,
};
use convertrilo_db::{Ingest, Job};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // documents the body; parsing is done by convertrilo_core::request
pub struct JobCreateRequest {
    #[schema(max_length = 255)]
    pub external_id: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub codec: Codec,
    pub resolution: Resolution,
    #[schema(minimum = 1, maximum = 240)]
    pub fps: i64,
    pub container: Option<Container>,
    pub preset: Option<Preset>,
    pub bitrate_tier: Option<BitrateTier>,
    #[schema(minimum = 1, maximum = 2)]
    pub passes: Option<i64>,
    pub policy: Option<Policy>,
    pub quality: Option<Quality>,
    /// Direct HTTP(S) ingest; without it the response carries a signed upload URL.
    #[schema(format = "uri")]
    pub source_url: Option<String>,
    pub original_filename: Option<String>,
    /// An object in your S3-compatible bucket; checked (HEAD) at creation.
    pub source_s3: Option<super::routes::storage_docs::S3Source>,
    /// Probe, estimate and queue at once (for uploads: as soon as the upload finishes).
    pub confirm: Option<bool>,
    /// `vmaf`: search for the smallest file whose VMAF reaches `vmafTarget` (priced at the
    /// `optimize` factor of the price list). One pass: `passes` must be 1.
    pub optimize: Option<Optimize>,
    /// The VMAF to reach with `optimize: "vmaf"`; 93 when left out.
    #[schema(minimum = 50, maximum = 99)]
    pub vmaf_target: Option<f64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct ApproveUnifiedRequest {
    pub codec: Option<Codec>,
    pub resolution: Option<Resolution>,
    pub fps: Option<i64>,
    pub preset: Option<Preset>,
    pub bitrate_tier: Option<BitrateTier>,
    pub passes: Option<i64>,
    pub policy: Option<Policy>,
    pub container: Option<Container>,
    pub quality: Option<Quality>,
    /// `vmaf`: search for the smallest file whose VMAF reaches `vmafTarget` (the estimate
    /// includes the `optimize` factor).
    pub optimize: Option<Optimize>,
    /// The VMAF to reach with `optimize: "vmaf"`; 93 when left out.
    #[schema(minimum = 50, maximum = 99)]
    pub vmaf_target: Option<f64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct ConfirmRequest {
    pub container: Option<Container>,
    pub quality: Option<Quality>,
    /// `vmaf`: search for the smallest file whose VMAF reaches `vmafTarget`.
    pub optimize: Option<Optimize>,
    /// The VMAF to reach with `optimize: "vmaf"` (the contract allows 1–100 here; a target
    /// out of reach is encoded at the best setting and reported as missed); 93 when left out.
    #[schema(minimum = 1, maximum = 100)]
    pub vmaf_target: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct UploadTarget {
    /// Signed, expiring URL: `PUT` the file's bytes here.
    pub url: String,
    pub key: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputTarget {
    pub key: String,
    /// Where the output is served; fetching it needs the signed `downloadUrl` of the status.
    pub public_url: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateEstimate {
    #[schema(value_type = f64)]
    pub neu: Neu,
    #[schema(value_type = f64)]
    pub total_neu: Neu,
    #[schema(value_type = f64)]
    pub reserved: Neu,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobCreateResponse {
    pub job_id: String,
    pub external_id: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub source_filename: Option<String>,
    pub output_filename: Option<String>,
    #[schema(value_type = String)]
    pub status: JobStatus,
    pub upload: Option<UploadTarget>,
    pub output: OutputTarget,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<CreateEstimate>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeDurationResponse {
    pub duration_sec: f64,
    pub duration_minutes: f64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApproveEstimate {
    #[schema(value_type = f64)]
    pub per_minute_neu: Neu,
    pub duration_sec: f64,
    #[schema(value_type = f64)]
    pub total_neu: Neu,
    #[schema(value_type = f64)]
    pub reserved: Neu,
}

#[derive(Serialize, ToSchema)]
pub struct ApproveUnifiedResponse {
    pub ok: bool,
    pub estimate: ApproveEstimate,
}

#[derive(Serialize, ToSchema)]
pub struct ConfirmResponse {
    pub ok: bool,
    #[schema(value_type = String)]
    pub status: JobStatus,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelResponse {
    pub ok: bool,
    /// The job's status after the request.
    #[schema(value_type = String)]
    pub status: JobStatus,
    /// The status the job had when the request arrived.
    #[schema(value_type = String)]
    pub previous_status: JobStatus,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusResponse {
    pub id: String,
    pub external_id: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub source_filename: Option<String>,
    pub output_filename: Option<String>,
    /// created, queued, running, success, failed or canceled.
    #[schema(value_type = String)]
    pub status: JobStatus,
    /// `upload`, `url`, `s3` or `google-drive`.
    pub ingest: Option<String>,
    pub output: Option<OutputTarget>,
    /// Signed, expiring link to the encoded file; present on success.
    pub download_url: Option<String>,
    /// A fresh signed upload link, while an upload job still waits for (or may replace) its
    /// source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_url: Option<String>,
    pub encoder: Option<String>,
    /// Percent done, 0–100.
    pub pct: Option<f64>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub failure_message: Option<String>,
    /// Source duration in seconds, once probed.
    pub duration_sec: Option<f64>,
    /// Size of the encoded file in bytes, on success.
    pub output_size_bytes: Option<i64>,
    #[schema(value_type = Option<f64>)]
    pub estimated_neu: Option<Neu>,
    /// Tokens held for this job until it finishes.
    #[schema(value_type = f64)]
    pub reserved_neu: Neu,
    /// Tokens charged: the price of the encoded duration, on success.
    #[schema(value_type = f64)]
    pub charged_neu: Neu,
    /// For `optimize: "vmaf"` jobs once they succeed: the VMAF the file reached, the CRF
    /// chosen, what the search cost and the size saved against the default setting. `null`
    /// otherwise. (An addition to the contract.)
    pub vmaf: Option<VmafReport>,
}

impl OutputTarget {
    pub fn of(state: &AppState, job: &Job) -> Self {
        // With an S3 store the object's own address (without a signature); else our route.
        let in_store = state
            .store
            .presign_get(&job.output_key, std::time::Duration::from_secs(60), None)
            .map(|mut u| {
                u.set_query(None);
                u.to_string()
            });
        Self {
            key: job.output_key.clone(),
            public_url: in_store
                .unwrap_or_else(|| format!("{}/files/{}", state.signer.base_url(), job.output_key)),
        }
    }
}

/// A freshly signed link to the job's upload slot: presigned by the object store when it
/// serves its own links (S3), else signed here and served by `routes::files`.
fn upload_link(state: &AppState, job: &Job) -> String {
    let ttl = state.config.upload_url_ttl_secs;
    let slot = upload_slot(job.id);
    if let Some(url) = state
        .store
        .presign_put(&slot, std::time::Duration::from_secs(ttl))
    {
        return url.to_string();
    }
    let expires = convertrilo_core::time::now_ms() / 1000 + ttl as i64;
    state.signer.upload_url(&slot, expires)
}

/// A signed link to a finished job's output and when it expires (Unix seconds). A job with
/// an output expiry (on-demand `outputExpiry`) is downloadable until that long after it
/// finished, and not after; other jobs get a fresh link of the configured lifetime.
pub fn download_link(state: &AppState, job: &Job) -> Option<(String, i64)> {
    if job.status != JobStatus::Success
        || job.output_purged_at.is_some()
        || job.destination != Destination::Cdn
    {
        return None;
    }
    let now = convertrilo_core::time::now_ms() / 1000;
    let expires = match (job.output_expiry_secs, job.finished_at) {
        (Some(expiry), Some(finished)) => finished / 1000 + expiry,
        _ => now + state.config.download_url_ttl_secs as i64,
    };
    (expires > now).then(|| {
        // Same expiry either way: an S3 link is presigned for the seconds left.
        let ttl = std::time::Duration::from_secs((expires - now) as u64);
        let url = match state
            .store
            .presign_get(&job.output_key, ttl, Some(&job.output_filename))
        {
            Some(url) => url.to_string(),
            None => state
                .signer
                .download_url(&job.output_key, expires, &job.output_filename),
        };
        (url, expires)
    })
}

impl StatusResponse {
    /// `reserved` and `charged` are the job's ledger totals.
    pub fn of(state: &AppState, job: &Job, reserved: Neu, charged: Neu) -> Self {
        let download_url = download_link(state, job).map(|(url, _)| url);
        let upload_url = (job.status == JobStatus::Created && job.ingest == Ingest::Upload)
            .then(|| upload_link(state, job));
        Self {
            id: job.id.to_string(),
            external_id: job.external_id.clone(),
            metadata: job.metadata.clone(),
            source_filename: job.source_filename.clone(),
            output_filename: Some(job.output_filename.clone()),
            status: job.status,
            ingest: Some(job.ingest.as_str().to_string()),
            // An output delivered to the customer's storage is not kept here.
            output: (job.destination == Destination::Cdn).then(|| OutputTarget::of(state, job)),
            download_url,
            upload_url,
            encoder: job.encoder.clone(),
            pct: job.pct.map(|p| (p * 10.0).round() / 10.0),
            created_at: rfc3339(job.created_at),
            started_at: job.started_at.map(rfc3339),
            finished_at: job.finished_at.map(rfc3339),
            failure_message: job.failure_message.clone(),
            duration_sec: job.duration_sec,
            output_size_bytes: job.output_size,
            estimated_neu: job.estimate,
            reserved_neu: reserved,
            charged_neu: charged,
            vmaf: job.vmaf.clone(),
        }
    }
}

impl JobCreateResponse {
    pub fn of(state: &AppState, job: &Job, reserved: Neu) -> Self {
        let upload =
            (job.status == JobStatus::Created && job.ingest == Ingest::Upload).then(|| {
                UploadTarget {
                    url: upload_link(state, job),
                    key: upload_slot(job.id),
                }
            });
        Self {
            job_id: job.id.to_string(),
            external_id: job.external_id.clone(),
            metadata: job.metadata.clone(),
            source_filename: job.source_filename.clone(),
            output_filename: Some(job.output_filename.clone()),
            status: job.status,
            upload,
            output: OutputTarget::of(state, job),
            estimate: job.estimate.map(|e| CreateEstimate {
                neu: e,
                total_neu: e,
                reserved,
            }),
        }
    }
}
