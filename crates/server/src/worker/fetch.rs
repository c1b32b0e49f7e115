//! Downloads a URL source to a local file, streaming, through the guarded client (see
//! `crate::outbound`), with a size cap and timeouts.

use crate::outbound::{describe, Outbound, OutboundError};
use futures::StreamExt;
use std::time::{Duration, Instant};

/// Downloads get this long before their average rate is judged.
const RATE_GRACE: Duration = Duration::from_secs(60);
/// The slowest average a source may keep up after the grace period.
const MIN_BYTES_PER_SEC: u64 = 16 * 1024;
use std::path::Path;
use tokio::io::AsyncWriteExt;

/// Why a download failed; every variant's message is fit for `failureMessage`.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL or its response was refused, or the host could not be reached.
    #[error("{}", .0.failure_message())]
    Refused(OutboundError),
    #[error("could not download the source: {0}")]
    Http(String),
    #[error("the source is larger than this server's limit of {0} bytes")]
    TooLarge(u64),
    #[error("the source host sends too slowly (under 16 KiB/s on average; {0} bytes received); try a faster host")]
    TooSlow(u64),
    #[error("could not store the downloaded source: {0}")]
    Io(#[from] std::io::Error),
}

impl FetchError {
    /// Network trouble may pass; a 4xx answer or an oversize file will not.
    pub fn is_transient(&self) -> bool {
        matches!(self, FetchError::Io(_))
    }
}

/// Downloads `url` to `dest`: vetted and pinned, each redirect checked, the response's type
/// and declared size checked, and the size capped again while streaming.
pub async fn download(
    outbound: &Outbound,
    url: &str,
    dest: &Path,
    limit: u64,
) -> Result<u64, FetchError> {
    let (_, response) = outbound
        .open_source(url, limit)
        .await
        .map_err(FetchError::Refused)?;
    let mut file = tokio::fs::File::create(dest).await?;
    let mut written = 0u64;
    let mut body = response.bytes_stream();
    let started = Instant::now();
    loop {
        // The client's read timeout only bounds each read: a host that trickles a byte now and
        // then would hold the worker for ever, so the average rate must keep up too.
        let chunk = match tokio::time::timeout(RATE_GRACE, body.next()).await {
            Ok(Some(chunk)) => chunk.map_err(|e| FetchError::Http(describe(&e)))?,
            Ok(None) => break,
            Err(_) => return Err(FetchError::TooSlow(written)),
        };
        written += chunk.len() as u64;
        if written > limit {
            return Err(FetchError::TooLarge(limit));
        }
        let elapsed = started.elapsed();
        if elapsed > RATE_GRACE
            && (written as f64 / elapsed.as_secs_f64()) < MIN_BYTES_PER_SEC as f64
        {
            return Err(FetchError::TooSlow(written));
        }
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    Ok(written)
}
