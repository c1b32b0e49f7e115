//! Job rules that sit between HTTP and the repositories: creating a job from a parsed
//! request (see `create`), probing its input (an S3 source through a presigned link), pricing
//! it and queueing it.

mod create;

pub use create::{check_customer_endpoint, prepare, source_limit, Draft};

use crate::{
    http::error::{AppError, AppResult},
    outbound::Purpose,
    state::AppState,
};
use axum::http::StatusCode;
use convertrilo_core::{
    external::{JobSecrets, SourceRef},
    filename,
    neu::total_price,
    pricing::Factor,
    request::SourceRequest,
    spec::{Optimize, Priority},
    time::now_ms,
    EncodeSpec, ErrorCode, JobId, JobStatus, Neu, UserId,
};
use convertrilo_db::{
    Enqueued, EstimateUpdate, IdempotentResponse, Ingest, Inserted, Job, JobKind, NewJob,
    Reservation,
};
use convertrilo_media::{probe, MediaError, MediaInfo, ProcessError};
use serde_json::{Map, Value};
use std::time::Duration;

/// Checks that the spec is valid, with a message that says what to change. Whether some
/// worker can run it (a GPU for `gpu_only`) is not this process's to judge: workers may run
/// on other machines. A job no live worker can run fails shortly after it is queued
/// (see `queue_watch`).
pub fn check_spec(_state: &AppState, spec: &EncodeSpec) -> AppResult<()> {
    // Cross-field rules, among them that optimize vmaf is a 1-pass encode.
    spec.check_combination().map_err(AppError::bad_request)?;
    // A target without the search would be ignored without a word (and a client that meant
    // it would pay for an ordinary encode): say so instead. Checked here, on requests, rather
    // than in `check_combination`, so a job stored before this rule still runs.
    if spec.vmaf_target.is_some() && spec.optimize != Optimize::Vmaf {
        return Err(AppError::bad_request(
            "vmafTarget is used only with optimize \"vmaf\": add \"optimize\": \"vmaf\" to encode to that quality (the search is priced by the optimize factor), or leave vmafTarget out",
        ));
    }
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

/// Writes prepared jobs (and the idempotent response) in one transaction, waking a worker
/// when any is queued.
pub async fn insert(
    state: &AppState,
    batch: &[NewJob],
    idem: Option<&IdempotentResponse>,
) -> AppResult<()> {
    match state.repos.jobs.insert_jobs(batch, idem).await? {
        // The repository announces queued jobs to idle workers itself.
        Inserted::Done => Ok(()),
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

/// Where ffprobe can read the job's input, once there is one. An S3 object is read through
/// a presigned GET link that outlives the probe by a minute; `secrets` are the job's
/// (read from the database when not given).
async fn input_location(
    state: &AppState,
    job: &Job,
    secrets: Option<&JobSecrets>,
) -> AppResult<String> {
    match job.ingest {
        Ingest::Url => Err(AppError::internal(
            "URL sources are probed through the probe proxy",
        )),
        Ingest::Upload if job.input_size.is_none() => Err(AppError::bad_request(
            "the source has not been uploaded yet: PUT the file to the job's upload.url first",
        )),
        // A local store's file is read in place; a remote store's through a presigned link.
        Ingest::Upload => match state.store.local_path(&job.input_key) {
            Some(p) => Ok(p.to_string_lossy().into_owned()),
            None => {
                let ttl = Duration::from_secs(state.config.probe_timeout_secs + 60);
                state
                    .store
                    .presign_get(&job.input_key, ttl, None)
                    .map(|u| u.to_string())
                    .ok_or_else(|| AppError::internal("the object store cannot be read"))
            }
        },
        Ingest::S3 => {
            let Some(SourceRef::S3(object)) = &job.source_ref else {
                return Err(AppError::internal("s3 job without its object"));
            };
            let stored;
            let secrets = match secrets {
                Some(s) => s,
                None => {
                    stored = load_secrets(state, job).await?;
                    &stored
                }
            };
            let bucket =
                crate::external::s3_bucket(state, &object.bucket, secrets.source_s3.as_ref())?;
            let ttl = Duration::from_secs(state.config.probe_timeout_secs + 60);
            Ok(bucket.presign_get(&object.key, ttl).to_string())
        }
        Ingest::GoogleDrive => Err(AppError::bad_request(
            "a Google Drive source is probed when the worker downloads it; its duration shows in the job's status once it runs",
        )),
    }
}

/// The job's credentials (none when it never had any, or has ended).
pub async fn load_secrets(state: &AppState, job: &Job) -> AppResult<JobSecrets> {
    match state.repos.jobs.job_secret(job.id).await? {
        None => Ok(JobSecrets::default()),
        Some(blob) => state
            .secrets
            .open(job.id, &blob)
            .map_err(|e| AppError::bad_request(e.to_string())),
    }
}

/// Probes the job's input. A file that is not a readable video is the client's problem
/// (`422 probe_failed`); a broken toolchain is ours.
///
/// A URL source is checked first (vetted, fetched through the guarded client, its status,
/// type and size checked), then ffprobe reads it through the loopback probe proxy, never
/// from the customer's URL: see `crate::outbound`. An S3 object is read through a presigned
/// link that no message shows.
pub async fn probe_input(
    state: &AppState,
    job: &Job,
    secrets: Option<&JobSecrets>,
) -> AppResult<MediaInfo> {
    let timeout = Duration::from_secs(state.config.probe_timeout_secs);
    let (result, location) = match job.ingest {
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
            (result, None)
        }
        _ => {
            let location = input_location(state, job, secrets).await?;
            (
                probe(&state.tools, &location, timeout).await,
                Some(location),
            )
        }
    };
    // A presigned link is a credential: keep it out of anything shown.
    let hide = |m: String| match &location {
        Some(l) if l.contains("X-Amz-") => m.replace(l.as_str(), "the S3 object"),
        _ => m,
    };
    result.map_err(|e| match e {
        MediaError::NotAVideo(msg) => AppError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::ProbeFailed,
            hide(msg),
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
            hide(format!(
                "could not read the source: {}",
                other.user_message()
            )),
        ),
    })
}

/// Probe results (reusing a stored probe when there is one) plus the price for `spec`.
pub async fn estimate(state: &AppState, job: &Job, spec: &EncodeSpec) -> AppResult<EstimateUpdate> {
    estimate_with(state, job, spec, None).await
}

/// [`estimate`] with the job's credentials at hand (a job not yet written has none stored).
async fn estimate_with(
    state: &AppState,
    job: &Job,
    spec: &EncodeSpec,
    secrets: Option<&JobSecrets>,
) -> AppResult<EstimateUpdate> {
    // An upload made straight to an S3 store is found here (probe and approve come here).
    let job = &crate::ownstore::discover_upload(state, job).await?;
    let (duration, info) = match (&job.media_info, job.duration_sec) {
        (Some(info), Some(d)) => (d, info.clone()),
        _ => {
            let info = probe_input(state, job, secrets).await?;
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
    let job = &crate::ownstore::discover_upload(state, job).await?;
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
        Enqueued::Queued(queued) => Ok(queued),
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

/// Confirms a job on request: a `created` job is queued; confirming one already on its way
/// is harmless and reports it as it is; an ended one cannot be confirmed again.
pub async fn confirm_request(state: &AppState, job: Job, spec: EncodeSpec) -> AppResult<Job> {
    match job.status {
        JobStatus::Created => confirm(state, job, Some(spec)).await,
        JobStatus::Queued | JobStatus::Running | JobStatus::Success => Ok(job),
        JobStatus::Failed | JobStatus::Canceled => Err(AppError::bad_request(format!(
            "the job is {}; create a new job to encode this source",
            job.status
        ))),
    }
}

/// Cancels a job of `owner` that has not ended (releasing its tokens) and stops its encode
/// here at once; a worker in another process notices at its next heartbeat. `None` when
/// there is no such job.
pub async fn cancel(
    state: &AppState,
    id: JobId,
    owner: UserId,
) -> AppResult<convertrilo_db::Canceled> {
    let canceled = state
        .repos
        .jobs
        .cancel(id, owner)
        .await?
        .ok_or_else(|| AppError::not_found(format!("no job with id {id}")))?;
    if !canceled.previous.is_terminal() {
        state.running.cancel(id);
    }
    Ok(canceled)
}
