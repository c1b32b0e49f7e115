//! `/jobs/bulk…`: per-item validation, failFast, dryRun, confirm with an all-or-nothing
//! reservation, bulk status and bulk confirm.

use crate::helpers::*;
use convertrilo_core::{Neu, Scope, WireEnum};
use convertrilo_server::accounts;
use serde_json::{json, Value};

fn milli(v: &Value) -> i64 {
    (v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")) * 1000.0).round() as i64
}

#[tokio::test]
async fn bulk_create_validates_each_item_and_reserves_all_or_nothing() {
    let app = spawn_app_with(|c| c.workers = 0).await;
    let clip = small_clip(app.dir.path(), "c.mp4", 2);
    let host = FileHost::serve(app.dir.path()).await;
    let src = host.url(clip.file_name().unwrap().to_str().unwrap());
    let item = |i: usize| {
        json!({"codec": "h264", "resolution": "480p", "fps": 30, "externalId": format!("b:{i}"),
               "metadata": {"i": i}, "originalFilename": format!("clip-{i}.mov")})
    };

    // Three upload jobs and one bad one: the good ones are created, the bad one named.
    let mut bad = item(3);
    bad["resolution"] = json!("9000p");
    let body = json!({"jobs": [item(0), item(1), item(2), bad], "settings": {"container": "mkv"}});
    let (code, r) = app.post("/jobs/bulk", body).await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(
        (r["totalJobs"].as_i64(), r["rejected"].as_i64()),
        (Some(3), Some(1))
    );
    let jobs = r["jobs"].as_array().unwrap();
    for (i, j) in jobs.iter().take(3).enumerate() {
        assert_eq!(j["index"], i);
        assert_eq!(j["status"], "created");
        assert_eq!(j["externalId"], format!("b:{i}"));
        assert_eq!(j["metadata"]["i"], i);
        assert!(j["upload"]["url"].is_string());
    }
    assert_eq!(jobs[3]["index"], 3);
    assert_eq!(jobs[3]["status"], "rejected");
    assert!(jobs[3]["jobId"].is_null());
    assert!(
        jobs[3]["error"].as_str().unwrap().contains("resolution"),
        "{}",
        jobs[3]
    );
    let first = jobs[0]["jobId"].as_str().unwrap().to_string();
    let s = app.status(&first).await;
    assert_eq!(
        s["outputFilename"], "clip-0-480p.mkv",
        "settings override the container; the name follows originalFilename"
    );

    // failFast: nothing is created and the response names the bad item.
    let before = app.balance().await;
    let (code, e) = app
        .post(
            "/jobs/bulk",
            json!({"jobs": [item(5), {"codec": "h264"}], "settings": {"failFast": true}}),
        )
        .await;
    assert_eq!(code, 400, "{e}");
    assert_eq!(e["code"], "invalid_body");
    assert_eq!(e["issues"][0]["path"], "jobs[1]");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("nothing was created"));

    // dryRun estimates URL sources and creates nothing.
    let url_item = |i: usize| {
        let mut j = item(i);
        j["sourceUrl"] = json!(src);
        j
    };
    let (code, dry) = app
        .post(
            "/jobs/bulk",
            json!({"jobs": [url_item(6), item(7)], "settings": {"dryRun": true}}),
        )
        .await;
    assert_eq!(code, 200, "{dry}");
    assert_eq!(dry["dryRun"], true);
    assert_eq!(dry["jobs"][0]["status"], "valid");
    assert!(dry["jobs"][0]["jobId"].is_null());
    let one = milli(&dry["jobs"][0]["estimate"]["neu"]);
    assert!(one > 0, "{dry}");
    assert!(
        dry["jobs"][1]["estimate"].is_null(),
        "an upload has nothing to estimate yet"
    );
    assert_eq!(milli(&dry["totalEstimatedNeu"]), one);
    assert_eq!(milli(&dry["reserved"]), 0);
    assert_eq!(app.app_state.repos.jobs.queue_depth().await.unwrap(), 0);

    // confirm: every URL job queued, the total reserved at once.
    let (code, q) = app
        .post("/jobs/bulk", json!({"jobs": [url_item(8), url_item(9), url_item(10)], "settings": {"confirm": true}}))
        .await;
    assert_eq!(code, 200, "{q}");
    assert_eq!(milli(&q["reserved"]), 3 * one);
    assert_eq!(milli(&q["totalEstimatedNeu"]), 3 * one);
    for j in q["jobs"].as_array().unwrap() {
        assert_eq!(j["status"], "queued");
    }
    let after = app.balance().await;
    assert_eq!(
        milli(&after["reserved"]) - milli(&before["reserved"]),
        3 * one
    );
    assert_eq!(app.app_state.repos.jobs.queue_depth().await.unwrap(), 3);

    // An account that can pay for two of three: 402 for the batch, nothing written.
    let repos = &app.app_state.repos;
    let poor = accounts::create_user(repos, "poor@example.com", "password123", false, None, None)
        .await
        .unwrap();
    repos
        .ledger
        .grant(poor.id, Neu::from_millis(2 * one + one / 2))
        .await
        .unwrap();
    let (_, key) =
        accounts::create_api_key(repos, "poor@example.com", "k", Scope::ALL.to_vec(), None)
            .await
            .unwrap();
    let r = app
        .client
        .post(app.url("/jobs/bulk"))
        .header("X-API-Key", &key)
        .json(&json!({"jobs": [url_item(11), url_item(12), url_item(13)], "settings": {"confirm": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 402);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["code"], "insufficient_tokens");
    assert_eq!(milli(&e["required"]), 3 * one);
    assert_eq!(milli(&e["available"]), 2 * one + one / 2);
    assert_eq!(
        app.app_state.repos.jobs.queue_depth().await.unwrap(),
        3,
        "nothing queued"
    );
    let b = repos
        .ledger
        .balance(poor.id, convertrilo_core::time::now_ms())
        .await
        .unwrap();
    assert_eq!(b.reserved, Neu::ZERO);

    // Bulk status: found jobs in order, the rest reported missing.
    let ids = [
        first.as_str(),
        "00000000-0000-7000-8000-000000000000",
        "not-an-id",
        q["jobs"][0]["jobId"].as_str().unwrap(),
    ];
    let (code, st) = app
        .get(&format!("/jobs/bulk/status?ids={}", ids.join(",")))
        .await;
    assert_eq!(code, 200, "{st}");
    let got: Vec<&str> = st["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[0], ids[3]]);
    assert_eq!(st["jobs"][1]["status"], "queued");
    assert_eq!(st["jobs"][0]["externalId"], "b:0");
    let missing: Vec<&str> = st["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert_eq!(missing, ["not-an-id", ids[1]]);
    // Another account sees none of them.
    let r: Value = app
        .client
        .get(app.url(&format!("/jobs/bulk/status?ids={}", ids.join(","))))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["jobs"].as_array().unwrap().len(), 0);
    let (code, _) = app.get("/jobs/bulk/status").await;
    assert_eq!(code, 400);

    // Bulk confirm: an upload that has arrived is queued, one that has not is named.
    let second = jobs[1]["jobId"].as_str().unwrap();
    let bytes = std::fs::read(&clip).unwrap();
    let put = app
        .client
        .put(jobs[0]["upload"]["url"].as_str().unwrap())
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 200);
    let (code, c) = app
        .post(
            "/jobs/bulk/confirm",
            json!({"jobIds": [first, second, ids[1]], "settings": {"quality": "best"}}),
        )
        .await;
    assert_eq!(code, 200, "{c}");
    assert_eq!(c["queued"], 1);
    assert_eq!(c["jobs"][0]["status"], "queued");
    assert!(c["jobs"][0]["estimate"]["neu"].as_f64().unwrap() > 0.0);
    assert_eq!(c["jobs"][1]["status"], "created");
    assert!(c["jobs"][1]["error"].as_str().unwrap().contains("uploaded"));
    assert_eq!(c["missing"][0], ids[1]);
    app.stop().await;
}

#[tokio::test]
async fn batches_of_500_pass_and_501_is_refused() {
    let app = spawn_app_with(|c| c.workers = 0).await;
    let items: Vec<Value> = (0..500)
        .map(|i| json!({"codec": "h264", "resolution": "720p", "fps": 30, "externalId": format!("n{i}")}))
        .collect();
    let (code, r) = app.post("/jobs/bulk", json!({"jobs": items})).await;
    assert_eq!(code, 200);
    assert_eq!(r["totalJobs"], 500);
    assert_eq!(r["jobs"][499]["externalId"], "n499");
    let (code, e) = app.post("/jobs/bulk", json!({"jobs": items_of(501)})).await;
    assert_eq!(code, 400);
    assert!(e["message"].as_str().unwrap().contains("500"), "{e}");
    let (code, e) = app.post("/jobs/bulk", json!({"jobs": []})).await;
    assert_eq!((code, e["issues"][0]["path"].as_str()), (400, Some("jobs")));
    app.stop().await;
}

fn items_of(n: usize) -> Vec<Value> {
    (0..n)
        .map(|_| json!({"codec": "h264", "resolution": "720p", "fps": 30}))
        .collect()
}
