//! The Tasks registered page.

use axum::extract::State;
use serde::Serialize;

use crate::Shared;
use crate::error::PageResult;
use crate::layout::{Ctx, Nav, page as shell};

/// What the page shows (and `/api/registered` returns).
#[derive(Debug, Serialize)]
pub(crate) struct Data {}

pub(crate) async fn data(_shared: &Shared) -> PageResult<Data> {
    Ok(Data {})
}

pub(crate) async fn page(State(shared): State<Shared>, ctx: Ctx) -> PageResult {
    let _data = data(&shared).await?;
    Ok(shell(
        &ctx,
        Nav::Registered,
        "Tasks registered",
        maud::html! { p { "…" } },
    ))
}
