//! Creating a job from a parsed request: its source (an upload, a URL, an S3 object or a
//! Drive file), its destination (kept here, an S3 bucket or a Drive folder), its probe and
//! price when it is queued at once, and its credentials, sealed to travel with it.

use super::*;
use convertrilo_core::{
    external::{Destination, S3ObjectRef},
    request::{JobCreate, OutputRequest, S3Naming},
};

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
    /// Where the output goes (never `Dropbox`: that is answered with 410 before).
    pub output: OutputRequest,
    /// Queue even when the probe fails (the worker then reports why), instead of refusing
    /// the request: one unreadable file must not sink a whole folder.
    pub lenient_probe: bool,
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
            output: OutputRequest::Cdn,
            lenient_probe: false,
        }
    }
}

/// The check every customer-supplied storage endpoint goes through when a client for it is
/// made: an http(s) URL with a host, passing the outbound rules that need no lookup (host
/// lists, `localhost` names, literal private or metadata addresses). At request time
/// [`vet_endpoint`] also resolves the name and checks every address.
pub fn check_customer_endpoint(state: &AppState, url: &reqwest::Url) -> AppResult<()> {
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidUrl,
            "the endpoint must be an http:// or https:// URL with a host",
        ));
    }
    state
        .outbound
        .check_without_lookup(url)
        .map_err(|e| e.into_app(Purpose::Source))
}

/// Resolves a customer's S3 endpoint (when one was given) and checks every address, like a
/// source URL.
pub async fn vet_endpoint(state: &AppState, endpoint: Option<&str>) -> AppResult<()> {
    match endpoint {
        Some(e) => state
            .outbound
            .vet(e)
            .await
            .map(drop)
            .map_err(|e| e.into_app(Purpose::Source)),
        None => Ok(()),
    }
}

/// Builds the job a draft describes, probing and pricing it first when it is to be queued
/// at once. Nothing is written: the caller inserts the result (with its idempotent
/// response, when there is one) in one transaction.
pub async fn prepare(state: &AppState, owner: UserId, d: Draft) -> AppResult<NewJob> {
    check_spec(state, &d.spec)?;
    let mut secrets = JobSecrets::default();
    let limit = kind_limit(state, d.kind);
    let (ingest, source_url, source_ref, hint) = match &d.source {
        SourceRequest::Upload => (Ingest::Upload, None, None, None),
        // Scheme, host lists, one resolution and the address ranges; the HTTP checks come
        // with the probe (now when confirming, else later) and again at download time.
        SourceRequest::Url(url) => {
            let vetted = state
                .outbound
                .vet_source(url)
                .await
                .map_err(|e| e.into_app(Purpose::Source))?;
            (Ingest::Url, Some(vetted.url.to_string()), None, None)
        }
        SourceRequest::S3(s3) => {
            vet_endpoint(state, s3.object.bucket.endpoint.as_deref()).await?;
            // A missing object or refused credentials are this request's problem: say so now.
            crate::external::head_s3_source(state, s3, limit).await?;
            secrets.source_s3 = s3.keys.clone();
            let source = SourceRef::S3(s3.object.clone());
            (Ingest::S3, None, Some(source), None)
        }
        SourceRequest::GoogleDrive(file) => {
            secrets.source_drive = Some(file.tokens.clone());
            let source = SourceRef::GoogleDrive {
                file_id: file.file_id.clone(),
                name: file.name.clone(),
            };
            (Ingest::GoogleDrive, None, Some(source), file.duration_sec)
        }
    };
    let source_filename = d
        .original_filename
        .as_deref()
        .and_then(filename::sanitize)
        .or_else(|| source_url.as_deref().and_then(filename::from_url))
        .or_else(|| match &source_ref {
            Some(SourceRef::S3(o)) => filename::sanitize(&o.key),
            Some(SourceRef::GoogleDrive { name, .. }) => filename::sanitize(name),
            None => None,
        });
    match &d.output {
        OutputRequest::Cdn | OutputRequest::Dropbox => {}
        OutputRequest::S3(o) => {
            vet_endpoint(state, o.bucket.endpoint.as_deref()).await?;
            // Signing needs a valid location; the endpoint is checked like any other.
            crate::external::s3_bucket(state, &o.bucket, o.keys.as_ref())?;
            secrets.output_s3 = o.keys.clone();
        }
        OutputRequest::GoogleDrive(o) => secrets.output_drive = Some(o.tokens.clone()),
    }
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
        // Only an output kept here expires here.
        output_expiry_secs: d
            .output_expiry_secs
            .filter(|_| matches!(d.output, OutputRequest::Cdn)),
        callback_url: d.callback_url,
        status_token_hash: d.status_token_hash,
        output_purged_at: None,
        source_ref,
        destination: Destination::Cdn,
        vmaf: None,
    };
    let mut reserve = None;
    if d.confirm && ingest != Ingest::Upload {
        // Probe and price before anything is written: a source that cannot be read is an
        // error for the request, and no job is left behind.
        let update = if ingest == Ingest::GoogleDrive {
            // Reading a Drive file takes its download; the worker probes it and holds the
            // real price before encoding. Google's own duration, when it has one, prices it
            // meanwhile.
            unprobed_update(state, &job, hint)
        } else {
            match estimate_with(state, &job, &job.spec, Some(&secrets)).await {
                Ok(u) => u,
                Err(e) if e.code == ErrorCode::ProbeFailed && d.lenient_probe => {
                    tracing::info!(job = %job.id, reason = %e.message, "queueing a job whose probe failed; the worker will report it");
                    unprobed_update(state, &job, None)
                }
                Err(e) => return Err(e),
            }
        };
        reserve = update.estimate.filter(|e| *e > Neu::ZERO);
        apply_estimate(&mut job, update);
        job.status = JobStatus::Queued;
        job.queued_at = Some(now_ms());
    }
    // The output's place, now that its file name is final.
    job.destination = match d.output {
        OutputRequest::Cdn | OutputRequest::Dropbox => Destination::Cdn,
        OutputRequest::S3(o) => {
            let key = match o.naming {
                S3Naming::Key(k) => k,
                S3Naming::Prefix(p) => format!("{p}{}", job.output_filename),
            };
            job.output_filename = key.rsplit('/').next().unwrap_or(&key).to_string();
            Destination::S3(S3ObjectRef {
                bucket: o.bucket,
                key,
            })
        }
        OutputRequest::GoogleDrive(o) => {
            let file_name = o.file_name.unwrap_or_else(|| job.output_filename.clone());
            job.output_filename = file_name.clone();
            Destination::GoogleDrive {
                folder_id: o.folder_id,
                file_name,
            }
        }
    };
    let secret = (!secrets.is_empty()).then(|| state.secrets.seal(id, &secrets));
    Ok(NewJob {
        job,
        reserve,
        secret,
    })
}

/// The estimate of a job queued without a probe: from `duration` when known, else none
/// (the worker prices what it downloads).
fn unprobed_update(state: &AppState, job: &Job, duration: Option<f64>) -> EstimateUpdate {
    let per_minute = state
        .config
        .pricing
        .per_minute_times(&job.spec, job.price_factor);
    EstimateUpdate {
        spec: job.spec.clone(),
        output_filename: filename::output_name(job.source_filename.as_deref(), &job.spec),
        duration_sec: duration,
        media_info: None,
        per_minute: duration.map(|_| per_minute),
        estimate: duration.map(|d| total_price(per_minute, d)),
    }
}

/// The largest source the job may upload or fetch.
pub fn source_limit(state: &AppState, job: &Job) -> u64 {
    kind_limit(state, job.kind)
}

fn kind_limit(state: &AppState, kind: JobKind) -> u64 {
    match kind {
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
