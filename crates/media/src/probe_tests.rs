//! Unit tests for `probe`: fixtures captured from the real ffprobe 5.1, and the small parsers.

use super::*;

#[test]
fn rotation_conventions() {
    let stream = |side: &str, tags: &str| -> RawStream {
        serde_json::from_str(&format!(
            r#"{{"index":0,"side_data_list":[{side}],"tags":{{{tags}}}}}"#
        ))
        .unwrap()
    };
    let m = |r: &str| format!(r#"{{"side_data_type":"Display Matrix","rotation":{r}}}"#);
    assert_eq!(rotation(&stream(&m("-90"), "")), 90);
    assert_eq!(rotation(&stream(&m("90"), "")), 270);
    assert_eq!(rotation(&stream(&m("180"), "")), 180);
    assert_eq!(rotation(&stream(&m("-180"), "")), 180);
    assert_eq!(rotation(&stream(&m("-89.97"), "")), 90);
    assert_eq!(rotation(&stream(&m("45"), "")), 0);
    assert_eq!(rotation(&stream("", r#""rotate":"90""#)), 90);
    assert_eq!(rotation(&stream("", r#""rotate":"-90""#)), 270);
    assert_eq!(rotation(&stream("", "")), 0);
}

#[test]
fn small_parsers() {
    assert_eq!(
        rate(Some("30000/1001")).map(|f| (f * 1000.0).round()),
        Some(29970.0)
    );
    assert_eq!(rate(Some("0/0")), None);
    assert_eq!(rate(Some("90000/0")), None);
    assert_eq!(sar(Some("32:27")), (32, 27));
    assert_eq!(sar(Some("0:1")), (1, 1));
    assert_eq!(sar(None), (1, 1));
    assert_eq!(depth_from_pix_fmt("yuv420p10le"), 10);
    assert_eq!(depth_from_pix_fmt("p010le"), 10);
    assert_eq!(depth_from_pix_fmt("yuv444p12be"), 12);
    assert_eq!(depth_from_pix_fmt("yuv420p"), 8);
    assert_eq!(depth_from_pix_fmt("nv12"), 8);
    assert_eq!(parse_clock("00:01:01.500000000"), Some(61.5));
    assert!(is_url("HTTPS://example.com/a.mp4") && !is_url("/tmp/http.mp4"));
}

#[test]
fn reason_is_plain_and_path_free() {
    let stderr = "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55e7ff9f21c0] moov atom not found\n\
                  file:/srv/scratch/j1/input: Invalid data found when processing input\n";
    assert_eq!(
        probe_reason(
            stderr,
            &["file:/srv/scratch/j1/input", "/srv/scratch/j1/input"]
        ),
        "moov atom not found; Invalid data found when processing input"
    );
    assert!(is_environment_problem(
        "x: No such file or directory",
        false
    ));
    assert!(!is_environment_problem(
        "Server returned 404 Not Found",
        true
    ));
    assert!(is_environment_problem("Connection refused", true));
}

fn fixture(name: &str) -> MediaInfo {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let json = std::fs::read_to_string(&path).unwrap();
    parse_ffprobe_json(&json).unwrap()
}

#[test]
fn real_clip() {
    let info = fixture("bigbuckbunny");
    assert_eq!(info.format_name, "mov,mp4,m4a,3gp,3g2,mj2");
    assert_eq!(info.duration_sec, Some(5.312));
    assert_eq!(info.size_bytes, Some(1_055_736));
    assert_eq!(info.bit_rate, Some(1_589_963));
    let v = info.video.clone().unwrap();
    assert_eq!(
        v,
        VideoStream {
            index: 0,
            codec: "h264".into(),
            width: 1280,
            height: 720,
            sar: (1, 1),
            rotation: 0,
            fps: Some(25.0),
            pix_fmt: Some("yuv420p".into()),
            bit_depth: 8,
            duration_sec: Some(5.28),
        }
    );
    assert_eq!(
        info.audio,
        Some(AudioStream {
            index: 1,
            codec: "aac".into(),
            channels: 6,
            sample_rate: Some(48000),
        })
    );
    assert_eq!(info.display_dimensions(), Some((1280.0, 720.0)));
    assert!(check_encodable(&info).is_ok());
    // MediaInfo travels as JSON between crates (job records): it round-trips.
    let back: MediaInfo = serde_json::from_value(serde_json::to_value(&info).unwrap()).unwrap();
    assert_eq!(back, info);
}

#[test]
fn rotated_clips() {
    // `-display_rotation 90` (counter-clockwise): ffprobe says rotation 90; autorotate turns the
    // frame 90° counter-clockwise, i.e. 270° clockwise.
    let ccw = fixture("rotated_ccw90");
    assert_eq!(ccw.video.as_ref().unwrap().rotation, 270);
    assert_eq!(ccw.display_dimensions(), Some((180.0, 320.0)));
    // A phone's portrait clip: ffprobe says -90; it needs 90° clockwise.
    let cw = fixture("rotated_cw90");
    assert_eq!(cw.video.as_ref().unwrap().rotation, 90);
    assert_eq!(cw.display_dimensions(), Some((180.0, 320.0)));
}

#[test]
fn anamorphic_clip() {
    let info = fixture("sar_32_27");
    let v = info.video.as_ref().unwrap();
    assert_eq!((v.width, v.height, v.sar), (720, 480, (32, 27)));
    assert!((v.fps.unwrap() - 29.97).abs() < 0.001);
    let (w, h) = info.display_dimensions().unwrap();
    assert!((w - 853.333).abs() < 0.001 && h == 480.0);
}

#[test]
fn ten_bit_from_pix_fmt() {
    // Matroska HEVC: no bits_per_raw_sample, no stream duration (only a DURATION tag).
    let info = fixture("tenbit_hevc");
    let v = info.video.as_ref().unwrap();
    assert_eq!(v.codec, "hevc");
    assert_eq!(v.pix_fmt.as_deref(), Some("yuv420p10le"));
    assert_eq!(v.bit_depth, 10);
    assert_eq!(v.duration_sec, Some(1.0));
    assert!(info.audio.is_none());
}

#[test]
fn no_audio_clip() {
    let info = fixture("no_audio");
    assert!(info.audio.is_none());
    assert_eq!(info.video.as_ref().unwrap().fps, Some(24.0));
    assert!(check_encodable(&info).is_ok());
}

#[test]
fn cover_art_is_never_the_video() {
    let info = fixture("cover_art");
    let v = info.video.as_ref().unwrap();
    assert_eq!((v.index, v.codec.as_str(), v.width), (0, "h264", 320));
    assert_eq!(info.audio.as_ref().unwrap().index, 1);

    // Same file with the picture listed first (as some muxers do): still the real video.
    let path = format!(
        "{}/tests/fixtures/cover_art.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    raw["streams"].as_array_mut().unwrap().reverse();
    let info = parse_ffprobe_json(&raw.to_string()).unwrap();
    assert_eq!(info.video.as_ref().unwrap().codec, "h264");

    // Music with a cover and no video: no video stream at all.
    let info = fixture("audio_with_cover");
    assert!(info.video.is_none());
    assert_eq!(info.audio.as_ref().unwrap().codec, "mp3");
    let err = check_encodable(&info).unwrap_err();
    assert!(err.is_input_fault());
    assert_eq!(err.user_message(), "the file has no video stream");
}

#[test]
fn subtitles_are_ignored() {
    let info = fixture("subtitle");
    assert_eq!(info.video.as_ref().unwrap().index, 0);
    assert_eq!(info.audio.as_ref().unwrap().index, 1);
}

#[test]
fn audio_only_and_still_images_are_not_videos() {
    let info = fixture("audio_only");
    assert!(info.video.is_none());
    assert_eq!(info.audio.as_ref().unwrap().channels, 1);
    assert_eq!(
        check_encodable(&info).unwrap_err().user_message(),
        "the file has no video stream"
    );

    let info = fixture("still");
    assert!(info.video.is_some());
    assert_eq!(info.duration_sec, None);
    let err = check_encodable(&info).unwrap_err();
    assert!(err.is_input_fault() && err.user_message().contains("no known duration"));
}

#[test]
fn odd_json() {
    let info = parse_ffprobe_json("{}").unwrap();
    assert!(info.video.is_none() && info.format_name.is_empty());
    let err = parse_ffprobe_json("not json").unwrap_err();
    assert!(matches!(err, MediaError::Io(_)));
}
