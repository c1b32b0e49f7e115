//! `/ondemand…`: one call from URL to download link at the on-demand premium, priorities,
//! cancel with release, the one-off webhook, and bad input.

use crate::helpers::*;
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
        assert!(start.elapsed() < Duration::from_secs(120), "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[tokio::test]
async fn real_clip_from_url_to_download_link_with_premium_and_callback() {
    let app = spawn_app_with(|c| c.callback_retry_secs = 1).await;
    let media = real_clip("bigbuckbunny.mp4");
    let host = FileHost::serve(media.parent().unwrap()).await;
    let hook = Receiver::start(1).await; // the first delivery fails and is retried
    let (code, r) = app
        .post(
            "/ondemand/encode",
            json!({
                "sourceUrl": host.url("bigbuckbunny.mp4"),
                "resolution": "480p",
                "externalId": "video-42",
                "metadata": {"customerId": "cus_1", "n": 3},
                "outputExpiry": 3600,
                "webhook": hook.url(),
            }),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    let id = r["jobId"].as_str().unwrap().to_string();
    assert_eq!(r["status"], "queued");
    assert_eq!(r["externalId"], "video-42");
    assert_eq!(r["metadata"]["customerId"], "cus_1");
    assert_eq!(r["estimatedDuration"], 6, "5.3 s rounded up");
    assert_eq!(r["sourceFilename"], "bigbuckbunny.mp4");
    assert_eq!(r["webhook"], hook.url());
    assert!(r["statusUrl"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/ondemand/status/{id}")));
    // 480p h264 30 fps fast is 1 NEU/min; the normal premium is 1.5×.
    let p = &r["pricing"];
    assert!(close(p["basePerMinute"].as_f64().unwrap(), 1.0), "{p}");
    assert!(close(p["onDemandPerMinute"].as_f64().unwrap(), 1.5), "{p}");
    assert!(close(p["multiplier"].as_f64().unwrap(), 1.5), "{p}");
    let total = p["totalNeu"].as_f64().unwrap();
    // 1.5 NEU/min × the probed duration (5.3 s), rounded up to the thousandth.
    assert!((0.13..0.14).contains(&total), "{p}");
    assert!(close(p["reserved"].as_f64().unwrap(), total));

    let s = wait_ondemand(&app, &id).await;
    assert_eq!(s["status"], "success", "{s}");
    assert_eq!(s["progress"], 100.0);
    assert_eq!(s["encoder"], "libx264");
    assert_eq!(s["destination"]["type"], "cdn");
    assert_eq!(s["externalId"], "video-42");
    assert_eq!(s["metadata"]["n"], 3);
    let expires_in = s["expiresIn"].as_i64().unwrap();
    assert!((3500..=3600).contains(&expires_in), "{expires_in}");
    assert!(
        s["createdAt"].is_string() && s["startedAt"].is_string() && s["finishedAt"].is_string()
    );
    assert!(s["failureMessage"].is_null());
    // The link carries the output expiry, and the file is what was asked for.
    let url = s["downloadUrl"].as_str().unwrap();
    let expires: i64 = url
        .split("expires=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let now = convertrilo_core::time::now_ms() / 1000;
    assert!((expires - now - expires_in).abs() <= 2);
    let bytes = app
        .client
        .get(url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let out = app.dir.path().join("ondemand.mp4");
    std::fs::write(&out, &bytes).unwrap();
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

    // The charge is the premium price of the encoded duration.
    let st = app.status(&id).await;
    let charged = st["chargedNeu"].as_f64().unwrap();
    assert!(charged > 0.0 && charged <= total + 0.002, "{st}");

    // One terminal callback, delivered after one retry, in the managed-webhook shape.
    let got = hook.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 1);
    let cb = &got[0];
    assert_eq!(cb["event"], "job.completed");
    assert!(cb["timestamp"].is_string());
    let d = &cb["data"];
    assert_eq!(d["jobId"], id.as_str());
    assert_eq!(d["status"], "success");
    assert_eq!(d["externalId"], "video-42");
    assert_eq!(d["metadata"]["customerId"], "cus_1");
    assert_eq!(d["encoder"], "libx264");
    assert!(close(d["finalNeu"].as_f64().unwrap(), charged), "{cb}");
    assert!(d["error"].is_null() && d["failureCode"].is_null());
    assert!(d["userId"].is_string() && d["durationSec"].as_f64().unwrap() > 5.0);

    // Housekeeping keeps the output until its expiry, then deletes it.
    let now = convertrilo_core::time::now_ms();
    convertrilo_server::housekeeping::run_once(&app.app_state, now).await;
    let (_, kept) = app.get(&format!("/ondemand/status/{id}")).await;
    assert!(kept["downloadUrl"].is_string(), "{kept}");
    convertrilo_server::housekeeping::run_once(&app.app_state, now + 3_601_000).await;
    let (_, gone) = app.get(&format!("/ondemand/status/{id}")).await;
    assert!(gone["downloadUrl"].is_null(), "{gone}");
    assert_eq!(gone["expiresIn"], 0);
    assert!(gone["failureMessage"].as_str().unwrap().contains("expired"));
    let r = app.client.get(url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404, "the file itself is gone");
    app.stop().await;
}

#[tokio::test]
async fn priorities_cancel_and_bad_requests() {
    let app = spawn_app_with(|c| {
        c.workers = 0;
        c.callback_retry_secs = 1;
    })
    .await;
    let clip = small_clip(app.dir.path(), "p.mp4", 2);
    let host = FileHost::serve(app.dir.path()).await;
    let src = host.url(clip.file_name().unwrap().to_str().unwrap());
    let hook = Receiver::start(0).await;

    // A standard job, a normal on-demand job, then a high one: high is claimed first.
    let (code, standard) = app
        .post("/jobs", json!({"codec": "h264", "resolution": "480p", "fps": 30, "sourceUrl": src, "confirm": true}))
        .await;
    assert_eq!(code, 200, "{standard}");
    let (_, normal) = app
        .post(
            "/ondemand/encode",
            json!({"sourceUrl": src, "resolution": "480p"}),
        )
        .await;
    let (code, high) = app
        .post("/ondemand/encode", json!({"sourceUrl": src, "resolution": "480p", "priority": "high", "webhook": hook.url()}))
        .await;
    assert_eq!(code, 200, "{high}");
    assert!(close(high["pricing"]["multiplier"].as_f64().unwrap(), 2.0));
    assert!(close(
        high["pricing"]["onDemandPerMinute"].as_f64().unwrap(),
        2.0
    ));

    // Cancel the high one: everything it held comes back, and its webhook hears of it.
    let before = app.balance().await;
    let high_id = high["jobId"].as_str().unwrap();
    let r = app
        .client
        .delete(app.url(&format!("/ondemand/{high_id}")))
        .header("X-API-Key", &app.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["ok"], true);
    assert!(
        close(
            c["released"].as_f64().unwrap(),
            high["pricing"]["reserved"].as_f64().unwrap()
        ),
        "{c}"
    );
    let after = app.balance().await;
    assert!(close(
        after["available"].as_f64().unwrap() - before["available"].as_f64().unwrap(),
        c["released"].as_f64().unwrap()
    ));
    let got = hook.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0]["event"], "job.canceled");
    assert_eq!(got[0]["data"]["failureCode"], "job_canceled");
    // A second cancel releases nothing.
    let again: Value = app
        .client
        .delete(app.url(&format!("/ondemand/{high_id}")))
        .header("X-API-Key", &app.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["released"], 0.0);

    let (_, high2) = app
        .post(
            "/ondemand/encode",
            json!({"sourceUrl": src, "resolution": "480p", "priority": "high"}),
        )
        .await;
    let repos = &app.app_state.repos;
    let lease = Duration::from_secs(30);
    let mut claimed = Vec::new();
    for _ in 0..3 {
        claimed.push(
            repos
                .jobs
                .claim("t", lease, 3, &convertrilo_db::ClaimFilter::any())
                .await
                .unwrap()
                .unwrap()
                .id
                .to_string(),
        );
    }
    assert_eq!(
        claimed,
        [
            high2["jobId"].as_str().unwrap(),
            standard["jobId"].as_str().unwrap(),
            normal["jobId"].as_str().unwrap()
        ],
        "high first, then first come first served"
    );

    // Bad input: each a 4xx that says what to change, and no job.
    let depth = repos.jobs.queue_depth().await.unwrap();
    let cases = [
        (
            json!({"sourceUrl": src, "outputDropbox": {"path": "/x"}}),
            410,
            "deprecated_dropbox",
        ),
        (json!({"resolution": "720p"}), 400, "invalid_body"),
        (
            json!({"sourceUrl": src, "resolution": "4320p"}),
            400,
            "invalid_body",
        ),
        (
            json!({"sourceUrl": src, "outputExpiry": 10}),
            400,
            "invalid_body",
        ),
        (
            json!({"sourceUrl": src, "webhook": "mailto:a@b.c"}),
            400,
            "invalid_url",
        ),
        (
            json!({"sourceUrl": src, "codec": "h264", "container": "webm"}),
            400,
            "invalid_request",
        ),
        (
            json!({"sourceUrl": host.url("nope.mp4")}),
            422,
            "probe_failed",
        ),
        (
            json!({"sourceUrl": src, "metadata": {"big": "x".repeat(17 * 1024)}}),
            400,
            "invalid_body",
        ),
    ];
    for (body, want, code) in cases {
        let (status, e) = app.post("/ondemand/encode", body.clone()).await;
        assert_eq!(
            (status, e["code"].as_str().unwrap()),
            (want, code),
            "{body} → {e}"
        );
        assert!(e["message"].as_str().unwrap().len() > 10);
    }
    assert_eq!(repos.jobs.queue_depth().await.unwrap(), depth);
    let (code, _) = app
        .get("/ondemand/status/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(code, 404);
    app.stop().await;
}
