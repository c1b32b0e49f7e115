//! S3-compatible storage as source and destination, against a real S3 protocol server on
//! loopback: a `sourceS3` job on the real clip, on-demand outputs by key and by prefix, a
//! multipart upload of a large output, S3's refusals as clear messages, and credentials that
//! never show and do not outlive their job.

use crate::{helpers::*, s3server::*};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn wait_ondemand(app: &TestApp, id: &str, bodies: &mut Vec<String>) -> Value {
    let start = Instant::now();
    loop {
        let (code, s) = app.get(&format!("/ondemand/status/{id}")).await;
        assert_eq!(code, 200, "{s}");
        bodies.push(s.to_string());
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

/// Everything stored about the job (its row through the repository, the raw database files)
/// is free of the key material, and its sealed secrets are gone once it ended.
async fn assert_forgotten(app: &TestApp, id: &str) {
    let id: convertrilo_core::JobId = id.parse().unwrap();
    assert_eq!(app.app_state.repos.jobs.job_secret(id).await.unwrap(), None);
    let job = app
        .app_state
        .repos
        .jobs
        .job(id, None)
        .await
        .unwrap()
        .unwrap();
    assert_no_credentials(&format!("{job:?}"));
}

fn database_bytes(app: &TestApp) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(&app.config.data_dir).unwrap().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("convertrilo.db")
        {
            all.extend(std::fs::read(entry.path()).unwrap());
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn s3_source_job_runs_end_to_end_on_the_real_clip() {
    let app = spawn_app().await;
    let s3 = S3Server::start(&["media"]).await;
    s3.put(
        "media",
        "in/bigbuckbunny.mp4",
        &real_clip("bigbuckbunny.mp4"),
    );
    let mut spec = job_spec("h264", "480p", 30, "mp4");
    spec["sourceS3"] = s3.bucket("media", json!({"key": "in/bigbuckbunny.mp4"}));
    spec["confirm"] = json!(true);
    let (code, created) = app.post("/jobs", spec).await;
    assert_eq!(code, 200, "{created}");
    assert_no_credentials(&created.to_string());
    assert_eq!(created["status"], "queued");
    assert!(created["upload"].is_null());
    assert_eq!(created["sourceFilename"], "bigbuckbunny.mp4");
    assert!(
        created["estimate"]["neu"].as_f64().unwrap() > 0.0,
        "priced from the probe: {created}"
    );
    let id = created["jobId"].as_str().unwrap().to_string();
    // Sealed at rest: the database holds no key material in clear, even while the job runs.
    let sealed = app
        .app_state
        .repos
        .jobs
        .job_secret(id.parse().unwrap())
        .await
        .unwrap();
    if let Some(blob) = sealed {
        assert!(!contains(&blob, SECRET_KEY));
    }
    assert!(!contains(&database_bytes(&app), SECRET_KEY));

    let status = app.wait_terminal(&id, Duration::from_secs(120)).await;
    assert_no_credentials(&status.to_string());
    assert_eq!(status["status"], "success", "{status}");
    assert_eq!(status["ingest"], "s3");
    assert!((status["durationSec"].as_f64().unwrap() - 5.31).abs() < 0.1);
    let out = app.download(&status).await;
    let info = probe(&out);
    let v = stream(&info, "video").unwrap();
    assert_eq!(
        (
            v["codec_name"].as_str(),
            v["width"].as_i64(),
            v["height"].as_i64()
        ),
        (Some("h264"), Some(852), Some(480))
    );
    assert_eq!(stream(&info, "audio").unwrap()["codec_name"], "aac");
    assert!((duration(&info) - 5.31).abs() < 0.15);
    assert_forgotten(&app, &id).await;
    assert!(!contains(&database_bytes(&app), SECRET_KEY));
    app.stop().await;
}

#[tokio::test]
async fn ondemand_outputs_land_in_the_bucket_by_key_and_by_prefix() {
    let app = spawn_app().await;
    let s3 = S3Server::start(&["out"]).await;
    let media = real_clip("bigbuckbunny.mp4");
    let host = FileHost::serve(media.parent().unwrap()).await;
    let mut bodies = Vec::new();
    let mut ids = Vec::new();
    for target in [
        json!({"key": "encoded/exact name.mp4"}),
        json!({"prefix": "batch/"}),
    ] {
        let (code, r) = app
            .post(
                "/ondemand/encode",
                json!({"sourceUrl": host.url("bigbuckbunny.mp4"), "resolution": "480p",
                    "outputS3": s3.bucket("out", target)}),
            )
            .await;
        assert_eq!(code, 200, "{r}");
        bodies.push(r.to_string());
        ids.push(r["jobId"].as_str().unwrap().to_string());
    }
    for (id, key) in ids
        .iter()
        .zip(["encoded/exact name.mp4", "batch/bigbuckbunny-480p.mp4"])
    {
        let s = wait_ondemand(&app, id, &mut bodies).await;
        assert_eq!(s["status"], "success", "{s}");
        assert_eq!(
            s["destination"],
            json!({"type": "s3", "bucket": "out", "key": key})
        );
        assert!(
            s["downloadUrl"].is_null() && s["expiresIn"].is_null(),
            "{s}"
        );
        assert!(s["failureMessage"].is_null(), "{s}");
        assert_eq!(s["outputFilename"], key.rsplit('/').next().unwrap());
        let info = probe(&s3.path("out", key));
        assert_eq!(stream(&info, "video").unwrap()["height"], 480);
        // Nothing is kept here for a job delivered elsewhere.
        let st = app.status(id).await;
        bodies.push(st.to_string());
        assert!(
            st["output"].is_null() && st["downloadUrl"].is_null(),
            "{st}"
        );
        assert!(st["chargedNeu"].as_f64().unwrap() > 0.0);
        assert_forgotten(&app, id).await;
    }
    for b in &bodies {
        assert_no_credentials(b);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_large_output_goes_up_as_a_multipart_upload() {
    // Outputs above 1 MiB go up in parts of 5 MiB (the smallest S3 takes).
    let app = spawn_app_with(|c| {
        c.s3_multipart_threshold_bytes = 1024 * 1024;
        c.s3_part_size_bytes = 5 * 1024 * 1024;
    })
    .await;
    let s3 = S3Server::start(&["media", "out"]).await;
    // Eight seconds of 720p noise: the encoder's bitrate cap keeps it near 8 Mb/s, ~8 MB.
    let noise = app.dir.path().join("noise.mp4");
    make_clip(
        &noise,
        &[
            "-f",
            "lavfi",
            "-i",
            "nullsrc=s=1280x720:r=25,geq=random(1)*255:128:128",
            "-t",
            "8",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "30",
        ],
    );
    s3.put("media", "noise.mp4", &noise);
    // Through folder ingest, an on-demand surface, so that the output goes to the bucket.
    let folder = json!({
        "sourceS3": s3.bucket("media", json!({"prefix": ""})),
        "outputS3": s3.bucket("out", json!({"prefix": "big/"})),
        "resolution": "720p", "fps": 25, "bitrateTier": "high", "quality": "best",
    });
    let (code, r) = app.post("/ondemand/ingest/folder", folder).await;
    assert_eq!(code, 200, "{r}");
    let id = r["jobs"][0]["jobId"].as_str().unwrap().to_string();
    let s = wait_ondemand(&app, &id, &mut Vec::new()).await;
    assert_eq!(s["status"], "success", "{s}");
    let key = "big/noise-720p.mp4";
    let size = std::fs::metadata(s3.path("out", key)).unwrap().len();
    assert!(
        size > 5 * 1024 * 1024,
        "the output ({size} bytes) spans two parts"
    );
    // S3 gives a multipart object an ETag of `<md5 of part md5s>-<parts>`.
    let client = convertrilo_storage::s3::S3Client::new(reqwest::Client::new(), 0, 1);
    let head = client.head(&s3.client_bucket("out"), key).await.unwrap();
    assert_eq!(head.size, size);
    let etag = head.etag.unwrap();
    assert!(etag.trim_matches('"').ends_with("-2"), "{etag}");
    let info = probe(&s3.path("out", key));
    assert_eq!(stream(&info, "video").unwrap()["height"], 720);
    assert!((duration(&info) - 8.0).abs() < 0.2);
    app.stop().await;
}

#[tokio::test]
async fn s3_refusals_are_clear_and_never_echo_credentials() {
    let app = spawn_app().await;
    let s3 = S3Server::start(&["media", "out"]).await;
    s3.put(
        "media",
        "in/clip.mp4",
        &small_clip(app.dir.path(), "clip.mp4", 2),
    );
    let create = |source: Value| {
        let mut spec = job_spec("h264", "480p", 30, "mp4");
        spec["sourceS3"] = source;
        spec["confirm"] = json!(true);
        spec
    };
    let cases = [
        (
            s3.bucket(
                "media",
                json!({"key": "in/clip.mp4", "secretAccessKey": "wrong-secret-value"}),
            ),
            "SignatureDoesNotMatch",
        ),
        (
            s3.bucket("nope", json!({"key": "in/clip.mp4"})),
            "NoSuchBucket",
        ),
        (
            s3.bucket("media", json!({"key": "in/missing.mp4"})),
            "NoSuchKey",
        ),
        (
            s3.bucket("locked", json!({"key": "in/clip.mp4"})),
            "AccessDenied",
        ),
        (
            json!({"bucket": "media", "key": "in/clip.mp4", "endpoint": s3.endpoint}),
            "AccessDenied",
        ),
    ];
    for (source, code) in cases {
        let (status, err) = app.post("/jobs", create(source.clone())).await;
        assert_eq!(
            (status, err["code"].as_str()),
            (400, Some("invalid_request")),
            "{err}"
        );
        let msg = err["message"].as_str().unwrap();
        assert!(
            msg.starts_with("sourceS3: ") && msg.contains(code),
            "{code}: {msg}"
        );
        assert_no_credentials(msg);
        assert!(!msg.contains("wrong-secret-value"), "{msg}");
    }
    let (status, err) = app
        .post(
            "/jobs",
            create(json!({"bucket": "media", "key": "a.mp4", "endpoint": "ftp://x"})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["issues"][0]["path"], "sourceS3.endpoint");
    // No job was left behind by the refusals.
    let (_, bal) = app.get("/tokens/balance").await;
    assert_eq!(bal["reserved"], 0.0, "{bal}");

    // Output refusals only show when the worker delivers: the job fails saying why, and the
    // reservation comes back.
    let host = FileHost::serve(app.dir.path()).await;
    let mut bodies = Vec::new();
    for (target, code) in [
        (
            s3.bucket(
                "out",
                json!({"key": "x.mp4", "secretAccessKey": "wrong-secret-value"}),
            ),
            "SignatureDoesNotMatch",
        ),
        (
            s3.bucket("missing-bucket", json!({"key": "x.mp4"})),
            "NoSuchBucket",
        ),
        (s3.bucket("locked", json!({"key": "x.mp4"})), "AccessDenied"),
    ] {
        let (c, r) = app
            .post(
                "/ondemand/encode",
                json!({"sourceUrl": host.url("clip.mp4"), "resolution": "480p", "outputS3": target}),
            )
            .await;
        assert_eq!(c, 200, "{r}");
        bodies.push(r.to_string());
        let id = r["jobId"].as_str().unwrap().to_string();
        let s = wait_ondemand(&app, &id, &mut bodies).await;
        assert_eq!(s["status"], "failed", "{s}");
        let why = s["failureMessage"].as_str().unwrap();
        assert!(
            why.starts_with("could not deliver the output to S3") && why.contains(code),
            "{why}"
        );
        let st = app.status(&id).await;
        assert_eq!(
            (st["reservedNeu"].as_f64(), st["chargedNeu"].as_f64()),
            (Some(0.0), Some(0.0)),
            "{st}"
        );
        bodies.push(st.to_string());
        assert_forgotten(&app, &id).await;
    }
    for b in &bodies {
        assert_no_credentials(b);
        assert!(!b.contains("wrong-secret-value"));
    }
    app.stop().await;
}

#[tokio::test]
async fn credentials_of_a_created_job_are_sealed_until_it_is_canceled() {
    let app = spawn_app().await;
    let s3 = S3Server::start(&["media"]).await;
    s3.put(
        "media",
        "clip.mp4",
        &small_clip(app.dir.path(), "clip.mp4", 2),
    );
    let mut spec = job_spec("h264", "480p", 30, "mp4");
    spec["sourceS3"] = s3.bucket("media", json!({"key": "clip.mp4"}));
    let (code, created) = app.post("/jobs", spec).await;
    assert_eq!(code, 200, "{created}");
    assert_eq!(created["status"], "created");
    let id = created["jobId"].as_str().unwrap().to_string();
    let blob = app
        .app_state
        .repos
        .jobs
        .job_secret(id.parse().unwrap())
        .await
        .unwrap()
        .expect("kept sealed while the job may still run");
    assert!(!contains(&blob, SECRET_KEY) && !contains(&blob, ACCESS_KEY));
    assert!(!contains(&database_bytes(&app), SECRET_KEY));
    // The probe reads the object through a presigned link made from the sealed keys.
    let (code, probe) = app.get(&format!("/jobs/{id}/probe-duration")).await;
    assert_eq!(code, 200, "{probe}");
    assert!(
        (probe["durationSec"].as_f64().unwrap() - 2.0).abs() < 0.1,
        "{probe}"
    );
    let (code, canceled) = app.post_empty(&format!("/jobs/{id}/cancel")).await;
    assert_eq!(code, 200, "{canceled}");
    assert_forgotten(&app, &id).await;
    app.stop().await;
}

#[tokio::test]
async fn a_source_gone_before_the_worker_reads_it_fails_the_job_clearly() {
    let app = spawn_app().await;
    let s3 = S3Server::start(&["media"]).await;
    s3.put(
        "media",
        "clip.mp4",
        &small_clip(app.dir.path(), "clip.mp4", 2),
    );
    let mut spec = job_spec("h264", "480p", 30, "mp4");
    spec["sourceS3"] = s3.bucket("media", json!({"key": "clip.mp4"}));
    let (code, created) = app.post("/jobs", spec).await;
    assert_eq!(code, 200, "{created}");
    let id = created["jobId"].as_str().unwrap().to_string();
    std::fs::remove_file(s3.path("media", "clip.mp4")).unwrap();
    // Confirm queues it even though its probe now fails: the worker says why.
    let (code, confirmed) = app.post_empty(&format!("/jobs/{id}/confirm")).await;
    assert_eq!(code, 200, "{confirmed}");
    let s = app.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(s["status"], "failed", "{s}");
    let why = s["failureMessage"].as_str().unwrap();
    assert!(
        why.starts_with("could not read the source from S3") && why.contains("NoSuchKey"),
        "{why}"
    );
    assert_no_credentials(&s.to_string());
    assert_forgotten(&app, &id).await;
    app.stop().await;
}
