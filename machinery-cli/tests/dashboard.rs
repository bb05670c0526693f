//! `machinery dashboard`, run for real against a private `redis-server`: it serves the
//! pages and the JSON routes, refuses a non-loopback address without credentials
//! before listening, and with credentials answers 401 without them and 200 with them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tests::RedisServer;

/// How long the dashboard may take to say where it listens.
const STARTUP: Duration = Duration::from_secs(30);

/// The `machinery` binary with no `MACHINERY_*` variable of this process, on `url`.
fn machinery(url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_machinery"));
    for (name, _) in std::env::vars() {
        if name.starts_with("MACHINERY_") {
            cmd.env_remove(name);
        }
    }
    cmd.arg("--broker").arg(url).args(args);
    cmd
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// A running `machinery dashboard`, killed (by its PID) on drop.
struct Running {
    child: Child,
}

impl Running {
    /// Starts `machinery dashboard` with `args` and waits for the line that says where
    /// it listens; that line.
    fn start(redis: &RedisServer, args: &[&str], vars: &[(&str, &str)]) -> (Running, String) {
        let mut all = vec!["dashboard"];
        all.extend_from_slice(args);
        let mut cmd = machinery(&redis.url(), &all);
        cmd.envs(vars.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start machinery dashboard");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut running = Running { child };
        match rx.recv_timeout(STARTUP) {
            Ok(line) if !line.is_empty() => (running, line),
            outcome => {
                let _ = running.child.kill();
                let mut stderr = String::new();
                if let Some(mut err) = running.child.stderr.take() {
                    let _ = err.read_to_string(&mut stderr);
                }
                panic!(
                    "machinery dashboard {args:?} did not say where it listens within \
                     {STARTUP:?} ({outcome:?}); stderr: {stderr}"
                );
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A reply read off the wire: status code, the whole head and the body.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

/// `GET path` over a plain HTTP/1.1 connection to `127.0.0.1:port`, with `headers`.
fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the dashboard");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read reply");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn basic(user: &str, password: &str) -> String {
    // Base64 by hand: the test needs no dependency for one header.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{user}:{password}").into_bytes();
    let mut out = String::from("Basic ");
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn serves_pages_and_json_on_loopback() {
    let redis = RedisServer::start();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (_dashboard, line) = Running::start(&redis, &["--listen", &listen], &[]);
    assert_eq!(
        line.trim(),
        format!("dashboard at http://{listen}/ (Ctrl-C stops)")
    );

    let page = get(port, "/", &[]);
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.head.to_ascii_lowercase().contains("text/html"),
        "{page:?}"
    );
    assert!(page.body.contains("Machinery"), "{page:?}");

    let queues = get(port, "/api/queues", &[]);
    assert_eq!(queues.status, 200, "{queues:?}");
    serde_json::from_str::<serde_json::Value>(&queues.body)
        .unwrap_or_else(|e| panic!("/api/queues is not JSON ({e}): {queues:?}"));
}

#[test]
fn json_says_where_it_listens_and_the_configuration_gives_the_address() {
    let redis = RedisServer::start();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (_dashboard, line) = Running::start(
        &redis,
        &["--json"],
        &[("MACHINERY_DASHBOARD_LISTEN", listen.as_str())],
    );
    let said: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(said["listen"], listen);
    assert_eq!(said["url"], format!("http://{listen}/"));
    assert_eq!(get(port, "/api/queues", &[]).status, 200);
}

#[test]
fn refuses_a_public_address_without_credentials() {
    let redis = RedisServer::start();
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let out = machinery(&redis.url(), &["dashboard", "--listen", &listen])
        .output()
        .expect("run machinery dashboard");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!(
            "refusing to serve the dashboard on {listen} without credentials"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("MACHINERY_DASHBOARD_TOKEN"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing may listen on {port} after the refusal"
    );

    // A token too short to protect anything is a usage error too.
    let out = machinery(
        &redis.url(),
        &["dashboard", "--listen", &listen, "--token", "short"],
    )
    .output()
    .expect("run machinery dashboard");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("at least 16 characters"), "{stderr}");
}

#[test]
fn a_token_guards_a_public_address() {
    let redis = RedisServer::start();
    let port = free_port();
    let token = "s3cret-token-0123456789";
    let (_dashboard, _) = Running::start(
        &redis,
        &["--listen", &format!("0.0.0.0:{port}"), "--token", token],
        &[],
    );
    for path in ["/", "/api/queues"] {
        let refused = get(port, path, &[]);
        assert_eq!(refused.status, 401, "{path}: {refused:?}");
        assert!(!refused.body.contains("Machinery"), "{path}: {refused:?}");
        let wrong = get(
            port,
            path,
            &[("Authorization", "Bearer s3cret-token-0123456780")],
        );
        assert_eq!(wrong.status, 401, "{path}: {wrong:?}");
        let bearer = format!("Bearer {token}");
        let ok = get(port, path, &[("Authorization", &bearer)]);
        assert_eq!(ok.status, 200, "{path}: {ok:?}");
    }
}

#[test]
fn basic_auth_guards_a_public_address() {
    let redis = RedisServer::start();
    let port = free_port();
    let (_dashboard, _) = Running::start(
        &redis,
        &["--listen", &format!("0.0.0.0:{port}")],
        &[
            ("MACHINERY_DASHBOARD_USERNAME", "ops"),
            ("MACHINERY_DASHBOARD_PASSWORD", "from-the-environment"),
        ],
    );
    let refused = get(port, "/api/queues", &[]);
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(
        refused
            .head
            .to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{refused:?}"
    );
    let wrong = get(
        port,
        "/api/queues",
        &[("Authorization", &basic("ops", "guess"))],
    );
    assert_eq!(wrong.status, 401, "{wrong:?}");
    let ok = get(
        port,
        "/api/queues",
        &[("Authorization", &basic("ops", "from-the-environment"))],
    );
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(
        get(
            port,
            "/",
            &[("Authorization", &basic("ops", "from-the-environment"))]
        )
        .status,
        200
    );
}

#[test]
fn flags_override_the_configured_credentials() {
    let redis = RedisServer::start();
    let port = free_port();
    let (_dashboard, _) = Running::start(
        &redis,
        &[
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--username",
            "admin",
            "--password",
            "from-the-flag",
        ],
        &[
            ("MACHINERY_DASHBOARD_USERNAME", "ops"),
            ("MACHINERY_DASHBOARD_PASSWORD", "from-the-environment"),
        ],
    );
    let old = get(
        port,
        "/api/queues",
        &[("Authorization", &basic("ops", "from-the-environment"))],
    );
    assert_eq!(old.status, 401, "{old:?}");
    let new = get(
        port,
        "/api/queues",
        &[("Authorization", &basic("admin", "from-the-flag"))],
    );
    assert_eq!(new.status, 200, "{new:?}");
}

#[test]
fn basic_header_encodes_as_rfc_7617_says() {
    // The example of RFC 7617, section 2.
    assert_eq!(
        basic("Aladdin", "open sesame"),
        "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    );
    assert_eq!(basic("a", "b"), "Basic YTpi");
}
