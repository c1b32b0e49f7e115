//! Scale-out as operators run it: one API process (`serve`, no workers) and three
//! `convertrilo worker` processes on one PostgreSQL database and one S3 protocol server on
//! loopback. Thirty jobs of the real clip; one worker is SIGKILLed mid-encode. Every job
//! must succeed exactly once (one deduct per job, nothing left reserved), a cancel must
//! reach the worker running the job within a second, and no scratch file or stray object
//! may be left behind.

use super::{processes_mentioning, tool, Server, BIN};
use crate::s3server::{S3Server, ACCESS_KEY, SECRET_KEY};
use serde_json::{json, Value};
use sqlx::{Connection, Row};
use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

const JOBS: usize = 30;

/// A fresh database on the test server, dropped (with its connections) when this goes.
struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    async fn create(admin_url: &str) -> TestDatabase {
        let name = format!("convertrilo_fleet_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let mut url = url::Url::parse(admin_url).unwrap();
        url.set_path(&name);
        TestDatabase {
            admin_url: admin_url.to_string(),
            name,
            url: url.to_string(),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime: drop the database from a thread of its own.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut c)
                        .await;
                }
            });
        })
        .join()
        .unwrap();
    }
}

struct Worker {
    child: Child,
    id: String,
    data: PathBuf,
}

impl Worker {
    fn start(data: &Path, env: &[(String, String)]) -> Worker {
        let mut child = Command::new(BIN)
            .args(["worker", "--slots", "1", "--data-dir"])
            .arg(data)
            .env("CONVERTRILO_FFMPEG", tool("CONVERTRILO_FFMPEG", "ffmpeg"))
            .env(
                "CONVERTRILO_FFPROBE",
                tool("CONVERTRILO_FFPROBE", "ffprobe"),
            )
            .env("CONVERTRILO_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("convertrilo worker starts");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let id = loop {
            assert!(
                Instant::now() < deadline,
                "the worker printed no start line"
            );
            let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
                continue;
            };
            if let Some(rest) = line.strip_prefix("Convertrilo worker ") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        Worker {
            child,
            id,
            data: data.to_path_buf(),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status (a clean drain exits 0).
    fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        false
    }

    /// Job directories left in this worker's scratch space.
    fn scratch_entries(&self) -> Vec<PathBuf> {
        let Ok(owners) = std::fs::read_dir(self.data.join("tmp")) else {
            return Vec::new();
        };
        owners
            .flatten()
            .flat_map(|o| std::fs::read_dir(o.path()).into_iter().flatten().flatten())
            .map(|e| e.path())
            .filter(|p| !p.ends_with(".owner.lock"))
            .collect()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Api {
    client: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("X-API-Key", &self.key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let (code, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(code, 200, "GET {path}: {body}");
        body
    }

    /// Creates a job, uploads `clip` through its presigned link, confirms it.
    async fn submit(&self, clip: &[u8], spec: Value) -> String {
        let (code, created) = self.call(reqwest::Method::POST, "/jobs", Some(spec)).await;
        assert_eq!(code, 200, "{created}");
        let id = created["jobId"].as_str().unwrap().to_string();
        let put = self
            .client
            .put(created["upload"]["url"].as_str().unwrap())
            .body(clip.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status().as_u16(), 200);
        let (code, confirmed) = self
            .call(reqwest::Method::POST, &format!("/jobs/{id}/confirm"), None)
            .await;
        assert_eq!(
            (code, confirmed["status"].as_str()),
            (200, Some("queued")),
            "{confirmed}"
        );
        id
    }

    /// The worker processes as `GET /admin/workers` lists them, by id.
    async fn workers(&self) -> HashMap<String, Value> {
        self.get("/admin/workers").await["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| (w["id"].as_str().unwrap().to_string(), w.clone()))
            .collect()
    }
}

fn probe(path: &Path) -> String {
    let out = Command::new(tool("CONVERTRILO_FFPROBE", "ffprobe"))
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every object under `dir`, as keys relative to it.
fn objects(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_three_workers_on_postgres_and_s3_survive_a_killed_worker() {
    let Ok(admin_url) = std::env::var("CONVERTRILO_TEST_DATABASE_URL") else {
        eprintln!("skipping the multi-process fleet test: CONVERTRILO_TEST_DATABASE_URL is unset");
        return;
    };
    let db = TestDatabase::create(&admin_url).await;
    let s3 = S3Server::start(&["media"]).await;
    let dir = tempfile::tempdir().unwrap();
    let env: Vec<(String, String)> = [
        ("CONVERTRILO_DATABASE_URL", db.url.as_str()),
        ("CONVERTRILO_STORAGE_URL", "s3://media/fleet"),
        ("CONVERTRILO_STORAGE_S3_ENDPOINT", s3.endpoint.as_str()),
        ("CONVERTRILO_STORAGE_S3_ACCESS_KEY_ID", ACCESS_KEY),
        ("CONVERTRILO_STORAGE_S3_SECRET_ACCESS_KEY", SECRET_KEY),
        ("CONVERTRILO_STORAGE_S3_FORCE_PATH_STYLE", "true"),
        // A killed worker's job comes back after 3 s instead of 30.
        ("CONVERTRILO_LEASE_SECS", "3"),
        ("CONVERTRILO_RATE_LIMIT_PER_MINUTE", "100000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut api_env: Vec<(&str, &str)> =
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    api_env.push(("CONVERTRILO_WORKERS", "0"));
    let mut server = Server::start(&dir.path().join("api"), &api_env);
    let api = Api {
        client: reqwest::Client::new(),
        base: server.base.clone(),
        key: server.key.clone().expect("first start prints a key"),
    };
    let mut workers: Vec<Worker> = (0..3)
        .map(|n| Worker::start(&dir.path().join(format!("w{n}")), &env))
        .collect();
    let listed = api.workers().await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.values().all(|w| w["state"] == "live"), "{listed:?}");

    let clip = std::fs::read(super::real_clip("bigbuckbunny.mp4")).unwrap();
    let spec = json!({"codec": "h264", "resolution": "480p", "fps": 30, "container": "mp4"});
    let mut ids = Vec::new();
    for _ in 0..JOBS {
        ids.push(api.submit(&clip, spec.clone()).await);
    }

    // Kill a worker while it encodes (progress above zero).
    let deadline = Instant::now() + Duration::from_secs(120);
    let (victim, victim_job) = 'found: loop {
        assert!(Instant::now() < deadline, "no worker got going");
        for (wid, w) in api.workers().await {
            if let Some(job) = w["currentJobs"].as_array().and_then(|j| j.first()) {
                let job = job.as_str().unwrap().to_string();
                let s = api.get(&format!("/jobs/{job}/status")).await;
                if s["status"] == "running" && s["pct"].as_f64().unwrap_or(0.0) > 0.0 {
                    break 'found (wid, job);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let at = workers.iter().position(|w| w.id == victim).unwrap();
    workers[at].kill();
    let killed = workers.remove(at);

    // A cancel reaches the worker running the job within a second: its ffmpeg is gone.
    let long = dir.path().join("long.mp4");
    let made = Command::new(tool("CONVERTRILO_FFMPEG", "ffmpeg"))
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=1280x720:r=30:d=30",
        ])
        .args(["-c:v", "libx264", "-preset", "ultrafast"])
        .arg(&long)
        .status()
        .unwrap();
    assert!(made.success());
    let slow = json!({"codec": "h265", "resolution": "720p", "fps": 30, "preset": "slow", "priority": "high"});
    let doomed = api.submit(&std::fs::read(&long).unwrap(), slow).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let s = api.get(&format!("/jobs/{doomed}/status")).await;
        if s["status"] == "running" && processes_mentioning(&doomed) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the long job never ran: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, body) = api
        .call(
            reqwest::Method::POST,
            &format!("/jobs/{doomed}/cancel"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let canceled_at = Instant::now();
    while processes_mentioning(&doomed) > 0 {
        assert!(
            canceled_at.elapsed() < Duration::from_secs(1),
            "the worker still encodes a job canceled {:?} ago",
            canceled_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Every job succeeds, the killed worker's job on another worker.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut done: HashMap<String, Value> = HashMap::new();
    while done.len() < ids.len() {
        assert!(Instant::now() < deadline, "{} of {JOBS} done", done.len());
        for id in &ids {
            if done.contains_key(id) {
                continue;
            }
            let s = api.get(&format!("/jobs/{id}/status")).await;
            if matches!(
                s["status"].as_str(),
                Some("success" | "failed" | "canceled")
            ) {
                done.insert(id.clone(), s);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for (id, s) in &done {
        assert_eq!(s["status"], "success", "{id}: {s}");
    }
    for id in [&victim_job, &ids[0]] {
        let bytes = api
            .client
            .get(done[id]["downloadUrl"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let out = dir.path().join(format!("{id}.mp4"));
        std::fs::write(&out, &bytes).unwrap();
        assert!(
            probe(&out).contains("h264,852,480"),
            "{id}: {}",
            probe(&out)
        );
    }

    // Exactly once: one deduct per job and nothing left reserved, straight from the ledger.
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let rows = sqlx::query(
        "SELECT job_id, kind, COUNT(*) AS n, SUM(amount)::BIGINT AS total FROM ledger_entries
         WHERE job_id IS NOT NULL GROUP BY job_id, kind",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut per_job: HashMap<String, HashMap<String, (i64, i64)>> = HashMap::new();
    for r in &rows {
        per_job
            .entry(r.get::<String, _>("job_id"))
            .or_default()
            .insert(r.get("kind"), (r.get("n"), r.get::<i64, _>("total")));
    }
    for id in &ids {
        let kinds = &per_job[id];
        assert_eq!(kinds["deduct"].0, 1, "{id}: {kinds:?}");
        let reserved = kinds["reserve"].1;
        let settled = kinds["deduct"].1 + kinds.get("release").map_or(0, |r| r.1);
        assert_eq!(
            reserved, settled,
            "{id}: everything reserved is settled: {kinds:?}"
        );
    }
    let balance = api.get("/tokens/balance").await;
    assert_eq!(balance["reserved"].as_f64(), Some(0.0), "{balance}");
    let granted = balance["granted"].as_f64().unwrap();
    let sum = ["available", "reserved", "spent", "expired"]
        .iter()
        .map(|k| balance[k].as_f64().unwrap())
        .sum::<f64>();
    assert!((granted - sum).abs() < 1e-6, "ledger invariant: {balance}");
    drop(conn);

    // Clean stop: drained workers leave the registry with nothing in their scratch space;
    // the killed worker's leftovers are swept when a worker starts again on its data.
    assert!(
        !killed.scratch_entries().is_empty(),
        "the killed worker left its job's scratch files"
    );
    workers.push(Worker::start(&killed.data, &env));
    for w in &mut workers {
        assert!(w.terminate(), "worker {} did not stop cleanly", w.id);
        assert_eq!(
            w.scratch_entries(),
            Vec::<PathBuf>::new(),
            "worker {}",
            w.id
        );
    }
    let left = api.workers().await;
    assert!(
        left.keys().all(|k| *k == victim),
        "only the killed worker's row stays (until pruned): {left:?}"
    );

    // Objects: the inputs and outputs of the jobs and the store's name, nothing else (no
    // parts, no temporaries).
    let known: HashSet<String> = ids.iter().chain([&doomed]).cloned().collect();
    let mut stored = objects(&s3.path("media", "fleet"));
    let named = stored.iter().position(|k| k == "store-id");
    stored.remove(named.expect("the store is named"));
    let outputs = stored.iter().filter(|k| k.starts_with("outputs/")).count();
    assert_eq!(outputs, JOBS, "{stored:?}");
    for key in &stored {
        let job = key.split('/').nth(1).unwrap_or_default();
        assert!(
            (key.starts_with("inputs/") || key.starts_with("outputs/")) && known.contains(job),
            "stray object {key}"
        );
    }
    server.terminate();
}
