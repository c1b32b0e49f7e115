//! The search for the highest CRF (smallest file) whose samples still score the goal VMAF.
//! Pure: it proposes a CRF, is told what the samples scored there, and proposes the next one
//! or stops, so every rule is tested with a fake scorer and no ffmpeg.
//!
//! The model. Over the range that matters, `ln(100.5 − VMAF)` is close to linear in CRF
//! (measured on x264, x265 and SVT-AV1: each CRF step costs a near-constant fraction of the
//! distance to a perfect score). So one probe and a typical slope already predict well, and
//! two probes predict very well. The search stops without another encode when
//! - a probe scored within a quarter point of the goal;
//! - two probes bracket the goal and the two interpolations between them (linear in log
//!   distance, and linear in VMAF, which fits content that falls off a cliff, like noise,
//!   better) agree within 0.4 points: it takes their midpoint;
//! - two probes measured the slope and the nearest is within a point of the goal: it
//!   extrapolates;
//! - the encoder's range ends (the goal is out of reach: the best setting, reported as such),
//!   or [`MAX_PROBES`] were spent.
//!
//! These stop rules, not a fixed tolerance ladder or a bisection, are what save probes; the
//! final measurement of the whole file is the check on them.
//!
//! The first probe is the CRF the job would use without a target: the natural prior, and it
//! measures the size saved against that default for free.

use crate::plan::VideoEncoder;

/// The encoder's quality scale as the search sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityScale {
    /// Best quality the search may use.
    pub min: f64,
    /// Lowest quality (smallest file) the search may use.
    pub max: f64,
    /// The step the encoder honours: x264 and x265 take fractional CRFs (their VMAF can move
    /// four points per whole CRF on noisy content), SVT-AV1's `-crf` and NVENC's `-cq` do not.
    pub quantum: f64,
    /// A typical d ln(100.5 − VMAF) / d CRF, used until two probes measure the real one.
    pub prior_slope: f64,
}

impl QualityScale {
    pub fn of(encoder: VideoEncoder) -> Self {
        use VideoEncoder::*;
        // Slopes measured on the test clips at 480p/720p (fast presets); SVT-AV1's 0–63 scale
        // is about three times finer than x264's.
        match encoder {
            // CRF 0 makes x264 lossless, in the High 4:4:4 Predictive profile that browsers,
            // phones and hardware decoders cannot play: the scale stops at 1.
            Libx264 => Self::new(1.0, 51.0, 0.25, 0.13),
            Libx265 => Self::new(0.0, 51.0, 0.25, 0.10),
            Libsvtav1 => Self::new(1.0, 63.0, 1.0, 0.045),
            // CQ 0 means "automatic" to NVENC, so the scale starts at 1.
            H264Nvenc => Self::new(1.0, 51.0, 1.0, 0.12),
            HevcNvenc => Self::new(1.0, 51.0, 1.0, 0.10),
            Av1Nvenc => Self::new(1.0, 63.0, 1.0, 0.05),
        }
    }

    pub const fn new(min: f64, max: f64, quantum: f64, prior_slope: f64) -> Self {
        Self {
            min,
            max,
            quantum,
            prior_slope,
        }
    }

    /// `crf` on the encoder's grid, toward better quality, inside the range.
    pub fn floor(&self, crf: f64) -> f64 {
        let q = (crf / self.quantum + 1e-9).floor() * self.quantum;
        q.clamp(self.min, self.max)
    }

    /// `crf` on the encoder's grid, nearest, inside the range.
    pub fn round(&self, crf: f64) -> f64 {
        ((crf / self.quantum).round() * self.quantum).clamp(self.min, self.max)
    }
}

/// What the samples scored at one CRF.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    pub crf: f64,
    /// Mean VMAF of the sample encode against the samples.
    pub vmaf: f64,
    /// Size of the sample encode.
    pub bytes: u64,
}

/// Where the search ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub crf: f64,
    /// The samples' VMAF at `crf`: measured when it was probed, else interpolated.
    pub predicted: f64,
    /// False when even the best quality in range fell short of the goal.
    pub reachable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    Probe(f64),
    Done(Choice),
}

/// Stop when a probe scores within this much of the goal.
const HIT_BAND: f64 = 0.25;
/// Take the interpolated CRF without probing it when the two models agree this closely
/// (in VMAF points at the midpoint).
const AGREEMENT: f64 = 0.4;
/// With two probes measuring the slope, extrapolate to the goal without probing it when the
/// nearest probe is this close (over one VMAF point the curve's bend is negligible).
const EXTRAPOLATE_BAND: f64 = 1.0;
/// Scores from here up are treated as saturated (see [`Search::slope_near`]).
const SATURATED: f64 = 99.0;
/// One step moves the log distance to a perfect score by at most this (a factor of ~4.5).
const MAX_LOG_STEP: f64 = 1.5;
/// Never more sample encodes than this, whatever the content does.
pub const MAX_PROBES: usize = 6;

pub(crate) fn ylog(vmaf: f64) -> f64 {
    (100.5 - vmaf).max(0.05).ln()
}

fn vmaf_of(y: f64) -> f64 {
    100.5 - y.exp()
}

/// The search state: the goal and what has been probed.
#[derive(Debug, Clone)]
pub struct Search {
    scale: QualityScale,
    goal: f64,
    start: f64,
    max_probes: usize,
    probes: Vec<Probe>,
}

impl Search {
    /// Aims at `goal` (the target plus a small margin), starting from `start` (the job's
    /// default CRF).
    pub fn new(scale: QualityScale, goal: f64, start: f64) -> Self {
        Self {
            scale,
            goal,
            start: scale.round(start),
            max_probes: MAX_PROBES,
            probes: Vec::new(),
        }
    }

    pub fn with_max_probes(mut self, n: usize) -> Self {
        self.max_probes = n.max(1);
        self
    }

    pub fn goal(&self) -> f64 {
        self.goal
    }

    pub fn scale(&self) -> QualityScale {
        self.scale
    }

    pub fn probes(&self) -> &[Probe] {
        &self.probes
    }

    pub fn record(&mut self, probe: Probe) {
        self.probes.retain(|p| p.crf != probe.crf);
        self.probes.push(probe);
        self.probes.sort_by(|a, b| a.crf.total_cmp(&b.crf));
    }

    fn probed(&self, crf: f64) -> Option<&Probe> {
        self.probes.iter().find(|p| (p.crf - crf).abs() < 1e-9)
    }

    /// The highest-CRF probe that reaches the goal, and the lowest-CRF probe above it that
    /// does not (a noisy curve may have failing probes below `lo`; they are ignored).
    fn bracket(&self) -> (Option<Probe>, Option<Probe>) {
        let lo = self
            .probes
            .iter()
            .filter(|p| p.vmaf >= self.goal)
            .max_by(|a, b| a.crf.total_cmp(&b.crf))
            .copied();
        let hi = self
            .probes
            .iter()
            .filter(|p| p.vmaf < self.goal && lo.is_none_or(|l| p.crf > l.crf))
            .min_by(|a, b| a.crf.total_cmp(&b.crf))
            .copied();
        (lo, hi)
    }

    /// d ln(100.5 − VMAF)/d CRF from the two probes nearest `near`, kept within a factor of
    /// five of the prior so one noisy pair cannot send the next probe off the scale. Probes
    /// scoring 99 or more are left out: near a perfect score VMAF saturates and their log
    /// distance says little about the slope.
    pub(crate) fn slope_near(&self, near: f64) -> f64 {
        let prior = self.scale.prior_slope;
        let mut by_distance: Vec<&Probe> =
            self.probes.iter().filter(|p| p.vmaf < SATURATED).collect();
        by_distance.sort_by(|a, b| (a.crf - near).abs().total_cmp(&(b.crf - near).abs()));
        match by_distance.as_slice() {
            [a, b, ..] if (a.crf - b.crf).abs() > 1e-9 => {
                let s = (ylog(a.vmaf) - ylog(b.vmaf)) / (a.crf - b.crf);
                if s.is_finite() {
                    s.clamp(prior / 5.0, prior * 5.0)
                } else {
                    prior
                }
            }
            _ => prior,
        }
    }

    /// The CRF step from a probe scoring `from` to the goal at `slope`, at most
    /// [`MAX_LOG_STEP`] of log distance (a saturated score would otherwise ask for a leap).
    fn step_to_goal(&self, from: f64, slope: f64) -> f64 {
        let dy = (ylog(self.goal) - ylog(from.min(SATURATED))).clamp(-MAX_LOG_STEP, MAX_LOG_STEP);
        dy / slope
    }

    /// The two interpolations between a bracket: (linear in VMAF, linear in log distance).
    fn interpolate(&self, lo: &Probe, hi: &Probe) -> (f64, f64) {
        let span = hi.crf - lo.crf;
        let t_lin = ((lo.vmaf - self.goal) / (lo.vmaf - hi.vmaf)).clamp(0.0, 1.0);
        let t_log =
            ((ylog(self.goal) - ylog(lo.vmaf)) / (ylog(hi.vmaf) - ylog(lo.vmaf))).clamp(0.0, 1.0);
        (lo.crf + t_lin * span, lo.crf + t_log * span)
    }

    /// The samples' VMAF at `crf`, interpolated between the probes around it (in log
    /// distance), or extrapolated from the nearest with the measured slope.
    pub fn predict(&self, crf: f64) -> Option<f64> {
        if let Some(p) = self.probed(crf) {
            return Some(p.vmaf);
        }
        let below = self.probes.iter().rfind(|p| p.crf < crf);
        let above = self.probes.iter().find(|p| p.crf > crf);
        match (below, above) {
            (Some(a), Some(b)) => {
                let t = (crf - a.crf) / (b.crf - a.crf);
                Some(vmaf_of(ylog(a.vmaf) + t * (ylog(b.vmaf) - ylog(a.vmaf))))
            }
            (Some(p), None) | (None, Some(p)) => {
                Some(vmaf_of(ylog(p.vmaf) + self.slope_near(crf) * (crf - p.crf)))
            }
            (None, None) => None,
        }
    }

    /// The sample encode's size at `crf`, interpolated log-linearly (bitrate roughly halves
    /// every fixed number of CRF steps), or extrapolated from the two nearest probes.
    pub fn predict_bytes(&self, crf: f64) -> Option<f64> {
        if let Some(p) = self.probed(crf) {
            return Some(p.bytes as f64);
        }
        let mut near: Vec<&Probe> = self.probes.iter().filter(|p| p.bytes > 0).collect();
        let below = near.iter().rfind(|p| p.crf < crf).copied();
        let above = near.iter().find(|p| p.crf > crf).copied();
        let (a, b) = match (below, above) {
            (Some(a), Some(b)) => (a, b),
            _ => {
                near.sort_by(|a, b| (a.crf - crf).abs().total_cmp(&(b.crf - crf).abs()));
                match near.as_slice() {
                    [a, b, ..] => (*a, *b),
                    [a] => return Some(a.bytes as f64),
                    [] => return None,
                }
            }
        };
        let t = (crf - a.crf) / (b.crf - a.crf);
        let (la, lb) = ((a.bytes as f64).ln(), (b.bytes as f64).ln());
        Some((la + t * (lb - la)).exp())
    }

    /// `crf` on the grid between `low` and `high` (exclusive): rounded toward quality, unless
    /// the next step up is still predicted to score (all but) the goal, since at low targets
    /// one step is worth points.
    fn on_grid(&self, crf: f64, low: f64, high: f64) -> Option<f64> {
        let inside = |c: f64| {
            let c = self.scale.floor(c);
            (c > low + 1e-9 && c < high - 1e-9).then_some(c)
        };
        inside(crf + self.scale.quantum)
            .filter(|&c| self.predict(c).is_some_and(|v| v >= self.goal - 0.15))
            .or_else(|| inside(crf))
    }

    /// What to do next.
    pub fn next(&self) -> Step {
        if self.probes.is_empty() {
            return Step::Probe(self.start);
        }
        let done = |crf: f64, predicted: f64, reachable: bool| {
            Step::Done(Choice {
                crf,
                predicted,
                reachable,
            })
        };
        let predicted_done = |crf: f64, reachable: bool| {
            done(crf, self.predict(crf).unwrap_or(self.goal), reachable)
        };
        // A probe on the goal: nothing is worth another encode (of several, the cheapest).
        if let Some(hit) = self
            .probes
            .iter()
            .filter(|p| (p.vmaf - self.goal).abs() <= HIT_BAND)
            .max_by(|a, b| a.crf.total_cmp(&b.crf))
        {
            return done(hit.crf, hit.vmaf, true);
        }
        let (lo, hi) = self.bracket();
        let capped = self.probes.len() >= self.max_probes;
        match (lo, hi) {
            // The goal lies between two probes.
            (Some(lo), Some(hi)) => {
                if hi.crf - lo.crf <= self.scale.quantum + 1e-9 {
                    return done(lo.crf, lo.vmaf, true);
                }
                let (c_lin, c_log) = self.interpolate(&lo, &hi);
                let mid = (c_lin + c_log) / 2.0;
                let per_crf = (lo.vmaf - hi.vmaf) / (hi.crf - lo.crf);
                let disagreement = (c_log - c_lin).abs() / 2.0 * per_crf;
                match self.on_grid(mid, lo.crf, hi.crf) {
                    None => done(lo.crf, lo.vmaf, true),
                    Some(c) if disagreement <= AGREEMENT || capped => predicted_done(c, true),
                    Some(c) => Step::Probe(c),
                }
            }
            // Every probe is above the goal: go cheaper, unless the range ends here.
            (Some(lo), None) => {
                if lo.crf >= self.scale.max || capped {
                    return done(lo.crf, lo.vmaf, true);
                }
                let step = self.step_to_goal(lo.vmaf, self.slope_near(lo.crf));
                let target = (lo.crf + step).min(self.scale.max + self.scale.quantum);
                // Close to the goal with a measured slope: a short extrapolation is as good
                // as another probe.
                if self.probes.len() >= 2 && lo.vmaf - self.goal <= EXTRAPOLATE_BAND {
                    return match self.on_grid(target, lo.crf, self.scale.max + 1e-6) {
                        Some(c) => predicted_done(c, true),
                        // Not a whole grid step beyond the probe: the probe it is.
                        None => done(lo.crf, lo.vmaf, true),
                    };
                }
                let next = self.scale.round(lo.crf + step.max(self.scale.quantum));
                if self.probed(next).is_some() {
                    return done(lo.crf, lo.vmaf, true);
                }
                Step::Probe(next)
            }
            // Every probe is below the goal: go better, until the range ends.
            (None, Some(_)) | (None, None) => {
                let best = self
                    .probes
                    .iter()
                    .max_by(|a, b| a.vmaf.total_cmp(&b.vmaf))
                    .copied()
                    .unwrap_or(Probe {
                        crf: self.start,
                        vmaf: 0.0,
                        bytes: 0,
                    });
                let lowest = self.probes[0];
                if lowest.crf <= self.scale.min || capped {
                    // Out of reach inside the encoder's range: the best quality seen.
                    return done(best.crf, best.vmaf, false);
                }
                let step = -self.step_to_goal(lowest.vmaf, self.slope_near(lowest.crf));
                let target = lowest.crf - step;
                if self.probes.len() >= 2
                    && self.goal - lowest.vmaf <= EXTRAPOLATE_BAND
                    && target >= self.scale.min
                {
                    if let Some(c) = self.on_grid(target, target - 1.0, lowest.crf) {
                        return predicted_done(c, true);
                    }
                }
                let mut next = self.scale.round(lowest.crf - step.max(self.scale.quantum));
                // Close to the end of the range: try the end itself, which settles it.
                if next < self.scale.min + 4.0 * self.scale.quantum {
                    next = self.scale.min;
                }
                if self.probed(next).is_some() {
                    return done(best.crf, best.vmaf, false);
                }
                Step::Probe(next)
            }
        }
    }
}

#[cfg(test)]
#[path = "search_tests.rs"]
mod tests;
