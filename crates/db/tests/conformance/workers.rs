//! The worker registry: capability-matched claims, the unrunnable sweep and failing a job that
//! waits for a worker nobody runs, attempts refunded at a graceful hand-back, the backoff and
//! give-up message after passing errors, queue events, and the counts behind `/metrics`.

use super::{
    backends, job,
    ledger::{account, check, whole},
    LEASE,
};
use convertrilo_core::{
    capability::WorkerCaps,
    spec::{Optimize, Policy},
    time::now_ms,
    JobStatus,
};
use convertrilo_db::*;
use std::time::Duration;

/// The job `worker` claims, which the test expects there to be.
async fn claim_one(
    repos: &Repos,
    worker: &str,
    lease: Duration,
    max_attempts: i32,
    can: &ClaimFilter,
) -> Job {
    let claimed = repos.jobs.claim(worker, lease, max_attempts, can).await;
    claimed.unwrap().expect("a job to claim")
}

fn caps(tokens: &[&str], libvmaf: bool) -> WorkerCaps {
    WorkerCaps {
        encoders: vec!["libx264".into()],
        tokens: tokens.iter().map(|t| t.to_string()).collect(),
        libvmaf,
        slots: 2,
        ..Default::default()
    }
}

fn record(id: &str, caps: WorkerCaps, last_seen: i64) -> WorkerRecord {
    WorkerRecord {
        id: id.into(),
        host: "host-a".into(),
        version: "0.1.0".into(),
        caps,
        started_at: last_seen,
        last_seen,
        stopping: false,
    }
}

/// Queues a job of `owner` with `policy`/`optimize`, reserving 1 NEU.
async fn queued(
    repos: &Repos,
    owner: convertrilo_core::UserId,
    policy: Policy,
    optimize: Optimize,
) -> Job {
    let mut j = job(owner);
    j.spec.policy = policy;
    j.spec.optimize = optimize;
    repos.jobs.insert_job(&j).await.unwrap();
    match repos
        .jobs
        .enqueue(j.id, None, 0, Some(whole(1)))
        .await
        .unwrap()
    {
        Enqueued::Queued(j) => j,
        other => panic!("not queued: {other:?}"),
    }
}

pub(crate) async fn check_claims_match_capabilities(repos: &Repos) {
    let owner = account(repos, "caps@x.io", 10, None).await;
    let gpu_job = queued(repos, owner, Policy::GpuOnly, Optimize::None).await;
    let vmaf_job = queued(repos, owner, Policy::GpuFirst, Optimize::Vmaf).await;
    let plain = queued(repos, owner, Policy::GpuFirst, Optimize::None).await;

    let cpu = ClaimFilter::of(&caps(&["h264", "h265", "av1"], false));
    let got = claim_one(repos, "cpu/0", LEASE, 3, &cpu).await;
    assert_eq!(
        got.id, plain.id,
        "a CPU worker skips GPU-only and VMAF jobs"
    );
    assert!(repos
        .jobs
        .claim("cpu/1", LEASE, 3, &cpu)
        .await
        .unwrap()
        .is_none());

    let vmaf = ClaimFilter::of(&caps(&["h264"], true));
    let got = claim_one(repos, "vmaf/0", LEASE, 3, &vmaf).await;
    assert_eq!(got.id, vmaf_job.id);

    let gpu = ClaimFilter::of(&caps(&["h264", "gpu:h264"], false));
    let got = claim_one(repos, "gpu/0", LEASE, 3, &gpu).await;
    assert_eq!(
        got.id, gpu_job.id,
        "gpu_only goes to a worker with a GPU encoder"
    );
    check(repos, owner).await;
}

pub(crate) async fn check_registry_and_unrunnable_sweep(repos: &Repos) {
    let owner = account(repos, "sweep@x.io", 10, None).await;
    let now = now_ms();
    let gpu_job = queued(repos, owner, Policy::GpuOnly, Optimize::None).await;
    let plain = queued(repos, owner, Policy::Fastest, Optimize::None).await;
    let later = now_ms() + 1;

    // No worker at all: the GPU job is unrunnable, the plain one waits for a worker to start.
    let found = repos
        .workers
        .unrunnable(now - 10_000, later, 10)
        .await
        .unwrap();
    assert_eq!(
        found.iter().map(|u| u.job).collect::<Vec<_>>(),
        vec![gpu_job.id]
    );
    assert_eq!(found[0].needs.encoder, "gpu:h264");
    // Jobs queued after `queued_before` get their grace period.
    assert!(repos
        .workers
        .unrunnable(now - 10_000, now - 60_000, 10)
        .await
        .unwrap()
        .is_empty());

    // A live CPU worker that lacks h264 makes the plain job unrunnable too.
    repos
        .workers
        .register_worker(&record("w-av1", caps(&["av1"], false), now))
        .await
        .unwrap();
    let found = repos
        .workers
        .unrunnable(now - 10_000, later, 10)
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    // A stale worker does not count; a live capable one does.
    repos
        .workers
        .register_worker(&record(
            "w-old",
            caps(&["h264", "gpu:h264"], false),
            now - 60_000,
        ))
        .await
        .unwrap();
    assert_eq!(
        repos
            .workers
            .unrunnable(now - 10_000, later, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    repos
        .workers
        .register_worker(&record("w-gpu", caps(&["h264", "gpu:h264"], false), now))
        .await
        .unwrap();
    assert!(repos
        .workers
        .unrunnable(now - 10_000, later, 10)
        .await
        .unwrap()
        .is_empty());
    // Draining workers take no new jobs, so they do not count either.
    assert!(repos
        .workers
        .touch_worker("w-gpu", now, true)
        .await
        .unwrap());
    assert_eq!(
        repos
            .workers
            .unrunnable(now - 10_000, later, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(repos
        .workers
        .touch_worker("w-gpu", now, false)
        .await
        .unwrap());

    // The registry lists workers with the jobs they hold.
    let gpu = ClaimFilter::of(&caps(&["h264", "gpu:h264"], false));
    let held = claim_one(repos, &slot_owner("w-gpu", 1), LEASE, 3, &gpu).await;
    let listed = repos.workers.workers().await.unwrap();
    assert_eq!(listed.len(), 3);
    let w = listed.iter().find(|w| w.worker.id == "w-gpu").unwrap();
    assert_eq!(w.jobs, vec![held.id]);
    assert_eq!(w.worker.caps.slots, 2);
    assert!(listed
        .iter()
        .filter(|w| w.worker.id != "w-gpu")
        .all(|w| w.jobs.is_empty()));

    // Failing a waiting job releases its reservation once; a held job is not failed.
    assert!(
        !repos.jobs.fail_queued(held.id, "x").await.unwrap(),
        "held jobs are not failed"
    );
    let other = if held.id == gpu_job.id {
        plain.id
    } else {
        gpu_job.id
    };
    assert!(repos
        .jobs
        .fail_queued(other, "no running worker can take this job")
        .await
        .unwrap());
    assert!(!repos.jobs.fail_queued(other, "again").await.unwrap());
    let failed = repos.jobs.job(other, None).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(
        failed.failure_message.as_deref(),
        Some("no running worker can take this job")
    );
    assert_eq!(
        repos.ledger.job_reserved(other).await.unwrap(),
        convertrilo_core::Neu::ZERO
    );
    check(repos, owner).await;

    // Pruning and removal.
    assert_eq!(repos.workers.prune_workers(now - 30_000).await.unwrap(), 1);
    repos.workers.remove_worker("w-av1").await.unwrap();
    assert!(!repos
        .workers
        .touch_worker("w-av1", now, false)
        .await
        .unwrap());
    assert_eq!(repos.workers.workers().await.unwrap().len(), 1);
}

pub(crate) async fn check_refund_events_and_stats(repos: &Repos) {
    let owner = account(repos, "events@x.io", 10, None).await;
    let mut events = repos.events.subscribe();
    let a = queued(repos, owner, Policy::Fastest, Optimize::None).await;
    assert_eq!(events.recv().await.unwrap(), QueueEvent::Queued);

    // Neither a graceful hand-back nor a passing failure uses up an attempt: attempts count
    // the runs a worker did not survive.
    let any = ClaimFilter::any();
    for _ in 0..5 {
        let got = claim_one(repos, "w/0", LEASE, 2, &any).await;
        assert_eq!((got.id, got.attempts), (a.id, 1));
        repos
            .jobs
            .release(a.id, "w/0", HandBack::Shutdown)
            .await
            .unwrap();
    }
    claim_one(repos, "w/0", LEASE, 2, &any).await;
    // A passing error: the job waits out its backoff before anyone can claim it again.
    let wait = Duration::from_millis(400);
    let hiccup = HandBack::PassingError {
        reason: "object store: connection refused",
        backoff: Backoff {
            first: wait,
            most: wait,
            retries: 3,
        },
    };
    assert_eq!(
        repos.jobs.release(a.id, "w/0", hiccup).await.unwrap(),
        HandedBack::Queued { after: wait }
    );
    assert_eq!(
        repos.jobs.release(a.id, "w/0", hiccup).await.unwrap(),
        HandedBack::NotHeld,
        "handed back once"
    );
    assert_eq!(
        repos.jobs.job(a.id, None).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    assert!(
        repos
            .jobs
            .claim("w/1", LEASE, 2, &any)
            .await
            .unwrap()
            .is_none(),
        "claimed during its backoff"
    );
    let stats = repos.stats.stats(now_ms()).await.unwrap();
    assert_eq!(
        (stats.queue_depth, stats.running),
        (1, 0),
        "waiting, not running"
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    let got = claim_one(repos, "w/1", LEASE, 2, &any).await;
    assert_eq!(got.attempts, 1, "the passing error did not count");

    let stats = repos.stats.stats(now_ms()).await.unwrap();
    assert_eq!((stats.queue_depth, stats.running), (0, 1));
    assert!(stats.jobs_by_status.contains(&(JobStatus::Running, 1)));
    repos.stats.ping().await.unwrap();

    // Canceling announces the job, so the worker holding it can stop at once.
    while events.try_recv().is_ok() {}
    repos.jobs.cancel(a.id, owner).await.unwrap().unwrap();
    assert_eq!(events.recv().await.unwrap(), QueueEvent::Canceled(a.id));
    let stats = repos.stats.stats(now_ms()).await.unwrap();
    assert_eq!((stats.queue_depth, stats.running), (0, 0));
    assert!(stats.jobs_by_status.contains(&(JobStatus::Canceled, 1)));
    check(repos, owner).await;

    // A job that keeps meeting passing errors is given up once its backoff runs out, with
    // the last error named, not as if its workers had died.
    let b = queued(repos, owner, Policy::Fastest, Optimize::None).await;
    let back = HandBack::PassingError {
        reason: "object store: connection refused",
        backoff: Backoff {
            first: Duration::ZERO,
            most: Duration::ZERO,
            retries: 2,
        },
    };
    for retry in 1..=3 {
        let got = claim_one(repos, "w/0", LEASE, 2, &any).await;
        assert_eq!((got.id, got.attempts), (b.id, 1));
        let handed = repos.jobs.release(b.id, "w/0", back).await.unwrap();
        let want = if retry <= 2 {
            HandedBack::Queued {
                after: Duration::ZERO,
            }
        } else {
            HandedBack::GivenUp
        };
        assert_eq!(handed, want, "retry {retry}");
    }
    assert!(repos
        .jobs
        .claim("w/0", LEASE, 2, &any)
        .await
        .unwrap()
        .is_none());
    let failed = repos.jobs.job(b.id, None).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    let message = failed.failure_message.unwrap();
    assert!(
        message.contains("3 times")
            && message.contains("object store: connection refused")
            && !message.contains("interrupted"),
        "{message}"
    );
    check(repos, owner).await;
}

#[tokio::test]
async fn claims_match_capabilities() {
    for b in backends().await {
        b.run(|repos| async move {
            check_claims_match_capabilities(&repos).await;
        })
        .await;
    }
}

#[tokio::test]
async fn registry_and_unrunnable_sweep() {
    for b in backends().await {
        b.run(|repos| async move {
            check_registry_and_unrunnable_sweep(&repos).await;
        })
        .await;
    }
}

#[tokio::test]
async fn refund_events_and_stats() {
    for b in backends().await {
        b.run(|repos| async move {
            check_refund_events_and_stats(&repos).await;
        })
        .await;
    }
}
