//! The Machinery web dashboard: queues, tasks, workers, workflows, registered tasks and
//! periodic entries of a deployment, with the actions an operator needs (pause, resume
//! and purge a queue; requeue or delete a dead letter; delete a pending task; cancel a
//! task; pause, resume or remove a periodic entry).
//!
//! Depend on it to mount the dashboard in your own axum app; the `machinery dashboard`
//! command (crate `machinery-cli`) serves it on its own. Everything is in the binary:
//! server-rendered HTML, one small stylesheet and one small script (pages work without
//! it), charts drawn as SVG on the server. Every page has a JSON twin under `/api`.
//!
//! Security: with credentials in [`DashboardConfig`] every route needs them (HTTP basic
//! auth or a bearer token, compared in constant time); [`serve`] refuses a non-loopback
//! address without them. Actions are `POST` forms with a CSRF token and an origin
//! check; task data (arguments, results, errors, names) is escaped on every page, and a
//! Content-Security-Policy forbids inline scripts besides.
//!
//! ```
//! use machinery_core::Server;
//! use machinery_dashboard::{Dashboard, DashboardConfig};
//!
//! # fn main() -> machinery_core::Result<()> {
//! let server = Server::memory();
//! let dashboard = Dashboard::new(server.inspect()?, DashboardConfig::default());
//! // Mount it under a path of your app (links follow the mount path):
//! let app: axum::Router = axum::Router::new().nest("/admin/tasks", dashboard.router());
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use machinery_core::inspect::Inspector;
use tokio::net::TcpListener;

mod actions;
mod api;
mod assets;
mod auth;
mod chart;
mod config;
mod csrf;
mod error;
mod layout;
mod pages;

pub use config::DashboardConfig;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) inspector: Inspector,
    pub(crate) config: Arc<DashboardConfig>,
    /// This instance's CSRF token.
    pub(crate) csrf: Arc<str>,
}

/// The dashboard of one deployment: its [`Inspector`] and [`DashboardConfig`].
#[derive(Clone)]
pub struct Dashboard {
    shared: Shared,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Dashboard {
    /// The dashboard over `inspector` ([`Server::inspect`](machinery_core::Server::inspect)),
    /// with a fresh random CSRF token.
    ///
    /// A `page_size` outside 1 to 1000 or a `refresh` outside 1 s to 1 h (possible for a
    /// config built in code, which skips
    /// [validation](machinery_core::config::EngineSection::validate)) is brought into
    /// that range; empty credentials, or a token validation would refuse, count as none
    /// ([`DashboardConfig::has_credentials`]).
    pub fn new(inspector: Inspector, mut config: DashboardConfig) -> Self {
        config.page_size = config.page_size.clamp(1, 1000);
        if !config.refresh.is_zero() {
            config.refresh = config
                .refresh
                .clamp(config::MIN_REFRESH, config::MAX_REFRESH);
        }
        Dashboard {
            shared: Shared {
                inspector,
                config: Arc::new(config),
                csrf: csrf::new_token().into(),
            },
        }
    }

    /// Its settings.
    pub fn config(&self) -> &DashboardConfig {
        &self.shared.config
    }

    /// The axum router of every page, JSON route, action and asset, with the
    /// credentials check when credentials are configured. Nest it under any path
    /// (`Router::nest("/admin", …)`): links follow the mount path.
    ///
    /// Routes (all under the mount path):
    ///
    /// | page | JSON | what |
    /// |---|---|---|
    /// | `/` | `/api/overview` | processed and failed per minute, totals, queues, workers |
    /// | `/queues` | `/api/queues` | each queue's counts; pause, resume, purge |
    /// | `/tasks?queue=&list=&name=&cursor=` | `/api/tasks?…` | a page of a listing |
    /// | `/tasks/{uuid}` | `/api/tasks/{uuid}` | one task; requeue, delete, cancel |
    /// | `/workers` | `/api/workers` | the workers alive and what they run |
    /// | `/workflows/{uuid}` | `/api/workflows/{uuid}` | the chain or chord a task belongs to |
    /// | `/registered` | `/api/registered` | task names, schemas, fingerprints |
    /// | `/periodic` | `/api/periodic` | periodic entries; pause, resume, remove |
    pub fn router(&self) -> Router {
        let shared = self.shared.clone();
        Router::new()
            .route("/", get(pages::overview::page))
            .route("/queues", get(pages::queues::page))
            .route("/tasks", get(pages::tasks::page))
            .route("/tasks/{uuid}", get(pages::task::page))
            .route("/workers", get(pages::workers::page))
            .route("/workflows/{uuid}", get(pages::workflows::page))
            .route("/registered", get(pages::registered::page))
            .route("/periodic", get(pages::periodic::page))
            .route("/api/overview", get(api::overview))
            .route("/api/queues", get(api::queues))
            .route("/api/tasks", get(api::tasks))
            .route("/api/tasks/{uuid}", get(api::task))
            .route("/api/workers", get(api::workers))
            .route("/api/workflows/{uuid}", get(api::workflow))
            .route("/api/registered", get(api::registered))
            .route("/api/periodic", get(api::periodic))
            .route("/queues/{queue}/pause", post(actions::pause_queue))
            .route("/queues/{queue}/resume", post(actions::resume_queue))
            .route("/queues/{queue}/purge", post(actions::purge_queue))
            .route("/tasks/{uuid}/requeue", post(actions::requeue_task))
            .route("/tasks/{uuid}/delete", post(actions::delete_task))
            .route("/tasks/{uuid}/cancel", post(actions::cancel_task))
            .route("/periodic/{name}/pause", post(actions::pause_periodic))
            .route("/periodic/{name}/resume", post(actions::resume_periodic))
            .route("/periodic/{name}/remove", post(actions::remove_periodic))
            .route("/assets/style.css", get(assets::style))
            .route("/assets/app.js", get(assets::script))
            .fallback(not_found)
            .method_not_allowed_fallback(post_only)
            .layer(middleware::from_fn_with_state(
                shared.clone(),
                auth::require,
            ))
            .layer(middleware::from_fn(security_headers))
            .with_state(shared)
    }
}

/// A page that says what was not found, rather than an empty 404.
async fn not_found(uri: axum::http::Uri) -> error::PageError {
    error::PageError::not_found(format!("no dashboard page at {}", uri.path()))
}

/// A page for a `GET` of an action (a reload of an action's address, say): nothing is
/// done.
async fn post_only() -> error::PageError {
    error::PageError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "this address is an action: it takes a POST from the dashboard's buttons, and \
         nothing was done",
    )
}

/// Headers on every response: no inline or foreign script, no framing, no sniffing.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// Serves `dashboard` on `listener` until `shutdown` completes.
///
/// # Errors
/// Without credentials on a non-loopback address ([`DashboardConfig::check_listen`]),
/// before serving anything; I/O errors of the listener.
pub async fn serve(
    dashboard: &Dashboard,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    dashboard
        .shared
        .config
        .check_listen(addr)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?;
    axum::serve(listener, dashboard.router())
        .with_graceful_shutdown(shutdown)
        .await
}
