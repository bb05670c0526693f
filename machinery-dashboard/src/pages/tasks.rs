//! The task listings: by queue and list, paginated, filtered by task name.

use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};

use crate::Shared;
use crate::error::PageResult;
use crate::layout::{Ctx, Nav, page as shell};

/// The listing asked for: `?queue=&list=&name=&cursor=`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    pub(crate) queue: Option<String>,
    pub(crate) list: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) cursor: Option<String>,
}

/// What the page shows (and `/api/tasks` returns).
#[derive(Debug, Serialize)]
pub(crate) struct Data {}

pub(crate) async fn data(_shared: &Shared, _query: &ListQuery) -> PageResult<Data> {
    Ok(Data {})
}

pub(crate) async fn page(
    State(shared): State<Shared>,
    ctx: Ctx,
    Query(query): Query<ListQuery>,
) -> PageResult {
    let _data = data(&shared, &query).await?;
    Ok(shell(&ctx, Nav::Tasks, "Tasks", maud::html! { p { "…" } }))
}
