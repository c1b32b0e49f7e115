//! VMAF-targeted encoding (`optimize: "vmaf"`): the smallest file whose quality reaches the
//! customer's VMAF target.
//!
//! 1. `samples`: short samples spread across the source (starting at its keyframes, where
//!    scene cuts are), put through the job's own filter chain and stored once, losslessly, as
//!    a reel. A short source is its own reel.
//! 2. `search`: encode the reel at a CRF with the job's encoder and preset, score it with
//!    libvmaf against the reel (`score`), and move the CRF, starting from the job's default
//!    and interpolating between probes, until the predicted CRF meets the goal closely
//!    enough; at most [`MAX_PROBES`] sample encodes. A goal out of the encoder's range ends
//!    at its best setting, reported as a miss.
//! 3. `job`: the whole file is encoded at the chosen CRF and its real VMAF measured against
//!    the source scaled the same way. When the file misses the goal by more than a point
//!    (the samples misjudged it), it is encoded once more at a CRF corrected by what the
//!    measurement showed, and the better of the two is kept.
//!
//! Every ffmpeg run goes through the process wrapper with the job's cancel token and what is
//! left of its time budget.

mod job;
pub mod samples;
pub mod score;
pub mod search;

pub use job::{optimize, VmafJob, VmafOutcome};
pub use samples::{build_reel, choose_segments, keyframes, Reel, ReelCodec, Segment};
pub use score::{model_for, parse_log, run_score, score_args, Score, ScoreOptions};
pub use search::{Choice, Probe, QualityScale, Search, Step, MAX_PROBES};

use std::path::Path;

use crate::error::MediaError;
use crate::plan::{constant_quality_args, VideoEncoder};
use crate::process::{run, RunOptions, Tools};
use crate::progress::ProgressParser;
use convertrilo_core::spec::Preset;

/// Encodes the reel at `crf` with the job's encoder and preset into `output` (Matroska),
/// reporting progress through the reel (0.0–1.0); returns the encoded size in bytes.
#[allow(clippy::too_many_arguments)]
pub async fn encode_sample(
    tools: &Tools,
    reel: &Reel,
    encoder: VideoEncoder,
    preset: Preset,
    pix_fmt: &str,
    crf: f64,
    output: &Path,
    opts: RunOptions,
    on_progress: &mut (dyn FnMut(f64) + Send),
) -> Result<u64, MediaError> {
    let utf8 = |p: &Path| -> Result<String, MediaError> {
        p.to_str().map(str::to_string).ok_or_else(|| {
            MediaError::Unsupported(format!("path is not valid UTF-8: {}", p.display()))
        })
    };
    let mut args = crate::plan::head_args();
    args.extend(crate::plan::input_args(&format!(
        "file:{}",
        utf8(&reel.path)?
    )));
    args.extend(["-map".to_string(), "0:v:0".to_string()]);
    args.extend(constant_quality_args(encoder, preset, crf));
    args.extend(["-pix_fmt".to_string(), pix_fmt.to_string()]);
    args.extend(["-an", "-f", "matroska"].iter().map(|s| s.to_string()));
    args.push(format!("file:{}", utf8(output)?));
    // SVT-AV1 prints its configuration banner on stderr unless told to log errors only.
    let mut env = vec![("SVT_LOG".to_string(), "1".to_string())];
    env.extend(opts.env.iter().cloned());
    let opts = RunOptions { env, ..opts };
    let mut parser = ProgressParser::new();
    let duration = reel.duration;
    let mut on_line = |line: &str| {
        if let Some(us) = parser.push_line(line).and_then(|b| b.out_time_us) {
            if duration > 0.0 {
                on_progress((us as f64 / 1e6 / duration).clamp(0.0, 1.0));
            }
        }
    };
    run(&tools.ffmpeg, &args, opts, &mut on_line).await?;
    Ok(tokio::fs::metadata(output).await?.len())
}
