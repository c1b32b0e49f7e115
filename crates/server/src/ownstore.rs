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
                "the prefix {prefix:?} must be plain characters (letters, digits, - _ . /)"
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
    S3Bucket::new(&location).map_err(|e| invalid(e.to_string()))?;
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

/// The file in a local object directory that names it; the database keeps the same name.
const STORE_ID_FILE: &str = ".store-id";

/// With local storage, makes sure this process uses the object directory that the database's
/// other processes use: a worker started with another `--data-dir` would otherwise find no
/// uploads (failing jobs) and write outputs nobody can download. The first process on a
/// database names its directory (a random id in a file there, and the same id in the
/// database); later processes must find that id in their directory.
pub async fn check_local_store(
    config: &Config,
    repos: &convertrilo_db::Repos,
) -> anyhow::Result<()> {
    if s3_location(config)?.is_some() {
        return Ok(());
    }
    let dir = config.objects_dir();
    let file = dir.join(STORE_ID_FILE);
    let mismatch = |ours: &str| {
        anyhow::anyhow!(
            "the object directory {} ({ours}) is not the one the other processes on this database use: \
             on one machine, give every process the same --data-dir (CONVERTRILO_DATA_DIR); across \
             machines, set storage_url to an S3 bucket (see \"Running on several machines\" in the README)",
            dir.display(),
            ours = if ours.is_empty() { "new and empty".to_string() } else { format!("store {ours}") }
        )
    };
    match std::fs::read_to_string(&file) {
        Ok(id) => {
            let id = id.trim().to_string();
            let known = repos
                .accounts
                .setting_or_insert("local_store_id", &id)
                .await?;
            if known != id {
                return Err(mismatch(&id));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let known = repos
                .accounts
                .setting_or_insert("local_store_id", &id)
                .await?;
            if known != id {
                return Err(mismatch(""));
            }
            std::fs::write(&file, format!("{id}\n"))
                .with_context(|| format!("writing {}", file.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    }
    Ok(())
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
