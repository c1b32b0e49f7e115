//! Bad input gets a clear answer in the contract's error shape, and nothing is lost.

use crate::helpers::*;
use convertrilo_core::Scope;
use serde_json::{json, Value};
use std::time::Duration;

fn assert_error(code: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(code, want_status, "{body}");
    assert_eq!(body["code"], want_code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.len() > 10),
        "message must explain: {body}"
    );
}

#[tokio::test]
async fn bad_requests_are_named_field_by_field() {
    let app = spawn_app().await;
    let raw = |body: &'static str| {
        app.client
            .post(app.url("/jobs"))
            .header("X-API-Key", &app.api_key)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let r = raw("{\"codec\": \"h264\",").await.unwrap();
    let (code, body) = (r.status().as_u16(), r.json::<Value>().await.unwrap());
    assert_error(code, &body, 400, "invalid_body");
    assert!(body["message"].as_str().unwrap().contains("malformed JSON"));

    let (code, body) = app.post("/jobs", json!({})).await;
    assert_error(code, &body, 400, "invalid_body");
    let paths: Vec<&str> = body["issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["codec", "resolution", "fps"]);

    for bad_fps in [0, 999] {
        let (code, body) = app
            .post("/jobs", job_spec("h264", "720p", bad_fps, "mp4"))
            .await;
        assert_error(code, &body, 400, "invalid_body");
        assert_eq!(body["issues"][0]["path"], "fps");
        assert!(body["issues"][0]["message"]
            .as_str()
            .unwrap()
            .contains("1 to 240"));
    }
    let (code, body) = app
        .post(
            "/jobs",
            json!({"codec": "vp9", "resolution": "721p", "fps": 30, "container": "avi"}),
        )
        .await;
    assert_error(code, &body, 400, "invalid_body");
    assert_eq!(body["issues"].as_array().unwrap().len(), 3, "{body}");

    let (code, body) = app
        .post("/jobs", job_spec("h264", "720p", 30, "webm"))
        .await;
    assert_error(code, &body, 400, "invalid_request");
    assert!(body["message"].as_str().unwrap().contains("webm"));

    let mut file_url = job_spec("h264", "720p", 30, "mp4");
    file_url["sourceUrl"] = json!("file:///etc/passwd");
    let (code, body) = app.post("/jobs", file_url).await;
    assert_error(code, &body, 400, "invalid_url");
    assert!(
        body["message"].as_str().unwrap().contains("http://"),
        "{body}"
    );

    let r = app
        .client
        .delete(app.url("/jobs"))
        .header("X-API-Key", &app.api_key)
        .send()
        .await
        .unwrap();
    let (code, body) = (r.status().as_u16(), r.json::<Value>().await.unwrap());
    assert_error(code, &body, 405, "invalid_request");
    let (code, body) = app.get("/no/such/endpoint").await;
    assert_error(code, &body, 404, "not_found");

    let (code, body) = app.get("/jobs/not-a-uuid/status").await;
    assert_error(code, &body, 404, "not_found");
    let (code, body) = app.get(&format!("/jobs/{}/status", uuid_v7())).await;
    assert_error(code, &body, 404, "not_found");
    app.stop().await;
}

fn uuid_v7() -> String {
    convertrilo_core::JobId::new().to_string()
}

#[tokio::test]
async fn keys_scopes_and_tenants() {
    let app = spawn_app().await;
    let url = app.url("/jobs");
    let spec = job_spec("h264", "720p", 30, "mp4");
    let r = app.client.post(&url).json(&spec).send().await.unwrap();
    assert_error(
        r.status().as_u16(),
        &r.json().await.unwrap(),
        401,
        "invalid_api_key",
    );
    let r = app
        .client
        .post(&url)
        .header("X-API-Key", "cvt_nope")
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_error(
        r.status().as_u16(),
        &r.json().await.unwrap(),
        401,
        "invalid_api_key",
    );

    // A second account, and a read-only key of the first.
    let repos = &app.app_state.repos;
    convertrilo_server::accounts::create_user(
        repos,
        "other@example.com",
        "password123",
        false,
        None,
        None,
    )
    .await
    .unwrap();
    let (_, other_key) = convertrilo_server::accounts::create_api_key(
        repos,
        "other@example.com",
        "t",
        <Scope as convertrilo_core::WireEnum>::ALL.to_vec(),
        None,
    )
    .await
    .unwrap();
    let (_, read_only) = convertrilo_server::accounts::create_api_key(
        repos,
        "admin@localhost",
        "ro",
        vec![Scope::JobsRead],
        None,
    )
    .await
    .unwrap();

    let r = app
        .client
        .post(&url)
        .header("X-API-Key", &read_only)
        .json(&spec)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "missing_required_scope");
    assert_eq!(body["requiredScope"], "jobs:create");

    let (_, created) = app.post("/jobs", spec.clone()).await;
    let id = created["jobId"].as_str().unwrap();
    for (method, path) in [
        ("GET", "status"),
        ("GET", "probe-duration"),
        ("POST", "confirm"),
        ("POST", "cancel"),
        ("POST", "approve-unified"),
    ] {
        let req = app
            .client
            .request(
                method.parse().unwrap(),
                app.url(&format!("/jobs/{id}/{path}")),
            )
            .header("X-API-Key", &other_key);
        let r = req.send().await.unwrap();
        assert_error(
            r.status().as_u16(),
            &r.json().await.unwrap(),
            404,
            "not_found",
        );
    }
    // Token moves and key revocation are scoped to the owner too.
    for path in ["/tokens/reserve", "/tokens/release", "/tokens/deduct"] {
        let r = app
            .client
            .post(app.url(path))
            .header("X-API-Key", &other_key)
            .json(&json!({"jobId": id, "amount": 1}))
            .send()
            .await
            .unwrap();
        assert_error(
            r.status().as_u16(),
            &r.json().await.unwrap(),
            404,
            "not_found",
        );
    }
    let other_login: Value = app
        .client
        .post(app.url("/auth/login"))
        .json(&json!({"email": "other@example.com", "password": "password123"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = format!("Bearer {}", other_login["accessToken"].as_str().unwrap());
    let admin_keys = app
        .app_state
        .repos
        .auth
        .list_api_keys(
            app.app_state
                .repos
                .accounts
                .user_by_email("admin@localhost")
                .await
                .unwrap()
                .unwrap()
                .id,
        )
        .await
        .unwrap();
    let r = app
        .client
        .delete(app.url(&format!("/api-keys/{}", admin_keys[0].id)))
        .header("Authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_error(
        r.status().as_u16(),
        &r.json().await.unwrap(),
        404,
        "not_found",
    );
    // The owner still sees it, untouched.
    assert_eq!(app.status(id).await["status"], "created");
    app.stop().await;
}

#[tokio::test]
async fn files_that_are_not_video_fail_with_a_reason() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "these are not the frames you are looking for\n".repeat(100),
    )
    .unwrap();
    let truncated = dir.path().join("truncated.mp4");
    let full = std::fs::read(real_clip("bigbuckbunny.mp4")).unwrap();
    // The real clip keeps its index (moov) at the end: cutting the file loses it.
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();

    for file in [&text, &truncated] {
        let id = app
            .upload_job(file, job_spec("h264", "480p", 30, "mp4"))
            .await;
        let (code, body) = app.get(&format!("/jobs/{id}/probe-duration")).await;
        assert_error(code, &body, 422, "probe_failed");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("not a"),
            "{body}"
        );
        let (code, body) = app.post_empty(&format!("/jobs/{id}/approve-unified")).await;
        assert_error(code, &body, 422, "probe_failed");
        // Confirmed anyway: the job is accepted and then fails, saying why.
        let (code, body) = app.post_empty(&format!("/jobs/{id}/confirm")).await;
        assert_eq!(code, 200, "{body}");
        let done = app.wait_terminal(&id, Duration::from_secs(60)).await;
        assert_eq!(done["status"], "failed");
        let why = done["failureMessage"].as_str().unwrap();
        assert!(
            why.to_lowercase().contains("not a") && why.contains("video"),
            "{why}"
        );
        assert!(
            !why.contains(app.dir.path().to_str().unwrap()),
            "no server paths leak: {why}"
        );
        assert!(done["finishedAt"].is_string());
    }

    // Confirming before uploading is refused, and the job stays usable.
    let (_, created) = app.post("/jobs", job_spec("h264", "480p", 30, "mp4")).await;
    let id = created["jobId"].as_str().unwrap();
    let (code, body) = app.post_empty(&format!("/jobs/{id}/confirm")).await;
    assert_error(code, &body, 400, "invalid_request");
    assert!(body["message"].as_str().unwrap().contains("upload"));
    assert_eq!(app.status(id).await["status"], "created");
    app.stop().await;
}

#[tokio::test]
async fn unreadable_sources_are_client_errors_and_leave_nothing_behind() {
    let app = spawn_app().await;
    // A port nobody listens on (bound, then released).
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{dead}/clip.mp4");
    let mut spec = job_spec("h264", "480p", 30, "mp4");
    spec["sourceUrl"] = json!(url);
    spec["confirm"] = json!(true);
    let (code, body) = app.post("/jobs", spec.clone()).await;
    assert_error(code, &body, 422, "probe_failed");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("could not read the source"),
        "{body}"
    );
    assert!(body.get("jobId").is_none());

    // Without confirm the job exists; probing it is a 422, confirming queues it and the
    // worker fails it with the reason.
    spec["confirm"] = json!(false);
    let (code, created) = app.post("/jobs", spec).await;
    assert_eq!(code, 200, "{created}");
    let id = created["jobId"].as_str().unwrap();
    let (code, body) = app.get(&format!("/jobs/{id}/probe-duration")).await;
    assert_error(code, &body, 422, "probe_failed");
    let (code, _) = app.post_empty(&format!("/jobs/{id}/confirm")).await;
    assert_eq!(code, 200);
    let done = app.wait_terminal(id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "failed");
    assert!(
        done["failureMessage"]
            .as_str()
            .unwrap()
            .contains("could not download the source"),
        "{done}"
    );

    // A playlist that names a file on the server is not read.
    let dir = tempfile::tempdir().unwrap();
    let playlist = dir.path().join("evil.mp4");
    let secret = real_clip("bikes.mp4");
    std::fs::write(
        &playlist,
        format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile://{}\n#EXT-X-ENDLIST\n",
            secret.display()
        ),
    )
    .unwrap();
    let id = app
        .upload_job(&playlist, job_spec("h264", "480p", 30, "mp4"))
        .await;
    let (code, body) = app.get(&format!("/jobs/{id}/probe-duration")).await;
    assert_error(code, &body, 422, "probe_failed");
    app.stop().await;
}

#[tokio::test]
async fn reuploads_replace_the_source_cleanly() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.mp4");
    make_clip(
        &small,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=240x426:r=25:d=2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );
    let (_, created) = app.post("/jobs", job_spec("h264", "720p", 30, "mp4")).await;
    let id = created["jobId"].as_str().unwrap().to_string();
    let upload = created["upload"]["url"].as_str().unwrap().to_string();
    let put = |bytes: Vec<u8>| app.client.put(&upload).body(bytes).send();
    assert_eq!(
        put(std::fs::read(&small).unwrap())
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let (_, first) = app.get(&format!("/jobs/{id}/probe-duration")).await;
    assert!(
        (first["durationSec"].as_f64().unwrap() - 2.0).abs() < 0.1,
        "{first}"
    );

    // An empty re-upload is refused and the first file stays.
    let r = put(Vec::new()).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let (code, again) = app.get(&format!("/jobs/{id}/probe-duration")).await;
    assert_eq!((code, &again["durationSec"]), (200, &first["durationSec"]));

    // A real re-upload replaces it, and the old probe with it.
    assert_eq!(
        put(std::fs::read(real_clip("bigbuckbunny.mp4")).unwrap())
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let (_, second) = app.get(&format!("/jobs/{id}/probe-duration")).await;
    assert!(
        (second["durationSec"].as_f64().unwrap() - 5.31).abs() < 0.05,
        "{second}"
    );
    let (code, _) = app.post_empty(&format!("/jobs/{id}/confirm")).await;
    assert_eq!(code, 200);
    let done = app.wait_terminal(&id, Duration::from_secs(120)).await;
    let info = probe(&app.download(&done).await);
    let v = stream(&info, "video").unwrap();
    assert_eq!(
        (v["width"].as_i64(), v["height"].as_i64()),
        (Some(1280), Some(720))
    );
    assert!(
        stream(&info, "audio").is_some(),
        "the second upload's audio is encoded"
    );
    // Once queued, the job takes no more uploads.
    assert_eq!(
        put(std::fs::read(&small).unwrap())
            .await
            .unwrap()
            .status()
            .as_u16(),
        400
    );
    assert!(app.status(&id).await["uploadUrl"].is_null());
    app.stop().await;
}
