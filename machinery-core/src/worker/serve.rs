//! A worker's metrics endpoint (`Worker::metrics_listen`).

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::metrics::{Exporter, LocalFigures, LocalSource};

use super::run::Shared;

/// Where `Worker::metrics_listen` asked to listen: the address as written, and what it
/// resolved to (or why it did not).
#[derive(Debug, Clone)]
pub(crate) struct MetricsAddr {
    pub(crate) shown: String,
    pub(crate) resolved: std::result::Result<Vec<SocketAddr>, String>,
}

/// Binds the endpoint's socket, at the worker's start, so that an address in use is
/// reported by `spawn`/`run` instead of later in a log.
pub(crate) fn bind(addr: &MetricsAddr) -> Result<std::net::TcpListener> {
    let listen_error = |reason: String| Error::Listen {
        addr: addr.shown.clone(),
        reason,
    };
    let addrs = addr.resolved.clone().map_err(listen_error)?;
    let listener =
        std::net::TcpListener::bind(&addrs[..]).map_err(|e| listen_error(e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| listen_error(e.to_string()))?;
    Ok(listener)
}

/// The running endpoint.
pub(crate) struct MetricsServer {
    pub(crate) addr: SocketAddr,
    stop: CancellationToken,
    join: JoinHandle<Result<()>>,
}

impl MetricsServer {
    /// Serves the worker's metrics on `listener` (bound by [`bind`]).
    pub(crate) fn start(
        listener: std::net::TcpListener,
        shared: &Arc<Shared>,
        queues: Vec<String>,
        concurrency: usize,
    ) -> Self {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let source = Arc::new(WorkerSource {
            shared: Arc::downgrade(shared),
            concurrency,
        });
        let exporter = Exporter::for_worker(&shared.server, queues, source);
        let stop = CancellationToken::new();
        let until = stop.clone();
        let join = tokio::spawn(async move {
            let listener =
                tokio::net::TcpListener::from_std(listener).map_err(|e| Error::Listen {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })?;
            exporter
                .serve(listener, async move { until.cancelled().await })
                .await
        });
        tracing::info!(%addr, "serving metrics at /metrics");
        MetricsServer { addr, stop, join }
    }

    /// Stops serving, once the scrapes in progress are answered.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        match self.join.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the metrics endpoint failed"),
            Err(e) => tracing::error!(error = %e, "the metrics endpoint ended abnormally"),
        }
    }
}

/// The worker's own figures, read at each scrape. Weak: serving metrics must not keep
/// the worker's state alive past its shutdown.
struct WorkerSource {
    shared: Weak<Shared>,
    concurrency: usize,
}

impl LocalSource for WorkerSource {
    fn figures(&self) -> Option<LocalFigures> {
        let shared = self.shared.upgrade()?;
        Some(LocalFigures {
            running: shared.held(),
            concurrency: self.concurrency,
            tasks: shared.observer.totals(),
        })
    }
}
