//! `/jobs/{id}/stream/…`: a source sent in numbered parts, S3 multipart style, for clients
//! that cannot send one long request. `init` opens a stream (discarding an earlier one's
//! parts), each `chunk/{index}` (1–10000) stores one part and answers its ETag (the MD5 of its
//! bytes; a retry overwrites the part, order does not matter), `finalize` joins the parts in
//! part order (checking the ETags it is given) into the job's source, and `abort` deletes them.
//! Parts stream to the object store and are joined by streaming, so memory stays flat
//! whatever the size.

use crate::{
    http::{
        auth::Caller,
        error::{AppError, AppResult, ErrorBody},
        extract::{JobPath, JsonBody},
    },
    jobs,
    state::AppState,
};
use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
    routing::{post, put},
    Json, Router,
};
use convertrilo_core::{JobId, JobStatus, Scope, WireEnum};
use convertrilo_db::{Ingest, Job};
use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};
use utoipa::ToSchema;

pub const MAX_PART: u32 = 10_000;

/// Jobs whose stream is being joined in this process: a second finalize meanwhile (a client
/// retrying after a timeout) is told so instead of joining, or deleting, the same parts.
static FINALIZING: std::sync::LazyLock<Mutex<std::collections::HashSet<JobId>>> =
    std::sync::LazyLock::new(Default::default);

/// Holds a job's place in [`FINALIZING`] until dropped.
struct Finalizing(JobId);

impl Finalizing {
    fn start(id: JobId) -> AppResult<Finalizing> {
        // A std mutex: inserting and removing one id, never held across an await.
        let fresh = FINALIZING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
        if fresh {
            Ok(Finalizing(id))
        } else {
            Err(AppError::new(
                axum::http::StatusCode::CONFLICT,
                convertrilo_core::ErrorCode::InvalidRequest,
                "this stream is already being finalized; wait for that request's answer (the job's status shows the outcome)",
            ))
        }
    }
}

impl Drop for Finalizing {
    fn drop(&mut self) {
        FINALIZING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.0);
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/jobs/{id}/stream/init", post(init))
        .route("/jobs/{id}/stream/chunk/{index}", put(chunk))
        .route("/jobs/{id}/stream/finalize", post(finalize))
        .route("/jobs/{id}/stream/abort", post(abort))
}

/// Where a job's stream keeps its parts: `p00001` (bytes), `e00001` (ETag), `session`.
pub fn stream_prefix(id: JobId) -> String {
    format!("inputs/{id}/stream")
}

fn session_key(id: JobId) -> String {
    format!("{}/session", stream_prefix(id))
}

fn part_key(id: JobId, index: u32) -> String {
    format!("{}/p{index:05}", stream_prefix(id))
}

fn etag_key(id: JobId, index: u32) -> String {
    format!("{}/e{index:05}", stream_prefix(id))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamInitResponse {
    pub ok: bool,
    pub upload_id: String,
    /// The object the joined source will be stored under.
    pub input_key: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamChunkResponse {
    pub ok: bool,
    pub part_number: u32,
    /// Quoted MD5 of the part's bytes, as S3 gives it; send it back in `finalize`.
    pub etag: String,
    pub size: u64,
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the body; it is read by `parse_parts`
pub struct StreamPart {
    #[serde(rename = "PartNumber")]
    pub part_number: u32,
    #[serde(rename = "ETag")]
    pub etag: String,
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct StreamFinalizeRequest {
    /// Ascending by `PartNumber`; without it every uploaded part is joined in order.
    pub parts: Option<Vec<StreamPart>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamFinalizeResponse {
    pub ok: bool,
    pub input_key: String,
    pub size: u64,
    pub parts: usize,
    /// `created`, or `queued` for a job created with `confirm: true`.
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct StreamAbortResponse {
    pub ok: bool,
    /// Parts deleted.
    pub deleted: usize,
}

async fn streamable_job(state: &AppState, caller: &Caller, id: JobId) -> AppResult<Job> {
    let job = state
        .repos
        .jobs
        .job(id, Some(caller.user_id))
        .await?
        .ok_or_else(|| AppError::not_found(format!("no job with id {id}")))?;
    if job.ingest != Ingest::Upload {
        return Err(AppError::bad_request(
            "this job reads its source from a URL; streaming is for jobs created without a source",
        ));
    }
    if job.status != JobStatus::Created {
        return Err(AppError::bad_request(format!(
            "the job is already {}; a source can be streamed only before the job is queued",
            job.status
        )));
    }
    Ok(job)
}

async fn read_small(state: &AppState, key: &str) -> AppResult<Option<String>> {
    let mut s = match state.store.get_stream(key).await {
        Ok(s) => s,
        Err(convertrilo_storage::StorageError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut bytes = Vec::new();
    while let Some(chunk) = s.next().await {
        bytes.extend_from_slice(&chunk.map_err(AppError::internal)?);
        if bytes.len() > 1024 {
            return Err(AppError::internal("stream bookkeeping object is too large"));
        }
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

async fn put_small(state: &AppState, key: &str, text: &str) -> AppResult<()> {
    let body = futures::stream::iter([Ok(bytes::Bytes::from(text.to_string()))]).boxed();
    state.store.put_stream(key, body, 1024).await?;
    Ok(())
}

/// The open stream's upload id, or a 400 that says to call `init`.
async fn open_session(state: &AppState, id: JobId) -> AppResult<String> {
    read_small(state, &session_key(id)).await?.ok_or_else(|| {
        AppError::bad_request(format!(
            "no stream is open for this job; POST /jobs/{id}/stream/init first"
        ))
    })
}

/// Deletes every object of the job's stream; returns how many parts there were.
async fn discard(state: &AppState, id: JobId) -> AppResult<usize> {
    let objects = state.store.list(&stream_prefix(id)).await?;
    let parts = objects
        .iter()
        .filter(|(k, _)| k.rsplit('/').next().is_some_and(|n| n.starts_with('p')))
        .count();
    for (key, _) in objects {
        state.store.delete(&key).await?;
    }
    Ok(parts)
}

/// Open a stream for the job's source.
#[utoipa::path(post, path = "/jobs/{id}/stream/init", tag = "stream", params(("id" = String, Path)),
    security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = StreamInitResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn init(
    State(state): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
) -> AppResult<Json<StreamInitResponse>> {
    caller.require(Scope::JobsCreate)?;
    streamable_job(&state, &caller, id).await?;
    // A new stream starts clean: parts of an earlier, unfinished one are discarded.
    discard(&state, id).await?;
    let upload_id = uuid::Uuid::now_v7().simple().to_string();
    put_small(&state, &session_key(id), &upload_id).await?;
    Ok(Json(StreamInitResponse {
        ok: true,
        input_key: format!("inputs/{id}/{upload_id}"),
        upload_id,
    }))
}

fn parse_index(raw: &str) -> AppResult<u32> {
    raw.parse::<u32>()
        .ok()
        .filter(|i| (1..=MAX_PART).contains(i))
        .ok_or_else(|| {
            AppError::bad_request(format!(
                "part number {raw:?} is not allowed; use a whole number from 1 to {MAX_PART}"
            ))
        })
}

/// Store one part (retries overwrite it; any order).
#[utoipa::path(put, path = "/jobs/{id}/stream/chunk/{index}", tag = "stream",
    params(("id" = String, Path), ("index" = u32, Path, minimum = 1, maximum = 10000), ("uploadId" = Option<String>, Query, description = "When given, must name the open stream")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = StreamChunkResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn chunk(
    State(state): State<AppState>,
    caller: Caller,
    Path((raw_id, raw_index)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> AppResult<Response> {
    caller.require(Scope::JobsCreate)?;
    let id: JobId = raw_id
        .parse()
        .map_err(|_| AppError::not_found("no such job"))?;
    let index = parse_index(&raw_index)?;
    let job = streamable_job(&state, &caller, id).await?;
    let session = open_session(&state, id).await?;
    if q.get("uploadId").is_some_and(|u| *u != session) {
        return Err(AppError::bad_request(
            "uploadId does not name this job's open stream (it was restarted with init); send the parts again",
        ));
    }
    let digest = Arc::new(Mutex::new(Md5::new()));
    let sink = digest.clone();
    let stream = body
        .into_data_stream()
        .map_err(std::io::Error::other)
        .inspect_ok(move |b| sink.lock().unwrap_or_else(|p| p.into_inner()).update(b))
        .boxed();
    // The stream as a whole keeps the source limit: this part may take what the others left.
    let limit = jobs::source_limit(&state, &job);
    let this_part = part_key(id, index);
    let others: u64 = state
        .store
        .list(&stream_prefix(id))
        .await?
        .into_iter()
        .filter(|(k, _)| {
            *k != this_part && k.rsplit('/').next().is_some_and(|n| n.starts_with('p'))
        })
        .map(|(_, size)| size)
        .sum();
    if others >= limit {
        return Err(convertrilo_storage::StorageError::TooLarge { limit }.into());
    }
    let size = state
        .store
        .put_stream(&this_part, stream, limit - others)
        .await
        .map_err(|e| match e {
            // Say the stream's limit, not what was left of it.
            convertrilo_storage::StorageError::TooLarge { .. } => {
                convertrilo_storage::StorageError::TooLarge { limit }
            }
            other => other,
        })?;
    if size == 0 {
        state.store.delete(&part_key(id, index)).await?;
        return Err(AppError::bad_request(
            "the part was empty; send its bytes as the request body",
        ));
    }
    let md5 = hex::encode(
        std::mem::take(&mut *digest.lock().unwrap_or_else(|p| p.into_inner())).finalize(),
    );
    put_small(&state, &etag_key(id, index), &md5).await?;
    let etag = format!("\"{md5}\"");
    let mut response = Json(StreamChunkResponse {
        ok: true,
        part_number: index,
        etag: etag.clone(),
        size,
    })
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    Ok(response)
}

/// The `parts` of a finalize body: ascending part numbers with their ETags.
fn parse_parts(body: &Value) -> AppResult<Option<Vec<(u32, String)>>> {
    let Some(obj) = body.as_object() else {
        return Err(AppError::bad_request(
            "the body must be a JSON object: {\"parts\": [{\"PartNumber\": 1, \"ETag\": \"…\"}, …]}, or empty to join every uploaded part",
        ));
    };
    if let Some(other) = obj.keys().find(|k| *k != "parts") {
        return Err(AppError::bad_request(format!(
            "unknown field `{other}`; the body takes only `parts`"
        )));
    }
    let Some(parts) = body.get("parts").filter(|p| !p.is_null()) else {
        return Ok(None);
    };
    let items = parts
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| AppError::bad_request("parts must be a non-empty array of {PartNumber, ETag}, or left out to join every uploaded part"))?;
    let mut out: Vec<(u32, String)> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let number = item
            .get("PartNumber")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=MAX_PART).contains(n));
        let etag = item.get("ETag").and_then(Value::as_str);
        let (Some(number), Some(etag)) = (number, etag) else {
            return Err(AppError::bad_request(format!(
                "parts[{i}] must be {{\"PartNumber\": 1–{MAX_PART}, \"ETag\": \"…\"}}"
            )));
        };
        if out.last().is_some_and(|(last, _)| *last >= number) {
            return Err(AppError::bad_request(format!(
                "parts[{i}]: part numbers must be listed in ascending order without repeats"
            )));
        }
        out.push((number, etag.trim_matches('"').to_ascii_lowercase()));
    }
    Ok(Some(out))
}

/// Join the parts (in part order) into the job's source.
#[utoipa::path(post, path = "/jobs/{id}/stream/finalize", tag = "stream", params(("id" = String, Path)),
    request_body(content = Option<StreamFinalizeRequest>), security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = StreamFinalizeResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 402, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn finalize(
    State(state): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
    JsonBody(body): JsonBody,
) -> AppResult<Json<StreamFinalizeResponse>> {
    caller.require(Scope::JobsCreate)?;
    let _finalizing = Finalizing::start(id)?;
    let job = streamable_job(&state, &caller, id).await?;
    let upload_id = open_session(&state, id).await?;
    let wanted = parse_parts(&body)?;
    // What was uploaded: part number → size.
    let mut uploaded = BTreeMap::new();
    for (key, size) in state.store.list(&stream_prefix(id)).await? {
        let name = key.rsplit('/').next().unwrap_or_default();
        if let Some(n) = name.strip_prefix('p').and_then(|n| n.parse::<u32>().ok()) {
            uploaded.insert(n, size);
        }
    }
    let chosen: Vec<u32> = match &wanted {
        Some(list) => list.iter().map(|(n, _)| *n).collect(),
        None => uploaded.keys().copied().collect(),
    };
    if chosen.is_empty() {
        return Err(AppError::bad_request(
            "no parts were uploaded; PUT them to /jobs/{id}/stream/chunk/{index} first",
        ));
    }
    let mut total = 0u64;
    for (i, n) in chosen.iter().enumerate() {
        let size = uploaded.get(n).ok_or_else(|| {
            AppError::bad_request(format!(
                "part {n} was not uploaded; PUT it, then finalize again"
            ))
        })?;
        total += size;
        if let Some((_, etag)) = wanted.as_ref().map(|w| &w[i]) {
            let stored = read_small(&state, &etag_key(id, *n))
                .await?
                .unwrap_or_default();
            if stored != *etag {
                return Err(AppError::bad_request(format!(
                    "part {n}: the ETag given does not match the part stored (\"{stored}\"); upload the part again or send its ETag"
                )));
            }
        }
    }
    let limit = jobs::source_limit(&state, &job);
    if total > limit {
        return Err(convertrilo_storage::StorageError::TooLarge { limit }.into());
    }
    let keys: Vec<String> = chosen.iter().map(|n| part_key(id, *n)).collect();
    let store = state.store.clone();
    // One stream over every part in order, read part by part: memory holds one buffer.
    let joined = futures::stream::iter(keys)
        .then(move |key| {
            let store = store.clone();
            async move { store.get_stream(&key).await.map_err(std::io::Error::other) }
        })
        .try_flatten()
        .boxed();
    let object = format!("inputs/{id}/{upload_id}");
    let size = state.store.put_stream(&object, joined, limit).await?;
    discard(&state, id).await?;
    tracing::info!(job = %id, bytes = size, parts = chosen.len(), "streamed source joined");
    let status = jobs::accept_upload(&state, id, &object, size).await?;
    Ok(Json(StreamFinalizeResponse {
        ok: true,
        input_key: object,
        size,
        parts: chosen.len(),
        status: status.as_str().into(),
    }))
}

/// Delete the stream's parts.
#[utoipa::path(post, path = "/jobs/{id}/stream/abort", tag = "stream", params(("id" = String, Path)),
    security(("BearerAuth" = []), ("ApiKeyAuth" = [])),
    responses((status = 200, body = StreamAbortResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn abort(
    State(state): State<AppState>,
    caller: Caller,
    JobPath(id): JobPath,
) -> AppResult<Json<StreamAbortResponse>> {
    caller.require(Scope::JobsCreate)?;
    state
        .repos
        .jobs
        .job(id, Some(caller.user_id))
        .await?
        .ok_or_else(|| AppError::not_found(format!("no job with id {id}")))?;
    let deleted = discard(&state, id).await?;
    Ok(Json(StreamAbortResponse { ok: true, deleted }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parts_must_ascend_and_be_whole() {
        let ok = parse_parts(&json!({"parts": [{"PartNumber": 1, "ETag": "\"AB\""}, {"PartNumber": 3, "ETag": "cd"}]}))
            .unwrap()
            .unwrap();
        assert_eq!(ok, [(1, "ab".to_string()), (3, "cd".to_string())]);
        assert!(parse_parts(&json!({})).unwrap().is_none());
        for bad in [
            json!({"parts": []}),
            json!({"parts": [{"PartNumber": 2, "ETag": "a"}, {"PartNumber": 1, "ETag": "b"}]}),
            json!({"parts": [{"PartNumber": 0, "ETag": "a"}]}),
            json!({"parts": [{"PartNumber": 10001, "ETag": "a"}]}),
            json!({"parts": [{"PartNumber": 1}]}),
            json!({"parts": "x"}),
        ] {
            assert!(parse_parts(&bad).is_err(), "{bad}");
        }
        assert!(
            parse_index("0").is_err() && parse_index("10001").is_err() && parse_index("x").is_err()
        );
        assert_eq!(parse_index("10000").unwrap(), 10000);
    }
}
