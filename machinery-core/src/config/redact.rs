//! Hiding passwords in URLs before they reach a log or an error.

/// What replaces a password in [`redact_url`].
const MASK: &str = "***";

/// Returns `url` with any password replaced by `***`.
///
/// `redis://user:secret@h:1/0` becomes `redis://user:***@h:1/0` and `redis://:secret@h`
/// becomes `redis://:***@h`. A user part without `:` (`redis://secret@h`) is masked
/// whole, since some clients read it as a password, and so are `pass` and `password`
/// query parameters (`redis+unix:///run/redis.sock?pass=secret`). A password holding an
/// unencoded `/`, `?` or `#` is still masked: everything up to the last `@` counts as
/// the user part. A string that is not a URL at all is handled the same way, so it is
/// safe to redact any value before it goes into a log or an error message.
///
/// # Examples
///
/// ```
/// use machinery_core::config::redact_url;
///
/// assert_eq!(redact_url("redis://user:secret@h:1/0"), "redis://user:***@h:1/0");
/// assert_eq!(redact_url("redis://:secret@h"), "redis://:***@h");
/// assert_eq!(redact_url("redis://h:6379/0"), "redis://h:6379/0");
/// ```
pub fn redact_url(url: &str) -> String {
    let (head, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(head);
    // An empty authority (`unix:///run/redis@1.sock`) has no user part, whatever follows.
    let at = if rest.starts_with('/') {
        None
    } else {
        rest.rfind('@')
    };
    let rest = match at {
        Some(at) => {
            let (user_info, after) = rest.split_at(at);
            match user_info.split_once(':') {
                Some((user, password)) => {
                    out.push_str(user);
                    out.push(':');
                    if !password.is_empty() {
                        out.push_str(MASK);
                    }
                }
                None if !user_info.is_empty() => out.push_str(MASK),
                None => {}
            }
            after
        }
        None => rest,
    };
    match rest.split_once('?') {
        Some((path, query_and_fragment)) => {
            let (query, fragment) = match query_and_fragment.split_once('#') {
                Some((query, fragment)) => (query, Some(fragment)),
                None => (query_and_fragment, None),
            };
            out.push_str(path);
            out.push('?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((name, value))
                        if !value.is_empty()
                            && (name.eq_ignore_ascii_case("pass")
                                || name.eq_ignore_ascii_case("password")) =>
                    {
                        out.push_str(name);
                        out.push('=');
                        out.push_str(MASK);
                    }
                    _ => out.push_str(pair),
                }
            }
            if let Some(fragment) = fragment {
                out.push('#');
                out.push_str(fragment);
            }
        }
        None => out.push_str(rest),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_examples() {
        let cases = [
            ("redis://user:secret@h:1/0", "redis://user:***@h:1/0"),
            ("redis://:secret@h", "redis://:***@h"),
            (
                "rediss://:secret@h:6380/2?protocol=resp3",
                "rediss://:***@h:6380/2?protocol=resp3",
            ),
            ("redis://secret@h", "redis://***@h"),
            ("redis://h:6379/0", "redis://h:6379/0"),
            ("redis://user:@h", "redis://user:@h"),
            ("memory://", "memory://"),
            ("", ""),
            ("redis://:p@ss:w/rd#x@h:1/0", "redis://:***@h:1/0"),
            (
                "redis+unix:///run/redis.sock?db=1&pass=secret",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
            (
                "unix:///run/redis@6379.sock?password=secret#f",
                "unix:///run/redis@6379.sock?password=***#f",
            ),
            ("user:secret@h:6379", "user:***@h:6379"),
            ("redis://h/0?pass=", "redis://h/0?pass="),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn redact_url_never_shows_the_password() {
        for url in [
            "redis://u:hunter2@h",
            "redis://:hunter2@h:1/0",
            "redis://hunter2@h",
            "redis://:hunt/er2@h",
            "redis://:hunt?er2@h",
            "redis://:hunt#er2@h",
            "redis://:hunt@er2@h",
            "redis+unix:///s.sock?pass=hunter2",
            "redis+unix:///s.sock?PASSWORD=hunter2&db=0",
            "hunter2@h",
            ":hunter2@h",
        ] {
            let redacted = redact_url(url);
            assert!(!redacted.contains("hunter2"), "{url} -> {redacted}");
            assert!(!redacted.contains("er2"), "{url} -> {redacted}");
        }
    }
}
