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
        let origin_host = origin
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(origin)
            .trim_end_matches('/');
        if origin == "null" || !origin_host.eq_ignore_ascii_case(host) {
            return Err(PageError::forbidden(format!(
                "cross-origin request refused (Origin: {origin}, Host: {host})"
            )));
        }
    }
    Ok(())
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
        let axum::Form(form) = axum::Form::<WithToken<T>>::from_request(request, shared)
            .await
            .map_err(|e| PageError::bad_request(format!("invalid form: {e}")))?;
        let token = form.csrf.or(header_token).unwrap_or_default();
        if !same(token.as_bytes(), shared.csrf.as_bytes()) {
            return Err(PageError::forbidden(
                "missing or wrong CSRF token: reload the page and try again".to_owned(),
            ));
        }
        Ok(CsrfForm(form.inner))
    }
}
