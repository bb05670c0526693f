//! `machinery metrics --listen ADDR`.

use machinery_core::Server;
use tokio::net::TcpListener;

use crate::args::MetricsArgs;
use crate::error::{Failure, Result};
use crate::output::Out;

pub async fn run(server: &Server, args: MetricsArgs, out: &mut Out) -> Result {
    let listener = TcpListener::bind(args.listen.as_str())
        .await
        .map_err(|e| Failure::failed(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::failed(format!("cannot listen on {}: {e}", args.listen)))?;
    if out.json {
        out.json_line(&serde_json::json!({"listen": addr.to_string(), "path": "/metrics"}))?;
    } else {
        out.line(format!(
            "serving cluster metrics at http://{addr}/metrics (Ctrl-C stops)"
        ))?;
    }
    // The address goes out before the server runs, for scripts waiting on it.
    out.flush()?;
    export(server, listener).await
}

/// Serves the cluster-wide gauges of `server`'s broker on `listener` until Ctrl-C
/// (`machinery_core::metrics`).
async fn export(server: &Server, listener: TcpListener) -> Result {
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    machinery_core::metrics::Exporter::new(server)
        .serve(listener, interrupted)
        .await
        .map_err(|e| Failure::failed(e.to_string()))
}
