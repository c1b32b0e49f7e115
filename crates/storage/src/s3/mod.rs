//! A client for S3-compatible object stores (AWS S3, Cloudflare R2, MinIO, Garage, …).
//!
//! Requests are signed by `rusty-s3`, which only computes presigned URLs (SigV4 in the query
//! string, payload unsigned), and sent over our own `reqwest` client: bodies stream from and
//! to files, so memory stays flat whatever the object's size. One [`S3Bucket`] names an
//! endpoint, region, bucket, addressing style and (optional) credentials; an [`S3Client`]
//! moves bytes: head, streamed get to a file, put from a file (multipart above a threshold),
//! paginated list, delete, and presigned GET/PUT links for other programs (ffprobe).
//!
//! Every failure is an [`S3Error`] whose text names S3's own error code (`AccessDenied`,
//! `NoSuchBucket`, …) and never the URL: a presigned URL is a bearer credential.

use futures::StreamExt;
use reqwest::{header, Body, StatusCode, Url};
use rusty_s3::{actions, Bucket, Credentials, S3Action, UrlStyle};
use std::{fmt, path::Path, time::Duration};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

mod multipart;
mod store;

pub use store::S3Store;

/// How long the URLs of our own requests stay valid: S3 checks expiry when a request
/// starts, so this only has to cover the time between signing and sending.
const REQUEST_TTL: Duration = Duration::from_secs(15 * 60);
/// Attempts at one part of a multipart upload before the upload is given up.
const PART_ATTEMPTS: u32 = 3;

/// Access key pair for signing. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &"***")
            .field("secret_access_key", &"***")
            .finish()
    }
}

/// Where a bucket lives and how to address it.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Location {
    /// `https://s3.<region>.amazonaws.com` for AWS, or the provider's endpoint.
    pub endpoint: Url,
    pub region: String,
    pub bucket: String,
    /// `https://host/bucket/key` rather than `https://bucket.host/key` (MinIO and most
    /// self-hosted servers want this; AWS accepts both).
    pub path_style: bool,
    /// `None` sends unsigned requests (public buckets).
    pub credentials: Option<S3Credentials>,
}

/// A bucket ready to sign requests for.
#[derive(Clone)]
pub struct S3Bucket {
    bucket: Bucket,
    credentials: Option<Credentials>,
}

/// An object as S3 describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
}

/// What a put stored.
#[derive(Debug, Clone, PartialEq)]
pub struct PutInfo {
    pub size: u64,
    pub etag: Option<String>,
    /// Parts of a multipart upload; 0 for a single PUT.
    pub parts: usize,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    pub objects: Vec<ObjectInfo>,
    /// Continue from here; `None` on the last page.
    pub next: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// S3 answered with an error; `code` is S3's own (`NoSuchKey`, `AccessDenied`, …).
    #[error("S3 answered HTTP {status} {code}{}", colon_then(.message))]
    Service {
        status: u16,
        code: String,
        message: String,
    },
    #[error("could not reach the S3 endpoint: {0}")]
    Network(String),
    #[error("the object is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("local file: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("unexpected answer from S3: {0}")]
    Protocol(String),
}

impl S3Error {
    /// S3's error code, when S3 gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            S3Error::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Worth another try later: the network, throttling, or S3's own trouble.
    pub fn is_transient(&self) -> bool {
        match self {
            S3Error::Network(_) => true,
            S3Error::Service { status, code, .. } => {
                *status >= 500
                    || *status == 429
                    || matches!(
                        code.as_str(),
                        "SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable"
                    )
            }
            _ => false,
        }
    }
}

impl S3Bucket {
    pub fn new(loc: &S3Location) -> Result<S3Bucket, S3Error> {
        let style = if loc.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            loc.endpoint.clone(),
            style,
            loc.bucket.clone(),
            loc.region.clone(),
        )
        .map_err(|e| {
            S3Error::Invalid(match e {
                rusty_s3::BucketError::UnsupportedScheme => {
                    "the S3 endpoint must be an http:// or https:// URL".to_string()
                }
                rusty_s3::BucketError::MissingHost => "the S3 endpoint has no host".to_string(),
                rusty_s3::BucketError::ParseError(_) => format!(
                    "bucket {:?} cannot be addressed as a host name at this endpoint; use path-style addressing (forcePathStyle: true)",
                    loc.bucket
                ),
            })
        })?;
        Ok(S3Bucket {
            bucket,
            credentials: loc
                .credentials
                .as_ref()
                .map(|c| Credentials::new(c.access_key_id.clone(), c.secret_access_key.clone())),
        })
    }

    pub fn name(&self) -> &str {
        self.bucket.name()
    }

    /// A link anyone holding it can GET the object through, until `ttl` passes.
    pub fn presign_get(&self, key: &str, ttl: Duration) -> Url {
        actions::GetObject::new(&self.bucket, self.credentials.as_ref(), key).sign(ttl)
    }

    /// A link anyone holding it can PUT the object through, until `ttl` passes.
    pub fn presign_put(&self, key: &str, ttl: Duration) -> Url {
        actions::PutObject::new(&self.bucket, self.credentials.as_ref(), key).sign(ttl)
    }
}

/// Moves bytes to and from S3 buckets.
#[derive(Clone)]
pub struct S3Client {
    http: reqwest::Client,
    /// Files larger than this are sent as a multipart upload.
    pub multipart_threshold: u64,
    /// Size of each part but the last (S3 wants at least 5 MiB).
    pub part_size: u64,
}

impl S3Client {
    /// `http` should not follow redirects: S3 answers a wrong region or endpoint with one,
    /// and that is better reported than followed.
    pub fn new(http: reqwest::Client, multipart_threshold: u64, part_size: u64) -> S3Client {
        S3Client {
            http,
            multipart_threshold,
            part_size: part_size.max(1),
        }
    }

    /// Size and ETag of an object. `NoSuchKey`, `NoSuchBucket` and `AccessDenied` come back
    /// as such (a HEAD answer has no body, so the reason is read from a one-byte GET).
    pub async fn head(&self, b: &S3Bucket, key: &str) -> Result<ObjectInfo, S3Error> {
        let url =
            actions::HeadObject::new(&b.bucket, b.credentials.as_ref(), key).sign(REQUEST_TTL);
        let resp = self.http.head(url).send().await.map_err(network)?;
        if resp.status().is_success() {
            return Ok(ObjectInfo {
                key: key.to_string(),
                size: resp
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .ok_or_else(|| S3Error::Protocol("HEAD without Content-Length".into()))?,
                etag: etag(resp.headers()),
            });
        }
        let status = resp.status();
        let url = b.presign_get(key, REQUEST_TTL);
        let probe = self
            .http
            .get(url)
            .header(header::RANGE, "bytes=0-0")
            .send()
            .await
            .map_err(network)?;
        if probe.status().is_success() {
            // The GET worked where the HEAD did not (a server without HEAD support).
            return Err(S3Error::Service {
                status: status.as_u16(),
                code: default_code(status).into(),
                message: String::new(),
            });
        }
        let err = service_error(probe).await;
        // Some servers say NoSuchKey for a key of a bucket that does not exist; the bucket
        // itself tells which it is (when the credentials may look at it).
        if matches!(err.code(), Some("NoSuchKey" | "NotFound")) && !self.bucket_exists(b).await {
            return Err(S3Error::Service {
                status: 404,
                code: "NoSuchBucket".into(),
                message: "The specified bucket does not exist".into(),
            });
        }
        Err(err)
    }

    /// False only when S3 says the bucket is not there (a refusal or an error is not proof).
    async fn bucket_exists(&self, b: &S3Bucket) -> bool {
        let url = actions::HeadBucket::new(&b.bucket, b.credentials.as_ref()).sign(REQUEST_TTL);
        match self.http.head(url).send().await {
            Ok(resp) => resp.status() != StatusCode::NOT_FOUND,
            Err(_) => true,
        }
    }

    /// Streams an object into `dest`, refusing more than `limit` bytes. Returns the size.
    pub async fn get_to_file(
        &self,
        b: &S3Bucket,
        key: &str,
        dest: &Path,
        limit: u64,
    ) -> Result<u64, S3Error> {
        let url = b.presign_get(key, REQUEST_TTL);
        let resp = self.http.get(url).send().await.map_err(network)?;
        if !resp.status().is_success() {
            return Err(service_error(resp).await);
        }
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(S3Error::TooLarge(limit));
        }
        let mut file = tokio::fs::File::create(dest).await?;
        let mut written = 0u64;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(network)?;
            written += chunk.len() as u64;
            if written > limit {
                return Err(S3Error::TooLarge(limit));
            }
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok(written)
    }

    /// Uploads a local file to `key`: one PUT up to the multipart threshold, a multipart
    /// upload above it (aborted if it cannot be completed, so no parts are left billed).
    pub async fn put_file(
        &self,
        b: &S3Bucket,
        key: &str,
        path: &Path,
        content_type: &str,
    ) -> Result<PutInfo, S3Error> {
        let size = tokio::fs::metadata(path).await?.len();
        if size <= self.multipart_threshold {
            let url = b.presign_put(key, REQUEST_TTL);
            let body = file_body(path, 0, size).await?;
            let resp = self
                .http
                .put(url)
                .header(header::CONTENT_LENGTH, size)
                .header(header::CONTENT_TYPE, content_type)
                .body(body)
                .send()
                .await
                .map_err(network)?;
            if !resp.status().is_success() {
                return Err(service_error(resp).await);
            }
            return Ok(PutInfo {
                size,
                etag: etag(resp.headers()),
                parts: 0,
            });
        }
        self.put_multipart(b, key, path, size, content_type).await
    }

    /// One page of the keys under `prefix`. With a `delimiter` (`/`), only the keys directly
    /// "in the folder" are listed, not those under deeper prefixes.
    pub async fn list_page(
        &self,
        b: &S3Bucket,
        prefix: &str,
        delimiter: Option<&str>,
        page_size: usize,
        token: Option<&str>,
    ) -> Result<ListPage, S3Error> {
        let mut action = b.bucket.list_objects_v2(b.credentials.as_ref());
        action.with_prefix(prefix);
        if let Some(d) = delimiter {
            action.with_delimiter(d);
        }
        action.with_max_keys(page_size.clamp(1, 1000));
        if let Some(t) = token {
            action.with_continuation_token(t);
        }
        let url = action.sign(REQUEST_TTL);
        let resp = self.http.get(url).send().await.map_err(network)?;
        if !resp.status().is_success() {
            return Err(service_error(resp).await);
        }
        let text = resp.text().await.map_err(network)?;
        let parsed = actions::ListObjectsV2::parse_response(&text)
            .map_err(|e| S3Error::Protocol(format!("ListObjectsV2: {e}")))?;
        Ok(ListPage {
            objects: parsed
                .contents
                .into_iter()
                .map(|c| ObjectInfo {
                    key: c.key,
                    size: c.size.unwrap_or(0),
                    etag: c.etag,
                })
                .collect(),
            next: parsed.next_continuation_token.filter(|t| !t.is_empty()),
        })
    }

    /// Deletes an object; a missing one is not an error (S3 itself answers 204 for it).
    pub async fn delete(&self, b: &S3Bucket, key: &str) -> Result<(), S3Error> {
        let url =
            actions::DeleteObject::new(&b.bucket, b.credentials.as_ref(), key).sign(REQUEST_TTL);
        let resp = self.http.delete(url).send().await.map_err(network)?;
        if resp.status().is_success() || resp.status() == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(service_error(resp).await)
        }
    }
}

/// `len` bytes of a file from `offset`, as a streaming request body.
async fn file_body(path: &Path, offset: u64, len: u64) -> Result<Body, S3Error> {
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    Ok(Body::wrap_stream(tokio_util::io::ReaderStream::new(
        file.take(len),
    )))
}

/// `": message"`, or nothing for an empty message.
fn colon_then(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

fn etag(headers: &header::HeaderMap) -> Option<String> {
    headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

/// reqwest's errors name the URL, which here carries a signature: drop it, keep the cause.
fn network(e: reqwest::Error) -> S3Error {
    let e = e.without_url();
    let mut msg = if e.is_timeout() {
        "the request timed out".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    S3Error::Network(msg)
}

fn default_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        301 | 307 => "PermanentRedirect",
        400 => "BadRequest",
        403 => "AccessDenied",
        404 => "NotFound",
        _ => "Unknown",
    }
}

/// S3's `<Error><Code>…</Code><Message>…</Message></Error>` body as an error. Only the code
/// and message are kept: other elements (a signature mismatch's `StringToSign`, …) are noise.
async fn service_error(resp: reqwest::Response) -> S3Error {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    S3Error::Service {
        status: status.as_u16(),
        code: xml_tag(&text, "Code").unwrap_or_else(|| default_code(status).to_string()),
        message: xml_tag(&text, "Message")
            .map(|m| m.chars().take(300).collect())
            .unwrap_or_default(),
    }
}

/// The text of the first `<tag>…</tag>` in `xml` (enough for S3's flat error bodies).
fn xml_tag(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(xml[start..end].trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_and_addressing() {
        let body = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><BucketName>x</BucketName></Error>";
        assert_eq!(xml_tag(body, "Code").as_deref(), Some("NoSuchBucket"));
        assert_eq!(xml_tag(body, "Missing"), None);
        let loc = S3Location {
            endpoint: Url::parse("http://127.0.0.1:9000").unwrap(),
            region: "us-east-1".into(),
            bucket: "media".into(),
            path_style: true,
            credentials: Some(S3Credentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "wJalrXUtnFEMI".into(),
            }),
        };
        let b = S3Bucket::new(&loc).unwrap();
        let url = b.presign_get("in/clip 1.mp4", Duration::from_secs(60));
        assert!(url
            .as_str()
            .starts_with("http://127.0.0.1:9000/media/in/clip%201.mp4?"));
        assert!(url.as_str().contains("X-Amz-Signature="));
        assert!(!url.as_str().contains("wJalrXUtnFEMI"));
        assert!(!format!("{loc:?}").contains("wJalrXUtnFEMI"));
        // An IP endpoint cannot carry the bucket in its host name.
        let virtual_host = S3Location {
            path_style: false,
            ..loc
        };
        assert!(matches!(
            S3Bucket::new(&virtual_host),
            Err(S3Error::Invalid(_))
        ));
        let e = S3Error::Service {
            status: 503,
            code: "SlowDown".into(),
            message: String::new(),
        };
        assert!(e.is_transient());
        assert_eq!(e.to_string(), "S3 answered HTTP 503 SlowDown");
    }
}
