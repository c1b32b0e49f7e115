//! Runs a planned encode: each pass through the process wrapper, `-progress` blocks turned into
//! one monotonic fraction of the whole job, reported at a bounded rate.

use std::time::{Duration, Instant};

use crate::error::MediaError;
use crate::plan::EncodePlan;
use crate::process::{run, ProcessError, RunOptions, Tools};
use crate::progress::ProgressParser;

/// What a finished encode reports about its output.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EncodeReport {
    /// Duration ffmpeg wrote, from the final pass's last `out_time` (no extra probe needed).
    pub output_duration_sec: Option<f64>,
}

/// At most one progress report per this interval (plus the final 1.0).
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// Runs every pass of the plan with ffmpeg (env SVT_LOG=1 so SVT-AV1 prints only errors), maps
/// progress to a fraction 0.0..=1.0 of the whole job (2-pass: first pass 0–0.4, second 0.4–1.0)
/// using `duration_sec`, and calls `on_progress` at most every ~250 ms and once with 1.0 at the
/// end. The timeout covers the whole encode; cancel kills ffmpeg.
pub async fn run_encode(
    tools: &Tools,
    plan: &EncodePlan,
    duration_sec: f64,
    opts: RunOptions,
    on_progress: &mut (dyn FnMut(f64) + Send),
) -> Result<EncodeReport, MediaError> {
    let started = Instant::now();
    let mut furthest_us: Option<i64> = None;
    let spans = pass_spans(plan.passes.len());
    let mut last_report: Option<Instant> = None;
    let mut reported = 0.0_f64;

    for (args, &(from, to)) in plan.passes.iter().zip(&spans) {
        // Only the last pass writes the real output.
        furthest_us = None;
        // Our variable first so a caller's env can override it. SVT_LOG=1: errors only (SVT-AV1
        // otherwise prints its configuration banner on stderr, drowning real errors).
        let mut env = vec![("SVT_LOG".to_string(), "1".to_string())];
        env.extend(opts.env.iter().cloned());
        let remaining = opts
            .timeout
            .map(|total| total.saturating_sub(started.elapsed()));
        let run_opts = RunOptions {
            timeout: remaining,
            cancel: opts.cancel.clone(),
            env,
        };
        let mut parser = ProgressParser::new();
        let mut on_line = |line: &str| {
            let Some(block) = parser.push_line(line) else {
                return;
            };
            let Some(us) = block.out_time_us else { return };
            furthest_us = furthest_us.max(Some(us));
            let within = if duration_sec > 0.0 {
                (us as f64 / 1e6 / duration_sec).clamp(0.0, 1.0)
            } else {
                0.0
            };
            // Never 1.0 before the end, never backwards (audio can run ahead of video).
            let fraction = (from + (to - from) * within).min(0.999).max(reported);
            let due = last_report.is_none_or(|t| t.elapsed() >= REPORT_EVERY);
            if due && fraction > reported {
                reported = fraction;
                last_report = Some(Instant::now());
                on_progress(fraction);
            }
        };
        let result = run(&tools.ffmpeg, args, run_opts, &mut on_line).await;
        match result {
            Ok(_) => {}
            // Report the whole budget, not what was left of it for this pass.
            Err(ProcessError::TimedOut { command, .. }) => {
                return Err(MediaError::Process(ProcessError::TimedOut {
                    command,
                    after: opts.timeout.unwrap_or_default(),
                }))
            }
            Err(e) => return Err(e.into()),
        }
    }
    on_progress(1.0);
    tracing::info!(
        encoder = plan.encoder.ffmpeg_name(),
        width = plan.width,
        height = plan.height,
        passes = plan.passes.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "encode finished"
    );
    Ok(EncodeReport {
        output_duration_sec: furthest_us.filter(|&us| us > 0).map(|us| us as f64 / 1e6),
    })
}

/// The share of the job each pass covers: 2 passes split 40/60 (pass 1 is the faster analysis).
fn pass_spans(passes: usize) -> Vec<(f64, f64)> {
    match passes {
        2 => vec![(0.0, 0.4), (0.4, 1.0)],
        n => (0..n)
            .map(|i| (i as f64 / n as f64, (i + 1) as f64 / n as f64))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        assert_eq!(pass_spans(1), vec![(0.0, 1.0)]);
        assert_eq!(pass_spans(2), vec![(0.0, 0.4), (0.4, 1.0)]);
    }

    /// A fake "ffmpeg" that prints progress blocks lets us test the mapping without encoding.
    #[tokio::test]
    async fn maps_progress_over_two_passes() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-ffmpeg");
        std::fs::write(
            &script,
            "#!/bin/sh\nfor t in 0 500000 1000000 1500000 2000000; do\n  printf 'frame=1\\nout_time_us=%s\\nprogress=continue\\n' $t\n  sleep 0.3\ndone\nprintf 'out_time_us=N/A\\nprogress=end\\n'\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let tools = Tools {
            ffmpeg: script.clone(),
            ffprobe: script,
        };
        let plan = EncodePlan {
            width: 2,
            height: 2,
            fps_cap_applied: None,
            pix_fmt: "yuv420p",
            encoder: crate::plan::VideoEncoder::Libx264,
            has_audio: false,
            filter: String::new(),
            passes: vec![vec!["1".into()], vec!["2".into()]],
        };
        let mut seen = Vec::new();
        let report = run_encode(&tools, &plan, 2.0, RunOptions::default(), &mut |f| {
            seen.push(f)
        })
        .await
        .unwrap();
        assert_eq!(
            report.output_duration_sec,
            Some(2.0),
            "the last pass's furthest out_time"
        );
        assert_eq!(seen.last(), Some(&1.0));
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert!(seen.iter().any(|&f| f > 0.0 && f <= 0.4), "{seen:?}");
        assert!(seen.iter().any(|&f| f > 0.4 && f < 1.0), "{seen:?}");
        assert!(seen.iter().filter(|&&f| f < 1.0).all(|&f| f < 0.999 + 1e-9));
    }
}
