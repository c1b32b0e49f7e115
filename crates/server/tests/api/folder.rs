//! `POST /ondemand/ingest/folder` over S3: a prefix crawled page by page, non-videos and
//! sub-folders passed over, `maxFiles`, externalIds from the prefix, outputs under the output
//! prefix, idempotent replays, `no_video_files_found` and the Dropbox 410s.

use crate::{helpers::*, s3server::*};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn wait_ondemand(app: &TestApp, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let (code, s) = app.get(&format!("/ondemand/status/{id}")).await;
        assert_eq!(code, 200, "{s}");
        if matches!(
            s["status"].as_str(),
            Some("success" | "failed" | "canceled")
        ) {
            return s;
        }
        assert!(start.elapsed() < Duration::from_secs(180), "{s}");
        // Politely: a long encode must not run into the per-account rate limit.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

#[tokio::test]
async fn s3_folder_ingest_takes_max_files_videos_and_replays_idempotently() {
    let app = spawn_app_with(|c| {
        c.folder_list_page_size = 2;
        c.max_upload_bytes = 1024 * 1024;
    })
    .await;
    let s3 = S3Server::start(&["source", "out"]).await;
    let clip = small_clip(app.dir.path(), "clip.mp4", 2);
    // In key order: a.mp4, b.txt, c.MOV, cover.jpg, d.mkv, empty.mp4 (0 bytes), sub/e.mp4,
    // z-big.mp4 (over this server's size limit).
    s3.put("source", "incoming/a.mp4", &clip);
    s3.put_bytes("source", "incoming/b.txt", b"not a video");
    s3.put("source", "incoming/c.MOV", &clip);
    s3.put_bytes("source", "incoming/cover.jpg", b"jpeg");
    s3.put("source", "incoming/d.mkv", &clip);
    s3.put_bytes("source", "incoming/empty.mp4", b"");
    s3.put("source", "incoming/sub/e.mp4", &clip);
    s3.put_bytes("source", "incoming/z-big.mp4", &vec![7u8; 2 * 1024 * 1024]);
    s3.put("source", "elsewhere/f.mp4", &clip);
    let body = json!({
        "externalIdPrefix": "batch-7",
        "metadata": {"workflow": "folder"},
        "sourceS3": s3.bucket("source", json!({"prefix": "incoming/"})),
        "outputDestination": "s3",
        "outputS3": s3.bucket("out", json!({"prefix": "encoded/"})),
        "resolution": "480p",
        "maxFiles": 2,
    });
    let (code, headers, raw) = app
        .post_raw(
            "/ondemand/ingest/folder",
            &body,
            &[("Idempotency-Key", "folder-1")],
        )
        .await;
    let r: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(code, 200, "{r}");
    assert!(headers.get("idempotent-replayed").is_none());
    assert_no_credentials(&String::from_utf8_lossy(&raw));
    let jobs = r["jobs"].as_array().unwrap();
    let names: Vec<&str> = jobs
        .iter()
        .map(|j| j["fileName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.mp4", "c.MOV"], "{r}");
    assert_eq!(jobs[0]["externalId"], "batch-7:a.mp4");
    assert_eq!(jobs[1]["externalId"], "batch-7:c.MOV");

    // The same request again is the same answer, byte for byte, and no new jobs.
    let (code, headers, again) = app
        .post_raw(
            "/ondemand/ingest/folder",
            &body,
            &[("Idempotency-Key", "folder-1")],
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(again, raw);
    let mut other = body.clone();
    other["maxFiles"] = json!(3);
    let (code, _, conflict) = app
        .post_raw(
            "/ondemand/ingest/folder",
            &other,
            &[("Idempotency-Key", "folder-1")],
        )
        .await;
    let conflict: Value = serde_json::from_slice(&conflict).unwrap();
    assert_eq!(
        (code, conflict["code"].as_str()),
        (409, Some("idempotency_conflict"))
    );

    for (job, key) in jobs
        .iter()
        .zip(["encoded/a-480p.mp4", "encoded/c-480p.mp4"])
    {
        let id = job["jobId"].as_str().unwrap();
        let s = wait_ondemand(&app, id).await;
        assert_eq!(s["status"], "success", "{s}");
        assert_eq!(s["destination"]["key"], key);
        assert_eq!(s["metadata"]["workflow"], "folder");
        let st = app.status(id).await;
        assert_eq!(st["ingest"], "s3");
        assert!(
            st["estimatedNeu"].as_f64().unwrap() > 0.0,
            "probed at request time: {st}"
        );
        let info = probe(&s3.path("out", key));
        // The 320×240 source is not upscaled to the 480p box.
        assert_eq!(stream(&info, "video").unwrap()["height"], 240);
        assert!((duration(&info) - 2.0).abs() < 0.1);
    }
    // Without maxFiles every video directly in the folder is queued (d.mkv too), and the
    // request is a new one (no key).
    let mut all = body.clone();
    all.as_object_mut().unwrap().remove("maxFiles");
    all["outputDestination"] = json!("cdn");
    all.as_object_mut().unwrap().remove("outputS3");
    let (code, r) = app.post("/ondemand/ingest/folder", all).await;
    assert_eq!(code, 200, "{r}");
    let names: Vec<&str> = r["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["fileName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.mp4", "c.MOV", "d.mkv"]);
    assert!(
        r["message"].as_str().unwrap().contains("3 other entries"),
        "{r}"
    );
    app.stop().await;
}

#[tokio::test]
async fn empty_folders_dropbox_and_bad_bodies() {
    let app = spawn_app().await;
    let s3 = S3Server::start(&["source"]).await;
    s3.put_bytes("source", "docs/readme.txt", b"hi");
    let (code, e) = app
        .post(
            "/ondemand/ingest/folder",
            json!({"sourceS3": s3.bucket("source", json!({"prefix": "docs/"}))}),
        )
        .await;
    assert_eq!(
        (code, e["code"].as_str()),
        (404, Some("no_video_files_found")),
        "{e}"
    );
    assert!(
        e["message"].as_str().unwrap().contains("s3://source/docs/"),
        "{e}"
    );
    // Listing with a wrong secret is the caller's to fix.
    let (code, e) = app
        .post(
            "/ondemand/ingest/folder",
            json!({"sourceS3": s3.bucket("source", json!({"prefix": "docs/", "secretAccessKey": "nope-nope"}))}),
        )
        .await;
    assert_eq!(code, 400, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("SignatureDoesNotMatch"),
        "{e}"
    );
    assert_no_credentials(&e.to_string());
    for body in [
        json!({"sourceDropbox": {"path": "/videos", "accessToken": "x"}}),
        json!({"sourceS3": s3.bucket("source", json!({})), "outputDropbox": {"path": "/out"}}),
    ] {
        let (code, e) = app.post("/ondemand/ingest/folder", body).await;
        assert_eq!(
            (code, e["code"].as_str()),
            (410, Some("deprecated_dropbox")),
            "{e}"
        );
    }
    let (code, e) = app
        .post(
            "/ondemand/encode",
            json!({"sourceUrl": "http://127.0.0.1:9/a.mp4", "outputDropbox": {"path": "/x"}}),
        )
        .await;
    assert_eq!(
        (code, e["code"].as_str()),
        (410, Some("deprecated_dropbox")),
        "{e}"
    );
    let (code, e) = app
        .post(
            "/ondemand/ingest/folder",
            json!({"outputDestination": "s3", "maxFiles": 1001}),
        )
        .await;
    assert_eq!(
        (code, e["code"].as_str()),
        (400, Some("invalid_body")),
        "{e}"
    );
    let paths: Vec<&str> = e["issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["maxFiles", "sourceS3", "outputS3"]);
    app.stop().await;
}
