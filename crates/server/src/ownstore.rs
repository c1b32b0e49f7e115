//! The service's own object store: a local directory by default, or an S3-compatible bucket
//! under a prefix when `storage_url` is `s3://bucket/prefix`.
//!
//! With S3, clients PUT uploads straight to the bucket through presigned links, so the API
//! never sees the bytes arrive. It learns of an upload when the job is next asked to use its
//! input (probe, approve, confirm): [`discover_upload`] looks for the object in the job's
//! upload slot and records it, enforcing the size limit after the fact.

use crate::{
    config::{Config, ConfigError},
    http::error::{AppError, AppResult},
    jobs::{source_limit, upload_slot},
    state::AppState,
};
use anyhow::Context;
use convertrilo_core::JobStatus;
use convertrilo_db::{Ingest, Job};
use convertrilo_storage::{
    s3::{S3Bucket, S3Client, S3Credentials, S3Location, S3Store},
    LocalStore, ObjectStore, StorageError,
};
use reqwest::Url;
use std::sync::Arc;

/// The bucket and key prefix `storage_url` names, or `None` for the local directory.
pub fn s3_location(config: &Config) -> Result<Option<(S3Location, String)>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        field: "storage_url",
        message,
    };
    let Some(raw) = config.storage_url.as_deref().filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let rest = raw.strip_prefix("s3://").ok_or_else(|| {
        invalid("must be s3://bucket/prefix (or unset for the local data directory)".into())
    })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(invalid("names no bucket: write s3://bucket/prefix".into()));
    }
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty() {
        convertrilo_storage::validate_key(prefix).map_err(|_| {
            invalid(format!(
                "the prefix {prefix:?} must be plain characters (letters, digits, - _ . /) \
                 in segments that are not empty, `.` or `..`"
            ))
        })?;
    }
    let endpoint = match &config.storage_s3_endpoint {
        Some(e) => e.clone(),
        None => format!("https://s3.{}.amazonaws.com", config.storage_s3_region),
    };
    let endpoint = Url::parse(&endpoint).map_err(|e| ConfigError::Invalid {
        field: "storage_s3_endpoint",
        message: e.to_string(),
    })?;
    let credentials = match (
        &config.storage_s3_access_key_id,
        &config.storage_s3_secret_access_key,
    ) {
        (Some(id), Some(secret)) => Some(S3Credentials {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
        }),
        (None, None) => None,
        _ => {
            return Err(ConfigError::Invalid {
                field: "storage_s3_access_key_id",
                message: "set both the access key id and the secret access key, or neither".into(),
            })
        }
    };
    let location = S3Location {
        endpoint,
        region: config.storage_s3_region.clone(),
        bucket: bucket.to_string(),
        path_style: config.storage_s3_force_path_style,
        credentials,
    };
    // Catches a bucket name that cannot be a host name while the config is being read.
    // The storage layer speaks of the request field; here the setting is what to change.
    S3Bucket::new(&location).map_err(|e| {
        let message = e
            .to_string()
            .replace("forcePathStyle: true", "storage_s3_force_path_style = true");
        ConfigError::Invalid {
            field: if message.contains("S3 endpoint") {
                "storage_s3_endpoint"
            } else {
                "storage_url"
            },
            message,
        }
    })?;
    Ok(Some((location, prefix.to_string())))
}

/// The store `config` asks for. `s3` is the client already built for customers' buckets
/// (same timeouts, redirects refused, multipart settings).
pub fn build(config: &Config, s3: &S3Client) -> anyhow::Result<Arc<dyn ObjectStore>> {
    Ok(match s3_location(config)? {
        None => Arc::new(
            LocalStore::new(config.objects_dir())
                .with_context(|| format!("object directory {}", config.objects_dir().display()))?,
        ),
        Some((location, prefix)) => {
            tracing::info!(bucket = %location.bucket, prefix = %prefix, "objects are stored in S3");
            // Spooled uploads need a local directory; the scratch space is that.
            let staging = config.scratch_dir().join("store-staging");
            Arc::new(
                S3Store::new(s3.clone(), S3Bucket::new(&location)?, &prefix, &staging)
                    .with_context(|| format!("staging directory {}", staging.display()))?,
            )
        }
    })
}

/// The object that names a store; the database keeps the same name.
const STORE_ID_KEY: &str = "store-id";
const STORE_ID_SETTING: &str = "object_store_id";

/// Makes sure this process can reach its object store and that it is the store the
/// database's other processes use. A worker on another `--data-dir`, bucket or endpoint would
/// otherwise take jobs only to find no uploads, and write outputs nobody can download; one
/// that cannot reach its store would hand every job it takes back. So it refuses to start.
///
/// The first process on a database names its store: a random id in the object `store-id`
/// and the same id in the database. Later processes must find that id in their store.
pub async fn check_store_identity(
    config: &Config,
    store: &dyn ObjectStore,
    repos: &convertrilo_db::Repos,
) -> anyhow::Result<String> {
    let which = match s3_location(config)? {
        None => format!("the object directory {}", config.objects_dir().display()),
        Some((location, prefix)) => format!(
            "the bucket {} (prefix {prefix:?}) at {}",
            location.bucket, location.endpoint
        ),
    };
    let unreachable = |e: StorageError| {
        anyhow::anyhow!(
            "cannot use {which}: {e}; check storage_url, storage_s3_endpoint and the store's \
             credentials (see \"Running on several machines\" in the README)"
        )
    };
    let mismatch = |ours: Option<&str>| {
        anyhow::anyhow!(
            "{which} ({ours}) is not the object store the other processes on this database use: \
             on one machine, give every process the same --data-dir (CONVERTRILO_DATA_DIR); across \
             machines, give every process the same storage_url and storage_s3_endpoint (see \
             \"Running on several machines\" in the README)",
            ours = match ours {
                Some(id) => format!("store {id}"),
                None => "new and empty".to_string(),
            }
        )
    };
    if let Some(id) = read_store_id(store).await.map_err(unreachable)? {
        let known = repos
            .accounts
            .setting_or_insert(STORE_ID_SETTING, &id)
            .await?;
        return if known == id {
            Ok(id)
        } else {
            Err(mismatch(Some(&id)))
        };
    }
    let fresh = uuid::Uuid::new_v4().simple().to_string();
    let known = repos
        .accounts
        .setting_or_insert(STORE_ID_SETTING, &fresh)
        .await?;
    if known == fresh {
        let body = futures::stream::iter([Ok(bytes::Bytes::from(format!("{fresh}\n")))]);
        if let Err(e) = store.put_stream(STORE_ID_KEY, Box::pin(body), 64).await {
            // Unname the store again, or every later start would find the database naming a
            // store that holds no name (a passing outage, read-only credentials).
            repos
                .accounts
                .delete_setting(STORE_ID_SETTING, Some(&fresh))
                .await?;
            return Err(unreachable(e));
        }
        return Ok(fresh);
    }
    // Another process named the store a moment ago and may not have written its object yet
    // (an API and its workers started together on a new database): wait for it a while.
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        if let Some(id) = read_store_id(store).await.map_err(unreachable)? {
            return if id == known {
                Ok(id)
            } else {
                Err(mismatch(Some(&id)))
            };
        }
    }
    // The database names a store, and this one holds no name. Usually the fleet's store is
    // elsewhere (the settings are wrong); only when the database has never held a job can it
    // be a first start cut off between the two writes, which `forget-store` undoes.
    let mut err = mismatch(None).to_string();
    if jobs_recorded(repos).await? == 0 {
        err.push_str(
            ". If this database's store really is this one (no process has stored anything \
             yet: a first start was cut off), `convertrilo admin forget-store` lets the next \
             start name it",
        );
    }
    Err(anyhow::anyhow!(err))
}

/// How many jobs the database holds, whatever their state.
async fn jobs_recorded(repos: &convertrilo_db::Repos) -> anyhow::Result<i64> {
    let stats = repos.stats.stats(convertrilo_core::time::now_ms()).await?;
    Ok(stats.jobs_by_status.iter().map(|(_, n)| n).sum())
}

/// Forgets which store the database's processes use, so that the next process to start names
/// its own: after a first start that was cut off, or for a fleet moved to a new, empty store
/// on purpose (one that holds a copy of the old store's objects, `store-id` included, needs
/// nothing: it is recognised). While jobs or live workers use the current store it refuses
/// unless `force`d. True when the database named a store.
pub async fn forget_store(
    config: &Config,
    repos: &convertrilo_db::Repos,
    force: bool,
) -> anyhow::Result<bool> {
    if !force {
        let live_since = config.worker_live_since(convertrilo_core::time::now_ms());
        let live = repos
            .workers
            .workers()
            .await?
            .iter()
            .filter(|w| w.worker.last_seen >= live_since)
            .count();
        let jobs = jobs_recorded(repos).await?;
        if live > 0 || jobs > 0 {
            anyhow::bail!(
                "{jobs} job(s) and {live} live worker process(es) use the object store this \
                 database names; forgetting it would leave their objects behind. A process \
                 refused for another store has wrong settings: fix those instead. To move to \
                 a new, empty store on purpose, stop the fleet and pass --force"
            );
        }
    }
    Ok(repos
        .accounts
        .delete_setting(STORE_ID_SETTING, None)
        .await?)
}

/// The readiness probe: the store must still hold this process's `store-id`, so that a store
/// moved, emptied or replaced under a running process shows as not ready.
pub async fn probe_store(store: &dyn ObjectStore, expected: &str) -> Result<(), StorageError> {
    match read_store_id(store).await? {
        Some(id) if id == expected => Ok(()),
        found => Err(StorageError::Remote(format!(
            "its `{STORE_ID_KEY}` object is {}: the store was moved, emptied or replaced under \
             this process; restart it on the fleet's store",
            match found {
                Some(id) => format!("{id}, not {expected}"),
                None => "gone".to_string(),
            }
        ))),
    }
}

/// The id in the store's `store-id` object, `None` when there is none yet.
async fn read_store_id(store: &dyn ObjectStore) -> Result<Option<String>, StorageError> {
    use futures::TryStreamExt;
    let stream = match store.get_stream(STORE_ID_KEY).await {
        Ok(stream) => stream,
        Err(StorageError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let bytes: Vec<u8> = stream
        .map_ok(|chunk| chunk.to_vec())
        .try_concat()
        .await
        .map_err(StorageError::from)?;
    Ok(Some(String::from_utf8_lossy(&bytes).trim().to_string()))
}

/// True when clients upload straight to the store (presigned links), not through the API.
pub fn direct_uploads(state: &AppState) -> bool {
    state
        .store
        .presign_put("inputs/probe", std::time::Duration::from_secs(1))
        .is_some()
}

/// `job` as it is once an upload made straight to the store is recorded: for a `created`
/// upload job without a source yet, the upload slot is checked (HEAD) and, when an object is
/// there, it becomes the job's input. Too large an object is deleted (413); an empty one too.
pub async fn discover_upload(state: &AppState, job: &Job) -> AppResult<Job> {
    if job.ingest != Ingest::Upload
        || job.status != JobStatus::Created
        || job.input_size.is_some()
        || !direct_uploads(state)
    {
        return Ok(job.clone());
    }
    let slot = upload_slot(job.id);
    let size = match state.store.size(&slot).await {
        Ok(size) => size,
        Err(StorageError::NotFound(_)) => return Ok(job.clone()),
        Err(e) => return Err(e.into()),
    };
    let limit = source_limit(state, job);
    if size > limit {
        state.store.delete(&slot).await?;
        return Err(StorageError::TooLarge { limit }.into());
    }
    if size == 0 {
        state.store.delete(&slot).await?;
        return Err(AppError::bad_request(
            "the upload was empty; PUT the file's bytes to the job's upload.url again",
        ));
    }
    if state
        .repos
        .jobs
        .mark_uploaded(job.id, &slot, size)
        .await?
        .is_none()
    {
        // Confirmed or canceled meanwhile: the job as it is now tells the caller.
        tracing::debug!(job = %job.id, "upload found after the job left `created`");
    } else {
        tracing::info!(job = %job.id, bytes = size, "upload found in the object store");
    }
    state
        .repos
        .jobs
        .job(job.id, None)
        .await?
        .ok_or_else(|| AppError::not_found("no such job"))
}
