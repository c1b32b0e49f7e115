//! `Idempotency-Key`: concurrent retries create one job and one reservation; a finished
//! request replays byte for byte; a different body conflicts; a failed request frees its key.

use crate::helpers::*;
use serde_json::{json, Value};

#[tokio::test]
async fn concurrent_retries_create_exactly_one_job_and_replay_byte_for_byte() {
    // No workers: the job stays queued, so its reservation is there to count.
    let app = spawn_app_with(|c| c.workers = 0).await;
    let clip = small_clip(app.dir.path(), "a.mp4", 2);
    let host = FileHost::serve(app.dir.path()).await;
    let body = json!({
        "codec": "h264", "resolution": "480p", "fps": 30,
        "sourceUrl": host.url(clip.file_name().unwrap().to_str().unwrap()),
        "confirm": true, "externalId": "order-17", "metadata": {"customer": "c-1"}
    });
    let before = app.balance().await;
    let attempts: Vec<_> = (0..20)
        .map(|_| {
            let body = body.clone();
            let app = &app;
            async move {
                app.post_raw("/jobs", &body, &[("Idempotency-Key", "create-order-17")])
                    .await
            }
        })
        .collect();
    let results = futures::future::join_all(attempts).await;
    let mut originals = Vec::new();
    let (mut replays, mut in_progress) = (0, 0);
    for (status, headers, bytes) in &results {
        let replayed = headers.get("idempotent-replayed").is_some();
        match (status, replayed) {
            (200, false) => originals.push(bytes.clone()),
            (200, true) => replays += 1,
            (409, _) => {
                let e: Value = serde_json::from_slice(bytes).unwrap();
                assert_eq!(e["code"], "idempotency_in_progress", "{e}");
                in_progress += 1;
            }
            other => panic!(
                "unexpected answer {other:?}: {}",
                String::from_utf8_lossy(bytes)
            ),
        }
    }
    assert_eq!(originals.len(), 1, "exactly one request did the work");
    assert_eq!(replays + in_progress, 19);
    for (status, _, bytes) in &results {
        if *status == 200 {
            assert_eq!(bytes, &originals[0], "every replay is the original body");
        }
    }
    let created: Value = serde_json::from_slice(&originals[0]).unwrap();
    assert_eq!(created["status"], "queued");
    assert_eq!(created["externalId"], "order-17");
    assert_eq!(created["metadata"]["customer"], "c-1");
    let reserved = created["estimate"]["reserved"].as_f64().unwrap();
    assert!(reserved > 0.0);

    // One job, one reservation: the queue holds one job, the account holds one estimate.
    assert_eq!(app.app_state.repos.jobs.queue_depth().await.unwrap(), 1);
    let after = app.balance().await;
    assert!(
        (after["reserved"].as_f64().unwrap() - before["reserved"].as_f64().unwrap() - reserved)
            .abs()
            < 1e-9,
        "{before} → {after}"
    );
    let user = app
        .app_state
        .repos
        .accounts
        .user_by_email("admin@localhost")
        .await
        .unwrap()
        .unwrap();
    let reserve_entries = app
        .app_state
        .repos
        .ledger
        .entries(user.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == convertrilo_db::EntryKind::Reserve)
        .count();
    assert_eq!(reserve_entries, 1, "one reservation");

    // After completion, a replay is the original, byte for byte, flagged as a replay; the
    // same body with its keys reordered is the same request.
    let reordered: Value = serde_json::from_str(&{
        let mut m: Vec<(String, Value)> = body.as_object().unwrap().clone().into_iter().collect();
        m.reverse();
        serde_json::to_string(&m.into_iter().collect::<serde_json::Map<_, _>>()).unwrap()
    })
    .unwrap();
    let (status, headers, bytes) = app
        .post_raw(
            "/jobs",
            &reordered,
            &[("Idempotency-Key", "create-order-17")],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(bytes, originals[0]);

    // The same key with another body conflicts.
    let mut other = body.clone();
    other["resolution"] = json!("720p");
    let (status, _, bytes) = app
        .post_raw("/jobs", &other, &[("Idempotency-Key", "create-order-17")])
        .await;
    assert_eq!(status, 409);
    let e: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(e["code"], "idempotency_conflict");
    assert!(e["message"].as_str().unwrap().contains("different request"));
    // So does the same key on another endpoint.
    let (status, _, _) = app
        .post_raw(
            "/ondemand/encode",
            &json!({"sourceUrl": body["sourceUrl"]}),
            &[("Idempotency-Key", "create-order-17")],
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(app.app_state.repos.jobs.queue_depth().await.unwrap(), 1);
    app.stop().await;
}

#[tokio::test]
async fn bad_keys_are_refused_and_a_failed_request_frees_its_key() {
    let app = spawn_app_with(|c| c.workers = 0).await;
    let clip = small_clip(app.dir.path(), "b.mp4", 1);
    let host = FileHost::serve(app.dir.path()).await;
    let spec = job_spec("h264", "480p", 30, "mp4");
    for key in [String::new(), "k".repeat(256)] {
        let (status, _, bytes) = app
            .post_raw("/jobs", &spec, &[("Idempotency-Key", key.as_str())])
            .await;
        assert_eq!(status, 400, "key of {} chars", key.len());
        let e: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(
            e["message"].as_str().unwrap().contains("Idempotency-Key"),
            "{e}"
        );
    }
    let (status, _, _) = app
        .post_raw("/jobs", &spec, &[("Idempotency-Key", &"k".repeat(255))])
        .await;
    assert_eq!(status, 200, "255 characters is allowed");

    // A source that cannot be read: 422, no job, and the key stays free for the fix.
    let mut broken = spec.clone();
    broken["sourceUrl"] = json!(host.url("missing.mp4"));
    broken["confirm"] = json!(true);
    let (status, _, bytes) = app
        .post_raw("/jobs", &broken, &[("Idempotency-Key", "retry-me")])
        .await;
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(app.app_state.repos.jobs.queue_depth().await.unwrap(), 0);
    let mut fixed = broken.clone();
    fixed["sourceUrl"] = json!(host.url(clip.file_name().unwrap().to_str().unwrap()));
    let (status, headers, _) = app
        .post_raw("/jobs", &fixed, &[("Idempotency-Key", "retry-me")])
        .await;
    assert_eq!(status, 200);
    assert!(headers.get("idempotent-replayed").is_none());
    assert_eq!(app.app_state.repos.jobs.queue_depth().await.unwrap(), 1);
    app.stop().await;
}

/// A host that accepts connections and never answers.
async fn silent_host() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (base, task)
}

#[tokio::test]
async fn a_client_that_hangs_up_frees_its_key() {
    let app = spawn_app_with(|c| c.workers = 0).await;
    let (silent, task) = silent_host().await;
    let host = FileHost::serve(app.dir.path()).await;
    let key = [("Idempotency-Key", "hang-up-1")];
    // The probe of a silent host takes the probe timeout; the client gives up after 1 s.
    let slow = json!({"sourceUrl": format!("{silent}/clip.mp4")});
    let r = app
        .client
        .post(app.url("/ondemand/encode"))
        .header("X-API-Key", &app.api_key)
        .header(key[0].0, key[0].1)
        .timeout(std::time::Duration::from_secs(1))
        .json(&slow)
        .send()
        .await;
    assert!(r.is_err(), "the client timed out");
    // The server notices the hang-up and gives the key back: a corrected request may use it
    // (here one whose source is missing, which answers at once).
    let fixed = json!({"sourceUrl": host.url("missing.mp4")});
    let mut answer = (0, Value::Null);
    for _ in 0..50 {
        let (status, _, bytes) = app.post_raw("/ondemand/encode", &fixed, &key).await;
        answer = (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        );
        if status != 409 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(answer.0, 422, "the key was freed: {}", answer.1);
    assert_eq!(answer.1["code"], "probe_failed");
    // While a request holds its key, a retry is told to wait.
    let held = {
        let app = &app;
        let slow = slow.clone();
        async move {
            app.post_raw("/ondemand/encode", &slow, &[("Idempotency-Key", "hold-1")])
                .await
        }
    };
    let probe = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        app.post_raw("/ondemand/encode", &slow, &[("Idempotency-Key", "hold-1")])
            .await
    };
    let (_, (status, headers, _)) = tokio::join!(
        tokio::time::timeout(std::time::Duration::from_secs(2), held),
        probe
    );
    assert_eq!(status, 409);
    assert_eq!(headers["retry-after"], "2");
    task.abort();
    app.stop().await;
}
