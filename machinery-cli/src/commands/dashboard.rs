//! `machinery dashboard [--listen ADDR] [--username U --password P | --token T]`.

use std::net::SocketAddr;

use machinery_core::{Config, Server};
use machinery_dashboard::{Dashboard, DashboardConfig};
use tokio::net::TcpListener;

use crate::args::DashboardArgs;
use crate::error::{Failure, Result};
use crate::output::Out;

/// The dashboard's settings and where it will listen, checked before anything
/// connects or binds.
pub struct Prepared {
    settings: DashboardConfig,
    listen: String,
    addrs: Vec<SocketAddr>,
}

/// Puts the flags over the `dashboard:` section of `config`, validates the result,
/// resolves the address and refuses one off loopback without credentials (usage
/// errors, exit status 2).
pub async fn prepare(config: &mut Config, args: &DashboardArgs) -> Result<Prepared> {
    let section = config.section_mut::<DashboardConfig>();
    if let Some(listen) = &args.listen {
        section.listen.clone_from(listen);
    }
    if let (Some(user), Some(password)) = (&args.username, &args.password) {
        section.username = Some(user.clone());
        section.password = Some(password.clone());
        // The flags name one way in; a token from the configuration would be a second.
        section.token = None;
    }
    if let Some(token) = &args.token {
        section.token = Some(token.clone());
        section.username = None;
        section.password = None;
    }
    config
        .validate()
        .map_err(|e| Failure::usage(e.to_string()))?;
    let settings: DashboardConfig = config.section();
    let listen = settings.listen.clone();
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(listen.as_str())
        .await
        .map_err(|e| Failure::usage(format!("cannot resolve the address `{listen}`: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(Failure::usage(format!(
            "the address `{listen}` resolves to nothing"
        )));
    }
    for addr in &addrs {
        settings.check_listen(*addr).map_err(Failure::usage)?;
    }
    Ok(Prepared {
        settings,
        listen,
        addrs,
    })
}

/// Binds, says where, and serves the dashboard of `server` until Ctrl-C.
pub async fn run(server: &Server, prepared: Prepared, out: &mut Out) -> Result {
    let Prepared {
        settings,
        listen,
        addrs,
    } = prepared;
    let listener = bind(&listen, &addrs).await?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::failed(format!("cannot listen on {listen}: {e}")))?;
    let url = format!("http://{addr}/");
    if out.json {
        out.json_line(&serde_json::json!({"listen": addr.to_string(), "url": url}))?;
    } else {
        out.line(format!("dashboard at {url} (Ctrl-C stops)"))?;
    }
    // The address goes out before the server runs, for scripts waiting on it.
    out.flush()?;
    let dashboard = Dashboard::new(server.inspect()?, settings);
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    machinery_dashboard::serve(&dashboard, listener, interrupted)
        .await
        .map_err(|e| Failure::failed(format!("the dashboard stopped: {e}")))
}

/// The first of `addrs` that binds.
async fn bind(listen: &str, addrs: &[SocketAddr]) -> Result<TcpListener> {
    let mut last = None;
    for addr in addrs {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    let reason = last.map_or_else(|| "no address".to_owned(), |e| e.to_string());
    Err(Failure::failed(format!(
        "cannot listen on {listen}: {reason}"
    )))
}
