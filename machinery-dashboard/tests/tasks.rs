//! The task listings (`/tasks`, `/api/tasks`) and the task page (`/tasks/{uuid}`,
//! `/api/tasks/{uuid}`) on both engines: what each list shows, pagination, the name
//! filter, the actions' effects, the CSRF and origin refusals, and the escaping of task
//! data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use axum::http::{StatusCode, header};
use common::{ENGINES, Env, Reply, csrf_of};
use machinery_core::engine::{Delivery, Outgoing};
use machinery_core::{
    DeadLetterReason, RawSignature, TaskContext, TaskError, Worker, WorkerHandle,
};
use machinery_dashboard::DashboardConfig;
use serde_json::{Value, json};
use uuid::Uuid;

#[machinery_core::task(name = "dash_tasks::add")]
async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

#[machinery_core::task(name = "dash_tasks::echo")]
async fn echo(text: String) -> Result<String, TaskError> {
    Ok(text)
}

#[machinery_core::task(name = "dash_tasks::refuse")]
async fn refuse(text: String) -> Result<(), TaskError> {
    Err(TaskError::msg(format!(
        "refused <img src=x onerror=alert(1)> for {text}"
    )))
}

#[machinery_core::task(name = "dash_tasks::report")]
async fn report(ctx: TaskContext, done: u32) -> Result<(), TaskError> {
    ctx.set_progress(json!({"done": done, "of": 4}));
    Ok(())
}

const WAIT: Duration = Duration::from_secs(20);
const SCRIPT: &str = "<script>window.__pwned=1</script>";

/// Polls `probe` until it returns `Some`, for up to 20 s; fails naming `what`.
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn worker(env: &Env, queue: &str) -> WorkerHandle {
    Worker::new()
        .task(add::ENTRY)
        .task(echo::ENTRY)
        .task(refuse::ENTRY)
        .task(report::ENTRY)
        .queue(queue)
        .server(&env.server)
        .spawn()
        .expect("spawn a worker")
}

/// A `GET` that must answer 200; its reply.
async fn ok(env: &Env, path: &str) -> Reply {
    let reply = env.get(path).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{:?} GET {path}: {}",
        env.engine,
        reply.body
    );
    reply
}

/// The UUIDs the task links of a listing page point at, in order.
fn linked(html: &str) -> Vec<String> {
    html.match_indices("class=\"task\" href=\"/tasks/")
        .map(|(at, m)| html[at + m.len()..at + m.len() + 36].to_owned())
        .collect()
}

/// The `href` of the first `<a class="{class}">`, unescaped.
fn link(html: &str, class: &str) -> Option<String> {
    let marker = format!("class=\"{class}\" href=\"");
    let at = html.find(&marker)? + marker.len();
    let rest = &html[at..];
    Some(rest[..rest.find('"')?].replace("&amp;", "&"))
}

/// `POST path` with `fields` and the CSRF token read off the page at `from`, as a
/// browser on that page would send it.
async fn post_from(env: &Env, from: &str, path: &str, fields: &[(&str, &str)]) -> Reply {
    let page = ok(env, from).await;
    let token = csrf_of(&page.body).unwrap_or_else(|| panic!("no form on {from}: {}", page.body));
    let mut all = fields.to_vec();
    all.push(("csrf", &token));
    env.post_raw(path, &all, &[]).await
}

/// Fetches `n` messages of `queue` (they stay in flight until settled).
async fn take(env: &Env, queue: &str, n: usize) -> Vec<Delivery> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "timed out fetching {n} from {queue}"
        );
        got.extend(
            env.server
                .broker()
                .fetch(
                    &[queue.to_owned()],
                    n - got.len(),
                    Duration::from_millis(500),
                )
                .await
                .expect("fetch"),
        );
    }
    got
}

/// Dead-letters everything in `queue`: each message fetched and moved to the dead
/// letters with the reason a worker would give.
async fn dead_letter_all(env: &Env, queue: &str, n: usize) {
    for d in take(env, queue, n).await {
        let reason = match RawSignature::decode(&d.payload) {
            Ok(raw) => DeadLetterReason::NotRegistered {
                name: raw.name,
                deliveries: 4,
            },
            Err(e) => DeadLetterReason::Undecodable {
                error: e.to_string(),
            },
        };
        env.server
            .broker()
            .dead_letter(&d, &reason)
            .await
            .expect("dead-letter");
    }
}

fn raw(queue: &str, name: &str, args: &impl serde::Serialize) -> RawSignature {
    let mut raw = RawSignature::new(name, rmp_serde::to_vec(args).unwrap());
    raw.routing_key = queue.to_owned();
    raw
}

/// Every UUID of a listing, walked through `/api/tasks` pages from the first.
async fn walk_api(env: &Env, query: &str) -> (Vec<String>, usize) {
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut path = format!("/api/tasks?{query}");
    loop {
        let page = ok(env, &path).await.json();
        pages += 1;
        assert!(pages < 100, "{path}: the listing does not end");
        for item in page["items"].as_array().unwrap() {
            seen.push(item["uuid"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => {
                let cursor = serde_urlencoded::to_string([("cursor", next)]).unwrap();
                path = format!("/api/tasks?{query}&{cursor}");
            }
            None => return (seen, pages),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_queues_the_page_says_so_and_wrong_input_is_a_400() {
    for engine in ENGINES {
        let env = Env::new(engine).await;
        let page = ok(&env, "/tasks").await;
        assert!(page.body.contains("There are no queues"), "{}", page.body);
        let api = ok(&env, "/api/tasks").await.json();
        assert_eq!(api["queue"], Value::Null);
        assert_eq!(api["items"], json!([]));

        add::s(1, 2)
            .queue("work")
            .send_with(&env.server)
            .await
            .unwrap();
        let wrong = env.get("/tasks?queue=work&list=zombies").await;
        assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "{}", wrong.body);
        assert!(
            wrong
                .body
                .contains("pending, delayed, in_flight, dead, failed"),
            "{}",
            wrong.body
        );
        let wrong = env.get("/api/tasks?queue=work&list=zombies").await;
        assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
        assert!(
            wrong.json()["error"]
                .as_str()
                .unwrap()
                .contains("in_flight")
        );
        for list in ["pending", "dead", "failed"] {
            let bad = env
                .get(&format!(
                    "/tasks?queue=work&list={list}&cursor=not-a-cursor"
                ))
                .await;
            assert_eq!(
                bad.status,
                StatusCode::BAD_REQUEST,
                "{engine:?} {list}: {}",
                bad.body
            );
        }
        let bad = env.get("/api/tasks?queue=work&cursor=zzz").await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_list_shows_its_tasks() {
    for engine in ENGINES {
        let env = Env::new(engine).await;
        // Pending: no worker consumes `work`.
        let a = add::s(1, 2)
            .queue("work")
            .send_with(&env.server)
            .await
            .unwrap();
        let b = echo::s("hi".into())
            .queue("work")
            .priority(7)
            .send_with(&env.server)
            .await
            .unwrap();
        // Delayed.
        let later = add::s(3, 4)
            .queue("work")
            .delay(Duration::from_secs(3600))
            .send_with(&env.server)
            .await
            .unwrap();

        // No queue given: the first queue; list: pending.
        let page = ok(&env, "/tasks").await;
        let shown = linked(&page.body);
        assert_eq!(shown.len(), 2, "{engine:?}: {}", page.body);
        assert!(shown.contains(&a.uuid().to_string()) && shown.contains(&b.uuid().to_string()));
        assert!(page.body.contains("dash_tasks::echo"), "{}", page.body);
        assert!(page.body.contains("class=\"tabs\""), "{}", page.body);
        assert!(
            page.body.contains("class=\"active\">Pending (2)"),
            "{engine:?}: {}",
            page.body
        );
        assert!(page.body.contains("Delayed (1)"), "{}", page.body);
        assert!(page.body.contains(">Delete</button>") && page.body.contains(">Cancel</button>"));
        assert!(!page.body.contains(">Requeue</button>"));

        let api = ok(&env, "/api/tasks?queue=work&list=pending").await.json();
        assert_eq!(api["queue"], "work");
        assert_eq!(api["list"], "pending");
        assert_eq!(api["next"], Value::Null);
        let items = api["items"].as_array().unwrap();
        // Delivery order: the higher priority first.
        assert_eq!(items[0]["uuid"], b.uuid().to_string(), "{api}");
        assert_eq!(items[0]["name"], "dash_tasks::echo");
        assert_eq!(items[0]["priority"], 7);
        assert_eq!(items[0]["queue"], "work");
        assert!(items[0]["created_at"].as_u64().unwrap() > 0);
        assert_eq!(api["lists"][0], json!({"list": "pending", "count": 2}));

        let delayed = ok(&env, "/tasks?queue=work&list=delayed").await;
        assert_eq!(linked(&delayed.body), vec![later.uuid().to_string()]);
        assert!(delayed.body.contains("<th>ETA</th>"), "{}", delayed.body);
        let api = ok(&env, "/api/tasks?queue=work&list=delayed").await.json();
        let eta = api["items"][0]["eta"].as_u64().unwrap();
        assert!(
            eta > api["items"][0]["created_at"].as_u64().unwrap() + 3_000_000,
            "{api}"
        );

        // In flight: fetched and not settled.
        add::s(5, 6)
            .queue("busy")
            .send_with(&env.server)
            .await
            .unwrap();
        let held = take(&env, "busy", 1).await;
        let in_flight = ok(&env, "/tasks?queue=busy&list=in_flight").await;
        assert_eq!(linked(&in_flight.body).len(), 1, "{}", in_flight.body);
        assert!(in_flight.body.contains("Lease until"), "{}", in_flight.body);
        assert!(in_flight.body.contains(">Cancel</button>"));
        assert!(!in_flight.body.contains(">Delete</button>"));
        let api = ok(&env, "/api/tasks?queue=busy&list=in_flight")
            .await
            .json();
        assert!(
            api["items"][0]["lease_deadline"].as_u64().unwrap() > 0,
            "{api}"
        );
        drop(held);

        // Dead: a task no worker registers, and a message that does not decode.
        let unknown = raw("graveyard", "dash_tasks::nobody", &(1,));
        let unknown_id = unknown.uuid;
        env.server.send_batch(vec![unknown]).await.unwrap();
        env.server
            .broker()
            .publish(vec![Outgoing {
                uuid: Uuid::nil(),
                queue: "graveyard".into(),
                eta: None,
                priority: 0,
                payload: vec![0xde, 0xad, 0xbe, 0xef],
            }])
            .await
            .unwrap();
        dead_letter_all(&env, "graveyard", 2).await;
        let dead = ok(&env, "/tasks?queue=graveyard&list=dead").await;
        assert_eq!(
            linked(&dead.body),
            vec![unknown_id.to_string()],
            "{}",
            dead.body
        );
        assert!(
            dead.body.contains("undecodable (4 bytes)"),
            "{engine:?}: {}",
            dead.body
        );
        assert!(
            dead.body.contains("is not registered on any worker"),
            "{}",
            dead.body
        );
        assert!(dead.body.contains(">Requeue</button>"), "{}", dead.body);
        let api = ok(&env, "/api/tasks?queue=graveyard&list=dead")
            .await
            .json();
        let items = api["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{api}");
        let junk = items
            .iter()
            .find(|i| i["decodes"] == false)
            .expect("the junk");
        assert_eq!(junk["name"], Value::Null);
        assert_eq!(junk["size"], 4);
        assert!(
            junk["reason"]
                .as_str()
                .unwrap()
                .starts_with("undecodable message"),
            "{api}"
        );

        // Failed: a task that returns Err.
        let w = worker(&env, "fails");
        let failed = refuse::s("bob".into())
            .queue("fails")
            .send_with(&env.server)
            .await
            .unwrap();
        assert!(failed.get_timeout(WAIT).await.is_err());
        w.shutdown().await.unwrap();
        let id = failed.uuid().to_string();
        let page = eventually("the failure to be listed", || async {
            let page = ok(&env, "/tasks?queue=fails&list=failed").await;
            linked(&page.body).contains(&id).then_some(page)
        })
        .await;
        assert!(page.body.contains("Failed at"), "{}", page.body);
        assert!(page.body.contains("dash_tasks::refuse"), "{}", page.body);
        assert!(
            page.body.contains("for bob"),
            "the error is shown: {}",
            page.body
        );
        let api = ok(&env, "/api/tasks?queue=fails&list=failed").await.json();
        assert!(api["items"][0]["failed_at"].as_u64().unwrap() > 0, "{api}");
        assert_eq!(api["items"][0]["name"], "dash_tasks::refuse");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_walk_every_task_exactly_once() {
    for engine in ENGINES {
        let mut config = DashboardConfig::default();
        config.page_size = 2;
        let env = Env::with_config(engine, config).await;
        let mut sent = HashSet::new();
        for i in 0..7 {
            let r = add::s(i, i)
                .queue("many")
                .send_with(&env.server)
                .await
                .unwrap();
            sent.insert(r.uuid().to_string());
        }
        // The JSON route.
        let (seen, pages) = walk_api(&env, "queue=many&list=pending").await;
        assert_eq!(pages, 4, "{engine:?}");
        assert_eq!(seen.len(), 7, "{engine:?}: {seen:?}");
        assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), sent);

        // The pages, following their Next links.
        let mut seen = Vec::new();
        let mut path = "/tasks?queue=many&list=pending".to_owned();
        let mut pages = 0;
        loop {
            let page = ok(&env, &path).await;
            pages += 1;
            assert!(pages < 100, "the Next links do not end");
            let rows = linked(&page.body);
            assert!(rows.len() <= 2, "{}", page.body);
            seen.extend(rows);
            if pages > 1 {
                assert_eq!(
                    link(&page.body, "first").as_deref(),
                    Some("/tasks?queue=many&list=pending"),
                    "{}",
                    page.body
                );
            } else {
                assert!(link(&page.body, "first").is_none());
            }
            match link(&page.body, "next") {
                Some(next) => path = next,
                None => break,
            }
        }
        assert_eq!(pages, 4);
        assert_eq!(seen.len(), 7, "{engine:?}: {seen:?}");
        assert_eq!(seen.into_iter().collect::<HashSet<_>>(), sent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_name_filter_walks_a_bounded_number_of_pages() {
    for engine in ENGINES {
        let mut config = DashboardConfig::default();
        config.page_size = 2;
        let env = Env::with_config(engine, config).await;
        // 25 adds, then the only echo: a first filtered page scans 10 pages of 2.
        for i in 0..25 {
            add::s(i, 0)
                .queue("mixed")
                .send_with(&env.server)
                .await
                .unwrap();
        }
        let wanted = echo::s("me".into())
            .queue("mixed")
            .send_with(&env.server)
            .await
            .unwrap();

        let first = ok(&env, "/api/tasks?queue=mixed&name=dash_tasks::echo")
            .await
            .json();
        assert_eq!(first["items"], json!([]), "{first}");
        assert_eq!(first["scanned"], 20, "{first}");
        assert!(first["next"].is_string(), "{first}");
        let page = ok(&env, "/tasks?queue=mixed&name=dash_tasks::echo").await;
        assert!(
            page.body.contains("Scanned 20 pending tasks"),
            "{}",
            page.body
        );
        assert!(
            link(&page.body, "next")
                .unwrap()
                .contains("name=dash_tasks%3A%3Aecho")
        );

        let (seen, pages) = walk_api(&env, "queue=mixed&name=dash_tasks::echo").await;
        assert_eq!(seen, vec![wanted.uuid().to_string()], "{engine:?}");
        assert_eq!(pages, 2);

        // A filter that matches fills its page.
        let (seen, _) = walk_api(&env, "queue=mixed&name=dash_tasks::add").await;
        assert_eq!(seen.len(), 25, "{engine:?}");
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 25);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_page_shows_success_failure_and_dead_letters() {
    for engine in ENGINES {
        let env = Env::new(engine).await;
        let w = worker(&env, "jobs");
        let sum = add::s(2, 3)
            .queue("jobs")
            .header("tenant", "acme")
            .send_with(&env.server)
            .await
            .unwrap();
        assert_eq!(sum.get_timeout(WAIT).await.unwrap(), 5);
        let failed = refuse::s("carol".into())
            .queue("jobs")
            .send_with(&env.server)
            .await
            .unwrap();
        assert!(failed.get_timeout(WAIT).await.is_err());
        w.shutdown().await.unwrap();

        let page = ok(&env, &format!("/tasks/{}", sum.uuid())).await;
        let body = &page.body;
        assert!(
            body.contains("class=\"state success\">SUCCESS"),
            "{engine:?}: {body}"
        );
        assert!(body.contains("dash_tasks::add"), "{body}");
        assert!(
            body.contains("Runtime") && body.contains("Started"),
            "{body}"
        );
        assert!(body.contains("add(i64, i64)"), "the schema: {body}");
        assert!(body.contains("href=\"/workers\""), "the worker: {body}");
        assert!(
            body.contains("tenant") && body.contains("acme"),
            "the headers: {body}"
        );
        assert!(
            !body.contains("</button>"),
            "a finished task offers no action: {body}"
        );
        let api = ok(&env, &format!("/api/tasks/{}", sum.uuid())).await.json();
        assert_eq!(api["state"], "SUCCESS");
        assert_eq!(api["result"], 5);
        assert_eq!(api["args"], json!([2, 3]));
        assert!(api["timings"]["runtime_ms"].is_u64(), "{api}");

        let page = ok(&env, &format!("/tasks/{}", failed.uuid())).await;
        assert!(page.body.contains("FAILURE"), "{}", page.body);
        assert!(page.body.contains("<h2>Error</h2>"), "{}", page.body);
        assert!(page.body.contains("for carol"), "{}", page.body);

        let letter = raw("graveyard", "dash_tasks::nobody", &("x",));
        let letter_id = letter.uuid;
        env.server.send_batch(vec![letter]).await.unwrap();
        dead_letter_all(&env, "graveyard", 1).await;
        let page = ok(&env, &format!("/tasks/{letter_id}")).await;
        let body = &page.body;
        assert!(body.contains("In the broker"), "{engine:?}: {body}");
        assert!(body.contains(">dead</a>"), "{body}");
        assert!(body.contains("is not registered on any worker"), "{body}");
        assert!(
            body.contains(">Requeue</button>") && body.contains(">Delete</button>"),
            "{body}"
        );
        assert!(!body.contains(">Cancel</button>"), "{body}");
        let api = ok(&env, &format!("/api/tasks/{letter_id}")).await.json();
        assert_eq!(api["location"]["list"], "dead", "{api}");

        let pending = add::s(1, 1)
            .queue("idle")
            .send_with(&env.server)
            .await
            .unwrap();
        let page = ok(&env, &format!("/tasks/{}", pending.uuid())).await;
        assert!(page.body.contains(">Delete</button>") && page.body.contains(">Cancel</button>"));
        assert!(!page.body.contains(">Requeue</button>"));

        let bad = env.get("/tasks/not-a-uuid").await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
        let bad = env.get("/api/tasks/not-a-uuid").await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
        let unknown = Uuid::new_v4();
        let missing = env.get(&format!("/tasks/{unknown}")).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
        assert!(missing.body.contains("no task"), "{}", missing.body);
        let missing = env.get(&format!("/api/tasks/{unknown}")).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert!(missing.json()["error"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_shown_as_a_bar() {
    for engine in ENGINES {
        let env = Env::new(engine).await;
        let w = worker(&env, "reports");
        let r = report::s(3)
            .queue("reports")
            .send_with(&env.server)
            .await
            .unwrap();
        r.get_timeout(WAIT).await.unwrap();
        w.shutdown().await.unwrap();
        let page = ok(&env, &format!("/tasks/{}", r.uuid())).await;
        assert!(
            page.body.contains("<h2>Progress</h2>"),
            "{engine:?}: {}",
            page.body
        );
        assert!(
            page.body
                .contains("<progress value=\"3\" max=\"4\">75%</progress>"),
            "{engine:?}: {}",
            page.body
        );
        let api = ok(&env, &format!("/api/tasks/{}", r.uuid())).await.json();
        assert_eq!(api["progress"], json!({"done": 3, "of": 4}));
    }
}

/// The dead letters' UUIDs of `queue`, and its pending tasks' UUIDs.
async fn dead_and_pending(env: &Env, queue: &str) -> (Vec<String>, Vec<String>) {
    let ids = |v: Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["uuid"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let dead = ok(env, &format!("/api/tasks?queue={queue}&list=dead"))
        .await
        .json();
    let pending = ok(env, &format!("/api/tasks?queue={queue}&list=pending"))
        .await
        .json();
    (ids(dead), ids(pending))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_requeue_delete_and_cancel() {
    for engine in ENGINES {
        let env = Env::new(engine).await;
        let letters: Vec<RawSignature> = (0..2)
            .map(|i| raw("graveyard", "dash_tasks::nobody", &(i,)))
            .collect();
        let (one, two) = (letters[0].uuid.to_string(), letters[1].uuid.to_string());
        env.server.send_batch(letters).await.unwrap();
        dead_letter_all(&env, "graveyard", 2).await;
        let listing = "/tasks?queue=graveyard&list=dead";

        // Requeue: it leaves the dead letters and is pending again; the flash says so.
        let reply = post_from(
            &env,
            listing,
            &format!("/tasks/{one}/requeue"),
            &[("queue", "graveyard"), ("back", listing)],
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::SEE_OTHER,
            "{engine:?}: {}",
            reply.body
        );
        let location = reply.location();
        assert!(
            location.starts_with("/tasks?queue=graveyard&list=dead&flash="),
            "{location}"
        );
        let back = ok(&env, &location).await;
        assert!(
            back.body
                .contains(&format!("Task {one} requeued to graveyard.")),
            "{}",
            back.body
        );
        let (dead, pending) = dead_and_pending(&env, "graveyard").await;
        assert_eq!(dead, vec![two.clone()], "{engine:?}");
        assert_eq!(pending, vec![one.clone()], "{engine:?}");

        // Delete a dead letter, from its task page.
        let reply = post_from(
            &env,
            &format!("/tasks/{two}"),
            &format!("/tasks/{two}/delete"),
            &[("queue", "graveyard"), ("back", listing)],
        )
        .await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        assert!(ok(&env, &reply.location()).await.body.contains("deleted"));
        let (dead, _) = dead_and_pending(&env, "graveyard").await;
        assert!(dead.is_empty(), "{engine:?}: {dead:?}");

        // Delete a pending task (without a queue: the dashboard finds it).
        let reply = post_from(
            &env,
            "/tasks?queue=graveyard",
            &format!("/tasks/{one}/delete"),
            &[("back", "/tasks?queue=graveyard")],
        )
        .await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        assert!(
            ok(&env, &reply.location())
                .await
                .body
                .contains(&format!("Pending task {one} deleted from graveyard."))
        );
        let (_, pending) = dead_and_pending(&env, "graveyard").await;
        assert!(pending.is_empty(), "{engine:?}: {pending:?}");

        // Cancel a pending task: REVOKED.
        let idle = add::s(1, 1)
            .queue("idle")
            .send_with(&env.server)
            .await
            .unwrap();
        let id = idle.uuid().to_string();
        let reply = post_from(
            &env,
            "/tasks?queue=idle",
            &format!("/tasks/{id}/cancel"),
            &[("queue", "idle"), ("back", &format!("/tasks/{id}"))],
        )
        .await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        assert!(reply.location().starts_with(&format!("/tasks/{id}?flash=")));
        let api = ok(&env, &format!("/api/tasks/{id}")).await.json();
        assert_eq!(api["state"], "REVOKED", "{engine:?}: {api}");
        let page = ok(&env, &format!("/tasks/{id}")).await;
        assert!(
            page.body.contains("class=\"state revoked\""),
            "{}",
            page.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_refuse_a_wrong_token_and_another_origin() {
    for engine in ENGINES {
        let env = Env::new(engine).await;
        let task = add::s(1, 2)
            .queue("safe")
            .send_with(&env.server)
            .await
            .unwrap();
        let id = task.uuid().to_string();
        let path = format!("/tasks/{id}/delete");
        let token = csrf_of(&ok(&env, "/tasks?queue=safe").await.body).unwrap();
        let refusals = [
            env.post_raw(&path, &[("queue", "safe")], &[]).await,
            env.post_raw(&path, &[("queue", "safe"), ("csrf", "0000")], &[])
                .await,
            env.post_raw(
                &path,
                &[("queue", "safe"), ("csrf", &token)],
                &[(header::ORIGIN.as_str(), "https://evil.example")],
            )
            .await,
        ];
        for reply in refusals {
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{engine:?}: {}",
                reply.body
            );
        }
        let (_, pending) = dead_and_pending(&env, "safe").await;
        assert_eq!(pending, vec![id.clone()], "nothing was deleted");
        // The same request with the token and no foreign origin works.
        let reply = env
            .post_raw(&path, &[("queue", "safe"), ("csrf", &token)], &[])
            .await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_data_is_escaped_everywhere() {
    for engine in ENGINES {
        let env = Env::new(engine).await;
        // A hostile name in a listing, a hostile argument and error on a task page.
        env.server
            .send_batch(vec![raw("hostile", SCRIPT, &(SCRIPT,))])
            .await
            .unwrap();
        let w = worker(&env, "victims");
        let failed = refuse::s(SCRIPT.into())
            .queue("victims")
            .send_with(&env.server)
            .await
            .unwrap();
        assert!(failed.get_timeout(WAIT).await.is_err());
        w.shutdown().await.unwrap();
        let id = failed.uuid().to_string();

        let mut pages = vec![
            ok(&env, "/tasks?queue=hostile").await,
            ok(&env, &format!("/tasks/{id}")).await,
            ok(
                &env,
                &format!("/tasks?queue=hostile&name={}", urlencode(SCRIPT)),
            )
            .await,
        ];
        pages.push(
            eventually("the failure to be listed", || async {
                let page = ok(&env, "/tasks?queue=victims&list=failed").await;
                linked(&page.body).contains(&id).then_some(page)
            })
            .await,
        );
        for page in &pages {
            assert!(
                !page.body.contains("<script>window"),
                "{engine:?}: {}",
                page.body
            );
            assert!(
                !page.body.contains("<img src=x"),
                "{engine:?}: {}",
                page.body
            );
            assert!(
                page.body.contains("&lt;script&gt;"),
                "{engine:?}: {}",
                page.body
            );
        }
        assert!(
            pages[1].body.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{}",
            pages[1].body
        );
        assert!(pages[3].body.contains("&lt;img src=x"), "{}", pages[3].body);

        for path in [
            format!("/api/tasks/{id}"),
            "/api/tasks?queue=hostile".to_owned(),
            "/api/tasks?queue=victims&list=failed".to_owned(),
        ] {
            let reply = ok(&env, &path).await;
            assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json");
            assert!(!reply.body.contains('<'), "{path}: {}", reply.body);
            assert!(
                reply.body.contains("\\u003cscript\\u003e"),
                "{path}: {}",
                reply.body
            );
        }
        let api = ok(&env, &format!("/api/tasks/{id}")).await.json();
        assert_eq!(api["args"], json!([SCRIPT]), "the data itself is intact");
        assert!(
            api["error"]
                .as_str()
                .unwrap()
                .contains("<img src=x onerror=alert(1)>")
        );
    }
}

fn urlencode(text: &str) -> String {
    serde_urlencoded::to_string([("", text)]).unwrap()[1..].to_owned()
}

/// Not a check, a measurement (no timing is asserted): how long the listing, the
/// filtered listing and a task page take with 10 and with 1,000,000 pending tasks, and
/// how large a full listing page is. Run it with
/// `cargo test --release -p machinery-dashboard --test tasks -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: sends a million tasks"]
async fn measure_a_listing_of_a_million() {
    for engine in ENGINES {
        let env = Env::new(engine).await;
        let mut sent = 0usize;
        let mut last = None;
        for target in [10usize, 1_000_000] {
            while sent < target {
                let n = (target - sent).min(10_000);
                let batch: Vec<RawSignature> = (0..n)
                    .map(|i| raw("big", "dash_tasks::add", &(i, 1)))
                    .collect();
                last = batch.last().map(|r| r.uuid);
                env.server.send_batch(batch).await.unwrap();
                sent += n;
            }
            let last = last.unwrap();
            for path in [
                "/tasks?queue=big".to_owned(),
                "/api/tasks?queue=big".to_owned(),
                "/tasks?queue=big&name=dash_tasks::echo".to_owned(),
                format!("/tasks/{last}"),
            ] {
                ok(&env, &path).await;
                let start = Instant::now();
                let runs = 5;
                let mut bytes = 0;
                for _ in 0..runs {
                    bytes = ok(&env, &path).await.body.len();
                }
                println!(
                    "{engine:?} {target:>9} pending  GET {path:<45} {:>8.2} ms  {bytes} bytes",
                    start.elapsed().as_secs_f64() * 1000.0 / f64::from(runs)
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_and_forms_follow_the_mount_path() {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use machinery_dashboard::Dashboard;
    use tower::ServiceExt;

    for engine in ENGINES {
        let env = Env::new(engine).await;
        let task = add::s(1, 2)
            .queue("work")
            .send_with(&env.server)
            .await
            .unwrap();
        let dashboard = Dashboard::new(env.server.inspect().unwrap(), DashboardConfig::default());
        let app: axum::Router = axum::Router::new().nest("/admin", dashboard.router());
        let get = |path: String| {
            let app = app.clone();
            async move {
                let response = app
                    .oneshot(Request::get(&path).body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK, "{path}");
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                String::from_utf8_lossy(&bytes).into_owned()
            }
        };
        let id = task.uuid();
        let listing = get("/admin/tasks?queue=work".into()).await;
        assert!(
            listing.contains(&format!("class=\"task\" href=\"/admin/tasks/{id}\"")),
            "{listing}"
        );
        assert!(
            listing.contains(&format!("action=\"/admin/tasks/{id}/delete\"")),
            "{listing}"
        );
        assert!(
            listing.contains("href=\"/admin/tasks?queue=work&amp;list=dead\""),
            "{listing}"
        );
        let page = get(format!("/admin/tasks/{id}")).await;
        assert!(
            page.contains(&format!("action=\"/admin/tasks/{id}/cancel\"")),
            "{page}"
        );
        assert!(page.contains("href=\"/admin/tasks?queue=work\""), "{page}");
    }
}

/// A failure whose stored state was overwritten with garbage is one row saying so; the
/// rest of the listing still shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_failure_state_is_one_row_not_a_broken_listing() {
    let env = Env::new(common::Engine::Redis).await;
    let w = worker(&env, "garbled");
    let mut ids = Vec::new();
    for who in ["dan", "erin"] {
        let failed = refuse::s(who.into())
            .queue("garbled")
            .send_with(&env.server)
            .await
            .unwrap();
        assert!(failed.get_timeout(WAIT).await.is_err());
        ids.push(failed.uuid());
    }
    w.shutdown().await.unwrap();
    eventually("both failures to be listed", || async {
        let page = ok(&env, "/tasks?queue=garbled&list=failed").await;
        ids.iter()
            .all(|id| linked(&page.body).contains(&id.to_string()))
            .then_some(())
    })
    .await;
    let mut con = redis::Client::open(env.redis.as_ref().unwrap().url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = format!("machinery:{{q:garbled}}:state:{}", ids[0]);
    let () = redis::cmd("SET")
        .arg(&key)
        .arg(b"\xc1 not msgpack".as_slice())
        .query_async(&mut con)
        .await
        .unwrap();
    let page = ok(&env, "/tasks?queue=garbled&list=failed").await;
    assert!(page.body.contains("does not decode"), "{}", page.body);
    assert!(
        page.body.contains("for erin"),
        "the other row still shows: {}",
        page.body
    );
    assert_eq!(
        env.get("/api/tasks?queue=garbled&list=failed").await.status,
        StatusCode::OK
    );
}
