//! Prometheus metrics in the OpenMetrics text format (feature `metrics`, on by
//! default).
//!
//! A worker serves them with [`Worker::metrics_listen`](crate::Worker::metrics_listen)
//! at `GET /metrics`; a process without a worker (the `machinery metrics --listen ADDR`
//! command, a dashboard) serves the cluster-wide gauges alone with [`serve`] or an
//! [`Exporter`]. The content type is [`CONTENT_TYPE`].
//!
//! | metric | type | labels | unit | what |
//! |---|---|---|---|---|
//! | `machinery_tasks_total` | counter | `task`, `queue`, `outcome` | deliveries | deliveries this worker settled since it started, by `outcome`: `success`, `failure`, `retry` (failed, runs again), `dead_letter` (moved to the dead-letter queue; `task` is empty for a message that does not decode), `revoked` (cancelled, or expired before it started) |
//! | `machinery_task_run_seconds` | histogram | `task`, `queue` | seconds | time in the task function, of the runs that called it |
//! | `machinery_task_wait_seconds` | histogram | `task`, `queue` | seconds | queue wait of the same runs: from the message's creation, or its ETA when later, to the run's start |
//! | `machinery_tasks_running` | gauge | | tasks | deliveries this worker holds now (running, or fetched and about to run) |
//! | `machinery_worker_concurrency` | gauge | | tasks | how many tasks this worker runs at most at once (with unlimited concurrency, its bound of held deliveries) |
//! | `machinery_queue_depth` | gauge | `queue`, `state` | messages | messages in each queue the broker knows, by `state`: `ready`, `delayed`, `in_flight`, `dead` (a broker that cannot list its queues reports the worker's own queues, without `dead`) |
//! | `machinery_queue_paused` | gauge | `queue` | | 1 when workers do not fetch from the queue, else 0 |
//! | `machinery_workers_alive` | gauge | | workers | workers whose registry record has not expired |
//! | `machinery_broker_up` | gauge | | | 1 when the broker answered this scrape's reads, 0 when one failed (the gauges whose read failed are then left out) |
//!
//! The first five are the worker's own (a process without a worker has none); the
//! others are read from the broker at each scrape, so every worker of a cluster reports
//! the same values for them. Histogram buckets are those of the statistics,
//! [`HISTOGRAM_BOUNDS_MS`] in seconds (0.001 to 60),
//! then `+Inf`.
//!
//! ```
//! use machinery_core::Server;
//! use machinery_core::metrics::Exporter;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let server = Server::memory();
//! let text = Exporter::new(&server).render().await;
//! assert!(text.contains("# TYPE machinery_broker_up gauge"));
//! assert!(text.ends_with("# EOF\n"));
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::error::{Error, Result};
use crate::inspect::HISTOGRAM_BOUNDS_MS;
use crate::server::Server;
use crate::worker::observe::{Histogram, Totals};

/// The content type of [`Exporter::render`]'s text (OpenMetrics 1.0).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a worker adds to the broker's gauges.
pub(crate) trait LocalSource: Send + Sync + 'static {
    /// The worker's figures now; `None` once it is gone.
    fn figures(&self) -> Option<LocalFigures>;
}

/// A worker's figures at one scrape.
pub(crate) struct LocalFigures {
    pub(crate) running: usize,
    pub(crate) concurrency: usize,
    /// Queue, task name, totals since start.
    pub(crate) tasks: Vec<(String, String, Totals)>,
}

/// Renders the metrics, and serves them over HTTP.
///
/// [`Exporter::new`] exports the cluster-wide gauges read from the broker (see the
/// [module documentation](self)); a worker's exporter adds its own counters.
#[derive(Clone)]
pub struct Exporter {
    server: Server,
    queues: Vec<String>,
    local: Option<Arc<dyn LocalSource>>,
}

impl fmt::Debug for Exporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exporter")
            .field("queues", &self.queues)
            .field("worker", &self.local.is_some())
            .finish_non_exhaustive()
    }
}

impl Exporter {
    /// The cluster-wide gauges of `server`'s broker.
    pub fn new(server: &Server) -> Self {
        Exporter {
            server: server.clone(),
            queues: Vec::new(),
            local: None,
        }
    }

    /// Queues to report when the broker cannot list its queues (an engine without
    /// [`BrokerAdmin::queues`](crate::engine::BrokerAdmin::queues)); a worker's exporter
    /// reports the queues it consumes.
    pub fn queues(mut self, queues: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// A worker's exporter: its own figures from `local`, then the broker's gauges.
    pub(crate) fn for_worker(
        server: &Server,
        queues: Vec<String>,
        local: Arc<dyn LocalSource>,
    ) -> Self {
        Exporter {
            server: server.clone(),
            queues,
            local: Some(local),
        }
    }

    /// The metrics now, in the OpenMetrics text format (ending with `# EOF`). Reads the
    /// broker: its queues and its worker registry. A failed read is logged and sets
    /// `machinery_broker_up` to 0; the rest is still rendered.
    pub async fn render(&self) -> String {
        let snapshot = Snapshot {
            local: self.local.as_ref().and_then(|l| l.figures()),
            cluster: self.cluster().await,
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(snapshot));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }

    async fn cluster(&self) -> Option<Cluster> {
        let broker = self.server.broker();
        let admin = broker.admin()?;
        let mut up = true;
        let mut failed = |what: &str, e: &Error| {
            tracing::warn!(error = %e, "metrics: could not read the broker's {what}");
            up = false;
        };
        let queues = match admin.queues().await {
            Ok(list) => list
                .into_iter()
                .map(|q| QueueFigures {
                    depth: vec![
                        ("ready", q.ready),
                        ("delayed", q.delayed),
                        ("in_flight", q.in_flight),
                        ("dead", q.dead),
                    ],
                    paused: Some(q.paused),
                    name: q.name,
                })
                .collect(),
            Err(Error::Unsupported { .. }) => {
                let mut figures = Vec::new();
                for queue in &self.queues {
                    match admin.depth(queue).await {
                        Ok(d) => {
                            let mut depth =
                                vec![("ready", d.ready as u64), ("delayed", d.delayed as u64)];
                            if let Some(n) = d.in_flight {
                                depth.push(("in_flight", n as u64));
                            }
                            figures.push(QueueFigures {
                                name: queue.clone(),
                                depth,
                                paused: None,
                            });
                        }
                        Err(e) => failed("queue depths", &e),
                    }
                }
                figures
            }
            Err(e) => {
                failed("queues", &e);
                Vec::new()
            }
        };
        let workers = match admin.workers().await {
            Ok(list) => Some(list.len()),
            Err(Error::Unsupported { .. }) => None,
            Err(e) => {
                failed("worker registry", &e);
                None
            }
        };
        Some(Cluster {
            up,
            queues,
            workers,
        })
    }

    /// A router serving `GET /metrics`, to mount in an axum application.
    pub fn router(&self) -> axum::Router {
        let exporter = self.clone();
        axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let exporter = exporter.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                        exporter.render().await,
                    )
                }
            }),
        )
    }

    /// Serves `GET /metrics` on `listener` until `shutdown` completes, then lets the
    /// scrapes in progress finish.
    ///
    /// # Errors
    /// [`Error::Listen`] when the listener fails for good.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| Error::Listen {
                addr,
                reason: e.to_string(),
            })
    }
}

/// Serves the cluster-wide metrics of `server`'s broker at `http://ADDR/metrics`
/// until the process ends (or the returned future is dropped): what `machinery
/// metrics --listen ADDR` runs.
///
/// # Errors
/// [`Error::Listen`] when `addr` does not resolve or cannot be bound (in use, not
/// this host's).
///
/// # Examples
/// ```no_run
/// # async fn run() -> Result<(), machinery_core::Error> {
/// let server = machinery_core::Server::from_env().await?;
/// machinery_core::metrics::serve("0.0.0.0:9090", &server).await
/// # }
/// ```
pub async fn serve(
    addr: impl tokio::net::ToSocketAddrs + fmt::Debug,
    server: &Server,
) -> Result<()> {
    let shown = shown_addr(&addr);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Listen {
            addr: shown.clone(),
            reason: e.to_string(),
        })?;
    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or(shown), "serving metrics at /metrics");
    Exporter::new(server)
        .serve(listener, std::future::pending())
        .await
}

/// An address as the user wrote it, for errors.
pub(crate) fn shown_addr(addr: &impl fmt::Debug) -> String {
    format!("{addr:?}").trim_matches('"').to_owned()
}

/// What the broker says, at one scrape.
#[derive(Debug)]
struct Cluster {
    up: bool,
    queues: Vec<QueueFigures>,
    workers: Option<usize>,
}

#[derive(Debug)]
struct QueueFigures {
    name: String,
    depth: Vec<(&'static str, u64)>,
    paused: Option<bool>,
}

/// Everything one scrape renders.
struct Snapshot {
    local: Option<LocalFigures>,
    cluster: Option<Cluster>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// A histogram's buckets in seconds (per bucket, not cumulative), `+Inf` last.
fn seconds_buckets(h: &Histogram) -> Vec<(f64, u64)> {
    HISTOGRAM_BOUNDS_MS
        .iter()
        .map(|&ms| ms as f64 / 1000.0)
        .chain(std::iter::once(f64::INFINITY))
        .zip(h.counts.iter().copied())
        .collect()
}

impl Snapshot {
    fn encode_local(local: &LocalFigures, enc: &mut DescriptorEncoder) -> fmt::Result {
        let mut m = enc.encode_descriptor(
            "machinery_tasks",
            "Task deliveries settled by this worker since it started, by outcome.",
            None,
            MetricType::Counter,
        )?;
        for (queue, task, t) in &local.tasks {
            for (outcome, value) in [
                ("success", t.success),
                ("failure", t.failure),
                ("retry", t.retry),
                ("dead_letter", t.dead_letter),
                ("revoked", t.revoked),
            ] {
                let labels = [
                    ("task", task.as_str()),
                    ("queue", queue.as_str()),
                    ("outcome", outcome),
                ];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, u64, u64>(&value, None)?;
            }
        }
        for (name, help, pick) in [
            (
                "machinery_task_run",
                "Time spent in the task function.",
                (|t: &Totals| t.run) as fn(&Totals) -> Histogram,
            ),
            (
                "machinery_task_wait",
                "Queue wait: from the message's creation, or its ETA when later, to the run's start.",
                |t: &Totals| t.wait,
            ),
        ] {
            let mut m =
                enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
            for (queue, task, t) in &local.tasks {
                let h = pick(t);
                let labels = [("task", task.as_str()), ("queue", queue.as_str())];
                m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                    h.sum_us as f64 / 1e6,
                    h.count(),
                    &seconds_buckets(&h),
                    None,
                )?;
            }
        }
        enc.encode_descriptor(
            "machinery_tasks_running",
            "Deliveries this worker holds now.",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&local.running)?;
        enc.encode_descriptor(
            "machinery_worker_concurrency",
            "How many tasks this worker runs at most at once.",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&local.concurrency)?;
        Ok(())
    }

    fn encode_cluster(cluster: &Cluster, enc: &mut DescriptorEncoder) -> fmt::Result {
        enc.encode_descriptor(
            "machinery_broker_up",
            "1 when the broker answered this scrape's reads, 0 when one failed.",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&u32::from(cluster.up))?;
        if !cluster.queues.is_empty() {
            let mut m = enc.encode_descriptor(
                "machinery_queue_depth",
                "Messages in each queue, by state.",
                None,
                MetricType::Gauge,
            )?;
            for q in &cluster.queues {
                for (state, n) in &q.depth {
                    let labels = [("queue", q.name.as_str()), ("state", *state)];
                    m.encode_family(&labels)?.encode_gauge(n)?;
                }
            }
        }
        if cluster.queues.iter().any(|q| q.paused.is_some()) {
            let mut m = enc.encode_descriptor(
                "machinery_queue_paused",
                "1 when workers do not fetch from the queue.",
                None,
                MetricType::Gauge,
            )?;
            for q in &cluster.queues {
                if let Some(paused) = q.paused {
                    let labels = [("queue", q.name.as_str())];
                    m.encode_family(&labels)?.encode_gauge(&u32::from(paused))?;
                }
            }
        }
        if let Some(n) = cluster.workers {
            enc.encode_descriptor(
                "machinery_workers_alive",
                "Workers whose registry record has not expired.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&n)?;
        }
        Ok(())
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        if let Some(local) = &self.local {
            Snapshot::encode_local(local, &mut encoder)?;
        }
        if let Some(cluster) = &self.cluster {
            Snapshot::encode_cluster(cluster, &mut encoder)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let snapshot = Snapshot {
            local: Some(LocalFigures {
                running: 1,
                concurrency: 2,
                tasks: vec![(
                    "q".to_owned(),
                    "say \"hi\"\\\nnow".to_owned(),
                    Totals::default(),
                )],
            }),
            cluster: None,
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(snapshot));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(
            text.contains(
                r#"machinery_tasks_total{task="say \"hi\"\\\nnow",queue="q",outcome="success"} 0"#
            ),
            "{text}"
        );
        assert!(text.contains("machinery_tasks_running 1\n"), "{text}");
        assert!(text.contains("machinery_worker_concurrency 2\n"), "{text}");
    }

    #[tokio::test]
    async fn without_a_worker_only_the_broker_gauges_are_rendered() {
        let server = Server::memory();
        let sig = crate::testing::tasks::add::s(1, 2).queue("metrics-q");
        sig.send_with(&server).await.expect("sent");
        let text = Exporter::new(&server).queues(["metrics-q"]).render().await;
        assert!(!text.contains("machinery_tasks_total"), "{text}");
        assert!(!text.contains("machinery_tasks_running"), "{text}");
        assert!(text.contains("machinery_broker_up 1\n"), "{text}");
        assert!(
            text.contains("machinery_queue_depth{queue=\"metrics-q\",state=\"ready\"} 1\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn serve_reports_an_address_in_use() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let addr = taken.local_addr().expect("its address");
        let err = serve(addr, &Server::memory())
            .await
            .expect_err("the port is taken");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot listen on `{addr}`: ")),
            "{err}"
        );
        assert_eq!(err.kind(), crate::ErrorKind::Config);
    }
}
