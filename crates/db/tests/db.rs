//! Repository conformance suite. Each check takes `Repos`, so every backend runs the same
//! assertions; today that is SQLite in a temporary directory. The NEU ledger's checks live
//! in `conformance/`, part of this one test binary.

#[path = "conformance/batch.rs"]
mod batch;
#[path = "conformance/ledger.rs"]
mod ledger;
#[path = "conformance/ledger_race.rs"]
mod ledger_race;
#[path = "conformance/ledger_trial.rs"]
mod ledger_trial;
#[path = "conformance/secrets.rs"]
mod secrets;
#[path = "conformance/workers.rs"]
mod workers;

use convertrilo_core::{
    pricing::Factor, spec::*, time::now_ms, ApiKeyId, JobId, JobStatus, Neu, Scope, UserId,
};
use convertrilo_db::*;
use std::{collections::HashSet, time::Duration};

async fn sqlite() -> (tempfile::TempDir, Repos) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let repos = connect(&url).await.unwrap();
    (dir, repos)
}

async fn user(repos: &Repos, email: &str) -> User {
    let u = User {
        id: UserId::new(),
        email: email.into(),
        password_hash: "x".into(),
        is_admin: false,
        banned: false,
        created_at: now_ms(),
    };
    repos
        .accounts
        .create_user(&u, Some(Neu::from_whole(10)), None)
        .await
        .unwrap();
    u
}

fn job(owner: UserId) -> Job {
    let id = JobId::new();
    Job {
        id,
        user_id: owner,
        status: JobStatus::Created,
        spec: EncodeSpec::new(Codec::H264, Resolution::P720, 30),
        ingest: Ingest::Upload,
        source_url: None,
        input_key: format!("inputs/{id}"),
        input_size: None,
        output_key: format!("outputs/{id}"),
        output_size: None,
        original_filename: None,
        source_filename: None,
        output_filename: "video-720p.mp4".into(),
        external_id: None,
        metadata: None,
        duration_sec: None,
        output_duration_sec: None,
        media_info: None,
        per_minute: None,
        estimate: None,
        encoder: None,
        pct: None,
        failure_message: None,
        attempts: 0,
        auto_confirm: false,
        created_at: now_ms(),
        queued_at: None,
        started_at: None,
        finished_at: None,
        kind: JobKind::Standard,
        priority: 0,
        price_factor: Factor::ONE,
        output_expiry_secs: None,
        callback_url: None,
        status_token_hash: None,
        output_purged_at: None,
        source_ref: None,
        destination: Default::default(),
    }
}

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn accounts_keys_and_settings() {
    let (_d, repos) = sqlite().await;
    let u = user(&repos, "a@example.com").await;
    let dup = User {
        id: UserId::new(),
        ..u.clone()
    };
    assert!(matches!(
        repos.accounts.create_user(&dup, None, None).await,
        Err(DbError::Conflict(_))
    ));
    assert_eq!(repos.accounts.count_users().await.unwrap(), 1);
    let b = repos.ledger.balance(u.id, now_ms()).await.unwrap();
    assert_eq!(
        (b.granted, b.available),
        (Neu::from_whole(10), Neu::from_whole(10))
    );
    let key = ApiKey {
        id: ApiKeyId::new(),
        user_id: u.id,
        name: "k".into(),
        prefix: "cvt_abc".into(),
        scopes: vec![Scope::JobsRead, Scope::JobsCreate],
        expires_at: None,
        revoked_at: None,
        created_at: now_ms(),
    };
    repos.accounts.create_api_key(&key, "hash1").await.unwrap();
    let (found, owner) = repos
        .accounts
        .api_key_by_hash("hash1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found, owner.id), (key, u.id));
    assert!(repos
        .accounts
        .api_key_by_hash("nope")
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        repos
            .accounts
            .setting_or_insert("s", "first")
            .await
            .unwrap(),
        "first"
    );
    assert_eq!(
        repos
            .accounts
            .setting_or_insert("s", "second")
            .await
            .unwrap(),
        "first"
    );
}

#[tokio::test]
async fn job_lifecycle_and_tenant_scope() {
    let (_d, repos) = sqlite().await;
    let (a, b) = (user(&repos, "a@x.io").await, user(&repos, "b@x.io").await);
    let j = job(a.id);
    repos.jobs.insert_job(&j).await.unwrap();
    assert!(
        repos.jobs.job(j.id, Some(b.id)).await.unwrap().is_none(),
        "another account's job is invisible"
    );
    assert_eq!(
        repos
            .jobs
            .mark_uploaded(j.id, "inputs/x/1", 42)
            .await
            .unwrap(),
        Some(j.input_key.clone())
    );
    let Enqueued::Queued(queued) = repos.jobs.enqueue(j.id, None, 0, None).await.unwrap() else {
        panic!("not queued")
    };
    assert_eq!(
        (queued.status, queued.input_size),
        (JobStatus::Queued, Some(42))
    );
    assert_eq!(
        repos.jobs.enqueue(j.id, None, 0, None).await.unwrap(),
        Enqueued::NotCreated,
        "enqueue is once only"
    );
    assert!(
        repos
            .jobs
            .mark_uploaded(j.id, "inputs/x/2", 1)
            .await
            .unwrap()
            .is_none(),
        "no upload after queueing"
    );
    assert_eq!(repos.jobs.queue_depth().await.unwrap(), 1);

    let claimed = repos
        .jobs
        .claim("w1", LEASE, 3, &ClaimFilter::any())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (claimed.id, claimed.status, claimed.attempts),
        (j.id, JobStatus::Running, 1)
    );
    assert!(
        repos
            .jobs
            .claim("w2", LEASE, 3, &ClaimFilter::any())
            .await
            .unwrap()
            .is_none(),
        "a leased job is not handed out twice"
    );
    let p = Progress {
        pct: Some(50.0),
        encoder: Some("libx264".into()),
    };
    assert_eq!(
        repos.jobs.heartbeat(j.id, "w1", LEASE, &p).await.unwrap(),
        Heartbeat::Continue
    );
    assert_eq!(
        repos.jobs.heartbeat(j.id, "w2", LEASE, &p).await.unwrap(),
        Heartbeat::Lost
    );
    let done = Outcome::Success {
        output_size: 1000,
        duration_sec: Some(5.0),
        cost: Neu::ZERO,
    };
    assert!(
        !repos.jobs.finish(j.id, "w2", &done).await.unwrap(),
        "only the lease holder finishes"
    );
    assert!(repos.jobs.finish(j.id, "w1", &done).await.unwrap());
    let fin = repos.jobs.job(j.id, Some(a.id)).await.unwrap().unwrap();
    assert_eq!(
        (
            fin.status,
            fin.pct,
            fin.output_size,
            fin.encoder.as_deref(),
            fin.output_duration_sec
        ),
        (
            JobStatus::Success,
            Some(100.0),
            Some(1000),
            Some("libx264"),
            Some(5.0)
        )
    );
    assert!(fin.finished_at.is_some());
    assert_eq!(
        repos
            .jobs
            .cancel(j.id, a.id)
            .await
            .unwrap()
            .map(|c| c.previous),
        Some(JobStatus::Success),
        "terminal jobs stay"
    );
    assert_eq!(repos.jobs.cancel(j.id, b.id).await.unwrap(), None);
}

#[tokio::test]
async fn cancel_running_job_makes_the_worker_lose_it() {
    let (_d, repos) = sqlite().await;
    let a = user(&repos, "a@x.io").await;
    let j = job(a.id);
    repos.jobs.insert_job(&j).await.unwrap();
    repos.jobs.enqueue(j.id, None, 0, None).await.unwrap();
    repos
        .jobs
        .claim("w1", LEASE, 3, &ClaimFilter::any())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        repos
            .jobs
            .cancel(j.id, a.id)
            .await
            .unwrap()
            .map(|c| c.previous),
        Some(JobStatus::Running)
    );
    assert_eq!(
        repos
            .jobs
            .heartbeat(j.id, "w1", LEASE, &Progress::default())
            .await
            .unwrap(),
        Heartbeat::Lost
    );
    assert!(!repos
        .jobs
        .finish(
            j.id,
            "w1",
            &Outcome::Failed {
                message: "x".into()
            }
        )
        .await
        .unwrap());
    let c = repos.jobs.job(j.id, None).await.unwrap().unwrap();
    assert_eq!(c.status, JobStatus::Canceled);
    assert_eq!(repos.jobs.queue_depth().await.unwrap(), 0);
}

#[tokio::test]
async fn expired_lease_is_claimed_again_until_the_attempt_cap() {
    let (_d, repos) = sqlite().await;
    let a = user(&repos, "a@x.io").await;
    let j = job(a.id);
    repos.jobs.insert_job(&j).await.unwrap();
    repos.jobs.enqueue(j.id, None, 0, None).await.unwrap();
    let short = Duration::from_millis(50);
    for attempt in 1..=2 {
        let c = repos
            .jobs
            .claim(&format!("w{attempt}"), short, 2, &ClaimFilter::any())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.attempts, attempt);
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    assert!(
        repos
            .jobs
            .claim("w3", short, 2, &ClaimFilter::any())
            .await
            .unwrap()
            .is_none(),
        "third attempt is refused"
    );
    let f = repos.jobs.job(j.id, None).await.unwrap().unwrap();
    assert_eq!(f.status, JobStatus::Failed);
    assert!(f.failure_message.unwrap().contains("interrupted 2 times"));
}

#[tokio::test]
async fn release_requeues_and_priority_orders_claims() {
    let (_d, repos) = sqlite().await;
    let a = user(&repos, "a@x.io").await;
    let (low, high) = (job(a.id), job(a.id));
    for (j, prio) in [(&low, 0), (&high, 10)] {
        repos.jobs.insert_job(j).await.unwrap();
        repos.jobs.enqueue(j.id, None, prio, None).await.unwrap();
    }
    let first = repos
        .jobs
        .claim("w", LEASE, 3, &ClaimFilter::any())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.id, high.id);
    repos.jobs.release(high.id, "w", false).await.unwrap();
    assert_eq!(
        repos.jobs.job(high.id, None).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    assert_eq!(
        repos
            .jobs
            .claim("w", LEASE, 3, &ClaimFilter::any())
            .await
            .unwrap()
            .unwrap()
            .id,
        high.id
    );
    assert_eq!(
        repos
            .jobs
            .claim("w", LEASE, 3, &ClaimFilter::any())
            .await
            .unwrap()
            .unwrap()
            .id,
        low.id
    );
}

#[tokio::test]
async fn concurrent_claimers_never_share_a_job() {
    let (_d, repos) = sqlite().await;
    let a = user(&repos, "a@x.io").await;
    for _ in 0..40 {
        let j = job(a.id);
        repos.jobs.insert_job(&j).await.unwrap();
        repos.jobs.enqueue(j.id, None, 0, None).await.unwrap();
    }
    let mut tasks = Vec::new();
    for w in 0..8 {
        let jobs = repos.jobs.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(j) = jobs
                .claim(&format!("w{w}"), LEASE, 3, &ClaimFilter::any())
                .await
                .unwrap()
            {
                got.push(j.id);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (40, 40));
}
