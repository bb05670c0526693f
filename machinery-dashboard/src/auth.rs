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
    if !config.has_credentials() {
        return true;
    }
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return config
            .token
            .as_ref()
            .is_some_and(|t| same(t.as_bytes(), rest.as_bytes()));
    }
    if scheme.eq_ignore_ascii_case("basic")
        && let (Some(user), Some(password)) = (&config.username, &config.password)
        && let Ok(decoded) = STANDARD.decode(rest)
    {
        let expected = format!("{user}:{password}");
        return same(expected.as_bytes(), &decoded);
    }
    false
}

/// Middleware: 401 with a basic-auth challenge unless the request carries the
/// credentials.
pub(crate) async fn require(
    State(shared): State<Shared>,
    request: Request,
    next: Next,
) -> Response {
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
