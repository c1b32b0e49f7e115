//! Google Drive v3 over plain HTTPS, as Google documents the wire format: list a folder
//! (`files.list` with `q`, `fields`, `pageToken`), read a file's metadata or bytes
//! (`files.get`, `alt=media`), and upload with a resumable session (`uploadType=resumable`,
//! chunks with `Content-Range`, `308 Resume Incomplete` answering the `Range` kept so far).
//!
//! Calls carry the caller's OAuth access token. When Google answers 401, the token is renewed
//! once with the caller's refresh token through the configured OAuth client; the session
//! remembers that it did, so the caller can store the new token for the job's next step.

use convertrilo_core::external::{DriveTokens, Secret};
use convertrilo_storage::signing::percent_encode;
use futures::StreamExt;
use reqwest::{header, RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

const FOLDER_MIME: &str = "application/vnd.google-apps.folder";
/// Failed chunk uploads (network or Google's 5xx) tolerated before the upload is given up.
const CHUNK_FAILURES: u32 = 3;

/// Where Google is and which OAuth client refreshes tokens.
#[derive(Clone)]
pub struct DriveApi {
    pub http: reqwest::Client,
    pub api_base: String,
    pub token_url: String,
    /// (client id, client secret)
    pub oauth_client: Option<(String, String)>,
    pub chunk_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// No usable access token, and none could be had: the caller must send a fresh one.
    #[error("{0}")]
    NotConnected(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    /// Google refused the request for a reason the caller can fix.
    #[error("{0}")]
    Refused(String),
    /// Google or the network had trouble that may pass.
    #[error("{0}")]
    Unavailable(String),
    #[error("the file is larger than this server's limit of {0} bytes")]
    TooLarge(u64),
    #[error("local file: {0}")]
    Io(#[from] std::io::Error),
}

impl DriveError {
    pub fn is_transient(&self) -> bool {
        matches!(self, DriveError::Unavailable(_) | DriveError::Io(_))
    }
}

/// A file listed in a folder.
#[derive(Debug, Clone, PartialEq)]
pub struct DriveEntry {
    pub id: String,
    pub name: String,
    pub mime_type: String,
    pub size: Option<u64>,
    pub duration_sec: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileList {
    next_page_token: Option<String>,
    #[serde(default)]
    files: Vec<FileResource>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileResource {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    mime_type: String,
    // Drive sends int64 values as JSON strings.
    size: Option<String>,
    video_media_metadata: Option<VideoMeta>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VideoMeta {
    duration_millis: Option<String>,
}

/// One caller's use of Drive: its tokens, renewed as needed.
pub struct DriveSession<'a> {
    api: &'a DriveApi,
    tokens: DriveTokens,
    refreshed: bool,
}

impl DriveApi {
    pub fn session(&self, tokens: DriveTokens) -> DriveSession<'_> {
        DriveSession {
            api: self,
            tokens,
            refreshed: false,
        }
    }

    fn url(&self, path: &str) -> Result<Url, DriveError> {
        Url::parse(&format!("{}{path}", self.api_base.trim_end_matches('/'))).map_err(|e| {
            DriveError::Unavailable(format!("google_drive_api_base is not a URL: {e}"))
        })
    }
}

impl DriveSession<'_> {
    /// True when the access token was renewed; `tokens()` then holds the new one.
    pub fn refreshed(&self) -> bool {
        self.refreshed
    }

    pub fn tokens(&self) -> &DriveTokens {
        &self.tokens
    }

    /// Sends the request `build` makes with the current token; on 401 renews the token once
    /// and sends a fresh request.
    async fn send(&mut self, build: impl Fn() -> RequestBuilder) -> Result<Response, DriveError> {
        if self.tokens.access_token.is_none() {
            self.refresh(None).await?;
        }
        let mut renewed = false;
        loop {
            let token = self
                .tokens
                .access_token
                .as_ref()
                .map(|t| t.expose().to_string())
                .unwrap_or_default();
            let resp = build().bearer_auth(&token).send().await.map_err(network)?;
            if resp.status() != StatusCode::UNAUTHORIZED || renewed {
                return Ok(resp);
            }
            let why = google_message(resp).await;
            self.refresh(Some(&why)).await?;
            renewed = true;
        }
    }

    /// A new access token from the refresh token. `why` is Google's word on the old one.
    async fn refresh(&mut self, why: Option<&str>) -> Result<(), DriveError> {
        let rejected = match why {
            Some(w) => format!("Google Drive rejected the access token ({w})"),
            None => "no Google Drive accessToken was given".to_string(),
        };
        let Some(refresh) = self.tokens.refresh_token.clone() else {
            return Err(DriveError::NotConnected(format!(
                "{rejected} and there is no refreshToken to renew it; send a current accessToken"
            )));
        };
        let Some((id, secret)) = &self.api.oauth_client else {
            return Err(DriveError::NotConnected(format!(
                "{rejected}; this server has no Google OAuth client configured to use the refreshToken with, so send a current accessToken"
            )));
        };
        let body = format!(
            "grant_type=refresh_token&refresh_token={}&client_id={}&client_secret={}",
            percent_encode(refresh.expose()),
            percent_encode(id),
            percent_encode(secret)
        );
        let resp = self
            .api
            .http
            .post(&self.api.token_url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(network)?;
        let status = resp.status();
        #[derive(Deserialize)]
        struct TokenAnswer {
            access_token: Option<String>,
            error: Option<String>,
            error_description: Option<String>,
        }
        let answer: TokenAnswer = resp.json().await.unwrap_or(TokenAnswer {
            access_token: None,
            error: None,
            error_description: None,
        });
        match (status.is_success(), answer.access_token) {
            (true, Some(token)) => {
                self.tokens.access_token = Some(Secret::new(token));
                self.refreshed = true;
                tracing::info!("renewed a Google Drive access token");
                Ok(())
            }
            _ if status.is_server_error() => Err(DriveError::Unavailable(format!(
                "Google's token endpoint answered HTTP {status}; try again later"
            ))),
            _ => Err(DriveError::NotConnected(format!(
                "{rejected} and Google refused to renew it with the refreshToken ({}); run your OAuth flow again and send a fresh accessToken",
                answer
                    .error_description
                    .or(answer.error)
                    .unwrap_or_else(|| format!("HTTP {status}"))
            ))),
        }
    }

    /// Checks that `folder_id` is a folder this token can see.
    pub async fn check_folder(&mut self, folder_id: &str) -> Result<(), DriveError> {
        let mut url = self.api.url(&format!("/drive/v3/files/{folder_id}"))?;
        url.query_pairs_mut()
            .append_pair("fields", "id,name,mimeType")
            .append_pair("supportsAllDrives", "true");
        let http = self.api.http.clone();
        let resp = self.send(|| http.get(url.clone())).await?;
        let file: FileResource = ok(resp, &format!("folder {folder_id}"))
            .await?
            .json()
            .await
            .map_err(network)?;
        if file.mime_type != FOLDER_MIME {
            return Err(DriveError::Refused(format!(
                "Google Drive item {folder_id} is not a folder ({})",
                file.mime_type
            )));
        }
        Ok(())
    }

    /// The files directly in a folder (not trashed), page by page, name order, until `keep`
    /// has accepted `max` of them.
    pub async fn list_folder(
        &mut self,
        folder_id: &str,
        page_size: usize,
        max: usize,
        keep: impl Fn(&DriveEntry) -> bool,
    ) -> Result<(Vec<DriveEntry>, usize), DriveError> {
        let (mut kept, mut skipped) = (Vec::new(), 0usize);
        let mut token: Option<String> = None;
        loop {
            let mut url = self.api.url("/drive/v3/files")?;
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("q", &format!("'{folder_id}' in parents and trashed=false"))
                    .append_pair(
                        "fields",
                        "nextPageToken,files(id,name,mimeType,size,videoMediaMetadata(durationMillis))",
                    )
                    .append_pair("pageSize", &page_size.clamp(1, 1000).to_string())
                    .append_pair("orderBy", "name")
                    .append_pair("supportsAllDrives", "true")
                    .append_pair("includeItemsFromAllDrives", "true");
                if let Some(t) = &token {
                    q.append_pair("pageToken", t);
                }
            }
            let http = self.api.http.clone();
            let resp = self.send(|| http.get(url.clone())).await?;
            let page: FileList = ok(resp, &format!("folder {folder_id}"))
                .await?
                .json()
                .await
                .map_err(network)?;
            for f in page.files {
                let entry = DriveEntry {
                    size: f.size.and_then(|s| s.parse().ok()),
                    duration_sec: f
                        .video_media_metadata
                        .and_then(|v| v.duration_millis?.parse::<f64>().ok())
                        .map(|ms| ms / 1000.0),
                    id: f.id,
                    name: f.name,
                    mime_type: f.mime_type,
                };
                if !keep(&entry) {
                    skipped += 1;
                } else if kept.len() < max {
                    kept.push(entry);
                }
            }
            token = page.next_page_token.filter(|t| !t.is_empty());
            if token.is_none() || kept.len() >= max {
                return Ok((kept, skipped));
            }
        }
    }

    /// Streams a file's bytes into `dest`, refusing more than `limit`.
    pub async fn download(
        &mut self,
        file_id: &str,
        dest: &Path,
        limit: u64,
    ) -> Result<u64, DriveError> {
        let mut url = self.api.url(&format!("/drive/v3/files/{file_id}"))?;
        url.query_pairs_mut()
            .append_pair("alt", "media")
            .append_pair("supportsAllDrives", "true");
        let http = self.api.http.clone();
        let resp = self.send(|| http.get(url.clone())).await?;
        let resp = ok(resp, &format!("file {file_id}")).await?;
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(DriveError::TooLarge(limit));
        }
        let mut file = tokio::fs::File::create(dest).await?;
        let mut written = 0u64;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(network)?;
            written += chunk.len() as u64;
            if written > limit {
                return Err(DriveError::TooLarge(limit));
            }
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok(written)
    }

    /// Uploads `path` into the folder as `name` through a resumable session; returns the new
    /// file's id.
    pub async fn upload(
        &mut self,
        folder_id: &str,
        name: &str,
        path: &Path,
        content_type: &str,
    ) -> Result<String, DriveError> {
        let size = tokio::fs::metadata(path).await?.len();
        let mut start = self.api.url("/upload/drive/v3/files")?;
        start
            .query_pairs_mut()
            .append_pair("uploadType", "resumable")
            .append_pair("supportsAllDrives", "true");
        let metadata = serde_json::json!({ "name": name, "parents": [folder_id] }).to_string();
        let http = self.api.http.clone();
        let resp = self
            .send(|| {
                http.post(start.clone())
                    .header(header::CONTENT_TYPE, "application/json; charset=UTF-8")
                    .header("X-Upload-Content-Type", content_type)
                    .header("X-Upload-Content-Length", size)
                    .body(metadata.clone())
            })
            .await?;
        let resp = ok(resp, &format!("folder {folder_id}")).await?;
        let session = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Url::parse(v).ok())
            .ok_or_else(|| DriveError::Unavailable("Google Drive gave no upload session".into()))?;
        // The session URI comes from the answer, not from us: only Google's own host is trusted.
        if session.origin() != start.origin() {
            return Err(DriveError::Unavailable(format!(
                "Google Drive offered an upload session on another host ({}); refused",
                session.host_str().unwrap_or("")
            )));
        }
        let mut file = tokio::fs::File::open(path).await?;
        let mut offset = 0u64;
        let mut failures = 0;
        loop {
            let len = self.api.chunk_bytes.min(size - offset);
            let mut chunk = vec![0u8; len as usize];
            file.seek(std::io::SeekFrom::Start(offset)).await?;
            file.read_exact(&mut chunk).await?;
            let chunk = bytes::Bytes::from(chunk);
            let range = if size == 0 {
                "bytes */0".to_string()
            } else {
                format!("bytes {offset}-{}/{size}", offset + len - 1)
            };
            let sent = self
                .send(|| {
                    http.put(session.clone())
                        .header(header::CONTENT_RANGE, &range)
                        .header(header::CONTENT_LENGTH, len)
                        .body(chunk.clone())
                })
                .await;
            let resp = match sent {
                Ok(r) => Some(r),
                Err(e) if e.is_transient() => None,
                Err(e) => return Err(e),
            };
            let status = resp.as_ref().map(Response::status);
            match (resp, status.map(|s| s.as_u16())) {
                (Some(r), Some(200 | 201)) => {
                    #[derive(Deserialize)]
                    struct Created {
                        id: String,
                    }
                    let created: Created = r.json().await.map_err(network)?;
                    return Ok(created.id);
                }
                // Resume Incomplete: `Range` says what Google holds; send the rest from there.
                (Some(r), Some(308)) => offset = kept_bytes(&r),
                (Some(_), Some(404 | 410)) => {
                    return Err(DriveError::Unavailable(
                        "the Google Drive upload session expired".into(),
                    ))
                }
                (Some(r), Some(s)) if s < 500 && s != 429 => {
                    return Err(error_of(r, &format!("folder {folder_id}")).await);
                }
                // Google's trouble or the network's: ask how much arrived, then resend.
                _ => {
                    failures += 1;
                    if failures >= CHUNK_FAILURES {
                        return Err(DriveError::Unavailable(format!(
                            "Google Drive kept failing the upload ({})",
                            status.map_or("no answer".to_string(), |s| format!("HTTP {s}"))
                        )));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500 * u64::from(failures)))
                        .await;
                    let asked = self
                        .send(|| {
                            http.put(session.clone())
                                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                                .header(header::CONTENT_LENGTH, 0)
                        })
                        .await?;
                    if asked.status().as_u16() == 308 {
                        offset = kept_bytes(&asked);
                    }
                }
            }
        }
    }
}

/// The end of `Range: bytes=0-N` plus one (0 without the header: nothing was kept).
fn kept_bytes(resp: &Response) -> u64 {
    resp.headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes=0-"))
        .and_then(|n| n.parse::<u64>().ok())
        .map_or(0, |n| n + 1)
}

async fn ok(resp: Response, what: &str) -> Result<Response, DriveError> {
    if resp.status().is_success() {
        Ok(resp)
    } else {
        Err(error_of(resp, what).await)
    }
}

/// Google's `{"error": {"message", "errors": [{"reason"}]}}` as an error of ours.
async fn error_of(resp: Response, what: &str) -> DriveError {
    let status = resp.status();
    let message = google_message(resp).await;
    match status.as_u16() {
        401 => DriveError::NotConnected(format!(
            "Google Drive rejected the access token ({message})"
        )),
        403 if message.contains("ate limit") => {
            DriveError::Unavailable(format!("Google Drive is rate-limiting ({message})"))
        }
        403 => DriveError::Forbidden(format!("Google Drive refused access to {what} ({message})")),
        404 => DriveError::NotFound(format!(
            "Google Drive has no {what} visible to this token ({message})"
        )),
        429 | 500..=599 => {
            DriveError::Unavailable(format!("Google Drive answered HTTP {status} ({message})"))
        }
        _ => DriveError::Refused(format!(
            "Google Drive refused the request for {what}: HTTP {status} ({message})"
        )),
    }
}

async fn google_message(resp: Response) -> String {
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    body["error"]["message"]
        .as_str()
        .or(body["error_description"].as_str())
        .map(|m| m.chars().take(300).collect())
        .unwrap_or_else(|| format!("HTTP {status}"))
}

fn network(e: reqwest::Error) -> DriveError {
    let mut msg = if e.is_timeout() {
        "the request to Google timed out".to_string()
    } else {
        format!("could not reach Google: {e}")
    };
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    DriveError::Unavailable(msg)
}
