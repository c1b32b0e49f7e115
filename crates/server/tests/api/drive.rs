//! Google Drive folder ingest and output against a local stand-in for Google's API: listing
//! page by page, downloads, resumable uploads resumed from what Google kept, an expired access
//! token renewed through the OAuth token endpoint, and the token problems the caller must fix.

use crate::{drivefake::*, helpers::*};
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

async fn app_for(drive: &FakeDrive, oauth: bool) -> TestApp {
    let (base, token_url) = (drive.base.clone(), drive.token_url());
    spawn_app_with(move |c| {
        c.google_drive_api_base = base;
        c.google_oauth_token_url = token_url;
        if oauth {
            c.google_oauth_client_id = Some(CLIENT_ID.into());
            c.google_oauth_client_secret = Some(CLIENT_SECRET.into());
        }
        // Two entries per listing page, and upload chunks of 512 KiB (of which Google's
        // stand-in keeps at most 256 KiB each time).
        c.folder_list_page_size = 2;
        c.google_drive_chunk_bytes = 512 * 1024;
    })
    .await
}

#[tokio::test]
async fn drive_folder_to_drive_with_pages_and_a_token_refresh() {
    let clip = std::fs::read(real_clip("bigbuckbunny.mp4")).unwrap();
    let mut world = World::default();
    world.folders = vec!["src".into(), "out".into()];
    world.valid_tokens = vec![];
    world
        .refreshable
        .insert("refresh-1".into(), "fresh-access-1".into());
    world.add_file(
        "f1",
        "bunny.mp4",
        "video/mp4",
        "src",
        clip.clone(),
        Some(5_312),
    );
    world.add_file(
        "f2",
        "notes.txt",
        "text/plain",
        "src",
        b"hello".to_vec(),
        None,
    );
    world.add_file(
        "f3",
        "second.mov",
        "video/quicktime",
        "src",
        clip.clone(),
        None,
    );
    world.add_file(
        "f4",
        "cover.jpg",
        "image/jpeg",
        "src",
        b"jpg".to_vec(),
        None,
    );
    world.add_file(
        "f5",
        "zz-elsewhere.mp4",
        "video/mp4",
        "out",
        b"x".to_vec(),
        None,
    );
    let drive = FakeDrive::start(world).await;
    let app = app_for(&drive, true).await;
    let tokens = json!({"accessToken": "expired-access-1", "refreshToken": "refresh-1"});
    let body = json!({
        "externalIdPrefix": "drive-batch",
        "metadata": {"customer": "c-9"},
        "sourceGoogleDrive": {"folderId": "src", "accessToken": "expired-access-1", "refreshToken": "refresh-1"},
        "outputDestination": "google-drive",
        "outputGoogleDrive": {"folderId": "out", "accessToken": tokens["accessToken"], "refreshToken": tokens["refreshToken"]},
        "resolution": "480p",
    });
    let (code, r) = app.post("/ondemand/ingest/folder", body).await;
    assert_eq!(code, 200, "{r}");
    let text = r.to_string();
    assert!(
        !text.contains("refresh-1") && !text.contains("access-1"),
        "{text}"
    );
    let jobs = r["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "two videos among four files: {r}");
    assert_eq!(jobs[0]["fileName"], "bunny.mp4");
    assert_eq!(jobs[0]["externalId"], "drive-batch:bunny.mp4");
    assert_eq!(jobs[1]["fileName"], "second.mov");
    assert!(
        r["message"].as_str().unwrap().contains("2 other entries"),
        "{r}"
    );
    {
        let w = drive.world.lock().unwrap();
        assert!(w.list_pages >= 2, "the listing took two pages");
        assert!(w.refreshes >= 1, "the expired token was renewed");
        assert!(w.log.iter().any(|l| l.ends_with(" expired-access-1")));
    }
    // Google's duration priced the first file; the second is priced by the worker.
    let first = app.status(jobs[0]["jobId"].as_str().unwrap()).await;
    assert!(first["estimatedNeu"].as_f64().unwrap() > 0.0, "{first}");
    assert_eq!(first["ingest"], "google-drive");
    for (job, name) in jobs.iter().zip(["bunny-480p.mp4", "second-480p.mp4"]) {
        let id = job["jobId"].as_str().unwrap();
        let s = wait_ondemand(&app, id).await;
        assert_eq!(s["status"], "success", "{s}");
        assert_eq!(
            s["destination"],
            json!({"type": "google-drive", "folderId": "out", "fileName": name})
        );
        assert!(s["downloadUrl"].is_null());
        assert_eq!(s["metadata"]["customer"], "c-9");
        let st = app.status(id).await;
        assert!(st["chargedNeu"].as_f64().unwrap() > 0.0, "{st}");
        assert!(
            app.app_state
                .repos
                .jobs
                .job_secret(id.parse().unwrap())
                .await
                .unwrap()
                .is_none(),
            "the tokens went with the job's end"
        );
    }
    let uploaded = drive.files_in("out");
    let names: Vec<&str> = uploaded.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["bunny-480p.mp4", "second-480p.mp4", "zz-elsewhere.mp4"]
    );
    for f in &uploaded[..2] {
        assert_eq!(f.mime_type, "video/mp4");
        assert!(
            f.bytes.len() > 256 * 1024,
            "more than one chunk: {}",
            f.bytes.len()
        );
        let path = app.dir.path().join(&f.name);
        std::fs::write(&path, &f.bytes).unwrap();
        let info = probe(&path);
        assert_eq!(stream(&info, "video").unwrap()["height"], 480);
        assert!((duration(&info) - 5.31).abs() < 0.15);
    }
    let puts = drive.world.lock().unwrap().upload_puts;
    assert!(puts >= 4, "uploads resumed from the kept range: {puts}");
    app.stop().await;
}

#[tokio::test]
async fn drive_token_problems_are_401_and_missing_folders_404() {
    let mut world = World::default();
    world.folders = vec!["src".into(), "out".into()];
    world.valid_tokens = vec!["good".into()];
    world.add_file("f1", "a.txt", "text/plain", "src", b"x".to_vec(), None);
    let drive = FakeDrive::start(world).await;
    let app = app_for(&drive, false).await;
    let no_oauth = app_for(&drive, false).await;
    let with_oauth = app_for(&drive, true).await;

    let folder = |source: Value| json!({"sourceGoogleDrive": source, "resolution": "480p"});
    // No token at all.
    let (c, e) = app
        .post(
            "/ondemand/ingest/folder",
            folder(json!({"folderId": "src"})),
        )
        .await;
    assert_eq!(
        (c, e["code"].as_str()),
        (401, Some("google_drive_not_connected")),
        "{e}"
    );
    assert!(
        e["message"].as_str().unwrap().contains("accessToken"),
        "{e}"
    );
    // An expired token and no OAuth client on this server to use the refresh token with.
    let (c, e) = no_oauth
        .post(
            "/ondemand/ingest/folder",
            folder(json!({"folderId": "src", "accessToken": "stale", "refreshToken": "r"})),
        )
        .await;
    assert_eq!(
        (c, e["code"].as_str()),
        (401, Some("google_drive_not_connected")),
        "{e}"
    );
    assert!(
        e["message"].as_str().unwrap().contains("OAuth client"),
        "{e}"
    );
    // A refresh token Google refuses.
    let (c, e) = with_oauth
        .post(
            "/ondemand/ingest/folder",
            folder(json!({"folderId": "src", "accessToken": "stale", "refreshToken": "revoked"})),
        )
        .await;
    assert_eq!(
        (c, e["code"].as_str()),
        (401, Some("google_drive_not_connected")),
        "{e}"
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("expired or revoked"),
        "{e}"
    );
    // A folder with no video.
    let (c, e) = app
        .post(
            "/ondemand/ingest/folder",
            folder(json!({"folderId": "src", "accessToken": "good"})),
        )
        .await;
    assert_eq!(
        (c, e["code"].as_str()),
        (404, Some("no_video_files_found")),
        "{e}"
    );
    // A folder that is not there.
    let (c, e) = app
        .post(
            "/ondemand/ingest/folder",
            folder(json!({"folderId": "gone", "accessToken": "good"})),
        )
        .await;
    assert_eq!((c, e["code"].as_str()), (404, Some("not_found")), "{e}");

    // On-demand output to Drive is checked before anything is queued.
    let (c, e) = app
        .post(
            "/ondemand/encode",
            json!({"sourceUrl": "http://127.0.0.1:9/a.mp4", "outputGoogleDrive": {"folderId": "nope", "accessToken": "good"}}),
        )
        .await;
    assert_eq!((c, e["code"].as_str()), (404, Some("not_found")), "{e}");
    let (c, e) = app
        .post(
            "/ondemand/encode",
            json!({"sourceUrl": "http://127.0.0.1:9/a.mp4", "outputGoogleDrive": {"folderId": "out"}}),
        )
        .await;
    assert_eq!(
        (c, e["code"].as_str()),
        (401, Some("google_drive_not_connected")),
        "{e}"
    );
    for a in [app, no_oauth, with_oauth] {
        a.stop().await;
    }
}

#[tokio::test]
async fn ondemand_url_to_drive_with_a_file_name() {
    let mut world = World::default();
    world.folders = vec!["out".into()];
    world.valid_tokens = vec!["good".into()];
    let drive = FakeDrive::start(world).await;
    let app = app_for(&drive, false).await;
    let media = real_clip("bigbuckbunny.mp4");
    let host = FileHost::serve(media.parent().unwrap()).await;
    let (c, r) = app
        .post(
            "/ondemand/encode",
            json!({"sourceUrl": host.url("bigbuckbunny.mp4"), "resolution": "480p", "container": "mkv",
                "outputGoogleDrive": {"folderId": "out", "fileName": "My Clip.mkv", "accessToken": "good"}}),
        )
        .await;
    assert_eq!(c, 200, "{r}");
    assert_eq!(r["outputFilename"], "My Clip.mkv");
    let s = wait_ondemand(&app, r["jobId"].as_str().unwrap()).await;
    assert_eq!(s["status"], "success", "{s}");
    assert_eq!(s["destination"]["fileName"], "My Clip.mkv");
    let files = drive.files_in("out");
    assert_eq!(files.len(), 1);
    assert_eq!(
        (files[0].name.as_str(), files[0].mime_type.as_str()),
        ("My Clip.mkv", "video/x-matroska")
    );
    let path = app.dir.path().join("drive.mkv");
    std::fs::write(&path, &files[0].bytes).unwrap();
    assert_eq!(probe(&path)["format"]["format_name"], "matroska,webm");
    app.stop().await;
}
