//! The search against fake scorers: smooth curves, cliffs, plateaus, noise and the probe cap.

use super::*;

/// Runs the search to the end against `curve`; returns the choice and the CRFs probed.
fn run(
    scale: QualityScale,
    goal: f64,
    start: f64,
    curve: impl Fn(f64) -> f64,
) -> (Choice, Vec<f64>) {
    let mut s = Search::new(scale, goal, start);
    let mut probed = Vec::new();
    loop {
        match s.next() {
            Step::Probe(crf) => {
                assert!(!probed.contains(&crf), "probed {crf} twice: {probed:?}");
                assert!(crf >= scale.min && crf <= scale.max, "{crf} out of range");
                let on_grid = (crf / scale.quantum).round() * scale.quantum;
                assert!((crf - on_grid).abs() < 1e-9, "{crf} off the grid");
                probed.push(crf);
                s.record(Probe {
                    crf,
                    vmaf: curve(crf),
                    bytes: (1e7 * (-0.11 * crf).exp()) as u64,
                });
            }
            Step::Done(choice) => return (choice, probed),
        }
    }
}

/// x264-like: ln(100.5 − VMAF) linear in CRF (the bigbuckbunny 720p curve).
fn smooth(crf: f64) -> f64 {
    100.5 - (1.23 + 0.145 * (crf - 16.0)).exp()
}

/// Noise-like: near 100 up to CRF 21, then four VMAF points per CRF.
fn cliff(crf: f64) -> f64 {
    if crf <= 21.0 {
        99.4
    } else {
        (99.4 - 4.2 * (crf - 21.0)).max(10.0)
    }
}

/// A still slide: never above 97.2, however good the encode.
fn plateau(crf: f64) -> f64 {
    (97.2 - 0.004 * (crf - 20.0).max(0.0).powi(3)).min(97.2)
}

const X264: QualityScale = QualityScale::new(0.0, 51.0, 0.25, 0.13);
const AV1: QualityScale = QualityScale::new(1.0, 63.0, 1.0, 0.045);

#[test]
fn smooth_curves_converge_in_two_probes() {
    for goal in [60.3, 80.3, 90.3, 93.3, 95.3, 97.3] {
        let (choice, probed) = run(X264, goal, 22.0, smooth);
        assert!(choice.reachable);
        let got = smooth(choice.crf);
        assert!(
            (got - goal).abs() <= 0.3,
            "goal {goal}: crf {} scores {got} after {probed:?}",
            choice.crf
        );
        // One probe at the default, one at the prediction; a goal far from the default's
        // score (60 against its 91) may take one more.
        let cap = if goal < 75.0 { 3 } else { 2 };
        assert!(probed.len() <= cap, "goal {goal}: {probed:?}");
        assert_eq!(probed[0], 22.0, "starts at the default");
        assert!((choice.predicted - got).abs() < 0.3, "{choice:?} vs {got}");
    }
}

#[test]
fn av1_stays_on_whole_crfs() {
    let curve = |crf: f64| 100.5 - (1.2 + 0.045 * (crf - 20.0)).exp();
    for goal in [90.3, 95.3] {
        let (choice, probed) = run(AV1, goal, 33.0, curve);
        assert_eq!(choice.crf.fract(), 0.0);
        let got = curve(choice.crf);
        assert!((got - goal).abs() <= 0.3, "{goal}: {choice:?} {probed:?}");
        assert!(probed.len() <= 2, "{probed:?}");
    }
}

#[test]
fn a_cliff_still_lands_near_the_goal() {
    for goal in [90.3, 95.3] {
        let (choice, probed) = run(X264, goal, 22.0, cliff);
        let got = cliff(choice.crf);
        assert!(
            (got - goal).abs() <= 1.0,
            "goal {goal}: crf {} scores {got} after {probed:?}",
            choice.crf
        );
        assert!(probed.len() <= 3, "{probed:?}");
    }
}

#[test]
fn an_unreachable_goal_ends_at_the_best_setting_and_says_so() {
    let (choice, probed) = run(X264, 98.3, 22.0, plateau);
    assert!(!choice.reachable, "{choice:?}");
    assert!(probed.len() <= MAX_PROBES, "{probed:?}");
    assert!((choice.predicted - 97.2).abs() < 1e-9);
    // Only the range's end proves a goal unreachable (or the cap).
    assert!(
        probed.contains(&0.0) || probed.len() == MAX_PROBES,
        "{probed:?}"
    );
}

#[test]
fn a_goal_met_even_at_the_lowest_quality_takes_the_smallest_file() {
    let (choice, probed) = run(X264, 20.0, 22.0, |_| 99.0);
    assert_eq!(choice.crf, 51.0);
    assert!(choice.reachable);
    // A saturated score says little about the slope: steps are capped, and it takes a few.
    assert!(probed.len() <= 4, "{probed:?}");
}

#[test]
fn a_saturated_first_probe_does_not_send_the_second_off_the_scale() {
    // Clean graphics in motion: ~99.9 at the default, then a steep fall.
    let steep = |crf: f64| (100.5 - (-0.6 + 0.3 * (crf - 22.0)).exp()).min(99.94);
    let (choice, probed) = run(X264, 90.15, 22.0, steep);
    // The prior alone would leap 22 CRF (to ~44, a score near 0); the cap keeps it to 11.5.
    assert_eq!(probed[1], 33.5, "{probed:?}");
    assert!(
        (steep(choice.crf) - 90.15).abs() <= 0.5,
        "{choice:?} {probed:?}"
    );
    assert!(probed.len() <= 4, "{probed:?}");
}

#[test]
fn the_probe_cap_holds_on_a_curve_that_makes_no_sense() {
    // Pseudo-random scores, unrelated to the CRF.
    let noisy = |crf: f64| {
        let x = ((crf * 7919.0).sin() * 10_000.0).fract().abs();
        70.0 + 30.0 * x
    };
    for cap in [1, 2, 4, MAX_PROBES] {
        let mut s = Search::new(X264, 90.3, 22.0).with_max_probes(cap);
        let mut n = 0;
        let choice = loop {
            match s.next() {
                Step::Probe(crf) => {
                    n += 1;
                    s.record(Probe {
                        crf,
                        vmaf: noisy(crf),
                        bytes: 1000,
                    });
                }
                Step::Done(c) => break c,
            }
        };
        assert!(n <= cap, "cap {cap}: {n} probes");
        assert!(choice.crf >= 0.0 && choice.crf <= 51.0);
    }
}

#[test]
fn sizes_interpolate_log_linearly() {
    let mut s = Search::new(X264, 90.0, 22.0);
    s.record(Probe {
        crf: 20.0,
        vmaf: 94.0,
        bytes: 4000,
    });
    s.record(Probe {
        crf: 26.0,
        vmaf: 86.0,
        bytes: 1000,
    });
    assert_eq!(s.predict_bytes(20.0), Some(4000.0));
    let mid = s.predict_bytes(23.0).unwrap();
    assert!((mid - 2000.0).abs() < 1.0, "{mid}");
    let beyond = s.predict_bytes(32.0).unwrap();
    assert!((beyond - 250.0).abs() < 1.0, "{beyond}");
    let v = s.predict(23.0).unwrap();
    assert!(
        v < 94.0 && v > 86.0 && v > 90.0,
        "log interpolation bows upward: {v}"
    );
}

#[test]
fn grid_helpers() {
    assert_eq!(X264.floor(22.37), 22.25);
    assert_eq!(X264.floor(-3.0), 0.0);
    assert_eq!(X264.round(22.37), 22.25);
    assert_eq!(AV1.floor(0.2), 1.0);
    assert_eq!(AV1.round(40.6), 41.0);
    assert_eq!(AV1.round(70.0), 63.0);
}
