//! NEU amounts and the total for a duration (the per-minute price comes from
//! [`crate::pricing::PricingTable`]).
//!
//! Amounts are integers of a thousandth of a NEU inside; floating point never touches a stored
//! amount. On the wire they are JSON numbers with up to three decimals.

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
    pub const fn from_whole_const(n: i64) -> Self {
        Neu(n * 1000)
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
    /// Parses a decimal like `100` or `12.5` exactly (at most three decimals, not negative).
    pub fn parse(s: &str) -> Option<Neu> {
        parse_thousandths(s).ok().map(Neu)
    }
}

/// Reads a non-negative decimal with at most three fractional digits as an exact count of
/// thousandths (`"2.5"` → 2500). The message says what is wrong, for config and API errors.
pub fn parse_thousandths(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err(format!("{s} is negative; use 0 or more"));
    }
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) {
        return Err(format!("{s:?} is not a decimal number like 2 or 2.5"));
    }
    if frac.len() > 3 {
        return Err(format!(
            "{s} has more than three decimals; amounts are exact to a thousandth"
        ));
    }
    let too_large = || format!("{s} is too large");
    let w: i64 = whole.parse().map_err(|_| too_large())?;
    let f: i64 = format!("{frac:0<3}").parse().map_err(|_| too_large())?;
    w.checked_mul(Neu::MILLIS_PER_NEU)
        .and_then(|m| m.checked_add(f))
        .ok_or_else(too_large)
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

/// Total for a duration, rounded up to the next thousandth of a NEU.
pub fn total_price(per_minute: Neu, duration_sec: f64) -> Neu {
    let duration_ms = (duration_sec.max(0.0) * 1000.0).ceil() as i64;
    // per_minute.millis × duration_ms / 60_000, rounded up, in i128 so it cannot overflow.
    let num = per_minute.0 as i128 * duration_ms as i128;
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
        assert!(parse_thousandths("1.2345")
            .unwrap_err()
            .contains("three decimals"));
        assert!(parse_thousandths("-2").unwrap_err().contains("negative"));
        assert!(parse_thousandths("2,5")
            .unwrap_err()
            .contains("not a decimal"));
        assert_eq!(Neu::from_millis(12_050).to_string(), "12.05");
        assert_eq!(serde_json::to_string(&Neu::from_whole(3)).unwrap(), "3");
        assert_eq!(
            serde_json::to_string(&Neu::from_millis(2_500)).unwrap(),
            "2.5"
        );
    }

    #[test]
    fn prices_round_up_to_a_thousandth() {
        let pm = Neu::from_whole(2);
        // 5.28 s of 2 NEU/min = 0.176 NEU exactly.
        assert_eq!(total_price(pm, 5.28), Neu::from_millis(176));
        assert_eq!(total_price(pm, 60.0), Neu::from_whole(2));
        assert_eq!(total_price(pm, 0.0001), Neu::from_millis(1));
    }
}
