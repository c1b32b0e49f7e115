//! Media correctness end to end: what goes in, what comes out.

use crate::helpers::*;
use serde_json::{json, Value};
use std::{path::Path, time::Duration};

const LIMIT: Duration = Duration::from_secs(180);

/// Checks an output against the source: codec, box, even sides, fps, duration, audio.
fn check_output(
    out: &Path,
    source: &Value,
    codec: &str,
    max_box: (i64, i64),
    audio_codec: Option<&str>,
) -> Value {
    let info = probe(out);
    let v = stream(&info, "video").expect("video stream");
    assert_eq!(v["codec_name"], codec, "{}", out.display());
    let (w, h) = (v["width"].as_i64().unwrap(), v["height"].as_i64().unwrap());
    let (bw, bh) = if w >= h {
        max_box
    } else {
        (max_box.1, max_box.0)
    };
    assert!(w <= bw && h <= bh, "{w}x{h} outside {bw}x{bh}");
    assert!(w % 2 == 0 && h % 2 == 0, "odd size {w}x{h}");
    let src_fps = fps(stream(source, "video").unwrap());
    assert!(
        (fps(v) - src_fps).abs() < 0.05,
        "fps {} vs source {src_fps}",
        fps(v)
    );
    let (d_out, d_src) = (duration(&info), duration(source));
    assert!(
        (d_out - d_src).abs() <= 0.1,
        "duration {d_out} vs source {d_src}"
    );
    match audio_codec {
        Some(a) => assert_eq!(
            stream(&info, "audio").expect("audio stream")["codec_name"],
            a
        ),
        None => assert!(stream(&info, "audio").is_none()),
    }
    info
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn real_clip_through_upload_and_url_ingest() {
    let app = spawn_app_with(|c| c.workers = 2).await;
    let clip = real_clip("bigbuckbunny.mp4");
    let source = probe(&clip);
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::copy(&clip, host_dir.path().join("bigbuckbunny.mp4")).unwrap();
    let host = FileHost::serve(host_dir.path()).await;

    // Upload → h264/mp4 720p, confirmed through the explicit flow.
    let mut spec = job_spec("h264", "720p", 30, "mp4");
    spec["originalFilename"] = json!("bigbuckbunny.mp4");
    let up = app.upload_job(&clip, spec).await;
    let (code, probed) = app.get(&format!("/jobs/{up}/probe-duration")).await;
    assert_eq!(code, 200, "{probed}");
    assert!((probed["durationSec"].as_f64().unwrap() - duration(&source)).abs() < 0.01);
    let (code, approved) = app.post_empty(&format!("/jobs/{up}/approve-unified")).await;
    assert_eq!(code, 200, "{approved}");
    assert!(approved["estimate"]["totalNeu"].as_f64().unwrap() > 0.0);
    let (code, confirmed) = app.post_empty(&format!("/jobs/{up}/confirm")).await;
    assert_eq!((code, confirmed["status"].as_str()), (200, Some("queued")));

    // URL ingest, auto-confirmed → h265/mkv 480p and av1/webm 480p.
    let mut by_url = Vec::new();
    for (codec, container) in [("h265", "mkv"), ("av1", "webm")] {
        let mut spec = job_spec(codec, "480p", 30, container);
        spec["sourceUrl"] = json!(host.url("bigbuckbunny.mp4"));
        spec["confirm"] = json!(true);
        let (code, created) = app.post("/jobs", spec).await;
        assert_eq!(code, 200, "{created}");
        assert_eq!(created["status"], "queued");
        assert!(created["upload"].is_null(), "URL jobs get no upload URL");
        assert!(created["estimate"]["totalNeu"].as_f64().unwrap() > 0.0);
        by_url.push(created["jobId"].as_str().unwrap().to_string());
    }

    // Progress is visible while running.
    let running = app.wait_status(&up, "running", LIMIT).await;
    assert!(running["startedAt"].is_string());

    let done = app.wait_terminal(&up, LIMIT).await;
    let out = app.download(&done).await;
    assert_eq!(done["encoder"], "libx264");
    assert_eq!(done["pct"], 100.0);
    assert_eq!(done["outputFilename"], "bigbuckbunny-720p.mp4");
    let info = check_output(&out, &source, "h264", (1280, 720), Some("aac"));
    let v = stream(&info, "video").unwrap();
    assert_eq!(
        (v["width"].as_i64(), v["height"].as_i64()),
        (Some(1280), Some(720)),
        "720p source stays 1280x720"
    );
    assert_faststart(&out);

    for (id, (codec, audio, ext)) in by_url
        .iter()
        .zip([("hevc", "aac", "mkv"), ("av1", "opus", "webm")])
    {
        let done = app.wait_terminal(id, LIMIT).await;
        assert_eq!(done["ingest"], "url");
        assert_eq!(done["sourceFilename"], "bigbuckbunny.mp4");
        assert_eq!(done["outputFilename"], format!("bigbuckbunny-480p.{ext}"));
        let out = app.download(&done).await;
        let info = check_output(&out, &source, codec, (854, 480), Some(audio));
        let v = stream(&info, "video").unwrap();
        assert_eq!(
            (v["width"].as_i64(), v["height"].as_i64()),
            (Some(852), Some(480))
        );
    }
    app.stop().await;
}

/// `moov` must come before `mdat` so players can start before the download ends.
fn assert_faststart(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let find = |tag: &[u8]| bytes.windows(4).position(|w| w == tag).unwrap();
    assert!(
        find(b"moov") < find(b"mdat"),
        "{} is not faststart",
        path.display()
    );
}

struct Case {
    name: &'static str,
    make: Vec<&'static str>,
    spec: Value,
    want_size: (i64, i64),
    want_fps: Option<f64>,
    want_pix_fmt: Option<&'static str>,
    want_audio: Option<&'static str>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_inputs_encode_correctly() {
    let app = spawn_app_with(|c| c.workers = 2).await;
    let dir = tempfile::tempdir().unwrap();
    let av = |size: &str, rate: u32, extra: &'static str| -> Vec<String> {
        let mut v = vec![
            "-f".into(),
            "lavfi".into(),
            "-i".into(),
            format!("testsrc2=s={size}:r={rate}:d=1"),
        ];
        v.extend(["-f", "lavfi", "-i", "sine=frequency=440:duration=1"].map(String::from));
        v.extend(extra.split_whitespace().map(String::from));
        v
    };
    let leak = |v: Vec<String>| -> Vec<&'static str> {
        v.into_iter()
            .map(|s| &*Box::leak(s.into_boxed_str()))
            .collect()
    };
    let cases = vec![
        Case { name: "odd.mp4", make: leak(av("641x361", 25, "-c:v libx264 -preset ultrafast -pix_fmt yuv444p -shortest")), spec: job_spec("h264", "720p", 30, "mp4"), want_size: (640, 360), want_fps: Some(25.0), want_pix_fmt: Some("yuv420p"), want_audio: Some("aac") },
        Case { name: "portrait.mp4", make: leak(av("1080x1920", 25, "-c:v libx264 -preset ultrafast -shortest")), spec: job_spec("h264", "720p", 30, "mp4"), want_size: (720, 1280), want_fps: Some(25.0), want_pix_fmt: Some("yuv420p"), want_audio: Some("aac") },
        Case { name: "fps60.mp4", make: leak(av("320x240", 60, "-c:v libx264 -preset ultrafast -shortest")), spec: job_spec("h264", "480p", 30, "mp4"), want_size: (320, 240), want_fps: Some(30.0), want_pix_fmt: None, want_audio: Some("aac") },
        Case { name: "fps24.mp4", make: leak(av("320x240", 24, "-c:v libx264 -preset ultrafast -shortest")), spec: job_spec("h264", "480p", 30, "mp4"), want_size: (320, 240), want_fps: Some(24.0), want_pix_fmt: None, want_audio: Some("aac") },
        Case { name: "silent.mp4", make: vec!["-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=1", "-c:v", "libx264", "-preset", "ultrafast"], spec: job_spec("av1", "480p", 30, "webm"), want_size: (320, 240), want_fps: Some(25.0), want_pix_fmt: None, want_audio: None },
        Case { name: "tenbit.mkv", make: leak(av("320x240", 25, "-c:v libx265 -preset ultrafast -pix_fmt yuv420p10le -x265-params log-level=error -shortest")), spec: job_spec("h264", "480p", 30, "mp4"), want_size: (320, 240), want_fps: Some(25.0), want_pix_fmt: Some("yuv420p"), want_audio: Some("aac") },
        Case { name: "anamorphic.mp4", make: leak(av("720x480", 25, "-c:v libx264 -preset ultrafast -vf setsar=32/27 -shortest")), spec: job_spec("h265", "480p", 30, "mp4"), want_size: (852, 480), want_fps: Some(25.0), want_pix_fmt: None, want_audio: Some("aac") },
    ];
    for c in &cases {
        make_clip(&dir.path().join(c.name), &c.make);
    }
    // 1280x720 tagged "rotate 90": remux with a display matrix.
    make_clip(
        &dir.path().join("flat.mp4"),
        &leak(av(
            "1280x720",
            25,
            "-c:v libx264 -preset ultrafast -shortest",
        )),
    );
    let flat = dir.path().join("flat.mp4");
    make_clip(
        &dir.path().join("rotated.mp4"),
        &[
            "-display_rotation",
            "90",
            "-i",
            flat.to_str().unwrap(),
            "-c",
            "copy",
        ],
    );
    let rotated = Case {
        name: "rotated.mp4",
        make: vec![],
        spec: job_spec("h264", "720p", 30, "mov"),
        want_size: (720, 1280),
        want_fps: Some(25.0),
        want_pix_fmt: Some("yuv420p"),
        want_audio: Some("aac"),
    };

    let all: Vec<&Case> = cases.iter().chain(std::iter::once(&rotated)).collect();
    let mut ids = Vec::new();
    for c in &all {
        let mut spec = c.spec.clone();
        spec["confirm"] = json!(true);
        ids.push(app.upload_job(&dir.path().join(c.name), spec).await);
    }
    for (c, id) in all.iter().zip(&ids) {
        let done = app.wait_terminal(id, LIMIT).await;
        assert_eq!(done["status"], "success", "{}: {done}", c.name);
        let out = app.download(&done).await;
        let source = probe(&dir.path().join(c.name));
        let info = probe(&out);
        let v = stream(&info, "video").unwrap();
        assert_eq!(
            (v["width"].as_i64().unwrap(), v["height"].as_i64().unwrap()),
            c.want_size,
            "{}",
            c.name
        );
        if let Some(f) = c.want_fps {
            assert!((fps(v) - f).abs() < 0.05, "{}: fps {}", c.name, fps(v));
        }
        if let Some(p) = c.want_pix_fmt {
            assert_eq!(v["pix_fmt"], p, "{}", c.name);
        }
        let sar = v["sample_aspect_ratio"].as_str().unwrap_or("1:1");
        assert!(sar == "1:1" || sar == "0:1", "{}: SAR {sar}", c.name);
        let rotation = v["side_data_list"]
            .as_array()
            .and_then(|l| l.iter().find_map(|s| s["rotation"].as_i64()))
            .unwrap_or(0);
        assert_eq!(
            rotation, 0,
            "{}: rotation must be applied, not tagged",
            c.name
        );
        match c.want_audio {
            Some(a) => assert_eq!(
                stream(&info, "audio").expect("audio")["codec_name"],
                a,
                "{}",
                c.name
            ),
            None => assert!(stream(&info, "audio").is_none(), "{}", c.name),
        }
        if c.spec["codec"] == "h265" {
            assert_eq!(
                v["codec_tag_string"], "hvc1",
                "{}: h265 in mp4 is tagged hvc1",
                c.name
            );
        }
        assert!(
            (duration(&info) - duration(&source)).abs() <= 0.1,
            "{}: duration {} vs {}",
            c.name,
            duration(&info),
            duration(&source)
        );
    }
    app.stop().await;
}
