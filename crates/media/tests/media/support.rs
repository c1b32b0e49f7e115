//! Helpers for the end-to-end tests: finding the tools, making lavfi clips, running one
//! encode from probe to output probe, and looking for leftover processes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use convertrilo_core::spec::{Codec, Container, Preset, Resolution};
use convertrilo_core::EncodeSpec;
use convertrilo_media::{
    plan_encode, probe, run_encode, EncodePlan, MediaInfo, PlanInput, RunOptions, Tools,
    VideoEncoder,
};

pub const SETUP_HINT: &str =
    "run scripts/setup, then `source .tools/env` (or put ffmpeg and ffprobe on PATH)";

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let find = |var: &str, name: &str| -> PathBuf {
            let candidates = [
                std::env::var_os(var).map(PathBuf::from),
                Some(workspace().join(".tools/bin").join(name)),
                Some(PathBuf::from(name)),
            ];
            for candidate in candidates.into_iter().flatten() {
                let works = Command::new(&candidate)
                    .arg("-version")
                    .output()
                    .is_ok_and(|o| o.status.success());
                if works {
                    return candidate;
                }
            }
            panic!("no working {name} found ({var}, .tools/bin/{name}, PATH): {SETUP_HINT}");
        };
        Tools {
            ffmpeg: find("CONVERTRILO_FFMPEG", "ffmpeg"),
            ffprobe: find("CONVERTRILO_FFPROBE", "ffprobe"),
        }
    })
}

/// Runs ffmpeg to make a test clip; panics with its stderr on failure.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new(&tools().ffmpeg)
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
        .args(args)
        .env("SVT_LOG", "1")
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `secs`-long testsrc2 clip (plus a sine tone unless `audio` is None) encoded losslessly-ish.
pub fn clip(
    dir: &Path,
    name: &str,
    size: &str,
    rate: &str,
    secs: f64,
    pix_fmt: &str,
    audio: Option<&str>,
) -> PathBuf {
    let path = dir.join(name);
    let video = format!("testsrc2=size={size}:rate={rate}:duration={secs}");
    let mut args = vec!["-f", "lavfi", "-i", &video];
    let tone;
    if let Some(layout) = audio {
        tone = format!("sine=frequency=440:duration={secs},aformat=channel_layouts={layout}");
        args.extend(["-f", "lavfi", "-i", &tone]);
    }
    args.extend([
        "-pix_fmt",
        pix_fmt,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-crf",
        "18",
    ]);
    if audio.is_some() {
        args.extend(["-c:a", "aac", "-shortest"]);
    }
    let p = path.to_str().unwrap().to_string();
    args.extend(["-f", "mp4", &p]);
    ffmpeg(&args);
    path
}

/// The raw ffprobe JSON of a file, for what MediaInfo does not carry (tags, side data, SAR).
pub fn raw_probe(path: &Path) -> serde_json::Value {
    let out = Command::new(&tools().ffprobe)
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn video_json(raw: &serde_json::Value) -> &serde_json::Value {
    raw["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == "video")
        .unwrap()
}

pub fn spec(codec: Codec, resolution: Resolution, fps: u32, container: Container) -> EncodeSpec {
    let mut s = EncodeSpec::new(codec, resolution, fps);
    s.container = container;
    s.preset = Preset::Fast;
    s
}

pub fn cpu_encoder(codec: Codec) -> VideoEncoder {
    match codec {
        Codec::H264 => VideoEncoder::Libx264,
        Codec::H265 => VideoEncoder::Libx265,
        Codec::Av1 => VideoEncoder::Libsvtav1,
    }
}

pub struct Encoded {
    pub plan: EncodePlan,
    pub out: MediaInfo,
    pub raw: serde_json::Value,
    pub output: PathBuf,
}

/// probe → plan_encode → run_encode → probe the output; checks duration and final progress.
pub async fn encode(src: &Path, spec: &EncodeSpec, dir: &Path) -> Encoded {
    let t = tools();
    let info = probe(t, src.to_str().unwrap(), Duration::from_secs(20))
        .await
        .unwrap();
    let output = dir.join(format!(
        "out-{}-{}",
        spec.codec,
        src.file_name().unwrap().to_string_lossy()
    ));
    let passlog = dir.join("passlog");
    let plan = plan_encode(&PlanInput {
        info: &info,
        spec,
        encoder: cpu_encoder(spec.codec),
        allow_upscale: false,
        input: src,
        output: &output,
        passlog_prefix: &passlog,
        crf: None,
    })
    .unwrap();
    let mut progress = Vec::new();
    let opts = RunOptions {
        timeout: Some(Duration::from_secs(120)),
        ..Default::default()
    };
    run_encode(t, &plan, info.duration_sec.unwrap(), opts, &mut |f| {
        progress.push(f)
    })
    .await
    .unwrap_or_else(|e| panic!("encode failed: {e}"));
    assert_eq!(progress.last(), Some(&1.0));
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    let out = probe(t, output.to_str().unwrap(), Duration::from_secs(20))
        .await
        .unwrap();
    let (src_d, out_d) = (info.duration_sec.unwrap(), out.duration_sec.unwrap());
    assert!(
        (src_d - out_d).abs() <= 0.1,
        "duration {out_d} vs source {src_d}"
    );
    let v = out.video.as_ref().unwrap();
    assert_eq!((v.width, v.height), (plan.width, plan.height));
    assert_eq!(v.pix_fmt.as_deref(), Some(plan.pix_fmt));
    let raw = raw_probe(&output);
    Encoded {
        plan,
        out,
        raw,
        output,
    }
}

pub fn fps(e: &Encoded) -> f64 {
    e.out.video.as_ref().unwrap().fps.unwrap()
}

pub fn audio_codec(e: &Encoded) -> Option<&str> {
    e.out.audio.as_ref().map(|a| a.codec.as_str())
}

/// How many live processes have `needle` in their command line.
pub fn processes_mentioning(needle: &str) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains(needle))
        .count()
}

/// A throwaway HTTP/1.1 server for `dir` on 127.0.0.1 (whole files only, no ranges);
/// returns its base URL and the task to abort.
pub async fn serve_dir(dir: PathBuf) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let dir = dir.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let file = dir.join(path.trim_start_matches('/'));
                let reply = match std::fs::read(&file) {
                    Ok(body) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend(body);
                        r
                    }
                    Err(_) => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = sock.write_all(&reply).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (base, task)
}
