//! What a page or an action answers when it cannot do what was asked.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use machinery_core::{Error, ErrorKind};
use maud::{DOCTYPE, html};

/// An HTTP error with a sentence for the user: an HTML page, or `{"error": "…"}` from
/// the JSON routes.
#[derive(Debug)]
pub(crate) struct PageError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) json: bool,
}

impl PageError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        PageError {
            status,
            message: message.into(),
            json: false,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// The same error, answered as JSON.
    pub(crate) fn json(mut self) -> Self {
        self.json = true;
        self
    }
}

impl From<Error> for PageError {
    fn from(e: Error) -> Self {
        let status = match (&e, e.kind()) {
            (Error::Unsupported { .. }, _) => StatusCode::NOT_IMPLEMENTED,
            (Error::InvalidCursor { .. }, _) => StatusCode::BAD_REQUEST,
            (_, ErrorKind::NotFound) => StatusCode::NOT_FOUND,
            (_, ErrorKind::Rejected | ErrorKind::Config) => StatusCode::BAD_REQUEST,
            (_, ErrorKind::Connection | ErrorKind::Timeout | ErrorKind::Transient) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        PageError::new(status, e.to_string())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if self.json {
            let body = serde_json::json!({ "error": self.message }).to_string();
            return (
                self.status,
                [(header::CONTENT_TYPE, "application/json")],
                crate::api::html_safe(&body),
            )
                .into_response();
        }
        let title = self.status.canonical_reason().unwrap_or("Error");
        let page = html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    // The broker may be back soon: a page left open (a wall screen)
                    // tries again by itself.
                    @if self.status == StatusCode::SERVICE_UNAVAILABLE {
                        meta http-equiv="refresh" content="10";
                    }
                    title { (title) " · Machinery" }
                }
                body {
                    h1 { (self.status.as_u16()) " " (title) }
                    p.error { (self.message) }
                    @if self.status == StatusCode::SERVICE_UNAVAILABLE {
                        p { "This page tries again every 10 seconds." }
                    }
                }
            }
        };
        (self.status, page).into_response()
    }
}

/// What page handlers return.
pub(crate) type PageResult<T = maud::Markup> = Result<T, PageError>;

/// `axum::extract::Query` whose refusal (`?queue=a&queue=b`, a number that is not one)
/// is the dashboard's own 400 page, not axum's plain text.
#[derive(Debug)]
pub(crate) struct Query<T>(pub(crate) T);

impl<T, S> axum::extract::FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, PageError> {
        let json = parts.uri.path().contains("/api/");
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| {
                let e = PageError::bad_request(format!("invalid query string: {}", e.body_text()));
                if json { e.json() } else { e }
            })
    }
}
