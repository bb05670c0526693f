//! Credentials: HTTP basic auth (RFC 7617) or a bearer token (RFC 6750), compared in
//! constant time.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq;

use crate::Shared;

/// Equal in constant time for equal lengths (the length alone is not secret enough to
/// hide: a length mismatch returns at once).
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Whether `headers` carry the configured credentials; always true when none are
/// configured.
fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let config = &shared.config;
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return config.token_usable()
            && config
                .token
                .as_ref()
                .is_some_and(|t| same(t.as_bytes(), rest.as_bytes()));
    }
    if scheme.eq_ignore_ascii_case("basic")
        && let (Some(user), Some(password)) = (&config.username, &config.password)
        && !user.is_empty()
        && !password.is_empty()
        && let Ok(decoded) = STANDARD.decode(rest)
    {
        let expected = format!("{user}:{password}");
        return same(expected.as_bytes(), &decoded);
    }
    false
}

/// Whether `host` (a `Host` header: name or IP literal, optional port) names this
/// machine's loopback: `localhost`, `127.0.0.0/8`, `::1`.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // `[::1]` or `[::1]:8080`, nothing else after the bracket.
        let Some((inside, after)) = rest.split_once(']') else {
            return false;
        };
        let port_only = after
            .strip_prefix(':')
            .is_some_and(|port| port.chars().all(|c| c.is_ascii_digit()));
        if !after.is_empty() && !port_only {
            return false;
        }
        inside
    } else {
        host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) && !name.contains(':') {
                name
            } else {
                host
            }
        })
    };
    let name = name.trim_end_matches('.');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Middleware: without credentials, only requests addressed to a loopback host (DNS
/// rebinding: a page of another site whose name is made to resolve to 127.0.0.1 sends
/// its own name as `Host`, and would otherwise be "same origin"); with credentials, 401
/// with a challenge unless the request carries them.
pub(crate) async fn require(
    State(shared): State<Shared>,
    request: Request,
    next: Next,
) -> Response {
    if !shared.config.has_credentials() {
        // Every name the request gives for its target: each Host header (a value that
        // is not text counts as a foreign name) and the authority of an absolute-form
        // request line.
        let mut names: Vec<String> = request
            .headers()
            .get_all(header::HOST)
            .iter()
            .map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned())
            .collect();
        if let Some(authority) = request.uri().authority() {
            names.push(authority.as_str().to_owned());
        }
        if let Some(foreign) = names.iter().find(|h| !loopback_host(h)) {
            let e = crate::error::PageError::new(
                axum::http::StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this dashboard has no credentials, so it answers only requests addressed \
                     to localhost or a loopback address, not to `{foreign}`: set \
                     dashboard.username and dashboard.password, or dashboard.token, to serve \
                     it under another name (behind a reverse proxy too)"
                ),
            );
            let json = request.uri().path().contains("/api/");
            return if json { e.json() } else { e }.into_response();
        }
        return next.run(request).await;
    }
    if authorized(&shared, request.headers()) {
        return next.run(request).await;
    }
    let mut response = (StatusCode::UNAUTHORIZED, "credentials required\n").into_response();
    if shared.config.username.is_some() {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"machinery\", charset=\"UTF-8\""),
        );
    } else {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::loopback_host;

    #[test]
    fn only_loopback_names_are_loopback_hosts() {
        for host in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "127.0.0.1",
            "127.0.0.1:80",
            "127.9.9.9:1",
            "[::1]",
            "[::1]:8080",
            "::1",
        ] {
            assert!(loopback_host(host), "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:8080",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
            "10.0.0.5:8080",
            "[::ffff:10.0.0.1]:80",
            "0.0.0.0",
            "",
            "[::1]attacker.example",
            "[::1].attacker.example:80",
            "[::1",
            "\u{fffd}",
        ] {
            assert!(!loopback_host(host), "{host}");
        }
    }
}
