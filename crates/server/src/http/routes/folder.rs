//! `POST /ondemand/ingest/folder`: crawl the caller's S3 prefix or Google Drive folder and
//! queue one on-demand job per video file, all in one transaction with the idempotent
//! response.
//!
//! Pricing: S3 objects are probed through presigned GET links, a few at a time, and reserved
//! at their real price like any on-demand job. Drive files are not downloaded here (probing
//! each would mean downloading each, which would make a large folder's request as slow as its
//! transfer): they are reserved from the duration Google reports for them when it has one,
//! and the worker, which downloads and probes the file anyway, holds the exact price before it
//! encodes (failing the job uncharged when the account cannot cover it).

use super::ondemand::{check_drive_output, dropbox_gone, premium};
use crate::{
    external::folder::{crawl_drive, crawl_s3, Crawl},
    http::{
        auth::Caller,
        error::{AppError, AppResult, ErrorBody},
        extract::JsonBody,
    },
    idempotency::{self, Saved},
    jobs::{self, check_spec, Draft},
    state::AppState,
};
use axum::{
    extract::State, http::HeaderMap, http::StatusCode, response::Response, routing::post, Router,
};
use convertrilo_core::{
    external::Destination as Dest,
    request::{self, FolderSource, OutputRequest, OUTPUT_EXPIRY_DEFAULT},
    spec::{BitrateTier, Codec, Container, Optimize, Preset, Priority, Quality, Resolution},
    ErrorCode, Scope,
};
use convertrilo_db::{JobKind, NewJob};
use futures::{stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashSet;
use utoipa::ToSchema;

/// Sources probed at once while preparing a folder.
const PROBES_AT_ONCE: usize = 8;

pub fn router() -> Router<AppState> {
    Router::new().route("/ondemand/ingest/folder", post(ingest))
}

/// Where folder outputs go.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
#[allow(dead_code)]
pub enum OutputDestination {
    Cdn,
    S3,
    GoogleDrive,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // documents the body; parsing is done by convertrilo_core::request
pub struct OnDemandFolderIngestRequest {
    /// Each job's externalId is `${externalIdPrefix}:${fileName}`.
    #[schema(max_length = 200)]
    pub external_id_prefix: Option<String>,
    /// Attached to every job.
    pub metadata: Option<Map<String, Value>>,
    pub codec: Option<Codec>,
    pub resolution: Option<Resolution>,
    #[schema(minimum = 1, maximum = 120)]
    pub fps: Option<i64>,
    pub preset: Option<Preset>,
    pub bitrate_tier: Option<BitrateTier>,
    #[schema(minimum = 1, maximum = 2)]
    pub passes: Option<i64>,
    pub optimize: Option<Optimize>,
    #[schema(minimum = 50, maximum = 99)]
    pub vmaf_target: Option<i64>,
    pub container: Option<Container>,
    pub quality: Option<Quality>,
    pub priority: Option<Priority>,
    /// Queue at most this many of the videos found (in key or name order).
    #[schema(minimum = 1, maximum = 1000)]
    pub max_files: Option<i64>,
    pub source_s3: Option<super::storage_docs::S3FolderSource>,
    pub source_google_drive: Option<super::storage_docs::GoogleDriveFolderSource>,
    /// Deprecated: answered with 410.
    pub source_dropbox: Option<Map<String, Value>>,
    /// Default `cdn`, or the one output object given.
    pub output_destination: Option<OutputDestination>,
    pub output_s3: Option<super::storage_docs::S3FolderOutput>,
    pub output_google_drive: Option<super::storage_docs::GoogleDriveOutput>,
    /// Deprecated: answered with 410.
    pub output_dropbox: Option<Map<String, Value>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FolderJob {
    pub job_id: String,
    pub external_id: Option<String>,
    pub file_name: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnDemandFolderIngestResponse {
    pub message: String,
    pub jobs: Vec<FolderJob>,
}

/// Crawl a folder and queue one job per video.
#[utoipa::path(post, path = "/ondemand/ingest/folder", tag = "ondemand", request_body = OnDemandFolderIngestRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry safely: the same key and body replay the first response; a different body is 409.")),
    security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = OnDemandFolderIngestResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 402, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 410, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn ingest(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> AppResult<Response> {
    caller.require(Scope::JobsCreate)?;
    let req = request::parse_folder_ingest(&body).map_err(AppError::invalid_body)?;
    if req.source == FolderSource::Dropbox {
        return Err(dropbox_gone("sourceDropbox"));
    }
    if req.output == OutputRequest::Dropbox {
        return Err(dropbox_gone("outputDropbox"));
    }
    // The same settings serve every file: a spec this server cannot encode fails at once.
    check_spec(&state, &req.spec)?;
    let state = &state;
    let owner = caller.user_id;
    idempotency::run(
        state,
        owner,
        &headers,
        "POST /ondemand/ingest/folder",
        &body,
        |claim| async move {
            let mut output = req.output;
            if let OutputRequest::GoogleDrive(o) = &mut output {
                check_drive_output(state, o).await?;
            }
            let (crawl, from) = match &req.source {
                FolderSource::S3(src) => (
                    crawl_s3(state, src, req.max_files).await?,
                    format!("s3://{}/{}", src.bucket.bucket, src.prefix),
                ),
                FolderSource::GoogleDrive(src) => {
                    let mut session = state.drive.session(src.tokens.clone());
                    let crawl = crawl_drive(state, &mut session, &src.folder_id, req.max_files).await?;
                    (crawl, format!("Google Drive folder {}", src.folder_id))
                }
                FolderSource::Dropbox => return Err(dropbox_gone("sourceDropbox")),
            };
            let Crawl { found, skipped } = crawl;
            // A file over the size limit is left out (and named) rather than sinking the rest.
            let limit = state.config.max_upload_bytes;
            let (found, too_large): (Vec<_>, Vec<_>) =
                found.into_iter().partition(|f| f.size.is_none_or(|s| s <= limit));
            let too_large = if too_large.is_empty() {
                String::new()
            } else {
                let names: Vec<&str> = too_large.iter().map(|f| f.file_name.as_str()).collect();
                format!(
                    "; left out {} larger than this server's limit of {limit} bytes: {}",
                    names.len(),
                    names.join(", ")
                )
            };
            if found.is_empty() && !too_large.is_empty() {
                return Err(AppError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::FileTooLarge,
                    format!("no video in {from} fits{too_large}"),
                ));
            }
            if found.is_empty() {
                return Err(AppError::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::NoVideoFilesFound,
                    format!(
                        "no video files in {from} ({skipped} other entries passed over); videos are recognised by file extension on S3 and by MIME type on Google Drive"
                    ),
                ));
            }
            let factor = premium(state, req.priority);
            // externalIds keep the limit every job surface has.
            if let (Some(p), Some(f)) = (&req.external_id_prefix, found.iter().find(|f| {
                req.external_id_prefix.as_ref().is_some_and(|p| p.chars().count() + 1 + f.file_name.chars().count() > 255)
            })) {
                return Err(AppError::bad_request(format!(
                    "externalIdPrefix is too long for the file {:?}: `{p}:{}` would be over 255 characters; use a shorter prefix",
                    f.file_name, f.file_name
                )));
            }
            let drafts = found.into_iter().map(|f| {
                let external_id = req
                    .external_id_prefix
                    .as_ref()
                    .map(|p| format!("{p}:{}", f.file_name));
                Draft {
                    spec: req.spec.clone(),
                    source: f.source,
                    original_filename: Some(f.file_name),
                    external_id,
                    metadata: req.metadata.clone(),
                    confirm: true,
                    kind: JobKind::OnDemand,
                    priority: req.priority,
                    price_factor: factor,
                    output_expiry_secs: Some(OUTPUT_EXPIRY_DEFAULT),
                    callback_url: None,
                    status_token_hash: None,
                    output: output.clone(),
                    lenient_probe: true,
                }
            });
            let prepared: Vec<AppResult<NewJob>> = stream::iter(drafts.map(|d| jobs::prepare(state, owner, d)))
                .buffered(PROBES_AT_ONCE)
                .collect()
                .await;
            let mut batch = Vec::with_capacity(prepared.len());
            for p in prepared {
                batch.push(p?);
            }
            distinct_keys(&mut batch);
            let response = OnDemandFolderIngestResponse {
                message: format!(
                    "queued {} video file{} from {from}{}{too_large}",
                    batch.len(),
                    if batch.len() == 1 { "" } else { "s" },
                    if skipped > 0 {
                        format!("; {skipped} other entries passed over")
                    } else {
                        String::new()
                    }
                ),
                jobs: batch
                    .iter()
                    .map(|n| FolderJob {
                        job_id: n.job.id.to_string(),
                        external_id: n.job.external_id.clone(),
                        file_name: n.job.original_filename.clone().unwrap_or_default(),
                    })
                    .collect(),
            };
            let saved = Saved::json(&response)?;
            jobs::insert(state, &batch, saved.with_claim(claim.as_ref()).as_ref()).await?;
            Ok(saved)
        },
    )
    .await
}

/// Two sources of one name (a Drive folder allows that) would write one S3 key twice: the
/// later ones get `-2`, `-3`, … before the extension.
fn distinct_keys(batch: &mut [NewJob]) {
    let mut taken = HashSet::new();
    for n in batch.iter_mut() {
        let Dest::S3(object) = &mut n.job.destination else {
            continue;
        };
        let original = object.key.clone();
        let (stem, ext) = match original.rsplit_once('.') {
            Some((s, e)) if !s.ends_with('/') => (s.to_string(), format!(".{e}")),
            _ => (original.clone(), String::new()),
        };
        let mut i = 1;
        while !taken.insert(object.key.clone()) {
            i += 1;
            object.key = format!("{stem}-{i}{ext}");
        }
        if object.key != original {
            n.job.output_filename = object.key.rsplit('/').next().unwrap_or("").to_string();
        }
    }
}
