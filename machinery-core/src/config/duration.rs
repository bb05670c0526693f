//! The one duration syntax of the project: configuration values, `@every` schedules
//! and (through the same rules in `machinery-macros`) `#[task(timeout = …)]`.
//!
//! A duration is a bare whole number, counted in the unit of the place that reads it
//! (seconds everywhere, except the keys whose name ends in `_ms`, which keep their
//! historical milliseconds), or number-unit pairs as [`humantime`] reads them:
//! `500ms`, `2s`, `5m`, `1h30m`, `1h 30m`, `1d`, `2w`, `1.5s` (humantime also reads
//! long unit names such as `30 seconds`, and `M` and `y` as months of 30.44 days and
//! years of 365.25 days). It must be whole milliseconds
//! (`1500us` is refused: Redis counts in milliseconds) and at most `i64::MAX`
//! milliseconds, so no engine overflows converting it.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// What is accepted, for error messages.
pub(crate) const SYNTAX: &str =
    "a duration such as `500ms`, `2s`, `5m`, `1h30m` or `1d`, or a whole number of";

/// Largest duration any engine accepts: `i64::MAX` milliseconds.
pub const MAX_DURATION: Duration = Duration::from_millis(i64::MAX as u64);

/// What a bare number counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BareUnit {
    Seconds,
    Millis,
}

impl BareUnit {
    fn name(self) -> &'static str {
        match self {
            BareUnit::Seconds => "seconds",
            BareUnit::Millis => "milliseconds",
        }
    }
}

/// Parses `text` in the project's duration syntax; a bare number counts `bare`.
///
/// # Errors
///
/// A reason starting with `expected`, quoting `text`, when it is not a duration, has a
/// sub-millisecond part, or is longer than [`MAX_DURATION`]. Zero is accepted: callers
/// that refuse it say so themselves.
pub(crate) fn parse(text: &str, bare: BareUnit) -> Result<Duration, String> {
    let trimmed = text.trim();
    let expected = || format!("expected {SYNTAX} {}", bare.name());
    let too_large = || {
        format!(
            "{}, at most {}ms; got `{}`",
            expected(),
            MAX_DURATION.as_millis(),
            text.escape_debug()
        )
    };
    let duration = if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = trimmed.parse().map_err(|_| too_large())?;
        match bare {
            BareUnit::Seconds => n
                .checked_mul(1000)
                .map(Duration::from_millis)
                .ok_or_else(too_large)?,
            BareUnit::Millis => Duration::from_millis(n),
        }
    } else {
        humantime::parse_duration(trimmed).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => too_large(),
            e => format!("{} ({e}); got `{}`", expected(), text.escape_debug()),
        })?
    };
    if duration > MAX_DURATION {
        return Err(too_large());
    }
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!(
            "{}, in whole milliseconds; got `{}`",
            expected(),
            text.escape_debug()
        ));
    }
    Ok(duration)
}

/// Parses a duration whose bare numbers are seconds: what `@every`, the environment
/// and YAML accept for every duration key not ending in `_ms`.
///
/// # Errors
///
/// A sentence saying what is accepted, as for the configuration keys.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use machinery_core::config::parse_duration;
///
/// assert_eq!(parse_duration("1h30m")?, Duration::from_secs(5400));
/// assert_eq!(parse_duration("500ms")?, Duration::from_millis(500));
/// assert_eq!(parse_duration("90")?, Duration::from_secs(90));
/// assert!(parse_duration("soon").is_err());
/// # Ok::<(), String>(())
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse(text, BareUnit::Seconds)
}

/// `Duration::from_millis(90_000)` → `1m30s`: the shortest form [`parse_duration`]
/// reads back (sub-millisecond parts are dropped).
pub fn format_duration(duration: Duration) -> String {
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let mut out = String::new();
    let mut rest = ms;
    for (unit, len) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if rest >= len {
            out.push_str(&format!("{}{unit}", rest / len));
            rest %= len;
        }
    }
    if rest > 0 || out.is_empty() {
        out.push_str(&format!("{rest}ms"));
    }
    out
}

/// A serde visitor for a duration from a YAML number or string, or an environment string.
struct DurationVisitor(BareUnit);

impl<'de> Visitor<'de> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SYNTAX} {}", self.0.name())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        parse(&v.to_string(), self.0).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        parse(&v.to_string(), self.0).map_err(E::custom)
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Duration, E> {
        parse(&v.to_string(), self.0).map_err(E::custom)
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Duration, E> {
        parse(&v.to_string(), self.0).map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        // Integers beyond 64 bits come back from the YAML parser as floats: name the
        // limit, not a unit the user never wrote (`1e26`).
        if v.fract() == 0.0 && v.abs() >= 18_446_744_073_709_551_616.0 {
            return Err(E::custom(format!(
                "expected {SYNTAX} {}, at most {}ms; got a number beyond 64 bits",
                self.0.name(),
                MAX_DURATION.as_millis()
            )));
        }
        parse(&format!("{v:?}"), self.0).map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v, self.0).map_err(E::custom)
    }
}

/// `#[serde(deserialize_with = "seconds")]`: a duration whose bare numbers are seconds.
pub(crate) fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor(BareUnit::Seconds))
}

/// `#[serde(deserialize_with = "millis")]`: a duration whose bare numbers are
/// milliseconds, for the keys named `…_ms`.
pub(crate) fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor(BareUnit::Millis))
}

/// Serde helpers for engine sections: `#[serde(deserialize_with =
/// "machinery_core::config::serde_duration::seconds")]`.
pub mod serde_duration {
    use std::time::Duration;

    use serde::Deserializer;

    /// A duration in the project's syntax whose bare numbers are seconds.
    ///
    /// # Errors
    ///
    /// The deserializer's error, saying what is accepted and quoting the value.
    pub fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::seconds(d)
    }

    /// A duration in the project's syntax whose bare numbers are milliseconds (for
    /// keys whose name ends in `_ms`).
    ///
    /// # Errors
    ///
    /// The deserializer's error, saying what is accepted and quoting the value.
    pub fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::millis(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses() {
        let cases = [
            ("500ms", 500),
            ("2s", 2_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("1h 30m", 5_400_000),
            ("1d", 86_400_000),
            ("90", 90_000),
            (" 45\n", 45_000),
            ("0", 0),
            ("0s", 0),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text:?}"
            );
        }
        assert_eq!(
            parse("250", BareUnit::Millis),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(parse("2s", BareUnit::Millis), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn bad_forms_say_what_is_accepted() {
        for text in ["", "soon", "-5", "1.5", "5 parsecs", "10x", "1500us"] {
            let reason = parse_duration(text).expect_err(text);
            assert!(
                reason.starts_with("expected a duration"),
                "{text}: {reason}"
            );
            assert!(reason.contains("seconds"), "{text}: {reason}");
        }
        let reason = parse("x", BareUnit::Millis).expect_err("x");
        assert!(reason.contains("milliseconds"), "{reason}");
    }

    #[test]
    fn limits_are_i64_milliseconds() {
        assert_eq!(
            parse_duration("9223372036854775"),
            Ok(Duration::from_secs(9_223_372_036_854_775))
        );
        for text in ["9223372036854776", "99999999999999999999999", "300000000y"] {
            let reason = parse_duration(text).expect_err(text);
            assert!(
                reason.contains("at most 9223372036854775807ms"),
                "{text}: {reason}"
            );
        }
        assert_eq!(
            parse("9223372036854775807", BareUnit::Millis),
            Ok(MAX_DURATION)
        );
        assert!(parse("9223372036854775808", BareUnit::Millis).is_err());
    }

    #[test]
    fn format_reads_back() {
        for ms in [1, 999, 1_000, 90_000, 5_400_000, 86_400_000, 90_061_001] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{ms}");
        }
        assert_eq!(format_duration(Duration::from_millis(90_000)), "1m30s");
        assert_eq!(format_duration(Duration::ZERO), "0ms");
    }
}
