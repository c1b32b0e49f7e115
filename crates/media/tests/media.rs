//! End-to-end against the real ffmpeg and ffprobe: tiny lavfi clips go through probe →
//! plan_encode → run_encode, and the output is checked with ffprobe. The tools come from
//! CONVERTRILO_FFMPEG / CONVERTRILO_FFPROBE, else the workspace's `.tools/bin`, else PATH; when
//! none works the tests fail (run `scripts/setup`), they never skip.

#[path = "media/support.rs"]
mod support;
#[path = "media/vmaf.rs"]
mod vmaf;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use convertrilo_core::spec::{Codec, Container, Policy, Preset, Resolution};
use convertrilo_media::{
    choose_encoder, plan_encode, probe, run_encode, Capabilities, MediaError, PlanInput,
    RunOptions, VideoEncoder,
};
use support::*;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn odd_size_h264_mp4() {
    let dir = tempfile::tempdir().unwrap();
    let src = clip(
        dir.path(),
        "odd.mp4",
        "641x361",
        "25",
        1.0,
        "yuv420p",
        Some("mono"),
    );
    let e = encode(
        &src,
        &spec(Codec::H264, Resolution::P720, 30, Container::Mp4),
        dir.path(),
    )
    .await;
    assert_eq!((e.plan.width, e.plan.height), (640, 360));
    assert_eq!(e.out.video.as_ref().unwrap().codec, "h264");
    assert_eq!(
        e.out.video.as_ref().unwrap().pix_fmt.as_deref(),
        Some("yuv420p")
    );
    assert!((fps(&e) - 25.0).abs() < 0.01);
    assert_eq!(audio_codec(&e), Some("aac"));
    assert_eq!(e.out.format_name, "mov,mp4,m4a,3gp,3g2,mj2");
}

#[tokio::test]
async fn rotation_is_applied_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let plain = clip(
        dir.path(),
        "landscape.mp4",
        "1280x720",
        "25",
        1.0,
        "yuv420p",
        Some("mono"),
    );
    let rotated = dir.path().join("rotated.mp4");
    // -display_rotation is an input option: it tags the copied stream with a display matrix.
    ffmpeg(&[
        "-display_rotation",
        "90",
        "-i",
        plain.to_str().unwrap(),
        "-c",
        "copy",
        rotated.to_str().unwrap(),
    ]);
    let e = encode(
        &rotated,
        &spec(Codec::H264, Resolution::P720, 30, Container::Mp4),
        dir.path(),
    )
    .await;
    assert_eq!((e.plan.width, e.plan.height), (720, 1280));
    assert_eq!(e.out.video.as_ref().unwrap().rotation, 0);
    let v = video_json(&e.raw);
    assert!(
        v.get("side_data_list")
            .is_none_or(|l| !l.to_string().contains("rotation")),
        "{v}"
    );
}

#[tokio::test]
async fn portrait_fits_the_portrait_box() {
    let dir = tempfile::tempdir().unwrap();
    let src = clip(
        dir.path(),
        "portrait.mp4",
        "1080x1920",
        "25",
        1.0,
        "yuv420p",
        None,
    );
    let e = encode(
        &src,
        &spec(Codec::H264, Resolution::P720, 30, Container::Mkv),
        dir.path(),
    )
    .await;
    assert_eq!((e.plan.width, e.plan.height), (720, 1280));
    assert_eq!(e.out.format_name, "matroska,webm");
}

#[tokio::test]
async fn fps_is_a_cap_and_no_audio_stays_silent() {
    let dir = tempfile::tempdir().unwrap();
    let fast = clip(
        dir.path(),
        "sixty.mp4",
        "320x180",
        "60",
        1.0,
        "yuv420p",
        Some("mono"),
    );
    let e = encode(
        &fast,
        &spec(Codec::H264, Resolution::P480, 30, Container::Mp4),
        dir.path(),
    )
    .await;
    assert_eq!(e.plan.fps_cap_applied, Some(30));
    assert!((fps(&e) - 30.0).abs() < 0.01, "{}", fps(&e));

    let slow = clip(
        dir.path(),
        "film.mp4",
        "320x180",
        "24",
        1.0,
        "yuv420p",
        None,
    );
    let e = encode(
        &slow,
        &spec(Codec::H264, Resolution::P480, 30, Container::Mp4),
        dir.path(),
    )
    .await;
    assert_eq!(e.plan.fps_cap_applied, None);
    assert!((fps(&e) - 24.0).abs() < 0.01, "{}", fps(&e));
    assert!(!e.plan.has_audio);
    assert_eq!(audio_codec(&e), None);
    assert_eq!(e.raw["streams"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn high_bit_depth_and_444_become_8_bit_420_h264() {
    let dir = tempfile::tempdir().unwrap();
    for (name, pix_fmt) in [("ten.mp4", "yuv420p10le"), ("full.mp4", "yuv444p")] {
        let src = clip(
            dir.path(),
            name,
            "320x180",
            "25",
            1.0,
            pix_fmt,
            Some("stereo"),
        );
        let e = encode(
            &src,
            &spec(Codec::H264, Resolution::P480, 30, Container::Mp4),
            dir.path(),
        )
        .await;
        assert_eq!(
            e.out.video.as_ref().unwrap().pix_fmt.as_deref(),
            Some("yuv420p"),
            "{name}"
        );
        assert_eq!(e.out.video.as_ref().unwrap().bit_depth, 8);
    }
}

#[tokio::test]
async fn anamorphic_becomes_square_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("dvd.mp4");
    let dvd = src.to_str().unwrap();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=720x480:rate=25:duration=1",
        "-vf",
        "setsar=32/27",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        dvd,
    ]);
    let e = encode(
        &src,
        &spec(Codec::H264, Resolution::P480, 30, Container::Mov),
        dir.path(),
    )
    .await;
    assert_eq!((e.plan.width, e.plan.height), (852, 480));
    assert_eq!(e.out.video.as_ref().unwrap().sar, (1, 1));
    assert_eq!(video_json(&e.raw)["sample_aspect_ratio"], "1:1");
}

#[tokio::test]
async fn h265_mp4_is_hvc1_and_keeps_10_bit() {
    let dir = tempfile::tempdir().unwrap();
    let src = clip(
        dir.path(),
        "ten.mp4",
        "320x180",
        "25",
        1.0,
        "yuv420p10le",
        Some("stereo"),
    );
    let e = encode(
        &src,
        &spec(Codec::H265, Resolution::P480, 30, Container::Mp4),
        dir.path(),
    )
    .await;
    let v = video_json(&e.raw);
    assert_eq!(v["codec_name"], "hevc");
    assert_eq!(v["codec_tag_string"], "hvc1");
    assert_eq!(v["pix_fmt"], "yuv420p10le");
    assert_eq!(audio_codec(&e), Some("aac"));
}

#[tokio::test]
async fn av1_webm_with_surround_opus() {
    let dir = tempfile::tempdir().unwrap();
    let src = clip(
        dir.path(),
        "surround.mp4",
        "320x180",
        "25",
        1.0,
        "yuv420p",
        Some("5.1"),
    );
    let e = encode(
        &src,
        &spec(Codec::Av1, Resolution::P480, 30, Container::Webm),
        dir.path(),
    )
    .await;
    assert_eq!(e.out.video.as_ref().unwrap().codec, "av1");
    assert_eq!(e.out.format_name, "matroska,webm");
    let audio = e.out.audio.as_ref().unwrap();
    assert_eq!((audio.codec.as_str(), audio.channels), ("opus", 6));
}

#[tokio::test]
async fn two_pass_for_every_cpu_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let src = clip(
        dir.path(),
        "two.mp4",
        "320x180",
        "25",
        1.0,
        "yuv420p",
        Some("stereo"),
    );
    for (codec, container, name) in [
        (Codec::H264, Container::Mp4, "h264"),
        (Codec::Av1, Container::Mkv, "av1"),
        (Codec::H265, Container::Mov, "hevc"),
    ] {
        let mut s = spec(codec, Resolution::P480, 30, container);
        s.passes = 2;
        let e = encode(&src, &s, dir.path()).await;
        assert_eq!(e.plan.passes.len(), 2);
        assert_eq!(e.out.video.as_ref().unwrap().codec, name);
        assert_eq!(audio_codec(&e), Some("aac"));
        assert!(std::fs::metadata(&e.output).unwrap().len() > 1000);
    }
    let logs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("passlog"))
        .collect();
    assert!(
        logs.iter().any(|n| n.starts_with("passlog-x265.log")),
        "{logs:?}"
    );
    assert!(logs.iter().any(|n| n == "passlog-0.log"), "{logs:?}");
}

#[tokio::test]
async fn real_clip_to_480p() {
    let media = std::env::var_os("CONVERTRILO_TEST_MEDIA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".tools/media"));
    let src = media.join("bigbuckbunny.mp4");
    assert!(src.exists(), "{} is missing: {SETUP_HINT}", src.display());
    let dir = tempfile::tempdir().unwrap();
    let e = encode(
        &src,
        &spec(Codec::H264, Resolution::P480, 30, Container::Mp4),
        dir.path(),
    )
    .await;
    assert_eq!((e.plan.width, e.plan.height), (852, 480));
    assert_eq!(
        e.out.audio.as_ref().map(|a| (a.codec.as_str(), a.channels)),
        Some(("aac", 6))
    );
}

#[tokio::test]
async fn unreadable_inputs_are_not_videos() {
    let t = tools();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.mp4");
    std::fs::write(&text, "this is a shopping list, not a video\n").unwrap();
    let err = probe(t, text.to_str().unwrap(), Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(err.is_input_fault(), "{err:?}");
    let msg = err.user_message();
    assert!(msg.starts_with("the file is not a readable video"), "{msg}");
    assert!(
        msg.contains("Invalid data found when processing input"),
        "{msg}"
    );
    assert!(!msg.contains(dir.path().to_str().unwrap()), "{msg}");

    // A download cut short: ffmpeg writes the moov atom last, so it is missing.
    let whole = clip(
        dir.path(),
        "whole.mp4",
        "320x180",
        "25",
        1.0,
        "yuv420p",
        Some("mono"),
    );
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = probe(t, cut.to_str().unwrap(), Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(err.is_input_fault(), "{err:?}");
    let msg = err.user_message();
    assert!(
        msg.contains("not a readable video") && msg.contains("moov atom not found"),
        "{msg}"
    );
    assert!(!msg.contains(dir.path().to_str().unwrap()), "{msg}");

    let song = dir.path().join("song.m4a");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=duration=1",
        "-c:a",
        "aac",
        song.to_str().unwrap(),
    ]);
    let err = probe(t, song.to_str().unwrap(), Duration::from_secs(20))
        .await
        .unwrap_err();
    assert_eq!(err.user_message(), "the file has no video stream");

    let missing = dir.path().join("gone.mp4");
    let err = probe(t, missing.to_str().unwrap(), Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(
        matches!(err, MediaError::Io(_)) && !err.is_input_fault(),
        "{err:?}"
    );
}

#[tokio::test]
async fn probe_over_http() {
    let t = tools();
    let dir = tempfile::tempdir().unwrap();
    clip(
        dir.path(),
        "remote.mp4",
        "320x180",
        "25",
        1.0,
        "yuv420p",
        Some("mono"),
    );
    let (base, server) = serve_dir(dir.path().to_path_buf()).await;
    let info = probe(t, &format!("{base}/remote.mp4"), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        info.video.as_ref().map(|v| (v.width, v.height)),
        Some((320, 180))
    );
    assert!((info.duration_sec.unwrap() - 1.0).abs() < 0.1);

    let url = format!("{base}/missing.mp4?X-Amz-Signature=secret");
    let err = probe(t, &url, Duration::from_secs(20)).await.unwrap_err();
    assert!(err.is_input_fault(), "{err:?}");
    let msg = err.user_message();
    assert!(
        msg.contains("could not be downloaded") && msg.contains("404"),
        "{msg}"
    );
    assert!(!msg.contains("secret"), "{msg}");
    server.abort();
}

#[tokio::test]
async fn cancel_and_timeout_kill_ffmpeg_promptly() {
    let t = tools();
    let dir = tempfile::tempdir().unwrap();
    let src = clip(
        dir.path(),
        "long.mp4",
        "1280x720",
        "25",
        20.0,
        "yuv420p",
        None,
    );
    let info = probe(t, src.to_str().unwrap(), Duration::from_secs(20))
        .await
        .unwrap();
    let mut s = spec(Codec::H264, Resolution::P720, 30, Container::Mp4);
    s.preset = Preset::Slow;
    let plan_for = |output: &Path| {
        plan_encode(&PlanInput {
            info: &info,
            spec: &s,
            encoder: VideoEncoder::Libx264,
            allow_upscale: false,
            input: &src,
            output,
            passlog_prefix: &dir.path().join("passlog"),
            crf: None,
        })
        .unwrap()
    };

    // Cancel.
    let output = dir.path().join("canceled-output");
    let plan = plan_for(&output);
    let token = CancellationToken::new();
    let trigger = token.clone();
    let canceled_at = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mark = canceled_at.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        *mark.lock().unwrap() = Some(Instant::now());
        trigger.cancel();
    });
    let opts = RunOptions {
        cancel: Some(token),
        ..Default::default()
    };
    let err = run_encode(t, &plan, 20.0, opts, &mut |_| {})
        .await
        .unwrap_err();
    let since_cancel = canceled_at.lock().unwrap().expect("cancel fired").elapsed();
    assert!(err.is_canceled(), "{err:?}");
    assert!(!err.is_input_fault());
    assert!(
        since_cancel < Duration::from_secs(1),
        "returned {since_cancel:?} after cancel"
    );
    assert_eq!(
        processes_mentioning(output.to_str().unwrap()),
        0,
        "ffmpeg still running"
    );

    // Timeout.
    let output = dir.path().join("timed-out-output");
    let plan = plan_for(&output);
    let started = Instant::now();
    let opts = RunOptions {
        timeout: Some(Duration::from_millis(1500)),
        ..Default::default()
    };
    let err = run_encode(t, &plan, 20.0, opts, &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(&err, MediaError::Process(convertrilo_media::ProcessError::TimedOut { after, .. }) if *after == Duration::from_millis(1500)),
        "{err:?}"
    );
    assert!(!err.is_canceled());
    assert!(
        err.user_message().starts_with("ffmpeg timed out"),
        "{}",
        err.user_message()
    );
    assert_eq!(
        processes_mentioning(output.to_str().unwrap()),
        0,
        "ffmpeg still running"
    );
}

#[tokio::test]
async fn capabilities_of_this_machine() {
    let caps = Capabilities::detect(tools()).await.unwrap();
    for e in [
        VideoEncoder::Libx264,
        VideoEncoder::Libx265,
        VideoEncoder::Libsvtav1,
    ] {
        assert!(caps.cpu_encoders.contains(&e), "{}", caps.summary());
    }
    assert!(
        caps.libvmaf && caps.aac && caps.libopus,
        "{}",
        caps.summary()
    );
    // NVENC is listed by this ffmpeg, but there is no GPU here: none may pass the test encode.
    assert!(caps.gpu_encoders.is_empty(), "{}", caps.summary());
    assert!(caps.summary().contains("GPU encoders: none"));
    let err = choose_encoder(Codec::H264, Policy::GpuOnly, &caps).unwrap_err();
    assert!(
        err.contains("no GPU encoder for h264 is available on this server"),
        "{err}"
    );
    assert_eq!(
        choose_encoder(Codec::H264, Policy::GpuFirst, &caps),
        Ok(VideoEncoder::Libx264)
    );
    assert_eq!(
        choose_encoder(Codec::Av1, Policy::Fastest, &caps),
        Ok(VideoEncoder::Libsvtav1)
    );
}
