//! The generated OpenAPI document covers every implemented endpoint with the contract's
//! names and types, and documents exactly what the request validators accept.

use crate::helpers::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The API contract and the official SDK: `../shared/reference/convertrilo-js` beside the
/// checkout (as CI places it), or wherever `CONVERTRILO_CONTRACT_DIR` says.
pub fn reference_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("CONVERTRILO_CONTRACT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/reference/convertrilo-js"));
    assert!(
        dir.join("openapi.yaml").is_file(),
        "the API contract (openapi.yaml and the official SDK) is expected at {}: put the \
         shared/ folder beside this checkout, or set CONVERTRILO_CONTRACT_DIR to its \
         reference/convertrilo-js folder",
        dir.display()
    );
    dir
}

fn reference() -> Value {
    let text = std::fs::read_to_string(reference_dir().join("openapi.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// Resolves `$ref`s and composition to the JSON types and enum values a schema allows.
fn shape(doc: &Value, schema: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut types, mut values) = (BTreeSet::new(), BTreeSet::new());
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap();
        return shape(doc, &doc["components"]["schemas"][name]);
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        for sub in schema[key].as_array().into_iter().flatten() {
            let (t, v) = shape(doc, sub);
            types.extend(t);
            values.extend(v);
        }
    }
    match &schema["type"] {
        Value::String(t) => drop(types.insert(t.clone())),
        Value::Array(ts) => types.extend(ts.iter().filter_map(|t| t.as_str().map(String::from))),
        _ => {}
    }
    if schema.get("properties").is_some() || schema.get("additionalProperties").is_some() {
        types.insert("object".into());
    }
    values.extend(
        schema["enum"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from)),
    );
    // JSON numbers: an integer is also a number.
    if types.contains("integer") {
        types.insert("number".into());
    }
    (types, values)
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let s = &doc["components"]["schemas"][name];
    assert!(s.is_object(), "schema {name} missing");
    s
}

#[tokio::test]
async fn generated_spec_matches_the_contract() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let ours: Value = r.json().await.unwrap();
    let theirs = reference();
    assert!(ours["openapi"].as_str().unwrap().starts_with('3'));

    let implemented = [
        ("/jobs", "post"),
        ("/jobs/{id}/probe-duration", "get"),
        ("/jobs/{id}/approve-unified", "post"),
        ("/jobs/{id}/confirm", "post"),
        ("/jobs/{id}/cancel", "post"),
        ("/jobs/{id}/status", "get"),
        ("/auth/login", "post"),
        ("/api-keys", "get"),
        ("/api-keys", "post"),
        ("/api-keys/{id}", "delete"),
        ("/tokens/balance", "get"),
        ("/tokens/reserve", "post"),
        ("/tokens/release", "post"),
        ("/tokens/deduct", "post"),
        ("/jobs/bulk", "post"),
        ("/jobs/bulk/status", "get"),
        ("/jobs/bulk/confirm", "post"),
        ("/ondemand/encode", "post"),
        ("/ondemand/status/{jobId}", "get"),
        ("/ondemand/{jobId}", "delete"),
        ("/ondemand/ingest/folder", "post"),
        ("/public/jobs", "post"),
        ("/public/jobs/{id}/probe-duration", "get"),
        ("/public/jobs/{id}/confirm", "post"),
        ("/public/jobs/{id}/status", "get"),
        ("/jobs/{id}/stream/init", "post"),
        ("/jobs/{id}/stream/chunk/{index}", "put"),
        ("/jobs/{id}/stream/finalize", "post"),
        ("/jobs/{id}/stream/abort", "post"),
        ("/webhooks", "get"),
        ("/webhooks", "post"),
        ("/webhooks/{id}", "patch"),
        ("/webhooks/{id}", "delete"),
        ("/webhooks/{id}", "post"),
        ("/webhooks/{id}/deliveries", "get"),
    ];
    for (path, method) in implemented {
        assert!(
            ours["paths"][path][method].is_object(),
            "{method} {path} undocumented"
        );
        assert!(
            theirs["paths"][path][method].is_object(),
            "{method} {path} not in the contract"
        );
    }
    // Our own additions: the signed upload/download links, the operations endpoints.
    let additions = [
        ("/uploads/{key}", "put"),
        ("/files/{key}", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/admin/workers", "get"),
        ("/auth/refresh", "post"),
        ("/auth/logout", "post"),
    ];
    for (path, method) in additions {
        assert!(
            ours["paths"][path][method].is_object(),
            "{method} {path} undocumented"
        );
    }
    let documented: usize = ours["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(
        documented,
        implemented.len() + additions.len(),
        "every documented operation is listed here"
    );

    for (our_name, their_name) in [
        ("JobCreateRequest", "JobCreateRequest"),
        ("JobCreateResponse", "JobCreateResponse"),
        ("ApproveUnifiedRequest", "ApproveUnifiedRequest"),
        ("ApproveUnifiedResponse", "ApproveUnifiedResponse"),
        ("ConfirmRequest", "ConfirmRequest"),
        ("ConfirmResponse", "ConfirmResponse"),
        ("ProbeDurationResponse", "ProbeDurationResponse"),
        ("StatusResponse", "StatusResponse"),
        ("ErrorBody", "ErrorResponse"),
        ("AuthLoginRequest", "AuthLoginRequest"),
        ("AuthLoginResponse", "AuthLoginResponse"),
        ("ApiKeyCreateRequest", "ApiKeyCreateRequest"),
        ("ApiKeyResponse", "ApiKeyResponse"),
        ("ApiKeyListResponse", "ApiKeyListResponse"),
        ("TokenBalanceResponse", "TokenBalanceResponse"),
        ("TokenReserveRequest", "TokenReserveRequest"),
        ("TokenReserveRequest", "TokenDeductRequest"),
        ("BulkCreateRequest", "BulkCreateRequest"),
        ("BulkCreateResponse", "BulkCreateResponse"),
        ("BulkStatusResponse", "BulkStatusResponse"),
        ("BulkConfirmRequest", "BulkConfirmRequest"),
        ("OnDemandEncodeRequest", "OnDemandEncodeRequest"),
        ("OnDemandEncodeResponse", "OnDemandEncodeResponse"),
        ("OnDemandStatusResponse", "OnDemandStatusResponse"),
        ("StreamInitResponse", "StreamInitResponse"),
        ("StreamFinalizeRequest", "StreamFinalizeRequest"),
        ("WebhookCreateRequest", "WebhookCreateRequest"),
        ("WebhookUpdateRequest", "WebhookUpdateRequest"),
        ("WebhookResponse", "WebhookResponse"),
        ("WebhookListResponse", "WebhookListResponse"),
        ("WebhookDeliveryResponse", "WebhookDeliveryResponse"),
        ("WebhookDeliveryListResponse", "WebhookDeliveryListResponse"),
        ("OnDemandFolderIngestRequest", "OnDemandFolderIngestRequest"),
        (
            "OnDemandFolderIngestResponse",
            "OnDemandFolderIngestResponse",
        ),
        ("S3Output", "S3Output"),
        ("S3FolderSource", "S3FolderSource"),
        ("S3FolderOutput", "S3FolderOutput"),
        ("GoogleDriveOutput", "GoogleDriveOutput"),
        ("GoogleDriveFolderSource", "GoogleDriveFolderSource"),
    ] {
        let (o, t) = (schema(&ours, our_name), schema(&theirs, their_name));
        for (field, their_field) in t["properties"].as_object().unwrap() {
            let our_field = &o["properties"][field];
            assert!(our_field.is_object(), "{our_name}.{field} is missing");
            let (ot, ov) = shape(&ours, our_field);
            let (tt, tv) = shape(&theirs, their_field);
            assert!(
                tt.is_subset(&ot) || tt.is_empty(),
                "{our_name}.{field}: types {ot:?} vs contract {tt:?}"
            );
            assert!(
                tv.is_subset(&ov)
                    || (field == "resolution" && our_name == "ApproveUnifiedRequest")
                    || field == "code",
                "{our_name}.{field}: enum {ov:?} vs contract {tv:?}"
            );
        }
    }
    app.stop().await;
}

/// Each documented request field is one the validator reads: a wrong type for it is an
/// issue naming it (an undocumented or ignored field would pass silently).
#[tokio::test]
async fn documented_request_fields_are_validated() {
    let app = spawn_app_with(|c| c.public_jobs_enabled = true).await;
    let ours: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (_, created) = app.post("/jobs", job_spec("h264", "480p", 30, "mp4")).await;
    let id = created["jobId"].as_str().unwrap().to_string();
    for (schema_name, path) in [
        ("JobCreateRequest", "/jobs".to_string()),
        (
            "ApproveUnifiedRequest",
            format!("/jobs/{id}/approve-unified"),
        ),
        ("ConfirmRequest", format!("/jobs/{id}/confirm")),
        ("OnDemandEncodeRequest", "/ondemand/encode".to_string()),
        (
            "OnDemandFolderIngestRequest",
            "/ondemand/ingest/folder".to_string(),
        ),
        ("PublicJobCreateRequest", "/public/jobs".to_string()),
    ] {
        for field in schema(&ours, schema_name)["properties"]
            .as_object()
            .unwrap()
            .keys()
        {
            let mut body = match schema_name {
                "JobCreateRequest" | "PublicJobCreateRequest" => {
                    job_spec("h264", "480p", 30, "mp4")
                }
                "OnDemandEncodeRequest" => json!({"sourceUrl": "http://127.0.0.1:9/a.mp4"}),
                _ => json!({}),
            };
            body[field] = json!([1]);
            let (code, err) = app.post(&path, body).await;
            assert_eq!(
                (code, err["code"].as_str()),
                (400, Some("invalid_body")),
                "{schema_name}.{field}: {err}"
            );
            assert!(
                err["issues"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|i| i["path"] == field.as_str()),
                "{schema_name}.{field}: {err}"
            );
        }
    }
    app.stop().await;
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r.clone());
            }
            map.values().for_each(|x| collect_refs(x, out));
        }
        Value::Array(items) => items.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

/// Structural validity of the generated document: references resolve, path templates'
/// parameters are declared, every operation answers something.
#[tokio::test]
async fn generated_spec_is_well_formed_and_docs_are_self_contained() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected ref {r}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} does not resolve"
        );
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        let templated: Vec<&str> = path
            .split('{')
            .skip(1)
            .map(|s| s.split('}').next().unwrap())
            .collect();
        for (method, op) in item.as_object().unwrap() {
            assert!(
                !op["responses"].as_object().unwrap().is_empty(),
                "{method} {path} has no responses"
            );
            for name in &templated {
                let declared = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"] == *name && p["in"] == "path");
                assert!(
                    declared,
                    "{method} {path}: path parameter {name} undeclared"
                );
            }
            if let Some(sec) = op["security"].as_array() {
                for req in sec {
                    for scheme in req.as_object().unwrap().keys() {
                        assert!(
                            doc["components"]["securitySchemes"][scheme].is_object(),
                            "{method} {path}: unknown scheme {scheme}"
                        );
                    }
                }
            }
        }
    }

    let r = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = r.text().await.unwrap();
    assert!(page.contains("/openapi.json"));
    assert!(
        !page.contains("://"),
        "the docs page loads nothing from other hosts"
    );
    app.stop().await;
}
