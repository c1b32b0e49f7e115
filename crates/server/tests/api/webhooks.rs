//! Managed webhooks: the API, signatures a receiver checks from the raw body, at-least-once
//! delivery in order through receiver outages and a server restart, disabling and
//! re-enabling, and a stuck receiver that costs one slot only.

use crate::helpers::*;
use base64::{engine::general_purpose::STANDARD, Engine};
use convertrilo_core::{Scope, WireEnum};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};
use tokio::sync::oneshot;

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
struct Seen {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

/// How the receiver answers request number n (0-based).
type Behaviour = Arc<dyn Fn(usize) -> Answer + Send + Sync>;

#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    Hang,
}

/// A webhook receiver on loopback that records every request it accepts (2xx) with its raw
/// body and headers, and counts all of them.
struct Hooks {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    calls: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
}

impl Hooks {
    async fn start(behaviour: Behaviour) -> Hooks {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let (s, c) = (seen.clone(), calls.clone());
        let router = axum::Router::new().fallback(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (s, c, b) = (s.clone(), c.clone(), behaviour.clone());
                async move {
                    let n = c.fetch_add(1, Ordering::SeqCst);
                    match b(n) {
                        Answer::Hang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            (axum::http::StatusCode::OK, String::new())
                        }
                        Answer::Status(code) => {
                            if (200..300).contains(&code) {
                                let headers = headers
                                    .iter()
                                    .map(|(k, v)| {
                                        (k.to_string(), v.to_str().unwrap_or("").to_string())
                                    })
                                    .collect();
                                s.lock().unwrap().push(Seen {
                                    headers,
                                    body: body.to_vec(),
                                });
                            }
                            // A long answer, to check it is capped in the record.
                            (
                                axum::http::StatusCode::from_u16(code).unwrap(),
                                "r".repeat(5000),
                            )
                        }
                    }
                }
            },
        );
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Hooks {
            base,
            seen,
            calls,
            stop: Some(stop),
        }
    }

    fn always(code: u16) -> Behaviour {
        Arc::new(move |_| Answer::Status(code))
    }

    fn url(&self) -> String {
        format!("{}/hooks/convertrilo", self.base)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    async fn wait_for(&self, what: impl Fn(&[Seen]) -> bool, limit: Duration) -> Vec<Seen> {
        let start = Instant::now();
        loop {
            let seen = self.seen();
            if what(&seen) {
                return seen;
            }
            assert!(
                start.elapsed() < limit,
                "receiver saw {} requests: {:?}",
                seen.len(),
                seen.iter()
                    .map(|s| s.json()["event"].clone())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Hooks {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn hex_hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Checks both signatures the way a receiver would, from the raw body.
fn verify(seen: &Seen, secret: &str) {
    let contract = hex::encode(hex_hmac(secret.as_bytes(), &[&seen.body]));
    assert_eq!(
        seen.header("x-webhook-signature"),
        contract,
        "X-Webhook-Signature"
    );
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let id = seen.header("webhook-id");
    let ts = seen.header("webhook-timestamp");
    let now = convertrilo_core::time::now_ms() / 1000;
    assert!(
        (now - ts.parse::<i64>().unwrap()).abs() < 60,
        "fresh timestamp"
    );
    let standard = format!(
        "v1,{}",
        STANDARD.encode(hex_hmac(
            &key,
            &[id.as_bytes(), b".", ts.as_bytes(), b".", &seen.body]
        ))
    );
    assert_eq!(
        seen.header("webhook-signature"),
        standard,
        "webhook-signature"
    );
}

async fn create_hook(app: &TestApp, url: &str, events: &[&str]) -> Value {
    let (code, hook) = app
        .post("/webhooks", json!({"url": url, "events": events}))
        .await;
    assert_eq!(code, 200, "{hook}");
    hook
}

async fn patch(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let r = app
        .client
        .patch(app.url(path))
        .header("X-API-Key", &app.api_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

const ALL: [&str; 6] = [
    "job.created",
    "job.queued",
    "job.running",
    "job.completed",
    "job.failed",
    "job.canceled",
];

#[tokio::test]
async fn the_webhook_api_validates_and_never_shows_the_secret_twice() {
    let app = spawn_app_with(|c| c.webhook_limit_per_account = 2).await;
    let hooks = Hooks::start(Hooks::always(200)).await;
    let hook = create_hook(&app, &hooks.url(), &["job.completed", "job.failed"]).await;
    let id = hook["id"].as_str().unwrap().to_string();
    let secret = hook["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(hook["isActive"], true);
    assert_eq!(hook["failureCount"], 0);
    assert_eq!(hook["events"], json!(["job.completed", "job.failed"]));
    let (code, list) = app.get("/webhooks").await;
    assert_eq!(code, 200);
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 1);
    assert!(list["webhooks"][0].get("secret").is_none(), "{list}");

    for (body, path) in [
        (
            json!({"url": "ftp://x", "events": ["job.completed"]}),
            "url",
        ),
        (json!({"url": hooks.url(), "events": []}), "events"),
        (
            json!({"url": hooks.url(), "events": ["job.exploded"]}),
            "events[0]",
        ),
        (json!({"events": ["job.completed"]}), "url"),
    ] {
        let (code, e) = app.post("/webhooks", body.clone()).await;
        assert_eq!(
            (code, e["code"].as_str()),
            (400, Some("invalid_body")),
            "{body}"
        );
        assert_eq!(e["issues"][0]["path"], path, "{e}");
    }
    create_hook(&app, &hooks.url(), &["job.created"]).await;
    let (code, e) = app
        .post(
            "/webhooks",
            json!({"url": hooks.url(), "events": ["job.created"]}),
        )
        .await;
    assert_eq!(
        (code, e["code"].as_str()),
        (400, Some("webhook_limit_exceeded")),
        "{e}"
    );

    let (code, e) = patch(&app, &format!("/webhooks/{id}"), json!({})).await;
    assert_eq!(
        (code, e["code"].as_str()),
        (400, Some("no_updates_provided"))
    );
    let (code, e) = patch(
        &app,
        "/webhooks/01900000-0000-7000-8000-000000000000",
        json!({"isActive": false}),
    )
    .await;
    assert_eq!((code, e["code"].as_str()), (404, Some("webhook_not_found")));
    let (code, e) = patch(&app, "/webhooks/not-a-uuid", json!({"isActive": false})).await;
    assert_eq!((code, e["code"].as_str()), (404, Some("webhook_not_found")));
    let (code, updated) = patch(
        &app,
        &format!("/webhooks/{id}"),
        json!({"events": ["job.canceled"], "isActive": false}),
    )
    .await;
    assert_eq!(code, 200, "{updated}");
    assert_eq!(
        (updated["isActive"].as_bool(), updated["events"][0].as_str()),
        (Some(false), Some("job.canceled"))
    );
    assert!(updated.get("secret").is_none());

    // The test event is signed like the others and logged.
    let (code, t) = app.post_empty(&format!("/webhooks/{id}")).await;
    assert_eq!(code, 200, "{t}");
    assert_eq!(
        (t["ok"].as_bool(), t["statusCode"].as_i64()),
        (Some(true), Some(200))
    );
    let seen = hooks
        .wait_for(|s| !s.is_empty(), Duration::from_secs(5))
        .await;
    assert_eq!(seen[0].json()["event"], "webhook.test");
    assert_eq!(seen[0].header("x-webhook-event"), "webhook.test");
    assert_eq!(seen[0].header("x-webhook-id"), id);
    verify(&seen[0], &secret);
    let (code, d) = app.get(&format!("/webhooks/{id}/deliveries")).await;
    assert_eq!(code, 200);
    let first = &d["deliveries"][0];
    assert_eq!(
        (first["event"].as_str(), first["status"].as_str()),
        (Some("webhook.test"), Some("success"))
    );
    assert_eq!(
        first["responseBody"].as_str().unwrap().chars().count(),
        2048,
        "capped"
    );
    assert!(
        !d.to_string().contains(&secret[6..]),
        "no secret in delivery records"
    );

    // Scope: webhooks:manage.
    let (_, key) = convertrilo_server::accounts::create_api_key(
        &app.app_state.repos,
        "admin@localhost",
        "no-hooks",
        Scope::ALL
            .iter()
            .copied()
            .filter(|s| *s != Scope::WebhooksManage)
            .collect(),
        None,
    )
    .await
    .unwrap();
    let r = app
        .client
        .get(app.url("/webhooks"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    let r = app
        .client
        .delete(app.url(&format!("/webhooks/{id}")))
        .header("X-API-Key", &app.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (code, _) = app.get(&format!("/webhooks/{id}/deliveries")).await;
    assert_eq!(code, 404);
    app.stop().await;
}

#[tokio::test]
async fn a_job_s_events_arrive_signed_in_order_through_a_receiver_outage() {
    let app = spawn_app_with(|c| c.webhook_retry_base_secs = 1).await;
    // Down for the first three requests, then up.
    let hooks = Hooks::start(Arc::new(|n| Answer::Status(if n < 3 { 503 } else { 200 }))).await;
    let hook = create_hook(&app, &hooks.url(), &ALL).await;
    let secret = hook["secret"].as_str().unwrap().to_string();
    let clip = small_clip(app.dir.path(), "w.mp4", 1);
    let id = app
        .upload_job(&clip, json!({"codec": "h264", "resolution": "480p", "fps": 30, "confirm": true, "externalId": "hook-1", "metadata": {"k": "v"}}))
        .await;
    let done = app.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "success");
    let seen = hooks
        .wait_for(
            |s| s.iter().any(|x| x.json()["event"] == "job.completed"),
            Duration::from_secs(60),
        )
        .await;
    let events: Vec<String> = seen
        .iter()
        .map(|s| s.json()["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        events,
        ["job.created", "job.queued", "job.running", "job.completed"],
        "in order, once each"
    );
    let mut ids = HashSet::new();
    for s in &seen {
        verify(s, &secret);
        assert_eq!(s.header("x-webhook-id"), hook["id"].as_str().unwrap());
        assert_eq!(
            s.header("x-webhook-event"),
            s.json()["event"].as_str().unwrap()
        );
        assert!(
            ids.insert(s.header("webhook-id").to_string()),
            "one message id per event"
        );
        let d = &s.json()["data"];
        assert_eq!(d["jobId"], id.as_str());
        assert_eq!(d["externalId"], "hook-1");
        assert_eq!(d["metadata"]["k"], "v");
    }
    let completed = seen[3].json();
    assert_eq!(completed["data"]["status"], "success");
    assert!(
        (completed["data"]["finalNeu"].as_f64().unwrap() - done["chargedNeu"].as_f64().unwrap())
            .abs()
            < 1e-9
    );
    assert_eq!(seen[2].json()["data"]["status"], "running");

    // The log shows the failed attempts, their retries, and the successes.
    let (_, d) = app
        .get(&format!(
            "/webhooks/{}/deliveries",
            hook["id"].as_str().unwrap()
        ))
        .await;
    let log = d["deliveries"].as_array().unwrap();
    let failed: Vec<&Value> = log.iter().filter(|x| x["status"] == "failed").collect();
    assert_eq!(failed.len(), 3, "{d}");
    for f in &failed {
        assert_eq!(f["statusCode"], 503);
        assert!(f["nextRetryAt"].is_string());
        assert!(f["error"].as_str().unwrap().contains("503"));
    }
    assert!(log.iter().any(|x| x["status"] == "success"
        && x["attempt"].as_i64().unwrap() > 1
        && x["retriedAt"].is_string()));
    app.stop().await;
}

#[tokio::test]
async fn events_survive_a_restart_during_backoff_and_a_hundred_jobs_all_arrive() {
    let app = spawn_app_with(|c| {
        c.webhook_retry_base_secs = 1;
        // The outage must not disable the webhook here (that rule has its own test).
        c.webhook_max_failures = 1_000;
        c.workers = 0;
    })
    .await;
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let d2 = down.clone();
    // Down until told otherwise; then every third request fails, to force retries.
    let hooks = Hooks::start(Arc::new(move |n| {
        if d2.load(Ordering::SeqCst) || n % 3 == 0 {
            Answer::Status(500)
        } else {
            Answer::Status(204)
        }
    }))
    .await;
    create_hook(&app, &hooks.url(), &["job.created", "job.canceled"]).await;
    let items: Vec<Value> = (0..100).map(|i| json!({"codec": "h264", "resolution": "480p", "fps": 30, "externalId": format!("n{i}")})).collect();
    let (code, bulk) = app.post("/jobs/bulk", json!({"jobs": items})).await;
    assert_eq!(code, 200);
    let ids: Vec<String> = bulk["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["jobId"].as_str().unwrap().to_string())
        .collect();
    for id in &ids {
        let (code, _) = app.post_empty(&format!("/jobs/{id}/cancel")).await;
        assert_eq!(code, 200);
    }
    // Let some attempts fail, then stop the server while events wait to be retried.
    let start = Instant::now();
    while hooks.calls.load(Ordering::SeqCst) < 5 {
        assert!(start.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let app = app.restart().await;
    down.store(false, Ordering::SeqCst);
    let seen = hooks
        .wait_for(
            |s| {
                let got: HashSet<(String, String)> = s
                    .iter()
                    .map(|x| {
                        let v = x.json();
                        (
                            v["data"]["jobId"].as_str().unwrap_or("").to_string(),
                            v["event"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect();
                got.len() >= 200
            },
            Duration::from_secs(120),
        )
        .await;
    // Every (job, event) arrived; any duplicate is a retry of the same message.
    let mut by_pair: HashMap<(String, String), HashSet<String>> = HashMap::new();
    for s in &seen {
        let v = s.json();
        by_pair
            .entry((
                v["data"]["jobId"].as_str().unwrap().to_string(),
                v["event"].as_str().unwrap().to_string(),
            ))
            .or_default()
            .insert(s.header("webhook-id").to_string());
    }
    for id in &ids {
        for event in ["job.created", "job.canceled"] {
            let msgs = by_pair
                .get(&(id.clone(), event.to_string()))
                .unwrap_or_else(|| panic!("{event} of {id} missing"));
            assert_eq!(msgs.len(), 1, "duplicates share one webhook-id");
        }
        // Per job, created before canceled.
        let order: Vec<&str> = seen
            .iter()
            .filter(|s| s.json()["data"]["jobId"] == id.as_str())
            .map(|s| {
                if s.json()["event"] == "job.created" {
                    "c"
                } else {
                    "x"
                }
            })
            .collect();
        assert_eq!(order.first(), Some(&"c"), "{id}: {order:?}");
    }
    app.stop().await;
}

async fn hook_state(app: &TestApp, h: &Value) -> Value {
    let (_, list) = app.get("/webhooks").await;
    list["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == h["id"])
        .unwrap()
        .clone()
}

#[tokio::test]
async fn gone_and_repeated_failures_disable_and_patch_re_enables() {
    let app = spawn_app_with(|c| {
        c.webhook_retry_base_secs = 1;
        c.webhook_max_failures = 3;
        c.workers = 0;
    })
    .await;
    let gone = Hooks::start(Hooks::always(410)).await;
    let failing = Hooks::start(Arc::new(|n| Answer::Status(if n < 3 { 500 } else { 200 }))).await;
    let h_gone = create_hook(&app, &gone.url(), &["job.created"]).await;
    let h_fail = create_hook(&app, &failing.url(), &["job.created"]).await;
    let (_, job) = app.post("/jobs", job_spec("h264", "480p", 30, "mp4")).await;
    let job_id = job["jobId"].as_str().unwrap().to_string();
    let start = Instant::now();
    loop {
        let (g, f) = (
            hook_state(&app, &h_gone).await,
            hook_state(&app, &h_fail).await,
        );
        if g["isActive"] == false && f["isActive"] == false {
            assert_eq!(g["failureCount"], 1, "410 disables at once");
            assert_eq!(f["failureCount"], 3, "three failures in a row");
            assert!(f["lastFailedAt"].is_string());
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{g} {f}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Re-enabled, the pending event goes out (the receiver answers 200 from now on).
    let (code, r) = patch(
        &app,
        &format!("/webhooks/{}", h_fail["id"].as_str().unwrap()),
        json!({"isActive": true}),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        (r["isActive"].as_bool(), r["failureCount"].as_i64()),
        (Some(true), Some(0))
    );
    let seen = failing
        .wait_for(|s| !s.is_empty(), Duration::from_secs(30))
        .await;
    assert_eq!(seen[0].json()["data"]["jobId"], job_id.as_str());
    assert!(gone.seen().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_stuck_receiver_holds_one_slot_not_the_service() {
    let app = spawn_app_with(|c| {
        c.webhook_timeout_secs = 5;
        c.webhook_retry_base_secs = 60;
        c.workers = 0;
    })
    .await;
    let stuck = Hooks::start(Arc::new(|_| Answer::Hang)).await;
    let fine = Hooks::start(Hooks::always(200)).await;
    let h_stuck = create_hook(&app, &stuck.url(), &["job.created"]).await;
    create_hook(&app, &fine.url(), &["job.created"]).await;
    for _ in 0..5 {
        app.post("/jobs", job_spec("h264", "480p", 30, "mp4")).await;
    }
    // Every event reaches the working receiver while the stuck one still holds its first
    // request: one attempt in flight for it, none finished.
    fine.wait_for(|s| s.len() >= 5, Duration::from_secs(10))
        .await;
    let id = h_stuck["id"].as_str().unwrap();
    let (_, d) = app.get(&format!("/webhooks/{id}/deliveries")).await;
    assert!(d["deliveries"].as_array().unwrap().is_empty(), "{d}");
    assert_eq!(
        stuck.calls.load(Ordering::SeqCst),
        1,
        "one slot for the stuck receiver"
    );
    // Its attempt ends at the timeout and is recorded as such.
    let start = Instant::now();
    let d = loop {
        let (_, d) = app.get(&format!("/webhooks/{id}/deliveries")).await;
        if !d["deliveries"].as_array().unwrap().is_empty() {
            break d;
        }
        assert!(start.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        d["deliveries"][0]["error"]
            .as_str()
            .unwrap()
            .contains("no answer within 5 s"),
        "{d}"
    );
    app.stop().await;
}
