//! Cross-site request forgery protection of the actions.
//!
//! Two checks, both needed for every `POST`:
//! - the **synchronizer token** (OWASP's CSRF cheat sheet): every form carries the
//!   instance's secret token in a hidden `csrf` field (or a script sends it as the
//!   `X-CSRF-Token` header), and the action compares it in constant time. Another site
//!   cannot read the token, since it cannot read our pages;
//! - the **origin**: a request that says where it comes from (`Sec-Fetch-Site`,
//!   `Origin`) must come from this dashboard's own origin.

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::Shared;
use crate::auth::same;
use crate::error::PageError;

/// A fresh random token: 244 bits from two version-4 UUIDs (the OS's random source).
pub(crate) fn new_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The header a script may send the token in.
pub(crate) const HEADER: &str = "x-csrf-token";

/// Refuses a request from another origin: `Sec-Fetch-Site` other than `same-origin` or
/// `none`, or an `Origin` whose host is not the request's `Host`.
pub(crate) fn check_origin(headers: &HeaderMap) -> Result<(), PageError> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(PageError::forbidden(format!(
            "cross-site request refused (Sec-Fetch-Site: {site})"
        )));
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if origin == "null" || !same_site(origin, host) {
            return Err(PageError::forbidden(format!(
                "cross-origin request refused (Origin: {origin}, Host: {host}); behind a \
                 reverse proxy, pass the Host header through"
            )));
        }
    }
    Ok(())
}

/// Whether `origin` (`scheme://host[:port]`) names `host` (a `Host` header), a
/// scheme's default port (80, 443) written or not.
fn same_site(origin: &str, host: &str) -> bool {
    let (scheme, rest) = origin.split_once("://").unwrap_or(("", origin));
    let default = match scheme {
        "http" => Some("80"),
        "https" => Some("443"),
        _ => None,
    };
    let strip = |h: &str| -> String {
        let h = h.trim_end_matches('/').to_ascii_lowercase();
        match default {
            Some(port) => h
                .strip_suffix(&format!(":{port}"))
                .map(str::to_owned)
                .unwrap_or(h),
            None => h,
        }
    };
    !host.is_empty() && strip(rest) == strip(host)
}

/// An action's form, accepted only with the right CSRF token and origin.
///
/// The form's fields are `T`'s plus `csrf` (or the `X-CSRF-Token` header).
pub(crate) struct CsrfForm<T>(pub T);

#[derive(Deserialize)]
struct WithToken<T> {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(flatten)]
    inner: T,
}

impl<T: DeserializeOwned + Send> FromRequest<Shared> for CsrfForm<T> {
    type Rejection = PageError;

    async fn from_request(request: Request, shared: &Shared) -> Result<Self, PageError> {
        check_origin(request.headers())?;
        let header_token = request
            .headers()
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let form: WithToken<T> = if request.headers().contains_key(header::CONTENT_TYPE) {
            let axum::Form(form) = axum::Form::<WithToken<T>>::from_request(request, shared)
                .await
                .map_err(|e| PageError::bad_request(format!("invalid form: {e}")))?;
            form
        } else {
            // A script posting with the header alone sends no body: no fields.
            serde_urlencoded::from_str("")
                .map_err(|e| PageError::bad_request(format!("invalid form: {e}")))?
        };
        let token = form.csrf.or(header_token).unwrap_or_default();
        if !same(token.as_bytes(), shared.csrf.as_bytes()) {
            return Err(PageError::forbidden(
                "missing or wrong CSRF token: reload the page and try again".to_owned(),
            ));
        }
        Ok(CsrfForm(form.inner))
    }
}

#[cfg(test)]
mod tests {
    use super::same_site;

    #[test]
    fn origins_match_their_host_with_or_without_the_default_port() {
        assert!(same_site("http://dash.example", "dash.example:80"));
        assert!(same_site("https://dash.example:443", "dash.example"));
        assert!(same_site("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(same_site("HTTP://Dash.Example", "dash.example"));
        assert!(!same_site("http://dash.example", "dash.example:8080"));
        assert!(!same_site("https://dash.example", "dash.example:80"));
        assert!(!same_site("http://evil.example", "dash.example"));
        assert!(!same_site("http://dash.example", ""));
    }
}
