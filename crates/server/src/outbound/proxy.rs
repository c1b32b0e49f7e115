//! The probe proxy: how ffprobe reads a URL source without ever fetching it itself.
//!
//! Given a customer URL, ffprobe would resolve the name on its own (after our check: DNS
//! rebinding) and follow redirects on its own (to anywhere). So it is never given one.
//! Instead, a probe opens a [`Ticket`]: a random, single-probe token on a small HTTP
//! listener bound to 127.0.0.1 in this process. ffprobe reads
//! `http://127.0.0.1:<port>/p/<token>/source.<ext>`; each of its GET/HEAD requests (with its
//! `Range`) is forwarded through [`Outbound::fetch`] to the *vetted* first address, every
//! redirect vetted and pinned again, and every response passes the source checks. The
//! proxy itself never answers with a redirect, so ffprobe only ever talks to loopback.
//!
//! Tokens are 32 random characters, known only to the probe that opened them, and die when
//! the ticket is dropped (the probe ended) or its lifetime passes, whichever is first. A
//! refusal met while forwarding (say a redirect to a private address) is kept on the ticket,
//! so the client hears that reason rather than ffprobe's "server returned 502".

use super::{Outbound, OutboundError, Vetted};
use axum::{
    body::Body,
    extract::{Path, State},
    http::{header, HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use futures::StreamExt;
use rand::{distributions::Alphanumeric, Rng};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// Headers of the upstream answer that ffprobe needs (size, seeking, type).
const FORWARDED: [header::HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::ACCEPT_RANGES,
    header::LAST_MODIFIED,
];

type Refusal = Arc<Mutex<Option<OutboundError>>>;

struct Session {
    first: Vetted,
    limit: u64,
    expires: Instant,
    refusal: Refusal,
}

struct Inner {
    addr: SocketAddr,
    outbound: Outbound,
    sessions: Mutex<HashMap<String, Session>>,
}

impl Inner {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The loopback listener ffprobe reads URL sources through. Cheap to clone.
#[derive(Clone)]
pub struct ProbeProxy {
    inner: Arc<Inner>,
}

/// One probe's access to one vetted source; closes when dropped.
pub struct Ticket {
    inner: Arc<Inner>,
    token: String,
    url: String,
    refusal: Refusal,
}

impl ProbeProxy {
    /// Binds 127.0.0.1 on a free port and serves until `shutdown`.
    pub async fn start(
        outbound: Outbound,
        shutdown: CancellationToken,
    ) -> std::io::Result<(ProbeProxy, JoinHandle<()>)> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let inner = Arc::new(Inner {
            addr: listener.local_addr()?,
            outbound,
            sessions: Mutex::new(HashMap::new()),
        });
        let router = Router::new()
            .route("/p/{token}/{name}", get(forward))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the probe proxy stopped");
            }
        });
        Ok((ProbeProxy { inner }, task))
    }

    /// Lets one probe read `first` (at most `limit` bytes per response) for `lifetime`.
    /// The loopback URL keeps the source's file extension, which helps ffprobe guess raw
    /// formats.
    pub fn open(&self, first: Vetted, limit: u64, lifetime: Duration) -> Ticket {
        let token: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        let ext = extension(first.url.path());
        let refusal = Refusal::default();
        let now = Instant::now();
        let mut sessions = self.inner.sessions();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(
            token.clone(),
            Session {
                first,
                limit,
                expires: now + lifetime,
                refusal: refusal.clone(),
            },
        );
        Ticket {
            inner: self.inner.clone(),
            url: format!("http://{}/p/{token}/source{ext}", self.inner.addr),
            token,
            refusal,
        }
    }

    /// Open tickets (for tests: every probe closes its own).
    pub fn open_tickets(&self) -> usize {
        self.inner.sessions().len()
    }
}

impl Ticket {
    /// The loopback URL ffprobe reads.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The first refusal met while forwarding, if any.
    pub fn refusal(&self) -> Option<OutboundError> {
        self.refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.inner.sessions().remove(&self.token);
    }
}

/// `.mp4` from `/a/b/clip.mp4`, when it is a plain short extension.
fn extension(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or_default();
    match name.rsplit_once('.') {
        Some((stem, ext))
            if !stem.is_empty()
                && (1..=8).contains(&ext.len())
                && ext.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            format!(".{}", ext.to_ascii_lowercase())
        }
        _ => String::new(),
    }
}

async fn forward(
    State(inner): State<Arc<Inner>>,
    Path((token, _name)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let session = inner.sessions().get(&token).and_then(|s| {
        (s.expires > Instant::now()).then(|| (s.first.clone(), s.limit, s.refusal.clone()))
    });
    let Some((first, limit, refusal)) = session else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let range = headers.get(header::RANGE).cloned();
    let result = inner.outbound.fetch(first, method, range).await;
    let upstream = match result {
        // Asking past the end is part of probing, not a fault of the source.
        Ok(r) if r.status() == StatusCode::RANGE_NOT_SATISFIABLE => {
            return StatusCode::RANGE_NOT_SATISFIABLE.into_response()
        }
        Ok(r) => match inner.outbound.check_source(&r, limit) {
            Ok(()) => r,
            Err(e) => return refuse(&refusal, e),
        },
        Err(e) => return refuse(&refusal, e),
    };
    let mut response = Response::builder().status(upstream.status());
    for name in FORWARDED {
        if let Some(v) = upstream.headers().get(&name) {
            response = response.header(name, v.clone());
        }
    }
    // The cap holds even when the upstream declared nothing or declared less than it sends.
    let mut seen = 0u64;
    let body = upstream.bytes_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        seen += chunk.len() as u64;
        if seen > limit {
            return Err(std::io::Error::other("the source is larger than the limit"));
        }
        Ok(chunk)
    });
    response
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

fn refuse(slot: &Refusal, e: OutboundError) -> Response {
    tracing::info!(reason = %e, "probe proxy refused a request");
    let mut kept = slot.lock().unwrap_or_else(|p| p.into_inner());
    kept.get_or_insert(e);
    StatusCode::BAD_GATEWAY.into_response()
}
