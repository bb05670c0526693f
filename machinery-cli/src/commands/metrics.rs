//! `machinery metrics --listen ADDR`.

use machinery_core::Server;
use tokio::net::TcpListener;

use crate::args::MetricsArgs;
use crate::error::{Failure, Result};
use crate::output::Out;

pub async fn run(server: &Server, args: MetricsArgs, out: &mut Out) -> Result {
    let listener = TcpListener::bind(args.listen)
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

/// Serves the cluster-wide gauges of `server`'s broker on `listener` until Ctrl-C.
///
/// The exporter is `machinery_core::metrics`, which this build does not have yet: the
/// command says so rather than serving nothing.
async fn export(server: &Server, listener: TcpListener) -> Result {
    let _ = (server, listener);
    Err(Failure::failed(
        "this build of machinery has no metrics exporter (machinery_core::metrics); \
         rebuild machinery-cli against a machinery-core that has it",
    ))
}
