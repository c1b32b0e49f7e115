//! The official TypeScript SDK, compiled unmodified, runs against the server.

use crate::{helpers::*, openapi::reference_dir};
use serde_json::Value;
use std::process::Command;

/// Strips the SDK's types with the TypeScript compiler installed by scripts/setup.
fn compile_sdk(out_dir: &std::path::Path) -> std::path::PathBuf {
    let modules = std::env::var_os("CONVERTRILO_NODE_MODULES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/node/node_modules"));
    assert!(
        modules.join("typescript").is_dir(),
        "TypeScript is missing from {}: run scripts/setup",
        modules.display()
    );
    let source = reference_dir().join("src/index.ts");
    let target = out_dir.join("index.mjs");
    let script = r#"
        const ts = require(process.argv[1] + "/typescript");
        const fs = require("fs");
        const src = fs.readFileSync(process.argv[2], "utf8");
        const out = ts.transpileModule(src, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } });
        fs.writeFileSync(process.argv[3], out.outputText);
    "#;
    let status = Command::new("node")
        .args(["-e", script])
        .arg(&modules)
        .arg(&source)
        .arg(&target)
        .status()
        .expect("node runs");
    assert!(status.success(), "could not compile the SDK");
    target
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn official_sdk_runs_unmodified() {
    let app = spawn_app().await;
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        real_clip("bigbuckbunny.mp4"),
        host_dir.path().join("bigbuckbunny.mp4"),
    )
    .unwrap();
    let host = FileHost::serve(host_dir.path()).await;
    let s3 = crate::s3server::S3Server::start(&["sdk"]).await;
    s3.put("sdk", "in/bigbuckbunny.mp4", &real_clip("bigbuckbunny.mp4"));
    let s3_endpoint = s3.endpoint.clone();
    let sdk = compile_sdk(host_dir.path());
    let flow = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/flow.mjs");

    let base = app.base.clone();
    let key = app.api_key.clone();
    let source = host.url("bigbuckbunny.mp4");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(flow)
            .env("SDK_MODULE", format!("file://{}", sdk.display()))
            .env("BASE_URL", base)
            .env("API_KEY", key)
            .env("SOURCE_URL", source)
            .env("S3_ENDPOINT", s3_endpoint)
            .env("S3_ACCESS_KEY", crate::s3server::ACCESS_KEY)
            .env("S3_SECRET_KEY", crate::s3server::SECRET_KEY)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "SDK flow failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_slice(&output.stdout).expect("SDK flow prints JSON");

    assert_eq!(out["created"]["externalId"], "sdk-test-1");
    assert_eq!(out["created"]["metadata"]["customer"], "c-42");
    assert!(
        (out["probe"]["durationSec"].as_f64().unwrap() - 5.31).abs() < 0.05,
        "{}",
        out["probe"]
    );
    assert_eq!(out["approve"]["ok"], true);
    assert!(out["approve"]["estimate"]["perMinuteNeu"].as_f64().unwrap() > 0.0);
    assert_eq!(out["confirm"]["ok"], true);
    let fin = &out["final"];
    assert_eq!(fin["status"], "success", "{fin}");
    assert_eq!(
        fin["outputFilename"], "bigbuckbunny-480p.mkv",
        "approve's container change renames the output"
    );
    assert_eq!(fin["externalId"], "sdk-test-1");
    assert_eq!(out["download"]["status"], 200);
    assert_eq!(out["download"]["type"], "video/x-matroska");
    assert!(out["uploadUrl"].as_str().unwrap().contains("/uploads/"));
    assert_eq!(out["canceled"]["status"], "canceled");
    assert!(
        out["missing"].as_str().unwrap().contains("HTTP 404"),
        "{}",
        out["missing"]
    );
    assert!(out["missing"].as_str().unwrap().contains("not_found"));

    let bulk = &out["bulk"];
    assert_eq!(bulk["totalJobs"], 2, "{bulk}");
    assert_eq!(bulk["jobs"][2]["status"], "rejected");
    assert_eq!(bulk["jobs"][0]["externalId"], "bulk-1");
    let st = &out["bulkStatus"];
    assert_eq!(st["jobs"].as_array().unwrap().len(), 2, "{st}");
    assert_eq!(st["jobs"][1]["outputFilename"], "bigbuckbunny-480p.mov");
    assert_eq!(st["missing"][0], "01900000-0000-7000-8000-000000000000");
    let bc = &out["bulkConfirm"];
    assert_eq!(
        bc["queued"], 1,
        "the URL job is queued, the upload job waits: {bc}"
    );
    assert!(out["onDemandUrl"].as_str().unwrap().contains("/files/"));
    let od = &out["onDemand"];
    assert_eq!(od["status"], "queued", "{od}");
    assert_eq!(od["pricing"]["multiplier"], 2.0);
    assert_eq!(out["onDemandStatus"]["externalId"], "od-2");
    assert_eq!(out["onDemandCancel"]["ok"], true);
    let released = out["onDemandCancel"]["released"].as_f64().unwrap();
    assert!(
        (released - od["pricing"]["reserved"].as_f64().unwrap()).abs() < 1e-9,
        "the whole reservation comes back: {}",
        out["onDemandCancel"]
    );
    let folder = &out["folder"];
    assert_eq!(folder["jobs"].as_array().map(Vec::len), Some(1), "{folder}");
    assert_eq!(
        folder["jobs"][0]["externalId"],
        "sdk-folder:bigbuckbunny.mp4"
    );
    assert_eq!(folder["jobs"][0]["fileName"], "bigbuckbunny.mp4");
    assert!(
        out["emptyFolder"]
            .as_str()
            .unwrap()
            .contains("no_video_files_found"),
        "{}",
        out["emptyFolder"]
    );
    crate::s3server::assert_no_credentials(&out.to_string());
    app.stop().await;
}
