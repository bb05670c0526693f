//! The Workflow page and `/api/workflows/{uuid}`, on memory and on a private Redis: a
//! chain with a failing step, a large chord shown as counts, an unknown UUID, and a
//! task name that is markup.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{ENGINES, Engine, Env};
use machinery_core::prelude::*;
use machinery_core::{Worker, WorkerHandle, group};
use serde_json::Value;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

#[machinery_core::task(name = "dash_wf::add")]
async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

#[machinery_core::task(name = "dash_wf::at_most")]
async fn at_most(limit: i64, x: i64) -> Result<i64, TaskError> {
    if x > limit {
        Err(TaskError::msg(format!("{x} is over {limit}")))
    } else {
        Ok(x)
    }
}

#[machinery_core::task(name = "dash_wf::count")]
async fn count(values: Vec<i64>) -> Result<usize, TaskError> {
    Ok(values.len())
}

#[machinery_core::task(name = "dash_wf::<b>bold</b>")]
async fn bold(x: i64) -> Result<i64, TaskError> {
    Ok(x)
}

fn worker(env: &Env) -> WorkerHandle {
    Worker::auto()
        .server(&env.server)
        .concurrency(64)
        .spawn()
        .expect("worker starts")
}

/// `GET /api/workflows/{uuid}` until `done` holds, for at most [`WAIT`].
async fn api_until(env: &Env, uuid: Uuid, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = env.get(&format!("/api/workflows/{uuid}")).await;
        if reply.status == StatusCode::OK {
            let json = reply.json();
            if done(&json) {
                return json;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{:?}: {what} not seen within {WAIT:?}; last reply {}: {}",
            env.engine,
            reply.status,
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn states(json: &Value) -> Vec<Value> {
    json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_shows_each_step_and_where_it_failed() {
    for engine in ENGINES {
        let env = Env::new(engine).await;
        let w = worker(&env);
        let chain = add::s(5, 5)
            .then(at_most::partial(3))
            .then(add::partial(1))
            .send_with(&env.server)
            .await
            .unwrap();
        let id = chain.workflow().unwrap();
        let steps = chain.steps().to_vec();
        let json = api_until(&env, id, "every step final", |j| {
            states(j).iter().all(|s| s == "SUCCESS" || s == "FAILURE")
        })
        .await;
        assert_eq!(json["kind"], "chain", "{engine:?}");
        assert_eq!(json["id"], id.to_string());
        assert_eq!(
            states(&json),
            ["SUCCESS", "FAILURE", "FAILURE"],
            "{engine:?}"
        );
        assert_eq!(json["steps"][1]["name"], "dash_wf::at_most");
        assert_eq!(json["steps"][1]["type"], "task");

        // The page, reached from the failed step's task page: every step links to its
        // task, the failed one is outlined.
        let page = env.get(&format!("/workflows/{id}?from={}", steps[1])).await;
        assert_eq!(page.status, StatusCode::OK, "{engine:?}: {}", page.body);
        for uuid in &steps {
            assert!(
                page.body.contains(&format!("href=\"/tasks/{uuid}\"")),
                "{engine:?}: a link to step {uuid}"
            );
        }
        assert_eq!(page.body.matches("class=\"part current\"").count(), 1);
        let current = page.body.find("class=\"part current\"").unwrap();
        assert!(page.body[current..].contains(&steps[1].to_string()));
        assert_eq!(page.body.matches("class=\"arrow\"").count(), 2);
        assert!(page.body.contains("state failure"), "{engine:?}");
        assert!(page.body.contains("state success"), "{engine:?}");

        // Any step's UUID finds the same workflow.
        let via_step = env.get(&format!("/api/workflows/{}", steps[2])).await;
        assert_eq!(via_step.json()["id"], id.to_string(), "{engine:?}");
        w.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_chord_is_counts_and_at_most_fifty_boxes() {
    for engine in ENGINES {
        let env = Env::new(engine).await;
        let members = 2_000;
        let chord = group((0..members).map(|i| add::s(i, 0)))
            .chord(count::partial())
            .send_with(&env.server)
            .await
            .unwrap();
        let callback = chord.callback().uuid();
        // Before any worker: every member PENDING.
        let pending = api_until(&env, callback, "the chord", |_| true).await;
        assert_eq!(pending["kind"], "chord", "{engine:?}");
        let g = &pending["steps"][0];
        assert_eq!(g["type"], "group");
        assert_eq!(g["count"], members);
        assert_eq!(
            g["states"],
            serde_json::json!([{ "state": "PENDING", "count": members }])
        );
        assert_eq!(g["members"].as_array().unwrap().len(), 50);

        let w = worker(&env);
        assert_eq!(chord.get_timeout(WAIT).await.unwrap(), members as usize);
        let done = api_until(&env, callback, "every member SUCCESS", |j| {
            j["steps"][0]["states"] == serde_json::json!([{ "state": "SUCCESS", "count": members }])
        })
        .await;
        assert_eq!(done["steps"][0]["callback"]["state"], "SUCCESS");
        assert_eq!(done["steps"][0]["callback"]["uuid"], callback.to_string());

        let started = Instant::now();
        let page = env.get(&format!("/workflows/{callback}")).await;
        let took = started.elapsed();
        assert_eq!(page.status, StatusCode::OK, "{engine:?}: {}", page.body);
        let boxes = page.body.matches("class=\"member\"").count()
            + page.body.matches("class=\"member current\"").count();
        assert_eq!(boxes, 50, "{engine:?}: member boxes");
        assert!(page.body.contains("… and 1\u{202f}950 more"), "{engine:?}");
        assert!(page.body.contains("<svg class=\"bar\""), "{engine:?}");
        assert!(page.body.contains("2\u{202f}000"), "{engine:?}: the count");
        // The callback, outlined as the part asked for.
        assert!(
            page.body.contains("class=\"part callback current\""),
            "{engine:?}"
        );
        eprintln!(
            "{engine:?}: chord of {members}: page {} bytes in {took:?}",
            page.body.len()
        );
        w.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_or_lone_uuid_is_not_found() {
    for engine in ENGINES {
        let env = Env::new(engine).await;
        let unknown = Uuid::now_v7();
        let page = env.get(&format!("/workflows/{unknown}")).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{engine:?}");
        assert!(page.body.contains("No workflow is known"), "{}", page.body);
        let api = env.get(&format!("/api/workflows/{unknown}")).await;
        assert_eq!(api.status, StatusCode::NOT_FOUND);
        assert!(
            api.json()["error"]
                .as_str()
                .unwrap()
                .contains("No workflow")
        );
        let bad = env.get("/api/workflows/not-a-uuid").await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{engine:?}");

        // A task sent on its own belongs to no workflow.
        let lone = add::s(1, 1).send_with(&env.server).await.unwrap();
        let page = env.get(&format!("/workflows/{}", lone.uuid())).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{engine:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_name_with_markup_is_escaped() {
    for engine in ENGINES {
        let env = Env::new(engine).await;
        let chain = bold::s(1)
            .then(bold::partial())
            .send_with(&env.server)
            .await
            .unwrap();
        let id = chain.workflow().unwrap();
        let page = env.get(&format!("/workflows/{id}")).await;
        assert_eq!(page.status, StatusCode::OK, "{engine:?}: {}", page.body);
        assert!(!page.body.contains("<b>bold</b>"), "{engine:?}: unescaped");
        assert!(
            page.body.contains("dash_wf::&lt;b&gt;bold&lt;/b&gt;"),
            "{engine:?}: escaped"
        );
        let json = env.get(&format!("/api/workflows/{id}")).await.json();
        assert_eq!(json["steps"][0]["name"], "dash_wf::<b>bold</b>");
        assert!(matches!(engine, Engine::Memory | Engine::Redis));
    }
}

/// Every command Redis has run, by name (`INFO commandstats`).
async fn command_calls(url: &str) -> std::collections::BTreeMap<String, u64> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// What a chain send costs on Redis, and that the workflow record is one `SET` of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_costs_one_command_per_send() {
    let env = Env::new(Engine::Redis).await;
    let url = env.redis.as_ref().unwrap().url();
    // Warm up: connections and scripts loaded.
    add::s(1, 1)
        .then(add::partial(1))
        .send_with(&env.server)
        .await
        .unwrap();
    let sends = 10u64;
    let before = command_calls(&url).await;
    for _ in 0..sends {
        add::s(1, 1)
            .then(add::partial(1))
            .then(add::partial(1))
            .send_with(&env.server)
            .await
            .unwrap();
    }
    let after = command_calls(&url).await;
    // The INFO call itself is counted in `after`.
    let diff: Vec<(String, u64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(k, d)| *d > 0 && k != "info")
        .collect();
    let total: u64 = diff.iter().map(|(_, d)| d).sum();
    eprintln!(
        "a chain of 3 sent on Redis: {} commands per send ({diff:?} over {sends} sends)",
        total as f64 / sends as f64
    );
    let sets = diff.iter().find(|(k, _)| k == "set").map_or(0, |(_, d)| *d);
    assert!(sets >= sends, "one SET of the record per send: {diff:?}");
}
