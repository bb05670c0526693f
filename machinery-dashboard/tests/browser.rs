//! The dashboard in a real browser: headless Chromium driven through chromedriver
//! (WebDriver) against a dashboard over a private `redis-server`.
//!
//! A task nobody runs is dead-lettered with an argument that is a `<script>`; the
//! browser opens the overview, follows the failure to the task page, sees the state
//! FAILURE and the script shown as text (never run), requeues the task, and reloads
//! until a worker that knows the task has run it (SUCCESS). Screenshots go to
//! `target/dashboard-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`apt-get install chromium
//! chromium-driver`); `CHROMEDRIVER` and `CHROMIUM` name other binaries. A missing
//! driver is a failure, not a skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use machinery_core::inspect::TaskList;
use machinery_core::{Config, Server, State, TaskError, Worker, task};
use machinery_dashboard::{Dashboard, DashboardConfig};
use machinery_redis as _;
use serde_json::json;
use tests::RedisServer;
use uuid::Uuid;

/// The argument that must stay text: run as a script it would set `window.__pwned`.
const SCRIPT: &str = "<script>window.__pwned=1</script>";
/// The queue of the scenario.
const QUEUE: &str = "browser";
/// How long any one condition may take to come true.
const DEADLINE: Duration = Duration::from_secs(20);

#[task(name = "dash_browser::greet")]
async fn greet(name: String) -> Result<String, TaskError> {
    Ok(format!("hello {}", name.len()))
}

/// What the first worker runs instead of `greet`, so it has a task list at all.
#[task(name = "dash_browser::other")]
async fn other() -> Result<(), TaskError> {
    Ok(())
}

/// `name`'s path: the variable `var` when set, else the first `name` on `PATH`.
fn binary(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Some(PathBuf::from(path));
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// A chromedriver process on a free loopback port, killed (by its PID) on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let path = binary("CHROMEDRIVER", "chromedriver").unwrap_or_else(|| {
            panic!(
                "chromedriver is not installed: the browser test needs Chromium and its \
                 WebDriver. Install them with `apt-get install chromium chromium-driver` \
                 (or set CHROMEDRIVER to the driver's path)"
            )
        });
        let port = free_port();
        let child = Command::new(&path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + DEADLINE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver ({}) did not listen on port {port} within {DEADLINE:?}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebDriver session of headless Chromium.
async fn browser(driver: &Driver) -> Client {
    let mut options = json!({
        "args": [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
        ],
    });
    let chromium = binary("CHROMIUM", "chromium").filter(|p| p.is_file());
    if let Some(path) = chromium {
        options["binary"] = json!(path.display().to_string());
    }
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert("goog:chromeOptions".into(), options);
    // A `data-confirm` form asks first; the test answers yes.
    caps.insert("unhandledPromptBehavior".into(), json!("accept"));
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("cannot open a Chromium session through chromedriver: {e}"))
}

/// `target/dashboard-screenshots/`, made if missing.
fn screenshot_dir() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is target/tmp");
    let dir = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

/// Saves a screenshot of the page as `name`.
async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let png = client.screenshot().await.expect("take a screenshot");
    let path = screenshot_dir().join(name);
    std::fs::write(&path, &png).expect("write the screenshot");
    println!("screenshot: {} ({} bytes)", path.display(), png.len());
    path
}

/// Polls `probe` until it returns `Some`, for up to [`DEADLINE`].
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The text of the first state badge of the page.
async fn state_text(client: &Client) -> String {
    let badge = client
        .find(Locator::Css("span.state"))
        .await
        .expect("the task page shows its state in span.state");
    badge.text().await.expect("badge text").trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_task_requeued_from_the_browser() {
    // Fail early, before Redis and workers, when the browser is missing.
    let driver = Driver::start();

    let redis = RedisServer::start();
    let mut config = Config::default();
    config.broker = redis.url();
    config.result_backend = Some(redis.url());
    // A task no worker here knows is dead-lettered on its first delivery.
    config.unregistered_requeues = 0;
    let server = Server::from_config(config).await.expect("connect to redis");

    // The dead letter: a worker on the queue that does not know `greet`.
    let stranger = Worker::new()
        .task(other::ENTRY)
        .queue(QUEUE)
        .name("browser-stranger")
        .server(&server)
        .spawn()
        .expect("start the first worker");
    let sent = greet::s(SCRIPT.to_owned())
        .queue(QUEUE)
        .send_with(&server)
        .await
        .expect("send greet");
    let uuid: Uuid = sent.uuid();
    let inspector = server.inspect().expect("inspect");
    eventually(
        "the task to be dead-lettered with state FAILURE",
        || async {
            let info = inspector.task(uuid).await.ok()??;
            let dead = info
                .location
                .as_ref()
                .is_some_and(|l| l.list == TaskList::Dead);
            (dead && info.state == Some(State::Failure)).then_some(())
        },
    )
    .await;
    stranger.shutdown().await.expect("stop the first worker");
    // The worker that knows `greet` runs it once it is requeued.
    let greeter = Worker::new()
        .task(greet::ENTRY)
        .queue(QUEUE)
        .name("browser-greeter")
        .server(&server)
        .spawn()
        .expect("start the second worker");

    // The dashboard, in this process, on a free loopback port.
    let mut settings = DashboardConfig::default();
    // No reload of its own while the test reads a page.
    settings.refresh = Duration::from_secs(120);
    let dashboard = Dashboard::new(server.inspect().expect("inspect"), settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the dashboard");
    let addr: SocketAddr = listener.local_addr().expect("dashboard address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        machinery_dashboard::serve(&dashboard, listener, async {
            let _ = stopped.await;
        })
        .await
    });
    let base = format!("http://{addr}");

    let client = browser(&driver).await;
    let outcome = scenario(&client, &base, uuid).await;
    let _ = client.close().await;
    let _ = stop.send(());
    serving
        .await
        .expect("the dashboard task")
        .expect("the dashboard served");
    greeter.shutdown().await.expect("stop the second worker");
    outcome.unwrap_or_else(|e| panic!("{e}"));
}

/// What the browser does; an error says which step failed.
async fn scenario(client: &Client, base: &str, uuid: Uuid) -> Result<(), String> {
    let step = |what: &'static str| move |e: fantoccini::error::CmdError| format!("{what}: {e}");

    // The overview lists the failure.
    client
        .goto(&format!("{base}/"))
        .await
        .map_err(step("load the overview"))?;
    let links = client
        .find_all(Locator::Css("section#failures a.task"))
        .await
        .map_err(step("find the failures"))?;
    let mut hrefs = Vec::new();
    let mut link = None;
    for candidate in links {
        let href = candidate
            .attr("href")
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        if href.contains(&uuid.to_string()) {
            link = Some(candidate);
        }
        hrefs.push(href);
    }
    screenshot(client, "overview.png").await;
    let link = link.ok_or_else(|| {
        format!(
            "the overview's `section#failures a.task` links do not include task {uuid}; \
             they go to {hrefs:?}"
        )
    })?;
    link.click().await.map_err(step("open the failed task"))?;

    // The task page: FAILURE, and the argument shown as text, not run.
    let url = client.current_url().await.map_err(step("read the URL"))?;
    if !url.path().ends_with(&format!("/tasks/{uuid}")) {
        return Err(format!("the failure link led to {url}, not the task page"));
    }
    let state = state_text(client).await;
    if state != "FAILURE" {
        return Err(format!("the task page says {state:?}; expected FAILURE"));
    }
    let safe = client
        .execute("return window.__pwned === undefined", vec![])
        .await
        .map_err(step("read window.__pwned"))?;
    if safe != json!(true) {
        return Err(format!(
            "the task's argument ran as a script (window.__pwned is set: {safe})"
        ));
    }
    let text = client
        .find(Locator::Css("body"))
        .await
        .map_err(step("find the body"))?
        .text()
        .await
        .map_err(step("read the page text"))?;
    if !text.contains(SCRIPT) {
        return Err(format!(
            "the task page does not show the argument {SCRIPT:?} as text:\n{text}"
        ));
    }
    screenshot(client, "task-failure.png").await;

    // Requeue it.
    client
        .find(Locator::Css(r#"form[action$="/requeue"] button"#))
        .await
        .map_err(step("find the Requeue button"))?
        .click()
        .await
        .map_err(step("click Requeue"))?;
    let flash = client
        .wait()
        .at_most(DEADLINE)
        .for_element(Locator::Css("p.flash"))
        .await
        .map_err(step("wait for the flash after Requeue"))?
        .text()
        .await
        .map_err(step("read the flash"))?;
    if !flash.contains("requeued") || flash.contains("nothing requeued") {
        return Err(format!("after Requeue the page says {flash:?}"));
    }

    // The worker that knows the task runs it: reload until the page says SUCCESS.
    let page = format!("{base}/tasks/{uuid}");
    let deadline = Instant::now() + DEADLINE;
    loop {
        client
            .goto(&page)
            .await
            .map_err(step("reload the task page"))?;
        let state = state_text(client).await;
        if state == "SUCCESS" {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the task page still says {state:?} {DEADLINE:?} after the requeue"
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    screenshot(client, "task-success.png").await;
    Ok(())
}
