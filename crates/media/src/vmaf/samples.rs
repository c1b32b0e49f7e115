//! What the search encodes: short samples spread across the source, cut at its keyframes,
//! put through the job's own filter chain (size, square pixels, fps cap, pixel format) and
//! stored once, losslessly, as one "reel". Every probe then encodes the reel and scores it
//! against the reel: the source is decoded and scaled once per job, not twice per probe, and
//! the reference frames are exactly the frames the encoder saw.
//!
//! Why short samples: quality depends on the content, and spread beats length. Several
//! two-second samples from across the file see more of its scenes than one long one from the
//! middle, at a fraction of the frames.
//!
//! Scene changes, cheaply: encoders put keyframes at scene cuts (and at GOP boundaries), and
//! the source's keyframe times come from a demux-only ffprobe pass over its packets, with no
//! decoding. Each sample starts at the keyframe nearest its slot, so it begins with a whole
//! shot (and the seek to it decodes nothing wasted).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::MediaError;
use crate::process::{run, RunOptions, Tools};

/// Length of one sample.
pub const SAMPLE_SECS: f64 = 2.0;
/// At least this many samples, and one per this many seconds of source…
pub const MIN_SAMPLES: usize = 4;
pub const SECS_PER_SAMPLE: f64 = 30.0;
/// …up to this many.
pub const MAX_SAMPLES: usize = 12;

/// One stretch of the source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    pub start: f64,
    pub duration: f64,
}

/// The samples of a source `duration` seconds long whose keyframes are at `keyframes`
/// (seconds, any order; may be empty). A source too short to be worth sampling (the samples
/// would cover half of it or more) is one segment: the whole file.
pub fn choose_segments(duration: f64, keyframes: &[f64]) -> Vec<Segment> {
    let whole = vec![Segment {
        start: 0.0,
        duration: duration.max(0.0),
    }];
    if !duration.is_finite() || duration <= 0.0 {
        return whole;
    }
    let count = ((duration / SECS_PER_SAMPLE).ceil() as usize).clamp(MIN_SAMPLES, MAX_SAMPLES);
    if count as f64 * SAMPLE_SECS * 2.0 >= duration {
        return whole;
    }
    let slot = duration / count as f64;
    let mut keys: Vec<f64> = keyframes
        .iter()
        .copied()
        .filter(|k| k.is_finite() && *k >= 0.0)
        .collect();
    keys.sort_by(f64::total_cmp);
    let latest = duration - SAMPLE_SECS;
    (0..count)
        .map(|i| {
            let anchor = slot * (i as f64 + 0.5) - SAMPLE_SECS / 2.0;
            // The nearest keyframe within a quarter slot (slots are over four samples long,
            // so samples never overlap); none near: the anchor itself.
            let snapped = keys
                .iter()
                .copied()
                .filter(|k| (k - anchor).abs() <= slot / 4.0 && *k <= latest)
                .min_by(|a, b| (a - anchor).abs().total_cmp(&(b - anchor).abs()))
                .unwrap_or(anchor);
            Segment {
                start: snapped.clamp(0.0, latest),
                duration: SAMPLE_SECS,
            }
        })
        .collect()
}

/// Keyframe times of the source's video stream, from packet flags (demux only, no decode).
/// Best effort: any failure means "no keyframes known" and samples sit at their slots.
pub async fn keyframes(tools: &Tools, input: &Path, stream: u32, opts: RunOptions) -> Vec<f64> {
    let Some(path) = input.to_str() else {
        return Vec::new();
    };
    let args: Vec<String> = [
        "-v",
        "error",
        "-format_whitelist",
        crate::probe::INPUT_FORMATS,
        "-select_streams",
        &stream.to_string(),
        "-show_entries",
        "packet=pts_time,flags",
        "-of",
        "csv=p=0",
        &format!("file:{path}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut keys = Vec::new();
    // Lines are taken as they come so a long film's packet list is never held whole.
    let mut on_line = |line: &str| {
        if let Some((time, flags)) = line.split_once(',') {
            if flags.starts_with('K') {
                if let Ok(t) = time.parse::<f64>() {
                    keys.push(t);
                }
            }
        }
    };
    match run(&tools.ffprobe, &args, opts, &mut on_line).await {
        Ok(_) => keys,
        Err(e) => {
            tracing::debug!(error = %e, "keyframe scan failed; samples stay at their slots");
            Vec::new()
        }
    }
}

/// The samples, through the job's filter chain, stored losslessly.
#[derive(Debug, Clone, PartialEq)]
pub struct Reel {
    pub path: PathBuf,
    pub segments: Vec<Segment>,
    /// Seconds of video in the reel.
    pub duration: f64,
}

/// How the reel is stored: x264 lossless is fast to write and read for 8-bit video; FFV1 is
/// built into every ffmpeg and takes every pixel format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReelCodec {
    X264Lossless,
    Ffv1,
}

impl ReelCodec {
    /// x264 when the worker has it and the frames are 8-bit 4:2:0.
    pub fn pick(has_libx264: bool, pix_fmt: &str) -> Self {
        if has_libx264 && pix_fmt == "yuv420p" {
            Self::X264Lossless
        } else {
            Self::Ffv1
        }
    }

    fn args(self) -> Vec<String> {
        let a: &[&str] = match self {
            // -qp 0 is mathematically lossless; ultrafast keeps it nearly free to write.
            Self::X264Lossless => &["-c:v", "libx264", "-qp", "0", "-preset", "ultrafast"],
            Self::Ffv1 => &["-c:v", "ffv1", "-level", "3", "-slices", "4"],
        };
        a.iter().map(|s| s.to_string()).collect()
    }
}

/// The ffmpeg argv that cuts `segments` from `input` (video stream `stream`), puts each
/// through `filter` and joins them into `output` (Matroska).
pub fn reel_args(
    input: &Path,
    stream: u32,
    filter: &str,
    segments: &[Segment],
    codec: ReelCodec,
    output: &Path,
) -> Result<Vec<String>, MediaError> {
    let input = format!("file:{}", utf8(input)?);
    let mut a = crate::plan::head_args();
    let whole = segments.len() == 1 && segments[0].start == 0.0;
    let mut graph = String::new();
    if whole {
        a.extend(crate::plan::input_args(&input));
        graph.push_str(&format!("[0:{stream}]{filter},setpts=PTS-STARTPTS[v]"));
    } else {
        for (i, s) in segments.iter().enumerate() {
            // Input seeking (-ss before -i) jumps to the keyframe at or before the start and
            // decodes only from there; -t bounds what is read.
            a.extend([
                "-ss".to_string(),
                format!("{:.3}", s.start),
                "-t".to_string(),
                format!("{:.3}", s.duration),
            ]);
            a.extend(crate::plan::input_args(&input));
            graph.push_str(&format!(
                "[{i}:{stream}]{filter},setpts=PTS-STARTPTS[s{i}];"
            ));
        }
        for i in 0..segments.len() {
            graph.push_str(&format!("[s{i}]"));
        }
        graph.push_str(&format!("concat=n={}:v=1:a=0[v]", segments.len()));
    }
    a.extend(["-filter_complex".to_string(), graph]);
    a.extend(["-map".to_string(), "[v]".to_string()]);
    a.extend(codec.args());
    a.extend(["-an", "-f", "matroska"].iter().map(|s| s.to_string()));
    a.push(format!("file:{}", utf8(output)?));
    Ok(a)
}

/// Builds the reel of `segments` through `filter` (the job's chain) in `dir`.
#[allow(clippy::too_many_arguments)]
pub async fn build_reel(
    tools: &Tools,
    input: &Path,
    stream: u32,
    filter: &str,
    segments: Vec<Segment>,
    codec: ReelCodec,
    dir: &Path,
    opts: RunOptions,
) -> Result<Reel, MediaError> {
    let path = dir.join("vmaf-reel.mkv");
    let args = reel_args(input, stream, filter, &segments, codec, &path)?;
    let mut furthest = 0i64;
    let mut parser = crate::progress::ProgressParser::new();
    let mut on_line = |line: &str| {
        if let Some(us) = parser.push_line(line).and_then(|b| b.out_time_us) {
            furthest = furthest.max(us);
        }
    };
    run(&tools.ffmpeg, &args, opts, &mut on_line).await?;
    let size = tokio::fs::metadata(&path)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    if size == 0 || furthest <= 0 {
        return Err(MediaError::NotAVideo(
            "the source has no decodable video frames where the quality search sampled it".into(),
        ));
    }
    Ok(Reel {
        path,
        segments,
        duration: furthest as f64 / 1e6,
    })
}

fn utf8(path: &Path) -> Result<&str, MediaError> {
    path.to_str().ok_or_else(|| {
        MediaError::Unsupported(format!("path is not valid UTF-8: {}", path.display()))
    })
}

/// A timeout for a step: what is left of the job's budget.
pub(crate) fn remaining(deadline: Option<std::time::Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_sources_are_one_whole_segment() {
        for d in [0.5, 5.3, 16.0] {
            assert_eq!(
                choose_segments(d, &[]),
                vec![Segment {
                    start: 0.0,
                    duration: d
                }]
            );
        }
        assert_eq!(choose_segments(f64::NAN, &[]).len(), 1);
    }

    #[test]
    fn samples_spread_across_the_source() {
        let s = choose_segments(60.0, &[]);
        let starts: Vec<f64> = s.iter().map(|s| s.start).collect();
        assert_eq!(starts, [6.5, 21.5, 36.5, 51.5]);
        assert!(s.iter().all(|s| s.duration == SAMPLE_SECS));
        assert_eq!(choose_segments(600.0, &[]).len(), 12, "ten minutes: capped");
        assert_eq!(choose_segments(7200.0, &[]).len(), MAX_SAMPLES);
        assert_eq!(choose_segments(100.0, &[]).len(), 4);
        assert_eq!(choose_segments(150.0, &[]).len(), 5);
    }

    #[test]
    fn samples_start_at_the_nearest_keyframe_in_reach() {
        // Slots of 15 s: keyframes within 3.75 s of an anchor win, the nearest first.
        let keys = [0.0, 5.0, 8.0, 24.9, 30.0, 45.0, 59.9];
        let s = choose_segments(60.0, &keys);
        let starts: Vec<f64> = s.iter().map(|s| s.start).collect();
        // 6.5 → 5.0 (1.5 away, nearer than 8.0's 1.5? tie broken by order) ; 21.5 → 24.9;
        // 36.5 → none within reach; 51.5 → none (59.9 is too late for a whole sample).
        assert_eq!(starts[1], 24.9);
        assert_eq!(starts[2], 36.5);
        assert_eq!(starts[3], 51.5);
        assert!(starts[0] == 5.0 || starts[0] == 8.0);
        for w in s.windows(2) {
            assert!(w[0].start + w[0].duration <= w[1].start, "{s:?}");
        }
    }

    #[test]
    fn reel_argv_cuts_filters_and_joins() {
        let segs = [
            Segment {
                start: 6.5,
                duration: 2.0,
            },
            Segment {
                start: 21.5,
                duration: 2.0,
            },
        ];
        let a = reel_args(
            Path::new("/s/in.mp4"),
            1,
            "scale=640:360,setsar=1,format=yuv420p",
            &segs,
            ReelCodec::X264Lossless,
            Path::new("/s/reel.mkv"),
        )
        .unwrap();
        let line = a.join(" ");
        let w = crate::probe::INPUT_FORMATS;
        assert!(line.contains(&format!("-ss 6.500 -t 2.000 -format_whitelist {w} -i file:/s/in.mp4 -ss 21.500 -t 2.000 -format_whitelist {w} -i file:/s/in.mp4")), "{line}");
        assert!(
            line.contains(
                "[0:1]scale=640:360,setsar=1,format=yuv420p,setpts=PTS-STARTPTS[s0];[1:1]"
            ),
            "{line}"
        );
        assert!(
            line.contains("[s0][s1]concat=n=2:v=1:a=0[v] -map [v] -c:v libx264 -qp 0"),
            "{line}"
        );
        assert!(line.ends_with("-an -f matroska file:/s/reel.mkv"), "{line}");
        let whole = reel_args(
            Path::new("/s/in.mp4"),
            0,
            "scale=2:2",
            &[Segment {
                start: 0.0,
                duration: 5.0,
            }],
            ReelCodec::Ffv1,
            Path::new("/s/reel.mkv"),
        )
        .unwrap()
        .join(" ");
        assert!(!whole.contains("-ss"), "{whole}");
        assert!(whole.contains("-i file:/s/in.mp4 -filter_complex [0:0]scale=2:2,setpts=PTS-STARTPTS[v] -map [v] -c:v ffv1"), "{whole}");
        assert_eq!(ReelCodec::pick(true, "yuv420p"), ReelCodec::X264Lossless);
        assert_eq!(ReelCodec::pick(true, "yuv420p10le"), ReelCodec::Ffv1);
        assert_eq!(ReelCodec::pick(false, "yuv420p"), ReelCodec::Ffv1);
    }
}
