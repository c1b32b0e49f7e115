//! URL ingest safety with private networks refused (the service default): internal
//! addresses refused at request time on every surface, a redirect to one refused at
//! download time, the response checks, the host lists and the off switch.
//!
//! A fake resolver makes `video.example` a public address and routes connections to it
//! (after the address check) to a loopback server, so the checks run as they do in service.

use crate::helpers::*;
use axum::{
    body::Body,
    extract::Request,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use convertrilo_server::outbound::Network;
use serde_json::{json, Value};
use sqlx::Connection;
use std::{
    net::IpAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};
use tower::ServiceExt;

const PUBLIC_IP: &str = "93.184.215.14";

/// `video.example` is public (and served from loopback); `internal.example` is private.
struct Net;

#[async_trait::async_trait]
impl Network for Net {
    async fn resolve(&self, host: &str, _port: u16) -> std::io::Result<Vec<IpAddr>> {
        match host.trim_end_matches('.') {
            "video.example" | "blocked.example" => Ok(vec![PUBLIC_IP.parse().unwrap()]),
            "internal.example" => Ok(vec!["10.20.30.40".parse().unwrap()]),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such host",
            )),
        }
    }
    fn route(&self, ip: IpAddr) -> IpAddr {
        if ip.to_string() == PUBLIC_IP {
            "127.0.0.1".parse().unwrap()
        } else {
            ip
        }
    }
}

/// The customer's host: a clip (with ranges), a page, the clip without a length, and a
/// switch that makes `/clip.mp4` redirect elsewhere.
struct SourceHost {
    port: u16,
    redirect_to: Arc<Mutex<Option<String>>>,
    direct_hits: Arc<AtomicUsize>,
}

impl SourceHost {
    async fn start(clip: PathBuf) -> SourceHost {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let redirect_to: Arc<Mutex<Option<String>>> = Arc::default();
        let direct_hits = Arc::new(AtomicUsize::new(0));
        let (to, file) = (redirect_to.clone(), clip.clone());
        let (hits, direct) = (direct_hits.clone(), clip.clone());
        let chunked = clip.clone();
        let router = Router::new()
            .route(
                "/clip.mp4",
                get(move |req: Request| {
                    let (to, file) = (to.clone(), file.clone());
                    async move {
                        if let Some(target) = to.lock().unwrap().clone() {
                            return (StatusCode::FOUND, [(header::LOCATION, target)])
                                .into_response();
                        }
                        serve(file, req).await
                    }
                }),
            )
            .route(
                "/direct.mp4",
                get(move |req: Request| {
                    hits.fetch_add(1, Ordering::SeqCst);
                    serve(direct.clone(), req)
                }),
            )
            .route(
                "/page.html",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "text/html")],
                        "<html>not a video</html>",
                    )
                }),
            )
            .route(
                "/chunked.mp4",
                get(move || {
                    let path = chunked.clone();
                    async move {
                        let bytes = tokio::fs::read(path).await.unwrap();
                        let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes)]);
                        (
                            [(header::CONTENT_TYPE, "video/mp4")],
                            Body::from_stream(body),
                        )
                    }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, router).await });
        SourceHost {
            port,
            redirect_to,
            direct_hits,
        }
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port)
    }
}

async fn serve(file: PathBuf, req: Request) -> Response {
    tower_http::services::ServeFile::new(file)
        .oneshot(req)
        .await
        .into_response()
}

fn with_source(url: &str, confirm: bool) -> Value {
    let mut spec = job_spec("h264", "480p", 30, "mp4");
    spec["sourceUrl"] = json!(url);
    spec["confirm"] = json!(confirm);
    spec
}

fn assert_refused(status: u16, body: &Value, want_status: u16, want_code: &str, says: &str) {
    assert_eq!(
        (status, body["code"].as_str()),
        (want_status, Some(want_code)),
        "{body}"
    );
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(says),
        "{message:?} should mention {says:?}"
    );
}

async fn jobs_in_db(app: &TestApp) -> i64 {
    let mut db = sqlx::SqliteConnection::connect(&app.config.database_url())
        .await
        .unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
        .fetch_one(&mut db)
        .await
        .unwrap()
}

async fn strict_app(tweak: impl FnOnce(&mut convertrilo_server::Config)) -> TestApp {
    spawn_app_on(Arc::new(Net), |c| {
        c.ingest_allow_private_networks = false;
        tweak(c)
    })
    .await
}

#[tokio::test]
async fn internal_addresses_are_refused_on_every_surface() {
    let app = strict_app(|c| {
        c.workers = 0;
        c.public_jobs_enabled = true;
        c.url_host_blocklist = vec!["blocked.example".into()];
    })
    .await;
    let clip = small_clip(app.dir.path(), "clip.mp4", 1);
    let host = SourceHost::start(clip.clone()).await;
    // The loopback file host the other tests use.
    let files = FileHost::serve(app.dir.path()).await;
    let port = host.port;

    let cases = [
        (files.url("clip.mp4"), 400, "private_ip_blocked", "loopback"),
        (
            format!("http://localhost:{port}/clip.mp4"),
            400,
            "private_ip_blocked",
            "loopback",
        ),
        (
            format!("http://LOCALHOST.:{port}/clip.mp4"),
            400,
            "private_ip_blocked",
            "loopback",
        ),
        (
            format!("http://2130706433:{port}/clip.mp4"),
            400,
            "private_ip_blocked",
            "127.0.0.1",
        ),
        (
            format!("http://0x7f.1:{port}/clip.mp4"),
            400,
            "private_ip_blocked",
            "127.0.0.1",
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/clip.mp4"),
            400,
            "private_ip_blocked",
            "loopback",
        ),
        (
            format!("http://video.example@127.0.0.1:{port}/clip.mp4"),
            400,
            "private_ip_blocked",
            "loopback",
        ),
        (
            "http://169.254.169.254/latest/meta-data/".into(),
            400,
            "private_ip_blocked",
            "metadata",
        ),
        (
            host.url("internal.example", "/clip.mp4"),
            400,
            "private_ip_blocked",
            "10.20.30.40",
        ),
        (
            "http://nowhere.example/clip.mp4".into(),
            400,
            "host_not_resolvable",
            "nowhere.example",
        ),
        (
            host.url("blocked.example", "/clip.mp4"),
            400,
            "url_host_blocked",
            "blocklist",
        ),
        ("file:///etc/passwd".into(), 400, "invalid_url", "http://"),
        (
            "gopher://video.example/".into(),
            400,
            "invalid_url",
            "gopher",
        ),
    ];
    for (url, status, code, says) in &cases {
        for confirm in [false, true] {
            let (got, body) = app.post("/jobs", with_source(url, confirm)).await;
            assert_refused(got, &body, *status, code, says);
        }
    }
    assert_eq!(jobs_in_db(&app).await, 0, "no job was created");

    // The same checks on the other surfaces that take a URL.
    let loopback = files.url("clip.mp4");
    let (code, body) = app
        .post("/ondemand/encode", json!({"sourceUrl": loopback}))
        .await;
    assert_refused(code, &body, 400, "private_ip_blocked", "sourceUrl");
    let good = host.url("video.example", "/clip.mp4");
    let (code, body) = app
        .post(
            "/ondemand/encode",
            json!({"sourceUrl": good, "webhook": "http://[::1]:9/hook"}),
        )
        .await;
    assert_refused(code, &body, 400, "private_ip_blocked", "webhook");
    let (code, body) = app
        .post(
            "/ondemand/encode",
            json!({"sourceUrl": good, "webhook": host.url("internal.example", "/hook")}),
        )
        .await;
    assert_refused(code, &body, 400, "private_ip_blocked", "webhook");
    let r = app
        .client
        .post(app.url("/public/jobs"))
        .json(&json!({"codec": "h264", "resolution": "480p", "fps": 30, "sourceUrl": loopback}))
        .send()
        .await
        .unwrap();
    let (code, body) = (r.status().as_u16(), r.json::<Value>().await.unwrap());
    assert_refused(code, &body, 400, "private_ip_blocked", "loopback");
    let bulk = json!({"jobs": [
        with_source(&loopback, false),
        with_source(&host.url("internal.example", "/clip.mp4"), false),
        with_source(&good, false),
    ]});
    let (code, body) = app.post("/jobs/bulk", bulk).await;
    assert_eq!(code, 200, "{body}");
    let items = body["jobs"].as_array().unwrap();
    assert_eq!(items[0]["code"], "private_ip_blocked", "{body}");
    assert_eq!(items[1]["code"], "private_ip_blocked", "{body}");
    assert_eq!(items[2]["status"], "created", "{body}");
    assert_eq!(
        jobs_in_db(&app).await,
        1,
        "only the public source made a job"
    );

    // A public host works end to end through the probe proxy, and HTTP checks apply.
    let (code, body) = app.post("/jobs", with_source(&good, true)).await;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("queued")),
        "{body}"
    );
    let (code, body) = app
        .post(
            "/jobs",
            with_source(&host.url("video.example", "/page.html"), true),
        )
        .await;
    assert_refused(code, &body, 422, "unsupported_content_type", "text/html");
    let (code, body) = app
        .post(
            "/jobs",
            with_source(&host.url("video.example", "/nope.mp4"), true),
        )
        .await;
    assert_refused(code, &body, 422, "probe_failed", "HTTP 404");
    assert_eq!(
        app.app_state.probe_proxy.open_tickets(),
        0,
        "every probe closed its ticket"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_redirect_to_a_private_address_is_refused_at_download_time() {
    let app = strict_app(|c| c.require_content_length = true).await;
    let clip = small_clip(app.dir.path(), "clip.mp4", 1);
    let host = SourceHost::start(clip).await;

    // Created and probed while the public host serves the file.
    let (code, created) = app
        .post(
            "/jobs",
            with_source(&host.url("video.example", "/clip.mp4"), false),
        )
        .await;
    assert_eq!(code, 200, "{created}");
    let id = created["jobId"].as_str().unwrap();
    let (code, probed) = app.get(&format!("/jobs/{id}/probe-duration")).await;
    assert_eq!(code, 200, "{probed}");
    assert!(probed["durationSec"].as_f64().unwrap() > 0.5, "{probed}");

    // Then the host starts redirecting to loopback. Confirm reuses the stored probe, so the
    // first request to the host after the switch is the worker's download.
    *host.redirect_to.lock().unwrap() = Some(host.url("127.0.0.1", "/direct.mp4"));
    let (code, confirmed) = app.post_empty(&format!("/jobs/{id}/confirm")).await;
    assert_eq!(
        (code, confirmed["status"].as_str()),
        (200, Some("queued")),
        "{confirmed}"
    );
    let done = app.wait_terminal(id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "failed", "{done}");
    let why = done["failureMessage"].as_str().unwrap();
    assert!(
        why.contains("redirect") && why.contains("127.0.0.1") && why.contains("loopback"),
        "{why}"
    );
    assert_eq!(
        host.direct_hits.load(Ordering::SeqCst),
        0,
        "the redirect target was never requested"
    );

    // The same redirect at request time is refused before anything is created.
    let (code, body) = app
        .post(
            "/jobs",
            with_source(&host.url("video.example", "/clip.mp4"), true),
        )
        .await;
    assert_refused(code, &body, 400, "private_ip_blocked", "redirect");

    // A host that declares no length, when lengths are required.
    let (code, body) = app
        .post(
            "/jobs",
            with_source(&host.url("video.example", "/chunked.mp4"), true),
        )
        .await;
    assert_refused(code, &body, 422, "missing_content_length", "Content-Length");
    assert_eq!(host.direct_hits.load(Ordering::SeqCst), 0);
    app.stop().await;
}

#[tokio::test]
async fn url_ingest_can_be_turned_off() {
    let app = strict_app(|c| {
        c.workers = 0;
        c.url_ingest_enabled = false;
    })
    .await;
    let (code, body) = app
        .post(
            "/jobs",
            with_source("https://video.example/clip.mp4", false),
        )
        .await;
    assert_refused(code, &body, 403, "url_ingest_disabled", "upload");
    let (code, body) = app
        .post(
            "/ondemand/encode",
            json!({"sourceUrl": "https://video.example/clip.mp4"}),
        )
        .await;
    assert_refused(code, &body, 403, "url_ingest_disabled", "upload");
    // Uploads are unaffected.
    let (code, body) = app.post("/jobs", job_spec("h264", "480p", 30, "mp4")).await;
    assert_eq!(code, 200, "{body}");
    assert!(body["upload"]["url"].is_string());
    app.stop().await;
}
