//! The search for the highest CRF (smallest file) whose samples still score the goal VMAF.
//! Pure: it proposes a CRF, is told what the samples scored there, and proposes the next one
//! or stops, so every rule is tested with a fake scorer and no ffmpeg.
//!
//! The model. Over the range that matters, `ln(100.5 − VMAF)` is close to linear in CRF
//! (measured on x264, x265 and SVT-AV1: each CRF step costs a near-constant fraction of the
//! distance to a perfect score). So one probe and a typical slope already predict well, and
//! two probes around the goal predict very well. Content that falls off a cliff (noise) is
//! closer to linear in VMAF itself; where the two interpolations between bracketing probes
//! disagree by more than half a VMAF point the search probes between them, otherwise it
//! takes their midpoint without another encode. That stop rule, not a fixed tolerance
//! ladder, is what saves probes against a bisection.
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
            Libx264 => Self::new(0.0, 51.0, 0.25, 0.13),
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

/// Stop when a probe scores within this much above the goal.
const HIT_BAND: f64 = 0.6;
/// Take the interpolated CRF without probing it when the two models agree this closely
/// (in VMAF points at the midpoint).
const AGREEMENT: f64 = 0.5;
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

    /// d ln(100.5 − VMAF)/d CRF from the two probes nearest `near` (in CRF), kept within a
    /// factor of three of the prior so one noisy pair cannot send the next probe off the scale.
    pub(crate) fn slope_near(&self, near: f64) -> f64 {
        let prior = self.scale.prior_slope;
        let mut by_distance: Vec<&Probe> = self.probes.iter().collect();
        by_distance.sort_by(|a, b| (a.crf - near).abs().total_cmp(&(b.crf - near).abs()));
        match by_distance.as_slice() {
            [a, b, ..] if (a.crf - b.crf).abs() > 1e-9 => {
                let s = (ylog(a.vmaf) - ylog(b.vmaf)) / (a.crf - b.crf);
                if s.is_finite() {
                    s.clamp(prior / 3.0, prior * 3.0)
                } else {
                    prior
                }
            }
            _ => prior,
        }
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

    /// What to do next.
    pub fn next(&self) -> Step {
        if self.probes.is_empty() {
            return Step::Probe(self.start);
        }
        let (lo, hi) = self.bracket();
        let capped = self.probes.len() >= self.max_probes;
        let done = |crf: f64, predicted: f64, reachable: bool| {
            Step::Done(Choice {
                crf,
                predicted,
                reachable,
            })
        };
        match (lo, hi) {
            // A probe just above the goal: nothing cheaper is worth another encode.
            (Some(lo), _) if lo.vmaf <= self.goal + HIT_BAND => done(lo.crf, lo.vmaf, true),
            (Some(lo), Some(hi)) => {
                if hi.crf - lo.crf <= self.scale.quantum + 1e-9 {
                    return done(lo.crf, lo.vmaf, true);
                }
                let (c_lin, c_log) = self.interpolate(&lo, &hi);
                let mid = (c_lin + c_log) / 2.0;
                let per_crf = (lo.vmaf - hi.vmaf) / (hi.crf - lo.crf);
                let disagreement = (c_log - c_lin).abs() / 2.0 * per_crf;
                // On the grid, strictly inside the bracket.
                let inside = |c: f64| {
                    let c = self.scale.floor(c);
                    (c > lo.crf + 1e-9 && c < hi.crf - 1e-9).then_some(c)
                };
                // Rounded toward quality, unless the next grid step up is still predicted
                // to score (all but) the goal: at low targets one step is worth points.
                let up = inside(mid + self.scale.quantum)
                    .filter(|&c| self.predict(c).is_some_and(|v| v >= self.goal - 0.25));
                let candidate = up
                    .or_else(|| inside(mid))
                    .or_else(|| inside(mid + self.scale.quantum));
                match candidate {
                    None => done(lo.crf, lo.vmaf, true),
                    Some(c) if disagreement <= AGREEMENT || capped => {
                        let predicted = self.predict(c).unwrap_or(self.goal);
                        done(c, predicted, true)
                    }
                    Some(c) => Step::Probe(c),
                }
            }
            // Every probe is above the goal: go cheaper, unless the range ends here.
            (Some(lo), None) => {
                if lo.crf >= self.scale.max || capped {
                    return done(lo.crf, lo.vmaf, true);
                }
                let step = (ylog(self.goal) - ylog(lo.vmaf)) / self.slope_near(lo.crf);
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
                let step = (ylog(lowest.vmaf) - ylog(self.goal)) / self.slope_near(lowest.crf);
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
