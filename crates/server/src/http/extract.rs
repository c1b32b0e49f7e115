//! Request extractors that answer in our error shape: JSON bodies (optional where the
//! contract allows an empty body) and path ids.

use super::error::AppError;
use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Request},
    http::request::Parts,
};
use convertrilo_core::{request::Issue, JobId};
use serde_json::Value;

/// A JSON body; malformed JSON or a wrong content type is `400 invalid_body`.
/// An empty body reads as `{}` because the contract makes several bodies optional.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let message = if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                "the JSON body is larger than this endpoint accepts; send a smaller body"
                    .to_string()
            } else {
                format!("could not read the body: {e}")
            };
            let issue = Issue {
                path: String::new(),
                message,
            };
            AppError {
                status: e.status(),
                ..AppError::invalid_body(vec![issue])
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(Value::Object(Default::default())));
        }
        if let Some(ct) = content_type {
            let essence = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if essence != "application/json" && !essence.ends_with("+json") {
                return Err(AppError::invalid_body(vec![Issue {
                    path: String::new(),
                    message: format!(
                        "Content-Type is {ct}; send JSON with Content-Type: application/json"
                    ),
                }]));
            }
        }
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            AppError::invalid_body(vec![Issue {
                path: String::new(),
                // serde_json's message already names the line and column.
                message: format!("malformed JSON: {e}"),
            }])
        })
    }
}

/// A job id from the path; anything that is not a UUID cannot name a job, so it is a 404.
pub struct JobPath(pub JobId);

impl<S: Send + Sync> FromRequestParts<S> for JobPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::not_found("no such job"))?;
        raw.parse()
            .map(JobPath)
            .map_err(|_| AppError::not_found(format!("no job with id {raw}")))
    }
}
