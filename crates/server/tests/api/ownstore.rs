//! The service's own objects in an S3-compatible bucket (the in-process S3 server): an
//! upload goes straight to the bucket through a presigned link, is found at confirm,
//! encodes, and downloads through a presigned link; nothing lands in the local object
//! directory. Plus the store's own semantics: size limit, missing objects, listing.

use crate::{helpers::*, s3server::*};
use convertrilo_storage::StorageError;
use futures::StreamExt;
use std::time::Duration;

async fn app_on_s3(s3: &S3Server) -> TestApp {
    let endpoint = s3.endpoint.clone();
    spawn_app_with(move |c| {
        c.storage_url = Some("s3://media/convertrilo".into());
        c.storage_s3_endpoint = Some(endpoint);
        c.storage_s3_access_key_id = Some(ACCESS_KEY.into());
        c.storage_s3_secret_access_key = Some(SECRET_KEY.into());
        c.storage_s3_force_path_style = true;
    })
    .await
}

#[tokio::test]
async fn an_upload_to_the_bucket_encodes_and_downloads_through_presigned_links() {
    let s3 = S3Server::start(&["media"]).await;
    let app = app_on_s3(&s3).await;
    let clip = small_clip(app.dir.path(), "clip.mp4", 2);
    let (code, created) = app.post("/jobs", job_spec("h264", "480p", 25, "mp4")).await;
    assert_eq!(code, 200, "{created}");
    let id = created["jobId"].as_str().unwrap().to_string();
    let put_url = created["upload"]["url"].as_str().unwrap();
    assert!(put_url.starts_with(&format!(
        "{}/media/convertrilo/inputs/{id}/source?",
        s3.endpoint
    )));
    assert!(put_url.contains("X-Amz-Signature="));

    // Confirming before the upload says what to do.
    let (code, e) = app.post_empty(&format!("/jobs/{id}/confirm")).await;
    assert_eq!(code, 400, "{e}");
    assert!(e["message"].as_str().unwrap().contains("not been uploaded"));

    let bytes = std::fs::read(&clip).unwrap();
    let r = app
        .client
        .put(put_url)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let (code, confirmed) = app.post_empty(&format!("/jobs/{id}/confirm")).await;
    assert_eq!(
        (code, confirmed["status"].as_str()),
        (200, Some("queued")),
        "{confirmed}"
    );

    let s = app.wait_terminal(&id, Duration::from_secs(120)).await;
    assert_eq!(s["status"], "success", "{s}");
    assert!(
        s["durationSec"].as_f64().unwrap() > 1.5,
        "probed through a presigned link: {s}"
    );
    let link = s["downloadUrl"].as_str().unwrap();
    assert!(
        link.starts_with(&format!("{}/media/convertrilo/outputs/", s3.endpoint)),
        "{link}"
    );
    assert!(link.contains("X-Amz-Signature=") && link.contains("response-content-disposition"));
    // A presigned link names the access key id (SigV4 does); never the secret.
    assert!(!s.to_string().contains(SECRET_KEY));
    let out = app.download(&s).await;
    let info = probe(&out);
    // A real video came back (the 240-line source is not upscaled to 480p).
    assert_eq!(stream(&info, "video").unwrap()["height"], 240);
    assert!((duration(&info) - 2.0).abs() < 0.2);

    // The objects are in the bucket, and none in the local data directory.
    assert_eq!(
        std::fs::read(s3.path("media", &format!("convertrilo/inputs/{id}/source"))).unwrap(),
        bytes
    );
    let outputs = app
        .app_state
        .store
        .list(&format!("outputs/{id}"))
        .await
        .unwrap();
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    assert!(outputs[0].1 > 0);
    assert!(!app.config.data_dir.join("objects").join("inputs").exists());

    // Housekeeping purges the ended job's input from the bucket; the output (no expiry) stays.
    let now = convertrilo_core::time::now_ms();
    convertrilo_server::housekeeping::run_once(&app.app_state, now).await;
    assert!(!s3
        .path("media", &format!("convertrilo/inputs/{id}/source"))
        .exists());
    assert_eq!(
        app.app_state
            .store
            .list(&format!("outputs/{id}"))
            .await
            .unwrap()
            .len(),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn an_upload_over_the_limit_is_refused_and_deleted_at_confirm() {
    let s3 = S3Server::start(&["media"]).await;
    let endpoint = s3.endpoint.clone();
    let app = spawn_app_with(move |c| {
        c.workers = 0;
        c.max_upload_bytes = 1000;
        c.storage_url = Some("s3://media".into());
        c.storage_s3_endpoint = Some(endpoint);
        c.storage_s3_access_key_id = Some(ACCESS_KEY.into());
        c.storage_s3_secret_access_key = Some(SECRET_KEY.into());
        c.storage_s3_force_path_style = true;
    })
    .await;
    let (_, created) = app.post("/jobs", job_spec("h264", "480p", 25, "mp4")).await;
    let id = created["jobId"].as_str().unwrap().to_string();
    let url = created["upload"]["url"].as_str().unwrap();
    let r = app
        .client
        .put(url)
        .body(vec![7u8; 5000])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let (code, e) = app.post_empty(&format!("/jobs/{id}/confirm")).await;
    assert_eq!(code, 413, "{e}");
    assert!(!s3.path("media", &format!("inputs/{id}/source")).exists());
    app.stop().await;
}

#[tokio::test]
async fn the_store_limits_reports_missing_objects_and_lists_one_level() {
    let s3 = S3Server::start(&["media"]).await;
    let app = app_on_s3(&s3).await;
    let store = &app.app_state.store;
    let body = |chunks: Vec<&'static [u8]>| {
        futures::stream::iter(chunks.into_iter().map(|c| Ok(bytes::Bytes::from_static(c)))).boxed()
    };
    assert_eq!(
        store
            .put_stream("inputs/j/a", body(vec![b"abc", b"def"]), 10)
            .await
            .unwrap(),
        6
    );
    let err = store
        .put_stream("inputs/j/b", body(vec![b"abcdef", b"ghijkl"]), 10)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::TooLarge { limit: 10 }), "{err}");
    assert!(matches!(
        store.size("inputs/j/b").await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        store.get_stream("inputs/j/b").await,
        Err(StorageError::NotFound(_))
    ));
    assert_eq!(store.size("inputs/j/a").await.unwrap(), 6);
    store
        .put_stream("inputs/j/deeper/c", body(vec![b"x"]), 10)
        .await
        .unwrap();
    assert_eq!(
        store.list("inputs/j").await.unwrap(),
        [("inputs/j/a".to_string(), 6)]
    );
    assert!(store.list("inputs/none").await.unwrap().is_empty());
    let mut read = Vec::new();
    let mut s = store.get_stream("inputs/j/a").await.unwrap();
    while let Some(chunk) = s.next().await {
        read.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(read, b"abcdef");
    assert!(s3.path("media", "convertrilo/inputs/j/a").is_file());
    store.delete("inputs/j/a").await.unwrap();
    store.delete("inputs/j/a").await.unwrap();
    assert!(store.local_path("inputs/j/a").is_none());
    // Nothing was left spooled.
    let staging = app.config.scratch_dir().join("store-staging");
    assert_eq!(std::fs::read_dir(staging).unwrap().count(), 0);
    app.stop().await;
}

/// A worker must use the store the API uses, and reach it: otherwise it would take jobs only
/// to hand them back (or fail them) without encoding anything.
#[tokio::test]
async fn a_worker_that_cannot_reach_or_is_not_on_the_fleets_store_refuses_to_start() {
    let s3 = S3Server::start(&["media", "other"]).await;
    let app = app_on_s3(&s3).await;
    // The store is named on the API's first start.
    assert!(s3.path("media", "convertrilo/store-id").is_file());
    let worker_config = |bucket: &str, endpoint: &str| {
        let dir = tempfile::tempdir().unwrap();
        let mut c = test_config(dir.path());
        c.database_url = Some(app.config.database_url());
        c.storage_url = Some(format!("s3://{bucket}/convertrilo"));
        c.storage_s3_endpoint = Some(endpoint.to_string());
        c.storage_s3_access_key_id = Some(ACCESS_KEY.into());
        c.storage_s3_secret_access_key = Some(SECRET_KEY.into());
        c.storage_s3_force_path_style = true;
        (dir, c)
    };
    let refused = |c: convertrilo_server::config::Config| async move {
        match convertrilo_server::startup::WorkerProcess::start(c).await {
            Ok(_) => panic!("the worker started"),
            Err(e) => format!("{e:#}"),
        }
    };

    // Nothing listens there: refused, naming what to check.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (_d, c) = worker_config("media", &closed);
    let err = refused(c).await;
    assert!(
        err.contains("cannot use the bucket media") && err.contains("storage_s3_endpoint"),
        "{err}"
    );

    // Reachable, but another bucket: it is not the fleet's store, and is left unnamed.
    let (_d, c) = worker_config("other", &s3.endpoint);
    let err = refused(c).await;
    assert!(
        err.contains("new and empty") && err.contains("same storage_url"),
        "{err}"
    );
    assert!(!s3.path("other", "convertrilo/store-id").exists());

    // A local directory while the fleet is on S3: refused too.
    let dir = tempfile::tempdir().unwrap();
    let mut local = test_config(dir.path());
    local.database_url = Some(app.config.database_url());
    let err = refused(local).await;
    assert!(err.contains("not the object store"), "{err}");

    // The fleet's own bucket: the worker starts.
    let (_d, c) = worker_config("media", &s3.endpoint);
    let worker = convertrilo_server::startup::WorkerProcess::start(c)
        .await
        .expect("a worker on the fleet's bucket starts");
    worker.run_until(async {}).await.unwrap();
    app.stop().await;
}

/// Load balancers take a process out when its store stops answering, and the reason says
/// which check failed, once.
#[tokio::test]
async fn readiness_fails_naming_the_store_when_the_bucket_goes_away() {
    let s3 = S3Server::start(&["media"]).await;
    let app = app_on_s3(&s3).await;
    let (code, body) = app.get("/readyz").await;
    assert_eq!(code, 200, "{body}");
    std::fs::rename(s3.path("media", ""), s3.path("gone", "")).unwrap();
    let (code, body) = app.get("/readyz").await;
    assert_eq!(
        (code, body["status"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    let failed = body["failed"][0].as_str().unwrap();
    assert!(
        failed.starts_with("object store: ") && failed.matches("object store").count() == 1,
        "{body}"
    );
    assert!(failed.contains("NoSuchBucket"), "{body}");
    app.stop().await;
}

/// A first start that cannot write the store's name leaves the database unnamed, so a later
/// start with working settings goes ahead; `forget_store` lets a fleet name another store.
#[tokio::test]
async fn a_first_start_that_cannot_name_the_store_leaves_nothing_behind() {
    let s3 = S3Server::start(&["media", "other"]).await;
    let dir = tempfile::tempdir().unwrap();
    let on_bucket = |bucket: &str| {
        let mut c = test_config(dir.path());
        c.storage_url = Some(format!("s3://{bucket}/fleet"));
        c.storage_s3_endpoint = Some(s3.endpoint.clone());
        c.storage_s3_access_key_id = Some(ACCESS_KEY.into());
        c.storage_s3_secret_access_key = Some(SECRET_KEY.into());
        c.storage_s3_force_path_style = true;
        c
    };
    let start = |c: convertrilo_server::config::Config| async move {
        convertrilo_server::startup::WorkerProcess::start(c)
            .await
            .map_err(|e| format!("{e:#}"))
    };
    // Read-only credentials: the name cannot be written.
    let err = start(on_bucket("readonly")).await.err().expect("refused");
    assert!(
        err.contains("cannot use the bucket readonly") && err.contains("AccessDenied"),
        "{err}"
    );
    // The database was left unnamed: the right bucket starts.
    let worker = start(on_bucket("media"))
        .await
        .expect("starts after a failed first start");
    worker.run_until(async {}).await.unwrap();
    assert!(s3.path("media", "fleet/store-id").is_file());

    // Another bucket is refused, with the way out named...
    let err = start(on_bucket("other")).await.err().expect("refused");
    assert!(err.contains("admin forget-store"), "{err}");
    // ...which makes the next start name its own store.
    let repos = convertrilo_server::startup::open_repos(&on_bucket("other"))
        .await
        .unwrap();
    assert!(
        convertrilo_server::ownstore::forget_store(&on_bucket("other"), &repos, false)
            .await
            .unwrap()
    );
    let worker = start(on_bucket("other"))
        .await
        .expect("starts once the store is forgotten");
    worker.run_until(async {}).await.unwrap();
    assert!(s3.path("other", "fleet/store-id").is_file());
}

/// With local storage too, a process whose object directory was moved away is not ready.
#[tokio::test]
async fn readiness_fails_when_the_local_object_directory_is_moved_away() {
    let app = spawn_app().await;
    let objects = app.config.objects_dir();
    let aside = app.dir.path().join("objects-aside");
    std::fs::rename(&objects, &aside).unwrap();
    let (code, body) = app.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["failed"][0].as_str().unwrap().contains("store-id"),
        "{body}"
    );
    std::fs::rename(&aside, &objects).unwrap();
    let (code, body) = app.get("/readyz").await;
    assert_eq!(code, 200, "{body}");
    // Another store's name in its place: not ready either.
    let name = objects.join("store-id");
    let ours = std::fs::read_to_string(&name).unwrap();
    std::fs::write(&name, "deadbeef\n").unwrap();
    let (code, body) = app.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["failed"][0]
            .as_str()
            .unwrap()
            .contains("deadbeef, not"),
        "{body}"
    );
    std::fs::write(&name, ours).unwrap();
    let (code, body) = app.get("/readyz").await;
    assert_eq!(code, 200, "{body}");
    app.stop().await;
}
