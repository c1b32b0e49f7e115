//! `/ondemand…`: one call that probes, prices at the on-demand premium and queues; a status
//! with the download link; a cancel that says what it released. An optional one-off
//! `webhook` is told when the job ends (see `crate::callbacks`).

use crate::{
    http::{
        auth::Caller,
        dto::download_link,
        error::{AppError, AppResult, ErrorBody},
        extract::{JobPath, JsonBody},
    },
    idempotency::{self, Saved},
    jobs::{self, Draft},
    outbound::Purpose,
    state::AppState,
};
use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::{delete, get, post},
    Json, Router,
};
use convertrilo_core::{
    pricing::Factor,
    request::{self, OutputRequest, SourceRequest},
    spec::{BitrateTier, Codec, Container, Preset, Priority, Quality, Resolution},
    time::{now_ms, rfc3339},
    ErrorCode, JobStatus, Neu, Scope,
};
use convertrilo_db::{Job, JobKind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ondemand/encode", post(encode))
        .route("/ondemand/status/{job_id}", get(status))
        .route("/ondemand/{job_id}", delete(cancel))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // documents the body; parsing is done by convertrilo_core::request
pub struct OnDemandEncodeRequest {
    #[schema(format = "uri")]
    pub source_url: String,
    #[schema(max_length = 255)]
    pub external_id: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub codec: Option<Codec>,
    /// 480p to 2160p.
    pub resolution: Option<Resolution>,
    #[schema(minimum = 1, maximum = 120)]
    pub fps: Option<i64>,
    pub preset: Option<Preset>,
    pub bitrate_tier: Option<BitrateTier>,
    pub container: Option<Container>,
    pub quality: Option<Quality>,
    /// `vmaf`: the smallest file whose VMAF reaches `vmafTarget` (an addition to the
    /// contract, as on `POST /jobs`).
    pub optimize: Option<convertrilo_core::spec::Optimize>,
    /// The VMAF to reach with `optimize: "vmaf"`; 93 when left out.
    #[schema(minimum = 50, maximum = 99)]
    pub vmaf_target: Option<f64>,
    pub priority: Option<Priority>,
    /// Seconds the output stays downloadable after the job finishes.
    #[schema(minimum = 3600, maximum = 604800)]
    pub output_expiry: Option<i64>,
    /// Told once when the job ends (job.completed, job.failed or job.canceled); unsigned.
    #[schema(format = "uri")]
    pub webhook: Option<String>,
    /// Names the source for the output file name (else taken from the URL).
    pub original_filename: Option<String>,
    pub output_s3: Option<super::storage_docs::S3Output>,
    pub output_google_drive: Option<super::storage_docs::GoogleDriveOutput>,
    /// Deprecated: answered with 410.
    pub output_dropbox: Option<Map<String, Value>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnDemandPricing {
    /// NEU per minute at the standard price.
    #[schema(value_type = f64)]
    pub base_per_minute: Neu,
    /// NEU per minute with the on-demand premium.
    #[schema(value_type = f64)]
    pub on_demand_per_minute: Neu,
    #[schema(value_type = f64)]
    pub multiplier: Factor,
    #[schema(value_type = f64)]
    pub total_neu: Neu,
    #[schema(value_type = f64)]
    pub reserved: Neu,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnDemandEncodeResponse {
    pub job_id: String,
    pub external_id: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub source_filename: Option<String>,
    pub output_filename: Option<String>,
    #[schema(value_type = String)]
    pub status: JobStatus,
    /// Source duration in whole seconds (rounded up).
    pub estimated_duration: i64,
    pub pricing: OnDemandPricing,
    pub status_url: String,
    pub webhook: Option<String>,
}

/// Where the output is: `cdn` (kept here, behind the signed `downloadUrl`), `s3` (`bucket`
/// and `key`) or `google-drive` (`folderId` and `fileName`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folder_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
}

impl Destination {
    pub fn of(d: &convertrilo_core::external::Destination) -> Destination {
        use convertrilo_core::external::Destination as D;
        let mut out = Destination {
            kind: "cdn".into(),
            bucket: None,
            key: None,
            folder_id: None,
            file_name: None,
        };
        match d {
            D::Cdn => {}
            D::S3(o) => {
                out.kind = "s3".into();
                out.bucket = Some(o.bucket.bucket.clone());
                out.key = Some(o.key.clone());
            }
            D::GoogleDrive {
                folder_id,
                file_name,
            } => {
                out.kind = "google-drive".into();
                out.folder_id = Some(folder_id.clone());
                out.file_name = Some(file_name.clone());
            }
        }
        out
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnDemandStatusResponse {
    pub job_id: String,
    pub external_id: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub source_filename: Option<String>,
    pub output_filename: Option<String>,
    #[schema(value_type = String)]
    pub status: JobStatus,
    /// Percent done, 0–100.
    pub progress: Option<f64>,
    pub encoder: Option<String>,
    /// Signed link to the output, until it expires.
    pub download_url: Option<String>,
    /// Seconds until `downloadUrl` (and the output) expire.
    pub expires_in: Option<i64>,
    pub destination: Option<Destination>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub failure_message: Option<String>,
    /// For `optimize: "vmaf"` jobs once they succeed (folder ingest can ask for it): the
    /// VMAF reached, the CRF chosen and what the search cost. `null` otherwise.
    pub vmaf: Option<convertrilo_core::vmaf::VmafReport>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnDemandCancelResponse {
    pub ok: bool,
    /// Tokens handed back to the account.
    #[schema(value_type = f64)]
    pub released: Neu,
    /// The job's status after the request.
    #[schema(value_type = String)]
    pub status: JobStatus,
}

pub(crate) fn premium(state: &AppState, priority: Priority) -> Factor {
    match priority {
        Priority::Normal => state.config.pricing.ondemand.normal,
        Priority::High => state.config.pricing.ondemand.high,
    }
}

/// Probe, reserve at the on-demand premium and queue, in one call.
#[utoipa::path(post, path = "/ondemand/encode", tag = "ondemand", request_body = OnDemandEncodeRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry safely: the same key and body replay the first response; a different body is 409.")),
    security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = OnDemandEncodeResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 402, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 410, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn encode(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> AppResult<Response> {
    caller.require(Scope::JobsCreate)?;
    let req = request::parse_ondemand(&body).map_err(AppError::invalid_body)?;
    if req.output == OutputRequest::Dropbox {
        return Err(dropbox_gone("outputDropbox"));
    }
    // The webhook is a URL we will call: the same checks as a source (and again when the
    // callback is sent).
    let callback_url = match req.webhook.as_deref() {
        Some(url) => Some(
            state
                .outbound
                .vet(url)
                .await
                .map_err(|e| e.into_app(Purpose::Webhook))?
                .url
                .to_string(),
        ),
        None => None,
    };
    let state = &state;
    idempotency::run(
        state,
        caller.user_id,
        &headers,
        "POST /ondemand/encode",
        &body,
        |claim| async move {
            let factor = premium(state, req.priority);
            let mut output = req.output;
            if let OutputRequest::GoogleDrive(o) = &mut output {
                check_drive_output(state, o).await?;
            }
            let draft = Draft {
                spec: req.spec,
                source: SourceRequest::Url(req.source_url),
                original_filename: req.original_filename,
                external_id: req.external_id,
                metadata: req.metadata,
                confirm: true,
                kind: JobKind::OnDemand,
                priority: req.priority,
                price_factor: factor,
                output_expiry_secs: Some(req.output_expiry_secs),
                callback_url,
                status_token_hash: None,
                output,
                lenient_probe: false,
            };
            let new = jobs::prepare(state, caller.user_id, draft).await?;
            let job = &new.job;
            let base = state.config.pricing.per_minute(&job.spec);
            let response = OnDemandEncodeResponse {
                job_id: job.id.to_string(),
                external_id: job.external_id.clone(),
                metadata: job.metadata.clone(),
                source_filename: job.source_filename.clone(),
                output_filename: Some(job.output_filename.clone()),
                status: job.status,
                estimated_duration: job.duration_sec.unwrap_or(0.0).ceil() as i64,
                pricing: OnDemandPricing {
                    base_per_minute: base,
                    on_demand_per_minute: job.per_minute.unwrap_or(Neu::ZERO),
                    multiplier: factor,
                    total_neu: job.estimate.unwrap_or(Neu::ZERO),
                    reserved: new.reserve.unwrap_or(Neu::ZERO),
                },
                status_url: format!("{}/ondemand/status/{}", state.signer.base_url(), job.id),
                webhook: job.callback_url.clone(),
            };
            let saved = Saved::json(&response)?;
            jobs::insert(state, &[new], saved.with_claim(claim.as_ref()).as_ref()).await?;
            Ok(saved)
        },
    )
    .await
}

/// The contract keeps Dropbox fields only to answer them with 410.
pub(crate) fn dropbox_gone(field: &str) -> AppError {
    AppError::new(
        StatusCode::GONE,
        ErrorCode::DeprecatedDropbox,
        format!("Dropbox is no longer offered; leave {field} out (outputs can go to a download link, S3 or Google Drive)"),
    )
}

/// Checks, before anything is queued, that the Drive output folder exists and the token can
/// see it (renewing the token if Google asks, and keeping the renewed one for the job).
pub(crate) async fn check_drive_output(
    state: &AppState,
    o: &mut convertrilo_core::request::DriveOutput,
) -> AppResult<()> {
    let mut session = state.drive.session(o.tokens.clone());
    session
        .check_folder(&o.folder_id)
        .await
        .map_err(|e| crate::external::drive_request_error(e, "outputGoogleDrive"))?;
    if session.refreshed() {
        o.tokens = session.tokens().clone();
    }
    Ok(())
}

async fn owned(state: &AppState, caller: &Caller, id: convertrilo_core::JobId) -> AppResult<Job> {
    state
        .repos
        .jobs
        .job(id, Some(caller.user_id))
        .await?
        .ok_or_else(|| AppError::not_found(format!("no job with id {id}")))
}

pub fn status_of(state: &AppState, job: &Job) -> OnDemandStatusResponse {
    let link = download_link(state, job);
    let now = now_ms() / 1000;
    OnDemandStatusResponse {
        job_id: job.id.to_string(),
        external_id: job.external_id.clone(),
        metadata: job.metadata.clone(),
        source_filename: job.source_filename.clone(),
        output_filename: Some(job.output_filename.clone()),
        status: job.status,
        progress: job.pct.map(|p| (p * 10.0).round() / 10.0),
        encoder: job.encoder.clone(),
        expires_in: match (&link, job.status) {
            (Some((_, expires)), _) => Some(expires - now),
            (None, JobStatus::Success)
                if job.destination == convertrilo_core::external::Destination::Cdn =>
            {
                Some(0)
            }
            _ => None,
        },
        download_url: link.as_ref().map(|(url, _)| url.clone()),
        destination: (job.status == JobStatus::Success).then(|| Destination::of(&job.destination)),
        created_at: rfc3339(job.created_at),
        started_at: job.started_at.map(rfc3339),
        finished_at: job.finished_at.map(rfc3339),
        failure_message: match (job.status, &job.failure_message) {
            (JobStatus::Success, _)
                if link.is_none()
                    && job.destination == convertrilo_core::external::Destination::Cdn =>
            {
                Some(
                    "the output expired (its outputExpiry passed) and is no longer available"
                        .into(),
                )
            }
            (_, m) => m.clone(),
        },
        vmaf: job.vmaf.clone(),
    }
}

/// Progress, and the download link once done.
#[utoipa::path(get, path = "/ondemand/status/{jobId}", tag = "ondemand", params(("jobId" = String, Path)),
    security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = OnDemandStatusResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn status(
    State(state): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
) -> AppResult<Json<OnDemandStatusResponse>> {
    caller.require(Scope::JobsRead)?;
    let job = owned(&state, &caller, id).await?;
    Ok(Json(status_of(&state, &job)))
}

/// Cancel the job (a running encode is stopped) and release its tokens.
#[utoipa::path(delete, path = "/ondemand/{jobId}", tag = "ondemand", params(("jobId" = String, Path)),
    security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = OnDemandCancelResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
) -> AppResult<Json<OnDemandCancelResponse>> {
    caller.require(Scope::JobsCancel)?;
    let canceled = jobs::cancel(&state, id, caller.user_id).await?;
    let ended_before = canceled.previous.is_terminal();
    Ok(Json(OnDemandCancelResponse {
        ok: true,
        released: canceled.released,
        status: if ended_before {
            canceled.previous
        } else {
            JobStatus::Canceled
        },
    }))
}
