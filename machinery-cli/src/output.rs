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
        serde_json::to_writer_pretty(&mut self.w, value).map_err(io_error)?;
        writeln!(self.w)
    }

    /// One JSON value on one line (JSON Lines).
    pub fn json_line<T: Serialize + ?Sized>(&mut self, value: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.w, value).map_err(io_error)?;
        writeln!(self.w)
    }

    /// A line of text, made safe for a terminal ([`terminal_safe`]).
    pub fn line(&mut self, text: impl std::fmt::Display) -> io::Result<()> {
        writeln!(self.w, "{}", terminal_safe(&text.to_string()))
    }

    /// A table, made safe for a terminal ([`terminal_safe`]).
    pub fn table(&mut self, table: &Table) -> io::Result<()> {
        writeln!(self.w, "{}", terminal_safe(&table.to_string()))
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// A JSON writing error as the I/O error it was, so a closed pipe stays a closed pipe.
fn io_error(e: serde_json::Error) -> io::Error {
    match e.io_error_kind() {
        Some(kind) => io::Error::from(kind),
        None => io::Error::other(e),
    }
}

/// `text` with every character that could drive a terminal or reorder what it shows
/// written as an escape instead: control characters other than the line feed (ESC,
/// BEL, CR, DEL, C1) and the Unicode bidirectional controls (U+061C, U+200E, U+200F,
/// U+202A–U+202E, U+2066–U+2069) become `\u{…}`. Task arguments, results and errors
/// are untrusted input; JSON output escapes them by itself.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    }
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:04x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Most characters a table cell shows of one value; `--json` shows everything.
pub const CELL_CHARS: usize = 2_000;

/// `text` cut to [`CELL_CHARS`] characters, saying how much was left out.
pub fn clip(text: String) -> String {
    match text.char_indices().nth(CELL_CHARS) {
        None => text,
        Some((end, _)) => {
            let rest = text[end..].chars().count();
            format!(
                "{}… ({rest} more characters: --json shows all)",
                &text[..end]
            )
        }
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
    fn terminal_controls_are_escaped() {
        let text = "<b>\u{1b}[31mred\u{7} \u{202e}gnp.exe\r\nnext \u{9b}";
        let safe = terminal_safe(text);
        assert_eq!(
            safe,
            "<b>\\u{001b}[31mred\\u{0007} \\u{202e}gnp.exe\\u{000d}\nnext \\u{009b}"
        );
        assert!(matches!(
            terminal_safe("plain ünïcode\n"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn long_values_are_clipped() {
        assert_eq!(clip("short".to_owned()), "short");
        let long = "é".repeat(CELL_CHARS + 5);
        let clipped = clip(long);
        assert!(clipped.starts_with(&"é".repeat(CELL_CHARS)));
        assert!(
            clipped.ends_with("… (5 more characters: --json shows all)"),
            "{clipped}"
        );
    }

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
