//! The JSON twin of every page: the same data as the page shows, as the page module's
//! `data` function gathers it.

use axum::extract::{Path, State};

use crate::error::Query;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::Shared;
use crate::error::PageError;
use crate::pages;

type ApiResult = Result<Response, PageError>;

fn json<T: serde::Serialize>(r: Result<T, PageError>) -> ApiResult {
    let data = r.map_err(PageError::json)?;
    let text = serde_json::to_string(&data).map_err(|e| {
        PageError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).json()
    })?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        html_safe(&text),
    )
        .into_response())
}

/// `json` with `<`, `>` and `&` written as `\u003c`, `\u003e` and `\u0026` (the same
/// JSON value): task data never reaches a browser as markup, even from a JSON route
/// opened as a page or sniffed as HTML. These characters only occur inside strings in
/// JSON text, where the escapes are valid.
pub(crate) fn html_safe(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) async fn overview(
    State(shared): State<Shared>,
    Query(window): Query<pages::overview::Window>,
) -> ApiResult {
    let hours = window.hours().map_err(PageError::json)?;
    json(pages::overview::data(&shared, hours).await)
}

pub(crate) async fn queues(State(shared): State<Shared>) -> ApiResult {
    json(pages::queues::data(&shared).await)
}

pub(crate) async fn tasks(
    State(shared): State<Shared>,
    Query(query): Query<pages::tasks::ListQuery>,
) -> ApiResult {
    json(pages::tasks::data(&shared, &query).await)
}

pub(crate) async fn task(State(shared): State<Shared>, Path(uuid): Path<String>) -> ApiResult {
    json(pages::task::data(&shared, &uuid).await)
}

pub(crate) async fn workers(State(shared): State<Shared>) -> ApiResult {
    json(pages::workers::data(&shared).await)
}

pub(crate) async fn workflow(State(shared): State<Shared>, Path(uuid): Path<String>) -> ApiResult {
    json(pages::workflows::data(&shared, &uuid).await)
}

pub(crate) async fn registered(State(shared): State<Shared>) -> ApiResult {
    json(pages::registered::data(&shared).await)
}

pub(crate) async fn periodic(State(shared): State<Shared>) -> ApiResult {
    json(pages::periodic::data(&shared).await)
}
