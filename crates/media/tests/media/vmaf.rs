//! The VMAF-targeted encode against the real ffmpeg and libvmaf: a short clip (its own reel)
//! in a directory whose name needs filter escaping, a longer one that is sampled, and a
//! cancel in the middle of the search.

use std::path::Path;
use std::time::{Duration, Instant};

use convertrilo_core::spec::{Codec, Container, Resolution};
use convertrilo_media::vmaf::{optimize, VmafJob, VmafOutcome, MAX_PROBES};
use convertrilo_media::{probe, RunOptions, VideoEncoder};
use tokio_util::sync::CancellationToken;

use super::support::*;

async fn run_vmaf(
    src: &Path,
    dir: &Path,
    target: f64,
    opts: RunOptions,
) -> (Result<VmafOutcome, convertrilo_media::MediaError>, Vec<f64>) {
    let t = tools();
    let info = probe(t, src.to_str().unwrap(), Duration::from_secs(20))
        .await
        .unwrap();
    let s = spec(Codec::H264, Resolution::P480, 30, Container::Mp4);
    let output = dir.join("out.mp4");
    let job = VmafJob {
        info: &info,
        spec: &s,
        encoder: VideoEncoder::Libx264,
        allow_upscale: false,
        input: src,
        output: &output,
        dir,
        target,
        has_libx264: true,
    };
    let mut seen = Vec::new();
    let result = optimize(t, &job, opts, &mut |f| seen.push(f)).await;
    (result, seen)
}

#[tokio::test]
async fn a_short_clip_lands_on_the_target_in_an_awkward_directory() {
    let root = tempfile::tempdir().unwrap();
    // ':' ',' '\'' and ' ' all mean something to ffmpeg's filtergraph parser.
    let dir = root.path().join("it's a b:c,d[e]");
    std::fs::create_dir(&dir).unwrap();
    let src = clip(
        &dir,
        "in.mp4",
        "640x360",
        "25",
        2.0,
        "yuv420p",
        Some("mono"),
    );
    let opts = RunOptions {
        timeout: Some(Duration::from_secs(120)),
        ..Default::default()
    };
    let (result, seen) = run_vmaf(&src, &dir, 92.0, opts).await;
    let out = result.unwrap_or_else(|e| panic!("{e}"));
    let r = &out.report;
    eprintln!(
        "short: {r:?} probes {:?} search {:.2}s",
        out.probes, out.search_secs
    );
    assert!((r.mean - 92.0).abs() <= 1.0, "{r:?} {:?}", out.probes);
    assert!(r.target_met && r.message.is_none(), "{r:?}");
    assert_eq!(r.default_crf, 22.0);
    assert_eq!(r.model, "vmaf_v0.6.1");
    assert!(r.p5 <= r.mean, "{r:?}");
    assert!(r.sample_encodes >= 1 && r.sample_encodes as usize <= MAX_PROBES);
    assert_eq!(out.segments.len(), 1, "a 2 s clip is its own reel");
    assert!((out.reel_secs - 2.0).abs() < 0.1, "{}", out.reel_secs);
    assert_eq!(seen.last(), Some(&1.0));
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(
        seen.iter().any(|&f| f > 0.0 && f < 0.3),
        "the search moves progress: {seen:?}"
    );
    let encoded = probe(
        tools(),
        dir.join("out.mp4").to_str().unwrap(),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(encoded.video.as_ref().unwrap().codec, "h264");
    assert_eq!(encoded.audio.as_ref().unwrap().codec, "aac");
    // Nothing of the search is left behind but the output (and the source).
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["in.mp4", "out.mp4"]);
}

#[tokio::test]
async fn a_longer_source_is_sampled_and_a_cancel_stops_the_search() {
    let dir = tempfile::tempdir().unwrap();
    let src = clip(
        dir.path(),
        "long.mp4",
        "320x180",
        "25",
        20.0,
        "yuv420p",
        None,
    );
    let opts = RunOptions {
        timeout: Some(Duration::from_secs(120)),
        ..Default::default()
    };
    let (result, _) = run_vmaf(&src, dir.path(), 90.0, opts).await;
    let out = result.unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "long: {:?} probes {:?} segs {:?} search {:.2}s",
        out.report, out.probes, out.segments, out.search_secs
    );
    assert_eq!(out.segments.len(), 4, "{:?}", out.segments);
    assert!((out.reel_secs - 8.0).abs() < 0.2, "{}", out.reel_secs);
    assert!(
        (out.report.mean - 90.0).abs() <= 1.0,
        "{:?} {:?}",
        out.report,
        out.probes
    );

    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let opts = RunOptions {
        cancel: Some(token),
        ..Default::default()
    };
    let (result, _) = run_vmaf(&src, dir.path(), 95.0, opts).await;
    let err = result.unwrap_err();
    assert!(err.is_canceled(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        processes_mentioning(dir.path().to_str().unwrap()),
        0,
        "ffmpeg still running"
    );
}
