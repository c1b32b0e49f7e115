//! What a job needs from the worker that runs it, and what a worker can do, in one small
//! vocabulary the queue can match in SQL. A worker advertises tokens: a codec name (`h264`)
//! for every codec it can encode on CPU or GPU, `gpu:<codec>` for every codec it has a
//! working GPU encoder for, and whether its ffmpeg has libvmaf. A job needs one encoder
//! token (`gpu:<codec>` under `policy: gpu_only`, the plain codec otherwise, since
//! `gpu_first` falls back to CPU) and libvmaf when it is VMAF-optimised.

use crate::spec::{Codec, EncodeSpec, Optimize, Policy};
use crate::WireEnum;
use serde::{Deserialize, Serialize};

/// What a queued job needs from a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Needs {
    /// An encoder token (see the module note).
    pub encoder: String,
    pub vmaf: bool,
}

impl Needs {
    pub fn of(spec: &EncodeSpec) -> Self {
        let encoder = match spec.policy {
            Policy::GpuOnly => gpu_token(spec.codec),
            Policy::GpuFirst | Policy::Fastest => spec.codec.as_str().to_string(),
        };
        Self {
            encoder,
            vmaf: spec.optimize == Optimize::Vmaf,
        }
    }

    /// Only a few workers may have these; the rest of the fleet cannot stand in.
    pub fn is_special(&self) -> bool {
        self.vmaf || self.encoder.starts_with("gpu:")
    }

    /// The failure message for a job no live worker can run, given what the live workers
    /// can do: it names only what is missing, and says what to change.
    pub fn unmet_message(&self, live: &[WorkerCaps]) -> String {
        let encoder_somewhere = live.iter().any(|w| w.tokens.contains(&self.encoder));
        let vmaf_somewhere = live.iter().any(|w| w.libvmaf);
        let encoder_want = match self.encoder.strip_prefix("gpu:") {
            Some(codec) => format!(
                "a GPU encoder for {codec} (policy gpu_only); use policy gpu_first or fastest to allow CPU encoding"
            ),
            None => format!(
                "an encoder for {codec}; start a worker whose ffmpeg has one, or choose another codec",
                codec = self.encoder
            ),
        };
        let vmaf_want =
            "ffmpeg with libvmaf (optimize: vmaf); use optimize: none to skip the quality search";
        let mut wants = Vec::new();
        if !encoder_somewhere {
            wants.push(encoder_want.clone());
        }
        if self.vmaf && !vmaf_somewhere {
            wants.push(vmaf_want.to_string());
        }
        if wants.is_empty() {
            // Each part exists, but on different workers.
            return format!(
                "no running worker can take this job: none has both {} and libvmaf; start a worker whose ffmpeg has both, or use optimize: none to skip the quality search",
                encoder_want.split(';').next().unwrap_or_default()
            );
        }
        format!(
            "no running worker can take this job: it needs {}",
            wants.join(", and ")
        )
    }
}

/// The token for a GPU encoder of `codec`.
pub fn gpu_token(codec: Codec) -> String {
    format!("gpu:{}", codec.as_str())
}

/// What a worker process can do, as registered in the worker table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerCaps {
    /// ffmpeg names of the CPU encoders (libx264, …).
    pub encoders: Vec<String>,
    /// ffmpeg names of the GPU encoders that passed a test encode (h264_nvenc, …).
    pub gpu_encoders: Vec<String>,
    pub libvmaf: bool,
    /// Jobs this process runs at once.
    pub slots: u32,
    /// The ffmpeg version string, for operators.
    pub ffmpeg: String,
    /// Encoder tokens (see the module note) the queue matches `Needs::encoder` against.
    pub tokens: Vec<String>,
}

impl WorkerCaps {
    /// Whether a worker with these capabilities can run a job with `needs`.
    pub fn can_run(&self, needs: &Needs) -> bool {
        self.tokens.contains(&needs.encoder) && (!needs.vmaf || self.libvmaf)
    }

    /// The tokens as one string, `,h264,gpu:h264,`, so SQL can test membership of
    /// `',' || need || ','` with a substring search on either backend.
    pub fn token_list(&self) -> String {
        format!(",{},", self.tokens.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Resolution;

    fn caps(tokens: &[&str], libvmaf: bool) -> WorkerCaps {
        WorkerCaps {
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            libvmaf,
            ..Default::default()
        }
    }

    #[test]
    fn policies_map_to_tokens() {
        let mut spec = EncodeSpec::new(Codec::H265, Resolution::P720, 30);
        assert_eq!(Needs::of(&spec).encoder, "h265");
        spec.policy = Policy::GpuOnly;
        assert_eq!(Needs::of(&spec).encoder, "gpu:h265");
        assert!(Needs::of(&spec).is_special());
        spec.policy = Policy::Fastest;
        spec.optimize = Optimize::Vmaf;
        let needs = Needs::of(&spec);
        assert_eq!((needs.encoder.as_str(), needs.vmaf), ("h265", true));
        assert!(needs.is_special());
    }

    #[test]
    fn matching_needs_every_part() {
        let cpu = caps(&["h264", "h265", "av1"], false);
        let gpu = caps(&["h264", "gpu:h264"], true);
        let plain = Needs {
            encoder: "h264".into(),
            vmaf: false,
        };
        let on_gpu = Needs {
            encoder: "gpu:h264".into(),
            vmaf: false,
        };
        let vmaf = Needs {
            encoder: "av1".into(),
            vmaf: true,
        };
        assert!(cpu.can_run(&plain) && gpu.can_run(&plain));
        assert!(!cpu.can_run(&on_gpu) && gpu.can_run(&on_gpu));
        assert!(!cpu.can_run(&vmaf) && !gpu.can_run(&vmaf));
        assert_eq!(gpu.token_list(), ",h264,gpu:h264,");
        assert!(on_gpu
            .unmet_message(std::slice::from_ref(&cpu))
            .contains("gpu_first"));
        // Only what is missing is named.
        let no_vmaf = vmaf.unmet_message(std::slice::from_ref(&cpu));
        assert!(
            no_vmaf.contains("libvmaf") && !no_vmaf.contains("an encoder for"),
            "{no_vmaf}"
        );
        let mut av1_only = cpu.clone();
        av1_only.libvmaf = false;
        let h264_vmaf = caps(&["h264"], true);
        let split = vmaf.unmet_message(&[av1_only, h264_vmaf]);
        assert!(
            split.contains("none has both an encoder for av1"),
            "{split}"
        );
        let nothing = vmaf.unmet_message(&[]);
        assert!(
            nothing.contains("an encoder for av1") && nothing.contains("libvmaf"),
            "{nothing}"
        );
    }
}
