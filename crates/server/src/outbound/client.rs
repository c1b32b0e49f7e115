//! Connections to vetted addresses only, redirects followed by hand, and the checks a
//! source's response must pass before its body is read.

use super::{Outbound, OutboundError, Vetted};
use reqwest::{
    dns::{Addrs, Name, Resolve, Resolving},
    header::{self, HeaderMap, HeaderValue},
    Method, Response, StatusCode,
};
use std::{net::SocketAddr, sync::Arc, time::Duration};

/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// A resolver that knows one name, answers with its vetted addresses, and refuses every
/// other name: nothing the client does can trigger a lookup we did not check.
struct Pinned {
    name: Option<String>,
    addrs: Vec<SocketAddr>,
}

impl Resolve for Pinned {
    fn resolve(&self, name: Name) -> Resolving {
        let answer: Result<Addrs, Box<dyn std::error::Error + Send + Sync>> = match &self.name {
            Some(n) if n.eq_ignore_ascii_case(name.as_str()) => {
                Ok(Box::new(self.addrs.clone().into_iter()))
            }
            _ => Err(format!("{} was not vetted", name.as_str()).into()),
        };
        Box::pin(std::future::ready(answer))
    }
}

/// The media types a source may be served as. A missing type is allowed (many plain file
/// servers send none); `image/gif` because animated GIFs are a supported source; playlists
/// (`*mpegurl`, DASH manifests) are not, since they name other URLs.
pub fn content_type_allowed(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence.is_empty() {
        return true;
    }
    if essence.contains("mpegurl") {
        return false;
    }
    essence.starts_with("video/")
        || matches!(
            essence.as_str(),
            "application/octet-stream"
                | "binary/octet-stream"
                | "application/mp4"
                | "application/ogg"
                | "application/mxf"
                | "application/x-matroska"
                | "image/gif"
        )
}

/// reqwest's Display omits the cause chain, which holds the useful part ("connection refused").
pub fn describe(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "the host did not answer in time".to_string()
    } else if e.is_connect() {
        "could not connect to the host".to_string()
    } else {
        "the transfer failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        // hyper repeats itself down the chain; keep each distinct part once.
        if !msg.contains(&s_text) {
            msg.push_str(&format!(": {s_text}"));
        }
        source = s.source();
    }
    msg
}

impl Outbound {
    /// A client that can reach only `v`'s vetted addresses and follows no redirects.
    fn client_for(&self, v: &Vetted, timeout: Duration) -> Result<reqwest::Client, OutboundError> {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(Pinned {
                name: v.name.clone(),
                addrs: v.addrs.clone(),
            }))
            // A proxy would resolve the name itself, past our check.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .user_agent(concat!("convertrilo/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OutboundError::Unreachable(format!("could not set up the request: {e}")))
    }

    /// GET or HEAD `first`, following up to [`MAX_REDIRECTS`] redirects, each vetted and
    /// pinned afresh. `range` is sent on every hop (the probe proxy passes ffprobe's).
    pub async fn fetch(
        &self,
        first: Vetted,
        method: Method,
        range: Option<HeaderValue>,
    ) -> Result<Response, OutboundError> {
        let timeout = self.policy.timeout;
        let mut current = first;
        for hop in 0..=MAX_REDIRECTS {
            let client = self.client_for(&current, timeout)?;
            let mut request = client.request(method.clone(), current.url.clone());
            if let Some(r) = &range {
                request = request.header(header::RANGE, r.clone());
            }
            let response = request
                .send()
                .await
                .map_err(|e| OutboundError::Unreachable(describe(&e)))?;
            let status = response.status();
            if !matches!(
                status,
                StatusCode::MOVED_PERMANENTLY
                    | StatusCode::FOUND
                    | StatusCode::SEE_OTHER
                    | StatusCode::TEMPORARY_REDIRECT
                    | StatusCode::PERMANENT_REDIRECT
            ) {
                return Ok(response);
            }
            if hop == MAX_REDIRECTS {
                break;
            }
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| {
                    OutboundError::Unreachable(format!(
                        "the host answered HTTP {} without a usable Location",
                        status.as_u16()
                    ))
                })?;
            let next = current.url.join(location).map_err(|e| {
                OutboundError::InvalidUrl(format!(
                    "a redirect (hop {}) names an invalid URL ({e})",
                    hop + 1
                ))
            })?;
            current = self.vet_hop(next, hop + 1).await?;
        }
        Err(OutboundError::InvalidUrl(format!(
            "the URL redirects more than {MAX_REDIRECTS} times; give the file's final URL"
        )))
    }

    /// Vets `raw`, GETs it and checks the response as a source of at most `limit` bytes.
    /// The returned response's body is the source. Also returns the vetted first hop, so
    /// that later requests (the probe proxy's) reuse its one resolution.
    pub async fn open_source(
        &self,
        raw: &str,
        limit: u64,
    ) -> Result<(Vetted, Response), OutboundError> {
        let first = self.vet_source(raw).await?;
        let response = self.fetch(first.clone(), Method::GET, None).await?;
        self.check_source(&response, limit)?;
        Ok((first, response))
    }

    /// Status, type and size checks for a source response (200, or 206 to a range request).
    pub fn check_source(&self, response: &Response, limit: u64) -> Result<(), OutboundError> {
        let status = response.status();
        if !status.is_success() {
            return Err(OutboundError::Unreachable(format!(
                "the host answered HTTP {}{}",
                status.as_u16(),
                match status.as_u16() {
                    401 | 403 => "; the link may need to be public or freshly signed",
                    404 | 410 => "; check that the link is right",
                    _ => "",
                }
            )));
        }
        check_headers(
            response.headers(),
            status,
            limit,
            self.policy.require_content_length,
        )
    }

    /// POSTs exact bytes (a signed body) to a vetted webhook URL, pinned like every other
    /// request; a redirect is not followed (it is an answer like any other, and not a 2xx).
    pub async fn post_bytes(
        &self,
        raw: &str,
        body: Vec<u8>,
        headers: HeaderMap,
        timeout: Duration,
    ) -> Result<Response, OutboundError> {
        let target = self.vet(raw).await?;
        let client = self.client_for(&target, self.policy.timeout)?;
        client
            .post(target.url.clone())
            .timeout(timeout)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| OutboundError::Unreachable(describe(&e)))
    }

    /// POSTs a JSON body to a vetted webhook URL, as [`Self::post_bytes`] does.
    pub async fn post_json(
        &self,
        raw: &str,
        body: &serde_json::Value,
        mut headers: HeaderMap,
        timeout: Duration,
    ) -> Result<Response, OutboundError> {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.post_bytes(raw, body.to_string().into_bytes(), headers, timeout)
            .await
    }
}

/// The total size a response declares: `Content-Range`'s for a 206, else `Content-Length`.
fn declared_size(headers: &HeaderMap, status: StatusCode) -> Option<u64> {
    let value = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if status == StatusCode::PARTIAL_CONTENT {
        return value(header::CONTENT_RANGE)
            .and_then(|r| r.rsplit_once('/'))
            .and_then(|(_, total)| total.trim().parse().ok());
    }
    value(header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok())
}

pub(super) fn check_headers(
    headers: &HeaderMap,
    status: StatusCode,
    limit: u64,
    require_length: bool,
) -> Result<(), OutboundError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let shown = ct.to_str().unwrap_or("(not text)");
        if !content_type_allowed(shown) {
            return Err(OutboundError::ContentType(format!(
                "the host serves it as {shown:?}, which is not a video; link to the video file itself (served as video/* or application/octet-stream)"
            )));
        }
    }
    match declared_size(headers, status) {
        Some(size) if size > limit => Err(OutboundError::TooLarge { size, limit }),
        None if require_length => Err(OutboundError::MissingContentLength(
            "the host sends no Content-Length, and this server only fetches files whose size is declared up front; use a host that sends one".into(),
        )),
        _ => Ok(()),
    }
}
