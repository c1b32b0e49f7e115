//! Scoring with libvmaf: the argv (distorted first, reference second, both at the output's
//! size, frame rate and pixel format), the model for the output's size, and the JSON log it
//! writes, reduced to the mean and the 5th percentile of the per-frame scores.

use std::path::{Path, PathBuf};

use crate::error::MediaError;
use crate::process::{run, RunOptions, Tools};
use crate::progress::ProgressParser;

/// libvmaf's default model, trained for 1080p viewing on a living-room screen.
pub const MODEL: &str = "vmaf_v0.6.1";
/// The model for 4K outputs, trained at 2160p and a closer viewing distance.
pub const MODEL_4K: &str = "vmaf_4k_v0.6.1";

/// The model for an output of `width`×`height`: the 4K model from 2160p up (either
/// orientation), else the default.
pub fn model_for(width: u32, height: u32) -> &'static str {
    let (long, short) = (width.max(height), width.min(height));
    if short >= 2160 || long >= 3840 {
        MODEL_4K
    } else {
        MODEL
    }
}

/// What a scoring run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub mean: f64,
    /// 5th percentile (nearest rank) of the per-frame scores.
    pub p5: f64,
    /// Frames scored (after subsampling).
    pub frames: usize,
}

/// How to score.
#[derive(Debug, Clone)]
pub struct ScoreOptions {
    pub model: &'static str,
    /// Both streams are converted to this before comparing (libvmaf wants them alike).
    pub pix_fmt: &'static str,
    /// The output's frame rate: frames are restamped at it (see [`score_args`]).
    pub fps: f64,
    /// Score every n-th frame only (libvmaf `n_subsample`); 1 scores all.
    pub subsample: u32,
    /// libvmaf's own worker threads.
    pub threads: usize,
    /// Where libvmaf writes its JSON log.
    pub log_path: PathBuf,
}

/// Escapes `value` for use as a filter option inside a filtergraph: first for the filter's
/// `key=value:…` list (`\`, `'` and `:`), then for the graph (`\`, `'`, `[`, `]`, `,`, `;`).
pub fn escape_filter_value(value: &str) -> String {
    let escape = |s: &str, special: &[char]| {
        let mut out = String::with_capacity(s.len() + 8);
        for c in s.chars() {
            if special.contains(&c) {
                out.push('\\');
            }
            out.push(c);
        }
        out
    };
    let option = escape(value, &['\\', '\'', ':']);
    escape(&option, &['\\', '\'', '[', ']', ',', ';'])
}

/// The ffmpeg argv scoring `distorted` against `reference`. `reference_filter` (the job's chain)
/// is applied to the reference first when it is the source rather than the reel.
///
/// Frames are paired by their index, not their timestamps: both streams are restamped at the
/// same constant rate (`fps`, the output's). The two files come from the same frames, but their
/// containers round timestamps differently (Matroska to the millisecond: a 30 fps frame at
/// 66.67 ms is stored as 67 ms), and libvmaf's frame sync, pairing by timestamp, would then
/// compare some frames with their neighbours: on high motion that scores near zero.
/// `shortest=1` stops at the end of the shorter stream rather than comparing the longer one's
/// surplus with a repeated last frame.
pub fn score_args(
    distorted: &Path,
    reference: &Path,
    reference_stream: u32,
    reference_filter: Option<&str>,
    opts: &ScoreOptions,
) -> Result<Vec<String>, MediaError> {
    let distorted = format!("file:{}", utf8(distorted)?);
    let reference = format!("file:{}", utf8(reference)?);
    let log = escape_filter_value(utf8(&opts.log_path)?);
    let mut a = crate::plan::head_args();
    a.extend(crate::plan::input_args(&distorted));
    a.extend(crate::plan::input_args(&reference));
    let fmt = opts.pix_fmt;
    let fps = if opts.fps.is_finite() && opts.fps > 0.0 {
        opts.fps
    } else {
        25.0
    };
    let restamp = format!("format={fmt},setpts=N/({fps:.6}*TB)");
    let reference_chain = match reference_filter {
        Some(f) => format!("{f},{restamp}"),
        None => restamp.clone(),
    };
    let graph = format!(
        "[0:v:0]{restamp}[d];[1:{reference_stream}]{reference_chain}[r];\
         [d][r]libvmaf=model=version={}:n_threads={}:n_subsample={}:shortest=1:log_fmt=json:log_path={log}",
        opts.model,
        opts.threads.max(1),
        opts.subsample.max(1),
    );
    a.extend(
        ["-filter_complex", &graph, "-an", "-f", "null", "-"]
            .iter()
            .map(|s| s.to_string()),
    );
    Ok(a)
}

/// Runs a scoring argv, reporting how far through `duration` seconds it is (0.0–1.0), and
/// reads the log it wrote.
pub async fn run_score(
    tools: &Tools,
    args: &[String],
    log_path: &Path,
    duration: f64,
    opts: RunOptions,
    on_progress: &mut (dyn FnMut(f64) + Send),
) -> Result<Score, MediaError> {
    let _ = tokio::fs::remove_file(log_path).await;
    let mut parser = ProgressParser::new();
    let mut on_line = |line: &str| {
        if let Some(us) = parser.push_line(line).and_then(|b| b.out_time_us) {
            if duration > 0.0 {
                on_progress((us as f64 / 1e6 / duration).clamp(0.0, 1.0));
            }
        }
    };
    run(&tools.ffmpeg, args, opts, &mut on_line).await?;
    let text = tokio::fs::read_to_string(log_path).await?;
    let _ = tokio::fs::remove_file(log_path).await;
    parse_log(&text)
}

/// Mean and 5th percentile of the per-frame `vmaf` scores of a libvmaf JSON log.
pub fn parse_log(text: &str) -> Result<Score, MediaError> {
    let bad =
        |why: &str| MediaError::Unsupported(format!("libvmaf wrote an unreadable log: {why}"));
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    let frames = v["frames"].as_array().ok_or_else(|| bad("no frames"))?;
    let mut scores: Vec<f64> = frames
        .iter()
        .filter_map(|f| f["metrics"]["vmaf"].as_f64())
        .filter(|s| s.is_finite())
        .collect();
    if scores.is_empty() {
        return Err(MediaError::NotAVideo(
            "no frames could be compared with the source for the VMAF measurement".into(),
        ));
    }
    scores.sort_by(f64::total_cmp);
    let n = scores.len();
    let mean = scores.iter().sum::<f64>() / n as f64;
    let rank = ((0.05 * n as f64).ceil() as usize).clamp(1, n);
    Ok(Score {
        mean,
        p5: scores[rank - 1],
        frames: n,
    })
}

fn utf8(path: &Path) -> Result<&str, MediaError> {
    path.to_str().ok_or_else(|| {
        MediaError::Unsupported(format!("path is not valid UTF-8: {}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real log: libvmaf (ffmpeg 9) on four 64×64 frames with noise added.
    const LOG: &str = include_str!("../../tests/fixtures/vmaf_log.json");

    #[test]
    fn parses_a_real_log() {
        let s = parse_log(LOG).unwrap();
        assert_eq!(s.frames, 4);
        // The pooled mean libvmaf printed for the same frames.
        assert!((s.mean - 83.894798).abs() < 1e-5, "{s:?}");
        assert!((s.p5 - 82.951011).abs() < 1e-6, "the worst of four: {s:?}");
        assert!(matches!(
            parse_log(r#"{"frames": []}"#),
            Err(MediaError::NotAVideo(_))
        ));
        assert!(parse_log("not json").is_err());
    }

    #[test]
    fn p5_is_the_nearest_rank() {
        let frames: Vec<String> = (1..=100)
            .map(|i| format!(r#"{{"frameNum":{i},"metrics":{{"vmaf":{i}}}}}"#))
            .collect();
        let s = parse_log(&format!(r#"{{"frames":[{}]}}"#, frames.join(","))).unwrap();
        assert_eq!((s.p5, s.mean, s.frames), (5.0, 50.5, 100));
    }

    #[test]
    fn model_follows_the_output_size() {
        assert_eq!(model_for(1920, 1080), MODEL);
        assert_eq!(model_for(3840, 2160), MODEL_4K);
        assert_eq!(model_for(2160, 3840), MODEL_4K, "portrait 4K");
        assert_eq!(model_for(3840, 1600), MODEL_4K, "scope 4K");
        assert_eq!(model_for(2560, 1440), MODEL);
    }

    #[test]
    fn paths_are_escaped_twice() {
        assert_eq!(escape_filter_value("/tmp/a/log.json"), "/tmp/a/log.json");
        assert_eq!(escape_filter_value("/t:x/l.json"), r"/t\\:x/l.json");
        assert_eq!(escape_filter_value("/a,b;c[d]"), r"/a\,b\;c\[d\]");
        assert_eq!(escape_filter_value("it's"), r"it\\\'s");
    }

    #[test]
    fn argv_puts_the_distorted_first() {
        let opts = ScoreOptions {
            model: MODEL,
            pix_fmt: "yuv420p",
            fps: 30.0,
            subsample: 2,
            threads: 2,
            log_path: "/w/vmaf.json".into(),
        };
        let a = score_args(
            Path::new("/w/out.mp4"),
            Path::new("/w/src.mkv"),
            1,
            Some("scale=640:360,setsar=1,format=yuv420p"),
            &opts,
        )
        .unwrap();
        let line = a.join(" ");
        assert!(
            line.contains("-i file:/w/out.mp4 -format_whitelist"),
            "{line}"
        );
        assert!(line.contains("-i file:/w/src.mkv -filter_complex [0:v:0]format=yuv420p,setpts=N/(30.000000*TB)[d];[1:1]scale=640:360,setsar=1,format=yuv420p,format=yuv420p,setpts=N/(30.000000*TB)[r];[d][r]libvmaf=model=version=vmaf_v0.6.1:n_threads=2:n_subsample=2:shortest=1:log_fmt=json:log_path=/w/vmaf.json -an -f null -"), "{line}");
    }
}
