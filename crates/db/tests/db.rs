//! Repository conformance suite. Each check takes `Repos` and runs once per backend (see
//! [`backends`]): SQLite in a temporary directory, and PostgreSQL in a database of its own
//! when `CONVERTRILO_TEST_DATABASE_URL` names a server (skipped, with a notice, when unset).
//! The NEU ledger's checks and the other topics live in `conformance/`, part of this one test
//! binary.

#[path = "conformance/auth.rs"]
mod auth;
#[path = "conformance/batch.rs"]
mod batch;
#[path = "conformance/ledger.rs"]
mod ledger;
#[path = "conformance/ledger_race.rs"]
mod ledger_race;
#[path = "conformance/ledger_trial.rs"]
mod ledger_trial;
#[path = "conformance/races.rs"]
mod races;
#[path = "conformance/secrets.rs"]
mod secrets;
#[path = "conformance/webhooks.rs"]
mod webhooks;
#[path = "conformance/workers.rs"]
mod workers;

use convertrilo_core::{
    pricing::Factor, spec::*, time::now_ms, ApiKeyId, JobId, JobStatus, Neu, Scope, UserId,
};
use convertrilo_db::*;
use sqlx::{Connection, PgConnection};
use std::{collections::HashSet, future::Future, time::Duration};

/// The PostgreSQL server to test against, as a URL whose database is only used to create and
/// drop each test's own database.
const PG_URL_VAR: &str = "CONVERTRILO_TEST_DATABASE_URL";

/// One backend under test, named in failure messages. Dropping it deletes what it stored.
pub(crate) struct Backend {
    name: &'static str,
    /// Where it is, for a check that opens a second connection as another process would.
    url: String,
    repos: Repos,
    /// The temporary directory or the database, deleted when dropped.
    _store: Box<dyn Send>,
}

impl Backend {
    /// Runs `check` against this backend. It runs as a task of its own so that a failure can be
    /// reported with the backend's name, after the backend's store has been deleted.
    pub(crate) async fn run<F, Fut>(self, check: F)
    where
        F: FnOnce(Repos) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let outcome = tokio::spawn(check(self.repos.clone())).await;
        let name = self.name;
        drop(self);
        if let Err(e) = outcome {
            let why = match e.try_into_panic() {
                Ok(payload) => payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            panic!("{name} backend: {why}");
        }
    }
}

/// Fresh, empty repositories on every backend there is to test: SQLite always, PostgreSQL
/// when `CONVERTRILO_TEST_DATABASE_URL` is set.
pub(crate) async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let mut all = vec![Backend {
        name: "SQLite",
        repos: connect(&url).await.unwrap(),
        url,
        _store: Box::new(dir),
    }];
    match std::env::var(PG_URL_VAR) {
        Ok(admin) if !admin.is_empty() => {
            let db = TestDatabase::create(&admin).await;
            let repos = connect(&db.url)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL test database {}: {e}", db.name));
            all.push(Backend {
                name: "PostgreSQL",
                url: db.url.clone(),
                repos,
                _store: Box::new(db),
            });
        }
        _ => eprintln!("skipping PostgreSQL: {PG_URL_VAR} is unset"),
    }
    all
}

/// A database created for one test and dropped with this value, whether the test passed or not.
struct TestDatabase {
    admin: String,
    name: String,
    url: String,
}

impl TestDatabase {
    async fn create(admin: &str) -> Self {
        let name = format!("convertrilo_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(admin)
            .await
            .unwrap_or_else(|e| panic!("{PG_URL_VAR}={admin}: {e}"));
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let mut url = url::Url::parse(admin).unwrap();
        url.set_path(&name);
        Self {
            admin: admin.to_string(),
            name,
            url: url.to_string(),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop may run on the test's runtime, which cannot block on itself (nor is there an
        // `.await` here): a thread with a small runtime of its own does the work. FORCE ends
        // the connections the test's pool still holds.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(sqlx::Error::Io)?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin).await?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("could not drop test database {}", self.name),
        }
    }
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
        vmaf: None,
    }
}

const LEASE: Duration = Duration::from_secs(30);
/// A passing error after which the job is claimable again at once, many times over.
const NO_WAIT: Backoff = Backoff {
    first: Duration::ZERO,
    most: Duration::ZERO,
    retries: 1000,
};

#[tokio::test]
async fn accounts_keys_and_settings() {
    for b in backends().await {
        b.run(|repos| async move {
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
            // Removed only while it holds the expected value, then free to be set again.
            let s = &repos.accounts;
            assert!(!s.delete_setting("s", Some("second")).await.unwrap());
            assert!(s.delete_setting("s", Some("first")).await.unwrap());
            assert!(!s.delete_setting("s", None).await.unwrap());
            assert_eq!(s.setting_or_insert("s", "third").await.unwrap(), "third");
            assert!(s.delete_setting("s", None).await.unwrap());
        })
        .await;
    }
}

#[tokio::test]
async fn job_lifecycle_and_tenant_scope() {
    for b in backends().await {
        b.run(|repos| async move {
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
            let Enqueued::Queued(queued) = repos.jobs.enqueue(j.id, None, 0, None).await.unwrap()
            else {
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
            let report = convertrilo_core::vmaf::VmafReport {
                target: 93.0,
                mean: 93.412,
                p5: 89.75,
                target_met: true,
                crf: 23.25,
                default_crf: 22.0,
                sample_encodes: 2,
                full_encodes: 1,
                bytes_saved_vs_default: Some(-1200),
                model: "vmaf_v0.6.1".into(),
                message: None,
            };
            let done = Outcome::Success {
                output_size: 1000,
                duration_sec: Some(5.0),
                cost: Neu::ZERO,
                vmaf: Some(report.clone()),
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
                fin.vmaf,
                Some(report),
                "the VMAF report is kept with the job"
            );
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
        })
        .await;
    }
}

#[tokio::test]
async fn cancel_running_job_makes_the_worker_lose_it() {
    for b in backends().await {
        b.run(|repos| async move {
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
        })
        .await;
    }
}

#[tokio::test]
async fn expired_lease_is_claimed_again_until_the_attempt_cap() {
    for b in backends().await {
        b.run(|repos| async move {
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
        })
        .await;
    }
}

#[tokio::test]
async fn release_requeues_and_priority_orders_claims() {
    for b in backends().await {
        b.run(|repos| async move {
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
            let back = HandBack::PassingError {
                reason: "test hiccup",
                backoff: NO_WAIT,
            };
            repos.jobs.release(high.id, "w", back).await.unwrap();
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
        })
        .await;
    }
}

#[tokio::test]
async fn concurrent_claimers_never_share_a_job() {
    for b in backends().await {
        b.run(|repos| async move {
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
        })
        .await;
    }
}
