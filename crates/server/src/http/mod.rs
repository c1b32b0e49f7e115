//! The HTTP surface: routers, extractors, error rendering.

pub mod auth;
pub mod dto;
pub mod error;
pub mod extract;
pub mod limits;
pub mod routes;

use crate::state::AppState;
use axum::{extract::DefaultBodyLimit, Router};
use tower_http::trace::TraceLayer;

pub fn router(state: AppState) -> Router {
    // JSON bodies are small; uploads bypass this limit by streaming (see `routes::files`).
    let api = Router::new()
        .merge(routes::auth::router())
        .merge(routes::api_keys::router())
        .merge(routes::jobs::router())
        .merge(routes::bulk::router())
        .merge(routes::ondemand::router())
        .merge(routes::folder::router())
        .merge(routes::public::router())
        // Stream parts are read as a raw body, which the JSON limit below does not cap.
        .merge(routes::stream::router())
        .merge(routes::tokens::router())
        .merge(routes::webhooks::router())
        .merge(routes::docs::router())
        .merge(routes::ops::router())
        .layer(DefaultBodyLimit::max(state.config.json_body_limit_bytes));
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
        .layer(axum::middleware::from_fn(limits::rate_limit_headers))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
