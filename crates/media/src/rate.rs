//! Rate control: the CRF a job's quality maps to per encoder, the bitrate budget of its
//! resolution and tier, and the flags that put either into an encoder (CRF within a VBV cap,
//! 2-pass ABR, NVENC's own modes, or a chosen constant-quality setting for a VMAF target).

use convertrilo_core::spec::{BitrateTier, Codec, Preset, Quality, Resolution};
use convertrilo_core::{EncodeSpec, WireEnum};

use crate::plan::{strings, VideoEncoder};

/// The reference bitrate of the resolution the output really has (a small source that is not
/// upscaled is budgeted as the smallest box that holds it), × tier × codec efficiency.
pub(crate) fn target_kbps(spec: &EncodeSpec, out: (u32, u32), codec: Codec) -> u32 {
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

/// The CRF (CQ on NVENC) a job of this `quality` is encoded at when it does not search for a
/// VMAF target. Lower is better quality; the scales differ per encoder (AV1's runs to 63).
pub fn default_crf(encoder: VideoEncoder, quality: Quality) -> f64 {
    use VideoEncoder::*;
    let table: [u32; 3] = match encoder {
        Libx264 | H264Nvenc => [25, 22, 19],
        Libx265 | HevcNvenc => [28, 25, 22],
        Libsvtav1 | Av1Nvenc => [38, 33, 28],
    };
    f64::from(
        table[match quality {
            Quality::Good => 0,
            Quality::Better => 1,
            Quality::Best => 2,
        }],
    )
}

/// A CRF as ffmpeg takes it: `22`, `22.5`, `22.25`. SVT-AV1's `-crf` and NVENC's `-cq` take
/// whole numbers only, so theirs are rounded.
pub(crate) fn crf_arg(encoder: VideoEncoder, crf: f64) -> String {
    let crf = match encoder {
        VideoEncoder::Libx264 | VideoEncoder::Libx265 => (crf * 100.0).round() / 100.0,
        _ => crf.round(),
    };
    let text = format!("{crf:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The encoder's flags for one constant-quality pass at `crf`, without a bitrate cap: the
/// encoder, its preset, the rate control and (x265) the log level. Sample encodes of the VMAF
/// search use exactly these, so samples and the final encode differ only in their input.
pub(crate) fn constant_quality_args(
    encoder: VideoEncoder,
    preset: Preset,
    crf: f64,
) -> Vec<String> {
    let rc = RateControl {
        encoder,
        preset,
        quality: Quality::Better,
        target_kbps: 0,
        passlog: "",
        crf: Some(crf),
    };
    let mut a = strings(&["-c:v", encoder.ffmpeg_name()]);
    a.extend(rc.args(false, None));
    a
}

pub(crate) struct RateControl<'a> {
    pub encoder: VideoEncoder,
    pub preset: Preset,
    pub quality: Quality,
    pub target_kbps: u32,
    pub passlog: &'a str,
    /// A chosen constant-quality setting (VMAF search): no VBV cap, one pass.
    pub crf: Option<f64>,
}

impl RateControl<'_> {
    /// Preset and rate-control flags; `pass` is Some(1|2) for the runs of a CPU 2-pass encode.
    pub fn args(&self, two_pass: bool, pass: Option<u8>) -> Vec<String> {
        use VideoEncoder::*;
        let k = |kbps: u32| format!("{kbps}k");
        let target = k(self.target_kbps);
        let maxrate = k(self.target_kbps * 2);
        let bufsize = k(self.target_kbps * 4);
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
        if let Some(chosen) = self.crf {
            let crf = crf_arg(self.encoder, chosen);
            // The customer asked for a quality, not a bitrate: the VMAF target decides the
            // bitrate, so the tier's VBV cap (which would stop a hard source from reaching
            // the target) does not apply.
            match self.encoder {
                Libx264 | Libx265 | Libsvtav1 => a.extend(strings(&["-crf", &crf])),
                H264Nvenc | HevcNvenc | Av1Nvenc => {
                    a.extend(strings(&["-rc", "vbr", "-cq", &crf, "-b:v", "0"]))
                }
            }
            if self.encoder == Libx265 {
                a.extend(strings(&["-x265-params", "log-level=error"]));
            }
            return a;
        }
        let crf = crf_arg(self.encoder, default_crf(self.encoder, self.quality));
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
