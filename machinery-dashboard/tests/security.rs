//! Credentials, CSRF and origin checks, and the headers every response carries, on
//! both engines.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{ENGINES, Env};
use machinery_dashboard::{Dashboard, DashboardConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_forbids_inline_scripts_and_framing() {
    for engine in ENGINES {
        let env = Env::new(engine).await;
        let reply = env.get("/").await;
        assert_eq!(reply.status, StatusCode::OK, "{engine:?}: {}", reply.body);
        let csp = reply.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(reply.headers[header::X_FRAME_OPTIONS], "DENY");
        let missing = env
            .send(Request::get("/nope").body(Body::empty()).unwrap())
            .await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert!(
            missing.body.contains("no dashboard page at /nope"),
            "{}",
            missing.body
        );
        for path in ["/tasks?queue=a&queue=b", "/?hours=24&hours=1", "/?hours=x"] {
            let reply = env.get(path).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
            assert!(reply.body.contains("<h1>400"), "{path}: {}", reply.body);
        }
        let reply = env.get("/api/tasks?queue=a&queue=b").await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert!(
            reply.json()["error"]
                .as_str()
                .unwrap()
                .contains("duplicate"),
            "{}",
            reply.body
        );
    }
}

fn with_auth(request: axum::http::request::Builder, value: &str) -> Request<Body> {
    request
        .header(header::AUTHORIZATION, value)
        .body(Body::empty())
        .unwrap()
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

const TOKEN: &str = "0123456789abcdef-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_guards_every_route() {
    for engine in ENGINES {
        let mut config = DashboardConfig::default();
        config.token = Some(TOKEN.to_owned());
        let env = Env::with_config(engine, config).await;
        for path in ["/", "/queues", "/api/queues", "/assets/style.css", "/nope"] {
            let reply = env.get(path).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{engine:?} {path}");
            assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
            assert!(!reply.body.contains("Machinery"), "{path}: {}", reply.body);
        }
        for wrong in [
            "Bearer 0123456789abcdef-tokeN",
            "Bearer 0123456789abcdef-token-and-more",
            "Bearer ",
            "Bearer",
            "0123456789abcdef-token",
            &basic("ops", TOKEN),
        ] {
            let reply = env.send(with_auth(Request::get("/"), wrong)).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{wrong}");
        }
        let ok = env
            .send(with_auth(Request::get("/"), &format!("Bearer {TOKEN}")))
            .await;
        assert_eq!(ok.status, StatusCode::OK);
        let ok = env
            .send(with_auth(
                Request::get("/api/queues"),
                &format!("bearer {TOKEN}"),
            ))
            .await;
        assert_eq!(ok.status, StatusCode::OK, "the scheme is case-insensitive");
        // An action needs the credentials before anything else.
        let refused = env.post_raw("/queues/q/pause", &[("csrf", "x")], &[]).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_guards_every_route_and_either_credential_works_when_both_are_set() {
    let mut config = DashboardConfig::default();
    config.username = Some("ops".to_owned());
    config.password = Some("pä:ss word".to_owned());
    let env = Env::with_config(common::Engine::Memory, config.clone()).await;
    let reply = env.get("/").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        reply.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic realm=")
    );
    for wrong in [
        basic("ops", "pä:ss wor"),
        basic("Ops", "pä:ss word"),
        basic("", "pä:ss word"),
        basic("ops:pä", "ss word:"),
        "Basic not-base64!".to_owned(),
        format!("Bearer {TOKEN}"),
    ] {
        let reply = env.send(with_auth(Request::get("/"), &wrong)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{wrong}");
    }
    let ok = env
        .send(with_auth(Request::get("/"), &basic("ops", "pä:ss word")))
        .await;
    assert_eq!(ok.status, StatusCode::OK);

    config.token = Some(TOKEN.to_owned());
    let env = Env::with_config(common::Engine::Memory, config).await;
    for good in [basic("ops", "pä:ss word"), format!("Bearer {TOKEN}")] {
        let reply = env.send(with_auth(Request::get("/queues"), &good)).await;
        assert_eq!(reply.status, StatusCode::OK, "{good}");
    }
}

/// Whether queue `q` is paused, as the broker says.
async fn paused(env: &Env, q: &str) -> bool {
    let queues = env.server.inspect().unwrap().queues().await.unwrap();
    queues
        .iter()
        .find(|e| e.name == q)
        .is_some_and(|e| e.paused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_need_the_csrf_token_and_the_same_origin() {
    for engine in ENGINES {
        let env = Env::new(engine).await;
        let token = env.csrf().await;
        // A queue the broker knows: one task sent to it.
        let mut raw = machinery_core::RawSignature::new("dash_security::nothing", Vec::new());
        raw.routing_key = "guarded".to_owned();
        env.server.send_raw(raw).await.expect("send");
        let refused = [
            (vec![], vec![]),
            (vec![("csrf", "wrong")], vec![]),
            (vec![("csrf", "")], vec![]),
            (
                vec![("csrf", token.as_str())],
                vec![("origin", "https://evil.example")],
            ),
            (vec![("csrf", token.as_str())], vec![("origin", "null")]),
            (
                vec![("csrf", token.as_str())],
                vec![("sec-fetch-site", "cross-site")],
            ),
            (
                vec![("csrf", token.as_str())],
                vec![("sec-fetch-site", "same-site")],
            ),
            (vec![], vec![("x-csrf-token", "wrong")]),
        ];
        for (fields, headers) in refused {
            let reply = env
                .post_raw("/queues/guarded/pause", &fields, &headers)
                .await;
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{engine:?} {fields:?} {headers:?}: {}",
                reply.body
            );
            assert!(
                !paused(&env, "guarded").await,
                "{fields:?} {headers:?} paused the queue"
            );
        }
        let get = env.get("/queues/guarded/pause").await;
        assert_eq!(
            get.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "actions are POST only"
        );
        assert!(!paused(&env, "guarded").await);

        // The token in the form, from the dashboard's own origin.
        let ok = env
            .post_raw(
                "/queues/guarded/pause",
                &[("csrf", &token), ("back", "/queues")],
                &[
                    ("origin", "http://localhost:8080"),
                    ("sec-fetch-site", "same-origin"),
                ],
            )
            .await;
        assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
        assert!(
            ok.location().starts_with("/queues?flash="),
            "{}",
            ok.location()
        );
        assert!(paused(&env, "guarded").await);
        // The token in the header, as a script sends it.
        let ok = env
            .post_raw("/queues/guarded/resume", &[], &[("x-csrf-token", &token)])
            .await;
        assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
        assert!(!paused(&env, "guarded").await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_stay_on_the_dashboard_and_messages_are_escaped() {
    let env = Env::new(common::Engine::Memory).await;
    for back in [
        "//evil.example/x",
        "https://evil.example/",
        "\\\\evil",
        "evil",
        "",
    ] {
        let reply = env.post("/queues/somewhere/pause", &[("back", back)]).await;
        assert_eq!(
            reply.status,
            StatusCode::SEE_OTHER,
            "{back}: {}",
            reply.body
        );
        let to = reply.location();
        assert!(to.starts_with("/?flash="), "{back} → {to}");
    }
    let reply = env
        .post(
            "/queues/somewhere/resume",
            &[("back", "/tasks?queue=a&flash=old")],
        )
        .await;
    assert_eq!(
        reply.location(),
        "/tasks?queue=a&flash=Queue+somewhere+resumed."
    );
    let page = env
        .get("/?flash=%3Cscript%3Ewindow.__pwned%3D1%3C%2Fscript%3E")
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("<script>window"), "{}", page.body);
    assert!(
        page.body
            .contains("&lt;script&gt;window.__pwned=1&lt;/script&gt;")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mounted_dashboard_links_under_its_path() {
    let server = machinery_core::Server::memory();
    let dashboard = Dashboard::new(server.inspect().unwrap(), DashboardConfig::default());
    let app = axum::Router::new().nest("/admin/tasks", dashboard.router());
    let response = tower::ServiceExt::oneshot(
        app,
        Request::get("/admin/tasks/queues")
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("href=\"/admin/tasks/assets/style.css"),
        "{body}"
    );
    assert!(body.contains("href=\"/admin/tasks/workers\""), "{body}");
    // The mount path itself, not `/admin/tasks/`, which a nested router does not match.
    assert!(body.contains("href=\"/admin/tasks\""), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_only_loopback_hosts_are_answered() {
    let env = Env::new(common::Engine::Memory).await;
    let token = env.csrf().await;
    // DNS rebinding: another site's name resolved to 127.0.0.1 is its own origin.
    for host in [
        "attacker.example",
        "attacker.example:8080",
        "10.0.0.5:8080",
        "localhost.attacker.example",
    ] {
        let page = env
            .send(
                Request::get("/api/queues")
                    .header(header::HOST, host)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(page.status, StatusCode::MISDIRECTED_REQUEST, "{host}");
        assert!(page.body.contains("loopback"), "{}", page.body);
        let action = env
            .post_raw(
                "/queues/rebound/pause",
                &[("csrf", &token)],
                &[("host", host), ("origin", &format!("http://{host}"))],
            )
            .await;
        assert_eq!(action.status, StatusCode::MISDIRECTED_REQUEST, "{host}");
    }
    assert!(!paused(&env, "rebound").await);
    // A loopback Host beside a foreign one, or a foreign absolute-form target.
    let two = env
        .send(
            Request::get("/api/queues")
                .header(header::HOST, "localhost")
                .header(header::HOST, "attacker.example")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(two.status, StatusCode::MISDIRECTED_REQUEST);
    assert!(
        two.json()["error"]
            .as_str()
            .unwrap()
            .contains("attacker.example")
    );
    let absolute = env
        .send(
            Request::get("http://attacker.example/api/queues")
                .header(header::HOST, "localhost")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(absolute.status, StatusCode::MISDIRECTED_REQUEST);
    for host in [
        "localhost:8080",
        "127.0.0.1:8080",
        "[::1]:8080",
        "127.0.0.2",
    ] {
        let page = env
            .send(
                Request::get("/api/queues")
                    .header(header::HOST, host)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{host}");
    }
    // With credentials any name may reach it: the credentials are the guard.
    let mut config = DashboardConfig::default();
    config.token = Some(TOKEN.to_owned());
    let env = Env::with_config(common::Engine::Memory, config).await;
    let page = env
        .send(
            Request::get("/api/queues")
                .header(header::HOST, "dash.example.com")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_may_post_with_the_token_header_and_no_body() {
    let env = Env::new(common::Engine::Memory).await;
    let token = env.csrf().await;
    let reply = env
        .send(
            Request::post("/queues/scripted/pause")
                .header(header::HOST, "127.0.0.1:8080")
                .header("x-csrf-token", &token)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert!(paused(&env, "scripted").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_secrets_set_in_code_open_nothing() {
    let mut short = DashboardConfig::default();
    short.token = Some("x".to_owned());
    assert!(
        !short.has_credentials(),
        "a token validation refuses is no token"
    );
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let dashboard = Dashboard::new(machinery_core::Server::memory().inspect().unwrap(), short);
    assert!(
        machinery_dashboard::serve(&dashboard, listener, async {})
            .await
            .is_err()
    );
    let mut config = DashboardConfig::default();
    config.token = Some(String::new());
    config.username = Some(String::new());
    config.password = Some(String::new());
    assert!(!config.has_credentials());
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let dashboard = Dashboard::new(machinery_core::Server::memory().inspect().unwrap(), config);
    let refused = machinery_dashboard::serve(&dashboard, listener, async {}).await;
    assert!(
        refused
            .unwrap_err()
            .to_string()
            .contains("without credentials")
    );
    // Mounted by an app anyway, it is the loopback-only dashboard, not an open one.
    let env = Env::new(common::Engine::Memory).await;
    let reply = env
        .send(
            Request::get("/")
                .header(header::HOST, "dash.example.com")
                .header(header::AUTHORIZATION, "Bearer ")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::MISDIRECTED_REQUEST);
}
