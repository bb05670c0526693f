//! The Workflow page.

use axum::extract::{Path, State};
use serde::Serialize;

use crate::Shared;
use crate::error::PageResult;
use crate::layout::{Ctx, Nav, page as shell};

/// What the page shows (and `/api/workflows/{uuid}` returns).
#[derive(Debug, Serialize)]
pub(crate) struct Data {}

pub(crate) async fn data(_shared: &Shared, _uuid: &str) -> PageResult<Data> {
    Ok(Data {})
}

pub(crate) async fn page(
    State(shared): State<Shared>,
    ctx: Ctx,
    Path(uuid): Path<String>,
) -> PageResult {
    let _data = data(&shared, &uuid).await?;
    Ok(shell(
        &ctx,
        Nav::Workflows,
        "Workflow",
        maud::html! { p { "…" } },
    ))
}
