//! NEU amounts and the per-minute price function.
//!
//! Amounts are integers of a thousandth of a NEU inside; floating point never touches a stored
//! amount. On the wire they are JSON numbers with up to three decimals.

use crate::spec::{Codec, EncodeSpec, Resolution};
use serde::{Serialize, Serializer};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Neu(i64);

impl Neu {
    pub const ZERO: Neu = Neu(0);
    pub const MILLIS_PER_NEU: i64 = 1000;

    pub fn from_millis(m: i64) -> Self {
        Neu(m)
    }
    pub fn from_whole(n: i64) -> Self {
        Neu(n * Self::MILLIS_PER_NEU)
    }
    pub fn millis(self) -> i64 {
        self.0
    }
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / Self::MILLIS_PER_NEU as f64
    }
    /// Parses a decimal like `100` or `12.5` exactly (at most three decimals).
    pub fn parse(s: &str) -> Option<Neu> {
        let s = s.trim();
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty() || frac.len() > 3 || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let w: i64 = whole.parse().ok()?;
        let f: i64 = format!("{frac:0<3}").parse().ok()?;
        w.checked_mul(Self::MILLIS_PER_NEU)?.checked_add(f).map(Neu)
    }
}

impl fmt::Display for Neu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (w, r) = (self.0 / 1000, (self.0 % 1000).abs());
        if r == 0 {
            write!(f, "{w}")
        } else {
            write!(f, "{w}.{}", format!("{r:03}").trim_end_matches('0'))
        }
    }
}

impl Serialize for Neu {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % 1000 == 0 {
            s.serialize_i64(self.0 / 1000)
        } else {
            s.serialize_f64(self.as_f64())
        }
    }
}

/// Per-minute price of an encode: resolution base × codec factor (simple table; the billing
/// issue replaces it with the configurable one).
pub fn per_minute_price(spec: &EncodeSpec) -> Neu {
    let base_millis = match spec.resolution {
        Resolution::P480 => 1_000,
        Resolution::P720 => 2_000,
        Resolution::P1080 => 4_000,
        Resolution::P1440 => 6_000,
        Resolution::P2160 => 10_000,
        Resolution::P4320 => 40_000,
    };
    let codec_percent = match spec.codec {
        Codec::H264 => 100,
        Codec::H265 => 150,
        Codec::Av1 => 200,
    };
    Neu(base_millis * codec_percent / 100 * spec.passes as i64)
}

/// Total for a duration, rounded up to the next thousandth of a NEU.
pub fn total_price(per_minute: Neu, duration_sec: f64) -> Neu {
    let millis_secs = (duration_sec.max(0.0) * 1000.0).ceil() as i64; // duration in ms
                                                                      // per_minute.millis * duration_ms / 60_000, rounded up, in i128 to avoid overflow.
    let num = per_minute.0 as i128 * millis_secs as i128;
    Neu(((num + 59_999) / 60_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_exactly() {
        assert_eq!(Neu::parse("12.5"), Some(Neu::from_millis(12_500)));
        assert_eq!(Neu::parse("100"), Some(Neu::from_whole(100)));
        assert_eq!(Neu::parse("1.2345"), None);
        assert_eq!(Neu::parse("-1"), None);
        assert_eq!(Neu::from_millis(12_050).to_string(), "12.05");
        assert_eq!(serde_json::to_string(&Neu::from_whole(3)).unwrap(), "3");
        assert_eq!(
            serde_json::to_string(&Neu::from_millis(2_500)).unwrap(),
            "2.5"
        );
    }

    #[test]
    fn prices_round_up_to_a_thousandth() {
        let spec = EncodeSpec::new(Codec::H264, Resolution::P720, 30);
        let pm = per_minute_price(&spec);
        assert_eq!(pm, Neu::from_whole(2));
        // 5.28 s of 2 NEU/min = 0.176 NEU exactly.
        assert_eq!(total_price(pm, 5.28), Neu::from_millis(176));
        assert_eq!(total_price(pm, 60.0), Neu::from_whole(2));
        assert_eq!(total_price(pm, 0.0001), Neu::from_millis(1));
    }
}
