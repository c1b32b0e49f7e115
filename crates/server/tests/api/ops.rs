//! Operations: a job no live worker can run fails fast with a message that says what to
//! change (and its tokens come back), `/healthz`, `/readyz`, `/metrics` and the worker
//! registry through `GET /admin/workers` (administrators only), draining at a stop, and a
//! worker that stops encoding when it can no longer renew its lease.

use crate::helpers::*;
use convertrilo_core::{Scope, WireEnum};
use convertrilo_server::accounts;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn get_text(app: &TestApp, path: &str) -> (u16, String) {
    let r = app.client.get(app.url(path)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The value of a Prometheus sample line `name` (labels included) in `text`.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

#[tokio::test]
async fn a_job_no_worker_can_run_fails_fast_and_keeps_its_tokens() {
    let app = spawn_app_with(|c| c.unrunnable_grace_secs = 0).await;
    let clip = small_clip(app.dir.path(), "gpu.mp4", 1);
    let before = app.balance().await;

    // This machine has no GPU: no live worker can take a gpu_only job.
    let mut spec = job_spec("h264", "480p", 30, "mp4");
    spec["policy"] = json!("gpu_only");
    spec["confirm"] = json!(true);
    let id = app.upload_job(&clip, spec).await;
    let start = Instant::now();
    let s = app.wait_terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(s["status"], "failed", "{s}");
    let message = s["failureMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("GPU encoder for h264") && message.contains("gpu_first"),
        "{message}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "took {:?}",
        start.elapsed()
    );
    let after = app.balance().await;
    assert_eq!(after["available"], before["available"], "{after}");
    assert_eq!(after["reserved"].as_f64(), Some(0.0), "{after}");

    // gpu_first falls back to the CPU worker.
    let mut spec = job_spec("h264", "480p", 30, "mp4");
    spec["policy"] = json!("gpu_first");
    spec["confirm"] = json!(true);
    let id = app.upload_job(&clip, spec).await;
    let s = app.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(s["status"], "success", "{s}");
    app.stop().await;
}

#[tokio::test]
async fn health_readiness_metrics_and_the_worker_registry() {
    let app = spawn_app().await;
    let (code, body) = app.get("/healthz").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = app.get("/readyz").await;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("ready")),
        "{body}"
    );

    // One job, watched from the registry while it runs.
    let clip = small_clip(app.dir.path(), "ops.mp4", 6);
    let mut spec = job_spec("h265", "720p", 30, "mp4");
    spec["confirm"] = json!(true);
    let id = app.upload_job(&clip, spec).await;
    app.wait_status(&id, "running", Duration::from_secs(30))
        .await;
    let (code, listed) = app.get("/admin/workers").await;
    assert_eq!(code, 200, "{listed}");
    let workers = listed["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{listed}");
    let w = &workers[0];
    assert_eq!(w["state"], "live", "{w}");
    assert_eq!(w["slots"], 1, "{w}");
    assert!(w["seconds_since_heartbeat"].is_null(), "camelCase: {w}");
    assert!(w["secondsSinceHeartbeat"].as_f64().unwrap() < 10.0, "{w}");
    let encoders: Vec<&str> = w["capabilities"]["encoders"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        encoders.contains(&"libx264") && encoders.contains(&"libx265"),
        "{w}"
    );
    assert_eq!(w["capabilities"]["libvmaf"], json!(true), "{w}");
    let s = app.status(&id).await;
    if s["status"] == "running" {
        assert_eq!(w["currentJobs"], json!([id]), "{w}");
    }
    let s = app.wait_terminal(&id, Duration::from_secs(120)).await;
    assert_eq!(s["status"], "success", "{s}");

    let (code, text) = get_text(&app, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        text.contains("# TYPE convertrilo_queue_depth gauge"),
        "{text}"
    );
    assert_eq!(sample(&text, "convertrilo_workers"), 1.0);
    assert_eq!(sample(&text, "convertrilo_worker_slots"), 1.0);
    assert_eq!(sample(&text, "convertrilo_queue_depth"), 0.0);
    assert_eq!(sample(&text, "convertrilo_jobs{state=\"success\"}"), 1.0);
    assert_eq!(sample(&text, "convertrilo_jobs{state=\"failed\"}"), 0.0);
    assert_eq!(sample(&text, "convertrilo_encodes_total"), 1.0);
    assert!(
        sample(&text, "convertrilo_encode_seconds_total") > 0.0,
        "{text}"
    );

    // Not for ordinary accounts, nor without a key.
    let repos = &app.app_state.repos;
    accounts::create_user(repos, "ops@example.com", "password123", false, None, None)
        .await
        .unwrap();
    let (_, key) =
        accounts::create_api_key(repos, "ops@example.com", "k", Scope::ALL.to_vec(), None)
            .await
            .unwrap();
    let r = app
        .client
        .get(app.url("/admin/workers"))
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (code, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("administrator"));
    let (code, _) = get_text(&app, "/admin/workers").await;
    assert_eq!(code, 401);
    app.stop().await;
}

/// Starts a job that encodes for a long while (20 s of 720p into slow h265) and returns its
/// id once it runs.
async fn start_long_encode(app: &TestApp, clip_dir: &std::path::Path) -> String {
    let long = clip_dir.join("long.mp4");
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
        ],
    );
    let mut spec = job_spec("h265", "720p", 30, "mp4");
    spec["preset"] = json!("slow");
    spec["confirm"] = json!(true);
    let id = app.upload_job(&long, spec).await;
    app.wait_status(&id, "running", Duration::from_secs(30))
        .await;
    id
}

#[tokio::test]
async fn a_stop_drains_running_jobs_or_hands_them_back_without_using_an_attempt() {
    let clip_dir = tempfile::tempdir().unwrap();

    // Time enough to drain: the job in flight finishes before the process ends.
    let mut app = spawn_app_with(|c| c.drain_timeout_secs = 120).await;
    let short = small_clip(clip_dir.path(), "short.mp4", 3);
    let mut spec = job_spec("h264", "480p", 30, "mp4");
    spec["confirm"] = json!(true);
    let id = app.upload_job(&short, spec).await;
    app.wait_status(&id, "running", Duration::from_secs(30))
        .await;
    let repos = app.app_state.repos.clone();
    app.shut_down().await;
    let job = repos
        .jobs
        .job(id.parse().unwrap(), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.status, convertrilo_core::JobStatus::Success, "{job:?}");
    assert!(
        repos.workers.workers().await.unwrap().is_empty(),
        "a drained worker leaves the registry"
    );

    // No time to drain: the job goes back to the queue, and its attempt is given back.
    let mut app = spawn_app_with(|c| c.drain_timeout_secs = 0).await;
    let id = start_long_encode(&app, clip_dir.path()).await;
    let repos = app.app_state.repos.clone();
    app.shut_down().await;
    let job_id = id.parse().unwrap();
    let job = repos.jobs.job(job_id, None).await.unwrap().unwrap();
    assert_eq!(job.status, convertrilo_core::JobStatus::Queued, "{job:?}");
    assert_eq!(repos.jobs.queue_depth().await.unwrap(), 1);
    let again = repos
        .jobs
        .claim(
            "check/0",
            Duration::from_secs(30),
            3,
            &convertrilo_db::ClaimFilter::any(),
        )
        .await
        .unwrap()
        .expect("the handed-back job is claimable");
    assert_eq!(
        (again.id, again.attempts),
        (job_id, 1),
        "the hand-back did not count"
    );
}

#[tokio::test]
async fn a_worker_on_another_local_object_directory_refuses_to_start() {
    let app = spawn_app().await;
    let other = tempfile::tempdir().unwrap();
    let mut config = test_config(other.path());
    // The API's database, but an object directory of its own: it would find no uploads and
    // write outputs nobody can download.
    config.database_url = Some(app.config.database_url());
    let err = match convertrilo_server::startup::WorkerProcess::start(config.clone()).await {
        Ok(_) => panic!("a worker on another object directory started"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("--data-dir") && err.contains("storage_url"),
        "{err}"
    );
    assert!(
        !config.objects_dir().join("store-id").exists(),
        "nothing claimed there"
    );

    // The same data directory is fine (what the README describes for one machine).
    let mut same = test_config(app.dir.path());
    same.database_url = Some(app.config.database_url());
    let worker = convertrilo_server::startup::WorkerProcess::start(same)
        .await
        .expect("a worker on the API's data directory starts");
    worker.run_until(async {}).await.unwrap();
    app.stop().await;
}

/// The ffmpeg processes working inside `dir` (their argv names files under it).
fn ffmpeg_processes_under(dir: &std::path::Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv = String::from_utf8_lossy(&argv);
            argv.split('\0')
                .next()
                .is_some_and(|p| p.ends_with("ffmpeg"))
                && argv.contains(&needle)
        })
        .collect()
}

/// A worker that cannot renew its lease (the database is out of its reach) stops encoding
/// when the lease runs out, since another worker may claim the job from then on; once the
/// database is back the job is claimed again and runs.
#[tokio::test]
async fn a_worker_that_cannot_renew_its_lease_stops_when_the_lease_runs_out() {
    use sqlx::{Connection, Executor};
    let clip_dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(|c| c.lease_secs = 3).await;
    let id = start_long_encode(&app, clip_dir.path()).await;
    let data = app.config.data_dir.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ffmpeg_processes_under(&data).is_empty() {
        assert!(std::time::Instant::now() < deadline, "ffmpeg never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Cut the worker off from the database: an exclusive transaction blocks every write,
    // so no renewal lands (and no other worker could claim the job meanwhile either).
    let mut db = sqlx::SqliteConnection::connect(&app.config.database_url())
        .await
        .unwrap();
    db.execute("BEGIN EXCLUSIVE").await.unwrap();
    let cut = std::time::Instant::now();
    // The lease (3 s) runs out; ffmpeg must be gone soon after, well before the 20 s encode
    // would end on its own.
    let mut stopped_after = None;
    while cut.elapsed() < Duration::from_secs(8) {
        if ffmpeg_processes_under(&data).is_empty() {
            stopped_after = Some(cut.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped_after = stopped_after.expect("the encode went on after its lease ran out");
    assert!(
        stopped_after >= Duration::from_secs(2),
        "stopped after {stopped_after:?}: before the lease could have run out"
    );
    db.execute("ROLLBACK").await.unwrap();
    drop(db);

    // The database is back: the job is claimed again (a second attempt) and encodes.
    app.wait_status(&id, "running", Duration::from_secs(30))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let job_id = id.parse().unwrap();
    loop {
        let job = app
            .app_state
            .repos
            .jobs
            .job(job_id, None)
            .await
            .unwrap()
            .unwrap();
        if job.attempts == 2 && !ffmpeg_processes_under(&data).is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not claimed again: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _) = app.post_empty(&format!("/jobs/{id}/cancel")).await;
    assert_eq!(code, 200);
    app.wait_status(&id, "canceled", Duration::from_secs(10))
        .await;
    app.stop().await;
}

/// A recorded upload missing from the store is our problem, not the customer's (a worker on a
/// stale copy of the object directory, say): the job goes back to the queue and runs once the
/// object is there, instead of failing at once.
#[tokio::test]
async fn a_job_whose_stored_source_is_missing_is_handed_back_and_runs_once_it_is_there() {
    let clip_dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(|c| c.workers = 0).await;
    let clip = small_clip(clip_dir.path(), "gone.mp4", 2);
    let mut spec = job_spec("h264", "480p", 30, "mp4");
    spec["confirm"] = json!(true);
    let id = app.upload_job(&clip, spec).await;
    let job_id: convertrilo_core::JobId = id.parse().unwrap();
    let repos = app.app_state.repos.clone();
    let job = repos.jobs.job(job_id, None).await.unwrap().unwrap();
    let stored = app.config.objects_dir().join(&job.input_key);
    let aside = clip_dir.path().join("aside");
    std::fs::rename(&stored, &aside).unwrap();

    let mut config = test_config(app.dir.path());
    config.database_url = Some(app.config.database_url());
    let worker = convertrilo_server::startup::WorkerProcess::start(config)
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async {
        let _ = stopped.await;
    }));
    // The first attempt finds nothing and hands the job back, to wait out its backoff.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let job = repos.jobs.job(job_id, None).await.unwrap().unwrap();
        if job.attempts == 1 && job.status == convertrilo_core::JobStatus::Queued {
            break;
        }
        assert!(
            job.status != convertrilo_core::JobStatus::Failed,
            "failed at once: {job:?}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "never handed back: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::rename(&aside, &stored).unwrap();
    let s = app.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(s["status"], "success", "{s}");
    let job = repos.jobs.job(job_id, None).await.unwrap().unwrap();
    assert_eq!(
        job.attempts, 1,
        "the passing error used no attempt: {job:?}"
    );
    let out = app.download(&s).await;
    // The 240-line source is not upscaled to 480p.
    assert_eq!(stream(&probe(&out), "video").unwrap()["height"], 240);
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    app.stop().await;
}
