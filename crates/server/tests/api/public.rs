//! `/public/jobs…`: off by default; when on, capped, free, limited per client IP, and its
//! status needs the job's token.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn public_post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let r = app
        .client
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn public_get(app: &TestApp, path: &str) -> (u16, Value) {
    let r = app.client.get(app.url(path)).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn public_jobs_are_off_unless_enabled() {
    let app = spawn_app().await;
    let (code, e) = public_post(
        &app,
        "/public/jobs",
        json!({"codec": "h264", "resolution": "480p", "fps": 30}),
    )
    .await;
    assert_eq!(code, 403, "{e}");
    assert_eq!(e["code"], "forbidden");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("PUBLIC_JOBS_ENABLED"));
    app.stop().await;
}

#[tokio::test]
async fn a_public_job_encodes_for_free_within_its_caps() {
    let app = spawn_app_with(|c| {
        c.public_jobs_enabled = true;
        c.public_max_duration_secs = 3;
    })
    .await;
    let clip = small_clip(app.dir.path(), "short.mp4", 2);
    let long = small_clip(app.dir.path(), "long.mp4", 5);

    // Caps are checked field by field.
    let (code, e) = public_post(
        &app,
        "/public/jobs",
        json!({"codec": "h264", "resolution": "1080p", "fps": 61}),
    )
    .await;
    assert_eq!(code, 400);
    let paths: Vec<&str> = e["issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["resolution", "fps"]);

    let (code, created) = public_post(
        &app,
        "/public/jobs",
        json!({"codec": "h264", "resolution": "720p", "fps": 30}),
    )
    .await;
    assert_eq!(code, 200, "{created}");
    let id = created["jobId"].as_str().unwrap().to_string();
    let token = created["statusToken"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 32);
    let put = app
        .client
        .put(created["upload"]["url"].as_str().unwrap())
        .body(std::fs::read(&clip).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 200);
    let (code, d) = public_get(&app, &format!("/public/jobs/{id}/probe-duration")).await;
    assert_eq!(code, 200, "{d}");
    assert!((d["durationSec"].as_f64().unwrap() - 2.0).abs() < 0.1);
    let (code, c) = public_post(&app, &format!("/public/jobs/{id}/confirm"), json!({})).await;
    assert_eq!(code, 200, "{c}");

    // The status needs the token: wrong or missing looks like an unknown job.
    for q in ["", "?token=wrong", "?token="] {
        let (code, _) = public_get(&app, &format!("/public/jobs/{id}/status{q}")).await;
        assert_eq!(code, 404, "status{q}");
    }
    let start = Instant::now();
    let done = loop {
        let (code, s) = public_get(&app, &format!("/public/jobs/{id}/status?token={token}")).await;
        assert_eq!(code, 200, "{s}");
        if matches!(s["status"].as_str(), Some("success" | "failed")) {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(done["chargedNeu"], 0.0, "public jobs are free");
    let out = app.download(&done).await;
    let v = probe(&out);
    let video = stream(&v, "video").unwrap();
    assert_eq!(
        (video["width"].as_i64(), video["height"].as_i64()),
        (Some(320), Some(240)),
        "not upscaled"
    );
    // Once the job has ended its uploaded source is deleted; the output stays downloadable.
    let job_id = id.parse().unwrap();
    let stored = app
        .app_state
        .repos
        .jobs
        .job(job_id, None)
        .await
        .unwrap()
        .unwrap();
    let source = app.app_state.store.local_path(&stored.input_key).unwrap();
    assert!(source.is_file());
    convertrilo_server::housekeeping::run_once(&app.app_state, convertrilo_core::time::now_ms())
        .await;
    assert!(!source.exists(), "source removed");
    let (_, again) = public_get(&app, &format!("/public/jobs/{id}/status?token={token}")).await;
    let r = app
        .client
        .get(again["downloadUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Public jobs are not reachable through the authenticated API of other accounts.
    let (code, _) = app.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(code, 404);

    // A source longer than the cap is refused before anything is queued.
    let (_, created) = public_post(
        &app,
        "/public/jobs",
        json!({"codec": "h264", "resolution": "480p", "fps": 30}),
    )
    .await;
    let long_id = created["jobId"].as_str().unwrap().to_string();
    app.client
        .put(created["upload"]["url"].as_str().unwrap())
        .body(std::fs::read(&long).unwrap())
        .send()
        .await
        .unwrap();
    let (code, e) = public_post(&app, &format!("/public/jobs/{long_id}/confirm"), json!({})).await;
    assert_eq!(code, 400, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("at most 3 s"),
        "{e}"
    );
    let (code, _) = public_get(&app, &format!("/public/jobs/{long_id}/probe-duration")).await;
    assert_eq!(code, 400);
    app.stop().await;
}

#[tokio::test]
async fn public_sources_and_request_rates_are_capped() {
    let app = spawn_app_with(|c| {
        c.public_jobs_enabled = true;
        c.public_max_source_bytes = 10_000;
        c.public_rate_limit_per_minute = 4;
        c.workers = 0;
    })
    .await;
    let clip = small_clip(app.dir.path(), "big.mp4", 3);
    assert!(std::fs::metadata(&clip).unwrap().len() > 10_000);
    let (code, created) = public_post(
        &app,
        "/public/jobs",
        json!({"codec": "av1", "resolution": "480p", "fps": 24, "container": "webm"}),
    )
    .await;
    assert_eq!(code, 200, "{created}");
    let put = app
        .client
        .put(created["upload"]["url"].as_str().unwrap())
        .body(std::fs::read(&clip).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 413, "over the public size cap");
    // Four requests per minute from this address: the fifth and later are refused.
    let mut codes = Vec::new();
    for _ in 0..3 {
        let (code, _) = public_get(
            &app,
            "/public/jobs/00000000-0000-7000-8000-000000000000/probe-duration",
        )
        .await;
        codes.push(code);
    }
    assert_eq!(codes, [404, 404, 404]);
    let r = app
        .client
        .post(app.url("/public/jobs"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // Authenticated routes are not affected.
    let (code, _) = app.get("/tokens/balance").await;
    assert_eq!(code, 200);
    app.stop().await;
}

#[tokio::test]
async fn the_worker_holds_public_jobs_to_the_duration_cap_of_what_it_fetches() {
    let app = spawn_app_with(|c| {
        c.public_jobs_enabled = true;
        c.public_max_duration_secs = 3;
    })
    .await;
    // A source that was short when probed and is long when fetched: written straight to the
    // queue as if its confirm-time probe had seen 2 s.
    let long = small_clip(app.dir.path(), "grown.mp4", 5);
    let host = FileHost::serve(app.dir.path()).await;
    let (code, created) = public_post(
        &app,
        "/public/jobs",
        json!({"codec": "h264", "resolution": "480p", "fps": 30, "sourceUrl": host.url("grown.mp4")}),
    )
    .await;
    assert_eq!(code, 200, "{created}");
    let id = created["jobId"].as_str().unwrap().to_string();
    let token = created["statusToken"].as_str().unwrap().to_string();
    let repos = &app.app_state.repos;
    let job = repos
        .jobs
        .job(id.parse().unwrap(), None)
        .await
        .unwrap()
        .unwrap();
    let update = convertrilo_db::EstimateUpdate {
        spec: job.spec.clone(),
        output_filename: job.output_filename.clone(),
        duration_sec: Some(2.0),
        media_info: None,
        per_minute: Some(convertrilo_core::Neu::ZERO),
        estimate: Some(convertrilo_core::Neu::ZERO),
    };
    repos
        .jobs
        .enqueue(job.id, Some(&update), job.priority, None)
        .await
        .unwrap();
    assert!(long.is_file());
    let start = Instant::now();
    let done = loop {
        let (_, s) = public_get(&app, &format!("/public/jobs/{id}/status?token={token}")).await;
        if matches!(s["status"].as_str(), Some("success" | "failed")) {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["failureMessage"]
            .as_str()
            .unwrap()
            .contains("at most 3 s"),
        "{done}"
    );
    app.stop().await;
}
