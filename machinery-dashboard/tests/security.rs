//! Credentials, CSRF and origin checks, and the headers every response carries, on
//! both engines.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{ENGINES, Env};

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
    }
}
