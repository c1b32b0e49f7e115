use super::*;

fn spec(codec: Codec, resolution: Resolution, fps: u32) -> EncodeSpec {
    EncodeSpec::new(codec, resolution, fps)
}

#[test]
fn default_prices() {
    let t = PricingTable::default();
    assert_eq!(t.validate(), Ok(()));
    assert_eq!(
        t.per_minute(&spec(Codec::H264, Resolution::P720, 30)),
        Neu::from_whole(2)
    );
    // 4 × 1.5 (h265) × 1.5 (≤60 fps) × 1.5 (slow) × 1.6 (two passes) = 21.6
    let mut s = spec(Codec::H265, Resolution::P1080, 60);
    s.preset = Preset::Slow;
    s.passes = 2;
    assert_eq!(t.per_minute(&s), Neu::from_millis(21_600));
    // 10 × 2 (av1) × 2 (≤240 fps) × 2 (vmaf) = 80
    let mut s = spec(Codec::Av1, Resolution::P2160, 120);
    s.optimize = Optimize::Vmaf;
    assert_eq!(t.per_minute(&s), Neu::from_whole(80));
    // The band follows the fps cap: 24 is in the first band, 31 in the second.
    assert_eq!(
        t.per_minute(&spec(Codec::H264, Resolution::P480, 24)),
        Neu::from_whole(1)
    );
    assert_eq!(
        t.per_minute(&spec(Codec::H264, Resolution::P480, 31)),
        Neu::from_millis(1_500)
    );
    let mut s = spec(Codec::H264, Resolution::P4320, 30);
    s.preset = Preset::Standard;
    assert_eq!(t.per_minute(&s), Neu::from_whole(50));
}

#[test]
fn rounds_up_once_at_the_end() {
    let mut t = PricingTable::default();
    t.base_per_minute.p720 = Neu::from_millis(1);
    let mut s = spec(Codec::H265, Resolution::P720, 30);
    s.preset = Preset::Standard;
    // 0.001 × 1.5 × 1.25 = 0.001875 → 0.002. Rounding after each factor would give
    // 0.002 × 1.25 = 0.0025 → 0.003.
    assert_eq!(t.per_minute(&s), Neu::from_millis(2));
    // An exact product is not rounded: 1.333 × 1.5 = 1.9995 → 2.
    t.base_per_minute.p720 = Neu::from_millis(1_333);
    s.preset = Preset::Fast;
    assert_eq!(t.per_minute(&s), Neu::from_millis(2_000));
    t.base_per_minute.p720 = Neu::from_millis(1_332);
    assert_eq!(t.per_minute(&s), Neu::from_millis(1_998));
}

#[test]
fn toml_decimals_are_exact_and_round_trip() {
    let text = r#"
        [base_per_minute]
        "720p" = 2.5
        "1080p" = 4.125

        [codec]
        h265 = 1.001

        [[fps_bands]]
        up_to_fps = 30
        factor = 1

        [[fps_bands]]
        up_to_fps = 240
        factor = 1.75
    "#;
    let t: PricingTable = toml::from_str(text).unwrap();
    assert_eq!(t.validate(), Ok(()));
    assert_eq!(t.base_per_minute.p720, Neu::from_millis(2_500));
    assert_eq!(t.base_per_minute.p1080, Neu::from_millis(4_125));
    assert_eq!(
        t.base_per_minute.p480,
        Neu::from_whole(1),
        "defaults fill in"
    );
    assert_eq!(t.codec.h265, Factor::from_thousandths(1_001));
    assert_eq!(t.codec.av1, Factor::from_thousandths(2_000));
    assert_eq!(t.fps_bands[1].factor, Factor::from_thousandths(1_750));
    // 2.5 × 1.001 × 1.75 = 4.3793750 → 4.380
    assert_eq!(
        t.per_minute(&spec(Codec::H265, Resolution::P720, 50)),
        Neu::from_millis(4_380)
    );

    let printed = toml::to_string(&t).unwrap();
    assert!(printed.contains("720p = 2.5"), "{printed}");
    assert!(printed.contains("h265 = 1.001"), "{printed}");
    assert!(
        printed.contains("h264 = 1\n"),
        "whole numbers print as integers: {printed}"
    );
    let back: PricingTable = toml::from_str(&printed).unwrap();
    assert_eq!(back, t);
    let defaults = toml::to_string(&PricingTable::default()).unwrap();
    assert_eq!(
        toml::from_str::<PricingTable>(&defaults).unwrap(),
        PricingTable::default()
    );
}

#[test]
fn strings_and_json_numbers_are_read_exactly_too() {
    let t: PricingTable =
        serde_json::from_str(r#"{"codec": {"av1": "2.25"}, "preset": {"slow": 1.1}}"#).unwrap();
    assert_eq!(t.codec.av1, Factor::from_thousandths(2_250));
    assert_eq!(t.preset.slow, Factor::from_thousandths(1_100));
}

#[test]
fn bad_values_are_rejected_with_a_reason() {
    let err = |text: &str| {
        toml::from_str::<PricingTable>(text)
            .unwrap_err()
            .to_string()
    };
    assert!(err("[base_per_minute]\n\"720p\" = 2.5555").contains("more than three decimals"));
    assert!(err("[codec]\nh265 = -1.5").contains("negative"));
    assert!(err("[base_per_minute]\n\"720p\" = -2").contains("negative"));
    assert!(err("[codec]\nh265 = \"lots\"").contains("not a decimal"));
    assert!(err("[codec]\nvp9 = 1").contains("unknown field"));
    assert!(err("currency = \"EUR\"").contains("unknown field"));

    let invalid = |edit: fn(&mut PricingTable)| {
        let mut t = PricingTable::default();
        edit(&mut t);
        t.validate().unwrap_err()
    };
    assert!(invalid(|t| t.fps_bands.clear()).contains("empty"));
    assert!(invalid(|t| t.fps_bands.swap(0, 1)).contains("must ascend"));
    assert!(invalid(|t| t.fps_bands[2].up_to_fps = 120).contains("must reach 240"));
    assert!(
        invalid(|t| t.passes.two = Factor::from_thousandths(500_000))
            .contains("pricing.passes two = 500")
    );
    assert!(invalid(|t| t.codec.av1 = Factor::from_thousandths(-1)).contains("codec av1"));
    assert!(
        invalid(|t| t.base_per_minute.p4320 = Neu::from_whole(2_000_000))
            .contains("base_per_minute.4320p")
    );
}

#[test]
fn absurd_tables_saturate_instead_of_overflowing() {
    let mut t = PricingTable::default();
    t.base_per_minute.p720 = Neu::from_millis(i64::MAX);
    for f in [&mut t.codec.h264, &mut t.preset.fast, &mut t.passes.one] {
        *f = Factor::from_thousandths(i64::MAX);
    }
    assert_eq!(
        t.per_minute(&spec(Codec::H264, Resolution::P720, 30)),
        Neu::from_millis(i64::MAX)
    );
}

#[test]
fn on_demand_premium_is_one_more_factor_rounded_once() {
    let mut t = PricingTable::default();
    let s = spec(Codec::H264, Resolution::P1080, 30);
    assert_eq!(
        t.per_minute_times(&s, t.ondemand.normal),
        Neu::from_whole(6)
    );
    assert_eq!(t.per_minute_times(&s, t.ondemand.high), Neu::from_whole(8));
    assert_eq!(
        t.per_minute_times(&s, Factor::from_thousandths(0)),
        Neu::ZERO
    );
    // 0.001 × 1.25 (standard) × 1.5 (premium) = 0.001875 → 0.002; rounding the base price
    // first (0.00125 → 0.002) and then the premium (× 1.5) would give 0.003.
    t.base_per_minute.p1080 = Neu::from_millis(1);
    let mut s = spec(Codec::H264, Resolution::P1080, 30);
    s.preset = Preset::Standard;
    assert_eq!(
        t.per_minute_times(&s, t.ondemand.normal),
        Neu::from_millis(2)
    );
    let toml = "[ondemand]\nnormal = 1.25\nhigh = 3\n";
    let t: PricingTable = toml::from_str(toml).unwrap();
    assert_eq!(t.ondemand.normal, Factor::from_thousandths(1250));
    t.validate().unwrap();
}
