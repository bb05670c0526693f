//! The Tasks registered page: every task name a live worker can run, with its
//! argument schema and fingerprint, and which workers have it. Workers that disagree on
//! a name's schema (a deploy in progress) are shown side by side and highlighted.

use std::collections::BTreeMap;

use axum::extract::State;
use machinery_core::Error;
use machinery_core::inspect::WorkerInfo;
use maud::{Markup, html};
use serde::Serialize;

use crate::Shared;
use crate::error::PageResult;
use crate::layout::segment;
use crate::layout::{Ctx, Nav, page as shell};

/// What the page shows (and `/api/registered` returns).
#[derive(Debug, Serialize)]
pub(crate) struct Data {
    /// Whether the engine keeps a worker registry; without one nothing is known.
    pub(crate) registry: bool,
    /// How many live workers were asked.
    pub(crate) workers: usize,
    /// Every task name, by name.
    pub(crate) tasks: Vec<Registered>,
    /// How many names the live workers disagree on.
    pub(crate) mismatches: usize,
}

/// One task name and the schemas the live workers have for it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(crate) struct Registered {
    pub(crate) name: String,
    /// Live workers run more than one schema of this name.
    pub(crate) mismatch: bool,
    /// One entry per distinct fingerprint, the most common first.
    pub(crate) schemas: Vec<Schema>,
}

/// A schema of a task name, and the workers that run it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(crate) struct Schema {
    /// The argument schema, e.g. `add(i64, i64) -> i64`.
    pub(crate) schema: String,
    pub(crate) fingerprint: u64,
    /// The fingerprint as 16 hex digits, as the CLI prints it.
    pub(crate) fingerprint_hex: String,
    /// The workers (by id and name) that run this schema.
    pub(crate) workers: Vec<WorkerRef>,
}

/// A worker, named.
#[derive(Debug, Serialize, PartialEq, Eq, Clone)]
pub(crate) struct WorkerRef {
    pub(crate) id: String,
    pub(crate) name: String,
}

/// Every task name of `workers`, by name, each with its distinct schemas and who runs
/// which.
pub(crate) fn registered(workers: &[WorkerInfo]) -> Vec<Registered> {
    // name → fingerprint → (schema, workers)
    let mut names: BTreeMap<&str, BTreeMap<u64, (&str, Vec<WorkerRef>)>> = BTreeMap::new();
    for w in workers {
        for t in &w.tasks {
            let by_print = names.entry(&t.name).or_default();
            let (_, runners) = by_print
                .entry(t.fingerprint)
                .or_insert_with(|| (&t.schema, Vec::new()));
            let who = WorkerRef {
                id: w.id.clone(),
                name: w.name.clone(),
            };
            if !runners.contains(&who) {
                runners.push(who);
            }
        }
    }
    names
        .into_iter()
        .map(|(name, by_print)| {
            let mut schemas: Vec<Schema> = by_print
                .into_iter()
                .map(|(fingerprint, (schema, workers))| Schema {
                    schema: schema.to_owned(),
                    fingerprint,
                    fingerprint_hex: format!("{fingerprint:016x}"),
                    workers,
                })
                .collect();
            schemas.sort_by(|a, b| {
                b.workers
                    .len()
                    .cmp(&a.workers.len())
                    .then(a.schema.cmp(&b.schema))
            });
            Registered {
                name: name.to_owned(),
                mismatch: schemas.len() > 1,
                schemas,
            }
        })
        .collect()
}

pub(crate) async fn data(shared: &Shared) -> PageResult<Data> {
    let (registry, workers) = match shared.inspector.workers().await {
        Ok(ws) => (true, ws),
        Err(Error::Unsupported { .. }) => (false, Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let tasks = registered(&workers);
    Ok(Data {
        registry,
        workers: workers.len(),
        mismatches: tasks.iter().filter(|t| t.mismatch).count(),
        tasks,
    })
}

fn workers_list(ctx: &Ctx, workers: &[WorkerRef]) -> Markup {
    html! {
        @for (i, w) in workers.iter().enumerate() {
            @if i > 0 { ", " }
            a href=(ctx.href(&format!("/workers#w-{}", segment(&w.id)))) title=(w.id) { (w.name) }
        }
    }
}

fn render(ctx: &Ctx, data: &Data) -> Markup {
    html! {
        @if !data.registry {
            p.warn { "The " (ctx.engine) " engine keeps no worker registry: registered tasks cannot be listed." }
        } @else if data.tasks.is_empty() {
            p.muted { "No live worker: task names appear here when a worker runs." }
        } @else {
            p.muted {
                (data.tasks.len()) " task names on " (data.workers)
                (if data.workers == 1 { " live worker." } else { " live workers." })
            }
            @if data.mismatches > 0 {
                p.warn role="alert" {
                    strong { "Schema mismatch: " }
                    "live workers disagree on the arguments of " (data.mismatches)
                    (if data.mismatches == 1 { " task" } else { " tasks" })
                    " (a deploy in progress?). A message sent with one schema fails on a \
                     worker that has the other."
                }
            }
            table.registered {
                thead { tr {
                    th { "task" } th { "schema" } th { "fingerprint" } th { "workers" }
                } }
                tbody {
                    @for t in &data.tasks {
                        @for (i, s) in t.schemas.iter().enumerate() {
                            tr class=[t.mismatch.then_some("mismatch")] {
                                td {
                                    @if i == 0 {
                                        strong { (t.name) }
                                        @if t.mismatch {
                                            br;
                                            span.state.failure { (t.schemas.len()) " schemas" }
                                        }
                                    }
                                }
                                td { code { (s.schema) } }
                                td.mono { (s.fingerprint_hex) }
                                td {
                                    @if t.mismatch { "run by " }
                                    (workers_list(ctx, &s.workers))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) async fn page(State(shared): State<Shared>, ctx: Ctx) -> PageResult {
    let data = data(&shared).await?;
    Ok(shell(
        &ctx,
        Nav::Registered,
        "Tasks registered",
        render(&ctx, &data),
    ))
}

#[cfg(test)]
mod tests {
    use machinery_core::inspect::RegisteredTask;

    use super::*;

    fn worker(id: &str, tasks: &[(&str, &str, u64)]) -> WorkerInfo {
        WorkerInfo {
            id: id.into(),
            name: format!("{id}-name"),
            host: "h".into(),
            pid: 1,
            version: "0".into(),
            queues: vec!["q".into()],
            concurrency: 1,
            prefetch: 1,
            tasks: tasks
                .iter()
                .map(|&(name, schema, fingerprint)| RegisteredTask {
                    name: name.into(),
                    schema: schema.into(),
                    fingerprint,
                })
                .collect(),
            started_at: 1,
            heartbeat_at: 2,
            running: Vec::new(),
            processed: 0,
            failed: 0,
        }
    }

    #[test]
    fn workers_agreeing_make_one_row_per_name() {
        let add = ("add", "add(i64, i64) -> i64", 0xabc);
        let got = registered(&[
            worker("w1", &[add, ("mul", "mul(i64) -> i64", 7)]),
            worker("w2", &[add]),
        ]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].name, "add");
        assert!(!got[0].mismatch && !got[1].mismatch);
        assert_eq!(got[0].schemas.len(), 1);
        assert_eq!(got[0].schemas[0].fingerprint_hex, "0000000000000abc");
        let ids: Vec<_> = got[0].schemas[0]
            .workers
            .iter()
            .map(|w| w.id.as_str())
            .collect();
        assert_eq!(ids, ["w1", "w2"]);
    }

    #[test]
    fn a_deploy_in_progress_is_a_mismatch_naming_who_runs_what() {
        let got = registered(&[
            worker("old1", &[("send", "send(String)", 1)]),
            worker("old2", &[("send", "send(String)", 1)]),
            worker(
                "new",
                &[("send", "send(String, u32)", 2), ("ok", "ok()", 3)],
            ),
        ]);
        let send = &got[1];
        assert_eq!(send.name, "send");
        assert!(send.mismatch);
        // The schema most workers run comes first.
        assert_eq!(send.schemas[0].schema, "send(String)");
        assert_eq!(send.schemas[0].workers.len(), 2);
        assert_eq!(send.schemas[1].schema, "send(String, u32)");
        assert_eq!(send.schemas[1].workers[0].name, "new-name");
        assert!(!got[0].mismatch, "ok is run by one worker only");
    }
}
