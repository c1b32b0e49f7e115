//! Signed upload/download links: streaming, limits, Range, tampering.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn uploads_are_limited_and_links_are_signed() {
    let app = spawn_app_with(|c| c.max_upload_bytes = 100_000).await;
    let (_, created) = app.post("/jobs", job_spec("h264", "480p", 30, "mp4")).await;
    let upload = created["upload"]["url"].as_str().unwrap().to_string();
    let id = created["jobId"].as_str().unwrap().to_string();

    // Declared too large: refused before reading.
    let r = app
        .client
        .put(&upload)
        .body(vec![0u8; 100_001])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "file_too_large");
    // Streamed without a length and too large: cut off, nothing kept.
    let chunks = futures::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![1u8; 10_000])));
    let r = app
        .client
        .put(&upload)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert!(!app
        .config
        .objects_dir()
        .join(format!("inputs/{id}/source"))
        .exists());
    let staging = std::fs::read_dir(app.config.objects_dir().join(".staging"))
        .unwrap()
        .count();
    assert_eq!(staging, 0, "partial uploads are removed");

    // Tampered and unsigned links.
    let tampered = upload.replace("sig=", "sig=00");
    let r = app.client.put(&tampered).body("x").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "signed_url_required"
    );
    let unsigned = upload.split('?').next().unwrap().to_string();
    let r = app.client.put(&unsigned).body("x").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(app.status(&id).await["status"], "created");
    app.stop().await;
}

#[tokio::test]
async fn downloads_support_range_and_name_the_file() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("My Holiday.mp4");
    make_clip(
        &clip,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=320x240:r=25:d=1",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );
    let mut spec = job_spec("h264", "480p", 30, "mp4");
    spec["originalFilename"] = json!("My Holiday.mp4");
    spec["confirm"] = json!(true);
    let id = app.upload_job(&clip, spec).await;
    let done = app.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "success", "{done}");
    let url = done["downloadUrl"].as_str().unwrap();

    let full = app.client.get(url).send().await.unwrap();
    assert_eq!(full.headers()["content-type"], "video/mp4");
    assert_eq!(
        full.headers()["content-disposition"],
        "attachment; filename=\"My Holiday-480p.mp4\"; filename*=UTF-8''My%20Holiday-480p.mp4"
    );
    let len: usize = full.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = full.bytes().await.unwrap();
    assert_eq!(
        (bytes.len(), Some(len as i64)),
        (len, done["outputSizeBytes"].as_i64())
    );

    let part = app
        .client
        .get(url)
        .header("Range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status().as_u16(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 10-19/{len}").as_str()
    );
    assert_eq!(&part.bytes().await.unwrap()[..], &bytes[10..20]);

    // Ranges that cannot be served as one part are ignored; a start past the end is a 416.
    for ignored in ["bytes=-99999999", "bytes=abc", "items=0-1", "bytes=0-1,5-6"] {
        let r = app
            .client
            .get(url)
            .header("Range", ignored)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{ignored}");
        assert_eq!(r.bytes().await.unwrap().len(), len, "{ignored}");
    }
    let r = app
        .client
        .get(url)
        .header("Range", format!("bytes={len}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 416);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes */{len}").as_str()
    );
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_request");

    let head = app.client.head(url).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 200);

    // Changing the offered file name breaks the signature.
    let renamed = url.replace("name=My%20Holiday-480p.mp4", "name=evil.exe");
    assert_eq!(
        app.client
            .get(&renamed)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    app.stop().await;
}
