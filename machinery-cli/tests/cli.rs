//! The `machinery` binary, run for real against a private `redis-server`: each
//! command's output (JSON parsed, tables read) after tasks are seeded through the
//! library, and the errors and exit statuses of wrong input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use machinery_core::periodic::{Schedule, Scheduler};
use machinery_core::{Config, DeadLetterReason, RawSignature, Server, TaskError, Worker, task};
use machinery_redis as _;
use serde_json::Value;
use tests::RedisServer;
use uuid::Uuid;

#[task(name = "cli_tests::hold")]
async fn hold(ms: u64) -> Result<u64, TaskError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(ms)
}

#[task(name = "cli_tests::report")]
async fn report(ctx: machinery_core::TaskContext, done: u32) -> Result<(), TaskError> {
    ctx.set_progress(serde_json::json!({"done": done, "of": 4, "stage": "copy\u{1b}[31m"}));
    Ok(())
}

#[task(name = "cli_tests::refuse")]
async fn refuse(reason: String) -> Result<(), TaskError> {
    Err(TaskError::msg(reason))
}

/// The binary with `args`, on `url`, with no `MACHINERY_*` variable of this process.
fn machinery_on(url: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_machinery"));
    for (name, _) in std::env::vars() {
        if name.starts_with("MACHINERY_") {
            cmd.env_remove(name);
        }
    }
    cmd.arg("--broker").arg(url).args(args);
    let mut run = || cmd.output().expect("run machinery");
    // Blocking here must not stall a worker running on this test's runtime.
    match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::task::block_in_place(run),
        Err(_) => run(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command that must succeed; its stdout.
fn ok(redis: &RedisServer, args: &[&str]) -> String {
    let out = machinery_on(&redis.url(), args);
    assert!(
        out.status.success(),
        "machinery {args:?} failed ({}): {}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs a command with `--json` that must succeed; its output parsed.
fn json(redis: &RedisServer, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let stdout = ok(redis, &all);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}"))
}

/// Runs a command that must fail with `status`; its stderr, which must be one clear
/// error and no panic.
fn fails_on(url: &str, args: &[&str], status: i32) -> String {
    let out = machinery_on(url, args);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(status),
        "machinery {args:?}: stdout {} stderr {stderr}",
        text(&out.stdout)
    );
    assert!(stderr.contains("error:"), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    stderr
}

fn fails(redis: &RedisServer, args: &[&str], status: i32) -> String {
    fails_on(&redis.url(), args, status)
}

async fn connect(redis: &RedisServer) -> Server {
    connect_with(redis, &[]).await
}

async fn connect_with(redis: &RedisServer, vars: &[(&str, &str)]) -> Server {
    let vars = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .chain([("MACHINERY_BROKER".to_owned(), redis.url())]);
    let config = Config::from_sources(None, vars).unwrap();
    Server::from_config(config).await.unwrap()
}

fn signature(queue: &str, name: &str, args: &impl serde::Serialize) -> RawSignature {
    let mut raw = RawSignature::new(name, rmp_serde::to_vec(args).unwrap());
    raw.routing_key = queue.to_owned();
    raw
}

/// Polls `probe` until it returns `Some`, for up to 20 s (worker heartbeats and
/// statistics flushes are periodic).
fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn queue<'a>(queues: &'a Value, name: &str) -> &'a Value {
    queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == name)
        .unwrap_or_else(|| panic!("no queue {name} in {queues}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_pages_and_one_task() {
    let redis = RedisServer::start();
    let server = connect(&redis).await;
    let first = signature("emails", "mail::send", &("ann@example.com", 3));
    let second = signature("emails", "mail::send", &("bob@example.com", 4));
    let mut later = signature("emails", "mail::digest", &(7,));
    later.eta = Some(first.created_at + 3_600_000);
    let (u1, u2, u3) = (first.uuid, second.uuid, later.uuid);
    server.send_batch(vec![first, second, later]).await.unwrap();

    let queues = json(&redis, &["queues"]);
    let emails = queue(&queues, "emails");
    assert_eq!(emails["ready"], 2);
    assert_eq!(emails["delayed"], 1);
    assert_eq!(emails["in_flight"], 0);
    assert_eq!(emails["dead"], 0);
    assert_eq!(emails["paused"], false);
    let table = ok(&redis, &["queues"]);
    assert!(
        table.contains("emails") && table.contains("READY"),
        "{table}"
    );

    // Pages of one, following the cursor.
    let page = json(
        &redis,
        &[
            "tasks", "ls", "--queue", "emails", "--state", "pending", "--limit", "1",
        ],
    );
    assert_eq!(page["state"], "pending");
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["uuid"], u1.to_string());
    assert_eq!(page["items"][0]["name"], "mail::send");
    let cursor = page["next"].as_str().expect("a next page").to_owned();
    let page = json(
        &redis,
        &[
            "tasks", "ls", "--queue", "emails", "--state", "pending", "--limit", "1", "--cursor",
            &cursor,
        ],
    );
    assert_eq!(page["items"][0]["uuid"], u2.to_string());
    if let Some(next) = page["next"].as_str() {
        let last = json(
            &redis,
            &[
                "tasks", "ls", "--queue", "emails", "--state", "pending", "--cursor", next,
            ],
        );
        assert!(last["items"].as_array().unwrap().is_empty(), "{last}");
        assert!(last["next"].is_null());
    }
    let delayed = json(
        &redis,
        &["tasks", "ls", "--queue", "emails", "--state", "delayed"],
    );
    assert_eq!(delayed["items"][0]["uuid"], u3.to_string());
    assert!(delayed["items"][0]["eta"].as_u64().unwrap() > 0);
    assert!(delayed["next"].is_null());
    let table = ok(
        &redis,
        &[
            "tasks", "ls", "--queue", "emails", "--state", "pending", "--limit", "1",
        ],
    );
    assert!(table.contains(&u1.to_string()), "{table}");
    assert!(table.contains("next page: --cursor "), "{table}");
    // --all streams every page as JSON Lines.
    let lines = ok(
        &redis,
        &[
            "--json", "tasks", "ls", "--queue", "emails", "--state", "pending", "--all", "--limit",
            "1",
        ],
    );
    let uuids: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["uuid"].clone())
        .collect();
    assert_eq!(uuids, [u1.to_string(), u2.to_string()]);

    // One task: its state, arguments as JSON and where it is.
    let task = json(&redis, &["task", "show", &u1.to_string()]);
    assert_eq!(task["uuid"], u1.to_string());
    assert_eq!(task["name"], "mail::send");
    assert_eq!(task["queue"], "emails");
    assert_eq!(task["state"], "PENDING");
    assert_eq!(task["args"], serde_json::json!(["ann@example.com", 3]));
    assert_eq!(task["location"]["list"], "pending");
    assert!(task["timings"]["sent_at"].as_u64().unwrap() > 0);
    let shown = ok(&redis, &["task", "show", &u3.to_string()]);
    assert!(
        shown.contains("mail::digest") && shown.contains("delayed"),
        "{shown}"
    );
    let stderr = fails(&redis, &["task", "show", &Uuid::now_v7().to_string()], 3);
    assert!(stderr.contains("no task"), "{stderr}");

    // Bad cursors are usage errors.
    let stderr = fails(
        &redis,
        &[
            "tasks", "ls", "--queue", "emails", "--state", "pending", "--cursor", "garbage!",
        ],
        2,
    );
    assert!(stderr.contains("cursor"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_requeued_and_deleted() {
    let redis = RedisServer::start();
    let server = connect(&redis).await;
    let raws: Vec<RawSignature> = (0..3)
        .map(|i| signature("jobs", "jobs::run", &(i,)))
        .collect();
    let uuids: Vec<Uuid> = raws.iter().map(|r| r.uuid).collect();
    server.send_batch(raws).await.unwrap();
    let broker = server.broker();
    let deliveries = broker
        .fetch(&["jobs".to_owned()], 3, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 3);
    for d in &deliveries {
        let reason = DeadLetterReason::NotRegistered {
            name: "jobs::run".into(),
            deliveries: 4,
        };
        broker.dead_letter(d, &reason).await.unwrap();
    }
    assert_eq!(queue(&json(&redis, &["queues"]), "jobs")["dead"], 3);
    let dead = json(
        &redis,
        &["tasks", "ls", "--queue", "jobs", "--state", "dead"],
    );
    let items = dead["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(
        items[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not registered"),
        "{dead}"
    );
    let table = ok(
        &redis,
        &["tasks", "ls", "--queue", "jobs", "--state", "dead"],
    );
    assert!(table.contains("not registered"), "{table}");

    let one = uuids[0].to_string();
    let done = json(&redis, &["dead", "requeue", "--queue", "jobs", &one]);
    assert_eq!(done["requeued"], 1);
    let stderr = fails(&redis, &["dead", "requeue", "--queue", "jobs", &one], 3);
    assert!(stderr.contains("not among the dead letters"), "{stderr}");
    let jobs = json(&redis, &["queues"]);
    assert_eq!(queue(&jobs, "jobs")["ready"], 1);
    assert_eq!(queue(&jobs, "jobs")["dead"], 2);

    let two = uuids[1].to_string();
    assert!(ok(&redis, &["dead", "delete", "--queue", "jobs", &two]).contains("deleted 1"));
    fails(&redis, &["dead", "delete", "--queue", "jobs", &two], 3);
    fails(&redis, &["dead", "delete", "--queue", "jobs", "--all"], 2);
    fails(&redis, &["dead", "purge", "--queue", "jobs"], 2);
    let purged = json(&redis, &["dead", "purge", "--queue", "jobs", "--yes"]);
    assert_eq!(purged["deleted"], 1);
    assert_eq!(queue(&json(&redis, &["queues"]), "jobs")["dead"], 0);
    let requeued = json(&redis, &["dead", "requeue", "--queue", "jobs", "--all"]);
    assert_eq!(requeued["requeued"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_pause_resume_and_purge() {
    let redis = RedisServer::start();
    let server = connect(&redis).await;
    let raws: Vec<RawSignature> = (0..5)
        .map(|i| signature("batch", "batch::item", &(i,)))
        .collect();
    server.send_batch(raws).await.unwrap();

    let paused = json(&redis, &["queue", "pause", "batch"]);
    assert_eq!(
        (paused["paused"].clone(), paused["changed"].clone()),
        (true.into(), true.into())
    );
    assert_eq!(json(&redis, &["queue", "pause", "batch"])["changed"], false);
    assert_eq!(queue(&json(&redis, &["queues"]), "batch")["paused"], true);
    // Paused: nothing is handed out.
    let got = server
        .broker()
        .fetch(&["batch".to_owned()], 5, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(got.is_empty());
    assert!(ok(&redis, &["queue", "resume", "batch"]).contains("resumed queue batch"));
    assert!(ok(&redis, &["queue", "resume", "batch"]).contains("was not paused"));
    assert_eq!(queue(&json(&redis, &["queues"]), "batch")["paused"], false);

    // One pending task deleted by UUID: its queue is found from its stored state.
    let first = server.pending_tasks("batch").await.unwrap()[0]
        .uuid
        .to_string();
    let deleted = json(&redis, &["task", "delete", &first]);
    assert_eq!(
        (deleted["queue"].clone(), deleted["deleted"].clone()),
        ("batch".into(), true.into())
    );
    assert_eq!(queue(&json(&redis, &["queues"]), "batch")["ready"], 4);
    let stderr = fails(&redis, &["task", "delete", &first], 3);
    assert!(stderr.contains("is not pending in queue batch"), "{stderr}");
    let stderr = fails(&redis, &["queue", "purge", "batch"], 2);
    assert!(stderr.contains("--yes"), "{stderr}");
    assert_eq!(queue(&json(&redis, &["queues"]), "batch")["ready"], 4);
    assert_eq!(
        json(&redis, &["queue", "purge", "batch", "--yes"])["deleted"],
        4
    );
    assert_eq!(queue(&json(&redis, &["queues"]), "batch")["ready"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_in_flight_failures_and_stats() {
    let redis = RedisServer::start();
    // The registry record (and its running tasks) is rewritten every heartbeat.
    let server = connect_with(&redis, &[("MACHINERY_WORKER_HEARTBEAT", "1s")]).await;
    let worker = Worker::new()
        .task(hold::ENTRY)
        .task(refuse::ENTRY)
        .name("cli-test-worker")
        .queue("work")
        .concurrency(4)
        .server(&server)
        .spawn()
        .unwrap();
    let long = hold::s(4_000)
        .queue("work")
        .send_with(&server)
        .await
        .unwrap();
    let long_id = long.uuid().to_string();

    let (worker_id, workers) = eventually("the worker to report its running task", || {
        let workers = json(&redis, &["workers"]);
        let w = workers.as_array()?.first()?.clone();
        let running = w["running"].as_array()?;
        running
            .iter()
            .any(|r| r["uuid"] == long_id.as_str())
            .then(|| (w["id"].as_str().unwrap().to_owned(), workers.clone()))
    });
    let w = &workers[0];
    assert_eq!(w["name"], "cli-test-worker");
    assert_eq!(w["queues"], serde_json::json!(["work"]));
    assert_eq!(w["concurrency"], 4);
    assert_eq!(w["pid"], std::process::id());
    let table = ok(&redis, &["workers"]);
    assert!(
        table.contains("cli-test-worker") && table.contains("running now"),
        "{table}"
    );

    let in_flight = json(
        &redis,
        &["tasks", "ls", "--queue", "work", "--state", "in_flight"],
    );
    let item = &in_flight["items"][0];
    assert_eq!(item["uuid"], long_id.as_str());
    assert_eq!(item["worker"], worker_id.as_str());
    assert!(item["lease_deadline"].as_u64().unwrap() > 0);
    let shown = json(&redis, &["task", "show", &long_id]);
    assert_eq!(shown["location"]["list"], "in_flight");
    assert_eq!(shown["worker"], worker_id.as_str());

    // Task data is untrusted: the error carries terminal escapes and a bidi override.
    let failed = refuse::s("no such mailbox \u{1b}[2J\u{7}\u{202e}".to_owned())
        .queue("work")
        .send_with(&server)
        .await
        .unwrap();
    assert!(failed.get_timeout(Duration::from_secs(10)).await.is_err());
    assert_eq!(
        long.get_timeout(Duration::from_secs(20)).await.unwrap(),
        4_000
    );

    let done = json(&redis, &["task", "show", &long_id]);
    assert_eq!(done["state"], "SUCCESS");
    assert_eq!(done["result"], 4_000);
    assert_eq!(done["args"], serde_json::json!([4_000]));
    assert!(
        done["timings"]["runtime_ms"].as_u64().unwrap() >= 4_000,
        "{done}"
    );
    assert_eq!(done["worker"], worker_id.as_str());
    let failure = json(&redis, &["task", "show", &failed.uuid().to_string()]);
    assert_eq!(failure["state"], "FAILURE");
    assert!(
        failure["error"]
            .as_str()
            .unwrap()
            .contains("no such mailbox")
    );

    let failed_id = failed.uuid().to_string();
    eventually("the failure to be listed", || {
        let page = json(
            &redis,
            &["tasks", "ls", "--queue", "work", "--state", "failed"],
        );
        let item = page["items"].as_array()?.first()?.clone();
        (item["uuid"] == failed_id.as_str()).then_some(())
    });
    let table = ok(
        &redis,
        &["tasks", "ls", "--queue", "work", "--state", "failed"],
    );
    assert!(
        table.contains("cli_tests::refuse") && table.contains("no such mailbox"),
        "{table}"
    );
    assert!(
        table.contains("\\u{001b}[2J\\u{0007}\\u{202e}")
            && !table.contains('\u{1b}')
            && !table.contains('\u{202e}'),
        "escapes and bidi controls are shown escaped: {table}"
    );
    let shown = ok(&redis, &["task", "show", &failed_id]);
    assert!(
        !shown.contains('\u{1b}') && shown.contains("\\u{001b}"),
        "{shown}"
    );

    let stats = eventually("statistics of both tasks", || {
        let stats = json(&redis, &["stats", "--since", "10m", "--queue", "work"]);
        (stats["summary"]["total"]["processed"].as_u64()? >= 2).then_some(stats)
    });
    let tasks = stats["summary"]["tasks"].as_array().unwrap();
    let hold_row = tasks
        .iter()
        .find(|t| t["task"] == "cli_tests::hold")
        .unwrap();
    assert_eq!(hold_row["processed"], 1);
    assert_eq!(hold_row["failed"], 0);
    // 4 s falls in the 2.5–5 s bucket.
    let p50 = hold_row["run_p50_ms"].as_f64().unwrap();
    assert!((2_500.0..=5_000.0).contains(&p50), "{p50}");
    let refuse_row = tasks
        .iter()
        .find(|t| t["task"] == "cli_tests::refuse")
        .unwrap();
    assert_eq!(refuse_row["failed"], 1);
    assert!(!stats["buckets"].as_array().unwrap().is_empty());
    let table = ok(&redis, &["stats", "--since", "10m"]);
    assert!(
        table.contains("cli_tests::hold") && table.contains("RUN P95"),
        "{table}"
    );

    worker.shutdown().await.unwrap();
    eventually("the worker to leave the registry", || {
        json(&redis, &["workers"])
            .as_array()?
            .is_empty()
            .then_some(())
    });
    assert!(ok(&redis, &["workers"]).contains("no workers alive"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_entries_are_listed_paused_resumed_and_removed() {
    let redis = RedisServer::start();
    let server = connect(&redis).await;
    let scheduler = Scheduler::new(&server)
        .await
        .unwrap()
        .add("nightly", Schedule::parse("0 3 * * *").unwrap(), hold::s(1))
        .unwrap()
        .spawn();
    let entries = eventually("the entry to be registered", || {
        let entries = json(&redis, &["periodic", "ls"]);
        (!entries.as_array()?.is_empty()).then_some(entries)
    });
    scheduler.shutdown().await.unwrap();
    assert_eq!(entries[0]["name"], "nightly");
    assert_eq!(entries[0]["spec"], "0 3 * * *");
    assert_eq!(entries[0]["paused"], false);
    assert!(entries[0]["next_run"].as_u64().unwrap() > 0);
    let table = ok(&redis, &["periodic", "ls"]);
    assert!(
        table.contains("nightly") && table.contains("0 3 * * *"),
        "{table}"
    );

    assert!(
        ok(&redis, &["periodic", "pause", "nightly"]).contains("paused periodic entry nightly")
    );
    assert_eq!(json(&redis, &["periodic", "ls"])[0]["paused"], true);
    assert_eq!(
        json(&redis, &["periodic", "resume", "nightly"])["resumed"],
        true
    );
    assert_eq!(json(&redis, &["periodic", "ls"])[0]["paused"], false);
    assert_eq!(
        json(&redis, &["periodic", "remove", "nightly"])["removed"],
        true
    );
    assert!(ok(&redis, &["periodic", "ls"]).contains("no periodic entries"));
    for verb in ["pause", "resume", "remove"] {
        let stderr = fails(&redis, &["periodic", verb, "nightly"], 3);
        assert!(
            stderr.contains("no periodic entry named `nightly`"),
            "{stderr}"
        );
    }
}

#[test]
fn wrong_input_is_a_clear_error_and_an_exit_status() {
    let redis = RedisServer::start();
    // Usage: clap's and ours.
    let stderr = fails(&redis, &["task", "show", "not-a-uuid"], 2);
    assert!(stderr.contains("not-a-uuid"), "{stderr}");
    let stderr = fails(&redis, &["tasks", "ls", "--state", "sleeping"], 2);
    assert!(stderr.contains("unknown task state `sleeping`"), "{stderr}");
    let stderr = fails(&redis, &["stats", "--since", "yesterday"], 2);
    assert!(stderr.contains("--since"), "{stderr}");
    fails(
        &redis,
        &["tasks", "ls", "--state", "pending", "--limit", "0"],
        2,
    );
    fails(&redis, &["dead", "requeue", "--queue", "q"], 2);
    fails(&redis, &["frobnicate"], 2);
    let stderr = fails_on("amqp://somewhere", &["queues"], 2);
    assert!(stderr.contains("invalid --broker"), "{stderr}");

    // An unreachable broker.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let stderr = fails_on(&format!("redis://127.0.0.1:{closed}/"), &["queues"], 1);
    assert!(stderr.contains("cannot connect"), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");

    // A configuration error names the variable.
    let out = Command::new(env!("CARGO_BIN_EXE_machinery"))
        .env("MACHINERY_BROKR", redis.url())
        .arg("queues")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("MACHINERY_BROKER"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_configuration_comes_from_a_file_the_environment_and_the_flag() {
    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("machinery-cli-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("machinery.yml");
    std::fs::write(
        &file,
        format!("broker: {}\ndefault_queue: fromfile\n", redis.url()),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_machinery");
    let clean = |cmd: &mut Command| {
        for (name, _) in std::env::vars() {
            if name.starts_with("MACHINERY_") {
                cmd.env_remove(name);
            }
        }
    };

    let mut cmd = Command::new(bin);
    clean(&mut cmd);
    let out = cmd
        .args(["--json", "--config"])
        .arg(&file)
        .args(["periodic", "ls"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "[]");

    // The environment wins over the file; the flag over both.
    let mut cmd = Command::new(bin);
    clean(&mut cmd);
    let out = cmd
        .env("MACHINERY_BROKER", "redis://127.0.0.1:1/")
        .arg("--config")
        .arg(&file)
        .args(["periodic", "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let mut cmd = Command::new(bin);
    clean(&mut cmd);
    let out = cmd
        .env("MACHINERY_BROKER", "redis://127.0.0.1:1/")
        .args(["--broker", &redis.url(), "periodic", "ls"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("no periodic entries"));

    // The file's default queue is the one `--queue` defaults to.
    let mut cmd = Command::new(bin);
    clean(&mut cmd);
    let out = cmd
        .arg("--config")
        .arg(&file)
        .args(["dead", "requeue", "--all"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("queue fromfile"),
        "{}",
        text(&out.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn memory_urls_work_with_the_same_binary() {
    let out = machinery_on("memory://", &["--json", "queues"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "[]");
    // Said once, on stderr: nothing another process sent is there.
    assert!(
        text(&out.stderr).contains("memory://"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn cancel_prints_the_outcome() {
    // memory:// is the command's own process: every task is unknown there, and the
    // revocation is recorded all the same.
    let id = Uuid::now_v7().to_string();
    // Status 3 (not found), as `task show` says for the same UUID.
    let out = machinery_on("memory://", &["task", "cancel", &id]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(said.contains(&id), "{said}");
    assert!(said.contains("the revocation is recorded"), "{said}");
    let out = machinery_on(
        "memory://",
        &["--json", "task", "cancel", &id, "--queue", "q"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["outcome"], "unknown");
    assert_eq!(v["uuid"], id.as_str());
    assert_eq!(v["queue"], "q");
    assert_eq!(v["state"], Value::Null);
    // A UUID that is not one is refused before anything is revoked.
    let out = machinery_on("memory://", &["task", "cancel", "not-a-uuid"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_from_the_broker() {
    use std::io::{BufRead, BufReader, Read, Write};

    let redis = RedisServer::start();
    let server = connect(&redis).await;
    server
        .send_batch(vec![signature("metered", "m::x", &(1,))])
        .await
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_machinery"))
        .args([
            "--json",
            "--broker",
            &redis.url(),
            "metrics",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr: Value = serde_json::from_str(&first).unwrap();
    let addr = addr["listen"].as_str().unwrap().to_owned();
    let body = eventually("a scrape", || {
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            panic!("machinery metrics exited ({status}): {stderr}");
        }
        let mut stream = std::net::TcpStream::connect(&addr).ok()?;
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).ok()?;
        body.contains("# EOF").then_some(body)
    });
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    assert!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "{body}"
    );
    assert!(
        body.lines().any(|l| l.starts_with("machinery_queue_depth{")
            && l.contains("queue=\"metered\"")
            && l.contains("state=\"ready\"")
            && l.ends_with(" 1")),
        "{body}\nstderr: {}",
        text(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_show_has_the_progress() {
    let redis = RedisServer::start();
    let server = connect(&redis).await;
    let worker = Worker::new()
        .task(report::ENTRY)
        .task(hold::ENTRY)
        .server(&server)
        .spawn()
        .unwrap();
    let reported = report::s(3).send_with(&server).await.unwrap();
    reported.get_timeout(Duration::from_secs(20)).await.unwrap();
    let quiet = hold::s(1).send_with(&server).await.unwrap();
    quiet.get_timeout(Duration::from_secs(20)).await.unwrap();
    worker.shutdown().await.unwrap();

    let task = json(&redis, &["task", "show", &reported.uuid().to_string()]);
    assert_eq!(
        task["progress"],
        serde_json::json!({"done": 3, "of": 4, "stage": "copy\u{1b}[31m"})
    );
    let shown = ok(&redis, &["task", "show", &reported.uuid().to_string()]);
    let row = shown
        .lines()
        .find(|l| l.contains("progress"))
        .unwrap_or_else(|| panic!("no progress row: {shown}"));
    assert!(
        !shown.contains('\u{1b}'),
        "control characters are escaped: {shown}"
    );
    assert!(
        row.contains("\"of\": 4") || shown.contains("\"of\": 4"),
        "{shown}"
    );
    // A task that reported nothing has no progress field or row.
    let task = json(&redis, &["task", "show", &quiet.uuid().to_string()]);
    assert!(task.get("progress").is_none(), "{task}");
    let shown = ok(&redis, &["task", "show", &quiet.uuid().to_string()]);
    assert!(!shown.contains("progress"), "{shown}");
}
