//! Parsing of the attribute's options: `#[task(name = "...", queue = "...", ...)]`.

use proc_macro2::{TokenStream, TokenTree};
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::{Expr, Ident, Lit};

use crate::validate::Ctxt;

/// The options a `#[task(...)]` attribute accepts, in the order the docs list them.
const OPTIONS: &[&str] = &[
    "name",
    "queue",
    "retries",
    "retry_timeout",
    "timeout",
    "expires",
    "unique",
    "rate_limit",
];

/// The options given in `#[task(...)]`; `None` where the option was not given or its
/// value was refused, so that a wrong option falls back to its default. A repeated
/// option keeps its first value.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TaskArgs {
    /// `name = "..."`: the registered name.
    pub name: Option<String>,
    /// `queue = "..."`: the default queue.
    pub queue: Option<String>,
    /// `retries = N`: how many times a failed run is retried.
    pub retries: Option<u32>,
    /// `retry_timeout = ...`, in milliseconds: the first retry delay.
    pub retry_timeout_ms: Option<u64>,
    /// `timeout = ...`, in milliseconds: the time limit of one run.
    pub timeout_ms: Option<u64>,
    /// `expires = ...`, in milliseconds: a message not started this long after it was
    /// sent is revoked (reason `expired`) and never runs.
    pub expires_ms: Option<u64>,
    /// `unique = ...`, in milliseconds: the TTL of the unique lock that keeps a second
    /// send with the same task name and arguments from enqueueing.
    pub unique_ms: Option<u64>,
    /// `rate_limit = "100/s"`: at most `count` starts per `period_ms` milliseconds,
    /// across every worker.
    pub rate_limit: Option<(u32, u64)>,
}

/// Parses the attribute's tokens, recording every problem in `cx` and keeping what parsed.
pub(crate) fn parse(attr: TokenStream, cx: &mut Ctxt) -> TaskArgs {
    let mut args = TaskArgs::default();
    let parser = syn::meta::parser(|meta| args.parse_option(meta, cx));
    if let Err(err) = parser.parse2(attr) {
        cx.syn_error(err);
    }
    args
}

impl TaskArgs {
    /// One `key = value` pair. Problems with a value are recorded and the value skipped, so
    /// that one bad option does not hide the next; only malformed syntax stops the parse.
    fn parse_option(&mut self, meta: ParseNestedMeta, cx: &mut Ctxt) -> syn::Result<()> {
        let Some(key) = meta.path.get_ident().cloned() else {
            cx.error_spanned_by(&meta.path, unknown_option(&path_text(&meta.path)));
            return skip_value(&meta);
        };
        match key.to_string().as_str() {
            "name" => set(
                cx,
                &key,
                &mut self.name,
                parse_string(&meta, &key, "name = \"math.add\"")?,
            ),
            "queue" => set(
                cx,
                &key,
                &mut self.queue,
                parse_string(&meta, &key, "queue = \"math\"")?,
            ),
            "retries" => set(cx, &key, &mut self.retries, parse_retries(&meta, &key)?),
            "retry_timeout" => set(
                cx,
                &key,
                &mut self.retry_timeout_ms,
                parse_duration(&meta, &key)?,
            ),
            "timeout" => set(cx, &key, &mut self.timeout_ms, parse_duration(&meta, &key)?),
            "expires" => set(cx, &key, &mut self.expires_ms, parse_duration(&meta, &key)?),
            "unique" => set(cx, &key, &mut self.unique_ms, parse_duration(&meta, &key)?),
            "rate_limit" => set(cx, &key, &mut self.rate_limit, parse_rate(&meta, &key)?),
            other => {
                cx.error_spanned_by(&key, unknown_option(other));
                return skip_value(&meta);
            }
        }
        Ok(())
    }
}

/// Stores an option's value, refusing a second one.
fn set<T>(cx: &mut Ctxt, key: &Ident, slot: &mut Option<T>, value: syn::Result<T>) {
    match value {
        Ok(_) if slot.is_some() => cx.error_spanned_by(
            key,
            format!("duplicate `#[task]` option `{key}`: give it once"),
        ),
        Ok(value) => *slot = Some(value),
        Err(err) => cx.syn_error(err),
    }
}

fn unknown_option(key: &str) -> String {
    let expected: Vec<String> = OPTIONS.iter().map(|o| format!("`{o}`")).collect();
    format!(
        "unknown `#[task]` option `{key}`: expected one of {}",
        expected.join(", ")
    )
}

fn path_text(path: &syn::Path) -> String {
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    segments.join("::")
}

/// Consumes the rest of an option (up to the next top-level comma).
fn skip_value(meta: &ParseNestedMeta) -> syn::Result<()> {
    meta.input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((tt, next)) = rest.token_tree() {
            if matches!(&tt, TokenTree::Punct(p) if p.as_char() == ',') {
                break;
            }
            rest = next;
        }
        Ok(((), rest))
    })
}

/// Parses `= <expr>`; an error here is malformed syntax, which ends the parse.
fn parse_value(meta: &ParseNestedMeta, key: &Ident, example: &str) -> syn::Result<Expr> {
    if !meta.input.peek(syn::Token![=]) {
        return Err(syn::Error::new_spanned(
            key,
            format!("`#[task]` option `{key}` needs a value: `{example}`"),
        ));
    }
    meta.value()?.parse::<Expr>()
}

/// The outer error is malformed syntax (ends the parse); the inner one is a bad value
/// (recorded, and the parse goes on).
type Parsed<T> = syn::Result<syn::Result<T>>;

/// A task or queue name, refused by the rule the configuration applies to
/// `default_queue`: non-empty, without whitespace or control characters.
fn parse_string(meta: &ParseNestedMeta, key: &Ident, example: &str) -> Parsed<String> {
    let expr = parse_value(meta, key, example)?;
    Ok(match literal(&expr) {
        Some(Lit::Str(s)) if !is_name(&s.value()) => Err(syn::Error::new_spanned(
            s,
            format!(
                "`{key}` must be a non-empty name without whitespace or control characters: `{example}`"
            ),
        )),
        Some(Lit::Str(s)) => Ok(s.value()),
        _ => Err(syn::Error::new_spanned(
            &expr,
            format!("`{key}` expects a string literal: `{example}`"),
        )),
    })
}

/// Non-empty, without whitespace or control characters: the rule of
/// `machinery_core::Config`'s `default_queue`.
fn is_name(text: &str) -> bool {
    !text.is_empty() && !text.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn parse_retries(meta: &ParseNestedMeta, key: &Ident) -> Parsed<u32> {
    let expr = parse_value(meta, key, "retries = 3")?;
    Ok(match literal(&expr) {
        Some(Lit::Int(n)) => n.base10_parse::<u32>().map_err(|_| {
            syn::Error::new_spanned(n, "`retries` must be an integer from 0 to 4294967295")
        }),
        _ => Err(syn::Error::new_spanned(
            &expr,
            "`retries` expects a non-negative integer literal: `retries = 3`",
        )),
    })
}

fn parse_duration(meta: &ParseNestedMeta, key: &Ident) -> Parsed<u64> {
    let example = format!("{key} = \"30s\"");
    let expr = parse_value(meta, key, &example)?;
    Ok(match literal(&expr) {
        Some(Lit::Str(s)) => duration_ms(&s.value()).map_err(|m| error_for(s, key, &m)),
        // `30` means seconds; `500ms` lexes as an integer with the suffix `ms`.
        Some(Lit::Int(n)) => {
            let text = format!("{}{}", n.base10_digits(), n.suffix());
            let text = if n.suffix().is_empty() {
                format!("{text}s")
            } else {
                text
            };
            duration_ms(&text).map_err(|m| error_for(n, key, &m))
        }
        _ => Err(syn::Error::new_spanned(
            &expr,
            format!(
                "`{key}` expects a duration: an integer number of seconds or a string such as \"500ms\", \"2s\", \"5m\" or \"1h\""
            ),
        )),
    })
}

fn parse_rate(meta: &ParseNestedMeta, key: &Ident) -> Parsed<(u32, u64)> {
    let expr = parse_value(meta, key, "rate_limit = \"100/s\"")?;
    Ok(match literal(&expr) {
        Some(Lit::Str(s)) => rate_limit(&s.value()).map_err(|m| error_for(s, key, &m)),
        _ => Err(syn::Error::new_spanned(
            &expr,
            "`rate_limit` expects a string such as \"100/s\", \"10/m\", \"1000/h\" or \"5/10s\"",
        )),
    })
}

/// Parses a rate limit `<count>/<period>` into (count, period in milliseconds), by the
/// rules of `machinery_core::RateLimit::parse` (repeated here as [`duration_ms`] is):
/// the count a whole number from 1, the period a unit (`s`, `m`, `h`, `d`) or a
/// duration (`10s`, `500ms`).
pub(crate) fn rate_limit(text: &str) -> Result<(u32, u64), String> {
    let hint = "expected `<count>/<period>` such as \"100/s\", \"10/m\", \"1000/h\" or \"5/10s\"";
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
            duration_ms(period).map_err(|e| format!("`{text}`: {e}"))?
        }
        _ => return Err(format!("`{text}`: unknown period `{period}`: {hint}")),
    };
    Ok((count, period_ms))
}

fn error_for(tokens: impl quote::ToTokens, key: &Ident, message: &str) -> syn::Error {
    syn::Error::new_spanned(tokens, format!("invalid `{key}`: {message}"))
}

fn literal(expr: &Expr) -> Option<&Lit> {
    match expr {
        Expr::Lit(lit) => Some(&lit.lit),
        Expr::Group(group) => literal(&group.expr),
        _ => None,
    }
}

/// Parses a duration into milliseconds, by the rules of `machinery_core::config::parse_duration`
/// (this crate cannot depend on machinery-core, so the few lines are repeated; the unit
/// tests of both hold the same cases): a bare whole number of seconds, or number-unit
/// pairs as `humantime` reads them (`500ms`, `2s`, `5m`, `1h30m`, `1d`), in whole
/// milliseconds, at most `i64::MAX` milliseconds. Zero is refused: a zero timeout or
/// retry delay is always a mistake.
pub(crate) fn duration_ms(text: &str) -> Result<u64, String> {
    const MAX_MS: u64 = i64::MAX as u64;
    let hint = "expected a duration such as \"500ms\", \"2s\", \"5m\", \"1h30m\" or \"1d\", or a whole number of seconds";
    let trimmed = text.trim();
    let too_large = || format!("`{text}` is too large: at most {MAX_MS}ms");
    let ms = if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let seconds: u64 = trimmed.parse().map_err(|_| too_large())?;
        seconds.checked_mul(1000).ok_or_else(too_large)?
    } else {
        let duration = humantime::parse_duration(trimmed).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => too_large(),
            e => format!("`{text}` is not a duration ({e}): {hint}"),
        })?;
        if duration.subsec_nanos() % 1_000_000 != 0 {
            return Err(format!("`{text}` is not whole milliseconds: {hint}"));
        }
        u64::try_from(duration.as_millis()).map_err(|_| too_large())?
    };
    if ms > MAX_MS {
        return Err(too_large());
    }
    if ms == 0 {
        return Err("the duration must be greater than zero".to_owned());
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn parse_ok(attr: TokenStream) -> TaskArgs {
        let mut cx = Ctxt::new();
        let args = parse(attr, &mut cx);
        if let Err(errors) = cx.check() {
            let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
            panic!("unexpected errors: {messages:?}");
        }
        args
    }

    fn parse_err(attr: TokenStream) -> Vec<String> {
        let mut cx = Ctxt::new();
        parse(attr, &mut cx);
        match cx.check() {
            Ok(()) => panic!("expected errors"),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn empty_attribute() {
        assert_eq!(parse_ok(quote!()), TaskArgs::default());
    }

    #[test]
    fn all_options() {
        let args = parse_ok(quote!(
            name = "math.add",
            queue = "math",
            retries = 3,
            retry_timeout = "2s",
            timeout = 30,
            expires = "10m",
            unique = "1h",
            rate_limit = "100/s",
        ));
        assert_eq!(
            args,
            TaskArgs {
                name: Some("math.add".into()),
                queue: Some("math".into()),
                retries: Some(3),
                retry_timeout_ms: Some(2_000),
                timeout_ms: Some(30_000),
                expires_ms: Some(600_000),
                unique_ms: Some(3_600_000),
                rate_limit: Some((100, 1_000)),
            }
        );
    }

    #[test]
    fn rate_limits() {
        assert_eq!(rate_limit("10/m"), Ok((10, 60_000)));
        assert_eq!(rate_limit("5/10s"), Ok((5, 10_000)));
        for bad in ["", "100", "0/s", "x/s", "10/fortnight", "10/0s"] {
            assert!(rate_limit(bad).is_err(), "{bad}");
        }
        let errors = parse_err(quote!(rate_limit = 100));
        assert!(errors[0].contains("expects a string such as"), "{errors:?}");
        let errors = parse_err(quote!(rate_limit = "100/fortnight"));
        assert!(errors[0].contains("unknown period"), "{errors:?}");
    }

    #[test]
    fn suffixed_integer_durations() {
        let args = parse_ok(quote!(retry_timeout = 500ms, timeout = 2m));
        assert_eq!(args.retry_timeout_ms, Some(500));
        assert_eq!(args.timeout_ms, Some(120_000));
    }

    #[test]
    fn unknown_option_lists_the_valid_ones() {
        let errors = parse_err(quote!(nmae = "x"));
        assert_eq!(
            errors,
            [
                "unknown `#[task]` option `nmae`: expected one of `name`, `queue`, `retries`, `retry_timeout`, `timeout`, `expires`, `unique`, `rate_limit`"
            ]
        );
    }

    #[test]
    fn duplicate_option() {
        let errors = parse_err(quote!(queue = "a", queue = "b"));
        assert_eq!(errors, ["duplicate `#[task]` option `queue`: give it once"]);
    }

    #[test]
    fn all_errors_are_collected() {
        let errors = parse_err(quote!(
            bogus = 1 + 2,
            name = "",
            retries = -1,
            timeout = "0s",
            retry_timeout = "soon",
            queue = 5
        ));
        assert_eq!(errors.len(), 6, "{errors:?}");
        assert!(errors[0].starts_with("unknown `#[task]` option `bogus`"));
        assert_eq!(
            errors[1],
            "`name` must be a non-empty name without whitespace or control characters: `name = \"math.add\"`"
        );
        assert_eq!(
            errors[2],
            "`retries` expects a non-negative integer literal: `retries = 3`"
        );
        assert_eq!(
            errors[3],
            "invalid `timeout`: the duration must be greater than zero"
        );
        assert!(errors[4].starts_with("invalid `retry_timeout`: `soon` is not a duration"));
        assert_eq!(
            errors[5],
            "`queue` expects a string literal: `queue = \"math\"`"
        );
    }

    #[test]
    fn names_follow_the_queue_name_rule() {
        for (attr, key) in [
            (quote!(queue = ""), "queue"),
            (quote!(queue = "a b"), "queue"),
            (quote!(queue = "math\t"), "queue"),
            (quote!(queue = "\u{a0}math"), "queue"),
            (quote!(name = ""), "name"),
            (quote!(name = "math add"), "name"),
            (quote!(name = "math\n"), "name"),
            (quote!(name = "math\u{7}"), "name"),
        ] {
            let errors = parse_err(attr.clone());
            assert_eq!(errors.len(), 1, "{attr}: {errors:?}");
            assert!(
                errors[0].starts_with(&format!(
                    "`{key}` must be a non-empty name without whitespace or control characters"
                )),
                "{attr}: {errors:?}"
            );
        }
        let args = parse_ok(quote!(name = "math.add:v2/é", queue = "math-fast_1.q"));
        assert_eq!(args.name.as_deref(), Some("math.add:v2/é"));
        assert_eq!(args.queue.as_deref(), Some("math-fast_1.q"));
    }

    #[test]
    fn option_without_value() {
        let errors = parse_err(quote!(name));
        assert_eq!(
            errors,
            ["`#[task]` option `name` needs a value: `name = \"math.add\"`"]
        );
    }

    #[test]
    fn retries_out_of_range() {
        let errors = parse_err(quote!(retries = 5000000000));
        assert_eq!(
            errors,
            ["`retries` must be an integer from 0 to 4294967295"]
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ms("500ms"), Ok(500));
        assert_eq!(duration_ms("2s"), Ok(2_000));
        assert_eq!(duration_ms("5m"), Ok(300_000));
        assert_eq!(duration_ms("1h"), Ok(3_600_000));
        assert_eq!(duration_ms("007s"), Ok(7_000));
        assert_eq!(duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(duration_ms("1h 30m"), Ok(5_400_000));
        assert_eq!(duration_ms("1d"), Ok(86_400_000));
        assert_eq!(duration_ms("90"), Ok(90_000));
        assert_eq!(
            duration_ms("9223372036854775"),
            Ok(9_223_372_036_854_775_000)
        );
    }

    #[test]
    fn bad_durations() {
        for text in [
            "",
            "s",
            "1.5",
            "-1s",
            "10x",
            "30 parsecs",
            "1500us",
            "0ms",
            "0h",
            "0",
        ] {
            assert!(duration_ms(text).is_err(), "{text:?} should be refused");
        }
        assert!(duration_ms("99999999999999999999s").is_err());
        assert!(duration_ms("18446744073709551615h").is_err());
        assert!(duration_ms("9223372036854776").is_err());
    }
}
