//! Runs one claimed job: fetch the input (from the store, a URL, or the customer's S3 bucket
//! or Drive), probe, plan, encode with progress (a VMAF-targeted job searches its CRF first
//! and measures the result: `convertrilo_media::vmaf`), deliver the output (see `customer`),
//! and record the outcome. A heartbeat task keeps the lease and publishes progress;
//! if the job is canceled (here or from another process) ffmpeg is killed and the scratch
//! directory removed.

use super::{customer, fetch};
use crate::state::AppState;
use convertrilo_core::{neu::total_price, Neu};
use convertrilo_db::{
    Backoff, HandBack, HandedBack, Heartbeat, Ingest, Job, Outcome, Progress, Reservation,
};
use convertrilo_media::{
    choose_encoder, plan_encode, probe, run_encode,
    vmaf::{optimize, VmafJob},
    MediaError, MediaInfo, PlanInput, RunOptions, ScratchRoot, VideoEncoder,
};
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;

/// How a job attempt ended, when it did not succeed.
pub(super) enum Failure {
    /// Canceled by the user, lost its lease, or the process is shutting down.
    Stopped,
    /// The input or request is at fault (or the encode failed for good): fail the job.
    Fatal(String),
    /// Our side had a passing problem: give the job back to the queue.
    Retry(String),
}

type SharedProgress = Arc<Mutex<Progress>>;

fn set_progress(p: &SharedProgress, f: impl FnOnce(&mut Progress)) {
    f(&mut p.lock().unwrap_or_else(|e| e.into_inner()));
}

pub(super) async fn run_job(
    state: &AppState,
    scratch: &ScratchRoot,
    worker_id: &str,
    job: Job,
    claimed_at: Instant,
    shutdown: &CancellationToken,
) {
    let id = job.id;
    let cancel = state.running.register(id, shutdown);
    // The encoder depends only on the spec and this machine: show it from the first beat.
    let encoder = choose_encoder(job.spec.codec, job.spec.policy, &state.caps)
        .ok()
        .map(|e| e.ffmpeg_name().to_string());
    let progress: SharedProgress = Arc::new(Mutex::new(Progress {
        pct: Some(0.0),
        encoder,
    }));
    let heartbeat_done = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat_loop(
        state.clone(),
        job.clone(),
        worker_id.to_string(),
        progress.clone(),
        cancel.clone(),
        heartbeat_done.clone(),
        claimed_at,
    ));

    tracing::info!(codec = %job.spec.codec, resolution = %job.spec.resolution, "job started");
    let result = execute(state, scratch, &job, &cancel, &progress).await;
    heartbeat_done.cancel();
    let _ = heartbeat.await;
    state.running.remove(id);

    let jobs = &state.repos.jobs;
    let recorded = match result {
        Ok(outcome) => jobs.finish(id, worker_id, &outcome).await.map(|held| {
            if held {
                tracing::info!("job succeeded");
            } else {
                tracing::info!("job finished after it was canceled; its output is discarded");
            }
        }),
        Err(Failure::Stopped) if shutdown.is_cancelled() => jobs
            .release(id, worker_id, HandBack::Shutdown)
            .await
            .map(|_| tracing::info!("job handed back: shutting down")),
        Err(Failure::Stopped) => {
            tracing::info!("job stopped: canceled or taken over");
            Ok(())
        }
        Err(Failure::Fatal(message)) => {
            tracing::warn!(reason = %message, "job failed");
            jobs.finish(id, worker_id, &Outcome::Failed { message })
                .await
                .map(|_| ())
        }
        Err(Failure::Retry(reason)) => jobs
            .release(
                id,
                worker_id,
                HandBack::PassingError {
                    reason: &reason,
                    backoff: Backoff::PASSING_ERRORS,
                },
            )
            .await
            .map(|back| match back {
                HandedBack::Queued { after } => tracing::warn!(
                    %reason, retry_in = ?after, "job handed back to the queue after a passing error"
                ),
                HandedBack::GivenUp => tracing::warn!(
                    %reason, "job given up: passing errors kept stopping it"
                ),
                HandedBack::NotHeld => {}
            }),
    };
    if let Err(e) = recorded {
        // The lease will expire and the job will be claimed again.
        tracing::error!(error = %e, "could not record the job's outcome");
    }
}

async fn heartbeat_loop(
    state: AppState,
    job: Job,
    worker_id: String,
    progress: SharedProgress,
    cancel: CancellationToken,
    done: CancellationToken,
    claimed_at: Instant,
) {
    let lease = Duration::from_secs(state.config.lease_secs.max(1));
    // Often enough for lively progress and prompt cross-process cancels, and at least three
    // beats per lease so one slow write never loses it.
    let every = Duration::from_millis(1000).min(lease / 3);
    // From the claim on, the lease holds only as long as renewals land.
    let mut guard = LeaseGuard::new(lease, claimed_at);
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            tokio::select! {
                _ = done.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
        let snapshot = progress.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let sent = Instant::now();
        // A renewal that cannot land before the lease runs out is of no use: wait no longer
        // (the pool would otherwise keep this beat waiting for a connection for 15 s).
        let beat = state
            .repos
            .jobs
            .heartbeat(job.id, &worker_id, lease, &snapshot);
        match tokio::time::timeout(guard.left(sent), beat).await {
            Ok(Ok(Heartbeat::Continue)) => guard.renewed(sent),
            Ok(Ok(Heartbeat::Lost)) => {
                tracing::info!("job canceled or lease lost; stopping it");
                cancel.cancel();
                return;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat failed; will retry"),
            Err(_) => tracing::warn!("heartbeat timed out; will retry"),
        }
        if guard.expired(Instant::now()) {
            // Past this point another worker may claim the job: this one stops, so that only
            // one of them encodes and delivers it (a customer bucket would otherwise get it
            // twice), and the claimant's attempt is the one that counts.
            tracing::warn!(
                lease_secs = lease.as_secs(),
                "lease expired without a renewal reaching the database; stopping the job"
            );
            cancel.cancel();
            return;
        }
    }
}

/// How long this worker may still assume it holds a job's lease. Measured from when the claim
/// and each successful renewal were *sent*: the database set the expiry no earlier than that,
/// so the local deadline is never later than the real one.
struct LeaseGuard {
    lease: Duration,
    renewed_at: Instant,
}

impl LeaseGuard {
    fn new(lease: Duration, claimed_at: Instant) -> Self {
        Self {
            lease,
            renewed_at: claimed_at,
        }
    }

    fn renewed(&mut self, sent: Instant) {
        self.renewed_at = self.renewed_at.max(sent);
    }

    fn left(&self, now: Instant) -> Duration {
        self.lease
            .saturating_sub(now.saturating_duration_since(self.renewed_at))
    }

    fn expired(&self, now: Instant) -> bool {
        self.left(now).is_zero()
    }
}

/// Tops the job's reservation up to `amount`; a job the account cannot cover fails before
/// (or instead of) being delivered, and nothing is charged.
async fn hold(state: &AppState, job: &Job, amount: Neu) -> Result<(), Failure> {
    if amount <= Neu::ZERO {
        return Ok(());
    }
    match state.repos.ledger.reserve_for_job(job.user_id, job.id, amount).await {
        Ok(Reservation::Reserved { .. }) => Ok(()),
        Ok(Reservation::Insufficient { required, available }) => Err(Failure::Fatal(format!(
            "the account has too few tokens for this encode: it needs {required} NEU more and {available} NEU are available; add tokens and create the job again"
        ))),
        Ok(Reservation::Finished(_)) => Err(Failure::Stopped),
        Err(e) => Err(Failure::Retry(format!("ledger: {e}"))),
    }
}

/// The probe taken at confirm, when it still describes the input: an upload cannot change
/// once the job is queued. A URL source is downloaded afresh and so probed again.
fn stored_probe(job: &Job) -> Option<MediaInfo> {
    match job.ingest {
        Ingest::Upload => job
            .media_info
            .clone()
            .and_then(|v| serde_json::from_value(v).ok()),
        // Fetched afresh for each attempt, so probed again.
        Ingest::Url | Ingest::S3 | Ingest::GoogleDrive => None,
    }
}

fn media_failure(e: MediaError) -> Failure {
    if e.is_canceled() {
        Failure::Stopped
    } else {
        tracing::warn!(error = %e, "media step failed");
        Failure::Fatal(e.user_message())
    }
}

async fn execute(
    state: &AppState,
    scratch: &ScratchRoot,
    job: &Job,
    cancel: &CancellationToken,
    progress: &SharedProgress,
) -> Result<Outcome, Failure> {
    let dir = scratch
        .job_dir(&job.id.to_string())
        .map_err(|e| Failure::Retry(format!("scratch directory: {e}")))?;
    let mut secrets = crate::jobs::load_secrets(state, job)
        .await
        .map_err(|e| Failure::Fatal(e.message))?;
    let input = match job.ingest {
        Ingest::Upload => match state.store.local_path(&job.input_key) {
            Some(path) if path.is_file() => path,
            Some(_) => return Err(missing_upload()),
            // A remote store: ffmpeg reads a local copy (seeking over HTTP would be slow).
            None => {
                let dest = dir.path().join("source");
                tokio::select! {
                    r = fetch_stored(state, &job.input_key, &dest) => {
                        let bytes = r?;
                        tracing::info!(bytes, "source downloaded from the object store");
                    }
                    _ = cancel.cancelled() => return Err(Failure::Stopped),
                }
                dest
            }
        },
        Ingest::Url => {
            let url = job
                .source_url
                .as_deref()
                .ok_or_else(|| Failure::Fatal("the job has no source URL".into()))?;
            let dest = dir.path().join("source");
            tokio::select! {
                r = fetch::download(&state.outbound, url, &dest, crate::jobs::source_limit(state, job)) => match r {
                    Ok(bytes) => tracing::info!(bytes, "source downloaded"),
                    Err(e) if e.is_transient() => return Err(Failure::Retry(e.to_string())),
                    Err(e) => return Err(Failure::Fatal(e.to_string())),
                },
                _ = cancel.cancelled() => return Err(Failure::Stopped),
            }
            dest
        }
        Ingest::S3 | Ingest::GoogleDrive => {
            let dest = dir.path().join("source");
            let limit = crate::jobs::source_limit(state, job);
            tokio::select! {
                r = customer::fetch(state, job, &mut secrets, &dest, limit) => {
                    // Not inside the log macro: its fields are not evaluated when the level
                    // is off, and the error would go unseen.
                    let bytes = r?;
                    tracing::info!(bytes, "source downloaded");
                }
                _ = cancel.cancelled() => return Err(Failure::Stopped),
            }
            dest
        }
    };
    let info = match stored_probe(job) {
        Some(info) => info,
        None => {
            let timeout = Duration::from_secs(state.config.probe_timeout_secs);
            probe(&state.tools, &input.to_string_lossy(), timeout)
                .await
                .map_err(media_failure)?
        }
    };
    // A free public job's limits hold for the bytes actually fetched, not only for what was
    // probed at confirm: a URL may serve something longer by now.
    if job.kind == convertrilo_db::JobKind::Public {
        let seconds = info.duration_sec.unwrap_or(0.0);
        let cap = state.config.public_max_duration_secs as f64;
        if seconds > cap {
            return Err(Failure::Fatal(format!(
                "the source is {seconds:.1} s long; public jobs take at most {cap:.0} s"
            )));
        }
    }
    // Price what was actually fetched and probed, and hold that much before any work: the
    // estimate taken at confirm may be missing (its probe failed) or describe other bytes.
    let per_minute = state
        .config
        .pricing
        .per_minute_times(&job.spec, job.price_factor);
    hold(
        state,
        job,
        total_price(per_minute, info.duration_sec.unwrap_or(0.0)),
    )
    .await?;
    let encoder =
        choose_encoder(job.spec.codec, job.spec.policy, &state.caps).map_err(Failure::Fatal)?;
    set_progress(progress, |p| {
        p.encoder = Some(encoder.ffmpeg_name().to_string())
    });

    let output = dir
        .path()
        .join(format!("output.{}", job.spec.container.extension()));
    let options = RunOptions {
        timeout: Some(Duration::from_secs(state.config.encode_timeout_secs)),
        cancel: Some(cancel.clone()),
        env: Vec::new(),
    };
    let duration = info.duration_sec.unwrap_or(0.0);
    let mut on_progress =
        |fraction: f64| set_progress(progress, |p| p.pct = Some(fraction * 100.0));
    let (report, vmaf) = match job.spec.effective_vmaf_target() {
        // A quality target: sample, search, encode at the chosen CRF and measure (progress
        // covers all of it).
        Some(target) => {
            tracing::info!(
                target,
                encoder = encoder.ffmpeg_name(),
                "encoding to a VMAF target"
            );
            let vmaf_job = VmafJob {
                info: &info,
                spec: &job.spec,
                encoder,
                allow_upscale: state.config.allow_upscale,
                input: &input,
                output: &output,
                dir: dir.path(),
                target,
                has_libx264: state.caps.cpu_encoders.contains(&VideoEncoder::Libx264),
            };
            let done = optimize(&state.tools, &vmaf_job, options, &mut on_progress)
                .await
                .map_err(media_failure)?;
            tracing::info!(
                crf = done.report.crf,
                vmaf = done.report.mean,
                met = done.report.target_met,
                sample_encodes = done.report.sample_encodes,
                "VMAF-targeted encode finished"
            );
            (done.encode, Some(done.report))
        }
        None => {
            let passlog = dir.path().join("passlog");
            let plan = plan_encode(&PlanInput {
                info: &info,
                spec: &job.spec,
                encoder,
                allow_upscale: state.config.allow_upscale,
                input: &input,
                output: &output,
                passlog_prefix: &passlog,
                crf: None,
            })
            .map_err(media_failure)?;
            tracing::info!(
                width = plan.width,
                height = plan.height,
                encoder = encoder.ffmpeg_name(),
                passes = plan.passes.len(),
                "encoding"
            );
            let report = run_encode(&state.tools, &plan, duration, options, &mut on_progress)
                .await
                .map_err(media_failure)?;
            (report, None)
        }
    };
    // A header can understate the length; a public job's cap holds for what was encoded.
    if job.kind == convertrilo_db::JobKind::Public {
        let encoded = report.output_duration_sec.unwrap_or(duration);
        let cap = state.config.public_max_duration_secs as f64;
        if encoded > cap + 1.0 {
            return Err(Failure::Fatal(format!(
                "the source is longer than its header declared ({encoded:.1} s encoded); public jobs take at most {cap:.0} s"
            )));
        }
    }
    // The price of what was really encoded. A source whose header understates its length
    // must still be paid for in full before the result is handed over.
    let cost = total_price(per_minute, report.output_duration_sec.unwrap_or(duration));
    hold(state, job, cost).await.map_err(|f| match f {
        Failure::Fatal(why) => Failure::Fatal(format!(
            "the source is longer than its header declared ({:.1} s encoded, {duration:.1} s declared); {why}",
            report.output_duration_sec.unwrap_or(duration)
        )),
        other => other,
    })?;
    // ffmpeg exits non-zero on any write error; an empty file is still worth catching.
    if !tokio::fs::metadata(&output)
        .await
        .is_ok_and(|m| m.len() > 0)
    {
        return Err(Failure::Fatal(
            "ffmpeg finished but wrote no output; the source may hold no decodable frames".into(),
        ));
    }
    let size = tokio::select! {
        r = customer::deliver(state, job, &mut secrets, &output) => r?,
        _ = cancel.cancelled() => return Err(Failure::Stopped),
    };
    Ok(Outcome::Success {
        output_size: size as i64,
        duration_sec: report.output_duration_sec,
        cost,
        vmaf,
    })
}

/// The job's recorded upload is not in the store. The bytes were accepted, so this is our
/// side's problem (a worker on a stale copy of the store, an object restored late): hand the
/// job back for another try, or another worker, rather than blame the customer.
fn missing_upload() -> Failure {
    Failure::Retry("the uploaded source is missing from the object store".into())
}

/// Copies an object of the (remote) object store into `dest`.
async fn fetch_stored(state: &AppState, key: &str, dest: &std::path::Path) -> Result<u64, Failure> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let mut body = match state.store.get_stream(key).await {
        Ok(body) => body,
        Err(convertrilo_storage::StorageError::NotFound(_)) => return Err(missing_upload()),
        Err(e) => return Err(Failure::Retry(e.to_string())),
    };
    let io = |e: std::io::Error| Failure::Retry(format!("copying the source: {e}"));
    let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
    let mut written = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(io)?;
        written += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::LeaseGuard;
    use std::time::{Duration, Instant};

    #[test]
    fn the_lease_runs_out_a_lease_after_the_last_renewal_was_sent() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut g = LeaseGuard::new(s(30), t0);
        assert_eq!(g.left(t0 + s(10)), s(20));
        assert!(!g.expired(t0 + s(29)) && g.expired(t0 + s(30)));
        g.renewed(t0 + s(20));
        assert_eq!(g.left(t0 + s(40)), s(10));
        assert!(!g.expired(t0 + s(49)) && g.expired(t0 + s(50)));
        // A late answer to an older renewal does not move the deadline back.
        g.renewed(t0 + s(5));
        assert!(!g.expired(t0 + s(49)));
    }
}
