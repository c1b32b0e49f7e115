//! What a VMAF-targeted encode (`optimize: "vmaf"`) reports: the target it aimed at, the VMAF
//! the whole output really scored, the quality setting the search chose and what the search
//! cost. Stored with the job and shown, unchanged, in status responses and webhook payloads.

use serde::{Deserialize, Serialize};

/// The target used when a job asks for `optimize: "vmaf"` without a `vmafTarget`: about where
/// most viewers stop telling the encode from its source on an ordinary screen, and the value
/// the contract's own CLI example uses.
pub const DEFAULT_VMAF_TARGET: f64 = 93.0;

/// How far below its target a measured VMAF may land and still count as meeting it. Scores of
/// one encode vary by a few tenths with the frames sampled, so a half point below the target
/// is not a meaningful miss; anything lower is reported as one.
pub const TARGET_TOLERANCE: f64 = 0.5;

/// The outcome of a VMAF-targeted encode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct VmafReport {
    /// The VMAF the job aimed at (`vmafTarget`, or the default of 93).
    pub target: f64,
    /// Mean VMAF of the delivered file against its source scaled the same way.
    pub mean: f64,
    /// 5th percentile of the per-frame scores: how the worst moments fared.
    pub p5: f64,
    /// True when `mean` is at least `target - 0.5`.
    pub target_met: bool,
    /// The quality setting the file was encoded with (CRF; lower is better quality).
    pub crf: f64,
    /// The CRF the same job would have used without `optimize: "vmaf"`.
    pub default_crf: f64,
    /// Encodes of sample material the search ran (each covers every sample at one setting).
    pub sample_encodes: u32,
    /// Full encodes of the file: 1, or 2 when the first missed the target by more than the
    /// samples predicted and was redone once at a corrected setting.
    pub full_encodes: u32,
    /// Bytes saved against encoding at `default_crf` (negative when the target needs more
    /// quality than the default gives). An estimate: the output's size scaled by the ratio
    /// of the sample encodes' sizes at the two settings.
    pub bytes_saved_vs_default: Option<i64>,
    /// The VMAF model scored with: `vmaf_v0.6.1`, or `vmaf_4k_v0.6.1` for 2160p outputs.
    pub model: String,
    /// Says plainly why the target was missed; absent when it was met.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message: Option<String>,
}

impl VmafReport {
    /// Whether a measured mean counts as meeting `target` (see [`TARGET_TOLERANCE`]).
    pub fn meets(target: f64, mean: f64) -> bool {
        mean >= target - TARGET_TOLERANCE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape_is_camel_case_and_round_trips() {
        let r = VmafReport {
            target: 93.0,
            mean: 93.4,
            p5: 90.1,
            target_met: true,
            crf: 23.5,
            default_crf: 22.0,
            sample_encodes: 2,
            full_encodes: 1,
            bytes_saved_vs_default: Some(1234),
            model: "vmaf_v0.6.1".into(),
            message: None,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["targetMet"], true);
        assert_eq!(v["bytesSavedVsDefault"], 1234);
        assert!(v.get("message").is_none());
        assert_eq!(serde_json::from_value::<VmafReport>(v).unwrap(), r);
        assert!(VmafReport::meets(93.0, 92.5) && !VmafReport::meets(93.0, 92.4));
    }
}
