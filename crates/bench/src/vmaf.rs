//! 6. VMAF-targeted encoding, side by side on the same inputs and targets:
//!    - ours: `convertrilo_media::vmaf::optimize`, exactly what a worker runs for
//!      `optimize: "vmaf"` (short samples across the source, CRF search, final encode and
//!      measurement);
//!    - a baseline implementing ab-av1's published crf-search: one 20 s sample per 12 minutes
//!      of video (at least one; the whole file when the samples would cover it), the first
//!      probe at the middle of CRF 10–55 (clamped to the encoder's scale), whole CRFs, a VMAF
//!      tolerance above the target that doubles every round from 0.1, and linear interpolation
//!      between the two nearest probes (ab-av1's size cap is left out: our target has none);
//!    - the default: the job without a target, as the service encodes it today.
//!
//!    Both searches use the same encoder flags, the same lossless sample reels and the same
//!    libvmaf scoring, so the comparison isolates the method; every final file is measured the
//!    same way against the whole source. Printed per input and target: sample encodes (one
//!    ffmpeg encode of sample material; ab-av1 encodes each sample separately), frames encoded
//!    while searching, search wall time, chosen CRF, final VMAF, its error against the target,
//!    output size and size against the default.

use anyhow::{Context, Result};
use convertrilo_core::{
    spec::{Codec, Container, Resolution},
    EncodeSpec,
};
use convertrilo_media::{
    plan_encode, probe, run_encode,
    vmaf::{
        build_reel, encode_sample, model_for, optimize, run_score, score_args, QualityScale,
        ReelCodec, Score, ScoreOptions, Segment, VmafJob,
    },
    EncodePlan, MediaInfo, PlanInput, RunOptions, Tools, VideoEncoder,
};
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

const TARGETS: [f64; 2] = [90.0, 95.0];
/// ab-av1's sample length and sampling interval.
const AB_SAMPLE_SECS: f64 = 20.0;
const AB_SAMPLE_EVERY_SECS: f64 = 720.0;
const AB_MIN_CRF: f64 = 10.0;
const AB_MAX_CRF: f64 = 55.0;

pub struct Row {
    pub input: String,
    pub target: f64,
    pub method: &'static str,
    pub sample_encodes: Option<u32>,
    pub search_frames: Option<u64>,
    pub search_secs: Option<f64>,
    /// Search, final encode(s) and measurement.
    pub total_secs: Option<f64>,
    pub full_encodes: Option<u32>,
    pub crf: f64,
    pub vmaf: f64,
    pub p5: f64,
    pub bytes: u64,
}

struct Input {
    label: String,
    path: PathBuf,
    spec: EncodeSpec,
    encoder: VideoEncoder,
}

fn ffmpeg(tools: &Tools, args: &[&str]) -> Result<()> {
    let out = Command::new(&tools.ffmpeg)
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A minute of mixed content at 854×480: a still slide, the real clip looped, a fast pan and
/// a zooming fractal, 15 s each. One 20 s sample from the middle sees two of the four.
fn mixed_clip(tools: &Tools, clip: &Path, work: &Path) -> Result<PathBuf> {
    let out = work.join("mixed-60s.mkv");
    let clip = clip.to_str().context("clip path")?;
    let graph = "[0:v]tpad=stop_mode=clone:stop_duration=15,trim=duration=15,setpts=PTS-STARTPTS,format=yuv420p[a];\
         [1:v]scale=854:480,setsar=1,fps=25,trim=duration=15,setpts=PTS-STARTPTS,format=yuv420p[b];\
         [2:v]scroll=horizontal=0.013:vertical=0.007,format=yuv420p[c];\
         [3:v]trim=duration=15,setpts=PTS-STARTPTS,format=yuv420p[d];\
         [a][b][c][d]concat=n=4:v=1:a=0[v]";
    ffmpeg(
        tools,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=854x480:rate=25:duration=0.04",
            "-stream_loop",
            "3",
            "-i",
            clip,
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=854x480:rate=25:duration=15",
            "-f",
            "lavfi",
            "-i",
            "mandelbrot=size=854x480:rate=25",
            "-filter_complex",
            graph,
            "-map",
            "[v]",
            "-c:v",
            "libx264",
            "-crf",
            "8",
            "-preset",
            "veryfast",
            out.to_str().context("path")?,
        ],
    )?;
    Ok(out)
}

fn spec(codec: Codec, resolution: Resolution, container: Container) -> EncodeSpec {
    let mut s = EncodeSpec::new(codec, resolution, 30);
    s.container = container;
    s
}

fn plan(info: &MediaInfo, input: &Input, output: &Path, crf: Option<f64>) -> Result<EncodePlan> {
    Ok(plan_encode(&PlanInput {
        info,
        spec: &input.spec,
        encoder: input.encoder,
        allow_upscale: false,
        input: &input.path,
        output,
        passlog_prefix: &output.with_extension("passlog"),
        crf,
    })?)
}

fn opts() -> RunOptions {
    RunOptions {
        timeout: Some(Duration::from_secs(3600)),
        ..Default::default()
    }
}

fn fps_of(info: &MediaInfo, plan: &EncodePlan) -> f64 {
    plan.fps_cap_applied
        .map(f64::from)
        .or(info.video.as_ref().and_then(|v| v.fps))
        .unwrap_or(25.0)
}

/// Scores a whole output against the source, every frame.
async fn measure(
    tools: &Tools,
    info: &MediaInfo,
    input: &Input,
    plan: &EncodePlan,
    output: &Path,
    work: &Path,
) -> Result<Score> {
    let log = work.join("measure.json");
    let score_opts = ScoreOptions {
        model: model_for(plan.width, plan.height),
        pix_fmt: plan.pix_fmt,
        fps: fps_of(info, plan),
        subsample: 1,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        log_path: log.clone(),
    };
    let stream = info.video.as_ref().context("video")?.index;
    let args = score_args(output, &input.path, stream, Some(&plan.filter), &score_opts)?;
    let duration = info.duration_sec.unwrap_or(0.0);
    Ok(run_score(tools, &args, &log, duration, opts(), &mut |_| {}).await?)
}

/// Encodes the whole source at `crf` (`None`: the job's default setting) and scores it.
async fn encode_measured(
    tools: &Tools,
    info: &MediaInfo,
    input: &Input,
    output: &Path,
    crf: Option<f64>,
    work: &Path,
) -> Result<Score> {
    let plan = plan(info, input, output, crf)?;
    let duration = info.duration_sec.unwrap_or(0.0);
    run_encode(tools, &plan, duration, opts(), &mut |_| {}).await?;
    measure(tools, info, input, &plan, output, work).await
}

async fn default_row(tools: &Tools, info: &MediaInfo, input: &Input, work: &Path) -> Result<Row> {
    let output = work.join(format!("default.{}", input.spec.container.extension()));
    let score = encode_measured(tools, info, input, &output, None, work).await?;
    Ok(Row {
        input: input.label.clone(),
        target: 0.0,
        method: "default",
        sample_encodes: None,
        search_frames: None,
        search_secs: None,
        total_secs: None,
        full_encodes: None,
        crf: convertrilo_media::default_crf(input.encoder, input.spec.quality_or_default()),
        vmaf: score.mean,
        p5: score.p5,
        bytes: std::fs::metadata(&output)?.len(),
    })
}

async fn ours(
    tools: &Tools,
    info: &MediaInfo,
    input: &Input,
    target: f64,
    work: &Path,
) -> Result<Row> {
    let dir = work.join(format!("ours-{target}"));
    std::fs::create_dir_all(&dir)?;
    let output = dir.join(format!("out.{}", input.spec.container.extension()));
    let job = VmafJob {
        info,
        spec: &input.spec,
        encoder: input.encoder,
        allow_upscale: false,
        input: &input.path,
        output: &output,
        dir: &dir,
        target,
        has_libx264: true,
    };
    let started = Instant::now();
    let done = optimize(tools, &job, opts(), &mut |_| {}).await?;
    let total_secs = started.elapsed().as_secs_f64();
    let fps = fps_of(info, &done.plan);
    let bytes = std::fs::metadata(&output)?.len();
    let _ = std::fs::remove_dir_all(&dir);
    // The final measurement is the one every row gets: every frame (under 3000 frames the
    // service scores them all) against the source through the same chain.
    Ok(Row {
        input: input.label.clone(),
        target,
        method: "ours",
        sample_encodes: Some(done.report.sample_encodes),
        search_frames: Some((done.probes.len() as f64 * done.reel_secs * fps).round() as u64),
        search_secs: Some(done.search_secs),
        total_secs: Some(total_secs),
        full_encodes: Some(done.report.full_encodes),
        crf: done.report.crf,
        vmaf: done.report.mean,
        p5: done.report.p5,
        bytes,
    })
}

/// ab-av1's sample placement: `n` samples of 20 s, evenly spaced in whole seconds, or the whole
/// file when they would cover it.
fn ab_av1_segments(duration: f64) -> Vec<Segment> {
    let n = ((duration / AB_SAMPLE_EVERY_SECS).ceil() as u64).max(1);
    if AB_SAMPLE_SECS * n as f64 >= duration {
        return vec![Segment {
            start: 0.0,
            duration,
        }];
    }
    let gap = ((duration as u64).saturating_sub(AB_SAMPLE_SECS as u64 * n) / (n + 1)) as f64;
    (0..n)
        .map(|i| Segment {
            start: gap * (i + 1) as f64 + AB_SAMPLE_SECS * i as f64,
            duration: AB_SAMPLE_SECS,
        })
        .collect()
}

/// ab-av1's interpolation: a whole CRF strictly between the two probes.
fn ab_av1_lerp(target: f64, worse: (f64, f64), better: (f64, f64)) -> f64 {
    let factor = (target - worse.1) / (better.1 - worse.1);
    let lerp = (worse.0 - (worse.0 - better.0) * factor).round();
    lerp.max(better.0 + 1.0).min(worse.0 - 1.0)
}

async fn baseline(
    tools: &Tools,
    info: &MediaInfo,
    input: &Input,
    target: f64,
    work: &Path,
) -> Result<Row> {
    let started = Instant::now();
    let dir = work.join(format!("ab-av1-{target}"));
    std::fs::create_dir_all(&dir)?;
    let first = plan(info, input, &dir.join("probe.out"), Some(30.0))?;
    let stream = info.video.as_ref().context("video")?.index;
    let fps = fps_of(info, &first);
    let mut reels = Vec::new();
    for (i, segment) in ab_av1_segments(info.duration_sec.unwrap_or(0.0))
        .into_iter()
        .enumerate()
    {
        let sub = dir.join(format!("sample-{i}"));
        std::fs::create_dir_all(&sub)?;
        let codec = ReelCodec::pick(true, first.pix_fmt);
        let reel = build_reel(
            tools,
            &input.path,
            stream,
            &first.filter,
            vec![segment],
            codec,
            &sub,
            opts(),
        )
        .await?;
        reels.push(reel);
    }
    let scale = QualityScale::of(input.encoder);
    let (min, max) = (AB_MIN_CRF.max(scale.min), AB_MAX_CRF.min(scale.max));
    let log = dir.join("log.json");
    let score_opts = ScoreOptions {
        model: model_for(first.width, first.height),
        pix_fmt: first.pix_fmt,
        fps,
        subsample: 1,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        log_path: log.clone(),
    };
    let mut encodes = 0u32;
    let mut frames = 0f64;
    let mut attempts: Vec<(f64, f64)> = Vec::new();
    let mut crf = ((min + max) / 2.0).floor();
    let chosen = 'search: {
        for run in 1.. {
            let tolerance = 0.1 * 2f64.powi(run - 1);
            let mut sum = 0.0;
            for reel in &reels {
                let sample = reel.path.with_file_name("encoded.mkv");
                encode_sample(
                    tools,
                    reel,
                    input.encoder,
                    input.spec.preset,
                    first.pix_fmt,
                    crf,
                    &sample,
                    opts(),
                    &mut |_| {},
                )
                .await?;
                let args = score_args(&sample, &reel.path, 0, None, &score_opts)?;
                sum += run_score(tools, &args, &log, reel.duration, opts(), &mut |_| {})
                    .await?
                    .mean;
                encodes += 1;
                frames += reel.duration * fps;
            }
            let vmaf = sum / reels.len() as f64;
            attempts.push((crf, vmaf));
            if vmaf > target {
                if vmaf < target + tolerance {
                    break 'search crf;
                }
                let upper = attempts
                    .iter()
                    .filter(|a| a.0 > crf)
                    .min_by(|a, b| a.0.total_cmp(&b.0))
                    .copied();
                crf = match upper {
                    Some(u) if u.0 == crf + 1.0 => break 'search crf,
                    Some(u) => ab_av1_lerp(target, u, (crf, vmaf)),
                    None if crf >= max => break 'search crf,
                    None if run == 1 && crf + 1.0 < max => ((crf + max) / 2.0).floor(),
                    None => max,
                };
            } else {
                // ab-av1 gives up here ("no good crf"); the bench keeps the best it found.
                if crf <= min {
                    break 'search crf;
                }
                let lower = attempts
                    .iter()
                    .filter(|a| a.0 < crf)
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .copied();
                crf = match lower {
                    Some(l) if l.0 + 1.0 == crf => break 'search l.0,
                    Some(l) => ab_av1_lerp(target, (crf, vmaf), l),
                    None if run == 1 && crf > min + 1.0 => ((min + crf) / 2.0).floor(),
                    None => min,
                };
            }
        }
        unreachable!("the loop only ends by breaking")
    };
    let search_secs = started.elapsed().as_secs_f64();
    let output = dir.join(format!("out.{}", input.spec.container.extension()));
    let score = encode_measured(tools, info, input, &output, Some(chosen), work).await?;
    let total_secs = started.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&output)?.len();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Row {
        input: input.label.clone(),
        target,
        method: "ab-av1 method",
        sample_encodes: Some(encodes),
        search_frames: Some(frames.round() as u64),
        search_secs: Some(search_secs),
        total_secs: Some(total_secs),
        full_encodes: Some(1),
        crf: chosen,
        vmaf: score.mean,
        p5: score.p5,
        bytes,
    })
}

pub async fn run(tools: &Tools, clip: &Path, work: &Path) -> Result<Vec<Row>> {
    println!(
        "\n== VMAF-targeted encoding: our search vs ab-av1's crf-search method, vs the default =="
    );
    println!("(same encoder flags, sample reels, libvmaf scoring and final measurement for every method)");
    let mixed = mixed_clip(tools, clip, work)?;
    let inputs = [
        Input {
            label: "real clip 720p h264".into(),
            path: clip.to_path_buf(),
            spec: spec(Codec::H264, Resolution::P720, Container::Mp4),
            encoder: VideoEncoder::Libx264,
        },
        Input {
            label: "real clip 480p av1".into(),
            path: clip.to_path_buf(),
            spec: spec(Codec::Av1, Resolution::P480, Container::Webm),
            encoder: VideoEncoder::Libsvtav1,
        },
        Input {
            label: "mixed 60s 480p h264".into(),
            path: mixed,
            spec: spec(Codec::H264, Resolution::P480, Container::Mp4),
            encoder: VideoEncoder::Libx264,
        },
    ];
    println!(
        "{:<20} {:>6} {:<14} {:>8} {:>7} {:>8} {:>7} {:>4} {:>6} {:>7} {:>6} {:>7} {:>10} {:>8}",
        "input",
        "target",
        "method",
        "samp.enc",
        "frames",
        "search s",
        "total s",
        "full",
        "crf",
        "VMAF",
        "error",
        "p5",
        "bytes",
        "vs dflt"
    );
    let mut rows = Vec::new();
    for input in &inputs {
        let info = probe(
            tools,
            &input.path.to_string_lossy(),
            Duration::from_secs(30),
        )
        .await?;
        let default = default_row(tools, &info, input, work).await?;
        print_row(&default, default.bytes);
        for target in TARGETS {
            let base = baseline(tools, &info, input, target, work).await?;
            print_row(&base, default.bytes);
            let mine = ours(tools, &info, input, target, work).await?;
            print_row(&mine, default.bytes);
            rows.push(base);
            rows.push(mine);
        }
        rows.push(default);
    }
    Ok(rows)
}

fn print_row(r: &Row, default_bytes: u64) {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let (target, error) = if r.method == "default" {
        ("-".to_string(), "-".to_string())
    } else {
        (
            format!("{:.0}", r.target),
            format!("{:+.2}", r.vmaf - r.target),
        )
    };
    println!(
        "{:<20} {:>6} {:<14} {:>8} {:>7} {:>8} {:>7} {:>4} {:>6} {:>7.2} {:>6} {:>7.2} {:>10} {:>7.0}%",
        r.input,
        target,
        r.method,
        opt(r.sample_encodes.map(|n| n.to_string())),
        opt(r.search_frames.map(|n| n.to_string())),
        opt(r.search_secs.map(|s| format!("{s:.1}"))),
        opt(r.total_secs.map(|s| format!("{s:.1}"))),
        opt(r.full_encodes.map(|n| n.to_string())),
        format!("{}", r.crf),
        r.vmaf,
        error,
        r.p5,
        r.bytes,
        100.0 * r.bytes as f64 / default_bytes.max(1) as f64
    );
}

/// The summary lines: totals per method and whether ours meets its target.
pub fn summarize(rows: &[Row]) -> Vec<String> {
    fn of<'a>(rows: &'a [Row], m: &'a str) -> impl Iterator<Item = &'a Row> + 'a {
        rows.iter().filter(move |r| r.method == m)
    }
    let of = |m: &'static str| of(rows, m);
    let total = |m: &'static str| of(m).filter_map(|r| r.sample_encodes).sum::<u32>();
    let secs = |m: &'static str| of(m).filter_map(|r| r.search_secs).sum::<f64>();
    let mean_err = |m: &'static str| {
        let v: Vec<f64> = of(m).map(|r| (r.vmaf - r.target).abs()).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let max_err = |m: &'static str| of(m).map(|r| (r.vmaf - r.target).abs()).fold(0.0, f64::max);
    let (ours, base) = ("ours", "ab-av1 method");
    let fewer = total(ours) < total(base);
    let as_accurate = mean_err(ours) <= mean_err(base) + 1e-9;
    vec![
        format!(
            "vmaf search: sample encodes {} (ours) vs {} (ab-av1 method); search time {:.1} s vs {:.1} s",
            total(ours),
            total(base),
            secs(ours),
            secs(base)
        ),
        format!(
            "vmaf accuracy: mean |error| {:.2} vs {:.2}, worst {:.2} vs {:.2}  (target: fewer encodes at equal or better accuracy: {})",
            mean_err(ours),
            mean_err(base),
            max_err(ours),
            max_err(base),
            if fewer && as_accurate { "met" } else { "MISSED" }
        ),
    ]
}
