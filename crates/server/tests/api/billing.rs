//! NEU billing through the API: trial grants, reservations, 402s, settlement, and the
//! invariant `available + reserved + spent + expired == granted` under concurrency.

use crate::helpers::*;
use convertrilo_core::{Neu, Scope, WireEnum};
use convertrilo_server::accounts;
use serde_json::{json, Value};
use std::time::Duration;

struct Account {
    key: String,
}

async fn account(app: &TestApp, email: &str) -> Account {
    let repos = &app.app_state.repos;
    accounts::create_user(repos, email, "password123", false, None, app.config.trial())
        .await
        .unwrap();
    let (_, key) = accounts::create_api_key(repos, email, "t", Scope::ALL.to_vec(), None)
        .await
        .unwrap();
    Account { key }
}

async fn call(
    app: &TestApp,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app
        .client
        .request(method.parse().unwrap(), app.url(path))
        .header("X-API-Key", key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn n(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Exact in thousandths, as the ledger keeps it.
fn milli(v: &Value) -> i64 {
    (n(v) * 1000.0).round() as i64
}

async fn balance(app: &TestApp, key: &str) -> Value {
    let (code, b) = call(app, key, "GET", "/tokens/balance", None).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(
        milli(&b["available"]) + milli(&b["reserved"]) + milli(&b["spent"]) + milli(&b["expired"]),
        milli(&b["granted"]),
        "ledger invariant: {b}"
    );
    assert!(n(&b["available"]) >= 0.0, "overdrawn: {b}");
    b
}

async fn upload_job(app: &TestApp, key: &str, clip: &std::path::Path, spec: Value) -> String {
    let (code, created) = call(app, key, "POST", "/jobs", Some(spec)).await;
    assert_eq!(code, 200, "{created}");
    let r = app
        .client
        .put(created["upload"]["url"].as_str().unwrap())
        .body(std::fs::read(clip).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    created["jobId"].as_str().unwrap().to_string()
}

async fn wait(app: &TestApp, key: &str, id: &str) -> Value {
    let start = std::time::Instant::now();
    loop {
        let (_, s) = call(app, key, "GET", &format!("/jobs/{id}/status"), None).await;
        if matches!(
            s["status"].as_str(),
            Some("success" | "failed" | "canceled")
        ) {
            return s;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reservations_charges_and_refunds() {
    let app = spawn_app_with(|c| c.trial_grant_neu = Neu::from_whole(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    make_clip(
        &clip,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=320x240:r=25:d=3",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );
    let a = account(&app, "payer@example.com").await;
    let b0 = balance(&app, &a.key).await;
    assert_eq!(
        (n(&b0["available"]), n(&b0["trialGrantRemaining"])),
        (1.0, 1.0)
    );
    assert!(b0["trialExpiresAt"].is_string());

    // Approve reserves the estimate: 3 s of 480p h264 at 1 NEU/min = 0.05 NEU.
    let id = upload_job(&app, &a.key, &clip, job_spec("h264", "480p", 30, "mp4")).await;
    let (code, approved) = call(
        &app,
        &a.key,
        "POST",
        &format!("/jobs/{id}/approve-unified"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{approved}");
    assert_eq!(
        (
            n(&approved["estimate"]["totalNeu"]),
            n(&approved["estimate"]["reserved"])
        ),
        (0.05, 0.05)
    );
    assert_eq!(n(&balance(&app, &a.key).await["reserved"]), 0.05);
    // Manual moves on a created job.
    let mv = |path: &'static str, amount: i64| {
        call(
            &app,
            &a.key,
            "POST",
            path,
            Some(json!({"jobId": id, "amount": amount})),
        )
    };
    let (code, r) = mv("/tokens/release", 1).await;
    assert_eq!(
        (code, n(&r["amount"]), n(&r["jobReserved"])),
        (200, 0.05, 0.0),
        "{r}"
    );
    let (code, r) = mv("/tokens/reserve", 5).await;
    assert_eq!(
        (code, r["code"].as_str(), n(&r["available"])),
        (402, Some("insufficient_tokens"), 1.0),
        "{r}"
    );
    let (code, _) = call(
        &app,
        &a.key,
        "POST",
        "/tokens/reserve",
        Some(json!({"jobId": "nope", "amount": 0})),
    )
    .await;
    assert_eq!(code, 400);

    // Confirm re-reserves; success charges the encoded duration and releases the rest.
    let (code, _) = call(&app, &a.key, "POST", &format!("/jobs/{id}/confirm"), None).await;
    assert_eq!(code, 200);
    let (code, r) = mv("/tokens/release", 1).await;
    assert_eq!(
        code, 400,
        "a queued job's tokens are the service's to settle: {r}"
    );
    let done = wait(&app, &a.key, &id).await;
    assert_eq!(done["status"], "success", "{done}");
    let charged = n(&done["chargedNeu"]);
    assert!(charged > 0.0 && charged <= 0.05, "{done}");
    assert_eq!(n(&done["reservedNeu"]), 0.0);
    let b1 = balance(&app, &a.key).await;
    assert_eq!((n(&b1["spent"]), n(&b1["reserved"])), (charged, 0.0));

    // Cancel releases everything; a job the account cannot afford is refused and kept created.
    let id2 = upload_job(&app, &a.key, &clip, job_spec("h264", "480p", 30, "mp4")).await;
    call(
        &app,
        &a.key,
        "POST",
        &format!("/jobs/{id2}/approve-unified"),
        None,
    )
    .await;
    let (code, _) = call(&app, &a.key, "POST", &format!("/jobs/{id2}/cancel"), None).await;
    assert_eq!(code, 200);
    assert_eq!(n(&balance(&app, &a.key).await["reserved"]), 0.0);
    let mut pricey = job_spec("av1", "4320p", 60, "mkv");
    pricey["preset"] = json!("slow");
    let id3 = upload_job(&app, &a.key, &clip, pricey).await;
    let (code, err) = call(&app, &a.key, "POST", &format!("/jobs/{id3}/confirm"), None).await;
    assert_eq!(
        (code, err["code"].as_str()),
        (402, Some("insufficient_tokens")),
        "{err}"
    );
    assert!(n(&err["required"]) > n(&err["available"]));
    let (_, s) = call(&app, &a.key, "GET", &format!("/jobs/{id3}/status"), None).await;
    assert_eq!(
        (s["status"].as_str(), n(&s["reservedNeu"])),
        (Some("created"), 0.0)
    );
    balance(&app, &a.key).await;
    app.stop().await;
}

/// 50 jobs confirmed and canceled concurrently on one account whose tokens cover only some:
/// never overdrawn, every reservation settled exactly, the invariant exact at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_confirms_and_cancels_never_overdraw() {
    let app = spawn_app_with(|c| {
        c.workers = 2;
        c.trial_grant_neu = Neu::from_millis(100);
        // This test is about the ledger; the request limit has its own test.
        c.rate_limit_per_minute = 10_000;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("tiny.mp4");
    make_clip(
        &clip,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=160x120:r=10:d=0.5",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );
    let a = account(&app, "busy@example.com").await;
    let mut ids = Vec::new();
    for _ in 0..50 {
        let id = upload_job(&app, &a.key, &clip, job_spec("h264", "480p", 30, "mp4")).await;
        // Probe now so the concurrent phase exercises the ledger, not ffprobe start-up.
        assert_eq!(
            call(
                &app,
                &a.key,
                "GET",
                &format!("/jobs/{id}/probe-duration"),
                None
            )
            .await
            .0,
            200
        );
        ids.push(id);
    }
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let (app_url, key, id, client) = (
            app.base.clone(),
            a.key.clone(),
            id.clone(),
            app.client.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let confirm = client
                .post(format!("{app_url}/jobs/{id}/confirm"))
                .header("X-API-Key", &key)
                .send()
                .await
                .unwrap();
            let code = confirm.status().as_u16();
            if i % 3 == 0 {
                client
                    .post(format!("{app_url}/jobs/{id}/cancel"))
                    .header("X-API-Key", &key)
                    .send()
                    .await
                    .unwrap();
            }
            code
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert!(codes.iter().all(|c| *c == 200 || *c == 402), "{codes:?}");
    assert!(
        codes.contains(&402),
        "the account could not afford every job"
    );
    let mut charged = 0i64;
    for id in &ids {
        let s = wait_or_created(&app, &a.key, id).await;
        assert_eq!(n(&s["reservedNeu"]), 0.0, "{s}");
        charged += milli(&s["chargedNeu"]);
    }
    let b = balance(&app, &a.key).await;
    assert_eq!((milli(&b["spent"]), milli(&b["reserved"])), (charged, 0));
    app.stop().await;
}

/// Jobs refused with 402 stay `created` (nothing to wait for); the rest finish.
async fn wait_or_created(app: &TestApp, key: &str, id: &str) -> Value {
    let (_, s) = call(app, key, "GET", &format!("/jobs/{id}/status"), None).await;
    if s["status"] == "created" {
        return s;
    }
    wait(app, key, id).await
}

/// A source that fails the confirm-time probe once (so no estimate is reserved) must still be
/// paid for: the worker prices what it fetched and fails the job when the account is short.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_could_not_be_priced_at_confirm_is_priced_before_encoding() {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };
    let app = spawn_app_with(|c| c.trial_grant_neu = Neu::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    make_clip(
        &clip,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=320x240:r=25:d=3",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );
    let bytes = Arc::new(std::fs::read(&clip).unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/clip.mp4", listener.local_addr().unwrap());
    let router = axum::Router::new().route(
        "/clip.mp4",
        axum::routing::get(move || {
            let (bytes, hits) = (bytes.clone(), hits.clone());
            async move {
                if hits.fetch_add(1, Ordering::SeqCst) == 0 {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, Vec::new())
                } else {
                    (axum::http::StatusCode::OK, bytes.to_vec())
                }
            }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let broke = account(&app, "broke@example.com").await;
    let mut spec = job_spec("h264", "480p", 30, "mp4");
    spec["sourceUrl"] = json!(url);
    let (_, created) = call(&app, &broke.key, "POST", "/jobs", Some(spec)).await;
    let id = created["jobId"].as_str().unwrap().to_string();
    let (code, confirmed) = call(
        &app,
        &broke.key,
        "POST",
        &format!("/jobs/{id}/confirm"),
        None,
    )
    .await;
    assert_eq!(
        (code, confirmed["status"].as_str()),
        (200, Some("queued")),
        "the failed probe does not block confirm"
    );
    let done = wait(&app, &broke.key, &id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["failureMessage"]
            .as_str()
            .unwrap()
            .contains("too few tokens"),
        "{done}"
    );
    assert!(done["downloadUrl"].is_null());
    assert_eq!(n(&done["chargedNeu"]), 0.0);
    let b = balance(&app, &broke.key).await;
    assert_eq!(
        (n(&b["granted"]), n(&b["spent"]), n(&b["reserved"])),
        (0.0, 0.0, 0.0)
    );

    // An upload that cannot be queued for lack of tokens is still kept, and says so.
    let (_, created) = call(
        &app,
        &broke.key,
        "POST",
        "/jobs",
        Some(json!({"codec": "h264", "resolution": "480p", "fps": 30, "confirm": true})),
    )
    .await;
    let r = app
        .client
        .put(created["upload"]["url"].as_str().unwrap())
        .body(std::fs::read(&clip).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 402);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("the file was uploaded, but the job was not queued"),
        "{body}"
    );
    let kept = created["jobId"].as_str().unwrap();
    assert_eq!(
        call(
            &app,
            &broke.key,
            "GET",
            &format!("/jobs/{kept}/probe-duration"),
            None
        )
        .await
        .0,
        200
    );

    // Manual settlement is refused inside the ledger once a job is queued (no race window).
    let rich = account(&app, "rich@example.com").await;
    let user = app
        .app_state
        .repos
        .accounts
        .user_by_email("rich@example.com")
        .await
        .unwrap()
        .unwrap();
    app.app_state
        .repos
        .ledger
        .grant(user.id, Neu::from_whole(5))
        .await
        .unwrap();
    let queued = upload_job(
        &app,
        &rich.key,
        &clip,
        json!({"codec": "h264", "resolution": "480p", "fps": 30, "confirm": true}),
    )
    .await;
    let job_id = queued.parse().unwrap();
    let err = app
        .app_state
        .repos
        .ledger
        .release_for_job(user.id, job_id, Neu::from_whole(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, convertrilo_db::DbError::Invalid(_)),
        "{err:?}"
    );
    let done = wait(&app, &rich.key, &queued).await;
    assert!(n(&done["chargedNeu"]) > 0.0, "{done}");
    server.abort();
    app.stop().await;
}
