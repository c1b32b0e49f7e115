//! The local-directory object store.

use crate::{validate_key, ByteStream, ObjectStore, StorageError};
use async_trait::async_trait;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

pub struct LocalStore {
    root: PathBuf,
    /// Partial writes live here, on the same filesystem as `root`, so the final rename is atomic.
    staging: PathBuf,
}

/// How long a staging file must lie untouched before a starting process deletes it.
const STALE_STAGING: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        let staging = root.join(".staging");
        std::fs::create_dir_all(&staging)?;
        // Partial files of a process that died mid-upload are garbage, but other processes
        // may share this directory and be writing theirs right now: only files nobody has
        // written to for a day go (a live upload touches its file continuously).
        let stale = std::time::SystemTime::now() - STALE_STAGING;
        for entry in std::fs::read_dir(&staging)?.flatten() {
            let modified = entry.metadata().and_then(|m| m.modified());
            if modified.is_ok_and(|t| t < stale) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Self { root, staging })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    fn staging_file(&self) -> PathBuf {
        self.staging.join(uuid::Uuid::new_v4().simple().to_string())
    }

    async fn publish(&self, staged: &Path, key: &str) -> Result<(), StorageError> {
        let dest = self.path(key)?;
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::rename(staged, &dest).await?;
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put_stream(
        &self,
        key: &str,
        mut body: ByteStream<'_>,
        limit: u64,
    ) -> Result<u64, StorageError> {
        self.path(key)?;
        let staged = self.staging_file();
        let result = async {
            let mut file = tokio::fs::File::create(&staged).await?;
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
            file.sync_all().await?;
            Ok(written)
        }
        .await;
        match result {
            Ok(n) => {
                self.publish(&staged, key).await?;
                Ok(n)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&staged).await;
                Err(e)
            }
        }
    }

    async fn put_file(&self, key: &str, file: &Path) -> Result<u64, StorageError> {
        let size = tokio::fs::metadata(file).await?.len();
        let dest = self.path(key)?;
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        // A rename when the file is on the same filesystem; a copy through staging otherwise,
        // so the object still appears atomically.
        if tokio::fs::rename(file, &dest).await.is_err() {
            let staged = self.staging_file();
            tokio::fs::copy(file, &staged).await?;
            self.publish(&staged, key).await?;
        }
        Ok(size)
    }

    async fn size(&self, key: &str) -> Result<u64, StorageError> {
        match tokio::fs::metadata(self.path(key)?).await {
            Ok(m) if m.is_file() => Ok(m.len()),
            Ok(_) => Err(StorageError::NotFound(key.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StorageError::NotFound(key.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_stream(&self, key: &str) -> Result<ByteStream<'static>, StorageError> {
        match tokio::fs::File::open(self.path(key)?).await {
            Ok(f) => Ok(tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024).boxed()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StorageError::NotFound(key.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StorageError> {
        let dir = self.path(prefix)?;
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        // One level: keys here are `prefix/name`, never nested further.
        let mut found = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let meta = entry.metadata().await?;
            if let (true, Some(name)) = (meta.is_file(), entry.file_name().to_str()) {
                found.push((format!("{prefix}/{name}"), meta.len()));
            }
        }
        found.sort();
        Ok(found)
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path(key).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn stream(chunks: Vec<&'static [u8]>) -> ByteStream<'static> {
        futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c)))).boxed()
    }

    #[tokio::test]
    async fn streams_in_and_refuses_oversize_without_leaving_a_trace() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        assert_eq!(
            store
                .put_stream("inputs/a", stream(vec![b"abc", b"def"]), 10)
                .await
                .unwrap(),
            6
        );
        assert_eq!(store.size("inputs/a").await.unwrap(), 6);
        let err = store
            .put_stream("inputs/b", stream(vec![b"abcdef", b"ghijkl"]), 10)
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::TooLarge { limit: 10 }));
        assert!(matches!(
            store.size("inputs/b").await,
            Err(StorageError::NotFound(_))
        ));
        assert_eq!(
            std::fs::read_dir(dir.path().join(".staging"))
                .unwrap()
                .count(),
            0
        );
        let mut read = Vec::new();
        let mut s = store.get_stream("inputs/a").await.unwrap();
        while let Some(chunk) = s.next().await {
            read.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(read, b"abcdef");
        store
            .put_stream("inputs/c", stream(vec![b"x"]), 10)
            .await
            .unwrap();
        assert_eq!(
            store.list("inputs").await.unwrap(),
            [("inputs/a".to_string(), 6), ("inputs/c".to_string(), 1)]
        );
        assert!(store.list("nothing").await.unwrap().is_empty());
        store.delete("inputs/a").await.unwrap();
        store.delete("inputs/a").await.unwrap();
        assert!(matches!(
            store.get_stream("inputs/a").await,
            Err(StorageError::NotFound(_))
        ));
        assert!(store.put_stream("../x", stream(vec![]), 10).await.is_err());
    }
}
