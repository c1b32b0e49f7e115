//! Signed upload and download links served by the API itself (local object store).
//! Uploads stream to disk chunk by chunk, so memory stays flat whatever the file size;
//! downloads support `Range` and `HEAD` and name the file after the source.

use crate::{
    http::error::{AppError, AppResult, ErrorBody},
    jobs,
    state::AppState,
};
use axum::{
    body::Body,
    extract::{Path, Query, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, put},
    Json, Router,
};
use convertrilo_core::{time::now_ms, ErrorCode, JobStatus, WireEnum};
use convertrilo_db::Ingest;
use convertrilo_storage::{signing::percent_encode, SignedUrl};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use std::collections::HashMap;
use tower::ServiceExt;
use tower_http::services::ServeFile;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/uploads/{*key}", put(upload))
        .route("/files/{*key}", get(download))
}

fn signed(key: String, q: &HashMap<String, String>) -> AppResult<SignedUrl> {
    let (Some(expires), Some(sig)) = (q.get("expires"), q.get("sig")) else {
        return Err(AppError::new(StatusCode::FORBIDDEN, ErrorCode::SignedUrlRequired, "this link must carry its expires and sig parameters; use the URL exactly as the API returned it"));
    };
    let expires = expires.parse().map_err(|_| {
        AppError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::SignedUrlRequired,
            "the link's expires parameter is not a number",
        )
    })?;
    Ok(SignedUrl {
        key,
        expires,
        name: q.get("name").cloned(),
        sig: sig.clone(),
    })
}

fn verify(state: &AppState, method: &str, url: &SignedUrl) -> AppResult<()> {
    state
        .signer
        .verify(method, url, now_ms() / 1000)
        .map_err(|m| AppError::new(StatusCode::FORBIDDEN, ErrorCode::SignedUrlRequired, m))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UploadResponse {
    ok: bool,
    key: String,
    size: u64,
    /// `queued` when the job was created with `confirm: true`, else `created`.
    status: String,
}

/// Receive a job's source bytes at the signed `upload.url` of `POST /jobs` (streamed to disk).
#[utoipa::path(put, path = "/uploads/{key}", tag = "files",
    params(("key" = String, Path, description = "object key from upload.key"),
        ("expires" = i64, Query), ("sig" = String, Query)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = UploadResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub(crate) async fn upload(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> AppResult<Json<UploadResponse>> {
    let url = signed(key.clone(), &q)?;
    verify(&state, "PUT", &url)?;
    let id = jobs::job_of_upload_slot(&key)
        .ok_or_else(|| AppError::not_found("this link does not name an upload"))?;
    let job = state
        .repos
        .jobs
        .job(id, None)
        .await?
        .ok_or_else(|| AppError::not_found("the job of this upload no longer exists"))?;
    if job.ingest != Ingest::Upload || job.status != JobStatus::Created {
        return Err(AppError::bad_request(format!(
            "the job is {}; uploads are accepted only before the job is confirmed",
            job.status
        )));
    }
    let limit = jobs::source_limit(&state, &job);
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit {
            return Err(convertrilo_storage::StorageError::TooLarge { limit }.into());
        }
    }
    let stream = body
        .into_data_stream()
        .map_err(std::io::Error::other)
        .boxed();
    // Every upload lands under its own key and the job switches to it only if it is still
    // `created`: a rejected, empty or late upload never touches the bytes a job will encode.
    let object = format!("inputs/{id}/{}", uuid::Uuid::now_v7().simple());
    let size = state.store.put_stream(&object, stream, limit).await?;
    if size == 0 {
        state.store.delete(&object).await?;
        return Err(AppError::bad_request(
            "the upload was empty; send the file's bytes as the request body",
        ));
    }
    tracing::info!(job = %id, bytes = size, "upload received");
    let status = jobs::accept_upload(&state, id, &object, size).await?;
    Ok(Json(UploadResponse {
        ok: true,
        key,
        size,
        status: status.as_str().into(),
    }))
}

/// Download an encoded file at the signed `downloadUrl` of a job's status (supports `Range`).
#[utoipa::path(get, path = "/files/{key}", tag = "files",
    params(("key" = String, Path), ("expires" = i64, Query), ("name" = String, Query), ("sig" = String, Query)),
    responses((status = 200, description = "the file", content_type = "video/*"), (status = 206, description = "a byte range"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn download(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    mut req: Request,
) -> AppResult<Response> {
    let url = signed(key.clone(), &q)?;
    verify(&state, "GET", &url)?;
    let not_available = || {
        AppError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::OutputNotAvailable,
            "the file is no longer available",
        )
    };
    let path = state.store.local_path(&key).ok_or_else(not_available)?;
    let len = match tokio::fs::metadata(&path).await {
        Ok(m) if m.is_file() => m.len(),
        _ => return Err(not_available()),
    };
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|r| judge_range(r, len));
    match range {
        Some(RangeVerdict::Ignore) => drop(req.headers_mut().remove(header::RANGE)),
        Some(RangeVerdict::Unsatisfiable) => {
            let mut response = AppError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::InvalidRequest,
                format!("the requested range starts past the end of the file ({len} bytes)"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(response);
        }
        Some(RangeVerdict::Serve) | None => {}
    }
    let mut response = ServeFile::new(&path)
        .oneshot(req)
        .await
        .map_err(AppError::internal)?
        .into_response();
    let name = url
        .name
        .unwrap_or_else(|| key.rsplit('/').next().unwrap_or("output").to_string());
    let headers = response.headers_mut();
    if let Some(ct) = mime_for(&name) {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    let disposition = format!(
        "attachment; filename=\"{}\"; filename*=UTF-8''{}",
        name.replace(['"', '\\'], "_"),
        percent_encode(&name)
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

fn mime_for(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    convertrilo_core::spec::Container::parse(&ext).map(|c| c.mime_type())
}

/// What to do with a `Range` header (RFC 9110 §14): one satisfiable byte range is served as
/// 206; anything unparseable, multi-part or covering the whole file is ignored (200 with the
/// whole file, as the RFC allows); a range starting past the end is 416.
#[derive(Debug, PartialEq)]
enum RangeVerdict {
    Serve,
    Ignore,
    Unsatisfiable,
}

fn judge_range(header: &str, len: u64) -> RangeVerdict {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeVerdict::Ignore;
    };
    if spec.contains(',') {
        return RangeVerdict::Ignore;
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return RangeVerdict::Ignore;
    };
    let parse = |s: &str| {
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse::<u64>().map(Some)
        }
    };
    match (parse(start), parse(end)) {
        (Ok(None), Ok(Some(0))) => RangeVerdict::Unsatisfiable,
        (Ok(None), Ok(Some(n))) if n >= len => RangeVerdict::Ignore,
        (Ok(None), Ok(Some(_))) => RangeVerdict::Serve,
        (Ok(Some(a)), _) if a >= len => RangeVerdict::Unsatisfiable,
        (Ok(Some(_)), Ok(None)) => RangeVerdict::Serve,
        (Ok(Some(a)), Ok(Some(b))) if b >= a => RangeVerdict::Serve,
        _ => RangeVerdict::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::{judge_range, RangeVerdict::*};

    #[test]
    fn ranges() {
        for (h, want) in [
            ("bytes=0-9", Serve),
            ("bytes=10-", Serve),
            ("bytes=-10", Serve),
            ("bytes=-99999", Ignore),
            ("bytes=abc", Ignore),
            ("items=0-1", Ignore),
            ("bytes=0-1,5-6", Ignore),
            ("bytes=9-3", Ignore),
            ("bytes=100-", Unsatisfiable),
            ("bytes=-0", Unsatisfiable),
        ] {
            assert_eq!(judge_range(h, 100), want, "{h}");
        }
    }
}
