//! The service's own objects in an S3-compatible bucket, under a key prefix: the
//! [`ObjectStore`] the API and workers use when `storage_url` is `s3://bucket/prefix`.
//!
//! Writes of unknown length (uploads through the API, stream parts) are spooled to a local
//! temporary file first, so the size limit is enforced before S3 sees a byte and large
//! objects go up as multipart uploads: memory stays flat. Clients upload and download
//! through links S3 presigns itself (see [`ObjectStore::presign_put`]), so media bytes do
//! not pass through the API at all.

use super::{network, service_error, S3Bucket, S3Client, S3Error, REQUEST_TTL};
use crate::{validate_key, ByteStream, ObjectStore, StorageError};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use reqwest::Url;
use rusty_s3::{actions, S3Action};
use std::{
    path::{Path, PathBuf},
    time::Duration,
};
use tokio::io::AsyncWriteExt;

pub struct S3Store {
    client: S3Client,
    bucket: S3Bucket,
    /// Without slashes at either end; empty for the bucket's root.
    prefix: String,
    /// Where `put_stream` spools bodies before sending them.
    staging: PathBuf,
}

impl S3Store {
    /// `prefix` may be empty; `staging` is created (and emptied of a dead process's files).
    pub fn new(
        client: S3Client,
        bucket: S3Bucket,
        prefix: &str,
        staging: impl Into<PathBuf>,
    ) -> std::io::Result<S3Store> {
        let staging = staging.into();
        std::fs::create_dir_all(&staging)?;
        for entry in std::fs::read_dir(&staging)?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(S3Store {
            client,
            bucket,
            prefix: prefix.trim_matches('/').to_string(),
            staging,
        })
    }

    pub fn bucket(&self) -> &S3Bucket {
        &self.bucket
    }

    /// The bucket key of one of our keys.
    pub fn full_key(&self, key: &str) -> Result<String, StorageError> {
        validate_key(key)?;
        Ok(if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        })
    }

    async fn spool(
        &self,
        staged: &Path,
        mut body: ByteStream<'_>,
        limit: u64,
    ) -> Result<u64, StorageError> {
        let mut file = tokio::fs::File::create(staged).await?;
        let mut written: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StorageError::Stream(e.to_string()))?;
            written += chunk.len() as u64;
            if written > limit {
                return Err(StorageError::TooLarge { limit });
            }
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok(written)
    }
}

fn remote(e: S3Error) -> StorageError {
    match e {
        S3Error::TooLarge(limit) => StorageError::TooLarge { limit },
        S3Error::Io(e) => StorageError::Io(e),
        other => StorageError::Remote(other.to_string()),
    }
}

fn is_missing(e: &S3Error) -> bool {
    matches!(e.code(), Some("NoSuchKey" | "NotFound"))
}

impl S3Client {
    /// The response to a GET of `key`, its body not yet read (streamed by the caller).
    pub async fn get_response(
        &self,
        b: &S3Bucket,
        key: &str,
    ) -> Result<reqwest::Response, S3Error> {
        let url = b.presign_get(key, REQUEST_TTL);
        let resp = self.http.get(url).send().await.map_err(network)?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(service_error(resp).await)
        }
    }
}

impl S3Bucket {
    /// [`S3Bucket::presign_get`] whose response names the file `download_name` (S3's
    /// `response-content-disposition`, covered by the signature).
    pub fn presign_download(&self, key: &str, ttl: Duration, download_name: &str) -> Url {
        let mut action = actions::GetObject::new(&self.bucket, self.credentials.as_ref(), key);
        let plain: String = download_name
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        action.query_mut().insert(
            "response-content-disposition",
            format!(
                "attachment; filename=\"{plain}\"; filename*=UTF-8''{}",
                crate::signing::percent_encode(download_name)
            ),
        );
        action.sign(ttl)
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put_stream(
        &self,
        key: &str,
        body: ByteStream<'_>,
        limit: u64,
    ) -> Result<u64, StorageError> {
        self.full_key(key)?;
        let staged = self.staging.join(uuid::Uuid::new_v4().simple().to_string());
        let result = match self.spool(&staged, body, limit).await {
            Ok(_) => self.put_file(key, &staged).await,
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&staged).await;
        result
    }

    async fn put_file(&self, key: &str, file: &Path) -> Result<u64, StorageError> {
        let full = self.full_key(key)?;
        let info = self
            .client
            .put_file(&self.bucket, &full, file, "application/octet-stream")
            .await
            .map_err(remote)?;
        // The local store moves the file in; do the same so callers see one behaviour.
        let _ = tokio::fs::remove_file(file).await;
        Ok(info.size)
    }

    async fn size(&self, key: &str) -> Result<u64, StorageError> {
        match self.client.head(&self.bucket, &self.full_key(key)?).await {
            Ok(info) => Ok(info.size),
            Err(e) if is_missing(&e) => Err(StorageError::NotFound(key.to_string())),
            Err(e) => Err(remote(e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.client
            .delete(&self.bucket, &self.full_key(key)?)
            .await
            .map_err(remote)
    }

    async fn get_stream(&self, key: &str) -> Result<ByteStream<'static>, StorageError> {
        match self
            .client
            .get_response(&self.bucket, &self.full_key(key)?)
            .await
        {
            Ok(resp) => Ok(resp
                .bytes_stream()
                .map_err(|e| std::io::Error::other(network(e).to_string()))
                .boxed()),
            Err(e) if is_missing(&e) => Err(StorageError::NotFound(key.to_string())),
            Err(e) => Err(remote(e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StorageError> {
        let folder = format!("{}/", self.full_key(prefix)?);
        let strip = folder.len() - prefix.len() - 1;
        let mut found = Vec::new();
        let mut token = None;
        loop {
            // With a delimiter: one level, as the local store lists.
            let page = self
                .client
                .list_page(&self.bucket, &folder, Some("/"), 1000, token.as_deref())
                .await
                .map_err(remote)?;
            found.extend(
                page.objects
                    .into_iter()
                    .map(|o| (o.key[strip..].to_string(), o.size)),
            );
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        found.sort();
        Ok(found)
    }

    fn local_path(&self, _key: &str) -> Option<PathBuf> {
        None
    }

    fn presign_get(&self, key: &str, ttl: Duration, download_name: Option<&str>) -> Option<Url> {
        let full = self.full_key(key).ok()?;
        Some(match download_name {
            Some(name) => self.bucket.presign_download(&full, ttl, name),
            None => self.bucket.presign_get(&full, ttl),
        })
    }

    fn presign_put(&self, key: &str, ttl: Duration) -> Option<Url> {
        Some(self.bucket.presign_put(&self.full_key(key).ok()?, ttl))
    }
}
