//! Job rules that sit between HTTP and the repositories: creating a job from a parsed
//! request, probing its input, pricing it and queueing it.

use crate::{
    http::error::{AppError, AppResult},
    outbound::Purpose,
    state::AppState,
};
use axum::http::StatusCode;
use convertrilo_core::{
    filename,
    neu::total_price,
    pricing::Factor,
    request::{JobCreate, SourceRequest},
    spec::{Optimize, Priority},
    time::now_ms,
    EncodeSpec, ErrorCode, JobId, JobStatus, Neu, UserId,
};
use convertrilo_db::{
    Enqueued, EstimateUpdate, IdempotentResponse, Ingest, Inserted, Job, JobKind, NewJob,
    Reservation,
};
use convertrilo_media::{choose_encoder, probe, MediaError, MediaInfo, ProcessError};
use serde_json::{Map, Value};
use std::time::Duration;

/// Checks that the spec can be served by this server, with a message that says what to change.
pub fn check_spec(state: &AppState, spec: &EncodeSpec) -> AppResult<()> {
    spec.check_combination().map_err(AppError::bad_request)?;
    if spec.optimize == Optimize::Vmaf {
        return Err(AppError::bad_request(
            "optimize: \"vmaf\" is not available on this server yet; send optimize \"none\" or leave it out",
        ));
    }
    choose_encoder(spec.codec, spec.policy, &state.caps).map_err(AppError::bad_request)?;
    Ok(())
}

/// The key a job's signed upload link names. Each upload is then stored under a key of its
/// own (see `routes::files`), so this one only identifies the job's upload slot.
pub fn upload_slot(id: JobId) -> String {
    format!("inputs/{id}/source")
}

/// The job a signed upload key names.
pub fn job_of_upload_slot(key: &str) -> Option<JobId> {
    let id: JobId = key
        .strip_prefix("inputs/")?
        .strip_suffix("/source")?
        .parse()
        .ok()?;
    (upload_slot(id) == key).then_some(id)
}

/// What a job is to be, on any surface, before it exists.
pub struct Draft {
    pub spec: EncodeSpec,
    pub source: SourceRequest,
    pub original_filename: Option<String>,
    pub external_id: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    /// Probe, price and queue now (a URL source), or as soon as the upload arrives.
    pub confirm: bool,
    pub kind: JobKind,
    pub priority: Priority,
    pub price_factor: Factor,
    pub output_expiry_secs: Option<i64>,
    pub callback_url: Option<String>,
    pub status_token_hash: Option<String>,
}

impl Draft {
    /// A `POST /jobs` (or bulk item) request.
    pub fn standard(req: JobCreate) -> Draft {
        Draft {
            spec: req.spec,
            source: req.source,
            original_filename: req.original_filename,
            external_id: req.external_id,
            metadata: req.metadata,
            confirm: req.confirm,
            kind: JobKind::Standard,
            priority: Priority::Normal,
            price_factor: Factor::ONE,
            output_expiry_secs: None,
            callback_url: None,
            status_token_hash: None,
        }
    }
}

/// Builds the job a draft describes, probing and pricing it first when it is to be queued
/// at once. Nothing is written: the caller inserts the result (with its idempotent
/// response, when there is one) in one transaction.
pub async fn prepare(state: &AppState, owner: UserId, d: Draft) -> AppResult<NewJob> {
    check_spec(state, &d.spec)?;
    let (ingest, source_url) = match &d.source {
        SourceRequest::Upload => (Ingest::Upload, None),
        // Scheme, host lists, one resolution and the address ranges; the HTTP checks come
        // with the probe (now when confirming, else later) and again at download time.
        SourceRequest::Url(url) => {
            let vetted = state
                .outbound
                .vet_source(url)
                .await
                .map_err(|e| e.into_app(Purpose::Source))?;
            (Ingest::Url, Some(vetted.url.to_string()))
        }
        SourceRequest::S3(_) => {
            return Err(AppError::bad_request(
                "sourceS3 ingest is not available on this server yet; give a sourceUrl, or leave the source out to upload the file",
            ))
        }
    };
    let source_filename = d
        .original_filename
        .as_deref()
        .and_then(filename::sanitize)
        .or_else(|| source_url.as_deref().and_then(filename::from_url));
    let id = JobId::new();
    let mut job = Job {
        id,
        user_id: owner,
        status: JobStatus::Created,
        output_filename: filename::output_name(source_filename.as_deref(), &d.spec),
        // No extension: approve/confirm may still change the container. Downloads take their
        // type and name from the signed file name.
        output_key: format!("outputs/{id}/output"),
        spec: d.spec,
        ingest,
        source_url,
        input_key: upload_slot(id),
        input_size: None,
        output_size: None,
        original_filename: d.original_filename,
        source_filename,
        external_id: d.external_id,
        metadata: d.metadata,
        duration_sec: None,
        output_duration_sec: None,
        media_info: None,
        per_minute: None,
        estimate: None,
        encoder: None,
        pct: None,
        failure_message: None,
        attempts: 0,
        auto_confirm: d.confirm && ingest == Ingest::Upload,
        created_at: now_ms(),
        queued_at: None,
        started_at: None,
        finished_at: None,
        kind: d.kind,
        priority: d.priority.queue_rank() + kind_rank(d.kind),
        price_factor: d.price_factor,
        output_expiry_secs: d.output_expiry_secs,
        callback_url: d.callback_url,
        status_token_hash: d.status_token_hash,
        output_purged_at: None,
    };
    let mut reserve = None;
    if d.confirm && ingest == Ingest::Url {
        // Probe and price before anything is written: a source that cannot be read is an
        // error for the request, and no job is left behind.
        let update = estimate(state, &job, &job.spec).await?;
        reserve = update.estimate.filter(|e| *e > Neu::ZERO);
        apply_estimate(&mut job, update);
        job.status = JobStatus::Queued;
        job.queued_at = Some(now_ms());
    }
    Ok(NewJob { job, reserve })
}

/// The largest source the job may upload or fetch.
pub fn source_limit(state: &AppState, job: &Job) -> u64 {
    match job.kind {
        JobKind::Public => state
            .config
            .public_max_source_bytes
            .min(state.config.max_upload_bytes),
        JobKind::Standard | JobKind::OnDemand => state.config.max_upload_bytes,
    }
}

/// Free public jobs wait behind paying ones.
fn kind_rank(kind: JobKind) -> i32 {
    match kind {
        JobKind::Public => -1,
        JobKind::Standard | JobKind::OnDemand => 0,
    }
}

fn apply_estimate(job: &mut Job, u: EstimateUpdate) {
    job.spec = u.spec;
    job.output_filename = u.output_filename;
    job.duration_sec = u.duration_sec;
    job.media_info = u.media_info;
    job.per_minute = u.per_minute;
    job.estimate = u.estimate;
}

/// Writes prepared jobs (and the idempotent response) in one transaction, waking a worker
/// when any is queued.
pub async fn insert(
    state: &AppState,
    batch: &[NewJob],
    idem: Option<&IdempotentResponse>,
) -> AppResult<()> {
    match state.repos.jobs.insert_jobs(batch, idem).await? {
        Inserted::Done => {
            if batch.iter().any(|n| n.job.status == JobStatus::Queued) {
                state.queue_wake.notify_one();
            }
            Ok(())
        }
        Inserted::Insufficient {
            required,
            available,
        } => Err(AppError::insufficient_tokens(required, available)),
        Inserted::KeyLost => Err(crate::idempotency::key_lost()),
    }
}

/// Makes a freshly stored object the source of a `created` upload job (replacing and
/// deleting an earlier upload), and queues the job when it was created with `confirm: true`.
/// When the job is no longer `created`, the object is deleted and the client told why.
pub async fn accept_upload(
    state: &AppState,
    id: JobId,
    object: &str,
    size: u64,
) -> AppResult<JobStatus> {
    let Some(previous) = state.repos.jobs.mark_uploaded(id, object, size).await? else {
        state.store.delete(object).await?;
        return Err(AppError::bad_request(
            "the job was confirmed or canceled during the upload; the bytes were not used",
        ));
    };
    if previous != object {
        // A re-upload replaces the earlier file (whose probe was forgotten with it).
        state.store.delete(&previous).await?;
    }
    let job = state
        .repos
        .jobs
        .job(id, None)
        .await?
        .ok_or_else(|| AppError::not_found("no such job"))?;
    if !job.auto_confirm {
        return Ok(JobStatus::Created);
    }
    // The bytes are kept either way: say so, or a client might upload them again.
    let queued = confirm(state, job, None).await.map_err(|e| AppError {
        message: format!(
            "the file was uploaded, but the job was not queued: {}",
            e.message
        ),
        ..e
    })?;
    Ok(queued.status)
}

/// The stored input's local path, once it has been uploaded.
fn upload_location(state: &AppState, job: &Job) -> AppResult<String> {
    if job.input_size.is_none() {
        return Err(AppError::bad_request(
            "the source has not been uploaded yet: PUT the file to the job's upload.url first",
        ));
    }
    state
        .store
        .local_path(&job.input_key)
        .map(|p| p.to_string_lossy().into_owned())
        .ok_or_else(|| AppError::internal("object store has no local path"))
}

/// Probes the job's input. A file that is not a readable video is the client's problem
/// (`422 probe_failed`); a broken toolchain is ours.
///
/// A URL source is checked first (vetted, fetched through the guarded client, its status,
/// type and size checked), then ffprobe reads it through the loopback probe proxy, never
/// from the customer's URL: see `crate::outbound`.
pub async fn probe_input(state: &AppState, job: &Job) -> AppResult<MediaInfo> {
    let timeout = Duration::from_secs(state.config.probe_timeout_secs);
    let result = match job.ingest {
        Ingest::Upload => probe(&state.tools, &upload_location(state, job)?, timeout).await,
        Ingest::Url => {
            let url = job
                .source_url
                .as_deref()
                .ok_or_else(|| AppError::internal("url job without url"))?;
            let limit = source_limit(state, job);
            let (first, response) = state
                .outbound
                .open_source(url, limit)
                .await
                .map_err(|e| e.into_app(Purpose::Source))?;
            // Only the headers were wanted; ffprobe reads what it needs through the proxy.
            drop(response);
            // The ticket lives a little longer than ffprobe may, and closes with this scope.
            let ticket = state
                .probe_proxy
                .open(first, limit, timeout + Duration::from_secs(5));
            let result = probe(&state.tools, ticket.url(), timeout).await;
            if result.is_err() {
                if let Some(refusal) = ticket.refusal() {
                    return Err(refusal.into_app(Purpose::Source));
                }
            }
            result
        }
    };
    result.map_err(|e| match e {
        MediaError::NotAVideo(msg) => AppError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::ProbeFailed,
            msg,
        ),
        // A missing ffprobe or a missing stored object is ours to fix.
        MediaError::Process(ProcessError::Spawn { .. }) | MediaError::Io(_) => {
            AppError::internal(e)
        }
        // Anything else went wrong reading the source (unreachable or hanging host, an
        // unreadable file): the client can act on it.
        other => AppError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::ProbeFailed,
            format!("could not read the source: {}", other.user_message()),
        ),
    })
}

/// Probe results (reusing a stored probe when there is one) plus the price for `spec`.
pub async fn estimate(state: &AppState, job: &Job, spec: &EncodeSpec) -> AppResult<EstimateUpdate> {
    let (duration, info) = match (&job.media_info, job.duration_sec) {
        (Some(info), Some(d)) => (d, info.clone()),
        _ => {
            let info = probe_input(state, job).await?;
            let d = info.duration_sec.unwrap_or(0.0);
            (d, serde_json::to_value(&info).map_err(AppError::internal)?)
        }
    };
    if job.kind == JobKind::Public && duration > state.config.public_max_duration_secs as f64 {
        return Err(AppError::bad_request(format!(
            "the source is {duration:.1} s long; public jobs take at most {} s",
            state.config.public_max_duration_secs
        )));
    }
    let per_minute = state
        .config
        .pricing
        .per_minute_times(spec, job.price_factor);
    Ok(EstimateUpdate {
        spec: spec.clone(),
        output_filename: filename::output_name(job.source_filename.as_deref(), spec),
        duration_sec: Some(duration),
        media_info: Some(info),
        per_minute: Some(per_minute),
        estimate: Some(total_price(per_minute, duration)),
    })
}

/// Reserves the job's estimate (topping up what it already holds), as approve does.
pub async fn reserve_estimate(state: &AppState, job: &Job, estimate: Neu) -> AppResult<Neu> {
    match state
        .repos
        .ledger
        .reserve_for_job(job.user_id, job.id, estimate)
        .await?
    {
        Reservation::Reserved { held, .. } => Ok(held),
        Reservation::Insufficient {
            required,
            available,
        } => Err(AppError::insufficient_tokens(required, available)),
        Reservation::Finished(status) => Err(AppError::bad_request(format!(
            "the job is {status}; nothing can be reserved for it"
        ))),
    }
}

/// Queues a `created` job. A failed probe does not stop it: the worker probes again and
/// fails the job with a message the user can act on.
pub async fn confirm(state: &AppState, job: Job, spec: Option<EncodeSpec>) -> AppResult<Job> {
    let update = confirm_update(state, &job, spec).await?;
    enqueue(state, &job, update).await
}

/// What confirming `job` (with `spec`, else its own) writes: checks, probe and price.
pub async fn confirm_update(
    state: &AppState,
    job: &Job,
    spec: Option<EncodeSpec>,
) -> AppResult<EstimateUpdate> {
    let spec = spec.unwrap_or_else(|| job.spec.clone());
    check_spec(state, &spec)?;
    if job.ingest == Ingest::Upload && job.input_size.is_none() {
        return Err(AppError::bad_request("the source has not been uploaded yet: PUT the file to the job's upload.url, then confirm"));
    }
    match estimate(state, job, &spec).await {
        Ok(u) => Ok(u),
        // A public job is free: it is only queued once its source is known to be in limits.
        Err(e) if e.code == ErrorCode::ProbeFailed && job.kind != JobKind::Public => {
            tracing::info!(job = %job.id, reason = %e.message, "queueing a job whose probe failed; the worker will report it");
            let output_filename = filename::output_name(job.source_filename.as_deref(), &spec);
            Ok(EstimateUpdate {
                spec,
                output_filename,
                duration_sec: None,
                media_info: None,
                per_minute: None,
                estimate: None,
            })
        }
        Err(e) => Err(e),
    }
}

/// `created` → `queued` with the estimate reserved, waking a worker.
async fn enqueue(state: &AppState, job: &Job, update: EstimateUpdate) -> AppResult<Job> {
    match state
        .repos
        .jobs
        .enqueue(job.id, Some(&update), job.priority, update.estimate)
        .await?
    {
        Enqueued::Queued(queued) => {
            state.queue_wake.notify_one();
            Ok(queued)
        }
        Enqueued::Insufficient {
            required,
            available,
        } => Err(AppError::insufficient_tokens(required, available)),
        // Lost a race with another confirm or a cancel: report the job as it is now.
        Enqueued::NotCreated => state
            .repos
            .jobs
            .job(job.id, None)
            .await?
            .ok_or_else(|| AppError::not_found("no such job")),
    }
}
