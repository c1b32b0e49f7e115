//! `convertrilo-bench`: measures the service against bare ffmpeg, side by side in one run.
//!
//! 1. Encode overhead: the real clip → h264 720p mp4 and → av1 480p webm, through a spawned
//!    `convertrilo serve` (create → upload → queued → encoded → downloaded) and with bare ffmpeg
//!    running the identical argument list (built by the same planner from the same probe).
//!    Prints the median wall time of each and the service/bare ratio (target ≤ 1.10).
//! 2. Upload memory: the server's RSS growth while a 1 GiB file streams in (target < 64 MiB).
//! 3. Streaming ingest memory: 2 GiB sent as 64 MiB parts and joined (target < 64 MiB).
//! 4. Bulk creation: one `POST /jobs/bulk` of 500 jobs on SQLite (target well under 1 s),
//!    beside the same 500 jobs created one `POST /jobs` at a time, and an idempotent replay.
//! 5. The queue on SQLite and PostgreSQL (see `queue`): claims per second with 8 claimers on
//!    1,000 queued jobs, and confirm → running latency with idle workers.
//!
//! 6. VMAF-targeted encoding (see `vmaf`): our search beside a baseline implementing
//!    ab-av1's crf-search, and both beside the default quality setting.
//!
//! `--only queue` (repeatable: encode, upload, stream, bulk, queue, vmaf) runs a subset. PostgreSQL
//! comes from CONVERTRILO_BENCH_DATABASE_URL (default: the local server as user postgres); each
//! measurement uses a database of its own, dropped afterwards.

mod queue;
mod vmaf;

use anyhow::{bail, Context, Result};
use convertrilo_core::request::parse_job_create;
use convertrilo_media::{choose_encoder, plan_encode, probe, Capabilities, PlanInput, Tools};
use serde_json::{json, Value};
use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

struct Args {
    server: PathBuf,
    clip: PathBuf,
    runs: usize,
    upload_mib: u64,
    stream_mib: u64,
    only: Vec<String>,
}

impl Args {
    fn runs(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        server: "target/release/convertrilo".into(),
        clip: PathBuf::new(),
        runs: 5,
        upload_mib: 1024,
        stream_mib: 2048,
        only: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => args.server = value()?.into(),
            "--clip" => args.clip = value()?.into(),
            "--runs" => args.runs = value()?.parse()?,
            "--upload-mib" => args.upload_mib = value()?.parse()?,
            "--stream-mib" => args.stream_mib = value()?.parse()?,
            "--only" => {
                let section = value()?;
                if !["encode", "upload", "stream", "bulk", "queue", "vmaf"].contains(&section.as_str())
                {
                    bail!("--only {section}: use encode, upload, stream, bulk, queue or vmaf");
                }
                args.only.push(section);
            }
            other => bail!(
                "unknown argument {other}; use --server, --clip, --runs, --upload-mib, --stream-mib, --only"
            ),
        }
    }
    if !args.clip.is_file() {
        bail!(
            "--clip {} is not a file (run scripts/setup)",
            args.clip.display()
        );
    }
    Ok(args)
}

struct Server {
    child: Child,
    base: String,
    key: String,
}

impl Server {
    fn start(bin: &Path, data: &Path, tools: &Tools) -> Result<Server> {
        Self::start_with(bin, data, tools, 1, &[])
    }

    fn start_with(
        bin: &Path,
        data: &Path,
        tools: &Tools,
        workers: usize,
        env: &[(&str, &str)],
    ) -> Result<Server> {
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--workers"])
            .arg(workers.to_string())
            .arg("--data-dir")
            .arg(data)
            .envs(env.iter().copied())
            .env("CONVERTRILO_FFMPEG", &tools.ffmpeg)
            .env("CONVERTRILO_FFPROBE", &tools.ffprobe)
            .env("CONVERTRILO_LOG", "warn")
            // The bench polls status often to time completion closely; the per-account
            // request limit would otherwise throttle it.
            .env("CONVERTRILO_RATE_LIMIT_PER_MINUTE", "1000000")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let (mut base, mut key) = (None, None);
        while base.is_none() || key.is_none() {
            let line = lines
                .next()
                .context("server exited before printing its banner")??;
            if let Some(rest) = line.strip_prefix("Convertrilo is listening on ") {
                base = rest.split_whitespace().next().map(String::from);
            }
            if let Some(k) = line.trim().strip_prefix("export CONVERTRILO_API_KEY=") {
                key = Some(k.to_string());
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Server {
            child,
            base: base.unwrap_or_default(),
            key: key.unwrap_or_default(),
        })
    }

    /// A `convertrilo worker` process (one slot) on `data`, once it has registered.
    fn worker(bin: &Path, data: &Path, tools: &Tools, env: &[(&str, &str)]) -> Result<Server> {
        let mut child = Command::new(bin)
            .args(["worker", "--slots", "1", "--data-dir"])
            .arg(data)
            .envs(env.iter().copied())
            .env("CONVERTRILO_FFMPEG", &tools.ffmpeg)
            .env("CONVERTRILO_FFPROBE", &tools.ffprobe)
            .env("CONVERTRILO_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} worker", bin.display()))?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        loop {
            let line = lines
                .next()
                .context("worker exited before printing its banner")??;
            if line.starts_with("Convertrilo worker ") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Ok(Server {
            child,
            base: String::new(),
            key: String::new(),
        })
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// One job through the service: create (auto-confirm) → upload → poll → download.
async fn service_run(
    client: &reqwest::Client,
    server: &Server,
    spec: &Value,
    clip: &[u8],
) -> Result<(f64, usize)> {
    let start = Instant::now();
    let mut body = spec.clone();
    body["confirm"] = json!(true);
    let created: Value = client
        .post(format!("{}/jobs", server.base))
        .header("X-API-Key", &server.key)
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    let upload = created["upload"]["url"]
        .as_str()
        .with_context(|| format!("no upload url: {created}"))?;
    let put = client.put(upload).body(clip.to_vec()).send().await?;
    if !put.status().is_success() {
        bail!("upload failed: {}", put.text().await?);
    }
    let status_url = format!(
        "{}/jobs/{}/status",
        server.base,
        created["jobId"].as_str().unwrap_or_default()
    );
    let status = loop {
        let r = client
            .get(&status_url)
            .header("X-API-Key", &server.key)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("status answered {}: {}", r.status(), r.text().await?);
        }
        let s: Value = r.json().await?;
        match s["status"].as_str() {
            Some("success") => break s,
            Some("failed" | "canceled") => bail!("job ended: {s}"),
            // As a considerate client would: slowly while the encode is young (each poll costs
            // the server CPU the encode could use), quickly near the end to see completion
            // within ~20 ms.
            _ => {
                let near_end = s["pct"].as_f64().unwrap_or(0.0) >= 80.0;
                tokio::time::sleep(Duration::from_millis(if near_end { 20 } else { 200 })).await
            }
        }
    };
    let bytes = client
        .get(status["downloadUrl"].as_str().context("downloadUrl")?)
        .send()
        .await?
        .bytes()
        .await?;
    Ok((start.elapsed().as_secs_f64(), bytes.len()))
}

/// The same encode with bare ffmpeg and the argv the service's planner builds.
fn bare_run(tools: &Tools, argv_passes: &[Vec<String>], output: &Path) -> Result<(f64, usize)> {
    let start = Instant::now();
    for argv in argv_passes {
        let status = Command::new(&tools.ffmpeg)
            .args(argv)
            .env("SVT_LOG", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("bare ffmpeg failed: {argv:?}");
        }
    }
    Ok((
        start.elapsed().as_secs_f64(),
        std::fs::metadata(output)?.len() as usize,
    ))
}

async fn encode_overhead(
    args: &Args,
    tools: &Tools,
    server: &Server,
    work: &Path,
) -> Result<Vec<(String, f64)>> {
    let caps = Capabilities::detect(tools).await?;
    let info = probe(tools, &args.clip.to_string_lossy(), Duration::from_secs(30)).await?;
    let clip = std::fs::read(&args.clip)?;
    let client = reqwest::Client::new();
    let mut ratios = Vec::new();
    println!(
        "\n== Encode: service end to end vs bare ffmpeg (same argv), median and best of {} runs ==",
        args.runs
    );
    println!(
        "{:<18} {:>10} {:>8} {:>7} {:>10} {:>8} {:>7} {:>10} {:>10}",
        "target",
        "service s",
        "bare s",
        "ratio",
        "best svc",
        "best bare",
        "ratio",
        "service B",
        "bare B"
    );
    for (codec, resolution, container) in [("h264", "720p", "mp4"), ("av1", "480p", "webm")] {
        let spec_json =
            json!({"codec": codec, "resolution": resolution, "fps": 30, "container": container});
        let spec = parse_job_create(&spec_json)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .spec;
        let encoder = choose_encoder(spec.codec, spec.policy, &caps).map_err(anyhow::Error::msg)?;
        let output = work.join(format!("bare.{container}"));
        let passlog = work.join("passlog");
        let plan = plan_encode(&PlanInput {
            info: &info,
            spec: &spec,
            encoder,
            allow_upscale: false,
            input: &args.clip,
            output: &output,
            passlog_prefix: &passlog,
            crf: None,
        })?;
        let (mut service, mut bare) = (Vec::new(), Vec::new());
        let (mut service_bytes, mut bare_bytes) = (0, 0);
        // Warm-up of both paths (page cache, first-run costs), then alternate.
        service_run(&client, server, &spec_json, &clip).await?;
        bare_run(tools, &plan.passes, &output)?;
        for _ in 0..args.runs {
            let (t, b) = bare_run(tools, &plan.passes, &output)?;
            bare.push(t);
            bare_bytes = b;
            let (t, b) = service_run(&client, server, &spec_json, &clip).await?;
            service.push(t);
            service_bytes = b;
        }
        let (s, b) = (median(&service), median(&bare));
        let (bs, bb) = (best(&service), best(&bare));
        let label = format!("{codec} {resolution} {container}");
        println!(
            "{label:<18} {s:>10.3} {b:>8.3} {:>7.3} {bs:>10.3} {bb:>8.3} {:>7.3} {service_bytes:>10} {bare_bytes:>10}",
            s / b,
            bs / bb
        );
        ratios.push((label, s / b));
    }
    Ok(ratios)
}

/// Writes `mib` MiB of incompressible bytes (xorshift) without holding them in memory.
fn write_big_file(path: &Path, mib: u64) -> Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for word in chunk.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all(&chunk)?;
    }
    file.flush()?;
    Ok(())
}

/// Samples a process's resident memory every 10 ms until stopped; keeps the peak.
struct RssSampler {
    peak: Arc<AtomicU64>,
    done: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32, before: u64) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(before));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, d) = (peak.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                if let Some(kib) = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssSampler { peak, done, thread }
    }

    /// The peak RSS in KiB.
    fn stop(self) -> u64 {
        self.done.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

/// Streams `stream_mib` MiB as 64 MiB parts through `/jobs/{id}/stream/…` and joins them;
/// returns the server's RSS growth in MiB.
async fn stream_memory(args: &Args, server: &Server, work: &Path) -> Result<f64> {
    const PART_MIB: u64 = 64;
    let part = work.join("part.bin");
    write_big_file(&part, PART_MIB)?;
    let client = reqwest::Client::new();
    let api = |path: String| format!("{}{path}", server.base);
    let created: Value = client
        .post(api("/jobs".into()))
        .header("X-API-Key", &server.key)
        .json(&json!({"codec": "h264", "resolution": "720p", "fps": 30}))
        .send()
        .await?
        .json()
        .await?;
    let id = created["jobId"].as_str().context("job id")?.to_string();
    let init = client
        .post(api(format!("/jobs/{id}/stream/init")))
        .header("X-API-Key", &server.key)
        .send()
        .await?;
    if !init.status().is_success() {
        bail!("stream init failed: {}", init.text().await?);
    }
    let parts = args.stream_mib.div_ceil(PART_MIB).max(1);
    let before = server.rss_kib();
    let sampler = RssSampler::start(server.child.id(), before);
    let start = Instant::now();
    for n in 1..=parts {
        let file = tokio::fs::File::open(&part).await?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            file,
            256 * 1024,
        ));
        let r = client
            .put(api(format!("/jobs/{id}/stream/chunk/{n}")))
            .header("X-API-Key", &server.key)
            .header("Content-Length", PART_MIB << 20)
            .body(body)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("part {n} failed: {}", r.text().await?);
        }
    }
    let sent = start.elapsed().as_secs_f64();
    let r = client
        .post(api(format!("/jobs/{id}/stream/finalize")))
        .header("X-API-Key", &server.key)
        .send()
        .await?;
    let total = start.elapsed().as_secs_f64();
    let peak = sampler.stop();
    if !r.status().is_success() {
        bail!("finalize failed: {}", r.text().await?);
    }
    let done: Value = r.json().await?;
    let _ = std::fs::remove_file(&part);
    // The joined source is no longer needed: cancel the job so housekeeping deletes it.
    client
        .post(api(format!("/jobs/{id}/cancel")))
        .header("X-API-Key", &server.key)
        .send()
        .await?;
    let growth = peak.saturating_sub(before) as f64 / 1024.0;
    println!(
        "\n== Streaming ingest: {} MiB in {parts} parts of {PART_MIB} MiB, then joined ==",
        parts * PART_MIB
    );
    println!(
        "RSS before {:.1} MiB, peak {:.1} MiB, growth {growth:.1} MiB (target < 64); parts {:.0} MiB/s, join {:.1} s, joined size {} B",
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        (parts * PART_MIB) as f64 / sent,
        total - sent,
        done["size"]
    );
    Ok(growth)
}

async fn upload_memory(args: &Args, server: &Server, work: &Path) -> Result<f64> {
    let big = work.join("big.bin");
    write_big_file(&big, args.upload_mib)?;
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{}/jobs", server.base))
        .header("X-API-Key", &server.key)
        .json(&json!({"codec": "h264", "resolution": "720p", "fps": 30}))
        .send()
        .await?
        .json()
        .await?;
    let upload = created["upload"]["url"]
        .as_str()
        .context("upload url")?
        .to_string();
    let before = server.rss_kib();
    let sampler = RssSampler::start(server.child.id(), before);
    let file = tokio::fs::File::open(&big).await?;
    let len = file.metadata().await?.len();
    let start = Instant::now();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        256 * 1024,
    ));
    let r = client
        .put(&upload)
        .header("Content-Length", len)
        .body(body)
        .send()
        .await?;
    let secs = start.elapsed().as_secs_f64();
    let peak = sampler.stop();
    if !r.status().is_success() {
        bail!("upload failed: {}", r.text().await?);
    }
    let _ = std::fs::remove_file(&big);
    let growth_mib = peak.saturating_sub(before) as f64 / 1024.0;
    println!(
        "\n== Upload: {} MiB streamed to the server ==",
        args.upload_mib
    );
    println!("RSS before {:.1} MiB, peak {:.1} MiB, growth {growth_mib:.1} MiB (target < 64), {:.0} MiB/s", before as f64 / 1024.0, peak as f64 / 1024.0, args.upload_mib as f64 / secs);
    Ok(growth_mib)
}

/// Times one 500-job bulk request, 500 single requests and a replay; returns the bulk median.
async fn bulk_create(args: &Args, server: &Server) -> Result<f64> {
    println!("\n== Bulk creation: 500 jobs ==");
    let client = reqwest::Client::new();
    let item = |i: usize| json!({"codec": "h264", "resolution": "720p", "fps": 30, "externalId": format!("bench-{i}"), "metadata": {"i": i}});
    let mut bulk_times = Vec::new();
    let mut single_times = Vec::new();
    for run in 0..args.runs.max(1) {
        let jobs: Vec<Value> = (0..500).map(item).collect();
        let start = Instant::now();
        let r = client
            .post(format!("{}/jobs/bulk", server.base))
            .header("X-API-Key", &server.key)
            .header("Idempotency-Key", format!("bench-bulk-{run}"))
            .json(&json!({"jobs": jobs}))
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        bulk_times.push(start.elapsed().as_secs_f64());
        if !status.is_success() || body["totalJobs"] != 500 {
            bail!("bulk create failed: {status} {body}");
        }
        let start = Instant::now();
        for i in 0..500 {
            let r = client
                .post(format!("{}/jobs", server.base))
                .header("X-API-Key", &server.key)
                .json(&item(i))
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("single create failed: {}", r.text().await?);
            }
        }
        single_times.push(start.elapsed().as_secs_f64());
    }
    let jobs: Vec<Value> = (0..500).map(item).collect();
    let start = Instant::now();
    let r = client
        .post(format!("{}/jobs/bulk", server.base))
        .header("X-API-Key", &server.key)
        .header("Idempotency-Key", "bench-bulk-0")
        .json(&json!({"jobs": jobs}))
        .send()
        .await?;
    let replayed = r.headers().contains_key("idempotent-replayed");
    let _ = r.bytes().await?;
    let replay = start.elapsed().as_secs_f64();
    let (bulk, single) = (median(&bulk_times), median(&single_times));
    println!(
        "one bulk request      median {:.0} ms over {} runs (target < 1000 ms)",
        bulk * 1000.0,
        bulk_times.len()
    );
    println!(
        "500 single requests   median {:.0} ms  (bulk is {:.1}x faster)",
        single * 1000.0,
        single / bulk
    );
    println!(
        "idempotent replay     {:.0} ms (replayed: {replayed})",
        replay * 1000.0
    );
    Ok(bulk)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let tools = Tools {
        ffmpeg: std::env::var_os("CONVERTRILO_FFMPEG")
            .map(PathBuf::from)
            .unwrap_or_else(|| "ffmpeg".into()),
        ffprobe: std::env::var_os("CONVERTRILO_FFPROBE")
            .map(PathBuf::from)
            .unwrap_or_else(|| "ffprobe".into()),
    };
    let work = tempfile::tempdir()?;
    let server = Server::start(&args.server, &work.path().join("data"), &tools)?;
    let ratios = if args.runs("encode") {
        encode_overhead(&args, &tools, &server, work.path()).await?
    } else {
        Vec::new()
    };
    let growth = if args.runs("upload") {
        Some(upload_memory(&args, &server, work.path()).await?)
    } else {
        None
    };
    let stream_growth = if args.runs("stream") {
        Some(stream_memory(&args, &server, work.path()).await?)
    } else {
        None
    };
    let bulk = if args.runs("bulk") {
        Some(bulk_create(&args, &server).await?)
    } else {
        None
    };
    drop(server);
    let queue = if args.runs("queue") {
        Some(queue_bench(&args, &tools, work.path()).await?)
    } else {
        None
    };
    let vmaf_rows = if args.runs("vmaf") {
        Some(vmaf::run(&tools, &args.clip, work.path()).await?)
    } else {
        None
    };
    println!("\n== Summary ==");
    for (label, ratio) in &ratios {
        println!(
            "{label:<22} service/bare = {ratio:.3}  (target <= 1.10: {})",
            if *ratio <= 1.10 { "met" } else { "MISSED" }
        );
    }
    let met = |ok: bool| if ok { "met" } else { "MISSED" };
    if let Some(growth) = growth {
        println!(
            "upload RSS growth       {growth:.1} MiB  (target < 64: {})",
            met(growth < 64.0)
        );
    }
    if let Some(g) = stream_growth {
        println!(
            "stream RSS growth       {g:.1} MiB  (target < 64: {})",
            met(g < 64.0)
        );
    }
    if let Some(bulk) = bulk {
        println!(
            "bulk of 500 jobs        {:.0} ms  (target < 1000: {})",
            bulk * 1000.0,
            met(bulk < 1.0)
        );
    }
    if let Some(rows) = &vmaf_rows {
        for line in vmaf::summarize(rows) {
            println!("{line}");
        }
    }
    if let Some(rows) = queue {
        for r in rows {
            println!(
                "queue on {:<10}     {:>7.0} claims/s; start latency p50 {:.0} ms, p99 {:.0} ms  (target p50 < 50: {})",
                r.backend,
                r.claims_per_sec,
                r.p50,
                r.p99,
                met(r.p50 < 50.0)
            );
        }
    }
    Ok(())
}

struct QueueRow {
    backend: &'static str,
    claims_per_sec: f64,
    p50: f64,
    p99: f64,
}

async fn queue_bench(args: &Args, tools: &Tools, work: &Path) -> Result<Vec<QueueRow>> {
    println!(
        "\n== Queue: {} claimers on {} queued jobs; confirm -> running with idle workers ==",
        queue::CLAIMERS,
        queue::QUEUED
    );
    let mut rows = Vec::new();
    let sqlite = work.join(format!("claims-{}.db", std::process::id()));
    let cps = queue::claims_per_second(&format!("sqlite://{}", sqlite.display())).await?;
    let lat = queue::start_latency(&args.server, tools, work, None).await?;
    rows.push(QueueRow {
        backend: "SQLite",
        claims_per_sec: cps,
        p50: queue::percentile(&lat, 50.0),
        p99: queue::percentile(&lat, 99.0),
    });
    let admin = std::env::var("CONVERTRILO_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    match queue::PgScratch::create(&admin).await {
        Ok(db) => {
            let cps = queue::claims_per_second(&db.url).await;
            db.drop_now().await?;
            let db = queue::PgScratch::create(&admin).await?;
            let lat = queue::start_latency(&args.server, tools, work, Some(&db.url)).await;
            db.drop_now().await?;
            let lat = lat?;
            rows.push(QueueRow {
                backend: "PostgreSQL",
                claims_per_sec: cps?,
                p50: queue::percentile(&lat, 50.0),
                p99: queue::percentile(&lat, 99.0),
            });
        }
        Err(e) => println!("PostgreSQL: skipped ({e:#}); set CONVERTRILO_BENCH_DATABASE_URL"),
    }
    println!(
        "{:<12} {:>12} {:>10} {:>10}",
        "backend", "claims/s", "p50 ms", "p99 ms"
    );
    for r in &rows {
        println!(
            "{:<12} {:>12.0} {:>10.0} {:>10.0}",
            r.backend, r.claims_per_sec, r.p50, r.p99
        );
    }
    Ok(rows)
}
