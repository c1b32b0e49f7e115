//! What a source file is: ffprobe's JSON reduced to the facts an encode needs (the main video
//! stream, the first audio stream, duration, sample aspect ratio, rotation, bit depth).
//! Parsing is a pure function tested against fixtures captured from the real ffprobe; `probe`
//! runs ffprobe and turns unreadable input into [`MediaError::NotAVideo`].

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{clean_line, MediaError};
use crate::process::{run, ProcessError, RunOptions, Tools};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaInfo {
    pub format_name: String,
    pub duration_sec: Option<f64>,
    pub size_bytes: Option<u64>,
    pub bit_rate: Option<u64>,
    pub video: Option<VideoStream>,
    pub audio: Option<AudioStream>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoStream {
    pub index: u32,
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// Sample aspect ratio; 1:1 when absent or unknown (0:1).
    pub sar: (u32, u32),
    /// Clockwise display rotation as ffmpeg's autorotate applies it: 0, 90, 180 or 270.
    pub rotation: i32,
    /// avg_frame_rate if valid, else r_frame_rate.
    pub fps: Option<f64>,
    pub pix_fmt: Option<String>,
    /// From bits_per_raw_sample, else the pixel format name; 8 when unknown.
    pub bit_depth: u32,
    pub duration_sec: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioStream {
    pub index: u32,
    pub codec: String,
    pub channels: u32,
    pub sample_rate: Option<u32>,
}

impl MediaInfo {
    /// The square-pixel display size of the video after SAR and rotation.
    pub fn display_dimensions(&self) -> Option<(f64, f64)> {
        let v = self.video.as_ref()?;
        let (num, den) = v.sar;
        let w = f64::from(v.width) * f64::from(num) / f64::from(den.max(1));
        let h = f64::from(v.height);
        if v.rotation == 90 || v.rotation == 270 {
            Some((h, w))
        } else {
            Some((w, h))
        }
    }
}

#[derive(Deserialize)]
struct RawProbe {
    #[serde(default)]
    streams: Vec<RawStream>,
    #[serde(default)]
    format: Option<RawFormat>,
}

#[derive(Deserialize, Default)]
struct RawFormat {
    format_name: Option<String>,
    duration: Option<String>,
    size: Option<String>,
    bit_rate: Option<String>,
}

#[derive(Deserialize)]
struct RawStream {
    index: u32,
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    sample_aspect_ratio: Option<String>,
    avg_frame_rate: Option<String>,
    r_frame_rate: Option<String>,
    pix_fmt: Option<String>,
    bits_per_raw_sample: Option<String>,
    duration: Option<String>,
    channels: Option<u32>,
    sample_rate: Option<String>,
    #[serde(default)]
    disposition: HashMap<String, serde_json::Value>,
    #[serde(default)]
    tags: HashMap<String, serde_json::Value>,
    #[serde(default)]
    side_data_list: Vec<serde_json::Value>,
}

impl RawStream {
    fn disposition(&self, key: &str) -> bool {
        self.disposition.get(key).and_then(|v| v.as_i64()) == Some(1)
    }

    fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .and_then(|(_, v)| v.as_str())
    }
}

/// Parses `ffprobe -print_format json -show_format -show_streams` output. Pure and lenient: a
/// file without video parses fine (`video: None`); [`probe`] decides what is acceptable.
pub fn parse_ffprobe_json(json: &str) -> Result<MediaInfo, MediaError> {
    let raw: RawProbe = serde_json::from_str(json).map_err(|e| {
        MediaError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("ffprobe printed JSON that could not be parsed: {e}"),
        ))
    })?;
    let format = raw.format.unwrap_or_default();

    let video = raw
        .streams
        .iter()
        .filter(|s| s.codec_type.as_deref() == Some("video"))
        .filter(|s| !s.disposition("attached_pic") && !s.disposition("timed_thumbnails"))
        .find(|s| s.width.unwrap_or(0) > 0 && s.height.unwrap_or(0) > 0)
        .map(video_stream);
    let audio = raw
        .streams
        .iter()
        .find(|s| s.codec_type.as_deref() == Some("audio"))
        .map(|s| AudioStream {
            index: s.index,
            codec: s.codec_name.clone().unwrap_or_default(),
            channels: s.channels.unwrap_or(0),
            sample_rate: s.sample_rate.as_deref().and_then(|r| r.parse().ok()),
        });

    let duration_sec = positive(format.duration.as_deref())
        .or_else(|| video.as_ref().and_then(|v| v.duration_sec));
    Ok(MediaInfo {
        format_name: format.format_name.unwrap_or_default(),
        duration_sec,
        size_bytes: format.size.as_deref().and_then(|s| s.parse().ok()),
        bit_rate: format.bit_rate.as_deref().and_then(|s| s.parse().ok()),
        video,
        audio,
    })
}

fn video_stream(s: &RawStream) -> VideoStream {
    let fps = rate(s.avg_frame_rate.as_deref()).or_else(|| rate(s.r_frame_rate.as_deref()));
    let bit_depth = s
        .bits_per_raw_sample
        .as_deref()
        .and_then(|b| b.parse::<u32>().ok())
        .filter(|b| (8..=16).contains(b))
        .or_else(|| s.pix_fmt.as_deref().map(depth_from_pix_fmt))
        .unwrap_or(8);
    VideoStream {
        index: s.index,
        codec: s.codec_name.clone().unwrap_or_default(),
        width: s.width.unwrap_or(0),
        height: s.height.unwrap_or(0),
        sar: sar(s.sample_aspect_ratio.as_deref()),
        rotation: rotation(s),
        fps,
        pix_fmt: s.pix_fmt.clone(),
        bit_depth,
        duration_sec: positive(s.duration.as_deref())
            .or_else(|| s.tag("DURATION").and_then(parse_clock)),
    }
}

fn positive(s: Option<&str>) -> Option<f64> {
    s.and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|d| d.is_finite() && *d > 0.0)
}

/// `"30000/1001"` → 29.97; `"0/0"` and absurd rates (still images report 90000/1) → None.
fn rate(s: Option<&str>) -> Option<f64> {
    let (num, den) = s?.split_once('/')?;
    let (num, den): (f64, f64) = (num.parse().ok()?, den.parse().ok()?);
    let fps = num / den;
    (num > 0.0 && den > 0.0 && fps.is_finite() && fps <= 1000.0).then_some(fps)
}

fn sar(s: Option<&str>) -> (u32, u32) {
    s.and_then(|s| s.split_once(':'))
        .and_then(|(n, d)| Some((n.parse::<u32>().ok()?, d.parse::<u32>().ok()?)))
        .filter(|&(n, d)| n > 0 && d > 0)
        .unwrap_or((1, 1))
}

/// `yuv420p10le` → 10, `p010le` → 10, `yuv444p12be` → 12; anything else → 8.
fn depth_from_pix_fmt(pix_fmt: &str) -> u32 {
    let Some(stem) = pix_fmt
        .strip_suffix("le")
        .or_else(|| pix_fmt.strip_suffix("be"))
    else {
        return 8;
    };
    let digits: String = stem
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let depth = digits.parse::<u32>().unwrap_or(0);
    if matches!(depth, 9 | 10 | 12 | 14 | 16) {
        depth
    } else {
        8
    }
}

/// Clockwise rotation ffmpeg's autorotate will apply. ffprobe's display-matrix `rotation` is
/// counter-clockwise (so a phone's portrait clip reads -90 and needs 90° clockwise); the legacy
/// `rotate` tag is already clockwise. Angles that are not a multiple of 90 are not transposed
/// by ffmpeg and count as 0.
fn rotation(s: &RawStream) -> i32 {
    let from_matrix = s.side_data_list.iter().find_map(|sd| {
        let is_matrix = sd.get("side_data_type").and_then(|t| t.as_str()) == Some("Display Matrix");
        let r = sd.get("rotation")?;
        let r = r.as_f64().or_else(|| r.as_str()?.trim().parse().ok())?;
        is_matrix.then_some(-r)
    });
    let clockwise = from_matrix.or_else(|| s.tag("rotate").and_then(|r| r.trim().parse().ok()));
    let Some(deg) = clockwise else { return 0 };
    let quarter = (deg / 90.0).round();
    if (deg - quarter * 90.0).abs() > 1.0 {
        return 0;
    }
    ((quarter as i64 * 90).rem_euclid(360)) as i32
}

/// Matroska's `DURATION` tag: `00:00:01.000000000`.
fn parse_clock(s: &str) -> Option<f64> {
    let mut total = 0.0;
    for part in s.trim().split(':') {
        total = total * 60.0 + part.parse::<f64>().ok()?;
    }
    (total.is_finite() && total > 0.0).then_some(total)
}

fn is_url(input: &str) -> bool {
    let lower = input.get(..8).unwrap_or(input).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// Runs ffprobe on a local path or an http(s) URL and checks that the result is a video that
/// can be encoded: it has a video stream and a known, non-zero duration.
/// The demuxers a source may be read with. Playlist and script formats (HLS, concat, image
/// sequences…) are left out: a crafted "video" of that kind names other files, and would let
/// a client read files on the server. Matched by ffmpeg against each demuxer's name list.
pub const INPUT_FORMATS: &str =
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,flv,asf,mpeg,mxf,ogg,gif,\
h264,hevc,m4v,mpegvideo,yuv4mpegpipe,ivf,obu,nut,dv,wav,mp3,aac,flac";

pub async fn probe(tools: &Tools, input: &str, timeout: Duration) -> Result<MediaInfo, MediaError> {
    let url = is_url(input);
    let mut args: Vec<String> = ["-v", "error", "-print_format", "json", "-show_format"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push("-show_streams".into());
    let target = if url {
        // A remote source may only be fetched over HTTP(S): no file:, concat:, subfile: or
        // other protocols a crafted playlist could name.
        args.extend(["-protocol_whitelist".into(), "http,https,tcp,tls".into()]);
        // Give up on a stalled connection (microseconds) instead of hanging until the timeout.
        args.extend(["-rw_timeout".into(), timeout.as_micros().to_string()]);
        input.to_string()
    } else {
        if !tokio::fs::try_exists(input).await? {
            return Err(MediaError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("input file {input} does not exist"),
            )));
        }
        // `file:` keeps a path with a colon or a leading dash from being read as something else.
        format!("file:{input}")
    };
    args.extend(["-format_whitelist".into(), INPUT_FORMATS.into()]);
    args.push("-i".into());
    args.push(target.clone());

    let opts = RunOptions {
        timeout: Some(timeout),
        ..Default::default()
    };
    let output = match run(&tools.ffprobe, &args, opts, &mut |_: &str| {}).await {
        Ok(out) => out,
        Err(ProcessError::Failed {
            command,
            code,
            stderr_tail,
        }) => {
            let reason = probe_reason(&stderr_tail, &[&target, input]);
            if is_environment_problem(&stderr_tail, url) {
                return Err(MediaError::Process(ProcessError::Failed {
                    command,
                    code,
                    stderr_tail,
                }));
            }
            tracing::info!(%command, %reason, "ffprobe rejected the input");
            let message = if url && stderr_tail.contains("Server returned 4") {
                format!("the source URL could not be downloaded ({reason})")
            } else if reason.is_empty() {
                "the file is not a readable video".to_string()
            } else {
                format!("the file is not a readable video (ffprobe: {reason})")
            };
            return Err(MediaError::NotAVideo(message));
        }
        Err(e) => return Err(e.into()),
    };
    let info = parse_ffprobe_json(&output.stdout)?;
    check_encodable(&info)?;
    Ok(info)
}

/// Rejects what parsed but cannot be encoded as a video.
pub(crate) fn check_encodable(info: &MediaInfo) -> Result<(), MediaError> {
    if info.video.is_none() {
        return Err(MediaError::NotAVideo(
            "the file has no video stream".to_string(),
        ));
    }
    if info.duration_sec.is_none() {
        return Err(MediaError::NotAVideo(
            "the file has no known duration (a still image or a broken stream), so it cannot be encoded as a video"
                .to_string(),
        ));
    }
    Ok(())
}

/// Failures that are not the input's fault: the file vanished, a permission problem, or a
/// network error on a URL (which may well work on retry). HTTP 4xx answers are the input's.
fn is_environment_problem(stderr: &str, url: bool) -> bool {
    const LOCAL: &[&str] = &[
        "No such file or directory",
        "Permission denied",
        "Input/output error",
    ];
    const NETWORK: &[&str] = &[
        "Connection refused",
        "Connection timed out",
        "Connection reset",
        "Network is unreachable",
        "Temporary failure in name resolution",
        "Server returned 5",
        "timed out",
    ];
    LOCAL.iter().any(|m| stderr.contains(m)) || (url && NETWORK.iter().any(|m| stderr.contains(m)))
}

/// ffprobe's own words, deduplicated, without log prefixes, the input name or other paths.
fn probe_reason(stderr: &str, names: &[&str]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for line in stderr.lines() {
        let mut line = line.trim().to_string();
        for name in names {
            if let Some(rest) = line.strip_prefix(&format!("{name}: ")) {
                line = rest.to_string();
            }
            line = line.replace(name, "<input>");
        }
        let line = clean_line(&line);
        if !line.is_empty() && !parts.contains(&line) {
            parts.push(line);
        }
    }
    let mut reason = parts.join("; ");
    if reason.chars().count() > 300 {
        reason = reason.chars().take(297).collect::<String>() + "...";
    }
    reason
}

#[cfg(test)]
#[path = "probe_tests.rs"]
mod tests;
