//! Customers' own storage: S3-compatible buckets (through `convertrilo_storage::s3`) and
//! Google Drive ([`drive`]). This module turns request-side references into clients after
//! checking their endpoints, and turns S3's and Google's errors into messages that say what
//! to change: as 4xx answers while a request is being served, as `failureMessage` later.
//! Credentials never appear in those messages (they are scrubbed as a last line of defence).

pub mod drive;
pub mod folder;

use crate::{
    http::error::{AppError, AppResult},
    jobs::check_customer_endpoint,
    state::AppState,
};
use axum::http::StatusCode;
use convertrilo_core::{
    external::{BucketRef, S3Keys},
    request::S3Source,
    ErrorCode,
};
use convertrilo_storage::s3::{S3Bucket, S3Credentials, S3Error, S3Location};
use drive::DriveError;

/// A signing bucket for `b`, once its endpoint passed the customer-endpoint check.
pub fn s3_bucket(state: &AppState, b: &BucketRef, keys: Option<&S3Keys>) -> AppResult<S3Bucket> {
    let endpoint = reqwest::Url::parse(&b.endpoint_url()).map_err(|e| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidUrl,
            format!("the S3 endpoint is not a valid URL: {e}"),
        )
    })?;
    check_customer_endpoint(state, &endpoint)?;
    S3Bucket::new(&S3Location {
        endpoint,
        region: b.region.clone(),
        bucket: b.bucket.clone(),
        path_style: b.force_path_style,
        credentials: keys.map(|k| S3Credentials {
            access_key_id: k.access_key_id.expose().to_string(),
            secret_access_key: k.secret_access_key.expose().to_string(),
        }),
    })
    .map_err(|e| AppError::bad_request(e.to_string()))
}

/// What went wrong, for a person: S3's code with what to check. `op` is what we tried
/// ("read", "list", "write").
pub fn s3_problem(
    e: &S3Error,
    b: &BucketRef,
    key: Option<&str>,
    op: &str,
    keys: Option<&S3Keys>,
) -> String {
    let bucket = &b.bucket;
    let object = key.map_or_else(
        || format!("bucket \"{bucket}\""),
        |k| format!("\"{k}\" in bucket \"{bucket}\""),
    );
    let text = match e.code() {
        Some(code @ ("AccessDenied" | "AllAccessDisabled" | "AccountProblem")) => format!(
            "S3 denied access to {object} ({code}); check that accessKeyId and secretAccessKey are right and allowed to {op} it"
        ),
        Some(code @ "SignatureDoesNotMatch") => format!(
            "S3 rejected the request signature ({code}): secretAccessKey does not belong to accessKeyId"
        ),
        Some(code @ ("InvalidAccessKeyId" | "InvalidToken" | "ExpiredToken")) => {
            format!("S3 does not accept accessKeyId ({code}); check the key pair")
        }
        Some(code @ "NoSuchBucket") => format!(
            "bucket \"{bucket}\" does not exist at {} ({code}); check bucket, endpoint and region",
            b.endpoint_url()
        ),
        Some(code @ ("NoSuchKey" | "NotFound")) => format!("there is no object {object} ({code})"),
        Some(code @ ("PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException")) => format!(
            "bucket \"{bucket}\" is not served at this endpoint or region ({code}); set region (and endpoint) to where the bucket is"
        ),
        Some(code @ "EntityTooSmall") => format!(
            "S3 refused a part of the multipart upload as too small ({code}); this server's s3_part_size_bytes must be at least 5 MiB"
        ),
        _ => format!("S3 could not {op} {object}: {e}"),
    };
    scrub(text, keys)
}

/// Removes the caller's own key strings from a message, whatever put them there.
pub fn scrub(mut text: String, keys: Option<&S3Keys>) -> String {
    if let Some(k) = keys {
        for secret in [k.access_key_id.expose(), k.secret_access_key.expose()] {
            if secret.len() >= 4 {
                text = text.replace(secret, "***");
            }
        }
    }
    text
}

/// An S3 failure while serving a request: the client's to fix (4xx) unless S3 or the network
/// is having trouble.
pub fn s3_request_error(
    e: &S3Error,
    field: &str,
    b: &BucketRef,
    key: Option<&str>,
    op: &str,
    keys: Option<&S3Keys>,
) -> AppError {
    let message = format!("{field}: {}", s3_problem(e, b, key, op, keys));
    match e {
        S3Error::TooLarge(limit) => AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::FileTooLarge,
            format!("{field}: the object is larger than this server's limit of {limit} bytes"),
        ),
        e if e.is_transient() => upstream_unavailable(message),
        _ => AppError::bad_request(message),
    }
}

/// Storage of the customer's that cannot be reached now: retrying later may work.
pub fn upstream_unavailable(message: String) -> AppError {
    AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::UpstreamUnavailable,
        format!("{message}; retry later"),
    )
}

/// Checks that a `sourceS3` object exists and can be read (unless a listing just said so),
/// and returns its size.
pub async fn head_s3_source(state: &AppState, s: &S3Source, limit: u64) -> AppResult<u64> {
    let b = &s.object.bucket;
    let bucket = s3_bucket(state, b, s.keys.as_ref())?;
    let size = match s.size {
        Some(size) => size,
        None => {
            state
                .s3
                .head(&bucket, &s.object.key)
                .await
                .map_err(|e| {
                    s3_request_error(
                        &e,
                        "sourceS3",
                        b,
                        Some(&s.object.key),
                        "read",
                        s.keys.as_ref(),
                    )
                })?
                .size
        }
    };
    if size > limit {
        return Err(AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::FileTooLarge,
            format!(
                "sourceS3: \"{}\" is {size} bytes; this server takes sources of at most {limit} bytes",
                s.object.key
            ),
        ));
    }
    if size == 0 {
        return Err(AppError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::ProbeFailed,
            format!("sourceS3: \"{}\" is empty", s.object.key),
        ));
    }
    Ok(size)
}

/// A Drive failure while serving a request, with the contract's codes.
pub fn drive_request_error(e: DriveError, field: &str) -> AppError {
    let message = format!("{field}: {e}");
    match e {
        DriveError::NotConnected(_) => AppError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::GoogleDriveNotConnected,
            message,
        ),
        DriveError::NotFound(_) => AppError::not_found(message),
        DriveError::Forbidden(_) => {
            AppError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
        }
        DriveError::Refused(_) => AppError::bad_request(message),
        DriveError::TooLarge(_) => AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::FileTooLarge,
            message,
        ),
        DriveError::Unavailable(_) => upstream_unavailable(message),
        DriveError::Io(io) => AppError::internal(io),
    }
}
