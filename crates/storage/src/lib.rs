//! Where media bytes live: an object store addressed by keys (`inputs/<job>`, `outputs/<job>/…`)
//! and the HMAC-signed, expiring URLs through which clients upload and download them.
//! The embedded default is a local directory; writes stream to a temporary file and are
//! renamed into place, so a reader never sees half an object and memory stays flat.
//! [`s3`] is a client for S3-compatible stores (customers' buckets), and [`s3::S3Store`]
//! keeps the service's own objects in a bucket when so configured.

pub mod local;
pub mod s3;
pub mod signing;

pub use local::LocalStore;
pub use signing::{SignedUrl, UrlSigner};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    #[error("object is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("upload stream failed: {0}")]
    Stream(String),
    /// A remote store (S3) failed; the text names S3's error code, never a signed URL.
    #[error("object store: {0}")]
    Remote(String),
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A stream of body chunks, as an HTTP server hands them over.
pub type ByteStream<'a> = BoxStream<'a, Result<Bytes, std::io::Error>>;

#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Streams `body` into `key`, refusing more than `limit` bytes. Returns the size written.
    /// The object appears atomically, or not at all.
    async fn put_stream(
        &self,
        key: &str,
        body: ByteStream<'_>,
        limit: u64,
    ) -> Result<u64, StorageError>;
    /// Moves (or uploads) a finished local file into `key`.
    async fn put_file(&self, key: &str, file: &Path) -> Result<u64, StorageError>;
    /// Size of the object, or `NotFound`.
    async fn size(&self, key: &str) -> Result<u64, StorageError>;
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// Streams the object's bytes, or `NotFound`.
    async fn get_stream(&self, key: &str) -> Result<ByteStream<'static>, StorageError>;
    /// Keys (with sizes) of the objects under `prefix/`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StorageError>;
    /// A local path for the object when the store is a local directory (ffmpeg reads it
    /// in place); `None` for remote stores, which callers download instead.
    fn local_path(&self, key: &str) -> Option<PathBuf>;
    /// A link through which anyone holding it can GET the object until `ttl` passes, when
    /// the store serves its own links (S3 presigning); `None` for the local store, whose
    /// links the API signs and serves. `download_name` names the file for the browser.
    fn presign_get(
        &self,
        _key: &str,
        _ttl: std::time::Duration,
        _download_name: Option<&str>,
    ) -> Option<reqwest::Url> {
        None
    }
    /// The same for a PUT of the object's bytes (uploads then bypass the API).
    fn presign_put(&self, _key: &str, _ttl: std::time::Duration) -> Option<reqwest::Url> {
        None
    }
}

/// Keys are relative, `/`-separated, of plain characters; never `..` or absolute.
pub fn validate_key(key: &str) -> Result<(), StorageError> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidKey(key.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys() {
        assert!(super::validate_key("inputs/0190-ab/source").is_ok());
        for bad in ["", "/etc/passwd", "a/../b", "a//b", "a/b c", "./a"] {
            assert!(super::validate_key(bad).is_err(), "{bad}");
        }
    }
}
