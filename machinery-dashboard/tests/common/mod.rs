//! What the dashboard's tests share: a dashboard over a memory server or over a private
//! `redis-server`, requests through its router (no network), and the CSRF token read
//! off a page as a browser would.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use machinery_core::{Config, Server};
use machinery_dashboard::{Dashboard, DashboardConfig};
use machinery_redis as _;
use tests::RedisServer;
use tower::ServiceExt;

/// One engine under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Memory,
    Redis,
}

pub const ENGINES: [Engine; 2] = [Engine::Memory, Engine::Redis];

/// A dashboard over a fresh server of `engine`.
pub struct Env {
    pub engine: Engine,
    pub server: Server,
    pub router: Router,
    /// Kept alive while the test runs (killed on drop).
    pub redis: Option<RedisServer>,
}

/// A reply: status, headers and body text.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Where a redirect goes.
    pub fn location(&self) -> String {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
}

impl Env {
    /// A dashboard with default settings over a fresh `engine` server.
    pub async fn new(engine: Engine) -> Env {
        Env::with_config(engine, DashboardConfig::default()).await
    }

    /// A dashboard with `dashboard` settings over a fresh `engine` server.
    pub async fn with_config(engine: Engine, dashboard: DashboardConfig) -> Env {
        let (server, redis) = match engine {
            Engine::Memory => (Server::memory(), None),
            Engine::Redis => {
                let redis = RedisServer::start();
                let mut config = Config::default();
                config.broker = redis.url();
                config.result_backend = Some(redis.url());
                let server = Server::from_config(config).await.expect("connect to redis");
                (server, Some(redis))
            }
        };
        let router = Dashboard::new(server.inspect().expect("inspect"), dashboard).router();
        Env {
            engine,
            server,
            router,
            redis,
        }
    }

    /// Sends `request` through the router.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(Request::get(path).body(Body::empty()).expect("request"))
            .await
    }

    /// The CSRF token, read off a page as a script would (`<meta name="csrf-token">`).
    pub async fn csrf(&self) -> String {
        let page = self.get("/workers").await;
        csrf_of(&page.body).expect("every page carries the CSRF token")
    }

    /// `POST path` with `fields` as a form, plus the right CSRF token.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let token = self.csrf().await;
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        all.push(("csrf", &token));
        self.post_raw(path, &all, &[]).await
    }

    /// `POST path` with exactly `fields` and extra `headers`.
    pub async fn post_raw(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Reply {
        let body = serde_urlencoded::to_string(fields).expect("form");
        let mut request =
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("host"))
        {
            request = request.header(header::HOST, "localhost:8080");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(Body::from(body)).expect("request"))
            .await
    }
}

/// The CSRF token of a page: its `<meta name="csrf-token">`.
pub fn csrf_of(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf-token\" content=\"")? + "name=\"csrf-token\" content=\"".len();
    let rest = &html[at..];
    Some(rest[..rest.find('"')?].to_owned())
}
