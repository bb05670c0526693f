//! The dashboard in an app: a worker, a steady trickle of tasks (some fail, some are slow
//! and report progress, chains and chords), a periodic entry, and the dashboard mounted
//! in the app's own axum router under `/dashboard`.
//!
//!     cargo run -p examples --example dashboard
//!     # then open http://127.0.0.1:8080/dashboard
//!     MACHINERY_BROKER=redis://127.0.0.1:6379/ cargo run -p examples --example dashboard
//!
//! `MACHINERY_DASHBOARD_LISTEN` (or `dashboard.listen` in a YAML file named by
//! `MACHINERY_CONFIG`) moves it; off loopback it needs credentials
//! (`MACHINERY_DASHBOARD_TOKEN`, or `MACHINERY_DASHBOARD_USERNAME` and `_PASSWORD`).
//! Ctrl-C stops.

use std::time::Duration;

use machinery_core::Config;
use machinery_core::periodic::{Schedule, Scheduler};
use machinery_core::prelude::*;
use machinery_dashboard::{Dashboard, DashboardConfig};
use serde::{Deserialize, Serialize};

use machinery_redis as _;

#[task]
async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(a + b)
}

#[task]
async fn total(values: Vec<i64>) -> Result<i64, TaskError> {
    Ok(values.iter().sum())
}

#[derive(Debug, Serialize, Deserialize)]
struct Email {
    to: String,
    subject: String,
}

/// Fails for addresses at example.invalid, as a mail server would.
#[task(name = "mail.send", queue = "emails")]
async fn send_email(email: Email) -> Result<String, TaskError> {
    tokio::time::sleep(Duration::from_millis(50)).await;
    if email.to.ends_with("@example.invalid") {
        return Err(TaskError::msg(format!("550 no such domain: {}", email.to)));
    }
    Ok(format!("queued as {}", email.to.len()))
}

/// Slow, and says how far it is.
#[task(name = "reports.build", queue = "reports")]
async fn build_report(ctx: TaskContext, pages: u32) -> Result<u32, TaskError> {
    for done in 0..pages {
        ctx.set_progress(serde_json::json!({ "done": done, "total": pages }));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(pages)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MACHINERY_LOG")
                .unwrap_or_else(|_| "off".into()),
        )
        .init();

    let config = Config::from_env()?;
    let settings: DashboardConfig = config.section();
    let server = Server::from_config(config).await?;
    server.install();

    let scheduler = Scheduler::new(&server).await?.add(
        "nightly-report",
        Schedule::parse("@every 30s")?,
        build_report::s(4),
    )?;
    let worker = Worker::auto()
        .server(&server)
        .concurrency(8)
        .scheduler(scheduler)
        .spawn()?;

    let listen = settings.listen.clone();
    let dashboard = Dashboard::new(server.inspect()?, settings);
    let app = axum::Router::new()
        .nest("/dashboard", dashboard.router())
        // A nested router's `/` is `/dashboard` only: send the slash form there too.
        .route(
            "/dashboard/",
            axum::routing::get(|| async { axum::response::Redirect::permanent("/dashboard") }),
        );
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let addr = listener.local_addr()?;
    dashboard.config().check_listen(addr)?;
    println!(
        "dashboard at http://{addr}/dashboard (engine {}; Ctrl-C stops)",
        server.broker().engine()
    );

    let load = tokio::spawn(async move {
        let mut round: i64 = 0;
        loop {
            round += 1;
            let _ = add::send(round, 1).await;
            let to = if round % 7 == 0 {
                format!("user{round}@example.invalid")
            } else {
                format!("user{round}@example.com")
            };
            let _ = send_email::send(Email {
                to,
                subject: "<b>Welcome</b>".into(),
            })
            .await;
            if round % 5 == 0 {
                let _ = add::s(round, 2).then(add::partial(3)).send().await;
            }
            if round % 15 == 0 {
                let members: Vec<_> = (0..20).map(|i| add::s(i, round)).collect();
                let _ = group(members).chord(total::partial()).send().await;
                let _ = build_report::send(6).await;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    });

    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    load.abort();
    worker.shutdown().await?;
    Ok(())
}
