//! A stand-in for Google Drive v3 and Google's OAuth token endpoint on a loopback port,
//! speaking Google's documented wire format: `files.list` with `q`, `fields`, `pageSize` and
//! `pageToken` (pages of `pageSize`, `nextPageToken` while more remain), `files.get` with and
//! without `alt=media`, resumable uploads (session URI in `Location`, `Content-Range` chunks,
//! `308` with the `Range` kept — never more than 256 KiB per request, so clients must resume
//! from what was kept — and `200` with the file resource at the end), Bearer tokens that can
//! be expired (401 in Google's error shape), and `grant_type=refresh_token` renewals.

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::{json, Value};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

pub const CLIENT_ID: &str = "test-client.apps.googleusercontent.com";
pub const CLIENT_SECRET: &str = "GOCSPX-test-client-secret";
/// Most bytes of one upload request the fake keeps.
const KEEP_PER_PUT: usize = 256 * 1024;

#[derive(Clone, Debug)]
pub struct FakeFile {
    pub name: String,
    pub mime_type: String,
    pub parent: String,
    pub bytes: Vec<u8>,
    pub duration_ms: Option<u64>,
}

struct Session {
    name: String,
    parent: String,
    mime_type: String,
    total: usize,
    received: Vec<u8>,
}

#[derive(Default)]
pub struct World {
    pub files: HashMap<String, FakeFile>,
    pub folders: Vec<String>,
    pub valid_tokens: Vec<String>,
    /// refresh token → the access token a renewal hands out.
    pub refreshable: HashMap<String, String>,
    pub refreshes: usize,
    /// Every request: "METHOD path token".
    pub log: Vec<String>,
    pub list_pages: usize,
    pub upload_puts: usize,
    sessions: HashMap<String, Session>,
    next_id: usize,
}

#[derive(Clone)]
pub struct FakeDrive {
    pub base: String,
    pub world: Arc<Mutex<World>>,
    stop: Arc<tokio::sync::Notify>,
}

type Shared = (Arc<Mutex<World>>, String);

fn google_error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "message": message,
        "errors": [{"message": message, "domain": "global", "reason": "authError"}],
        "status": "UNAUTHENTICATED"}});
    (status, Json(body)).into_response()
}

/// The Bearer token of a request, if valid; the 401 answer otherwise.
// The error is the answer itself, handed straight back by the handler.
#[allow(clippy::result_large_err)]
fn authorize(world: &mut World, headers: &HeaderMap, what: &str) -> Result<(), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    world.log.push(format!("{what} {token}"));
    if world.valid_tokens.contains(&token) {
        Ok(())
    } else {
        Err(google_error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials.",
        ))
    }
}

async fn list(
    State((w, _)): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut world = w.lock().unwrap();
    if let Err(r) = authorize(&mut world, &headers, "GET /drive/v3/files") {
        return r;
    }
    world.list_pages += 1;
    let query = q.get("q").cloned().unwrap_or_default();
    let parent = query
        .strip_prefix('\'')
        .and_then(|r| r.split_once("' in parents"))
        .map(|(p, _)| p.to_string());
    let (Some(parent), true) = (parent, query.ends_with("trashed=false")) else {
        return google_error(StatusCode::BAD_REQUEST, "Invalid Value");
    };
    let fields = q.get("fields").cloned().unwrap_or_default();
    assert!(
        fields.starts_with("nextPageToken,files("),
        "fields={fields}"
    );
    if !world.folders.contains(&parent) {
        return google_error(StatusCode::NOT_FOUND, &format!("File not found: {parent}."));
    }
    let mut files: Vec<(&String, &FakeFile)> = world
        .files
        .iter()
        .filter(|(_, f)| f.parent == parent)
        .collect();
    files.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    let size: usize = q
        .get("pageSize")
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let start: usize = q.get("pageToken").and_then(|s| s.parse().ok()).unwrap_or(0);
    let page: Vec<Value> = files
        .iter()
        .skip(start)
        .take(size)
        .map(|(id, f)| {
            let mut v = json!({"id": id, "name": f.name, "mimeType": f.mime_type, "size": f.bytes.len().to_string()});
            if let Some(ms) = f.duration_ms {
                v["videoMediaMetadata"] = json!({"durationMillis": ms.to_string()});
            }
            v
        })
        .collect();
    let mut body = json!({"files": page});
    if start + size < files.len() {
        body["nextPageToken"] = json!((start + size).to_string());
    }
    Json(body).into_response()
}

async fn file(
    State((w, _)): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut world = w.lock().unwrap();
    if let Err(r) = authorize(&mut world, &headers, &format!("GET /drive/v3/files/{id}")) {
        return r;
    }
    if world.folders.contains(&id) {
        return Json(
            json!({"id": id, "name": id, "mimeType": "application/vnd.google-apps.folder"}),
        )
        .into_response();
    }
    let Some(f) = world.files.get(&id) else {
        return google_error(StatusCode::NOT_FOUND, &format!("File not found: {id}."));
    };
    if q.get("alt").map(String::as_str) == Some("media") {
        return (
            [(header::CONTENT_TYPE, f.mime_type.clone())],
            f.bytes.clone(),
        )
            .into_response();
    }
    Json(json!({"id": id, "name": f.name, "mimeType": f.mime_type})).into_response()
}

async fn start_upload(
    State((w, base)): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let mut world = w.lock().unwrap();
    if let Err(r) = authorize(&mut world, &headers, "POST /upload/drive/v3/files") {
        return r;
    }
    assert_eq!(q.get("uploadType").map(String::as_str), Some("resumable"));
    let meta: Value = serde_json::from_slice(&body).unwrap();
    let parent = meta["parents"][0].as_str().unwrap_or("").to_string();
    if !world.folders.contains(&parent) {
        return google_error(StatusCode::NOT_FOUND, &format!("File not found: {parent}."));
    }
    let total: usize = headers["x-upload-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    world.next_id += 1;
    let id = format!("session{}", world.next_id);
    world.sessions.insert(
        id.clone(),
        Session {
            name: meta["name"].as_str().unwrap().to_string(),
            parent,
            mime_type: headers["x-upload-content-type"]
                .to_str()
                .unwrap()
                .to_string(),
            total,
            received: Vec::new(),
        },
    );
    let location = format!("{base}/upload/drive/v3/files?uploadType=resumable&upload_id={id}");
    (StatusCode::OK, [(header::LOCATION, location)]).into_response()
}

async fn put_chunk(
    State((w, _)): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let mut world = w.lock().unwrap();
    world.upload_puts += 1;
    let id = q.get("upload_id").cloned().unwrap_or_default();
    let Some(s) = world.sessions.get_mut(&id) else {
        return google_error(StatusCode::NOT_FOUND, "upload session not found");
    };
    let range = headers[header::CONTENT_RANGE].to_str().unwrap().to_string();
    let spec = range.strip_prefix("bytes ").unwrap();
    let (span, total) = spec.split_once('/').unwrap();
    assert_eq!(total.parse::<usize>().unwrap(), s.total);
    if span != "*" {
        let (first, last) = span.split_once('-').unwrap();
        let (first, last): (usize, usize) = (first.parse().unwrap(), last.parse().unwrap());
        assert_eq!(
            first,
            s.received.len(),
            "a chunk must start where the kept bytes end"
        );
        assert_eq!(last - first + 1, body.len());
        let keep = body.len().min(KEEP_PER_PUT);
        s.received.extend_from_slice(&body[..keep]);
    }
    if s.received.len() == s.total {
        let s = world.sessions.remove(&id).unwrap();
        world.next_id += 1;
        let file_id = format!("file{}", world.next_id);
        world.files.insert(
            file_id.clone(),
            FakeFile {
                name: s.name.clone(),
                mime_type: s.mime_type.clone(),
                parent: s.parent,
                bytes: s.received,
                duration_ms: None,
            },
        );
        return Json(
            json!({"kind": "drive#file", "id": file_id, "name": s.name, "mimeType": s.mime_type}),
        )
        .into_response();
    }
    let mut r = StatusCode::PERMANENT_REDIRECT.into_response();
    if !s.received.is_empty() {
        r.headers_mut().insert(
            header::RANGE,
            format!("bytes=0-{}", s.received.len() - 1).parse().unwrap(),
        );
    }
    r
}

async fn token(State((w, _)): State<Shared>, body: String) -> Response {
    let url = reqwest::Url::parse(&format!("http://x/?{body}")).unwrap();
    let form: HashMap<String, String> = url.query_pairs().into_owned().collect();
    let mut world = w.lock().unwrap();
    let ok = form.get("grant_type").map(String::as_str) == Some("refresh_token")
        && form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET);
    let fresh = form
        .get("refresh_token")
        .and_then(|t| world.refreshable.get(t).cloned());
    match (ok, fresh) {
        (true, Some(access)) => {
            world.refreshes += 1;
            world.valid_tokens.push(access.clone());
            Json(json!({"access_token": access, "expires_in": 3599, "token_type": "Bearer",
                "scope": "https://www.googleapis.com/auth/drive"}))
            .into_response()
        }
        _ => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."})),
        )
            .into_response(),
    }
}

impl FakeDrive {
    pub async fn start(world: World) -> FakeDrive {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let world = Arc::new(Mutex::new(world));
        let router = Router::new()
            .route("/drive/v3/files", get(list))
            .route("/drive/v3/files/{id}", get(file))
            .route("/upload/drive/v3/files", post(start_upload).put(put_chunk))
            .route("/token", post(token))
            .with_state((world.clone(), base.clone()));
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stopped.notified().await })
                .await;
        });
        FakeDrive { base, world, stop }
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.base)
    }

    /// The files now in a folder, by name.
    pub fn files_in(&self, folder: &str) -> Vec<FakeFile> {
        let w = self.world.lock().unwrap();
        let mut files: Vec<FakeFile> = w
            .files
            .values()
            .filter(|f| f.parent == folder)
            .cloned()
            .collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        files
    }
}

impl Drop for FakeDrive {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

impl World {
    pub fn add_file(
        &mut self,
        id: &str,
        name: &str,
        mime: &str,
        parent: &str,
        bytes: Vec<u8>,
        duration_ms: Option<u64>,
    ) {
        self.files.insert(
            id.into(),
            FakeFile {
                name: name.into(),
                mime_type: mime.into(),
                parent: parent.into(),
                bytes,
                duration_ms,
            },
        );
    }
}
