//! When a periodic entry fires: a cron spec or a fixed period, in a time zone.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::error::{Error, Result};
use crate::signature::to_ms;

/// What a scheduler does with ticks that passed while no scheduler fired them (every
/// scheduler was down, or this one was stalled past
/// [`Scheduler::missed_after`](crate::periodic::Scheduler::missed_after)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MissedTicks {
    /// Skip them: the entry next fires at its next tick (the default). Never bursts.
    #[default]
    Skip,
    /// Publish the most recent missed tick once, at once, then go on with the next
    /// ticks. Ticks older than the entry's last run, or than its creation or last
    /// resume, are never caught up.
    CatchUpLast,
}

#[derive(Clone)]
enum Kind {
    Cron(Box<Cron>),
    /// A fixed period in milliseconds, aligned to the Unix epoch.
    Every(u64),
}

/// When a periodic entry fires.
///
/// - [`Schedule::cron`]: a cron spec with 5 fields (`min hour day month weekday`) or 6
///   (seconds first), or `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`,
///   `@midnight`, `@hourly`. Evaluated in UTC unless [`timezone`](Schedule::timezone)
///   says otherwise.
/// - [`Schedule::every`] or `@every 10s`: a fixed period. Its ticks are the multiples
///   of the period since the Unix epoch (`@every 1h` fires on the hour, UTC), so every
///   scheduler on every machine computes the same instants; the time zone does not
///   apply.
/// - [`Schedule::parse`] takes any of these forms.
///
/// ```
/// use machinery_core::periodic::{MissedTicks, Schedule};
/// use std::time::Duration;
///
/// # fn main() -> Result<(), machinery_core::Error> {
/// let every_five_seconds = Schedule::cron("*/5 * * * * *")?;
/// let weekdays_at_nine = Schedule::cron("0 9 * * MON-FRI")?.timezone("Europe/Paris")?;
/// let hourly = Schedule::parse("@hourly")?.missed_ticks(MissedTicks::CatchUpLast);
/// let every_ten_seconds = Schedule::parse("@every 10s")?;
/// assert_eq!(every_ten_seconds, Schedule::every(Duration::from_secs(10)));
/// assert!(Schedule::cron("61 * * * *").is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Schedule {
    spec: String,
    kind: Kind,
    tz: TimeZone,
    tz_name: String,
    missed: MissedTicks,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec && self.tz_name == other.tz_name && self.missed == other.missed
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("spec", &self.spec)
            .field("timezone", &self.tz_name)
            .field("missed_ticks", &self.missed)
            .finish()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)?;
        if matches!(self.kind, Kind::Cron(_)) && self.tz_name != "UTC" {
            write!(f, " ({})", self.tz_name)?;
        }
        Ok(())
    }
}

impl FromStr for Schedule {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Schedule::parse(s)
    }
}

fn invalid(spec: &str, reason: impl Into<String>) -> Error {
    Error::Periodic {
        what: format!("schedule `{spec}`"),
        reason: reason.into(),
    }
}

const CRON_HELP: &str = "expected 5 fields (minute hour day-of-month month day-of-week), \
     6 fields (seconds first), `@every <duration>`, `@yearly`, `@annually`, `@monthly`, \
     `@weekly`, `@daily`, `@midnight` or `@hourly`";

impl Schedule {
    /// A cron spec: 5 fields, 6 fields with seconds first, or a nickname (`@hourly`,
    /// `@daily`/`@midnight`, `@weekly`, `@monthly`, `@yearly`/`@annually`). Fields take
    /// `*`, lists `1,2`, ranges `1-5`, steps `*/5`, month and weekday names, and
    /// croner's `L`, `W` and `#` extensions.
    ///
    /// # Errors
    /// [`Error::Periodic`] naming the spec: a bad field, a wrong number of fields, or a
    /// spec that never matches (`0 0 30 2 *`).
    pub fn cron(spec: &str) -> Result<Self> {
        let trimmed = spec.trim();
        let pattern = match trimmed.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => {
                return Err(invalid(spec, format!("unknown nickname; {CRON_HELP}")));
            }
            _ => trimmed,
        };
        let fields = pattern.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(invalid(
                spec,
                format!("it has {fields} fields; {CRON_HELP}"),
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(pattern)
            .map_err(|e| invalid(spec, format!("{e}; {CRON_HELP}")))?;
        let schedule = Schedule {
            spec: trimmed.to_owned(),
            kind: Kind::Cron(Box::new(cron)),
            tz: TimeZone::UTC,
            tz_name: "UTC".to_owned(),
            missed: MissedTicks::Skip,
        };
        schedule.check_matches()?;
        Ok(schedule)
    }

    /// Every `period`, on the multiples of `period` since the Unix epoch. A period is
    /// counted in whole milliseconds, at least one.
    pub fn every(period: Duration) -> Self {
        let ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1);
        Schedule {
            spec: format!("@every {}", format_duration(ms)),
            kind: Kind::Every(ms),
            tz: TimeZone::UTC,
            tz_name: "UTC".to_owned(),
            missed: MissedTicks::Skip,
        }
    }

    /// Any form: `@every <duration>` (the project's one duration syntax: `500ms`, `10s`,
    /// `5m`, `1h30m`, `1d`, or a bare number of seconds; see
    /// [`parse_duration`](crate::config::parse_duration)), a nickname, or a 5- or
    /// 6-field cron spec.
    ///
    /// # Errors
    /// [`Error::Periodic`] naming the spec.
    pub fn parse(spec: &str) -> Result<Self> {
        let trimmed = spec.trim();
        match trimmed.get(..6) {
            Some(head) if head.eq_ignore_ascii_case("@every") => {
                let rest = trimmed[6..].trim();
                let ms = parse_duration(rest).map_err(|reason| invalid(spec, reason))?;
                Ok(Schedule::every(Duration::from_millis(ms)))
            }
            _ => Schedule::cron(spec),
        }
    }

    /// Evaluates a cron spec in the IANA time zone `name` (`Europe/Paris`) instead of
    /// UTC; daylight-saving gaps and repeats are resolved by croner: a time that falls
    /// in a gap (skipped when clocks go forward) fires once at the end of the gap, a
    /// repeated one fires once. Has no effect on `@every`.
    ///
    /// # Errors
    /// [`Error::Periodic`] when the time zone database has no such zone.
    pub fn timezone(mut self, name: &str) -> Result<Self> {
        self.tz = TimeZone::get(name).map_err(|e| Error::Periodic {
            what: format!("time zone `{name}`"),
            reason: format!("{e}; expected an IANA name such as `Europe/Paris` or `UTC`"),
        })?;
        self.tz_name = name.to_owned();
        Ok(self)
    }

    /// What to do with missed ticks (default [`MissedTicks::Skip`]).
    pub fn missed_ticks(mut self, policy: MissedTicks) -> Self {
        self.missed = policy;
        self
    }

    /// The spec as given (trimmed), or `@every <period>`.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// The time zone's name (`UTC` by default).
    pub fn timezone_name(&self) -> &str {
        &self.tz_name
    }

    /// The missed-ticks policy.
    pub fn missed_ticks_policy(&self) -> MissedTicks {
        self.missed
    }

    /// The period of an `@every` schedule; `None` for a cron spec.
    pub fn period(&self) -> Option<Duration> {
        match self.kind {
            Kind::Every(ms) => Some(Duration::from_millis(ms)),
            Kind::Cron(_) => None,
        }
    }

    /// The first tick strictly after `t`; `None` when there is none (the search gives
    /// up a few years ahead).
    pub fn next_after(&self, t: SystemTime) -> Option<SystemTime> {
        self.next_after_ms(to_ms(t)).map(from_ms)
    }

    /// The last tick at or before `t`; `None` when there is none.
    pub fn last_at_or_before(&self, t: SystemTime) -> Option<SystemTime> {
        self.last_at_or_before_ms(to_ms(t)).map(from_ms)
    }

    /// The next `n` ticks strictly after `t`.
    pub fn upcoming(&self, t: SystemTime, n: usize) -> Vec<SystemTime> {
        let mut out = Vec::with_capacity(n);
        let mut at = to_ms(t);
        while out.len() < n {
            let Some(next) = self.next_after_ms(at) else {
                break;
            };
            out.push(from_ms(next));
            at = next;
        }
        out
    }

    pub(crate) fn next_after_ms(&self, ms: u64) -> Option<u64> {
        match &self.kind {
            Kind::Every(p) => (ms / p).checked_add(1)?.checked_mul(*p),
            Kind::Cron(cron) => {
                // Ticks are whole seconds: the first one after `ms` is the first one
                // after the second `ms` falls in.
                let zoned = self.zoned(ms - ms % 1000)?;
                let next = cron.find_next_occurrence(&zoned, false).ok()?;
                u64::try_from(next.timestamp().as_millisecond()).ok()
            }
        }
    }

    pub(crate) fn last_at_or_before_ms(&self, ms: u64) -> Option<u64> {
        match &self.kind {
            Kind::Every(p) => Some(ms / p * p),
            Kind::Cron(cron) => {
                let zoned = self.zoned(ms - ms % 1000)?;
                let last = cron.find_previous_occurrence(&zoned, true).ok()?;
                u64::try_from(last.timestamp().as_millisecond()).ok()
            }
        }
    }

    fn zoned(&self, ms: u64) -> Option<jiff::Zoned> {
        let ms = i64::try_from(ms).ok()?;
        Some(
            Timestamp::from_millisecond(ms)
                .ok()?
                .to_zoned(self.tz.clone()),
        )
    }

    fn check_matches(&self) -> Result<()> {
        if let Kind::Cron(cron) = &self.kind {
            let now = self
                .zoned(to_ms(SystemTime::now()))
                .ok_or_else(|| invalid(&self.spec, "the current time is out of range"))?;
            cron.find_next_occurrence(&now, false).map_err(|e| {
                invalid(
                    &self.spec,
                    format!("it never matches a date ({e}); check the day and month fields"),
                )
            })?;
        }
        Ok(())
    }
}

pub(crate) fn from_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// Parses the period of `@every`, in the project's one duration syntax
/// ([`crate::config::parse_duration`]), into milliseconds; zero is refused.
fn parse_duration(text: &str) -> std::result::Result<u64, String> {
    if text.is_empty() {
        return Err(
            "`@every` needs a duration such as `500ms`, `10s`, `5m`, `1h30m` or `1d`".to_owned(),
        );
    }
    let period = crate::config::parse_duration(text)?;
    if period.is_zero() {
        return Err(format!(
            "`@every {text}` is zero; expected a positive duration"
        ));
    }
    u64::try_from(period.as_millis()).map_err(|_| format!("`{text}` is too large"))
}

/// `90000` → `1m30s`: the shortest form [`parse_duration`] reads back.
fn format_duration(ms: u64) -> String {
    crate::config::format_duration(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, a Thursday

    fn at(s: &str) -> u64 {
        let ts: Timestamp = s.parse().expect("timestamp");
        u64::try_from(ts.as_millisecond()).expect("after 1970")
    }

    fn reason(e: Error) -> (String, String) {
        match e {
            Error::Periodic { what, reason } => (what, reason),
            other => panic!("expected Error::Periodic, got {other:?}"),
        }
    }

    #[test]
    fn five_fields_fire_on_the_minute() {
        let s = Schedule::cron("*/15 * * * *").expect("valid");
        assert_eq!(s.next_after_ms(T0), Some(T0 + 15 * 60_000));
        assert_eq!(s.next_after_ms(T0 - 1), Some(T0));
        assert_eq!(s.last_at_or_before_ms(T0 + 1), Some(T0));
        assert_eq!(s.last_at_or_before_ms(T0), Some(T0));
    }

    #[test]
    fn six_fields_have_seconds_first() {
        let s = Schedule::cron("*/5 * * * * *").expect("valid");
        assert_eq!(s.next_after_ms(T0), Some(T0 + 5_000));
        assert_eq!(s.next_after_ms(T0 + 4_999), Some(T0 + 5_000));
        assert_eq!(s.next_after_ms(T0 + 5_000), Some(T0 + 10_000));
        assert_eq!(s.last_at_or_before_ms(T0 + 9_999), Some(T0 + 5_000));
        let s = Schedule::cron(" 30 0 12 * * MON-FRI ").expect("valid");
        assert_eq!(s.spec(), "30 0 12 * * MON-FRI");
        assert_eq!(s.next_after_ms(T0), Some(at("2026-01-01T12:00:30Z")));
        // Friday, then Monday.
        assert_eq!(
            s.next_after_ms(at("2026-01-02T12:00:30Z")),
            Some(at("2026-01-05T12:00:30Z"))
        );
    }

    #[test]
    fn nicknames() {
        let cases = [
            ("@hourly", "2026-01-01T01:00:00Z"),
            ("@daily", "2026-01-02T00:00:00Z"),
            ("@midnight", "2026-01-02T00:00:00Z"),
            ("@weekly", "2026-01-04T00:00:00Z"),
            ("@monthly", "2026-02-01T00:00:00Z"),
            ("@yearly", "2027-01-01T00:00:00Z"),
            ("@annually", "2027-01-01T00:00:00Z"),
            ("@HOURLY", "2026-01-01T01:00:00Z"),
        ];
        for (spec, want) in cases {
            let s = Schedule::parse(spec).expect(spec);
            assert_eq!(s.next_after_ms(T0), Some(at(want)), "{spec}");
            assert_eq!(s.spec(), spec);
        }
    }

    #[test]
    fn every_is_aligned_to_the_epoch() {
        let s = Schedule::parse("@every 10s").expect("valid");
        assert_eq!(s.period(), Some(Duration::from_secs(10)));
        assert_eq!(s, Schedule::every(Duration::from_secs(10)));
        assert_eq!(s.next_after_ms(T0 + 3), Some(T0 + 10_000));
        assert_eq!(s.next_after_ms(T0), Some(T0 + 10_000));
        assert_eq!(s.last_at_or_before_ms(T0 + 9_999), Some(T0));
        let s = Schedule::parse("@every 1h30m").expect("valid");
        assert_eq!(s.period(), Some(Duration::from_secs(5400)));
        assert_eq!(s.spec(), "@every 1h30m");
        let s = Schedule::parse("@every 1500ms").expect("valid");
        assert_eq!(s.spec(), "@every 1s500ms");
        assert_eq!(
            Schedule::parse(&s.to_string()).expect("round trip"),
            s,
            "the spec reads back"
        );
        assert_eq!(
            Schedule::every(Duration::ZERO).period(),
            Some(Duration::from_millis(1))
        );
        assert_eq!(
            Schedule::every(Duration::from_secs(86_400)).spec(),
            "@every 1d"
        );
    }

    #[test]
    fn upcoming_lists_ticks() {
        let s = Schedule::every(Duration::from_secs(1));
        let t = from_ms(T0 + 500);
        let next: Vec<u64> = s.upcoming(t, 3).into_iter().map(to_ms).collect();
        assert_eq!(next, [T0 + 1000, T0 + 2000, T0 + 3000]);
        assert_eq!(s.next_after(t), Some(from_ms(T0 + 1000)));
        assert_eq!(s.last_at_or_before(t), Some(from_ms(T0)));
    }

    #[test]
    fn bad_specs_are_named() {
        for spec in [
            "61 * * * *",
            "* * *",
            "* * * * * * *",
            "*/5 * * * * * 2030",
            "",
            "hello world",
            "@sometimes",
            "@every",
            "@every 0s",
            "@every 10x",
            "@every 1500us",
            "@every s",
            "@every 99999999999999999999s",
            "0 0 30 2 *",
        ] {
            let e = Schedule::parse(spec).expect_err(spec);
            let (what, reason) = reason(e);
            assert_eq!(what, format!("schedule `{spec}`"), "{spec}");
            assert!(!reason.is_empty());
        }
        let (_, r) = reason(Schedule::parse("* * *").expect_err("3 fields"));
        assert!(r.contains("3 fields"), "{r}");
        let (_, r) = reason(Schedule::parse("@every 10x").expect_err("unit"));
        assert!(r.contains("`10x`") && r.contains("`1h30m`"), "{r}");
        let (_, r) = reason(Schedule::parse("0 0 30 2 *").expect_err("never"));
        assert!(r.contains("never matches"), "{r}");
        let msg = Schedule::cron("61 * * * *").expect_err("bad").to_string();
        assert!(
            msg.starts_with("invalid periodic schedule `61 * * * *`"),
            "{msg}"
        );
    }

    #[test]
    fn every_takes_the_one_duration_syntax() {
        for (spec, ms) in [
            ("@every 500ms", 500),
            ("@every 2s", 2_000),
            ("@every 5m", 300_000),
            ("@every 1h30m", 5_400_000),
            ("@every 1d", 86_400_000),
            ("@every 90", 90_000),
        ] {
            let s = Schedule::parse(spec).expect(spec);
            assert_eq!(s.period(), Some(Duration::from_millis(ms)), "{spec}");
            // The spec it shows reads back to the same period.
            let again = Schedule::parse(s.spec()).expect("reads back");
            assert_eq!(again.period(), s.period(), "{spec}");
        }
    }

    #[test]
    fn time_zones() {
        let paris = Schedule::cron("0 9 * * *")
            .expect("valid")
            .timezone("Europe/Paris")
            .expect("known zone");
        assert_eq!(paris.timezone_name(), "Europe/Paris");
        assert_eq!(paris.to_string(), "0 9 * * * (Europe/Paris)");
        // 09:00 in Paris is 08:00 UTC in winter, 07:00 UTC in summer.
        assert_eq!(paris.next_after_ms(T0), Some(at("2026-01-01T08:00:00Z")));
        assert_eq!(
            paris.next_after_ms(at("2026-07-01T00:00:00Z")),
            Some(at("2026-07-01T07:00:00Z"))
        );
        let utc = Schedule::cron("0 9 * * *").expect("valid");
        assert_eq!(utc.timezone_name(), "UTC");
        assert_eq!(utc.next_after_ms(T0), Some(at("2026-01-01T09:00:00Z")));
        let (what, _) = reason(utc.timezone("Mars/Olympus_Mons").expect_err("unknown"));
        assert_eq!(what, "time zone `Mars/Olympus_Mons`");
    }

    #[test]
    fn policy_is_kept() {
        let s = Schedule::every(Duration::from_secs(1));
        assert_eq!(s.missed_ticks_policy(), MissedTicks::Skip);
        let s = s.missed_ticks(MissedTicks::CatchUpLast);
        assert_eq!(s.missed_ticks_policy(), MissedTicks::CatchUpLast);
    }
}
