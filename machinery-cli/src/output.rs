//! Where results go: tables for people, JSON for scripts, and how times read.

use std::io::{self, BufWriter, StdoutLock, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};
use serde::Serialize;

/// Standard output, buffered, in the chosen format.
pub struct Out {
    /// `--json`.
    pub json: bool,
    w: BufWriter<StdoutLock<'static>>,
}

impl Out {
    pub fn new(json: bool) -> Self {
        Out {
            json,
            w: BufWriter::new(io::stdout().lock()),
        }
    }

    /// One JSON document, indented.
    pub fn json<T: Serialize + ?Sized>(&mut self, value: &T) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut self.w, value).map_err(io::Error::other)?;
        writeln!(self.w)
    }

    /// One JSON value on one line (JSON Lines).
    pub fn json_line<T: Serialize + ?Sized>(&mut self, value: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.w, value).map_err(io::Error::other)?;
        writeln!(self.w)
    }

    /// A line of text.
    pub fn line(&mut self, text: impl std::fmt::Display) -> io::Result<()> {
        writeln!(self.w, "{text}")
    }

    /// A table.
    pub fn table(&mut self, table: &Table) -> io::Result<()> {
        writeln!(self.w, "{table}")
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// A table with `header`, numeric columns (by index) aligned right.
pub fn table(header: &[&str], numeric: &[usize]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    for &i in numeric {
        if let Some(column) = t.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A duration in milliseconds as `250ms`, `4s`, `1m30s`, `2d3h`: the two largest
/// units, enough to read at a glance.
pub fn duration_ms(ms: u64) -> String {
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let mut parts = Vec::new();
    let mut rest = ms / 1_000;
    for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if rest >= len {
            parts.push(format!("{}{unit}", rest / len));
            rest %= len;
        }
    }
    if ms < 10_000 && !ms.is_multiple_of(1_000) {
        return format!("{:.1}s", ms as f64 / 1_000.0);
    }
    parts.truncate(2);
    parts.concat()
}

/// A duration in (fractional) milliseconds, for percentiles: `0.5ms`, `42ms`, `1.3s`.
pub fn millis_f(ms: Option<f64>) -> String {
    match ms {
        None => "-".to_owned(),
        Some(ms) if ms < 10.0 => format!("{ms:.1}ms"),
        Some(ms) if ms < 1_000.0 => format!("{ms:.0}ms"),
        Some(ms) => duration_ms(ms.round() as u64),
    }
}

/// An instant (ms since the Unix epoch) relative to `now`: `5s ago`, `in 2m`, `now`.
pub fn relative(at_ms: u64, now: u64) -> String {
    if at_ms.abs_diff(now) < 1_000 {
        "now".to_owned()
    } else if at_ms < now {
        format!("{} ago", duration_ms(now - at_ms))
    } else {
        format!("in {}", duration_ms(at_ms - now))
    }
}

/// An instant (ms since the Unix epoch) as UTC RFC 3339 to the second.
pub fn timestamp(at_ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(at_ms);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// An instant as `2026-11-28T10:00:00Z (5s ago)`; `-` when absent.
pub fn when(at_ms: Option<u64>, now: u64) -> String {
    match at_ms {
        None => "-".to_owned(),
        Some(at) => format!("{} ({})", timestamp(at), relative(at, now)),
    }
}

/// An optional value, `-` when absent.
pub fn or_dash<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration_ms(0), "0ms");
        assert_eq!(duration_ms(250), "250ms");
        assert_eq!(duration_ms(1_250), "1.2s");
        assert_eq!(duration_ms(4_000), "4s");
        assert_eq!(duration_ms(90_000), "1m30s");
        assert_eq!(duration_ms(90_500), "1m30s");
        assert_eq!(duration_ms(2 * 86_400_000 + 3 * 3_600_000 + 5_000), "2d3h");
        assert_eq!(millis_f(Some(0.5)), "0.5ms");
        assert_eq!(millis_f(Some(42.4)), "42ms");
        assert_eq!(millis_f(Some(1_300.0)), "1.3s");
        assert_eq!(millis_f(None), "-");
    }

    #[test]
    fn instants_are_utc_and_relative() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(relative(10_000, 15_000), "5s ago");
        assert_eq!(relative(75_000, 15_000), "in 1m");
        assert_eq!(relative(15_400, 15_000), "now");
        assert_eq!(when(None, 0), "-");
        assert_eq!(when(Some(1_000), 6_000), "1970-01-01T00:00:01Z (5s ago)");
    }
}
