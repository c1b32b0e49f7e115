//! The `convertrilo` binary as users and scripts run it: first start, admin commands against
//! a running server's data directory, recovery after the process is killed mid-encode, a
//! second stop signal cutting a drain short, and (in `cli/fleet.rs`) an API with separate
//! worker processes on PostgreSQL and S3.

#[path = "cli/fleet.rs"]
mod fleet;
// The S3 protocol server of the server crate's tests, shared rather than copied.
#[allow(dead_code)]
#[path = "../../server/tests/api/s3server.rs"]
mod s3server;

use serde_json::{json, Value};
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_convertrilo");

fn tool(var: &str, fallback: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| fallback.to_string())
}

/// A real clip from the test media fetched by scripts/setup.
fn real_clip(name: &str) -> PathBuf {
    let dir = std::env::var_os("CONVERTRILO_TEST_MEDIA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/media"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup",
        path.display()
    );
    path
}

struct Server {
    child: Child,
    base: String,
    /// Printed on first start only.
    key: Option<String>,
    stdout: Vec<String>,
}

impl Server {
    /// Starts `convertrilo serve` on a random port and reads its start-up banner.
    fn start(data: &Path, extra_env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .env("CONVERTRILO_FFMPEG", tool("CONVERTRILO_FFMPEG", "ffmpeg"))
            .env(
                "CONVERTRILO_FFPROBE",
                tool("CONVERTRILO_FFPROBE", "ffprobe"),
            )
            .env("CONVERTRILO_LOG", "warn")
            .envs(extra_env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("convertrilo starts");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut base, mut key, mut stdout) = (None, None, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
                continue;
            };
            if let Some(rest) = line.strip_prefix("Convertrilo is listening on ") {
                base = rest.split_whitespace().next().map(String::from);
            }
            if let Some(k) = line.trim().strip_prefix("export CONVERTRILO_API_KEY=") {
                key = Some(k.to_string());
            }
            let done = line.contains("/status");
            stdout.push(line);
            if done {
                break;
            }
        }
        let base = base.unwrap_or_else(|| panic!("no listening line in {stdout:?}"));
        Server {
            child,
            base,
            key,
            stdout,
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL: no chance to clean up
        let _ = self.child.wait();
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn admin(data: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["admin"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Creates an upload job from `spec` and uploads `clip` into it; returns the job id.
async fn upload_job(
    client: &reqwest::Client,
    server: &Server,
    key: &str,
    clip: &Path,
    spec: Value,
) -> String {
    let created: Value = client
        .post(format!("{}/jobs", server.base))
        .header("X-API-Key", key)
        .json(&spec)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["jobId"].as_str().unwrap().to_string();
    let put = client
        .put(created["upload"]["url"].as_str().unwrap())
        .body(std::fs::read(clip).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 200);
    id
}

fn processes_mentioning(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .count()
}

#[tokio::test]
async fn first_start_and_admin_commands() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[]);
    let key = server.key.clone().expect("first start prints a key");
    assert!(
        server
            .stdout
            .iter()
            .any(|l| l.contains("curl -s") && l.contains("/jobs")),
        "{:?}",
        server.stdout
    );

    // The in-process worker is in the registry, as `convertrilo workers` shows it.
    let out = Command::new(BIN)
        .args(["workers", "--json", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let workers = listed["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{listed}");
    assert_eq!(
        (
            workers[0]["state"].as_str(),
            workers[0]["capabilities"]["slots"].as_u64()
        ),
        (Some("live"), Some(1)),
        "{listed}"
    );
    let table = Command::new(BIN)
        .args(["workers", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.starts_with("ID") && table.contains("libx264") && table.contains("live"),
        "{table}"
    );
    // Columns line up under their headings, whatever the length of the worker's id.
    let lines: Vec<&str> = table.lines().collect();
    let (header, row) = (lines[0], lines[1]);
    let host_at = header.find("HOST").unwrap();
    assert!(
        row[..host_at].ends_with("  ") && !row[host_at..].starts_with(' '),
        "{table}"
    );
    // A reader that stops early (`convertrilo workers | head -1`) is no error.
    let mut early = Command::new(BIN)
        .args(["workers", "--data-dir"])
        .arg(&data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(early.stdout.take());
    let early = early.wait_with_output().unwrap();
    assert!(
        early.status.success(),
        "{}",
        String::from_utf8_lossy(&early.stderr)
    );

    // Scripts create accounts while the server runs.
    let (ok, out, err) = admin(
        &data,
        &[
            "create-user",
            "--email",
            "dev@example.com",
            "--password",
            "s3cret-pass",
            "--grant",
            "12.5",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let user: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (user["email"].as_str(), user["granted"].as_f64()),
        (Some("dev@example.com"), Some(12.5))
    );
    assert_eq!(
        user["trial"].as_f64(),
        Some(10.0),
        "new accounts get the trial: {user}"
    );
    let (ok, _, err) = admin(
        &data,
        &[
            "create-user",
            "--email",
            "dev@example.com",
            "--password",
            "s3cret-pass",
        ],
    );
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = admin(
        &data,
        &[
            "create-user",
            "--email",
            "x@example.com",
            "--password",
            "short",
        ],
    );
    assert!(!ok && err.contains("at least 8"), "{err}");
    let (ok, out, err) = admin(
        &data,
        &[
            "create-api-key",
            "--email",
            "dev@example.com",
            "--scopes",
            "jobs:read,jobs:create",
            "--expires-in-days",
            "30",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let dev_key = created["key"].as_str().unwrap().to_string();
    assert_eq!(created["scopes"], json!(["jobs:read", "jobs:create"]));
    assert!(created["expiresAt"].is_string());
    let (ok, _, err) = admin(&data, &["create-api-key", "--email", "nobody@example.com"]);
    assert!(!ok && err.contains("no user"), "{err}");
    let (ok, _, err) = admin(
        &data,
        &[
            "create-api-key",
            "--email",
            "dev@example.com",
            "--scopes",
            "jobs:everything",
        ],
    );
    assert!(!ok && err.contains("unknown scope"), "{err}");

    let client = reqwest::Client::new();
    let spec = json!({"codec": "h264", "resolution": "720p", "fps": 30});
    let r = client
        .post(format!("{}/jobs", server.base))
        .header("X-API-Key", &dev_key)
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let job: Value = r.json().await.unwrap();
    // The dev key lacks jobs:cancel; the admin key from the banner has every scope.
    let cancel = format!(
        "{}/jobs/{}/cancel",
        server.base,
        job["jobId"].as_str().unwrap()
    );
    let r = client
        .post(&cancel)
        .header("X-API-Key", &dev_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = client
        .post(&cancel)
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        404,
        "another account's job is invisible even to the admin's key"
    );
    server.terminate();

    // A second start on the same data keeps the accounts and prints no new key.
    let server = Server::start(&data, &[]);
    assert!(server.key.is_none());
    let config = Command::new(BIN)
        .args(["config", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let config = String::from_utf8_lossy(&config.stdout);
    assert!(
        config.contains("listen = \"127.0.0.1:8080\"") && config.contains("max_upload_bytes"),
        "{config}"
    );
    assert!(
        config.contains("[pricing.codec]")
            && config.contains("h265 = 1.5")
            && config.contains("trial_grant_neu"),
        "{config}"
    );

    // Admin grants land in the account's balance.
    let (ok, out, err) = admin(
        &data,
        &[
            "grant",
            "--email",
            "dev@example.com",
            "--amount",
            "7.25",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let granted: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        granted["available"].as_f64(),
        Some(12.5 + 7.25 + 10.0),
        "paid grants plus the trial: {granted}"
    );
    let (ok, _, err) = admin(
        &data,
        &["grant", "--email", "dev@example.com", "--amount", "-3"],
    );
    assert!(!ok && err.contains("positive amount"), "{err}");
    let (ok, _, err) = admin(
        &data,
        &[
            "grant",
            "--email",
            "dev@example.com",
            "--amount",
            "9223372036854775",
        ],
    );
    assert!(
        !ok && err.contains("at most"),
        "a grant that could overflow the ledger is refused: {err}"
    );
    let (ok, _, err) = admin(
        &dir.path().join("typo"),
        &["ban", "--email", "dev@example.com"],
    );
    assert!(!ok && err.contains("no Convertrilo database"), "{err}");
    assert!(
        !dir.path().join("typo").exists(),
        "a wrong --data-dir creates nothing"
    );

    // Forgetting the store is refused while jobs and a live worker use it, unless forced;
    // then there is nothing left to forget.
    let (ok, _, err) = admin(&data, &["forget-store"]);
    assert!(
        !ok && err.contains("live worker") && err.contains("--force"),
        "{err}"
    );
    let (ok, out, err) = admin(&data, &["forget-store", "--force"]);
    assert!(
        ok && out.contains("no longer names an object store"),
        "{out}{err}"
    );
    let (ok, out, _) = admin(&data, &["forget-store", "--force"]);
    assert!(ok && out.contains("nothing to do"), "{out}");
}

#[tokio::test]
async fn killed_mid_encode_the_job_is_requeued_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clip = dir.path().join("long.mp4");
    let made = Command::new(tool("CONVERTRILO_FFMPEG", "ffmpeg"))
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=640x360:r=30:d=12",
            "-f",
            "lavfi",
            "-i",
            "sine=d=12",
        ])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-shortest"])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(made.success());
    // The test polls status five times a second for as long as the encode takes on a busy
    // machine; the per-account request limit is not what it is about.
    let env = [
        ("CONVERTRILO_LEASE_SECS", "3"),
        ("CONVERTRILO_RATE_LIMIT_PER_MINUTE", "100000"),
    ];
    let mut server = Server::start(&data, &env);
    let key = server.key.clone().unwrap();
    let client = reqwest::Client::new();
    let spec = json!({"codec": "h265", "resolution": "480p", "fps": 30, "preset": "slow", "confirm": true});
    let id = upload_job(&client, &server, &key, &clip, spec).await;

    let status_url = |base: &str| format!("{base}/jobs/{id}/status");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s: Value = client
            .get(status_url(&server.base))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["status"] == "running" && s["pct"].as_f64().unwrap_or(0.0) > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "never got going: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let scratch = data.join("tmp");
    let stale: Vec<PathBuf> = std::fs::read_dir(&scratch)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        stale.iter().any(|d| d.join(&id).exists()),
        "the encode has scratch files"
    );
    server.kill();
    // ffmpeg dies with its parent rather than running on as an orphan.
    let deadline = Instant::now() + Duration::from_secs(5);
    while processes_mentioning(&id) > 0 {
        assert!(
            Instant::now() < deadline,
            "ffmpeg outlived the killed server"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let server = Server::start(&data, &env);
    for dir in &stale {
        assert!(
            !dir.exists(),
            "stale scratch {} was not removed",
            dir.display()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let s: Value = client
            .get(status_url(&server.base))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if matches!(
            s["status"].as_str(),
            Some("success" | "failed" | "canceled")
        ) {
            break s;
        }
        assert!(Instant::now() < deadline, "not finished after restart: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done["status"], "success", "{done}");
    let bytes = client
        .get(done["downloadUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let out = dir.path().join("out.mp4");
    std::fs::write(&out, &bytes).unwrap();
    let probe = Command::new(tool("CONVERTRILO_FFPROBE", "ffprobe"))
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let probe = String::from_utf8_lossy(&probe.stdout);
    assert!(
        probe.contains("hevc,640,360"),
        "a 640x360 source fits 480p as it is: {probe}"
    );
}

/// The first SIGTERM starts a drain (the running encode goes on); a second one hands the job
/// back to the queue at once instead of waiting out `drain_timeout_secs`.
#[tokio::test]
async fn a_second_stop_signal_hands_the_running_job_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clip = dir.path().join("long.mp4");
    let made = Command::new(tool("CONVERTRILO_FFMPEG", "ffmpeg"))
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .args(["testsrc2=s=1280x720:r=30:d=20", "-c:v", "libx264"])
        .args(["-preset", "ultrafast"])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(made.success());
    let env = [
        ("CONVERTRILO_DRAIN_TIMEOUT_SECS", "600"),
        ("CONVERTRILO_RATE_LIMIT_PER_MINUTE", "100000"),
    ];
    let mut server = Server::start(&data, &env);
    let key = server.key.clone().unwrap();
    let client = reqwest::Client::new();
    let spec = json!({"codec": "h265", "resolution": "720p", "fps": 30, "preset": "slow", "confirm": true});
    let id = upload_job(&client, &server, &key, &clip, spec).await;
    let status = |base: String| {
        let (client, key, id) = (client.clone(), key.clone(), id.clone());
        async move {
            client
                .get(format!("{base}/jobs/{id}/status"))
                .header("X-API-Key", &key)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while processes_mentioning(&id) == 0 {
        let s = status(server.base.clone()).await;
        assert!(Instant::now() < deadline, "never got going: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let sigterm = |pid: u32| {
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
    };
    let pid = server.child.id();
    assert!(sigterm(pid).success());
    // Draining: the process stays, and so does its encode.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the first signal only drains"
    );
    assert!(
        processes_mentioning(&id) > 0,
        "the drain stopped the encode"
    );
    assert!(sigterm(pid).success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "still draining after a second signal"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "a stop is a clean exit: {exit}");
    assert_eq!(processes_mentioning(&id), 0, "ffmpeg outlived the stop");

    // Back in the queue, waiting for a worker (this start runs none).
    let api_only = Server::start(&data, &[("CONVERTRILO_WORKERS", "0")]);
    let s = status(api_only.base.clone()).await;
    assert_eq!(s["status"], "queued", "{s}");
}

/// A database that cannot be reached is named with its real cause, each part said once, and
/// an admin command on PostgreSQL leaves no data directory in the working directory.
#[test]
fn an_unreachable_database_is_reported_with_its_cause_once() {
    let cwd = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = Command::new(BIN)
        .arg("migrate")
        .current_dir(cwd.path())
        .env(
            "CONVERTRILO_DATABASE_URL",
            format!("postgres://fleet:pw@127.0.0.1:{port}/x"),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CONVERTRILO_DATABASE_URL") && err.contains("Connection refused"),
        "the cause, not a pool timeout: {err}"
    );
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    assert!(!err.contains(":pw@"), "the password is not shown: {err}");
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "nothing created in the working directory"
    );
}
