//! One VMAF-targeted encode from start to finish: the reel, the search, the final encode at
//! the chosen CRF, its measurement against the source, and at most one correction.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use convertrilo_core::vmaf::VmafReport;
use convertrilo_core::EncodeSpec;

use super::encode_sample;
use super::samples::{build_reel, choose_segments, keyframes, remaining, ReelCodec, Segment};
use super::score::{model_for, run_score, score_args, Score, ScoreOptions};
use super::search::{ylog, Choice, Probe, QualityScale, Search, Step};
use crate::encode::{run_encode, EncodeReport};
use crate::error::MediaError;
use crate::plan::{default_crf, plan_encode, EncodePlan, PlanInput, VideoEncoder};
use crate::probe::MediaInfo;
use crate::process::{ProcessError, RunOptions, Tools};

/// The search aims this far above the target: the file lands on the target rather than just
/// under it, while staying close (accuracy is the distance to the target either way).
pub const AIM_MARGIN: f64 = 0.15;
/// A whole file that scores this far from the goal (or misses the target) gets the one
/// correction.
const CORRECT_BEYOND: f64 = 1.0;
/// Frames scored per probe at most (a longer reel is scored every n-th frame).
const PROBE_FRAMES: f64 = 480.0;
/// Frames scored in the final measurement at most (a longer file: every n-th frame). Enough
/// for the mean and the 5th percentile to settle; a feature-length film is not scored whole.
const FINAL_FRAMES: f64 = 3000.0;
/// The keyframe scan is a convenience; it never holds a job up for long.
const KEYFRAME_SCAN_LIMIT: Duration = Duration::from_secs(60);

/// Where each phase ends on the job's 0–1 progress scale: the search is cheap next to the
/// final encode and its measurement.
const REEL_END: f64 = 0.04;
const SEARCH_END: f64 = 0.30;
const ENCODE_END: f64 = 0.78;
const SCORE_END: f64 = 0.92;

/// Everything one VMAF-targeted encode needs.
#[derive(Debug, Clone)]
pub struct VmafJob<'a> {
    pub info: &'a MediaInfo,
    pub spec: &'a EncodeSpec,
    pub encoder: VideoEncoder,
    pub allow_upscale: bool,
    pub input: &'a Path,
    pub output: &'a Path,
    /// The job's scratch directory: reel, sample encodes and logs go here.
    pub dir: &'a Path,
    pub target: f64,
    /// Whether this ffmpeg has libx264 (the reel's fast lossless codec).
    pub has_libx264: bool,
}

/// What the encode came to.
#[derive(Debug, Clone)]
pub struct VmafOutcome {
    pub encode: EncodeReport,
    pub plan: EncodePlan,
    pub report: VmafReport,
    /// Every probe, by CRF.
    pub probes: Vec<Probe>,
    pub choice: Choice,
    pub segments: Vec<Segment>,
    /// Seconds of video in the reel (what each probe encodes and scores).
    pub reel_secs: f64,
    /// Wall time before the final encode: keyframe scan, reel and probes.
    pub search_secs: f64,
}

/// Keeps reported progress monotonic and below 1.0 until the very end.
struct Meter<'a> {
    reported: f64,
    sink: &'a mut (dyn FnMut(f64) + Send),
}

impl<'a> Meter<'a> {
    fn set(&mut self, fraction: f64) {
        let f = fraction.min(0.999);
        if f > self.reported {
            self.reported = f;
            (self.sink)(f);
        }
    }

    fn span(&mut self, from: f64, to: f64) -> impl FnMut(f64) + Send + use<'_, 'a> {
        move |f: f64| self.set(from + (to - from) * f.clamp(0.0, 1.0))
    }
}

/// Probe `k`'s share of the search's progress: halves of what is left, roughly, so any
/// number of probes fits.
fn probe_span(k: usize) -> (f64, f64) {
    let at = |k: usize| REEL_END + (SEARCH_END - REEL_END) * (1.0 - 0.6f64.powi(k as i32));
    (at(k), at(k + 1))
}

/// libvmaf compares alike frames; NVENC's P010 is compared (and the reel stored) as planar.
fn compare_format(pix_fmt: &'static str) -> &'static str {
    if pix_fmt == "p010le" {
        "yuv420p10le"
    } else {
        pix_fmt
    }
}

/// Runs the whole VMAF-targeted encode of `job` into `job.output`. `opts.timeout` bounds all
/// of it; `opts.cancel` stops whichever ffmpeg is running. Progress covers every phase.
pub async fn optimize(
    tools: &Tools,
    job: &VmafJob<'_>,
    opts: RunOptions,
    on_progress: &mut (dyn FnMut(f64) + Send),
) -> Result<VmafOutcome, MediaError> {
    let started = Instant::now();
    let deadline = opts.timeout.map(|t| started + t);
    let step = || RunOptions {
        timeout: remaining(deadline),
        cancel: opts.cancel.clone(),
        env: opts.env.clone(),
    };
    let mut meter = Meter {
        reported: 0.0,
        sink: on_progress,
    };
    let video = job
        .info
        .video
        .as_ref()
        .ok_or_else(|| MediaError::NotAVideo("the file has no video stream".to_string()))?;
    let passlog = job.dir.join("passlog");
    let plan_at = |crf: f64, output: &Path| {
        plan_encode(&PlanInput {
            info: job.info,
            spec: job.spec,
            encoder: job.encoder,
            allow_upscale: job.allow_upscale,
            input: job.input,
            output,
            passlog_prefix: &passlog,
            crf: Some(crf),
        })
    };
    let scale = QualityScale::of(job.encoder);
    let default = default_crf(job.encoder, job.spec.quality_or_default());
    let first = plan_at(default, job.output)?;
    let fmt = compare_format(first.pix_fmt);
    let chain = first.filter.replace("format=p010le", "format=yuv420p10le");
    let model = model_for(first.width, first.height);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let out_fps = first
        .fps_cap_applied
        .map(f64::from)
        .or(video.fps)
        .filter(|f| *f > 0.0)
        .unwrap_or(30.0);
    let duration = job.info.duration_sec.unwrap_or(0.0);

    // 1. The reel.
    let mut segments = choose_segments(duration, &[]);
    if segments.len() > 1 {
        let scan = RunOptions {
            timeout: remaining(deadline).map(|r| r.min(KEYFRAME_SCAN_LIMIT)),
            ..step()
        };
        let keys = keyframes(tools, job.input, video.index, scan).await;
        if opts.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
            return Err(MediaError::Process(ProcessError::Canceled {
                command: "ffprobe (keyframe scan)".into(),
            }));
        }
        segments = choose_segments(duration, &keys);
    }
    let codec = ReelCodec::pick(job.has_libx264, fmt);
    let reel = build_reel(
        tools,
        job.input,
        video.index,
        &chain,
        segments,
        codec,
        job.dir,
        step(),
    )
    .await?;
    meter.set(REEL_END);

    // 2. The search.
    let goal = job.target + AIM_MARGIN;
    let mut search = Search::new(scale, goal, default);
    let sample = job.dir.join("vmaf-sample.mkv");
    let log = job.dir.join("vmaf-log.json");
    let reel_frames = reel.duration * out_fps;
    let score_opts = |subsample: f64| ScoreOptions {
        model,
        pix_fmt: fmt,
        fps: out_fps,
        subsample: subsample.ceil().max(1.0) as u32,
        threads,
        log_path: log.clone(),
    };
    let probe_opts = score_opts(reel_frames / PROBE_FRAMES);
    let choice = loop {
        let crf = match search.next() {
            Step::Done(choice) => break choice,
            Step::Probe(crf) => crf,
        };
        let (a, b) = probe_span(search.probes().len());
        let split = a + (b - a) * 0.6;
        let bytes = encode_sample(
            tools,
            &reel,
            job.encoder,
            job.spec.preset,
            first.pix_fmt,
            crf,
            &sample,
            step(),
            &mut meter.span(a, split),
        )
        .await?;
        let args = score_args(&sample, &reel.path, 0, None, &probe_opts)?;
        let score = run_score(
            tools,
            &args,
            &log,
            reel.duration,
            step(),
            &mut meter.span(split, b),
        )
        .await?;
        tracing::debug!(crf, vmaf = score.mean, bytes, "vmaf probe");
        search.record(Probe {
            crf,
            vmaf: score.mean,
            bytes,
        });
    };
    let _ = tokio::fs::remove_file(&sample).await;
    let _ = tokio::fs::remove_file(&reel.path).await;
    let search_secs = started.elapsed().as_secs_f64();
    meter.set(SEARCH_END);
    tracing::info!(
        crf = choice.crf,
        predicted = choice.predicted,
        probes = search.probes().len(),
        search_secs,
        "vmaf search done"
    );

    // 3. The whole file at the chosen CRF, measured against the source.
    let final_started = Instant::now();
    let plan = plan_at(choice.crf, job.output)?;
    let encode = run_encode(
        tools,
        &plan,
        duration,
        step(),
        &mut meter.span(SEARCH_END, ENCODE_END),
    )
    .await?;
    let encoded_secs = encode.output_duration_sec.unwrap_or(duration);
    let final_opts = score_opts(encoded_secs * out_fps / FINAL_FRAMES);
    let measure =
        |output: PathBuf| score_args(&output, job.input, video.index, Some(&chain), &final_opts);
    let mut measured = run_score(
        tools,
        &measure(job.output.to_path_buf())?,
        &log,
        encoded_secs,
        step(),
        &mut meter.span(ENCODE_END, SCORE_END),
    )
    .await?;
    let mut crf = choice.crf;
    let mut encode_report = encode;
    let mut full_encodes = 1;
    let mut kept_plan = plan;

    // 4. At most one correction, when the samples misjudged the whole file (it misses the
    // target, or overshoots the goal by more than a point) and there is time.
    let one_round = final_started.elapsed();
    let time_left = remaining(deadline).is_none_or(|r| r > one_round * 2);
    if misjudged(job.target, goal, measured.mean) && time_left {
        let slope = search.slope_near(crf);
        let corrected = scale.round(crf + (ylog(goal) - ylog(measured.mean)) / slope);
        if (corrected - crf).abs() >= scale.quantum - 1e-9 {
            let ext = job
                .output
                .extension()
                .map(|e| format!(".{}", e.to_string_lossy()))
                .unwrap_or_default();
            let retry_path = job.dir.join(format!("vmaf-retry{ext}"));
            let retry_plan = plan_at(corrected, &retry_path)?;
            tracing::info!(
                crf,
                corrected,
                measured = measured.mean,
                goal,
                "vmaf: whole file off the goal; encoding once more"
            );
            let retry = run_encode(
                tools,
                &retry_plan,
                duration,
                step(),
                &mut meter.span(SCORE_END, 0.97),
            )
            .await?;
            let retry_score = run_score(
                tools,
                &measure(retry_path.clone())?,
                &log,
                retry.output_duration_sec.unwrap_or(duration),
                step(),
                &mut meter.span(0.97, 0.995),
            )
            .await?;
            full_encodes = 2;
            let first_size = tokio::fs::metadata(job.output).await?.len();
            let retry_size = tokio::fs::metadata(&retry_path).await?.len();
            if prefer_second(
                job.target,
                (&measured, first_size),
                (&retry_score, retry_size),
            ) {
                tokio::fs::rename(&retry_path, job.output).await?;
                measured = retry_score;
                crf = corrected;
                encode_report = retry;
                kept_plan = plan_at(corrected, job.output)?;
            } else {
                let _ = tokio::fs::remove_file(&retry_path).await;
            }
        }
    }

    let size = tokio::fs::metadata(job.output).await?.len();
    let bytes_saved = match (search.predict_bytes(default), search.predict_bytes(crf)) {
        (Some(d), Some(c)) if c > 0.0 => Some((size as f64 * d / c).round() as i64 - size as i64),
        _ => None,
    };
    let met = VmafReport::meets(job.target, measured.mean);
    let message = (!met).then(|| miss_message(job, &scale, &choice, crf, &measured));
    let report = VmafReport {
        target: job.target,
        mean: round3(measured.mean),
        p5: round3(measured.p5),
        target_met: met,
        crf,
        default_crf: default,
        sample_encodes: search.probes().len() as u32,
        full_encodes,
        bytes_saved_vs_default: bytes_saved,
        model: model.to_string(),
        message,
    };
    (meter.sink)(1.0);
    Ok(VmafOutcome {
        encode: encode_report,
        plan: kept_plan,
        report,
        probes: search.probes().to_vec(),
        choice,
        segments: reel.segments,
        reel_secs: reel.duration,
        search_secs,
    })
}

/// Of two encodes, is the second better? One that meets the target beats one that does not;
/// of two that meet it, the smaller; of two that miss, the closer.
fn prefer_second(target: f64, first: (&Score, u64), second: (&Score, u64)) -> bool {
    match (
        VmafReport::meets(target, first.0.mean),
        VmafReport::meets(target, second.0.mean),
    ) {
        (true, true) => second.1 < first.1,
        (false, true) => true,
        (true, false) => false,
        (false, false) => second.0.mean > first.0.mean,
    }
}

/// Whether a whole file's score calls for the one correction: it misses the target, or
/// lands more than [`CORRECT_BEYOND`] from the goal either way.
fn misjudged(target: f64, goal: f64, mean: f64) -> bool {
    !VmafReport::meets(target, mean) || (mean - goal).abs() > CORRECT_BEYOND
}

fn miss_message(
    job: &VmafJob<'_>,
    scale: &QualityScale,
    choice: &Choice,
    crf: f64,
    measured: &Score,
) -> String {
    let encoder = job.encoder.ffmpeg_name();
    let (target, mean) = (job.target, measured.mean);
    if !choice.reachable && crf <= scale.min + 1e-9 {
        format!(
            "VMAF target {target} was not reached: even {encoder}'s best quality setting (crf {crf}) scores {mean:.2} on this source; the file was encoded at that setting"
        )
    } else if !choice.reachable {
        format!(
            "VMAF target {target} was not reached: the best setting the search found (crf {crf}) scores {mean:.2}; the file was encoded at that setting"
        )
    } else {
        format!(
            "VMAF target {target} was missed: the file scores {mean:.2} at crf {crf}, where its samples predicted {:.2}",
            choice.predicted
        )
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(mean: f64) -> Score {
        Score {
            mean,
            p5: mean - 3.0,
            frames: 10,
        }
    }

    #[test]
    fn a_miss_is_always_corrected_and_a_near_hit_never() {
        let (target, goal) = (92.0, 92.0 + AIM_MARGIN);
        // Reported as a miss (below 91.5) though within a point of the goal: corrected.
        assert!(misjudged(target, goal, 91.46));
        assert!(!misjudged(target, goal, 91.6));
        assert!(!misjudged(target, goal, 93.1));
        assert!(misjudged(target, goal, 93.2));
    }

    #[test]
    fn the_better_of_two_encodes() {
        // Both meet 93: the smaller wins.
        assert!(prefer_second(
            93.0,
            (&score(94.5), 900),
            (&score(93.2), 700)
        ));
        assert!(!prefer_second(
            93.0,
            (&score(93.2), 700),
            (&score(94.5), 900)
        ));
        // Meeting beats missing, whatever the size.
        assert!(prefer_second(
            93.0,
            (&score(91.0), 500),
            (&score(93.1), 900)
        ));
        assert!(!prefer_second(
            93.0,
            (&score(93.1), 900),
            (&score(91.0), 500)
        ));
        // Both miss: the closer.
        assert!(prefer_second(
            93.0,
            (&score(90.0), 500),
            (&score(91.0), 900)
        ));
    }

    #[test]
    fn progress_spans_fit_the_search() {
        let spans: Vec<(f64, f64)> = (0..10).map(probe_span).collect();
        assert_eq!(spans[0].0, REEL_END);
        assert!(spans
            .windows(2)
            .all(|w| w[0].1 == w[1].0 && w[0].0 < w[0].1));
        assert!(spans[9].1 < SEARCH_END);
    }
}
