//! Helpers for plugin settings: durations written the way people write them
//! (`"250ms"`, `"2s"`, `"1m"`, or a number of milliseconds), and rejections
//! that name the setting they reject ([`reject_at`]).

use alloc::format;
use alloc::string::String;
use core::fmt;
use core::time::Duration;

pub use crate::rejection::{PathStep, Rejection, reject_at};

/// A duration in a plugin's config: a string with a unit (`ns`, `us`, `ms`,
/// `s`, `m`, `h`; fractions allowed: `"1.5s"`) or a plain number of
/// milliseconds. Serializes as milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    /// From milliseconds.
    pub const fn ms(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    /// From seconds.
    pub const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }

    /// The duration.
    pub const fn get(self) -> Duration {
        self.0
    }

    /// Whole milliseconds (saturating).
    pub fn as_ms(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }

    /// Nanoseconds (saturating).
    pub fn as_ns(self) -> u64 {
        u64::try_from(self.0.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Parses `"250ms"`, `"1.5s"`, `"2m"`, `"100"` (milliseconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. \"250ms\" or \"2s\""))?;
    let scale = match unit.trim() {
        "" | "ms" => 1e-3,
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("invalid duration {text:?}: unknown unit {other:?}")),
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("invalid duration {text:?}: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl<'de> serde::Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"250ms\" or \"2s\", or milliseconds")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dur, E> {
                Ok(Dur::ms(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dur, E> {
                u64::try_from(v)
                    .map(Dur::ms)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Dur, E> {
                if v.is_finite() && (0.0..1e12).contains(&v) {
                    Ok(Dur(Duration::from_secs_f64(v / 1000.0)))
                } else {
                    Err(E::custom(
                        "a duration must be a non-negative number of milliseconds",
                    ))
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl serde::Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.as_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_rejects_junk() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("100"), Ok(Duration::from_millis(100)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 weeks").is_err());
        let d: Dur = serde_json::from_str("\"20ms\"").unwrap_or_default();
        assert_eq!(d, Dur::ms(20));
        let d: Dur = serde_json::from_str("7").unwrap_or_default();
        assert_eq!(d, Dur::ms(7));
        assert!(serde_json::from_str::<Dur>("-1").is_err());
    }
}
