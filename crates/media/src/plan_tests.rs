//! Unit tests for `plan`: output sizes and the exact flags of every codec/container pairing.

use super::*;
use crate::probe::{AudioStream, VideoStream};
use convertrilo_core::spec::{BitrateTier, Policy, Preset, Quality};

fn info(w: u32, h: u32) -> MediaInfo {
    MediaInfo {
        format_name: "mov,mp4,m4a,3gp,3g2,mj2".into(),
        duration_sec: Some(1.0),
        size_bytes: Some(1000),
        bit_rate: Some(8000),
        video: Some(VideoStream {
            index: 0,
            codec: "h264".into(),
            width: w,
            height: h,
            sar: (1, 1),
            rotation: 0,
            fps: Some(25.0),
            pix_fmt: Some("yuv420p".into()),
            bit_depth: 8,
            duration_sec: Some(1.0),
        }),
        audio: Some(AudioStream {
            index: 1,
            codec: "aac".into(),
            channels: 2,
            sample_rate: Some(48000),
        }),
    }
}

fn spec(codec: Codec, resolution: Resolution, container: Container) -> EncodeSpec {
    let mut s = EncodeSpec::new(codec, resolution, 30);
    s.container = container;
    s.policy = Policy::GpuFirst;
    s
}

fn plan(
    info: &MediaInfo,
    spec: &EncodeSpec,
    encoder: VideoEncoder,
) -> Result<EncodePlan, MediaError> {
    plan_encode(&PlanInput {
        info,
        spec,
        encoder,
        allow_upscale: false,
        input: Path::new("/scratch/w/j/input"),
        output: Path::new("/scratch/w/j/output"),
        passlog_prefix: Path::new("/scratch/w/j/passlog"),
        crf: None,
    })
}

/// True when the space-separated words of `needle` appear in `argv` as consecutive items.
fn has(argv: &[String], needle: &str) -> bool {
    let needle: Vec<&str> = needle.split(' ').collect();
    argv.windows(needle.len())
        .any(|w| w.iter().zip(&needle).all(|(a, b)| a == b))
}

fn value_of<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    argv.iter()
        .position(|a| a == flag)
        .map(|i| argv[i + 1].as_str())
}

#[test]
fn output_dimensions_cases() {
    use Resolution::*;
    assert_eq!(output_dimensions((641.0, 361.0), P720, false), (640, 360));
    // 1280×720 tagged rotate 90: the display frame is 720×1280, a portrait that fits as is.
    let mut rotated = info(1280, 720);
    rotated.video.as_mut().unwrap().rotation = 90;
    let display = rotated.display_dimensions().unwrap();
    assert_eq!(display, (720.0, 1280.0));
    assert_eq!(output_dimensions(display, P720, false), (720, 1280));
    assert_eq!(
        output_dimensions((1080.0, 1920.0), P720, false),
        (720, 1280)
    );
    // 720×480 with SAR 32:27 displays as 853.33×480: round → 853, down to even → 852.
    let mut anamorphic = info(720, 480);
    anamorphic.video.as_mut().unwrap().sar = (32, 27);
    let display = anamorphic.display_dimensions().unwrap();
    assert!((display.0 - 853.333).abs() < 0.001 && display.1 == 480.0);
    assert_eq!(output_dimensions(display, P480, false), (852, 480));
    // 1280×720 → 480p: 1280·(480/720) = 853.33 → 853 → 852.
    assert_eq!(output_dimensions((1280.0, 720.0), P480, false), (852, 480));
    assert_eq!(
        output_dimensions((3840.0, 2160.0), P1080, false),
        (1920, 1080)
    );
    assert_eq!(output_dimensions((320.0, 240.0), P1080, false), (320, 240));
    assert_eq!(output_dimensions((320.0, 240.0), P1080, true), (1440, 1080));
    // Portrait 4K phone video into 1080p: the box is 1080×1920.
    assert_eq!(
        output_dimensions((2160.0, 3840.0), P1080, false),
        (1080, 1920)
    );
    // Degenerate sizes stay valid for the encoder.
    assert_eq!(output_dimensions((1.0, 1.0), P720, false), (2, 2));
    assert_eq!(output_dimensions((0.0, 720.0), P720, false), (2, 2));
}

#[test]
fn h264_mp4_full_argv() {
    let p = plan(
        &info(1280, 720),
        &spec(Codec::H264, Resolution::P720, Container::Mp4),
        VideoEncoder::Libx264,
    )
    .unwrap();
    assert_eq!(
        (p.width, p.height, p.pix_fmt, p.fps_cap_applied, p.has_audio),
        (1280, 720, "yuv420p", None, true)
    );
    assert_eq!(p.passes.len(), 1);
    let expected = "-hide_banner -nostdin -y -v error -nostats -progress pipe:1 -format_whitelist FORMATS \
                    -i file:/scratch/w/j/input \
                    -map 0:0 -map 0:1 -filter:v scale=1280:720,setsar=1,format=yuv420p -c:v libx264 \
                    -preset veryfast -crf 22 -maxrate 5000k -bufsize 10000k -c:a aac -b:a 128k \
                    -f mp4 -movflags +faststart file:/scratch/w/j/output";
    assert_eq!(
        p.passes[0].join(" "),
        expected
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace("FORMATS", crate::probe::INPUT_FORMATS)
    );
}

#[test]
fn presets_quality_and_tiers() {
    let mut s = spec(Codec::H264, Resolution::P1080, Container::Mkv);
    s.preset = Preset::Slow;
    s.quality = Some(Quality::Best);
    s.bitrate_tier = BitrateTier::High;
    let p = plan(&info(1920, 1080), &s, VideoEncoder::Libx264).unwrap();
    let a = &p.passes[0];
    assert!(has(
        a,
        "-preset slow -crf 19 -maxrate 16000k -bufsize 32000k"
    ));
    assert!(has(a, "-c:a aac -b:a 128k -f matroska"));
    assert!(!a.iter().any(|x| x == "-movflags"));

    // A small source that is not upscaled is budgeted as the box it fits: 640×360 → 480p.
    let p = plan(
        &info(640, 360),
        &spec(Codec::H264, Resolution::P1080, Container::Mp4),
        VideoEncoder::Libx264,
    )
    .unwrap();
    assert_eq!(value_of(&p.passes[0], "-maxrate"), Some("2400k"));
}

#[test]
fn h265_mp4_and_mov_are_tagged_hvc1() {
    let mut src = info(3840, 2160);
    let v = src.video.as_mut().unwrap();
    v.bit_depth = 10;
    v.pix_fmt = Some("yuv420p10le".into());
    for container in [Container::Mp4, Container::Mov] {
        let mut s = spec(Codec::H265, Resolution::P1080, container);
        s.preset = Preset::Standard;
        let p = plan(&src, &s, VideoEncoder::Libx265).unwrap();
        let a = &p.passes[0];
        assert_eq!(p.pix_fmt, "yuv420p10le");
        assert!(has(
            a,
            "-filter:v scale=1920:1080,setsar=1,format=yuv420p10le"
        ));
        // 5000 × 0.65 = 3250 kb/s reference.
        assert!(has(
            a,
            "-c:v libx265 -preset medium -crf 25 -maxrate 6500k -bufsize 13000k"
        ));
        assert!(has(a, "-x265-params log-level=error"));
        assert!(has(a, "-tag:v hvc1"));
        assert!(has(a, "-movflags +faststart"));
        assert_eq!(
            value_of(a, "-f"),
            Some(if container == Container::Mp4 {
                "mp4"
            } else {
                "mov"
            })
        );
    }
    let p = plan(
        &src,
        &spec(Codec::H265, Resolution::P1080, Container::Mkv),
        VideoEncoder::Libx265,
    )
    .unwrap();
    assert!(!p.passes[0].iter().any(|x| x == "hvc1"));
}

#[test]
fn av1_webm_uses_opus_and_svt_presets() {
    let mut src = info(1280, 720);
    src.audio.as_mut().unwrap().channels = 6;
    let p = plan(
        &src,
        &spec(Codec::Av1, Resolution::P720, Container::Webm),
        VideoEncoder::Libsvtav1,
    )
    .unwrap();
    let a = &p.passes[0];
    assert_eq!(p.pix_fmt, "yuv420p");
    // 2500 × 0.55 = 1375 kb/s reference.
    assert!(has(
        a,
        "-c:v libsvtav1 -preset 10 -crf 33 -maxrate 2750k -bufsize 5500k"
    ));
    assert!(has(a, "-c:a libopus -b:a 96k"));
    assert!(has(
        a,
        "-filter:a aformat=channel_layouts=7.1|6.1|5.1|5.0|quad|3.0|stereo|mono"
    ));
    assert!(has(a, "-f webm"));
    assert!(!a.iter().any(|x| x == "-movflags" || x == "-tag:v"));

    src.audio.as_mut().unwrap().channels = 2;
    let p = plan(
        &src,
        &spec(Codec::Av1, Resolution::P720, Container::Webm),
        VideoEncoder::Libsvtav1,
    )
    .unwrap();
    assert!(!p.passes[0].iter().any(|x| x == "-filter:a"));
}

#[test]
fn no_audio_means_an_and_a_single_map() {
    let mut src = info(320, 240);
    src.audio = None;
    let p = plan(
        &src,
        &spec(Codec::H264, Resolution::P480, Container::Mp4),
        VideoEncoder::Libx264,
    )
    .unwrap();
    let a = &p.passes[0];
    assert!(!p.has_audio);
    assert!(a.iter().any(|x| x == "-an"));
    assert_eq!(a.iter().filter(|x| *x == "-map").count(), 1);
    assert!(!a.iter().any(|x| x == "-c:a"));
}

#[test]
fn maps_pick_the_probed_streams() {
    let mut src = info(640, 360);
    src.video.as_mut().unwrap().index = 2;
    src.audio.as_mut().unwrap().index = 0;
    let p = plan(
        &src,
        &spec(Codec::H264, Resolution::P480, Container::Mp4),
        VideoEncoder::Libx264,
    )
    .unwrap();
    assert!(has(&p.passes[0], "-map 0:2 -map 0:0"));
}

#[test]
fn fps_is_a_cap() {
    let s = spec(Codec::H264, Resolution::P480, Container::Mp4);
    for (source, cap) in [
        (60.0, Some(30)),
        (24.0, None),
        (30.0, None),
        (30000.0 / 1001.0, None),
        (30.02, Some(30)),
    ] {
        let mut src = info(640, 360);
        src.video.as_mut().unwrap().fps = Some(source);
        let p = plan(&src, &s, VideoEncoder::Libx264).unwrap();
        assert_eq!(p.fps_cap_applied, cap, "source {source}");
        let filter = value_of(&p.passes[0], "-filter:v").unwrap();
        match cap {
            Some(_) => assert_eq!(filter, "scale=640:360,setsar=1,fps=30,format=yuv420p"),
            None => assert_eq!(filter, "scale=640:360,setsar=1,format=yuv420p"),
        }
    }
}

#[test]
fn h264_is_always_8_bit_420() {
    let mut src = info(640, 360);
    let v = src.video.as_mut().unwrap();
    v.bit_depth = 10;
    v.pix_fmt = Some("yuv444p10le".into());
    let p = plan(
        &src,
        &spec(Codec::H264, Resolution::P480, Container::Mp4),
        VideoEncoder::Libx264,
    )
    .unwrap();
    assert_eq!(p.pix_fmt, "yuv420p");
    let p = plan(
        &src,
        &spec(Codec::Av1, Resolution::P480, Container::Mkv),
        VideoEncoder::Libsvtav1,
    )
    .unwrap();
    assert_eq!(p.pix_fmt, "yuv420p10le");
}

#[test]
fn two_pass_x264() {
    let mut s = spec(Codec::H264, Resolution::P720, Container::Mp4);
    s.passes = 2;
    let p = plan(&info(1280, 720), &s, VideoEncoder::Libx264).unwrap();
    assert_eq!(p.passes.len(), 2);
    let (p1, p2) = (&p.passes[0], &p.passes[1]);
    assert!(has(
        p1,
        "-b:v 2500k -maxrate 5000k -bufsize 10000k -pass 1 -passlogfile /scratch/w/j/passlog"
    ));
    assert!(p1.ends_with(&["-an".into(), "-f".into(), "null".into(), "-".into()]));
    assert_eq!(p1.iter().filter(|x| *x == "-map").count(), 1);
    assert!(!p1.iter().any(|x| x == "-crf" || x == "-c:a"));
    assert!(has(p2, "-pass 2 -passlogfile /scratch/w/j/passlog"));
    assert!(has(p2, "-map 0:0 -map 0:1"));
    assert!(has(p2, "-c:a aac"));
    assert_eq!(p2.last().unwrap(), "file:/scratch/w/j/output");
    // Both passes see the same frames.
    assert_eq!(value_of(p1, "-filter:v"), value_of(p2, "-filter:v"));
}

#[test]
fn two_pass_x265_and_svt() {
    let mut s = spec(Codec::H265, Resolution::P720, Container::Mp4);
    s.passes = 2;
    let p = plan(&info(1280, 720), &s, VideoEncoder::Libx265).unwrap();
    assert!(has(
        &p.passes[0],
        "-x265-params log-level=error:pass=1:stats=/scratch/w/j/passlog-x265.log"
    ));
    assert!(has(
        &p.passes[1],
        "-x265-params log-level=error:pass=2:stats=/scratch/w/j/passlog-x265.log"
    ));
    assert!(!p.passes[0].iter().any(|x| x == "-pass"));
    assert!(has(&p.passes[1], "-tag:v hvc1"));

    let mut s = spec(Codec::Av1, Resolution::P720, Container::Mkv);
    s.passes = 2;
    let p = plan(&info(1280, 720), &s, VideoEncoder::Libsvtav1).unwrap();
    for (i, a) in p.passes.iter().enumerate() {
        let pass = format!(
            "-b:v 1375k -pass {} -passlogfile /scratch/w/j/passlog",
            i + 1
        );
        assert!(has(a, &pass));
        assert!(!a.iter().any(|x| x == "-maxrate" || x == "-crf"));
    }

    let mut odd = info(1280, 720);
    odd.audio = None;
    let err = plan_encode(&PlanInput {
        info: &odd,
        spec: &{
            let mut s = spec(Codec::H265, Resolution::P720, Container::Mp4);
            s.passes = 2;
            s
        },
        encoder: VideoEncoder::Libx265,
        allow_upscale: false,
        input: Path::new("/in"),
        output: Path::new("/out"),
        passlog_prefix: Path::new("/scratch/a:b/passlog"),
        crf: None,
    })
    .unwrap_err();
    assert!(matches!(err, MediaError::Unsupported(_)));
}

#[test]
fn nvenc_argv() {
    let s = spec(Codec::H264, Resolution::P720, Container::Mp4);
    let p = plan(&info(1280, 720), &s, VideoEncoder::H264Nvenc).unwrap();
    assert!(has(
        &p.passes[0],
        "-c:v h264_nvenc -preset p2 -rc vbr -cq 22 -b:v 0 -maxrate 5000k -bufsize 10000k"
    ));

    let mut s = spec(Codec::H265, Resolution::P720, Container::Mp4);
    s.passes = 2;
    s.preset = Preset::Slow;
    let mut src = info(1280, 720);
    src.video.as_mut().unwrap().bit_depth = 10;
    let p = plan(&src, &s, VideoEncoder::HevcNvenc).unwrap();
    assert_eq!(p.passes.len(), 1, "NVENC multipass runs inside one ffmpeg");
    assert_eq!(p.pix_fmt, "p010le");
    let a = &p.passes[0];
    assert!(has(a, "-c:v hevc_nvenc -preset p6 -rc vbr -multipass fullres -b:v 1625k -maxrate 3250k -bufsize 6500k"));
    assert!(has(a, "-tag:v hvc1"));
    assert!(!a.iter().any(|x| x == "-pass" || x == "-x265-params"));

    let mut s = spec(Codec::Av1, Resolution::P720, Container::Webm);
    s.preset = Preset::Standard;
    let p = plan(&info(1280, 720), &s, VideoEncoder::Av1Nvenc).unwrap();
    assert!(has(
        &p.passes[0],
        "-c:v av1_nvenc -preset p4 -rc vbr -cq 33"
    ));
}

#[test]
fn impossible_requests_are_refused() {
    let src = info(1280, 720);
    let err = plan(
        &src,
        &spec(Codec::Av1, Resolution::P720, Container::Mov),
        VideoEncoder::Libsvtav1,
    )
    .unwrap_err();
    assert!(
        matches!(&err, MediaError::Unsupported(m) if m.contains("mov")),
        "{err}"
    );
    let err = plan(
        &src,
        &spec(Codec::H264, Resolution::P720, Container::Webm),
        VideoEncoder::Libx264,
    )
    .unwrap_err();
    assert!(matches!(err, MediaError::Unsupported(_)));
    let err = plan(
        &src,
        &spec(Codec::H264, Resolution::P720, Container::Mp4),
        VideoEncoder::Libx265,
    )
    .unwrap_err();
    assert!(matches!(err, MediaError::Unsupported(_)));
    let mut audio_only = src.clone();
    audio_only.video = None;
    let err = plan(
        &audio_only,
        &spec(Codec::H264, Resolution::P720, Container::Mp4),
        VideoEncoder::Libx264,
    )
    .unwrap_err();
    assert!(err.is_input_fault());
}

#[test]
fn encoder_names() {
    for e in VideoEncoder::ALL {
        assert_eq!(serde_json::to_value(e).unwrap(), e.ffmpeg_name());
        assert_eq!(e.is_gpu(), e.ffmpeg_name().contains("nvenc"));
        assert_eq!(VideoEncoder::cpu_for(e.codec()).codec(), e.codec());
        assert_eq!(VideoEncoder::nvenc_for(e.codec()).codec(), e.codec());
    }
}

#[test]
fn a_chosen_crf_is_one_uncapped_pass() {
    let src = info(1280, 720);
    let mut s = spec(Codec::H264, Resolution::P720, Container::Mp4);
    s.passes = 2;
    let at = |s: &EncodeSpec, encoder, crf| {
        plan_encode(&PlanInput {
            info: &src,
            spec: s,
            encoder,
            allow_upscale: false,
            input: Path::new("/scratch/w/j/input"),
            output: Path::new("/scratch/w/j/output"),
            passlog_prefix: Path::new("/scratch/w/j/passlog"),
            crf: Some(crf),
        })
        .unwrap()
    };
    let p = at(&s, VideoEncoder::Libx264, 23.25);
    assert_eq!(p.passes.len(), 1, "a chosen CRF is never 2-pass");
    let argv = &p.passes[0];
    assert!(
        has(argv, "-c:v libx264 -preset veryfast -crf 23.25"),
        "{argv:?}"
    );
    assert!(
        !argv.iter().any(|a| a == "-maxrate" || a == "-pass"),
        "{argv:?}"
    );
    assert_eq!(p.filter, "scale=1280:720,setsar=1,format=yuv420p");
    s.passes = 1;
    s.codec = Codec::H265;
    let argv = &at(&s, VideoEncoder::Libx265, 30.0).passes[0];
    assert!(
        has(argv, "-crf 30 -x265-params log-level=error"),
        "{argv:?}"
    );
    s.codec = Codec::Av1;
    s.container = Container::Mkv;
    let argv = &at(&s, VideoEncoder::Libsvtav1, 41.4).passes[0];
    assert!(
        has(argv, "-preset 10 -crf 41"),
        "SVT-AV1 takes whole CRFs: {argv:?}"
    );
    assert!(!argv.iter().any(|a| a == "-maxrate"), "{argv:?}");
    let argv = &at(&s, VideoEncoder::Av1Nvenc, 30.0).passes[0];
    assert!(has(argv, "-rc vbr -cq 30 -b:v 0"), "{argv:?}");
    assert!(!argv.iter().any(|a| a == "-maxrate"), "{argv:?}");
}

#[test]
fn default_crfs_follow_quality() {
    use VideoEncoder::*;
    assert_eq!(default_crf(Libx264, Quality::Better), 22.0);
    assert_eq!(default_crf(Libx265, Quality::Good), 28.0);
    assert_eq!(default_crf(Libsvtav1, Quality::Best), 28.0);
    assert_eq!(crate::rate::crf_arg(Libx264, 22.0), "22");
    assert_eq!(crate::rate::crf_arg(Libx264, 22.5), "22.5");
    assert_eq!(crate::rate::crf_arg(Libx265, 22.251), "22.25");
    assert_eq!(crate::rate::crf_arg(Libsvtav1, 22.5), "23");
}
