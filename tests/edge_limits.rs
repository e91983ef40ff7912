//! The limits at the HTTP edge, against the real `tripwire serve` binary with small timeouts:
//! idle and half-sent connections are closed, connections past the cap are refused, slow
//! requests time out, slow subscribers are cut off, and `/api/events/in` stays bounded; an
//! ordinary request still works afterwards.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{temp_dir, Http, Server};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts `tripwire serve` on a free port with extra settings.
fn start_with(data: &Path, settings: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tripwire"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(settings)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tripwire binary starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut sent = false;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.split('/').next().unwrap_or_default().to_owned());
                    sent = true;
                }
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(30)).expect("the server reports where it listens");
    Server { child, api: format!("http://{addr}/api"), data: data.to_path_buf() }
}

fn event(name: &str, resource: &str) -> Value {
    json!({"event": name, "resource": {"prefect.resource.id": resource}})
}

/// Reads until the server closes the connection (or `limit` passes); returns what was read
/// and whether it was closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            got.extend_from_slice(&buf[..n]);
        }
    };
    let closed = tokio::time::timeout(limit, read_all).await.is_ok();
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_half_sent_connections_are_closed_and_the_cap_refuses_the_rest() {
    let data = temp_dir("edge-connections");
    let server = start_with(&data, &["--header-timeout", "6s", "--max-connections", "1024"]);
    let http = Http::new(&server.api);
    assert_eq!(http.post("/events", event("before", "a")).await.0, 200);
    drop(http); // its kept-alive connection would count against the cap

    // 1,100 connections: 100 send half a request head, the last 10 a whole request (they are
    // past the cap), the rest nothing at all.
    let mut connections = Vec::new();
    for i in 0..1100 {
        let mut stream = TcpStream::connect(server.addr()).await.unwrap();
        if i >= 1090 {
            stream.write_all(b"GET /api/admin/version HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        } else if i % 11 == 0 {
            stream.write_all(b"POST /api/events HTTP/1.1\r\nhost: x\r\ncontent-type: app").await.unwrap();
        }
        connections.push(stream);
    }
    // The server is full: one more ordinary request is refused at once, naming the limit.
    let http = Http::new(&server.api);
    let (status, body) = http.raw_post("/events", event("refused", "a").to_string()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "too_many_connections");
    assert!(body["error"]["message"].as_str().unwrap().contains("1024"), "{body}");

    // Every connection ends: those past the cap at once (with a 503 for those that sent a
    // request), the idle and half-sent ones after the header timeout. None is held for ever.
    let readers: Vec<_> = connections
        .into_iter()
        .map(|mut stream| tokio::spawn(async move { read_until_closed(&mut stream, Duration::from_secs(60)).await }))
        .collect();
    let mut refused = 0;
    for reader in readers {
        let (answer, closed) = reader.await.unwrap();
        assert!(closed, "a connection was still open after 60 s: {answer:?}");
        assert!(!answer.contains(" 200 "), "{answer}");
        if answer.starts_with("HTTP/1.1 503") {
            assert!(answer.contains("too_many_connections"), "{answer}");
            refused += 1;
        }
    }
    assert_eq!(refused, 10, "the whole requests past the cap are answered 503");

    // Ordinary requests work again, over a kept-alive connection.
    for n in 0..3 {
        let (status, body) = http.post("/events", event("after", &format!("a.{n}"))).await;
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_is_closed_a_slow_body_gets_408_and_the_long_poll_is_not_cut() {
    let data = temp_dir("edge-request-timeout");
    let server = start_with(&data, &["--request-timeout", "1s", "--header-timeout", "2s"]);
    // A kept-alive connection left idle after its answer is closed by the header timeout.
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream.write_all(b"GET /api/admin/version HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(60)).await;
    assert!(closed && answer.starts_with("HTTP/1.1 200"), "{answer}");

    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream
        .write_all(
            b"POST /api/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n[",
        )
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(30)).await;
    assert!(closed, "{answer}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout") && answer.contains("within 1 s"), "{answer}");

    // The worker long poll waits for its own `wait_seconds` (3 s here), past the 1 s timeout.
    let http = Http::new(&server.api);
    let claim = json!({"worker": "w", "deployments": ["nothing"], "wait_seconds": 3});
    let (status, body) = http.post("/runs/claim", claim).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!([]));
    assert_eq!(http.post("/events", event("after", "a")).await.0, 200);
}

#[test]
fn absurd_listener_settings_are_refused_at_startup_naming_the_setting() {
    let data = temp_dir("edge-settings");
    for (setting, value, expected) in [
        ("--header-timeout", "1000000000000", "at most 86400 s"),
        ("--request-timeout", "9223372036854775807d", "too long"),
        ("--request-timeout", "0s", "positive"),
        ("--max-connections", "0", "between 1 and 1000000"),
        ("--max-connections", "18446744073709551616", "not a number"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_tripwire"))
            .args(["serve", "--addr", "127.0.0.1:0", "--data"])
            .arg(&data)
            .args([setting, value])
            .output()
            .unwrap();
        assert!(!output.status.success(), "{setting} {value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(setting) && stderr.contains(expected), "{setting} {value}: {stderr}");
    }
}
