//! Requests to URLs a customer gave us (URL sources, on-demand webhooks), made safely.
//!
//! A URL from a client must never let it reach this server's own network (SSRF): the loopback
//! admin port, a database on a private address, the cloud metadata service at
//! 169.254.169.254. So every such request goes through [`Outbound`]:
//!
//! 1. **Vet** (`vet.rs`): http or https only; the host checked against the operator's
//!    blocklist and allowlist; the name resolved *once*, and every address it resolves to
//!    checked against the refused ranges (`ranges.rs`). Literal IPs in any spelling are
//!    caught because `url` normalises them (`0x7f.1`, `2130706433`, `[::ffff:7f00:1]`).
//! 2. **Pin** (`client.rs`): the connection goes to the vetted addresses and nowhere else.
//!    Each hop gets its own reqwest client whose DNS resolver knows only the vetted name and
//!    its vetted addresses, with system proxies off (a proxy would resolve the name again).
//!    A name that changes its answer between the check and the connection (DNS rebinding)
//!    gains nothing.
//! 3. **Redirects by hand**: reqwest follows none; we follow up to five, and each target is
//!    vetted and pinned afresh (scheme, lists, resolution, ranges).
//! 4. **Response checks** for sources: a 2xx status, a content type that can be a video,
//!    a size within the job's limit, and a `Content-Length` when the operator requires one.
//! 5. **ffprobe never sees the customer URL** (`proxy.rs`): it reads through a loopback-only
//!    proxy in this process that forwards to the vetted address through the same client.
//!
//! The worker applies all of this again at download time: whatever was true when the job was
//! created may not be when it runs.

mod client;
mod proxy;
pub mod ranges;
mod vet;

#[cfg(test)]
mod tests;

pub use client::{content_type_allowed, describe, MAX_REDIRECTS};
pub use proxy::{ProbeProxy, Ticket};
pub use vet::{HostPattern, Vetted};

use crate::{config::Config, http::error::AppError};
use axum::http::StatusCode;
use convertrilo_core::ErrorCode;
use std::{net::IpAddr, sync::Arc, time::Duration};

/// Name resolution (and, in tests, where a vetted address is really reached).
#[async_trait::async_trait]
pub trait Network: Send + Sync + 'static {
    /// Every address `host` resolves to.
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>>;

    /// The address a connection to the vetted `ip` goes to. Always `ip` in service; tests
    /// that stand a loopback server in for a public one map the public address to loopback
    /// here, after the check, so that the check itself runs exactly as in service.
    fn route(&self, ip: IpAddr) -> IpAddr {
        ip
    }
}

/// The operating system's resolver.
pub struct SystemNetwork;

#[async_trait::async_trait]
impl Network for SystemNetwork {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
        Ok(tokio::net::lookup_host((host, port))
            .await?
            .map(|a| a.ip())
            .collect())
    }
}

/// What the operator allows (from [`Config`]).
#[derive(Debug, Clone)]
pub struct Policy {
    pub ingest_enabled: bool,
    pub allow_private: bool,
    pub blocklist: Vec<HostPattern>,
    pub allowlist: Vec<HostPattern>,
    pub require_content_length: bool,
    /// Connect and idle-read timeout, and the bound on one name resolution.
    pub timeout: Duration,
}

impl Policy {
    /// The policy a configuration describes; a list entry that is not a host is an error.
    pub fn from_config(config: &Config) -> Result<Policy, String> {
        let list = |name: &str, entries: &[String]| {
            entries
                .iter()
                .map(|e| HostPattern::parse(e).map_err(|m| format!("{name}: {m}")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Policy {
            ingest_enabled: config.url_ingest_enabled,
            allow_private: config.ingest_allow_private_networks,
            blocklist: list("url_host_blocklist", &config.url_host_blocklist)?,
            allowlist: list("url_host_allowlist", &config.url_host_allowlist)?,
            require_content_length: config.require_content_length,
            timeout: Duration::from_secs(config.download_timeout_secs.max(1)),
        })
    }
}

/// The one way to reach a customer-given URL. Cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    policy: Arc<Policy>,
    net: Arc<dyn Network>,
}

impl Outbound {
    pub fn new(policy: Policy, net: Arc<dyn Network>) -> Outbound {
        Outbound {
            policy: Arc::new(policy),
            net,
        }
    }
}

/// What a URL is for; it names the field in messages and suggests the way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Source,
    Webhook,
}

impl Purpose {
    fn field(self) -> &'static str {
        match self {
            Purpose::Source => "sourceUrl",
            Purpose::Webhook => "webhook",
        }
    }
}

/// Why a URL was not fetched. Every message says what to change.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OutboundError {
    /// Not an http(s) URL, a malformed redirect, or too many redirects.
    #[error("{0}")]
    InvalidUrl(String),
    #[error("URL ingest is turned off on this server")]
    IngestDisabled,
    #[error("{0}")]
    HostBlocked(String),
    #[error("{0}")]
    NotResolvable(String),
    #[error("{0}")]
    PrivateAddress(String),
    /// The host could not be reached or answered with an error; may pass.
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    MissingContentLength(String),
    #[error("the source is {size} bytes, more than this server's limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("{0}")]
    ContentType(String),
}

impl OutboundError {
    pub fn code(&self) -> ErrorCode {
        match self {
            OutboundError::InvalidUrl(_) => ErrorCode::InvalidUrl,
            OutboundError::IngestDisabled => ErrorCode::UrlIngestDisabled,
            OutboundError::HostBlocked(_) => ErrorCode::UrlHostBlocked,
            OutboundError::NotResolvable(_) => ErrorCode::HostNotResolvable,
            OutboundError::PrivateAddress(_) => ErrorCode::PrivateIpBlocked,
            OutboundError::Unreachable(_) => ErrorCode::ProbeFailed,
            OutboundError::MissingContentLength(_) => ErrorCode::MissingContentLength,
            OutboundError::TooLarge { .. } => ErrorCode::FileTooLarge,
            OutboundError::ContentType(_) => ErrorCode::UnsupportedContentType,
        }
    }

    /// Refusals of the URL itself are 400; the feature being off is 403; what the source
    /// host serves (unreachable, wrong type, no length) is 422, as an unreadable file is;
    /// too large is 413, as for uploads.
    pub fn status(&self) -> StatusCode {
        match self {
            OutboundError::InvalidUrl(_)
            | OutboundError::HostBlocked(_)
            | OutboundError::NotResolvable(_)
            | OutboundError::PrivateAddress(_) => StatusCode::BAD_REQUEST,
            OutboundError::IngestDisabled => StatusCode::FORBIDDEN,
            OutboundError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            OutboundError::Unreachable(_)
            | OutboundError::MissingContentLength(_)
            | OutboundError::ContentType(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// The error as the client sees it, naming the field and the way out.
    pub fn into_app(self, purpose: Purpose) -> AppError {
        let field = purpose.field();
        let message = match (&self, purpose) {
            (OutboundError::IngestDisabled, _) => {
                "URL ingest is turned off on this server: leave sourceUrl out and PUT the file to the job's upload.url instead".to_string()
            }
            (OutboundError::Unreachable(why), Purpose::Source) => {
                format!("could not read the source: {why}")
            }
            (OutboundError::TooLarge { .. }, _) => format!("{self}; use a smaller file"),
            // These already say what the host should serve.
            (OutboundError::ContentType(_) | OutboundError::MissingContentLength(_), _) => {
                format!("{field}: {self}, or upload the file instead")
            }
            (_, Purpose::Source) => {
                format!("{field}: {self}; give another URL, or upload the file instead")
            }
            (_, Purpose::Webhook) => format!("{field}: {self}; give another URL"),
        };
        AppError::new(self.status(), self.code(), message)
    }

    /// The message a failed job shows (`failureMessage`).
    pub fn failure_message(&self) -> String {
        match self {
            OutboundError::Unreachable(why) => format!("could not download the source: {why}"),
            OutboundError::IngestDisabled => {
                "URL ingest was turned off on this server before the job ran; create the job again with an upload".to_string()
            }
            other => format!("the source URL was refused: {other}"),
        }
    }
}
