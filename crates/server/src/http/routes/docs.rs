//! The generated OpenAPI document, the interactive docs page that renders it, and a health probe.

use crate::{
    http::{dto::*, error::ErrorBody},
    state::AppState,
};
use axum::{routing::get, Json, Router};
use utoipa::{
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Convertrilo Encode API", description = "Self-hosted implementation of the Convertrilo Encode API."),
    paths(
        super::auth::login,
        super::auth::refresh,
        super::auth::logout,
        super::api_keys::list_keys,
        super::api_keys::create_key,
        super::api_keys::revoke_key,
        super::tokens::balance,
        super::tokens::reserve,
        super::tokens::release,
        super::tokens::deduct,
        super::jobs::create_job,
        super::jobs::probe_duration,
        super::jobs::approve_unified,
        super::jobs::confirm_job,
        super::jobs::cancel_job,
        super::jobs::job_status,
        super::bulk::create_bulk,
        super::bulk::bulk_status,
        super::bulk::bulk_confirm,
        super::ondemand::encode,
        super::ondemand::status,
        super::ondemand::cancel,
        super::folder::ingest,
        super::public::create,
        super::public::probe_duration,
        super::public::confirm,
        super::public::status,
        super::webhooks::list,
        super::webhooks::create,
        super::webhooks::update,
        super::webhooks::remove,
        super::webhooks::test,
        super::webhooks::deliveries,
        super::stream::init,
        super::stream::chunk,
        super::stream::finalize,
        super::stream::abort,
        super::files::upload,
        super::files::download,
        healthz,
        super::ops::readyz,
        super::ops::metrics,
        super::ops::workers,
    ),
    components(schemas(
        JobCreateRequest, JobCreateResponse, ApproveUnifiedRequest, ApproveUnifiedResponse, ConfirmRequest,
        ConfirmResponse, CancelResponse, ProbeDurationResponse, StatusResponse, ErrorBody,
        super::files::UploadResponse, super::auth::AuthLoginRequest, super::auth::AuthLoginResponse,
        super::auth::RefreshRequest, super::api_keys::ApiKeyCreateRequest, super::api_keys::ApiKeyResponse,
        super::api_keys::ApiKeyListResponse, super::tokens::TokenBalanceResponse, super::tokens::TokenReserveRequest,
        super::tokens::TokenMoveResponse,
        super::bulk::BulkCreateRequest, super::bulk::BulkSettings, super::bulk::BulkCreateResponse, super::bulk::BulkItem,
        super::bulk::BulkEstimate, super::bulk::BulkStatusResponse, super::bulk::BulkConfirmRequest,
        super::bulk::BulkConfirmSettings, super::bulk::BulkConfirmResponse, super::bulk::BulkConfirmItem,
        super::ondemand::OnDemandEncodeRequest, super::ondemand::OnDemandEncodeResponse, super::ondemand::OnDemandPricing,
        super::ondemand::OnDemandStatusResponse, super::ondemand::Destination, super::ondemand::OnDemandCancelResponse,
        super::public::PublicJobCreateRequest, super::public::PublicJobCreateResponse,
        super::stream::StreamInitResponse, super::stream::StreamChunkResponse, super::stream::StreamPart,
        super::stream::StreamFinalizeRequest, super::stream::StreamFinalizeResponse, super::stream::StreamAbortResponse,
        super::folder::OnDemandFolderIngestRequest, super::folder::OnDemandFolderIngestResponse,
        super::folder::FolderJob, super::folder::OutputDestination,
        super::storage_docs::S3Source, super::storage_docs::S3Output, super::storage_docs::S3FolderSource,
        super::storage_docs::S3FolderOutput, super::storage_docs::GoogleDriveOutput,
        super::storage_docs::GoogleDriveFolderSource, super::ops::WorkersResponse, super::ops::WorkerView,
        convertrilo_core::vmaf::VmafReport
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
        components.add_security_scheme(
            "BearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .route("/healthz", get(healthz))
        .route("/docs", get(docs_page))
}

/// Interactive API docs: one self-contained page (no CDN) that renders `/openapi.json` and
/// sends real requests with the key or token typed into it.
async fn docs_page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../../../static/docs.html"))
}

/// Liveness probe.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "`{\"ok\": true}`")))]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "ok": true }))
}
