//! The Overview, Queues, Workers, Registered and Periodic pages and their JSON twins,
//! with the effects of their actions, on both engines.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{ENGINES, Engine, Env};
use machinery_core::inspect::{RegisteredTask, RunningTask, WorkerInfo};
use machinery_core::periodic::{Schedule, Scheduler};
use machinery_core::{Config, DeadLetterReason, RawSignature, Server, TaskError, Worker, task};
use machinery_dashboard::{Dashboard, DashboardConfig};
use serde_json::Value;
use tests::RedisServer;
use uuid::Uuid;

#[task(name = "dash_pages::ok")]
async fn ok_task(n: u32) -> Result<u32, TaskError> {
    Ok(n)
}

#[task(name = "dash_pages::fail")]
async fn fail_task(reason: String) -> Result<(), TaskError> {
    Err(TaskError::msg(reason))
}

/// Keys whose `hold` tasks may finish.
static RELEASED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

#[task(name = "dash_pages::hold")]
async fn hold(key: String) -> Result<(), TaskError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !RELEASED.lock().unwrap().contains(&key) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A dashboard over a fresh `engine` server whose workers beat every second, so that
/// the registry shows running tasks soon.
async fn env(engine: Engine) -> Env {
    let mut config = Config::default();
    config.worker_heartbeat = Duration::from_secs(1);
    let (server, redis) = match engine {
        Engine::Memory => (Server::memory_with(config), None),
        Engine::Redis => {
            let redis = RedisServer::start();
            config.broker = redis.url();
            config.result_backend = Some(redis.url());
            let server = Server::from_config(config).await.expect("connect to redis");
            (server, Some(redis))
        }
    };
    let router = Dashboard::new(server.inspect().unwrap(), DashboardConfig::default()).router();
    Env {
        engine,
        server,
        router,
        redis,
    }
}

/// Polls `probe` until it gives `Some`, for up to 20 s (heartbeats and statistics are
/// written periodically).
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET path`, which must answer 200; the reply's body.
async fn page(env: &Env, path: &str) -> String {
    let reply = env.get(path).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{:?} GET {path}: {}",
        env.engine,
        reply.body
    );
    reply.body
}

/// `GET path` (a JSON route), which must answer 200; the JSON.
async fn api(env: &Env, path: &str) -> Value {
    let reply = env.get(path).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{:?} GET {path}: {}",
        env.engine,
        reply.body
    );
    reply.json()
}

/// `POST path` with `fields` (and the CSRF token), which must redirect back to `back`.
async fn act(env: &Env, path: &str, fields: &[(&str, &str)], back: &str) {
    let reply = env.post(path, fields).await;
    assert_eq!(
        reply.status,
        StatusCode::SEE_OTHER,
        "{:?} POST {path}: {}",
        env.engine,
        reply.body
    );
    assert!(
        reply.location().starts_with(&format!("{back}?flash=")),
        "{}",
        reply.location()
    );
}

fn raw(queue: &str, name: &str, args: &impl serde::Serialize) -> RawSignature {
    let mut raw = RawSignature::new(name, rmp_serde::to_vec(args).unwrap());
    raw.routing_key = queue.to_owned();
    raw
}

/// `count` messages in `queue`, the first `dead` of them moved to its dead letters.
async fn seed(server: &Server, queue: &str, count: usize, dead: usize) -> Vec<Uuid> {
    let raws: Vec<RawSignature> = (0..count)
        .map(|i| raw(queue, "dash_pages::seeded", &(i,)))
        .collect();
    let uuids = raws.iter().map(|r| r.uuid).collect();
    server.send_batch(raws).await.unwrap();
    if dead > 0 {
        let broker = server.broker();
        let deliveries = broker
            .fetch(&[queue.to_owned()], dead, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(deliveries.len(), dead);
        for d in &deliveries {
            let reason = DeadLetterReason::NotRegistered {
                name: "dash_pages::seeded".into(),
                deliveries: 4,
            };
            broker.dead_letter(d, &reason).await.unwrap();
        }
    }
    uuids
}

fn queue<'a>(queues: &'a Value, name: &str) -> &'a Value {
    queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == name)
        .unwrap_or_else(|| panic!("no queue {name} in {queues}"))
}

/// A worker registry record, as a worker writes it every heartbeat.
fn record(id: &str, name: &str, tasks: &[(&str, &str, u64)]) -> WorkerInfo {
    WorkerInfo {
        id: id.into(),
        name: name.into(),
        host: "build-host".into(),
        pid: 4242,
        version: "0.0.0".into(),
        queues: vec!["dash_pages_q".into()],
        concurrency: 2,
        prefetch: 2,
        tasks: tasks
            .iter()
            .map(|&(name, schema, fingerprint)| RegisteredTask {
                name: name.into(),
                schema: schema.into(),
                fingerprint,
            })
            .collect(),
        started_at: 1_700_000_000_000,
        heartbeat_at: 1_700_000_000_000,
        running: Vec::<RunningTask>::new(),
        processed: 0,
        failed: 0,
    }
}

/// The y coordinates of the polyline of `class` in the chart of `html`.
fn chart_ys(html: &str, class: &str) -> Vec<f64> {
    let marker = format!("<polyline class=\"{class}\" points=\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {class} line"))
        + marker.len();
    let rest = &html[at..];
    rest[..rest.find('"').unwrap()]
        .split(' ')
        .map(|p| p.split_once(',').unwrap().1.parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_charts_the_tasks_a_worker_ran_and_lists_the_failure() {
    for engine in ENGINES {
        let env = env(engine).await;
        let fresh = api(&env, "/api/overview").await;
        assert_eq!(fresh["hours"], 3);
        assert_eq!(fresh["minutes"].as_array().unwrap().len(), 180);
        assert_eq!(fresh["totals"]["processed"], 0);

        let worker = Worker::new()
            .task(ok_task::ENTRY)
            .task(fail_task::ENTRY)
            .queue("dash_pages_work")
            .server(&env.server)
            .spawn()
            .unwrap();
        for n in 0..3 {
            let done = ok_task::s(n)
                .queue("dash_pages_work")
                .send_with(&env.server)
                .await
                .unwrap();
            assert_eq!(done.get_timeout(Duration::from_secs(10)).await.unwrap(), n);
        }
        let failed = fail_task::s("mailbox <img src=x onerror=alert(3)> full".into())
            .queue("dash_pages_work")
            .send_with(&env.server)
            .await
            .unwrap();
        assert!(failed.get_timeout(Duration::from_secs(10)).await.is_err());
        let failed_id = failed.uuid().to_string();

        let data = eventually(
            "the statistics and the failure of the four runs",
            async || {
                let data = api(&env, "/api/overview").await;
                let listed = data["failures"]
                    .as_array()?
                    .iter()
                    .any(|f| f["uuid"] == failed_id.as_str());
                (data["totals"]["processed"].as_u64()? >= 4 && listed).then_some(data)
            },
        )
        .await;
        worker.shutdown().await.unwrap();

        let minutes = data["minutes"].as_array().unwrap();
        assert_eq!(
            minutes.len(),
            180,
            "{engine:?}: every minute, zeros included"
        );
        let sum = |key: &str| {
            minutes
                .iter()
                .map(|m| m[key].as_u64().unwrap())
                .sum::<u64>()
        };
        assert_eq!((sum("processed"), sum("failed")), (4, 1), "{engine:?}");
        let last = minutes.last().unwrap()["minute"].as_u64().unwrap();
        assert_eq!(
            last,
            data["now"].as_u64().unwrap() / 60_000,
            "{engine:?}: the window ends now"
        );
        assert_eq!(data["totals"]["failed"], 1);
        assert_eq!(data["current"]["workers"], 1);
        let failure = &data["failures"][0];
        assert_eq!(failure["name"], "dash_pages::fail");
        assert_eq!(failure["queue"], "dash_pages_work");
        assert_eq!(failure["list"], "failed");
        assert!(
            failure["reason"].as_str().unwrap().contains("mailbox <img"),
            "{failure}"
        );

        let html = page(&env, "/").await;
        assert!(html.contains("<svg class=\"chart\""), "{html}");
        let (processed, failed_ys) = (chart_ys(&html, "processed"), chart_ys(&html, "failed"));
        assert_eq!(processed.len(), 180);
        let baseline = processed[0];
        assert!(
            processed.iter().any(|&y| y < baseline),
            "{engine:?}: the processed line rises"
        );
        assert!(failed_ys.iter().any(|&y| y < baseline), "{engine:?}");
        let failures = &html[html.find("<section id=\"failures\">").expect("failures")..];
        assert!(
            failures.contains(&format!("<a class=\"task\" href=\"/tasks/{failed_id}\">")),
            "{failures}"
        );
        assert!(failures.contains("dash_pages::fail"));
        assert!(
            !html.contains("<img src=x") && html.contains("mailbox &lt;img src=x"),
            "{engine:?}: the error is escaped"
        );
        assert!(html.contains("href=\"/queues\"") && html.contains("href=\"/workers\""));
        assert!(html.contains("dash_pages_work"));

        let one = api(&env, "/api/overview?hours=1").await;
        assert_eq!(one["minutes"].as_array().unwrap().len(), 60);
        assert!(page(&env, "/?hours=24").await.contains(">times in UTC<"));
        for bad in ["0", "25", "x", "-1"] {
            let reply = env.get(&format!("/?hours={bad}")).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "hours={bad}");
            assert!(reply.body.contains("from 1 to 24"), "{}", reply.body);
            let reply = env.get(&format!("/api/overview?hours={bad}")).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "hours={bad}");
            assert!(reply.json()["error"].as_str().unwrap().contains("1 to 24"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_paused_resumed_and_purged_only_when_confirmed() {
    for engine in ENGINES {
        let env = env(engine).await;
        let q = "dash_pages_q";
        seed(&env.server, q, 5, 2).await;
        let queues = api(&env, "/api/queues").await;
        let row = queue(&queues, q);
        assert_eq!(
            (&row["ready"], &row["dead"], &row["paused"]),
            (&3.into(), &2.into(), &false.into()),
            "{engine:?}"
        );

        let html = page(&env, "/queues").await;
        for needle in [
            "href=\"/tasks?queue=dash_pages_q&amp;list=pending\"",
            "href=\"/tasks?queue=dash_pages_q&amp;list=dead\"",
            "action=\"/queues/dash_pages_q/pause\"",
            "action=\"/queues/dash_pages_q/purge\"",
            "name=\"what\" value=\"ready\"",
            "name=\"what\" value=\"dead\"",
            "name=\"confirm\"",
            "data-confirm=\"Delete every ready and delayed task of dash_pages_q?",
        ] {
            assert!(html.contains(needle), "{engine:?}: no {needle} in {html}");
        }

        let back = [("back", "/queues")];
        act(&env, &format!("/queues/{q}/pause"), &back, "/queues").await;
        assert_eq!(queue(&api(&env, "/api/queues").await, q)["paused"], true);
        let html = page(&env, "/queues").await;
        assert!(
            html.contains("action=\"/queues/dash_pages_q/resume\""),
            "{html}"
        );
        act(&env, &format!("/queues/{q}/resume"), &back, "/queues").await;
        assert_eq!(queue(&api(&env, "/api/queues").await, q)["paused"], false);

        for confirm in [&[][..], &[("confirm", "dash_pages")][..]] {
            let mut fields = vec![("back", "/queues"), ("what", "ready")];
            fields.extend_from_slice(confirm);
            let reply = env.post(&format!("/queues/{q}/purge"), &fields).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{engine:?}");
            assert!(reply.body.contains("type the queue"), "{}", reply.body);
        }
        let row = queue(&api(&env, "/api/queues").await, q).clone();
        assert_eq!((&row["ready"], &row["dead"]), (&3.into(), &2.into()));

        let purge = [("back", "/queues"), ("what", "ready"), ("confirm", q)];
        act(&env, &format!("/queues/{q}/purge"), &purge, "/queues").await;
        let row = queue(&api(&env, "/api/queues").await, q).clone();
        assert_eq!((&row["ready"], &row["dead"]), (&0.into(), &2.into()));

        let purge = [("back", "/queues"), ("what", "dead"), ("confirm", q)];
        act(&env, &format!("/queues/{q}/purge"), &purge, "/queues").await;
        let row = queue(&api(&env, "/api/queues").await, q).clone();
        assert_eq!((&row["ready"], &row["dead"]), (&0.into(), &0.into()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_page_shows_a_worker_and_the_task_it_runs() {
    for engine in ENGINES {
        let env = env(engine).await;
        let html = page(&env, "/workers").await;
        assert!(html.contains("No workers alive"), "{html}");

        let worker = Worker::new()
            .task(hold::ENTRY)
            .name("dash-pages-worker")
            .queue("dash_pages_hold")
            .concurrency(3)
            .server(&env.server)
            .spawn()
            .unwrap();
        let key = format!("workers-{engine:?}");
        let held = hold::s(key.clone())
            .queue("dash_pages_hold")
            .send_with(&env.server)
            .await
            .unwrap();
        let uuid = held.uuid().to_string();
        let data = eventually("the worker to report its running task", async || {
            let data = api(&env, "/api/workers").await;
            let w = data["workers"].as_array()?.first()?.clone();
            let runs = w["running"]
                .as_array()?
                .iter()
                .any(|r| r["uuid"] == uuid.as_str());
            runs.then_some(data)
        })
        .await;
        let w = &data["workers"][0];
        assert_eq!(w["name"], "dash-pages-worker");
        assert_eq!(w["queues"], serde_json::json!(["dash_pages_hold"]));
        assert_eq!(w["concurrency"], 3);
        assert_eq!(w["pid"], std::process::id());
        assert_eq!(w["running"][0]["name"], "dash_pages::hold");
        assert!(w["running"][0]["running_ms"].as_u64().is_some());

        let html = page(&env, "/workers").await;
        for needle in [
            "dash-pages-worker",
            w["id"].as_str().unwrap(),
            &format!("<a class=\"task\" href=\"/tasks/{uuid}\">"),
            "dash_pages::hold",
            "running for",
            "ago",
        ] {
            assert!(html.contains(needle), "{engine:?}: no {needle} in {html}");
        }
        let overview = page(&env, "/").await;
        assert!(overview.contains("dash-pages-worker"), "{overview}");

        RELEASED.lock().unwrap().insert(key);
        held.get_timeout(Duration::from_secs(10)).await.unwrap();
        worker.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_tasks_show_schemas_and_highlight_a_mismatch() {
    for engine in ENGINES {
        let env = env(engine).await;
        let worker = Worker::new()
            .task(ok_task::ENTRY)
            .name("dash-pages-live")
            .queue("dash_pages_reg")
            .server(&env.server)
            .spawn()
            .unwrap();
        let data = eventually("the worker's record", async || {
            let data = api(&env, "/api/registered").await;
            (data["workers"] == 1).then_some(data)
        })
        .await;
        assert_eq!(data["mismatches"], 0);
        let ok = &data["tasks"][0];
        assert_eq!(ok["name"], "dash_pages::ok");
        assert_eq!(ok["mismatch"], false);
        let schema = ok["schemas"][0]["schema"].as_str().unwrap().to_owned();
        assert!(schema.contains("u32"), "{schema}");
        let hex = ok["schemas"][0]["fingerprint_hex"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(hex.len(), 16);
        let html = page(&env, "/registered").await;
        assert!(
            html.contains("dash_pages::ok") && html.contains(&hex),
            "{engine:?}: {html}"
        );
        assert!(!html.contains("class=\"mismatch\""), "{html}");
        worker.shutdown().await.unwrap();

        // A deploy in progress: two workers with different schemas for one name.
        let admin = env.server.admin().unwrap();
        let ttl = Duration::from_secs(120);
        let common = ("dash_pages::same", "same() -> ()", 7);
        admin
            .register_worker(
                &record(
                    "old-id",
                    "old-worker",
                    &[("dash_pages::send", "send(Vec<String>)", 1), common],
                ),
                ttl,
            )
            .await
            .unwrap();
        admin
            .register_worker(
                &record(
                    "new-id",
                    "new-worker",
                    &[("dash_pages::send", "send(Vec<String>, u32)", 2), common],
                ),
                ttl,
            )
            .await
            .unwrap();
        let data = eventually("both records, the live worker gone", async || {
            let data = api(&env, "/api/registered").await;
            (data["workers"] == 2).then_some(data)
        })
        .await;
        assert_eq!(data["mismatches"], 1, "{data}");
        let send = data["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "dash_pages::send")
            .unwrap();
        assert_eq!(send["mismatch"], true);
        let schemas: Vec<(&str, &str)> = send["schemas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["schema"].as_str().unwrap(),
                    s["workers"][0]["name"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            schemas,
            [
                ("send(Vec<String>)", "old-worker"),
                ("send(Vec<String>, u32)", "new-worker")
            ]
        );

        let html = page(&env, "/registered").await;
        let rows: Vec<&str> = html.split("<tr").filter(|r| r.contains("send(")).collect();
        assert_eq!(rows.len(), 2, "{html}");
        for row in &rows {
            assert!(row.starts_with(" class=\"mismatch\""), "{engine:?}: {row}");
        }
        assert!(rows[0].contains("send(Vec&lt;String&gt;)") && rows[0].contains("old-worker"));
        assert!(rows[1].contains("send(Vec&lt;String&gt;, u32)") && rows[1].contains("new-worker"));
        assert!(html.contains("Schema mismatch"), "{html}");
        let same = html
            .split("<tr")
            .find(|r| r.contains("same() -&gt; ()"))
            .expect("same row");
        assert!(!same.contains("mismatch"), "{same}");
        assert!(same.contains("old-worker") && same.contains("new-worker"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_entries_are_paused_resumed_and_removed() {
    for engine in ENGINES {
        let env = env(engine).await;
        let data = api(&env, "/api/periodic").await;
        assert_eq!(data["unavailable"], Value::Null, "{engine:?}: {data}");
        assert!(data["entries"].as_array().unwrap().is_empty());
        assert!(
            page(&env, "/periodic")
                .await
                .contains("No periodic entries")
        );

        let scheduler = Scheduler::new(&env.server)
            .await
            .unwrap()
            .add(
                "dash nightly/report",
                Schedule::parse("0 3 * * *").unwrap(),
                ok_task::s(1),
            )
            .unwrap()
            .spawn();
        let data = eventually("the entry to be registered", async || {
            let data = api(&env, "/api/periodic").await;
            (!data["entries"].as_array()?.is_empty()).then_some(data)
        })
        .await;
        scheduler.shutdown().await.unwrap();
        let entry = &data["entries"][0];
        assert_eq!(entry["name"], "dash nightly/report");
        assert_eq!(entry["spec"], "0 3 * * *");
        assert_eq!(entry["timezone"], "UTC");
        assert_eq!(entry["paused"], false);
        assert!(entry["next_run"].as_u64().unwrap() > 0, "{entry}");

        let path = "/periodic/dash%20nightly%2Freport";
        let html = page(&env, "/periodic").await;
        for needle in [
            "dash nightly/report",
            "0 3 * * *",
            &format!("action=\"{path}/pause\""),
            &format!("action=\"{path}/remove\""),
            "data-confirm=\"Remove periodic entry dash nightly/report?",
        ] {
            assert!(html.contains(needle), "{engine:?}: no {needle} in {html}");
        }

        // The test client reads the CSRF token off the Queues page's forms.
        seed(&env.server, "dash_pages_periodic", 1, 0).await;
        let back = [("back", "/periodic")];
        act(&env, &format!("{path}/pause"), &back, "/periodic").await;
        assert_eq!(
            api(&env, "/api/periodic").await["entries"][0]["paused"],
            true
        );
        assert!(
            page(&env, "/periodic")
                .await
                .contains(&format!("action=\"{path}/resume\""))
        );
        act(&env, &format!("{path}/resume"), &back, "/periodic").await;
        assert_eq!(
            api(&env, "/api/periodic").await["entries"][0]["paused"],
            false
        );
        act(&env, &format!("{path}/remove"), &back, "/periodic").await;
        let data = api(&env, "/api/periodic").await;
        assert!(data["entries"].as_array().unwrap().is_empty(), "{data}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_worker_and_task_names_are_escaped_everywhere() {
    const EVIL_QUEUE: &str = "<script>alert(1)</script>";
    const EVIL_WORKER: &str = "<script>alert(2)</script>";
    for engine in ENGINES {
        let env = env(engine).await;
        seed(&env.server, EVIL_QUEUE, 2, 1).await;
        let mut evil = record(
            "<script>alert(4)</script>",
            EVIL_WORKER,
            &[("<script>alert(3)</script>", "<script>x</script>()", 9)],
        );
        evil.queues = vec![EVIL_QUEUE.into()];
        evil.running = vec![RunningTask {
            uuid: Uuid::now_v7(),
            name: "<script>alert(5)</script>".into(),
            queue: EVIL_QUEUE.into(),
            started_at: 1_700_000_000_000,
        }];
        env.server
            .admin()
            .unwrap()
            .register_worker(&evil, Duration::from_secs(120))
            .await
            .unwrap();

        for path in ["/", "/queues", "/workers", "/registered"] {
            let html = page(&env, path).await;
            assert!(
                !html.contains("<script>alert") && !html.contains("<script>x"),
                "{engine:?} {path}: raw tag in {html}"
            );
            assert!(
                html.contains("&lt;script&gt;alert("),
                "{engine:?} {path}: nothing escaped in {html}"
            );
        }
        let queues = page(&env, "/queues").await;
        let encoded = "/queues/%3Cscript%3Ealert%281%29%3C%2Fscript%3E";
        assert!(
            queues.contains(&format!("action=\"{encoded}/pause\"")),
            "{queues}"
        );

        // The encoded path reaches the queue of that name.
        act(
            &env,
            &format!("{encoded}/pause"),
            &[("back", "/queues")],
            "/queues",
        )
        .await;
        assert_eq!(
            queue(&api(&env, "/api/queues").await, EVIL_QUEUE)["paused"],
            true
        );
        let purge = [("what", "dead"), ("confirm", EVIL_QUEUE)];
        act(&env, &format!("{encoded}/purge"), &purge, "/").await;
        assert_eq!(
            queue(&api(&env, "/api/queues").await, EVIL_QUEUE)["dead"],
            0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_and_its_assets_weigh_under_200_kb() {
    for engine in ENGINES {
        let env = env(engine).await;
        for i in 0..20 {
            seed(&env.server, &format!("dash_pages_weight_{i:02}"), 3, 1).await;
        }
        let overview = page(&env, "/?hours=24").await;
        let style = page(&env, "/assets/style.css").await;
        let script = page(&env, "/assets/app.js").await;
        let total = overview.len() + style.len() + script.len();
        eprintln!(
            "{engine:?}: overview (24 h, 20 queues, 10 failures) {} B + style.css {} B + app.js {} B = {total} B",
            overview.len(),
            style.len(),
            script.len()
        );
        assert!(total < 200_000, "{engine:?}: {total} bytes");
    }
}

/// One unreadable record in Redis (a statistics counter that is not a number) leaves
/// that part of the overview out with a warning; the rest still shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_statistic_is_a_warning_not_a_broken_overview() {
    let env = env(Engine::Redis).await;
    let worker = Worker::new()
        .task(ok_task::ENTRY)
        .queue("dash_pages_junk")
        .server(&env.server)
        .spawn()
        .unwrap();
    let done = ok_task::s(1)
        .queue("dash_pages_junk")
        .send_with(&env.server)
        .await
        .unwrap();
    done.get_timeout(Duration::from_secs(10)).await.unwrap();
    eventually("the run's statistics", async || {
        let data = api(&env, "/api/overview").await;
        (data["totals"]["processed"].as_u64()? >= 1).then_some(())
    })
    .await;
    worker.shutdown().await.unwrap();

    let url = env.redis.as_ref().unwrap().url();
    let mut con = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*stats:*")
        .query_async(&mut con)
        .await
        .unwrap();
    let mut corrupted = 0;
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut con)
            .await
            .unwrap();
        if kind != "hash" {
            continue;
        }
        let fields: Vec<String> = redis::cmd("HKEYS")
            .arg(&key)
            .query_async(&mut con)
            .await
            .unwrap();
        for field in fields {
            let () = redis::cmd("HSET")
                .arg(&key)
                .arg(&field)
                .arg("not a number")
                .query_async(&mut con)
                .await
                .unwrap();
            corrupted += 1;
        }
    }
    assert!(corrupted > 0, "no statistics hash found to corrupt");

    let reply = env.get("/api/overview").await;
    assert_eq!(reply.status, axum::http::StatusCode::OK, "{}", reply.body);
    let data = reply.json();
    let warnings = data["warnings"].as_array().expect("a warning");
    assert!(
        warnings[0].as_str().unwrap().contains("statistics"),
        "{warnings:?}"
    );
    assert_eq!(
        data["queues"].as_array().unwrap().len(),
        1,
        "the rest still shows"
    );
    let html = page(&env, "/").await;
    assert!(html.contains("class=\"warn\""), "{html}");
}
