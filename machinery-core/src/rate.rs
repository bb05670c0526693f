//! Rate limits: at most `count` task starts per period, across every worker.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// At most [`count`](RateLimit::count) starts per [`period`](RateLimit::period), written
/// `<count>/<period>`: `100/s`, `10/m`, `1000/h`, `5/10s`. `#[task(rate_limit = "100/s")]`
/// limits one task; the `rate_limits` configuration key limits a queue.
///
/// The limit is global: every worker of the same broker counts against it (on Redis, a
/// GCRA in one script with the server's clock; in memory, within the process). Starts
/// are spaced evenly, `period / count` apart, without bursts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    count: u32,
    period_ms: u64,
}

impl RateLimit {
    /// `count` starts per `period_ms` milliseconds. Both are at least 1 (0 counts as 1).
    pub const fn new(count: u32, period_ms: u64) -> Self {
        RateLimit {
            count: if count == 0 { 1 } else { count },
            period_ms: if period_ms == 0 { 1 } else { period_ms },
        }
    }

    /// How many starts per period.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The period.
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms)
    }

    /// The time between two starts, `period / count`, in microseconds (at least 1).
    pub fn interval_us(&self) -> u64 {
        (self.period_ms.saturating_mul(1000) / u64::from(self.count)).max(1)
    }

    /// Parses `<count>/<period>`: the count a whole number from 1; the period a unit
    /// (`s`, `m`, `h`, `d`) or a duration (`10s`, `500ms`, `1h30m`).
    ///
    /// # Errors
    /// A text saying what is accepted.
    pub fn parse(text: &str) -> Result<Self, String> {
        let hint =
            "expected `<count>/<period>` such as \"100/s\", \"10/m\", \"1000/h\" or \"5/10s\"";
        let (count, period) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a rate: {hint}"))?;
        let count: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`{text}`: the count must be a whole number from 1: {hint}"))?;
        let period = period.trim();
        let period_ms = match period {
            "s" | "sec" | "second" => 1_000,
            "m" | "min" | "minute" => 60_000,
            "h" | "hour" => 3_600_000,
            "d" | "day" => 86_400_000,
            _ if period.bytes().next().is_some_and(|b| b.is_ascii_digit()) => {
                let d =
                    crate::config::parse_duration(period).map_err(|e| format!("`{text}`: {e}"))?;
                u64::try_from(d.as_millis())
                    .ok()
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| format!("`{text}`: the period must be from 1ms: {hint}"))?
            }
            _ => return Err(format!("`{text}`: unknown period `{period}`: {hint}")),
        };
        Ok(RateLimit::new(count, period_ms))
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.period_ms {
            1_000 => write!(f, "{}/s", self.count),
            60_000 => write!(f, "{}/m", self.count),
            3_600_000 => write!(f, "{}/h", self.count),
            86_400_000 => write!(f, "{}/d", self.count),
            ms => write!(
                f,
                "{}/{}",
                self.count,
                humantime::format_duration(Duration::from_millis(ms))
            ),
        }
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        RateLimit::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_durations() {
        assert_eq!(RateLimit::parse("100/s"), Ok(RateLimit::new(100, 1000)));
        assert_eq!(RateLimit::parse("10/m"), Ok(RateLimit::new(10, 60_000)));
        assert_eq!(
            RateLimit::parse(" 1000 / h "),
            Ok(RateLimit::new(1000, 3_600_000))
        );
        assert_eq!(RateLimit::parse("5/10s"), Ok(RateLimit::new(5, 10_000)));
        assert_eq!(RateLimit::parse("1/500ms"), Ok(RateLimit::new(1, 500)));
        assert_eq!(RateLimit::new(100, 1000).interval_us(), 10_000);
        assert_eq!(RateLimit::parse("5/10s").unwrap().to_string(), "5/10s");
        assert_eq!(RateLimit::parse("100/s").unwrap().to_string(), "100/s");
        for bad in [
            "",
            "100",
            "0/s",
            "-1/s",
            "x/s",
            "10/fortnight",
            "10/0s",
            "10/",
        ] {
            assert!(RateLimit::parse(bad).is_err(), "{bad}");
        }
    }
}
