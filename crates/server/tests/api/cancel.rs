//! Cancel in every non-final state; a running ffmpeg is killed and its files removed.

use crate::helpers::*;
use serde_json::json;
use std::{
    path::Path,
    time::{Duration, Instant},
};

/// Processes whose command line mentions `needle` (ffmpeg runs with the job's scratch paths).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) && !cmd.contains("cargo") {
                found.push(cmd);
            }
        }
    }
    found
}

fn job_scratch_dirs(scratch: &Path, id: &str) -> usize {
    std::fs::read_dir(scratch)
        .map(|d| {
            d.flatten()
                .filter(|owner| owner.path().join(id).exists())
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_created_queued_and_running_jobs() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join("long.mp4");
    make_clip(
        &long,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=1280x720:r=30:d=20",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "35",
        ],
    );

    // Created: never queued.
    let (_, created) = app.post("/jobs", job_spec("h264", "480p", 30, "mp4")).await;
    let created_id = created["jobId"].as_str().unwrap();
    let (code, body) = app.post_empty(&format!("/jobs/{created_id}/cancel")).await;
    assert_eq!(
        (
            code,
            body["status"].as_str(),
            body["previousStatus"].as_str()
        ),
        (200, Some("canceled"), Some("created"))
    );

    // Running: a slow encode on the only worker.
    let mut slow = job_spec("h265", "720p", 30, "mp4");
    slow["preset"] = json!("slow");
    slow["confirm"] = json!(true);
    let running = app.upload_job(&long, slow).await;
    // Queued behind it.
    let mut next = job_spec("h264", "480p", 30, "mp4");
    next["confirm"] = json!(true);
    let queued = app.upload_job(&long, next).await;

    app.wait_status(&running, "running", Duration::from_secs(60))
        .await;
    let start = Instant::now();
    let s = loop {
        let s = app.status(&running).await;
        if s["pct"].as_f64().unwrap_or(0.0) > 0.0 {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no progress reported: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s["encoder"], "libx265");
    assert_eq!(app.status(&queued).await["status"], "queued");
    assert!(
        !processes_mentioning(&running).is_empty(),
        "ffmpeg is working on the job"
    );

    let (code, body) = app.post_empty(&format!("/jobs/{queued}/cancel")).await;
    assert_eq!(
        (code, body["previousStatus"].as_str()),
        (200, Some("queued"))
    );

    let (code, body) = app.post_empty(&format!("/jobs/{running}/cancel")).await;
    assert_eq!(
        (
            code,
            body["status"].as_str(),
            body["previousStatus"].as_str()
        ),
        (200, Some("canceled"), Some("running"))
    );
    let canceled_at = Instant::now();
    loop {
        let gone = processes_mentioning(&running).is_empty()
            && job_scratch_dirs(&app.config.scratch_dir(), &running) == 0;
        if gone {
            break;
        }
        assert!(
            canceled_at.elapsed() < Duration::from_secs(3),
            "ffmpeg or scratch files survived the cancel"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = app.status(&running).await;
    assert_eq!(s["status"], "canceled");
    assert!(s["downloadUrl"].is_null() && s["finishedAt"].is_string());
    assert!(s["failureMessage"].as_str().unwrap().contains("canceled"));
    // The canceled queued job is never started, and the worker is free again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(app.status(&queued).await["status"], "canceled");
    assert!(app.status(&queued).await["startedAt"].is_null());

    // Cancel after the fact is a harmless no-op.
    let (code, body) = app.post_empty(&format!("/jobs/{running}/cancel")).await;
    assert_eq!((code, body["status"].as_str()), (200, Some("canceled")));
    app.stop().await;
}
