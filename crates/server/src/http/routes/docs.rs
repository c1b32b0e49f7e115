//! The generated OpenAPI document, and a health probe.

use crate::{
    http::{dto::*, error::ErrorBody},
    state::AppState,
};
use axum::{routing::get, Json, Router};
use utoipa::{
    openapi::security::{ApiKey, ApiKeyValue, SecurityScheme},
    Modify, OpenApi,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Convertrilo Encode API", description = "Self-hosted implementation of the Convertrilo Encode API."),
    paths(
        super::jobs::create_job,
        super::jobs::probe_duration,
        super::jobs::approve_unified,
        super::jobs::confirm_job,
        super::jobs::cancel_job,
        super::jobs::job_status,
        super::files::upload,
        super::files::download,
        healthz,
    ),
    components(schemas(
        JobCreateRequest, JobCreateResponse, ApproveUnifiedRequest, ApproveUnifiedResponse, ConfirmRequest,
        ConfirmResponse, CancelResponse, ProbeDurationResponse, StatusResponse, ErrorBody,
        super::files::UploadResponse
    )),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "ApiKeyAuth",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .route("/healthz", get(healthz))
}

/// Liveness probe.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "`{\"ok\": true}`")))]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "ok": true }))
}
