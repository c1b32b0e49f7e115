//! One error type for every handler, rendered as the contract's `ErrorResponse`.
//! Client mistakes carry a message that says what to change; server faults are logged with
//! their cause and shown to the client as a bare `internal_error`.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use convertrilo_core::{request::Issue, ErrorCode, Neu, Scope};
use serde::Serialize;

#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub issues: Option<Vec<Issue>>,
    pub required_scope: Option<Scope>,
    /// For `insufficient_tokens`: what the operation needs and what the account has.
    pub required: Option<Neu>,
    pub available: Option<Neu>,
}

/// The contract's `ErrorResponse`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Stable machine-readable code; branch on it.
    #[schema(value_type = String)]
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub issues: Option<Vec<Issue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub required_scope: Option<Scope>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub required: Option<Neu>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub available: Option<Neu>,
}

impl AppError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            issues: None,
            required_scope: None,
            required: None,
            available: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message)
    }
    pub fn invalid_body(issues: Vec<Issue>) -> Self {
        let summary = issues
            .iter()
            .map(|i| {
                if i.path.is_empty() {
                    i.message.clone()
                } else {
                    format!("{} {}", i.path, i.message)
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            issues: Some(issues),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidBody,
                format!("invalid request body: {summary}"),
            )
        }
    }
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, what)
    }
    pub fn unauthorized(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
    pub fn missing_scope(scope: Scope) -> Self {
        Self {
            required_scope: Some(scope),
            ..Self::new(
                StatusCode::FORBIDDEN,
                ErrorCode::MissingRequiredScope,
                format!("this API key lacks the `{scope}` scope; create a key that includes it"),
            )
        }
    }
    pub fn insufficient_tokens(required: Neu, available: Neu) -> Self {
        Self {
            required: Some(required),
            available: Some(available),
            ..Self::new(
                StatusCode::PAYMENT_REQUIRED,
                ErrorCode::InsufficientTokens,
                format!("this needs {required} more NEU but the account has {available} NEU available; add tokens or choose a cheaper encode"),
            )
        }
    }
    pub fn rate_limited(d: crate::ratelimit::Decision) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimitExceeded,
            format!(
                "more than {} requests in a minute; retry in {} s",
                d.limit, d.reset_secs
            ),
        )
    }
    /// A server-side fault: the cause is logged, the client sees a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InternalError,
            "internal error; the server log has the details",
        )
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: self.message,
            issues: self.issues,
            required_scope: self.required_scope,
            required: self.required,
            available: self.available,
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Every 503 here is a passing condition: say when a retry makes sense.
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
        }
        response
    }
}

impl From<convertrilo_db::DbError> for AppError {
    fn from(e: convertrilo_db::DbError) -> Self {
        use convertrilo_db::DbError as D;
        match e {
            D::NotFound(what) => AppError::not_found(format!("no such {what}")),
            D::Invalid(message) => AppError::bad_request(message),
            unreachable if unreachable.is_unreachable() => {
                tracing::error!(error = %unreachable, "database unreachable");
                AppError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::DatabaseUnavailable,
                    "the service's database cannot be reached right now; nothing was changed, retry in a few seconds",
                )
            }
            other => AppError::internal(other),
        }
    }
}

impl From<convertrilo_storage::StorageError> for AppError {
    fn from(e: convertrilo_storage::StorageError) -> Self {
        use convertrilo_storage::StorageError as S;
        match e {
            S::TooLarge { limit } => AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::FileTooLarge,
                format!("the file is larger than this server's limit of {limit} bytes"),
            ),
            S::Stream(msg) => AppError::bad_request(format!(
                "the upload was interrupted: {msg}; send the file again"
            )),
            S::NotFound(_) => AppError::not_found("no such file"),
            other => AppError::internal(other),
        }
    }
}

pub type AppResult<T> = Result<T, AppError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_a_503_to_retry_and_other_faults_stay_internal() {
        let r = AppError::from(convertrilo_db::DbError::Sqlx(sqlx::Error::PoolTimedOut))
            .into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()["retry-after"], "5");
        let e = AppError::from(convertrilo_db::DbError::Sqlx(sqlx::Error::RowNotFound));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::InternalError)
        );
        let e = AppError::from(convertrilo_db::DbError::Sqlx(sqlx::Error::Io(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        )));
        assert_eq!(e.code, ErrorCode::DatabaseUnavailable);
    }
}
