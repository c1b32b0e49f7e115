//! What an encode means: codec, resolution box, fps cap, container, speed/quality knobs.

use crate::{wire_enum, WireEnum};
use serde::{Deserialize, Serialize};

wire_enum!(Codec { H264 => "h264", H265 => "h265", Av1 => "av1" });
wire_enum!(Resolution {
    P480 => "480p",
    P720 => "720p",
    P1080 => "1080p",
    P1440 => "1440p",
    P2160 => "2160p",
    P4320 => "4320p",
});
wire_enum!(Container { Mp4 => "mp4", Mkv => "mkv", Webm => "webm", Mov => "mov" });
wire_enum!(Preset { Fast => "fast", Standard => "standard", Slow => "slow" });
wire_enum!(BitrateTier { Low => "low", Medium => "medium", High => "high" });
wire_enum!(Quality { Good => "good", Better => "better", Best => "best" });
wire_enum!(Policy { Fastest => "fastest", GpuFirst => "gpu_first", GpuOnly => "gpu_only" });
wire_enum!(Optimize { None => "none", Vmaf => "vmaf" });
wire_enum!(Priority { Normal => "normal", High => "high" });

impl Priority {
    /// The queue's order: higher is claimed first.
    pub fn queue_rank(self) -> i32 {
        match self {
            Self::Normal => 0,
            Self::High => 10,
        }
    }
}

/// The highest fps cap a job may ask for (pricing's fps bands must reach it).
pub const MAX_FPS: u32 = 240;

impl Resolution {
    /// The landscape bounding box (long side, short side) of this resolution.
    pub fn box_dims(self) -> (u32, u32) {
        match self {
            Self::P480 => (854, 480),
            Self::P720 => (1280, 720),
            Self::P1080 => (1920, 1080),
            Self::P1440 => (2560, 1440),
            Self::P2160 => (3840, 2160),
            Self::P4320 => (7680, 4320),
        }
    }
}

impl Container {
    pub fn extension(self) -> &'static str {
        self.as_str()
    }

    pub fn mime_type(self) -> &'static str {
        match self {
            Self::Mp4 => "video/mp4",
            Self::Mkv => "video/x-matroska",
            Self::Webm => "video/webm",
            Self::Mov => "video/quicktime",
        }
    }

    /// WebM only carries VP8/VP9/AV1 video, so of ours only AV1; ffmpeg's QuickTime muxer
    /// refuses AV1 (it belongs in MP4, Matroska or WebM).
    pub fn supports(self, codec: Codec) -> bool {
        !matches!(
            (self, codec),
            (Self::Webm, Codec::H264 | Codec::H265) | (Self::Mov, Codec::Av1)
        )
    }
}

/// A validated encode request. Defaults follow the contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncodeSpec {
    pub codec: Codec,
    pub resolution: Resolution,
    /// A cap, never a target: a 24 fps source asked for 30 stays 24.
    pub fps: u32,
    pub container: Container,
    pub preset: Preset,
    pub bitrate_tier: BitrateTier,
    pub passes: u8,
    pub policy: Policy,
    pub quality: Option<Quality>,
    pub optimize: Optimize,
    pub vmaf_target: Option<f64>,
}

impl EncodeSpec {
    pub fn new(codec: Codec, resolution: Resolution, fps: u32) -> Self {
        Self {
            codec,
            resolution,
            fps,
            container: Container::Mp4,
            preset: Preset::Fast,
            bitrate_tier: BitrateTier::Medium,
            passes: 1,
            policy: Policy::GpuFirst,
            quality: None,
            optimize: Optimize::None,
            vmaf_target: None,
        }
    }

    /// Rules that span fields; the message says what to change.
    pub fn check_combination(&self) -> Result<(), String> {
        if !self.container.supports(self.codec) {
            let fits: Vec<&str> = Container::ALL
                .iter()
                .filter(|c| c.supports(self.codec))
                .map(|c| c.as_str())
                .collect();
            return Err(format!(
                "{} video cannot be stored in {}: use container {} for {}",
                self.codec,
                self.container,
                fits.join(", "),
                self.codec
            ));
        }
        if self.optimize == Optimize::Vmaf && self.passes > 1 {
            // The quality search settles on one constant-quality setting, which is a 1-pass
            // encode; a second pass would only be billed, never run.
            return Err(
                "optimize \"vmaf\" encodes in one pass at the quality setting its search picks: send passes 1 (or leave it out) with optimize vmaf (for a job already created, through approve-unified: confirm does not change passes), or optimize none for a 2-pass encode"
                    .into(),
            );
        }
        Ok(())
    }

    /// The VMAF a `optimize: "vmaf"` job aims at: its `vmafTarget`, else the documented
    /// default ([`crate::vmaf::DEFAULT_VMAF_TARGET`]). `None` for other jobs.
    pub fn effective_vmaf_target(&self) -> Option<f64> {
        (self.optimize == Optimize::Vmaf)
            .then(|| self.vmaf_target.unwrap_or(crate::vmaf::DEFAULT_VMAF_TARGET))
    }

    /// The effective quality (contract: optional, service default `better`).
    pub fn quality_or_default(&self) -> Quality {
        self.quality.unwrap_or(Quality::Better)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webm_takes_only_av1() {
        let mut s = EncodeSpec::new(Codec::H264, Resolution::P720, 30);
        s.container = Container::Webm;
        assert!(s
            .check_combination()
            .unwrap_err()
            .contains("h264 video cannot be stored in webm"));
        s.codec = Codec::Av1;
        assert!(s.check_combination().is_ok());
        s.container = Container::Mov;
        assert!(s
            .check_combination()
            .unwrap_err()
            .contains("use container mp4, mkv, webm for av1"));
    }

    #[test]
    fn vmaf_is_one_pass_and_has_a_default_target() {
        let mut s = EncodeSpec::new(Codec::H264, Resolution::P720, 30);
        assert_eq!(s.effective_vmaf_target(), None);
        s.optimize = Optimize::Vmaf;
        assert_eq!(
            s.effective_vmaf_target(),
            Some(crate::vmaf::DEFAULT_VMAF_TARGET)
        );
        s.vmaf_target = Some(95.0);
        assert_eq!(s.effective_vmaf_target(), Some(95.0));
        assert!(s.check_combination().is_ok());
        s.passes = 2;
        assert!(s.check_combination().unwrap_err().contains("send passes 1"));
    }

    #[test]
    fn wire_round_trip() {
        assert_eq!(Resolution::parse("1080p"), Some(Resolution::P1080));
        assert_eq!(Policy::parse("gpu_only"), Some(Policy::GpuOnly));
        assert_eq!(Codec::parse("vp9"), None);
        let s = EncodeSpec::new(Codec::Av1, Resolution::P480, 24);
        let back: EncodeSpec = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
