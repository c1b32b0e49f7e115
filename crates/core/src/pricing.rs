//! The price list: NEU per minute of output for an encode spec.
//!
//! A base price per resolution (h264, fast, one pass, ≤30 fps) times one factor per knob
//! (codec, fps band, preset, passes, optimize). Operators write prices and factors as decimals
//! in the `[pricing]` table of `convertrilo.toml`; both are held exactly as integer thousandths
//! (a float never reaches the ledger), and the product is rounded up once, at the end.

use crate::{
    neu::parse_thousandths,
    spec::{Codec, EncodeSpec, Optimize, Preset, Resolution, MAX_FPS},
    Neu,
};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A multiplier held exactly as thousandths (`1.5` is 1500).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Factor(i64);

impl Factor {
    pub const ONE: Factor = Factor(1000);

    pub const fn from_thousandths(t: i64) -> Self {
        Factor(t)
    }
    pub fn thousandths(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Factor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Same decimal spelling as an amount.
        Neu::from_millis(self.0).fmt(f)
    }
}

impl Serialize for Factor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Neu::from_millis(self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Factor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Thousandths).map(Factor)
    }
}

/// Reads `2`, `2.5` or `"2.5"` as exact thousandths. TOML hands decimals over as `f64`; the
/// shortest spelling that reads back as the same `f64` is the literal the operator wrote
/// (for anything up to 15 significant digits), so parsing that spelling is exact.
struct Thousandths;

impl de::Visitor<'_> for Thousandths {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a non-negative decimal with at most three decimals, like 2 or 2.5")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        parse_thousandths(&v.to_string()).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        parse_thousandths(&v.to_string()).map_err(E::custom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        if !v.is_finite() {
            return Err(E::custom(format!("{v} is not a number")));
        }
        parse_thousandths(&v.to_string()).map_err(E::custom)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
        parse_thousandths(v).map_err(E::custom)
    }
}

/// Deserializes an exact NEU amount written as `2`, `2.5` or `"2.5"`.
pub fn neu_decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Neu, D::Error> {
    d.deserialize_any(Thousandths).map(Neu::from_millis)
}

/// NEU per minute for h264, fast preset, one pass, ≤30 fps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BasePrices {
    #[serde(rename = "480p", deserialize_with = "neu_decimal")]
    pub p480: Neu,
    #[serde(rename = "720p", deserialize_with = "neu_decimal")]
    pub p720: Neu,
    #[serde(rename = "1080p", deserialize_with = "neu_decimal")]
    pub p1080: Neu,
    #[serde(rename = "1440p", deserialize_with = "neu_decimal")]
    pub p1440: Neu,
    #[serde(rename = "2160p", deserialize_with = "neu_decimal")]
    pub p2160: Neu,
    #[serde(rename = "4320p", deserialize_with = "neu_decimal")]
    pub p4320: Neu,
}

impl Default for BasePrices {
    fn default() -> Self {
        Self {
            p480: Neu::from_whole(1),
            p720: Neu::from_whole(2),
            p1080: Neu::from_whole(4),
            p1440: Neu::from_whole(6),
            p2160: Neu::from_whole(10),
            p4320: Neu::from_whole(40),
        }
    }
}

impl BasePrices {
    pub fn get(&self, r: Resolution) -> Neu {
        match r {
            Resolution::P480 => self.p480,
            Resolution::P720 => self.p720,
            Resolution::P1080 => self.p1080,
            Resolution::P1440 => self.p1440,
            Resolution::P2160 => self.p2160,
            Resolution::P4320 => self.p4320,
        }
    }
    fn all(&self) -> [(&'static str, Neu); 6] {
        [
            ("480p", self.p480),
            ("720p", self.p720),
            ("1080p", self.p1080),
            ("1440p", self.p1440),
            ("2160p", self.p2160),
            ("4320p", self.p4320),
        ]
    }
}

/// Declares a table of one factor per named choice, with its defaults.
macro_rules! factor_table {
    ($(#[$m:meta])* $name:ident { $($field:ident = $default:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name { $(pub $field: Factor),+ }
        impl Default for $name {
            fn default() -> Self {
                Self { $($field: Factor($default)),+ }
            }
        }
        impl $name {
            fn all(&self) -> Vec<(&'static str, Factor)> {
                vec![$((stringify!($field), self.$field)),+]
            }
        }
    };
}

factor_table!(CodecFactors { h264 = 1000, h265 = 1500, av1 = 2000 });
factor_table!(PresetFactors { fast = 1000, standard = 1250, slow = 1500 });
factor_table!(PassFactors { one = 1000, two = 1600 });
factor_table!(OptimizeFactors { none = 1000, vmaf = 2000 });
factor_table!(
    /// The premium for `/ondemand/encode`, by its `priority`: the price of being queued at
    /// once (and, for `high`, ahead of everything else).
    OnDemandFactors { normal = 1500, high = 2000 }
);

/// Jobs whose fps cap is at most `up_to_fps` (and above the previous band) pay `factor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FpsBand {
    pub up_to_fps: u32,
    pub factor: Factor,
}

/// Guards against tables nobody could pay. At these limits i128 holds base × five factors
/// exactly; a sixth (the on-demand premium) at its extreme saturates, i.e. is unpayable.
const MAX_FACTOR: i64 = 100 * 1000;
const MAX_BASE: i64 = 1_000_000 * 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PricingTable {
    pub base_per_minute: BasePrices,
    pub codec: CodecFactors,
    /// Ascending by `up_to_fps`; the last band must reach [`MAX_FPS`].
    pub fps_bands: Vec<FpsBand>,
    pub preset: PresetFactors,
    pub passes: PassFactors,
    pub optimize: OptimizeFactors,
    pub ondemand: OnDemandFactors,
}

impl Default for PricingTable {
    fn default() -> Self {
        let band = |up_to_fps, t| FpsBand {
            up_to_fps,
            factor: Factor(t),
        };
        Self {
            base_per_minute: BasePrices::default(),
            codec: CodecFactors::default(),
            fps_bands: vec![band(30, 1000), band(60, 1500), band(MAX_FPS, 2000)],
            preset: PresetFactors::default(),
            passes: PassFactors::default(),
            optimize: OptimizeFactors::default(),
            ondemand: OnDemandFactors::default(),
        }
    }
}

impl PricingTable {
    /// NEU per minute of output: base × every factor, computed exactly and rounded up to the
    /// thousandth once. A product beyond `i64` (only possible in a table `validate` rejects)
    /// saturates, which no account can pay.
    pub fn per_minute(&self, spec: &EncodeSpec) -> Neu {
        self.per_minute_times(spec, Factor::ONE)
    }

    /// [`Self::per_minute`] with one more factor in the same exact product (an on-demand
    /// premium, or zero for a free job), so the premium is rounded once, not twice.
    pub fn per_minute_times(&self, spec: &EncodeSpec, extra: Factor) -> Neu {
        let factors = [
            extra,
            self.codec_factor(spec.codec),
            self.fps_factor(spec.fps),
            self.preset_factor(spec.preset),
            self.passes_factor(spec.passes),
            self.optimize_factor(spec.optimize),
        ];
        let mut num = i128::from(self.base_per_minute.get(spec.resolution).millis());
        let mut den: i128 = 1;
        for f in factors {
            let Some(n) = num.checked_mul(i128::from(f.0)) else {
                return Neu::from_millis(i64::MAX);
            };
            num = n;
            den *= 1000;
        }
        let ceil = num.div_euclid(den) + i128::from(num.rem_euclid(den) != 0);
        Neu::from_millis(i64::try_from(ceil).unwrap_or(i64::MAX))
    }

    fn codec_factor(&self, c: Codec) -> Factor {
        match c {
            Codec::H264 => self.codec.h264,
            Codec::H265 => self.codec.h265,
            Codec::Av1 => self.codec.av1,
        }
    }

    /// The first band that reaches the fps cap; above every band, the last one.
    fn fps_factor(&self, fps: u32) -> Factor {
        self.fps_bands
            .iter()
            .find(|b| fps <= b.up_to_fps)
            .or(self.fps_bands.last())
            .map_or(Factor::ONE, |b| b.factor)
    }

    fn preset_factor(&self, p: Preset) -> Factor {
        match p {
            Preset::Fast => self.preset.fast,
            Preset::Standard => self.preset.standard,
            Preset::Slow => self.preset.slow,
        }
    }

    fn passes_factor(&self, passes: u8) -> Factor {
        if passes >= 2 {
            self.passes.two
        } else {
            self.passes.one
        }
    }

    fn optimize_factor(&self, o: Optimize) -> Factor {
        match o {
            Optimize::None => self.optimize.none,
            Optimize::Vmaf => self.optimize.vmaf,
        }
    }

    /// Checks what deserializing cannot: band order and coverage, and sane magnitudes.
    /// The message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        for (name, price) in self.base_per_minute.all() {
            if !(0..=MAX_BASE).contains(&price.millis()) {
                return Err(format!(
                    "pricing.base_per_minute.{name} = {price}: use a price from 0 to {}",
                    Neu::from_millis(MAX_BASE)
                ));
            }
        }
        let tables = [
            ("codec", self.codec.all()),
            ("preset", self.preset.all()),
            ("passes", self.passes.all()),
            ("optimize", self.optimize.all()),
            ("ondemand", self.ondemand.all()),
        ];
        let bands = self
            .fps_bands
            .iter()
            .map(|b| ("fps_bands", format!("up_to_fps {}", b.up_to_fps), b.factor));
        let named = tables
            .iter()
            .flat_map(|(t, fs)| fs.iter().map(move |(k, f)| (*t, k.to_string(), *f)));
        for (table, key, factor) in named.chain(bands) {
            if !(0..=MAX_FACTOR).contains(&factor.0) {
                return Err(format!(
                    "pricing.{table} {key} = {factor}: use a factor from 0 to {}",
                    Factor(MAX_FACTOR)
                ));
            }
        }
        let Some(last) = self.fps_bands.last() else {
            return Err("pricing.fps_bands is empty: give at least one band".into());
        };
        for pair in self.fps_bands.windows(2) {
            if pair[0].up_to_fps >= pair[1].up_to_fps {
                return Err(format!(
                    "pricing.fps_bands must ascend by up_to_fps: {} comes before {}",
                    pair[0].up_to_fps, pair[1].up_to_fps
                ));
            }
        }
        if last.up_to_fps < MAX_FPS {
            return Err(format!(
                "pricing.fps_bands ends at {} fps: the last band must reach {MAX_FPS}, the highest fps a job may ask for",
                last.up_to_fps
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "pricing_tests.rs"]
mod tests;
