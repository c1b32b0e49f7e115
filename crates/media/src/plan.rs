//! Pure argv planning for one encode: output size from the display frame and the resolution
//! box, the filter chain, encoder, rate control (CRF with a VBV cap, or 2-pass ABR), audio and
//! container flags. No I/O here; every unusual ffmpeg flag says why it is there.

use std::path::Path;

use convertrilo_core::spec::{BitrateTier, Codec, Container, Preset, Quality, Resolution};
use convertrilo_core::{EncodeSpec, WireEnum};

use crate::error::MediaError;
use crate::probe::MediaInfo;

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
        passes,
    })
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn utf8(path: &Path) -> Result<&str, MediaError> {
    path.to_str().ok_or_else(|| {
        MediaError::Unsupported(format!("path is not valid UTF-8: {}", path.display()))
    })
}

/// Flags every run shares, then the input.
fn head(input: &str) -> Vec<String> {
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

/// The reference bitrate of the resolution the output really has (a small source that is not
/// upscaled is budgeted as the smallest box that holds it), × tier × codec efficiency.
fn target_kbps(spec: &EncodeSpec, out: (u32, u32), codec: Codec) -> u32 {
    let (long, short) = (out.0.max(out.1), out.0.min(out.1));
    let effective = Resolution::ALL
        .iter()
        .copied()
        .find(|r| {
            let (bl, bs) = r.box_dims();
            long <= bl && short <= bs
        })
        .filter(|r| r.box_dims().0 < spec.resolution.box_dims().0)
        .unwrap_or(spec.resolution);
    let base: f64 = match effective {
        Resolution::P480 => 1200.0,
        Resolution::P720 => 2500.0,
        Resolution::P1080 => 5000.0,
        Resolution::P1440 => 9000.0,
        Resolution::P2160 => 18000.0,
        Resolution::P4320 => 50000.0,
    };
    let tier = match spec.bitrate_tier {
        BitrateTier::Low => 0.6,
        BitrateTier::Medium => 1.0,
        BitrateTier::High => 1.6,
    };
    let codec_factor = match codec {
        Codec::H264 => 1.0,
        Codec::H265 => 0.65,
        Codec::Av1 => 0.55,
    };
    (base * tier * codec_factor).round() as u32
}

struct RateControl<'a> {
    encoder: VideoEncoder,
    preset: Preset,
    quality: Quality,
    target_kbps: u32,
    passlog: &'a str,
}

impl RateControl<'_> {
    /// Preset and rate-control flags; `pass` is Some(1|2) for the runs of a CPU 2-pass encode.
    fn args(&self, two_pass: bool, pass: Option<u8>) -> Vec<String> {
        use VideoEncoder::*;
        let k = |kbps: u32| format!("{kbps}k");
        let target = k(self.target_kbps);
        let maxrate = k(self.target_kbps * 2);
        let bufsize = k(self.target_kbps * 4);
        let q = |table: [u32; 3]| {
            table[match self.quality {
                Quality::Good => 0,
                Quality::Better => 1,
                Quality::Best => 2,
            }]
            .to_string()
        };
        let pick = |table: [&'static str; 3]| {
            table[match self.preset {
                Preset::Fast => 0,
                Preset::Standard => 1,
                Preset::Slow => 2,
            }]
        };
        let mut a: Vec<String> = Vec::new();
        match self.encoder {
            Libx264 | Libx265 => {
                a.extend(strings(&["-preset", pick(["veryfast", "medium", "slow"])]))
            }
            Libsvtav1 => a.extend(strings(&["-preset", pick(["10", "8", "5"])])),
            H264Nvenc | HevcNvenc | Av1Nvenc => {
                a.extend(strings(&["-preset", pick(["p2", "p4", "p6"])]))
            }
        }
        let crf = match self.encoder {
            Libx264 | H264Nvenc => q([25, 22, 19]),
            Libx265 | HevcNvenc => q([28, 25, 22]),
            Libsvtav1 | Av1Nvenc => q([38, 33, 28]),
        };
        match (self.encoder, two_pass) {
            (Libx264 | Libx265, false) => a.extend(strings(&[
                "-crf", &crf, "-maxrate", &maxrate, "-bufsize", &bufsize,
            ])),
            // SVT-AV1 honours -maxrate with CRF as "capped CRF" (verified: a noisy clip at
            // crf 20 capped at 300k came out at ~315 kb/s instead of ~29 Mb/s).
            (Libsvtav1, false) => a.extend(strings(&[
                "-crf", &crf, "-maxrate", &maxrate, "-bufsize", &bufsize,
            ])),
            (Libx264 | Libx265, true) => a.extend(strings(&[
                "-b:v", &target, "-maxrate", &maxrate, "-bufsize", &bufsize,
            ])),
            // SVT-AV1 rejects a max bitrate outside CRF mode ("Max Bitrate only supported with
            // CRF mode"), and its VBR ignores the buffer size, so 2-pass is plain VBR.
            (Libsvtav1, true) => a.extend(strings(&["-b:v", &target])),
            // Constant quality within a VBV cap; -b:v 0 lets -cq drive the bitrate.
            (H264Nvenc | HevcNvenc | Av1Nvenc, false) => a.extend(strings(&[
                "-rc", "vbr", "-cq", &crf, "-b:v", "0", "-maxrate", &maxrate, "-bufsize", &bufsize,
            ])),
            // NVENC's own two passes over each frame at full resolution, in one run.
            (H264Nvenc | HevcNvenc | Av1Nvenc, true) => a.extend(strings(&[
                "-rc",
                "vbr",
                "-multipass",
                "fullres",
                "-b:v",
                &target,
                "-maxrate",
                &maxrate,
                "-bufsize",
                &bufsize,
            ])),
        }
        match (self.encoder, pass) {
            (Libx264 | Libsvtav1, Some(n)) => a.extend(strings(&[
                "-pass",
                &n.to_string(),
                "-passlogfile",
                self.passlog,
            ])),
            // ffmpeg's -pass/-passlogfile only reach libx265 in recent builds; x265's own
            // pass/stats parameters work in every ffmpeg. log-level=error silences x265's
            // banner and per-encode statistics on stderr.
            (Libx265, Some(n)) => a.extend(strings(&[
                "-x265-params",
                &format!("log-level=error:pass={n}:stats={}-x265.log", self.passlog),
            ])),
            (Libx265, None) => a.extend(strings(&["-x265-params", "log-level=error"])),
            _ => {}
        }
        a
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
