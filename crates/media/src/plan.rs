//! Pure argv planning for one encode: output size from the display frame and the resolution
//! box, the filter chain, encoder, rate control (CRF with a VBV cap, or 2-pass ABR), audio and
//! container flags. No I/O here; every unusual ffmpeg flag says why it is there.

use std::path::Path;

use convertrilo_core::spec::{Codec, Container, Resolution};
use convertrilo_core::EncodeSpec;

use crate::error::MediaError;
use crate::probe::MediaInfo;
pub(crate) use crate::rate::constant_quality_args;
pub use crate::rate::default_crf;
use crate::rate::{target_kbps, RateControl};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum VideoEncoder {
    #[serde(rename = "libx264")]
    Libx264,
    #[serde(rename = "libx265")]
    Libx265,
    #[serde(rename = "libsvtav1")]
    Libsvtav1,
    #[serde(rename = "h264_nvenc")]
    H264Nvenc,
    #[serde(rename = "hevc_nvenc")]
    HevcNvenc,
    #[serde(rename = "av1_nvenc")]
    Av1Nvenc,
}

impl VideoEncoder {
    pub(crate) const ALL: [VideoEncoder; 6] = [
        Self::Libx264,
        Self::Libx265,
        Self::Libsvtav1,
        Self::H264Nvenc,
        Self::HevcNvenc,
        Self::Av1Nvenc,
    ];

    pub fn ffmpeg_name(&self) -> &'static str {
        match self {
            Self::Libx264 => "libx264",
            Self::Libx265 => "libx265",
            Self::Libsvtav1 => "libsvtav1",
            Self::H264Nvenc => "h264_nvenc",
            Self::HevcNvenc => "hevc_nvenc",
            Self::Av1Nvenc => "av1_nvenc",
        }
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Self::H264Nvenc | Self::HevcNvenc | Self::Av1Nvenc)
    }

    pub fn codec(&self) -> Codec {
        match self {
            Self::Libx264 | Self::H264Nvenc => Codec::H264,
            Self::Libx265 | Self::HevcNvenc => Codec::H265,
            Self::Libsvtav1 | Self::Av1Nvenc => Codec::Av1,
        }
    }

    pub(crate) fn cpu_for(codec: Codec) -> Self {
        match codec {
            Codec::H264 => Self::Libx264,
            Codec::H265 => Self::Libx265,
            Codec::Av1 => Self::Libsvtav1,
        }
    }

    pub(crate) fn nvenc_for(codec: Codec) -> Self {
        match codec {
            Codec::H264 => Self::H264Nvenc,
            Codec::H265 => Self::HevcNvenc,
            Codec::Av1 => Self::Av1Nvenc,
        }
    }
}

/// Everything [`plan_encode`] needs.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub info: &'a MediaInfo,
    pub spec: &'a EncodeSpec,
    pub encoder: VideoEncoder,
    pub allow_upscale: bool,
    pub input: &'a Path,
    pub output: &'a Path,
    /// Prefix for 2-pass statistics files (inside the job's scratch directory).
    pub passlog_prefix: &'a Path,
    /// Encode at this constant-quality setting (CRF, or CQ on NVENC) in one pass without the
    /// bitrate tier's VBV cap: what a VMAF-targeted job's search chose. `None`: the setting
    /// follows `quality`, capped by the bitrate tier.
    pub crf: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EncodePlan {
    pub width: u32,
    pub height: u32,
    /// The fps cap when the source was faster than it (a `fps=N` filter is in the chain).
    pub fps_cap_applied: Option<u32>,
    pub pix_fmt: &'static str,
    pub encoder: VideoEncoder,
    pub has_audio: bool,
    /// The `-filter:v` chain (scale, square pixels, fps cap, pixel format): what turns source
    /// frames into the frames the encoder sees. VMAF scoring puts the reference through it.
    pub filter: String,
    /// The full argv of each ffmpeg run, without the program.
    pub passes: Vec<Vec<String>>,
}

/// Fits the display frame inside the resolution's box (landscape or portrait), never upscaling
/// unless allowed; each side rounded, then down to even, at least 2.
pub fn output_dimensions(
    display: (f64, f64),
    resolution: Resolution,
    allow_upscale: bool,
) -> (u32, u32) {
    let (dw, dh) = display;
    if !(dw.is_finite() && dh.is_finite() && dw > 0.0 && dh > 0.0) {
        return (2, 2);
    }
    let (long, short) = resolution.box_dims();
    let (bw, bh) = if dw >= dh {
        (long, short)
    } else {
        (short, long)
    };
    let mut scale = (f64::from(bw) / dw).min(f64::from(bh) / dh);
    if scale > 1.0 && !allow_upscale {
        scale = 1.0;
    }
    let side = |d: f64| -> u32 {
        let rounded = (d * scale).round().min(f64::from(u32::MAX)) as u32;
        (rounded & !1).max(2)
    };
    (side(dw), side(dh))
}

/// Builds the ffmpeg argv for every pass of an encode.
pub fn plan_encode(p: &PlanInput) -> Result<EncodePlan, MediaError> {
    let spec = p.spec;
    let video = p
        .info
        .video
        .as_ref()
        .ok_or_else(|| MediaError::NotAVideo("the file has no video stream".to_string()))?;
    if p.encoder.codec() != spec.codec {
        return Err(MediaError::Unsupported(format!(
            "encoder {} does not produce {} video",
            p.encoder.ffmpeg_name(),
            spec.codec
        )));
    }
    // Also refuses pairs ffmpeg cannot mux (h264 in webm, av1 in mov).
    spec.check_combination().map_err(MediaError::Unsupported)?;
    let two_pass = match spec.passes {
        // A chosen constant-quality setting is always one pass.
        _ if p.crf.is_some() => false,
        1 => false,
        2 => true,
        n => {
            return Err(MediaError::Unsupported(format!(
                "passes must be 1 or 2, not {n}"
            )))
        }
    };
    let display = p
        .info
        .display_dimensions()
        .filter(|&(w, h)| w > 0.0 && h > 0.0)
        .ok_or_else(|| MediaError::NotAVideo("the video stream has no frame size".to_string()))?;
    let (width, height) = output_dimensions(display, spec.resolution, p.allow_upscale);
    let fps_cap_applied = video
        .fps
        .filter(|&fps| spec.fps > 0 && fps > f64::from(spec.fps) + 0.01)
        .map(|_| spec.fps);
    let pix_fmt = pix_fmt_for(p.encoder, video.bit_depth);

    let mut filter = format!("scale={width}:{height},setsar=1");
    if let Some(cap) = fps_cap_applied {
        filter.push_str(&format!(",fps={cap}"));
    }
    filter.push_str(&format!(",format={pix_fmt}"));

    let input = format!("file:{}", utf8(p.input)?);
    let output = format!("file:{}", utf8(p.output)?);
    let target = target_kbps(spec, (width, height), p.encoder.codec());
    let rc = RateControl {
        encoder: p.encoder,
        preset: spec.preset,
        quality: spec.quality_or_default(),
        target_kbps: target,
        passlog: utf8(p.passlog_prefix)?,
        crf: p.crf,
    };
    // NVENC does its 2-pass inside one run (`-multipass`), so it never needs a separate pass 1.
    let separate_passes = two_pass && !p.encoder.is_gpu();
    if separate_passes && p.encoder == VideoEncoder::Libx265 && rc.passlog.contains([':', '=']) {
        return Err(MediaError::Unsupported(
            "2-pass h265 needs a scratch directory whose path has no ':' or '='".to_string(),
        ));
    }

    let video_args = |pass: Option<u8>| -> Vec<String> {
        let mut a = strings(&["-map", &format!("0:{}", video.index)]);
        if pass != Some(1) {
            if let Some(audio) = &p.info.audio {
                a.extend(strings(&["-map", &format!("0:{}", audio.index)]));
            }
        }
        a.extend(strings(&[
            "-filter:v",
            &filter,
            "-c:v",
            p.encoder.ffmpeg_name(),
        ]));
        a.extend(rc.args(two_pass, pass));
        a
    };

    let mut passes = Vec::new();
    if separate_passes {
        let mut first = head(&input);
        first.extend(video_args(Some(1)));
        // Pass 1 only writes statistics: no audio, and the null muxer writes nothing.
        first.extend(strings(&["-an", "-f", "null", "-"]));
        passes.push(first);
    }
    let mut last = head(&input);
    last.extend(video_args(separate_passes.then_some(2)));
    if spec.codec == Codec::H265 && matches!(spec.container, Container::Mp4 | Container::Mov) {
        // Apple players only accept HEVC in MP4/MOV under the `hvc1` tag (ffmpeg defaults to hev1).
        last.extend(strings(&["-tag:v", "hvc1"]));
    }
    match &p.info.audio {
        Some(audio) => last.extend(audio_args(spec.container, audio.channels)),
        None => last.push("-an".to_string()),
    }
    last.extend(container_args(spec.container));
    last.push(output);
    passes.push(last);

    Ok(EncodePlan {
        width,
        height,
        fps_cap_applied,
        pix_fmt,
        encoder: p.encoder,
        has_audio: p.info.audio.is_some(),
        filter,
        passes,
    })
}

pub(crate) fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn utf8(path: &Path) -> Result<&str, MediaError> {
    path.to_str().ok_or_else(|| {
        MediaError::Unsupported(format!("path is not valid UTF-8: {}", path.display()))
    })
}

/// Flags every run shares, then the input.
fn head(input: &str) -> Vec<String> {
    let mut a = head_args();
    a.extend(input_args(input));
    a
}

/// Flags every ffmpeg run shares, before its inputs.
pub(crate) fn head_args() -> Vec<String> {
    strings(&[
        "-hide_banner",
        "-nostdin",
        "-y",
        "-v",
        "error",
        // No interactive status line on stderr; progress comes as key=value blocks on stdout.
        "-nostats",
        "-progress",
        "pipe:1",
    ])
}

/// One input (`file:` URL): input options apply per input, so each gets the whitelist.
pub(crate) fn input_args(input: &str) -> Vec<String> {
    strings(&[
        // Only plain media demuxers: see `probe::INPUT_FORMATS`.
        "-format_whitelist",
        crate::probe::INPUT_FORMATS,
        // `file:` keeps a path with a colon or a leading dash from being read as a protocol or
        // an option.
        "-i",
        input,
    ])
}

/// 4:2:0 everywhere for playback compatibility; 10-bit kept for HEVC/AV1 (H.264 High 10 plays
/// almost nowhere). NVENC takes 10-bit as P010 rather than planar yuv420p10le.
fn pix_fmt_for(encoder: VideoEncoder, bit_depth: u32) -> &'static str {
    match encoder {
        VideoEncoder::Libx264 | VideoEncoder::H264Nvenc => "yuv420p",
        VideoEncoder::Libx265 | VideoEncoder::Libsvtav1 if bit_depth > 8 => "yuv420p10le",
        VideoEncoder::HevcNvenc | VideoEncoder::Av1Nvenc if bit_depth > 8 => "p010le",
        _ => "yuv420p",
    }
}

/// First audio track: AAC 128k for mp4/mov/mkv, Opus 96k for webm.
fn audio_args(container: Container, channels: u32) -> Vec<String> {
    let mut a = match container {
        Container::Webm => strings(&["-c:a", "libopus", "-b:a", "96k"]),
        Container::Mp4 | Container::Mov | Container::Mkv => {
            strings(&["-c:a", "aac", "-b:a", "128k"])
        }
    };
    if container == Container::Webm && channels > 2 {
        // libopus only takes the Vorbis-order surround layouts (it refuses 2.1, 4.0, 6.0, …):
        // convert to the nearest one it accepts. 5.1 and 7.1 pass unchanged.
        a.extend(strings(&[
            "-filter:a",
            "aformat=channel_layouts=7.1|6.1|5.1|5.0|quad|3.0|stereo|mono",
        ]));
    } else if container != Container::Webm && channels > 8 {
        // The AAC encoder stops at 8 channels (22.2 and the like fail): downmix to 7.1.
        a.extend(strings(&[
            "-filter:a",
            "aformat=channel_layouts=7.1|5.1|stereo",
        ]));
    }
    a
}

/// Explicit muxer (scratch output names may lack an extension) and its options.
fn container_args(container: Container) -> Vec<String> {
    match container {
        // Index at the front so playback can start before the whole file is downloaded.
        Container::Mp4 => strings(&["-f", "mp4", "-movflags", "+faststart"]),
        Container::Mov => strings(&["-f", "mov", "-movflags", "+faststart"]),
        Container::Mkv => strings(&["-f", "matroska"]),
        Container::Webm => strings(&["-f", "webm"]),
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
