//! The worker's side of customers' storage: fetching an S3 or Drive source into scratch
//! space, and delivering the output where the job says (kept here, an S3 bucket, a Drive
//! folder). Errors are classified where they happen: a refusal the customer must fix fails
//! the job with S3's or Google's reason; trouble that may pass is retried a few times here
//! (an upload is cheaper to repeat than an encode), then the job goes back to the queue.

use super::run::Failure;
use crate::{
    external::{drive::DriveError, s3_bucket, s3_problem},
    state::AppState,
};
use convertrilo_core::external::{Destination, JobSecrets, SourceRef};
use convertrilo_db::Job;
use convertrilo_storage::s3::S3Error;
use std::{future::Future, path::Path, time::Duration};

/// Attempts at one delivery before the job is handed back to the queue.
const DELIVERY_ATTEMPTS: u32 = 3;

/// Retries `op` while it fails in a way that may pass.
async fn with_retries<T, E, F, Fut>(
    what: &str,
    is_transient: impl Fn(&E) -> bool,
    mut op: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if is_transient(&e) && attempt < DELIVERY_ATTEMPTS => {
                tracing::info!(attempt, error = %e, "{what} failed; trying again");
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn s3_failure(e: &S3Error, message: String) -> Failure {
    if e.is_transient() {
        Failure::Retry(message)
    } else {
        Failure::Fatal(message)
    }
}

fn drive_failure(e: DriveError, what: &str) -> Failure {
    let message = format!("{what}: {e}");
    if e.is_transient() {
        Failure::Retry(message)
    } else {
        Failure::Fatal(message)
    }
}

/// Stores refreshed Drive tokens so that the job's next step (or a retry) uses them. A job
/// that has ended meanwhile keeps nothing.
async fn keep_tokens(state: &AppState, job: &Job, secrets: &JobSecrets) {
    let sealed = state.secrets.seal(job.id, secrets);
    if let Err(e) = state.repos.jobs.replace_job_secret(job.id, &sealed).await {
        tracing::warn!(error = %e, "could not store a renewed Google Drive token");
    }
}

/// Downloads an S3 or Drive source into `dest`.
pub(super) async fn fetch(
    state: &AppState,
    job: &Job,
    secrets: &mut JobSecrets,
    dest: &Path,
    limit: u64,
) -> Result<u64, Failure> {
    match &job.source_ref {
        Some(SourceRef::S3(object)) => {
            let keys = secrets.source_s3.as_ref();
            let bucket = s3_bucket(state, &object.bucket, keys)
                .map_err(|e| Failure::Fatal(format!("sourceS3: {}", e.message)))?;
            with_retries("S3 download", S3Error::is_transient, || {
                state.s3.get_to_file(&bucket, &object.key, dest, limit)
            })
            .await
            .map_err(|e| {
                let why = s3_problem(&e, &object.bucket, Some(&object.key), "read", keys);
                s3_failure(&e, format!("could not read the source from S3: {why}"))
            })
        }
        Some(SourceRef::GoogleDrive { file_id, .. }) => {
            let tokens = secrets.source_drive.clone().unwrap_or_default();
            let mut session = state.drive.session(tokens);
            // One session across the tries, so that a renewed token is not forgotten.
            let mut attempt = 1;
            let got = loop {
                match session.download(file_id, dest, limit).await {
                    Err(e) if e.is_transient() && attempt < DELIVERY_ATTEMPTS => {
                        tracing::info!(attempt, error = %e, "Drive download failed; trying again");
                        tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                        attempt += 1;
                    }
                    other => break other,
                }
            };
            if session.refreshed() {
                secrets.source_drive = Some(session.tokens().clone());
                keep_tokens(state, job, secrets).await;
            }
            got.map_err(|e| drive_failure(e, "could not read the source from Google Drive"))
        }
        None => Err(Failure::Fatal(
            "the job's source location is missing; create the job again".into(),
        )),
    }
}

/// Puts the encoded file where the job's destination says; returns its size.
pub(super) async fn deliver(
    state: &AppState,
    job: &Job,
    secrets: &mut JobSecrets,
    output: &Path,
) -> Result<u64, Failure> {
    let content_type = job.spec.container.mime_type();
    match &job.destination {
        Destination::Cdn => state
            .store
            .put_file(&job.output_key, output)
            .await
            .map_err(|e| Failure::Retry(format!("could not store the output: {e}"))),
        Destination::S3(object) => {
            let keys = secrets.output_s3.as_ref();
            let bucket = s3_bucket(state, &object.bucket, keys)
                .map_err(|e| Failure::Fatal(format!("outputS3: {}", e.message)))?;
            let put = with_retries("S3 upload", S3Error::is_transient, || {
                state
                    .s3
                    .put_file(&bucket, &object.key, output, content_type)
            })
            .await
            .map_err(|e| {
                let why = s3_problem(&e, &object.bucket, Some(&object.key), "write", keys);
                s3_failure(&e, format!("could not deliver the output to S3: {why}"))
            })?;
            tracing::info!(
                bytes = put.size,
                parts = put.parts,
                "output delivered to S3"
            );
            Ok(put.size)
        }
        Destination::GoogleDrive {
            folder_id,
            file_name,
        } => {
            let tokens = secrets.output_drive.clone().unwrap_or_default();
            let mut session = state.drive.session(tokens);
            let mut attempt = 1;
            let put = loop {
                match session
                    .upload(folder_id, file_name, output, content_type)
                    .await
                {
                    Err(e) if e.is_transient() && attempt < DELIVERY_ATTEMPTS => {
                        tracing::info!(attempt, error = %e, "Drive upload failed; trying again");
                        tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                        attempt += 1;
                    }
                    other => break other,
                }
            };
            if session.refreshed() {
                secrets.output_drive = Some(session.tokens().clone());
                keep_tokens(state, job, secrets).await;
            }
            let file_id =
                put.map_err(|e| drive_failure(e, "could not deliver the output to Google Drive"))?;
            tracing::info!(%file_id, "output delivered to Google Drive");
            Ok(tokio::fs::metadata(output)
                .await
                .map(|m| m.len())
                .unwrap_or(0))
        }
    }
}
