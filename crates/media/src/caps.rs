//! What this machine's ffmpeg can do, detected once at start-up: versions, CPU encoders, GPU
//! encoders that really work (listed is not enough without a GPU), libvmaf and audio encoders.
//! `choose_encoder` turns a codec and a policy into an encoder or a message for the user.

use std::time::Duration;

use convertrilo_core::capability::{gpu_token, WorkerCaps};
use convertrilo_core::spec::{Codec, Policy};
use convertrilo_core::WireEnum;

use crate::error::MediaError;
use crate::plan::VideoEncoder;
use crate::process::{run, RunOptions, Tools};

const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
const GPU_TEST_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, serde::Serialize)]
pub struct Capabilities {
    pub ffmpeg_version: String,
    pub ffprobe_version: String,
    pub cpu_encoders: Vec<VideoEncoder>,
    /// Listed by ffmpeg AND a 0.1 s test encode succeeded.
    pub gpu_encoders: Vec<VideoEncoder>,
    pub libvmaf: bool,
    pub aac: bool,
    pub libopus: bool,
}

impl Capabilities {
    pub async fn detect(tools: &Tools) -> Result<Capabilities, MediaError> {
        let (ffmpeg_version, ffprobe_version, encoders, filters) = tokio::try_join!(
            query(&tools.ffmpeg, &["-hide_banner", "-version"]),
            query(&tools.ffprobe, &["-hide_banner", "-version"]),
            query(&tools.ffmpeg, &["-hide_banner", "-encoders"]),
            query(&tools.ffmpeg, &["-hide_banner", "-filters"]),
        )?;
        let encoders = listed_names(&encoders);
        let filters = listed_names(&filters);
        let listed = |name: &str| encoders.iter().any(|e| e == name);

        let mut cpu_encoders = Vec::new();
        let mut gpu_encoders = Vec::new();
        for encoder in VideoEncoder::ALL {
            if !listed(encoder.ffmpeg_name()) {
                continue;
            }
            if !encoder.is_gpu() {
                cpu_encoders.push(encoder);
            } else if gpu_test_encode(tools, encoder).await {
                gpu_encoders.push(encoder);
            }
        }
        let caps = Capabilities {
            ffmpeg_version: version_of(&ffmpeg_version),
            ffprobe_version: version_of(&ffprobe_version),
            cpu_encoders,
            gpu_encoders,
            libvmaf: filters.iter().any(|f| f == "libvmaf"),
            aac: listed("aac"),
            libopus: listed("libopus"),
        };
        tracing::debug!(summary = %caps.summary(), "media capabilities detected");
        Ok(caps)
    }

    /// What a worker process with `slots` concurrent jobs advertises in the worker registry.
    pub fn worker_caps(&self, slots: u32) -> WorkerCaps {
        let names = |v: &[VideoEncoder]| v.iter().map(|e| e.ffmpeg_name().to_string()).collect();
        let mut tokens: Vec<String> = Vec::new();
        for e in self.cpu_encoders.iter().chain(&self.gpu_encoders) {
            let codec = e.codec().as_str().to_string();
            if !tokens.contains(&codec) {
                tokens.push(codec);
            }
        }
        tokens.extend(self.gpu_encoders.iter().map(|e| gpu_token(e.codec())));
        WorkerCaps {
            encoders: names(&self.cpu_encoders),
            gpu_encoders: names(&self.gpu_encoders),
            libvmaf: self.libvmaf,
            slots,
            ffmpeg: self.ffmpeg_version.clone(),
            tokens,
        }
    }

    /// One line for start-up logs.
    pub fn summary(&self) -> String {
        let names = |v: &[VideoEncoder]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter()
                    .map(|e| e.ffmpeg_name())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        format!(
            "ffmpeg {} / ffprobe {}; CPU encoders: {}; GPU encoders: {}; libvmaf: {}; aac: {}; libopus: {}",
            self.ffmpeg_version,
            self.ffprobe_version,
            names(&self.cpu_encoders),
            names(&self.gpu_encoders),
            yes_no(self.libvmaf),
            yes_no(self.aac),
            yes_no(self.libopus),
        )
    }
}

async fn query(program: &std::path::Path, args: &[&str]) -> Result<String, MediaError> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let opts = RunOptions {
        timeout: Some(QUERY_TIMEOUT),
        ..Default::default()
    };
    Ok(run(program, &args, opts, &mut |_: &str| {}).await?.stdout)
}

/// Encodes 0.1 s of black frames to nowhere; NVENC fails at once without a usable GPU/driver.
async fn gpu_test_encode(tools: &Tools, encoder: VideoEncoder) -> bool {
    let args: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        "-f",
        "lavfi",
        "-i",
        // NVENC has a minimum frame size; 256×256 is above it for every codec.
        "color=c=black:s=256x256:r=25:d=0.1",
        "-c:v",
        encoder.ffmpeg_name(),
        "-f",
        "null",
        "-",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let opts = RunOptions {
        timeout: Some(GPU_TEST_TIMEOUT),
        ..Default::default()
    };
    match run(&tools.ffmpeg, &args, opts, &mut |_: &str| {}).await {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(encoder = encoder.ffmpeg_name(), error = %e, "GPU encoder not usable");
            false
        }
    }
}

/// `ffmpeg version n9.0.2-17-g2a571b6068-20260930 Copyright …` → `n9.0.2-17-g2a571b6068-20260930`.
fn version_of(output: &str) -> String {
    output
        .lines()
        .next()
        .and_then(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "version")?;
            words.next()
        })
        .unwrap_or("unknown")
        .to_string()
}

/// Names from `-encoders`/`-filters` listings: the second column of each row after the legend,
/// which ends with a `------` line.
fn listed_names(output: &str) -> Vec<String> {
    let body: Vec<&str> = match output
        .lines()
        .position(|l| l.trim_start().starts_with("---"))
    {
        Some(sep) => output.lines().skip(sep + 1).collect(),
        None => output.lines().collect(),
    };
    body.iter()
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let flags = cols.next()?;
            let name = cols.next()?;
            let is_flags = flags.len() >= 2
                && flags
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == '.' || c == '|');
            is_flags.then(|| name.to_string())
        })
        .collect()
}

/// Picks the video encoder for a codec under a policy, or says why none can be used.
pub fn choose_encoder(
    codec: Codec,
    policy: Policy,
    caps: &Capabilities,
) -> Result<VideoEncoder, String> {
    let gpu = VideoEncoder::nvenc_for(codec);
    let cpu = VideoEncoder::cpu_for(codec);
    if caps.gpu_encoders.contains(&gpu) {
        return Ok(gpu);
    }
    match policy {
        Policy::GpuOnly => Err(format!(
            "policy gpu_only needs a GPU encoder, but no GPU encoder for {codec} is available on this server; use policy gpu_first or fastest"
        )),
        Policy::GpuFirst | Policy::Fastest => {
            if caps.cpu_encoders.contains(&cpu) {
                Ok(cpu)
            } else {
                Err(format!(
                    "the {} encoder for {codec} is not available in this server's ffmpeg",
                    cpu.ffmpeg_name()
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(cpu: &[VideoEncoder], gpu: &[VideoEncoder]) -> Capabilities {
        Capabilities {
            ffmpeg_version: "9".into(),
            ffprobe_version: "5.1".into(),
            cpu_encoders: cpu.to_vec(),
            gpu_encoders: gpu.to_vec(),
            libvmaf: true,
            aac: true,
            libopus: true,
        }
    }

    #[test]
    fn policies() {
        use VideoEncoder::*;
        let cpu_only = caps(&[Libx264, Libx265, Libsvtav1], &[]);
        let with_gpu = caps(&[Libx264, Libx265, Libsvtav1], &[H264Nvenc, HevcNvenc]);
        for policy in [Policy::GpuFirst, Policy::Fastest] {
            assert_eq!(choose_encoder(Codec::H264, policy, &cpu_only), Ok(Libx264));
            assert_eq!(
                choose_encoder(Codec::H264, policy, &with_gpu),
                Ok(H264Nvenc)
            );
            assert_eq!(choose_encoder(Codec::Av1, policy, &with_gpu), Ok(Libsvtav1));
        }
        let err = choose_encoder(Codec::H264, Policy::GpuOnly, &cpu_only).unwrap_err();
        assert!(err.contains(
            "no GPU encoder for h264 is available on this server; use policy gpu_first or fastest"
        ));
        assert_eq!(
            choose_encoder(Codec::H265, Policy::GpuOnly, &with_gpu),
            Ok(HevcNvenc)
        );
        assert!(choose_encoder(Codec::Av1, Policy::GpuOnly, &with_gpu).is_err());
        let err = choose_encoder(Codec::Av1, Policy::GpuFirst, &caps(&[Libx264], &[])).unwrap_err();
        assert!(err.contains("libsvtav1"), "{err}");
    }

    #[test]
    fn listings_and_versions() {
        let encoders = "Encoders:\n V..... = Video\n A..... = Audio\n ------\n V....D libx264              libx264 H.264\n A....D aac                  AAC (Advanced Audio Coding)\n";
        assert_eq!(listed_names(encoders), ["libx264", "aac"]);
        let filters = "Filters:\n  T.. = Timeline support\n  | = Source or sink filter\n  ------\n .. libvmaf           VV->V      Calculate the VMAF\n TS scale   V->V   Scale\n";
        assert_eq!(listed_names(filters), ["libvmaf", "scale"]);
        assert_eq!(
            version_of(
                "ffprobe version 5.1.9-0+deb12u1 Copyright (c) 2007-2026 the FFmpeg developers\n"
            ),
            "5.1.9-0+deb12u1"
        );
        assert_eq!(version_of(""), "unknown");
        let s = caps(&[VideoEncoder::Libx264], &[]).summary();
        assert_eq!(s, "ffmpeg 9 / ffprobe 5.1; CPU encoders: libx264; GPU encoders: none; libvmaf: yes; aac: yes; libopus: yes");
    }
}
