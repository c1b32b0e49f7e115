//! `optimize: "vmaf"` end to end through the API: every surface that takes it, targets 90 and
//! 95 on the real clip and on generated content (a still slide, high motion, noise), h264
//! plus an AV1 case, the default target, a target out of reach, the price factor in
//! estimates, progress during the search, the status and webhook fields, and a fleet
//! without libvmaf.

use crate::helpers::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(240);

fn milli(v: &Value) -> i64 {
    (v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")) * 1000.0).round() as i64
}

/// Generated sources, lossless so their own coding never limits the score.
fn generated(dir: &Path) {
    let lossless = ["-c:v", "libx264", "-qp", "0", "-preset", "ultrafast"];
    let make = |name: &str, input: &str, filter: Option<&str>| {
        let mut args = vec!["-f", "lavfi", "-i", input];
        if let Some(f) = filter {
            args.extend(["-vf", f]);
        }
        args.extend(lossless);
        make_clip(&dir.join(name), &args);
    };
    // A still slide: one frame of testsrc2 held for 3 s.
    make(
        "static.mkv",
        "testsrc2=size=854x480:rate=25:duration=0.04",
        Some("tpad=stop_mode=clone:stop_duration=3"),
    );
    // High motion: the whole picture pans ~11 px right and ~3 px down every frame.
    make(
        "motion.mkv",
        "testsrc2=size=854x480:rate=30:duration=3",
        Some("scroll=horizontal=0.013:vertical=0.007"),
    );
    // Noise: every pixel random in every frame, the hardest content there is.
    make(
        "noise.mkv",
        "nullsrc=size=640x360:rate=25:duration=2",
        Some("geq=lum='random(1)*255':cb=128:cr=128,format=yuv420p"),
    );
}

struct Case {
    name: &'static str,
    id: String,
    target: f64,
    codec: &'static str,
    source: std::path::PathBuf,
}

/// Polls a job to its end, keeping every `pct` seen on the way.
async fn follow(app: &TestApp, id: &str) -> (Value, Vec<f64>) {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let s = app.status(id).await;
        if let Some(p) = s["pct"].as_f64() {
            if seen.last() != Some(&p) {
                seen.push(p);
            }
        }
        if matches!(
            s["status"].as_str(),
            Some("success" | "failed" | "canceled")
        ) {
            return (s, seen);
        }
        assert!(start.elapsed() < LIMIT, "{id} not done: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The VMAF fields of a finished job: present, consistent, and on target unless the miss
/// is reported.
fn check_vmaf(case: &Case, s: &Value) -> Value {
    assert_eq!(s["status"], "success", "{}: {s}", case.name);
    let v = &s["vmaf"];
    assert!(v.is_object(), "{}: {s}", case.name);
    let (mean, p5) = (v["mean"].as_f64().unwrap(), v["p5"].as_f64().unwrap());
    assert_eq!(v["target"].as_f64(), Some(case.target), "{v}");
    assert!(p5 <= mean, "{v}");
    assert!(
        v["crf"].as_f64().is_some() && v["defaultCrf"].as_f64().is_some(),
        "{v}"
    );
    let encodes = v["sampleEncodes"].as_u64().unwrap();
    assert!((1..=6).contains(&encodes), "{v}");
    assert!(matches!(v["fullEncodes"].as_u64(), Some(1 | 2)), "{v}");
    assert!(v["bytesSavedVsDefault"].is_i64(), "{v}");
    assert_eq!(v["model"], "vmaf_v0.6.1");
    let met = v["targetMet"].as_bool().unwrap();
    assert_eq!(met, mean >= case.target - 0.5, "{v}");
    let on_target = (mean - case.target).abs() <= 1.0;
    assert!(
        on_target || (!met && v["message"].is_string()),
        "{}: VMAF {mean} for target {} and no miss reported: {v}",
        case.name,
        case.target
    );
    if met {
        assert!(v.get("message").is_none(), "{v}");
    }
    eprintln!(
        "vmaf case {:<14} {:<5} target {:>5.1}: mean {mean:>6.2} p5 {p5:>6.2} crf {:>5} (default {}) sample encodes {} full encodes {} saved {} B{}",
        case.name,
        case.codec,
        case.target,
        v["crf"],
        v["defaultCrf"],
        encodes,
        v["fullEncodes"],
        v["bytesSavedVsDefault"],
        v["message"].as_str().map(|m| format!(" — {m}")).unwrap_or_default()
    );
    v.clone()
}

async fn check_output(app: &TestApp, case: &Case, s: &Value, codec_name: &str, max: (i64, i64)) {
    let out = app.download(s).await;
    let info = probe(&out);
    let v = stream(&info, "video").expect("video");
    assert_eq!(v["codec_name"], codec_name, "{}", case.name);
    let (w, h) = (v["width"].as_i64().unwrap(), v["height"].as_i64().unwrap());
    assert!(
        w <= max.0 && h <= max.1 && w % 2 == 0 && h % 2 == 0,
        "{w}x{h}"
    );
    let src = probe(&case.source);
    assert!(
        (duration(&info) - duration(&src)).abs() <= 0.15,
        "{}: {} vs {}",
        case.name,
        duration(&info),
        duration(&src)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vmaf_targets_land_on_real_and_generated_content_through_every_surface() {
    let app = spawn_app_with(|c| c.workers = 2).await;
    let media = tempfile::tempdir().unwrap();
    generated(media.path());
    let bbb = real_clip("bigbuckbunny.mp4");
    std::fs::copy(&bbb, media.path().join("bbb.mp4")).unwrap();
    let host = FileHost::serve(media.path()).await;
    let hooks = Receiver::start(0).await;
    let (code, hook) = app
        .post(
            "/webhooks",
            json!({"url": hooks.url(), "events": ["job.completed"]}),
        )
        .await;
    assert_eq!(code, 200, "{hook}");
    let src = |name: &str| media.path().join(name);
    let mut cases = Vec::new();

    // 1. POST /jobs, upload, confirm at creation.
    let mut spec = job_spec("h264", "480p", 30, "mp4");
    spec["optimize"] = json!("vmaf");
    spec["vmafTarget"] = json!(90);
    spec["confirm"] = json!(true);
    let id = app.upload_job(&bbb, spec).await;
    cases.push(Case {
        name: "bigbuckbunny",
        id,
        target: 90.0,
        codec: "h264",
        source: bbb.clone(),
    });

    // 2. approve-unified: the optimize factor doubles the estimate; then confirm.
    let id = app
        .upload_job(&bbb, job_spec("h264", "480p", 30, "mp4"))
        .await;
    let (code, plain) = app.post_empty(&format!("/jobs/{id}/approve-unified")).await;
    assert_eq!(code, 200, "{plain}");
    let (code, tuned) = app
        .post(
            &format!("/jobs/{id}/approve-unified"),
            json!({"optimize": "vmaf", "vmafTarget": 95}),
        )
        .await;
    assert_eq!(code, 200, "{tuned}");
    assert_eq!(
        milli(&tuned["estimate"]["perMinuteNeu"]),
        2 * milli(&plain["estimate"]["perMinuteNeu"]),
        "vmaf costs the optimize factor (2.0): {plain} {tuned}"
    );
    let (code, c) = app.post_empty(&format!("/jobs/{id}/confirm")).await;
    assert_eq!((code, c["status"].as_str()), (200, Some("queued")), "{c}");
    assert_eq!(
        app.status(&id).await["estimatedNeu"],
        tuned["estimate"]["totalNeu"]
    );
    cases.push(Case {
        name: "bigbuckbunny",
        id,
        target: 95.0,
        codec: "h264",
        source: bbb.clone(),
    });

    // 3. Bulk: settings turn optimize on for every item; each item keeps its own target.
    let item = |target: u32| json!({"codec": "h264", "resolution": "480p", "fps": 30, "sourceUrl": host.url("static.mkv"), "vmafTarget": target});
    let (code, b) = app
        .post(
            "/jobs/bulk",
            json!({"jobs": [item(90), item(95)], "settings": {"optimize": "vmaf", "confirm": true}}),
        )
        .await;
    assert_eq!(code, 200, "{b}");
    let plain_one = {
        // The same item without the search (and so without a target, which needs one).
        let mut plain = item(90);
        plain.as_object_mut().unwrap().remove("vmafTarget");
        let (_, dry) = app
            .post(
                "/jobs/bulk",
                json!({"jobs": [plain], "settings": {"dryRun": true}}),
            )
            .await;
        milli(&dry["jobs"][0]["estimate"]["neu"])
    };
    for (j, target) in b["jobs"].as_array().unwrap().iter().zip([90.0, 95.0]) {
        assert_eq!(j["status"], "queued", "{j}");
        assert_eq!(milli(&j["estimate"]["neu"]), 2 * plain_one, "{j}");
        cases.push(Case {
            name: "static slide",
            id: j["jobId"].as_str().unwrap().to_string(),
            target,
            codec: "h264",
            source: src("static.mkv"),
        });
    }

    // 4. confirm with optimize and vmafTarget in its body.
    let mut spec = job_spec("h264", "480p", 30, "mp4");
    spec["sourceUrl"] = json!(host.url("motion.mkv"));
    let (code, created) = app.post("/jobs", spec).await;
    assert_eq!(code, 200, "{created}");
    let id = created["jobId"].as_str().unwrap().to_string();
    let (code, c) = app
        .post(
            &format!("/jobs/{id}/confirm"),
            json!({"optimize": "vmaf", "vmafTarget": 90}),
        )
        .await;
    assert_eq!((code, c["status"].as_str()), (200, Some("queued")), "{c}");
    cases.push(Case {
        name: "high motion",
        id,
        target: 90.0,
        codec: "h264",
        source: src("motion.mkv"),
    });

    // 5. URL ingest confirmed at creation: motion 95, noise 90 and 95.
    for (name, file, target) in [
        ("high motion", "motion.mkv", 95.0),
        ("noise", "noise.mkv", 90.0),
        ("noise", "noise.mkv", 95.0),
    ] {
        let mut spec = job_spec("h264", "480p", 30, "mp4");
        spec["sourceUrl"] = json!(host.url(file));
        spec["optimize"] = json!("vmaf");
        spec["vmafTarget"] = json!(target);
        spec["confirm"] = json!(true);
        let (code, created) = app.post("/jobs", spec).await;
        assert_eq!(code, 200, "{created}");
        cases.push(Case {
            name,
            id: created["jobId"].as_str().unwrap().to_string(),
            target,
            codec: "h264",
            source: src(file),
        });
    }

    // 6. On demand, AV1, no vmafTarget: the documented default (93) applies; the one-off
    //    callback carries the report too.
    let callback = Receiver::start(0).await;
    let (code, od) = app
        .post(
            "/ondemand/encode",
            json!({"sourceUrl": host.url("bbb.mp4"), "codec": "av1", "resolution": "480p",
                   "container": "webm", "optimize": "vmaf", "webhook": callback.url()}),
        )
        .await;
    assert_eq!(code, 200, "{od}");
    let od_id = od["jobId"].as_str().unwrap().to_string();
    cases.push(Case {
        name: "bigbuckbunny",
        id: od_id.clone(),
        target: 93.0,
        codec: "av1",
        source: bbb.clone(),
    });

    // Follow the first job closely: progress moves during the search, not only later.
    let (first, seen) = follow(&app, &cases[0].id).await;
    assert!(
        seen.iter().any(|&p| p > 0.0 && p < 30.0),
        "pct during the search: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(first["pct"], 100.0);

    let mut reports = Vec::new();
    for case in &cases {
        let s = app.wait_terminal(&case.id, LIMIT).await;
        let v = check_vmaf(case, &s);
        if case.codec == "av1" {
            check_output(&app, case, &s, "av1", (854, 480)).await;
        } else {
            check_output(&app, case, &s, "h264", (854, 480)).await;
        }
        reports.push((case.id.clone(), v));
    }

    // On-demand status and its callback carry the same report.
    let (code, ods) = app.get(&format!("/ondemand/status/{od_id}")).await;
    assert_eq!(code, 200, "{ods}");
    let od_report = &reports.last().unwrap().1;
    assert_eq!(&ods["vmaf"], od_report, "{ods}");
    let got = callback.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(&got[0]["data"]["vmaf"], od_report, "{}", got[0]);

    // Managed webhooks: every job.completed event carries the job's report.
    let events = hooks.wait_for(cases.len(), Duration::from_secs(30)).await;
    for (id, report) in &reports {
        let event = events
            .iter()
            .find(|e| e["data"]["jobId"] == id.as_str())
            .unwrap_or_else(|| panic!("no event for {id}: {events:?}"));
        assert_eq!(&event["data"]["vmaf"], report, "{event}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_target_out_of_reach_completes_at_the_best_setting_and_says_so() {
    let app = spawn_app().await;
    let media = tempfile::tempdir().unwrap();
    let still = media.path().join("still.mkv");
    make_clip(
        &still,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=25:duration=0.04",
            "-vf",
            "tpad=stop_mode=clone:stop_duration=2",
            "-c:v",
            "libx264",
            "-qp",
            "0",
            "-preset",
            "ultrafast",
        ],
    );
    // A still testsrc2 frame never scores above ~97 (VMAF's motion term is zero), so 99 is
    // out of reach even at the encoder's best setting. The confirm body may ask for up to 100 (the contract).
    let id = app
        .upload_job(&still, job_spec("h264", "480p", 30, "mp4"))
        .await;
    let (code, c) = app
        .post(
            &format!("/jobs/{id}/confirm"),
            json!({"optimize": "vmaf", "vmafTarget": 99}),
        )
        .await;
    assert_eq!(code, 200, "{c}");
    let s = app.wait_terminal(&id, LIMIT).await;
    assert_eq!(s["status"], "success", "the job still completes: {s}");
    let v = &s["vmaf"];
    assert_eq!(v["targetMet"], false, "{v}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("VMAF target 99 was not reached"),
        "{message}"
    );
    assert!(v["mean"].as_f64().unwrap() < 98.5, "{v}");
    assert!(
        v["sampleEncodes"].as_u64().unwrap() <= 6,
        "no endless search: {v}"
    );
    assert!(s["failureMessage"].is_null(), "{s}");
    eprintln!(
        "vmaf case {:<14} h264  target  99.0: mean {:>6.2} p5 {:>6.2} crf {:>5} sample encodes {} — {message}",
        "still (miss)", v["mean"], v["p5"], v["crf"], v["sampleEncodes"]
    );
    let out = app.download(&s).await;
    let info = probe(&out);
    let video = stream(&info, "video").unwrap();
    assert_eq!(video["codec_name"], "h264");
    // The best setting stops short of x264's lossless mode, whose High 4:4:4 Predictive
    // profile most players cannot decode.
    assert_eq!(video["profile"], "High", "{video}");
    assert!(v["crf"].as_f64().unwrap() >= 1.0, "{v}");
    app.stop().await;
}

#[tokio::test]
async fn vmaf_requests_are_validated_and_non_vmaf_jobs_show_no_report() {
    let app = spawn_app_with(|c| c.workers = 0).await;
    let base = || {
        let mut s = job_spec("h264", "480p", 30, "mp4");
        s["optimize"] = json!("vmaf");
        s
    };
    for bad in [json!(49), json!(99.5), json!("95")] {
        let mut s = base();
        s["vmafTarget"] = bad.clone();
        let (code, e) = app.post("/jobs", s).await;
        assert_eq!(
            (code, e["code"].as_str()),
            (400, Some("invalid_body")),
            "{bad}: {e}"
        );
        assert_eq!(e["issues"][0]["path"], "vmafTarget", "{e}");
    }
    let mut s = base();
    s["passes"] = json!(2);
    let (code, e) = app.post("/jobs", s).await;
    assert_eq!(
        (code, e["code"].as_str()),
        (400, Some("invalid_request")),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("passes 1"), "{e}");
    let (code, e) = app
        .post(
            "/jobs/bulk",
            json!({"jobs": [job_spec("h264", "480p", 30, "mp4")], "settings": {"optimize": "vmaf", "vmafTarget": 20}}),
        )
        .await;
    assert_eq!(code, 400, "{e}");
    assert_eq!(e["issues"][0]["path"], "settings.vmafTarget", "{e}");
    let (code, e) = app
        .post(
            "/ondemand/ingest/folder",
            json!({"optimize": "vmaf", "vmafTarget": 120,
                   "sourceS3": {"bucket": "b", "prefix": "p/", "region": "us-east-1"}}),
        )
        .await;
    assert_eq!(code, 400, "{e}");
    assert!(
        e["issues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["path"] == "vmafTarget"),
        "{e}"
    );
    // A target without the search is refused, not ignored: on creation, with optimize
    // left out or none, and on a confirm of a job created without the search.
    let target_only = |optimize: Option<&str>| {
        let mut s = job_spec("h264", "480p", 30, "mp4");
        s["vmafTarget"] = json!(95);
        if let Some(o) = optimize {
            s["optimize"] = json!(o);
        }
        s
    };
    for s in [target_only(None), target_only(Some("none"))] {
        let (code, e) = app.post("/jobs", s.clone()).await;
        assert_eq!(
            (code, e["code"].as_str()),
            (400, Some("invalid_request")),
            "{s}: {e}"
        );
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("add \"optimize\": \"vmaf\""),
            "{e}"
        );
    }
    let clip = small_clip(app.dir.path(), "tiny.mp4", 1);
    let plain_id = app
        .upload_job(&clip, job_spec("h264", "480p", 30, "mp4"))
        .await;
    let plain_id = plain_id.as_str();
    let (code, e) = app
        .post(
            &format!("/jobs/{plain_id}/confirm"),
            json!({"vmafTarget": 90}),
        )
        .await;
    assert_eq!(code, 400, "{e}");
    assert!(e["message"].as_str().unwrap().contains("vmafTarget"), "{e}");
    // Switching the search off drops its target: a vmaf job approved with optimize none is an
    // ordinary job again, priced as one.
    let (code, created) = app.post("/jobs", base()).await;
    assert_eq!(code, 200, "{created}");
    let mut with_target = base();
    with_target["vmafTarget"] = json!(92);
    let targeted = app.upload_job(&clip, with_target).await;
    let (code, tuned) = app
        .post_empty(&format!("/jobs/{targeted}/approve-unified"))
        .await;
    assert_eq!(code, 200, "{tuned}");
    let (code, plain) = app
        .post(
            &format!("/jobs/{targeted}/approve-unified"),
            json!({"optimize": "none"}),
        )
        .await;
    assert_eq!(code, 200, "{plain}");
    assert_eq!(
        milli(&tuned["estimate"]["perMinuteNeu"]),
        2 * milli(&plain["estimate"]["perMinuteNeu"]),
        "{tuned} {plain}"
    );
    // Bulk confirm takes optimize and vmafTarget as a single confirm does.
    let (code, b) = app
        .post(
            "/jobs/bulk/confirm",
            json!({"jobIds": [plain_id], "settings": {"optimize": "vmaf", "vmafTarget": 150}}),
        )
        .await;
    assert_eq!(code, 400, "{b}");
    assert_eq!(b["issues"][0]["path"], "settings.vmafTarget", "{b}");

    // Accepted: a job without optimize has no report.
    let s = app.status(plain_id).await;
    assert!(s["vmaf"].is_null(), "{s}");
    app.stop().await;
}

/// A fleet whose ffmpeg has no libvmaf (Debian's) cannot run a VMAF job: it fails fast with
/// a message that says what to change, and an ordinary job still runs.
#[tokio::test]
async fn without_a_libvmaf_worker_the_job_fails_with_a_clear_message() {
    let debian = Path::new("/usr/bin/ffmpeg");
    let has_vmaf = std::process::Command::new(debian)
        .args(["-hide_banner", "-filters"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(" libvmaf "));
    match has_vmaf {
        Ok(false) => {}
        other => {
            eprintln!("skipped: /usr/bin/ffmpeg is missing or has libvmaf ({other:?})");
            return;
        }
    }
    let app = spawn_app_with(|c| {
        c.ffmpeg = Some(debian.to_path_buf());
        c.unrunnable_grace_secs = 0;
    })
    .await;
    let clip = small_clip(app.dir.path(), "novmaf.mp4", 1);
    let mut spec = job_spec("h264", "480p", 30, "mp4");
    spec["optimize"] = json!("vmaf");
    spec["confirm"] = json!(true);
    let id = app.upload_job(&clip, spec).await;
    let s = app.wait_terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(s["status"], "failed", "{s}");
    let message = s["failureMessage"].as_str().unwrap_or_default();
    // The worker has libx264: only libvmaf is missing, and only that is named.
    assert!(
        message.contains("libvmaf")
            && message.contains("optimize: none")
            && !message.contains("an encoder for"),
        "{message}"
    );
    assert_eq!(app.balance().await["reserved"].as_f64(), Some(0.0));
    app.stop().await;
}
