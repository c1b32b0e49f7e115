//! The HTTP surface: routers, extractors, error rendering.

pub mod auth;
pub mod dto;
pub mod error;
pub mod extract;
pub mod routes;

use crate::state::AppState;
use axum::{extract::DefaultBodyLimit, Router};
use tower_http::trace::TraceLayer;

/// JSON bodies are small; uploads bypass this limit by streaming (see `routes::files`).
const JSON_BODY_LIMIT: usize = 1024 * 1024;

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(routes::jobs::router())
        .merge(routes::docs::router())
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT));
    Router::new()
        .merge(api)
        .merge(routes::files::router())
        .fallback(|| async { error::AppError::not_found("no such endpoint; see /openapi.json") })
        .method_not_allowed_fallback(|| async {
            error::AppError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                convertrilo_core::ErrorCode::InvalidRequest,
                "this endpoint does not take that HTTP method; see /openapi.json",
            )
        })
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
