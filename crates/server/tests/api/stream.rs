//! `/jobs/{id}/stream/…`: parts in any order with retries, joined in part order with their
//! ETags checked; the joined source encodes like an upload; abort and bad parts.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::Duration;

async fn put_part(
    app: &TestApp,
    id: &str,
    index: &str,
    bytes: Vec<u8>,
) -> (u16, Value, Option<String>) {
    let r = app
        .client
        .put(app.url(&format!("/jobs/{id}/stream/chunk/{index}")))
        .header("X-API-Key", &app.api_key)
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let etag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string());
    (status, r.json().await.unwrap_or(Value::Null), etag)
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(bytes))
}

#[tokio::test]
async fn a_streamed_source_is_joined_in_part_order_and_encodes() {
    let app = spawn_app().await;
    let media = real_clip("bigbuckbunny.mp4");
    let bytes = std::fs::read(&media).unwrap();
    let (code, created) = app
        .post("/jobs", json!({"codec": "h264", "resolution": "480p", "fps": 30, "originalFilename": "bbb.mp4", "confirm": true}))
        .await;
    assert_eq!(code, 200, "{created}");
    let id = created["jobId"].as_str().unwrap().to_string();

    // Parts before init are refused.
    let (code, e, _) = put_part(&app, &id, "1", b"x".to_vec()).await;
    assert_eq!(code, 400);
    assert!(
        e["message"].as_str().unwrap().contains("stream/init"),
        "{e}"
    );

    let (code, init) = app.post_empty(&format!("/jobs/{id}/stream/init")).await;
    assert_eq!(code, 200, "{init}");
    let upload_id = init["uploadId"].as_str().unwrap().to_string();
    assert_eq!(init["inputKey"], format!("inputs/{id}/{upload_id}"));

    // Three parts, sent out of order; part 2 is first sent wrong and then retried.
    let third = bytes.len() / 3;
    let parts = [
        &bytes[..third],
        &bytes[third..2 * third],
        &bytes[2 * third..],
    ];
    let mut etags = vec![String::new(); 3];
    for (n, body) in [
        (3, parts[2].to_vec()),
        (2, b"garbage".to_vec()),
        (1, parts[0].to_vec()),
        (2, parts[1].to_vec()),
    ] {
        let (code, r, header) = put_part(&app, &id, &n.to_string(), body.clone()).await;
        assert_eq!(code, 200, "{r}");
        assert_eq!(r["partNumber"], n);
        assert_eq!(r["size"], body.len());
        let etag = r["etag"].as_str().unwrap().to_string();
        assert_eq!(etag, format!("\"{}\"", md5_hex(&body)));
        assert_eq!(header.as_deref(), Some(etag.as_str()));
        etags[n - 1] = etag;
    }
    // A stale ETag (of the part's first version) is refused; nothing is joined.
    let stale = format!("\"{}\"", md5_hex(b"garbage"));
    let (code, e) = app
        .post(
            &format!("/jobs/{id}/stream/finalize"),
            json!({"parts": [{"PartNumber": 1, "ETag": etags[0]}, {"PartNumber": 2, "ETag": stale}, {"PartNumber": 3, "ETag": etags[2]}]}),
        )
        .await;
    assert_eq!(code, 400, "{e}");
    assert!(e["message"].as_str().unwrap().contains("part 2"), "{e}");
    let (code, e) = app
        .post(
            &format!("/jobs/{id}/stream/finalize"),
            json!({"parts": [{"PartNumber": 1, "ETag": etags[0]}, {"PartNumber": 4, "ETag": "x"}]}),
        )
        .await;
    assert_eq!(code, 400);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("part 4 was not uploaded"),
        "{e}"
    );

    let body = json!({"parts": (1..=3).map(|n| json!({"PartNumber": n, "ETag": etags[n - 1]})).collect::<Vec<_>>()});
    let (code, done) = app.post(&format!("/jobs/{id}/stream/finalize"), body).await;
    assert_eq!(code, 200, "{done}");
    assert_eq!(done["size"], bytes.len());
    assert_eq!(done["parts"], 3);
    assert_eq!(
        done["status"], "queued",
        "created with confirm: queued once the source is whole"
    );
    // The joined object is byte for byte the file, and the parts are gone.
    let store = &app.app_state.store;
    let joined = std::fs::read(
        store
            .local_path(done["inputKey"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(joined == bytes, "joined source differs from the file");
    assert!(store
        .list(&format!("inputs/{id}/stream"))
        .await
        .unwrap()
        .is_empty());

    let s = app.wait_terminal(&id, Duration::from_secs(120)).await;
    assert_eq!(s["status"], "success", "{s}");
    let out = app.download(&s).await;
    let info = probe(&out);
    let v = stream(&info, "video").unwrap();
    assert_eq!(
        (v["width"].as_i64(), v["height"].as_i64()),
        (Some(852), Some(480))
    );
    assert!((duration(&info) - 5.31).abs() < 0.15);
    // A queued job takes no more parts.
    let (code, _) = app.post_empty(&format!("/jobs/{id}/stream/init")).await;
    assert_eq!(code, 400);
    app.stop().await;
}

#[tokio::test]
async fn bad_parts_abort_and_limits() {
    let app = spawn_app_with(|c| {
        c.max_upload_bytes = 64 * 1024;
        c.workers = 0;
    })
    .await;
    let (_, created) = app.post("/jobs", job_spec("h264", "480p", 30, "mp4")).await;
    let id = created["jobId"].as_str().unwrap().to_string();
    app.post_empty(&format!("/jobs/{id}/stream/init")).await;
    for bad in ["0", "10001", "-1", "one"] {
        let (code, e, _) = put_part(&app, &id, bad, b"x".to_vec()).await;
        assert_eq!(code, 400, "part {bad}: {e}");
        assert!(e["message"].as_str().unwrap().contains("1 to 10000"));
    }
    let (code, _, _) = put_part(&app, &id, "1", Vec::new()).await;
    assert_eq!(code, 400, "an empty part");
    let (code, e, _) = put_part(&app, &id, "1", vec![7u8; 65 * 1024]).await;
    assert_eq!((code, e["code"].as_str()), (413, Some("file_too_large")));
    // The stream as a whole keeps the limit: a part that would take it over is refused
    // when it arrives (a retry of a stored part may replace it).
    let (code, _, _) = put_part(&app, &id, "1", vec![7u8; 40 * 1024]).await;
    assert_eq!(code, 200);
    let (code, e, _) = put_part(&app, &id, "2", vec![7u8; 40 * 1024]).await;
    assert_eq!(
        (code, e["code"].as_str()),
        (413, Some("file_too_large")),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("65536"), "{e}");
    let (code, _, _) = put_part(&app, &id, "1", vec![7u8; 50 * 1024]).await;
    assert_eq!(code, 200, "replacing part 1 counts only the new bytes");
    // A body that is not a parts list is refused, not read as "join everything".
    for bad in [
        json!([1]),
        json!("parts"),
        json!({"Parts": [{"PartNumber": 1, "ETag": "x"}]}),
    ] {
        let (code, e) = app
            .post(&format!("/jobs/{id}/stream/finalize"), bad.clone())
            .await;
        assert_eq!(code, 400, "{bad}: {e}");
    }
    // A stale uploadId is refused after a restart; abort deletes the parts.
    let (_, first) = app.post_empty(&format!("/jobs/{id}/stream/init")).await;
    let (_, second) = app.post_empty(&format!("/jobs/{id}/stream/init")).await;
    assert_ne!(first["uploadId"], second["uploadId"]);
    let r = app
        .client
        .put(app.url(&format!(
            "/jobs/{id}/stream/chunk/1?uploadId={}",
            first["uploadId"].as_str().unwrap()
        )))
        .header("X-API-Key", &app.api_key)
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let (code, _, _) = put_part(&app, &id, "1", vec![1u8; 10]).await;
    assert_eq!(code, 200);
    let (code, a) = app.post_empty(&format!("/jobs/{id}/stream/abort")).await;
    assert_eq!((code, a["deleted"].as_i64()), (200, Some(1)), "{a}");
    assert!(app
        .app_state
        .store
        .list(&format!("inputs/{id}/stream"))
        .await
        .unwrap()
        .is_empty());
    let (code, _) = app.post_empty(&format!("/jobs/{id}/stream/finalize")).await;
    assert_eq!(code, 400, "nothing to finalize after abort");
    // URL jobs and other accounts' jobs cannot stream.
    let (_, url_job) = app
        .post("/jobs", json!({"codec": "h264", "resolution": "480p", "fps": 30, "sourceUrl": "http://127.0.0.1:9/a.mp4"}))
        .await;
    let (code, _) = app
        .post_empty(&format!(
            "/jobs/{}/stream/init",
            url_job["jobId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(code, 400);
    let (code, _) = app
        .post_empty("/jobs/01900000-0000-7000-8000-000000000000/stream/init")
        .await;
    assert_eq!(code, 404);

    // Left-over parts of a job that ended are removed by housekeeping.
    app.post_empty(&format!("/jobs/{id}/stream/init")).await;
    put_part(&app, &id, "5", vec![1u8; 10]).await;
    app.post_empty(&format!("/jobs/{id}/cancel")).await;
    convertrilo_server::housekeeping::run_once(&app.app_state, convertrilo_core::time::now_ms())
        .await;
    assert!(app
        .app_state
        .store
        .list(&format!("inputs/{id}/stream"))
        .await
        .unwrap()
        .is_empty());
    app.stop().await;
}
