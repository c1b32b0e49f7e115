//! 5. The queue on SQLite and PostgreSQL side by side:
//!    - claims per second: 1,000 queued jobs drained by 8 concurrent claimers, measured at the
//!      queue (the repository's `claim`, no encoding), each job handed out exactly once;
//!    - job-start latency: confirm → `running` with idle workers, through a spawned service
//!      (SQLite: `serve` with in-process workers; PostgreSQL: `serve --workers 0` plus two
//!      `convertrilo worker` processes, woken by LISTEN/NOTIFY), from the database's own
//!      `queued_at` and `started_at` stamps. Target p50 < 50 ms.

use anyhow::{bail, Context, Result};
use convertrilo_core::{pricing::Factor, spec::*, time::now_ms, JobId, JobStatus, Neu, UserId};
use convertrilo_db::*;
use convertrilo_media::Tools;
use serde_json::json;
use sqlx::Connection;
use std::{
    collections::HashSet,
    path::Path,
    time::{Duration, Instant},
};

pub const QUEUED: usize = 1000;
pub const CLAIMERS: usize = 8;
const LATENCY_SAMPLES: usize = 25;

/// A fresh PostgreSQL database for one measurement, dropped afterwards.
pub struct PgScratch {
    admin: String,
    name: String,
    pub url: String,
}

impl PgScratch {
    pub async fn create(admin: &str) -> Result<PgScratch> {
        let name = format!("convertrilo_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .with_context(|| format!("connecting to {admin}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        let mut url = url::Url::parse(admin)?;
        url.set_path(&name);
        Ok(PgScratch {
            admin: admin.into(),
            name,
            url: url.to_string(),
        })
    }

    pub async fn drop_now(self) -> Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.admin).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await?;
        Ok(())
    }
}

fn queued_job(owner: UserId) -> Job {
    let id = JobId::new();
    let now = now_ms();
    Job {
        id,
        user_id: owner,
        status: JobStatus::Queued,
        spec: EncodeSpec::new(Codec::H264, Resolution::P720, 30),
        ingest: Ingest::Upload,
        source_url: None,
        input_key: format!("inputs/{id}"),
        input_size: None,
        output_key: format!("outputs/{id}"),
        output_size: None,
        original_filename: None,
        source_filename: None,
        output_filename: "bench.mp4".into(),
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
        created_at: now,
        queued_at: Some(now),
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

/// Queues `QUEUED` jobs, then drains them with `CLAIMERS` concurrent claimers; claims/s.
pub async fn claims_per_second(url: &str) -> Result<f64> {
    let repos = connect(url).await?;
    let owner = User {
        id: UserId::new(),
        email: format!("bench-{}@example.com", uuid::Uuid::new_v4().simple()),
        password_hash: "x".into(),
        is_admin: false,
        banned: false,
        created_at: now_ms(),
    };
    repos
        .accounts
        .create_user(&owner, Some(Neu::from_whole(1)), None)
        .await?;
    for chunk in (0..QUEUED).collect::<Vec<_>>().chunks(250) {
        let batch: Vec<NewJob> = chunk
            .iter()
            .map(|_| NewJob {
                job: queued_job(owner.id),
                reserve: None,
                secret: None,
            })
            .collect();
        repos.jobs.insert_jobs(&batch, None).await?;
    }
    let start = Instant::now();
    let claimers: Vec<_> = (0..CLAIMERS)
        .map(|n| {
            let jobs = repos.jobs.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let owner = slot_owner("bench", n);
                while let Some(j) = jobs
                    .claim(&owner, Duration::from_secs(300), 3, &ClaimFilter::any())
                    .await?
                {
                    got.push(j.id);
                }
                Ok::<_, DbError>(got)
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for c in claimers {
        for id in c.await?? {
            if !seen.insert(id) {
                bail!("job {id} was handed out twice");
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    if seen.len() != QUEUED {
        bail!("{} of {QUEUED} jobs were claimed", seen.len());
    }
    Ok(QUEUED as f64 / elapsed)
}

/// Confirm → running latencies (ms) through a spawned service on `database_url`.
pub async fn start_latency(
    bin: &Path,
    tools: &Tools,
    work: &Path,
    database_url: Option<&str>,
) -> Result<Vec<f64>> {
    let data = work.join(format!("latency-{}", uuid::Uuid::new_v4().simple()));
    let clip = work.join("latency-clip.mp4");
    if !clip.is_file() {
        let ok = std::process::Command::new(&tools.ffmpeg)
            .args([
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=s=320x240:r=30:d=1",
            ])
            .args(["-c:v", "libx264", "-preset", "ultrafast"])
            .arg(&clip)
            .status()?;
        if !ok.success() {
            bail!("could not make the latency clip");
        }
    }
    let mut env: Vec<(&str, &str)> = Vec::new();
    if let Some(url) = database_url {
        env.push(("CONVERTRILO_DATABASE_URL", url));
    }
    // On PostgreSQL the workers are separate processes, as on other machines; they share the
    // API's data directory only because they share this machine (its local object store).
    let workers_in_process = if database_url.is_some() { 0 } else { 2 };
    let server = crate::Server::start_with(bin, &data, tools, workers_in_process, &env)?;
    let mut workers = Vec::new();
    if database_url.is_some() {
        for _ in 0..2 {
            workers.push(crate::Server::worker(bin, &data, tools, &env)?);
        }
    }
    let repos = connect(
        &database_url
            .map(String::from)
            .unwrap_or_else(|| format!("sqlite://{}", data.join("convertrilo.db").display())),
    )
    .await?;
    let client = reqwest::Client::new();
    let bytes = std::fs::read(&clip)?;
    let mut latencies = Vec::new();
    for _ in 0..LATENCY_SAMPLES {
        let created: serde_json::Value = client
            .post(format!("{}/jobs", server.base))
            .header("X-API-Key", &server.key)
            .json(&json!({"codec": "h264", "resolution": "480p", "fps": 30}))
            .send()
            .await?
            .json()
            .await?;
        let id: JobId = created["jobId"]
            .as_str()
            .context("no jobId")?
            .parse()
            .map_err(|_| anyhow::anyhow!("bad job id"))?;
        let url = created["upload"]["url"].as_str().context("no upload url")?;
        client.put(url).body(bytes.clone()).send().await?;
        let r = client
            .post(format!("{}/jobs/{id}/confirm", server.base))
            .header("X-API-Key", &server.key)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("confirm failed: {}", r.text().await?);
        }
        // Wait for the end, so the workers are idle again before the next sample.
        let deadline = Instant::now() + Duration::from_secs(60);
        let job = loop {
            let j = repos.jobs.job(id, None).await?.context("job vanished")?;
            if j.status.is_terminal() {
                break j;
            }
            if Instant::now() > deadline {
                bail!("job {id} did not finish");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let (Some(queued), Some(started)) = (job.queued_at, job.started_at) else {
            bail!("job {id} has no queued/started stamps: {:?}", job.status);
        };
        latencies.push((started - queued) as f64);
    }
    drop(workers);
    drop(server);
    Ok(latencies)
}

/// The `p`th percentile (0–100) by nearest rank.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}
