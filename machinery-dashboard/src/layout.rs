//! The page shell and the small pieces every page uses: links under the mount path,
//! action forms with the CSRF token, times, states and JSON.

use std::time::Duration;

use axum::extract::{FromRequestParts, NestedPath};
use axum::http::request::Parts;
use machinery_core::State;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;

use crate::Shared;

/// What every page handler gets: where the dashboard is mounted, the CSRF token for its
/// forms and the message an action left (`?flash=`).
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    /// The mount path without a trailing `/` (`""` at the root, `/admin/tasks` when an
    /// app nests the router there).
    pub(crate) base: String,
    pub(crate) csrf: String,
    pub(crate) refresh: Duration,
    /// What the last action said, shown once at the top of the page.
    pub(crate) flash: Option<String>,
    pub(crate) engine: &'static str,
}

#[derive(Deserialize)]
struct FlashQuery {
    flash: Option<String>,
}

impl FromRequestParts<Shared> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Shared,
    ) -> Result<Self, Self::Rejection> {
        let base = parts
            .extensions
            .get::<NestedPath>()
            .map(|n| n.as_str().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let flash = parts
            .uri
            .query()
            .and_then(serde_urlencoded_flash)
            .filter(|f| !f.is_empty());
        Ok(Ctx {
            base,
            csrf: shared.csrf.to_string(),
            refresh: shared.config.refresh,
            flash,
            engine: shared.inspector.server().broker().engine(),
        })
    }
}

fn serde_urlencoded_flash(query: &str) -> Option<String> {
    axum::extract::Query::<FlashQuery>::try_from_uri(&format!("/?{query}").parse().ok()?)
        .ok()
        .and_then(|q| q.0.flash)
}

impl Ctx {
    /// `path` (starting with `/`) under the mount path; `/` is the mount path itself
    /// (axum matches a nested router's root without the trailing slash).
    pub(crate) fn href(&self, path: &str) -> String {
        if path == "/" && !self.base.is_empty() {
            return self.base.clone();
        }
        if let Some(query) = path.strip_prefix("/?")
            && !self.base.is_empty()
        {
            return format!("{}?{query}", self.base);
        }
        format!("{}{}", self.base, path)
    }

    /// `path` under the mount path with `pairs` as its query string, each encoded:
    /// `ctx.link("/tasks", &[("queue", q), ("list", "dead")])`. Use it for every link
    /// that carries a value from the broker (queue names, task names, cursors).
    pub(crate) fn link(&self, path: &str, pairs: &[(&str, &str)]) -> String {
        let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
        if query.is_empty() {
            self.href(path)
        } else {
            format!("{}?{query}", self.href(path))
        }
    }

    /// A one-button `POST` form to `path` with the CSRF token and `fields` as hidden
    /// inputs. With `confirm`, the browser asks first (progressive: without scripts the
    /// action runs at once, so destructive bulk actions confirm on the server too).
    pub(crate) fn action(
        &self,
        path: &str,
        label: &str,
        fields: &[(&str, &str)],
        class: &str,
        confirm: Option<&str>,
    ) -> Markup {
        html! {
            form.action method="post" action=(self.href(path)) data-confirm=[confirm] {
                input type="hidden" name="csrf" value=(self.csrf);
                @for (name, value) in fields {
                    input type="hidden" name=(name) value=(value);
                }
                button type="submit" class=(class) { (label) }
            }
        }
    }
}

/// Characters left as they are in a path segment (RFC 3986 `unreserved`); everything
/// else, `/`, `?`, `#` and `%` included, is percent-encoded.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `name` as one path segment: `/queues/{segment(q)}/pause` routes to queue `q` whatever
/// it contains (axum decodes the segment back).
pub(crate) fn segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, SEGMENT).to_string()
}

/// The pages of the navigation bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Nav {
    Overview,
    Queues,
    Tasks,
    Workers,
    Workflows,
    Registered,
    Periodic,
}

const NAV: [(Nav, &str, &str); 6] = [
    (Nav::Overview, "/", "Overview"),
    (Nav::Queues, "/queues", "Queues"),
    (Nav::Tasks, "/tasks", "Tasks"),
    (Nav::Workers, "/workers", "Workers"),
    (Nav::Registered, "/registered", "Registered"),
    (Nav::Periodic, "/periodic", "Periodic"),
];

/// The whole HTML page around `body`.
pub(crate) fn page(ctx: &Ctx, nav: Nav, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // For scripts that post with the `X-CSRF-Token` header.
                meta name="csrf-token" content=(ctx.csrf);
                @if !ctx.refresh.is_zero() {
                    meta name="machinery-refresh" content=(ctx.refresh.as_millis());
                }
                title { (title) " · Machinery" }
                link rel="stylesheet" href=(ctx.href(&format!("/assets/style.css?v={:016x}", crate::assets::VERSION)));
                script src=(ctx.href(&format!("/assets/app.js?v={:016x}", crate::assets::VERSION))) defer {}
            }
            body {
                header.top {
                    a.brand href=(ctx.href("/")) { "Machinery" }
                    nav {
                        @for (item, path, label) in NAV {
                            a href=(ctx.href(path)) class=[(item == nav).then_some("active")] { (label) }
                        }
                    }
                    span.engine { (ctx.engine) }
                }
                main {
                    @if let Some(flash) = &ctx.flash {
                        p.flash role="status" { (flash) }
                    }
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A state as a coloured badge.
pub(crate) fn state_badge(state: Option<State>) -> Markup {
    let (text, class) = match state {
        Some(s) => (s.as_str(), s.as_str().to_ascii_lowercase()),
        None => ("—", "unknown".to_owned()),
    };
    html! { span class={ "state " (class) } { (text) } }
}

/// Milliseconds since the Unix epoch as UTC `YYYY-MM-DD HH:MM:SS`.
pub(crate) fn time(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    let text = humantime::format_rfc3339_seconds(t).to_string();
    text.trim_end_matches('Z').replacen('T', " ", 1)
}

/// `Some(ms)` as [`time`], `None` as a dash.
pub(crate) fn time_opt(ms: Option<u64>) -> String {
    ms.filter(|&m| m != 0).map_or_else(|| "—".to_owned(), time)
}

/// A duration in milliseconds, short: `850ms`, `12.3s`, `4m 5s`, `2h 1m`, `3d 4h`.
pub(crate) fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1_000.0),
        60_000..3_600_000 => format!("{}m {}s", ms / 60_000, ms % 60_000 / 1_000),
        3_600_000..86_400_000 => format!("{}h {}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
        _ => format!("{}d {}h", ms / 86_400_000, ms % 86_400_000 / 3_600_000),
    }
}

/// How long ago `ms` was, from `now` (both ms since the epoch): `12.3s ago`.
pub(crate) fn ago(ms: u64, now: u64) -> String {
    if ms == 0 {
        return "—".to_owned();
    }
    format!("{} ago", duration(now.saturating_sub(ms)))
}

/// Most bytes of one JSON value shown on a page: a megabyte argument belongs to the
/// JSON route, not to a page that reloads itself.
const JSON_SHOWN: usize = 64 * 1024;

/// At most `limit` bytes of `text` (cut on a character boundary, with `…`): task data
/// shown whole belongs to the JSON routes, not to a page that reloads itself.
pub(crate) fn cut(text: &str, limit: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= limit {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut at = limit;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… ({} bytes in all)", &text[..at], text.len()))
}

/// Most bytes of an error text or header shown on a task's page.
pub(crate) const TEXT_SHOWN: usize = 16 * 1024;

/// Most bytes of an error or reason shown in a listing's row.
pub(crate) const ROW_SHOWN: usize = 300;

/// A JSON value, pretty-printed in a `<pre>` (escaped like all text); cut after 64 KiB,
/// saying so.
pub(crate) fn json_block(value: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("<{e}>"));
    if text.len() <= JSON_SHOWN {
        return html! { pre.json { (text) } };
    }
    let mut cut = JSON_SHOWN;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    html! {
        pre.json { (&text[..cut]) "…" }
        p.muted {
            "Cut at 64 KiB of " (count(text.len() as u64)) " bytes: the JSON route (/api/…) has all of it."
        }
    }
}

/// A number with thin separators: `1 000 000`.
pub(crate) fn count(n: u64) -> Markup {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() * 2);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    PreEscaped(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_url_syntax_stay_one_segment_or_one_value() {
        assert_eq!(segment("a/b?c#d%e f"), "a%2Fb%3Fc%23d%25e%20f");
        assert_eq!(segment("emails.high-1_~"), "emails.high-1_~");
        assert_eq!(segment("<script>"), "%3Cscript%3E");
        assert_eq!(segment("é"), "%C3%A9");
        let ctx = Ctx {
            base: "/admin".into(),
            csrf: String::new(),
            refresh: Duration::ZERO,
            flash: None,
            engine: "memory",
        };
        assert_eq!(
            ctx.link("/tasks", &[("queue", "a&list=dead"), ("list", "pending")]),
            "/admin/tasks?queue=a%26list%3Ddead&list=pending"
        );
        assert_eq!(ctx.link("/", &[]), "/admin");
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary_and_says_its_size() {
        assert_eq!(cut("short", 10), "short");
        let long = "é".repeat(10);
        let shown = cut(&long, 5);
        assert_eq!(shown, "éé… (20 bytes in all)");
        let page = html! { pre { (cut(&"<b>".repeat(10_000), TEXT_SHOWN)) } }.0;
        assert!(page.len() < 5 * TEXT_SHOWN && page.contains("&lt;b&gt;"));
    }

    #[test]
    fn big_json_is_cut_on_a_char_boundary() {
        let value = serde_json::Value::String("é".repeat(100_000));
        let html = json_block(&value).0;
        assert!(html.len() < JSON_SHOWN + 1_000, "{}", html.len());
        assert!(html.contains("Cut at 64 KiB of"));
        let small = json_block(&serde_json::json!({"a": "<b>"})).0;
        assert!(small.contains("&lt;b&gt;") && !small.contains("Cut at"));
    }

    #[test]
    fn counts_and_durations_read_well() {
        assert_eq!(count(1_000_000).0, "1\u{202f}000\u{202f}000");
        assert_eq!(count(999).0, "999");
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(12_300), "12.3s");
        assert_eq!(duration(245_000), "4m 5s");
        assert_eq!(time(0), "1970-01-01 00:00:00");
    }
}
