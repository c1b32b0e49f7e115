//! Test harness: a real server on a random port over a temporary data directory, a local HTTP
//! server for URL ingest, generated clips, and ffprobe checks of outputs.

use convertrilo_server::{
    outbound::{Network, SystemNetwork},
    Application, Config,
};
use serde_json::{json, Value};
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};
use tokio::sync::oneshot;

pub fn env_path(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(fallback))
}

pub fn ffmpeg() -> PathBuf {
    env_path("CONVERTRILO_FFMPEG", "ffmpeg")
}

pub fn ffprobe() -> PathBuf {
    env_path("CONVERTRILO_FFPROBE", "ffprobe")
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// A real clip from the test media fetched by scripts/setup.
pub fn real_clip(name: &str) -> PathBuf {
    let dir = std::env::var_os("CONVERTRILO_TEST_MEDIA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/media"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup (it fetches the test media)",
        path.display()
    );
    path
}

pub struct TestApp {
    pub base: String,
    pub api_key: String,
    pub client: reqwest::Client,
    pub config: Config,
    pub app_state: convertrilo_server::state::AppState,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub dir: tempfile::TempDir,
}

pub fn test_config(dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.join("data"),
        workers: 1,
        ffmpeg: Some(ffmpeg()),
        ffprobe: Some(ffprobe()),
        log: "error".into(),
        // The tests' file hosts and webhook receivers listen on loopback; the SSRF tests
        // (ssrf.rs) turn this off again.
        ingest_allow_private_networks: true,
        // Tests poll every 100 ms; on a busy machine an encode outlasts 100 polls a minute.
        // The limit itself is tested with its own settings (auth.rs).
        rate_limit_per_minute: 10_000,
        // A stop or restart hands a running job back after 2 s instead of 25.
        drain_timeout_secs: 2,
        ..Config::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_on(std::sync::Arc::new(SystemNetwork), tweak).await
}

/// A server whose customer-given host names resolve through `network`.
pub async fn spawn_app_on(
    network: std::sync::Arc<dyn Network>,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    convertrilo_server::telemetry::init("error");
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    tweak(&mut config);
    let app = Application::build_with_network(config.clone(), network)
        .await
        .expect("server starts");
    let api_key = app
        .bootstrap
        .as_ref()
        .expect("first start creates a key")
        .api_key
        .clone();
    let base = app.public_url().to_string();
    let app_state = app.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        api_key,
        client: reqwest::Client::new(),
        config,
        app_state,
        stop: Some(stop),
        server: Some(server),
        dir,
    }
}

impl TestApp {
    /// Stops the server and starts a new one on the same data directory and settings (the
    /// API key stays valid; the listening port changes).
    pub async fn restart(mut self) -> TestApp {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), server).await;
        }
        let app = Application::build(self.config.clone())
            .await
            .expect("server restarts");
        let base = app.public_url().to_string();
        let app_state = app.state().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        TestApp {
            base,
            api_key: self.api_key.clone(),
            client: reqwest::Client::new(),
            config: self.config.clone(),
            app_state,
            stop: Some(stop),
            server: Some(server),
            dir: std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("X-API-Key", &self.api_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_empty(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("X-API-Key", &self.api_key)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(self.url(path))
            .header("X-API-Key", &self.api_key)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Creates an upload job, uploads the file, returns the job id.
    pub async fn upload_job(&self, file: &Path, spec: Value) -> String {
        let (status, created) = self.post("/jobs", spec).await;
        assert_eq!(status, 200, "{created}");
        let url = created["upload"]["url"]
            .as_str()
            .expect("upload url")
            .to_string();
        let bytes = tokio::fs::read(file).await.unwrap();
        let r = self.client.put(url).body(bytes).send().await.unwrap();
        assert_eq!(
            r.status().as_u16(),
            200,
            "{}",
            r.text().await.unwrap_or_default()
        );
        created["jobId"].as_str().unwrap().to_string()
    }

    pub async fn status(&self, id: &str) -> Value {
        let (code, body) = self.get(&format!("/jobs/{id}/status")).await;
        assert_eq!(code, 200, "{body}");
        body
    }

    /// Polls until the job reaches a terminal state.
    pub async fn wait_terminal(&self, id: &str, limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let s = self.status(id).await;
            if matches!(
                s["status"].as_str(),
                Some("success" | "failed" | "canceled")
            ) {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "job {id} not finished after {limit:?}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_status(&self, id: &str, want: &str, limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let s = self.status(id).await;
            if s["status"] == want {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "job {id} never reached {want}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Downloads a successful job's output into the test's directory.
    pub async fn download(&self, status: &Value) -> PathBuf {
        assert_eq!(status["status"], "success", "{status}");
        let url = status["downloadUrl"].as_str().expect("downloadUrl");
        let r = self.client.get(url).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let path = self.dir.path().join(format!(
            "{}-{}",
            status["id"].as_str().unwrap(),
            status["outputFilename"].as_str().unwrap()
        ));
        tokio::fs::write(&path, r.bytes().await.unwrap())
            .await
            .unwrap();
        path
    }

    /// Signals the server to stop (what SIGTERM does) and waits for its drain to end; the
    /// data directory and `app_state` stay for inspection.
    pub async fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(120), server)
                .await
                .expect("the server stops")
                .unwrap()
                .unwrap();
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), server).await;
        }
    }
}

/// Serves a directory over HTTP on a random loopback port (the "customer's" file host).
pub struct FileHost {
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
}

impl FileHost {
    pub async fn serve(dir: &Path) -> FileHost {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = axum::Router::new().fallback_service(tower_http::services::ServeDir::new(dir));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        FileHost {
            base,
            stop: Some(stop),
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }
}

impl Drop for FileHost {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Runs ffmpeg to make a clip; `args` come before the output path.
pub fn make_clip(out: &Path, args: &[&str]) {
    let status = Command::new(ffmpeg())
        .args(["-hide_banner", "-v", "error", "-y"])
        .args(args)
        .arg(out)
        .status()
        .expect("ffmpeg runs (run scripts/setup)");
    assert!(status.success(), "ffmpeg could not make {}", out.display());
}

/// ffprobe's view of a file.
pub fn probe(path: &Path) -> Value {
    let out = Command::new(ffprobe())
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn stream<'a>(info: &'a Value, kind: &str) -> Option<&'a Value> {
    info["streams"]
        .as_array()?
        .iter()
        .find(|s| s["codec_type"] == kind)
}

pub fn duration(info: &Value) -> f64 {
    info["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("duration")
}

pub fn fps(video: &Value) -> f64 {
    let rate = video["avg_frame_rate"].as_str().unwrap();
    let (n, d) = rate.split_once('/').unwrap();
    n.parse::<f64>().unwrap() / d.parse::<f64>().unwrap()
}

pub fn job_spec(codec: &str, resolution: &str, fps: u32, container: &str) -> Value {
    json!({ "codec": codec, "resolution": resolution, "fps": fps, "container": container })
}

/// A webhook receiver on a random loopback port: records every POST (body as JSON) and
/// answers the first `fail_first` of them with 500.
pub struct Receiver {
    pub base: String,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Receiver {
        use std::sync::{
            atomic::{AtomicUsize, Ordering},
            Arc, Mutex,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let (rec, calls2) = (received.clone(), calls.clone());
        let router = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let (rec, calls) = (rec.clone(), calls2.clone());
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < fail_first {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                rec.lock().unwrap().push(v);
                axum::http::StatusCode::OK
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Receiver {
            base,
            received,
            stop: Some(stop),
        }
    }

    pub fn url(&self) -> String {
        format!("{}/hook", self.base)
    }

    /// Waits until `n` deliveries arrived; returns them.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let got = self.received.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(
                start.elapsed() < limit,
                "only {} of {n} callbacks arrived: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl TestApp {
    /// POST with extra headers; returns status, headers and the raw body.
    pub async fn post_raw(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let mut req = self
            .client
            .post(self.url(path))
            .header("X-API-Key", &self.api_key)
            .json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.bytes().await.unwrap().to_vec())
    }

    pub async fn balance(&self) -> Value {
        let (code, b) = self.get("/tokens/balance").await;
        assert_eq!(code, 200, "{b}");
        b
    }
}

/// A short generated clip with audio, made once per test directory.
pub fn small_clip(dir: &Path, name: &str, secs: u32) -> PathBuf {
    let path = dir.join(name);
    if !path.exists() {
        let d = secs.to_string();
        make_clip(
            &path,
            &[
                "-f",
                "lavfi",
                "-i",
                &format!("testsrc2=size=320x240:rate=25:duration={d}"),
                "-f",
                "lavfi",
                "-i",
                &format!("sine=frequency=440:duration={d}"),
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-c:a",
                "aac",
                "-shortest",
            ],
        );
    }
    path
}
