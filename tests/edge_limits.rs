//! The limits at the HTTP edge, against the real `tripwire serve` binary with small timeouts:
//! idle and half-sent connections are closed, connections past the cap are refused, slow
//! requests time out, slow subscribers are cut off, and `/api/events/in` stays bounded; an
//! ordinary request still works afterwards.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{temp_dir, Http, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Starts `tripwire serve` on a free port with extra settings.
fn start_with(data: &Path, settings: &[&str]) -> Server {
    Server::start_with(data, settings)
}

/// Stored events named `name`, counted by following `GET /api/events` page by page.
async fn count_pages(http: &Http, name: &str) -> usize {
    let mut count = 0;
    let mut page: Option<Value> = None;
    loop {
        let path = match &page {
            Some(p) => format!("/events?name={name}&limit=1000&page={p}"),
            None => format!("/events?name={name}&limit=1000"),
        };
        let (status, body) = http.get(&path).await;
        assert_eq!(status, 200, "{}", body.to_string().chars().take(300).collect::<String>());
        count += body["events"].as_array().map_or(0, Vec::len);
        match &body["next_page"] {
            Value::Null => return count,
            next => page = Some(next.clone()),
        }
    }
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
    common::survives(server, &["--header-timeout", "6s", "--max-connections", "1024"]).await;
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
    common::survives(server, &["--request-timeout", "1s", "--header-timeout", "2s"]).await;
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

/// The server's resident memory, in MiB.
fn rss_mib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(server: &Server, path: &str) -> Socket {
    tokio_tungstenite::connect_async(format!("ws://{}{path}", server.addr())).await.unwrap().0
}

/// Reads messages until the close frame and returns its code and reason (`None` when the
/// connection ends without one).
async fn close_frame(socket: &mut Socket) -> Option<(CloseCode, String)> {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), socket.next()).await.expect("no close in 60 s") {
            Some(Ok(Message::Close(Some(frame)))) => return Some((frame.code, frame.reason.as_str().to_owned())),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

fn big_event(n: usize, bytes: usize) -> Value {
    json!({"event": "big", "resource": {"prefect.resource.id": format!("big.{n}")}, "payload": {"blob": "x".repeat(bytes)}})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_that_never_reads_is_closed_and_memory_stays_bounded() {
    let data = temp_dir("edge-subscriber");
    // A long send timeout: the subscriber is closed by the bytes waiting for it, and its close
    // frame waits (behind what the socket still holds) until the test reads it.
    let server = start_with(&data, &["--subscriber-send-timeout", "300s"]);
    let http = Http::new(&server.api);
    let mut stalled = connect(&server, "/api/events/out").await;
    stalled.send(Message::text(json!({"type": "filter", "filter": {}, "backfill": false}).to_string())).await.unwrap();
    // Wait until the subscription is live: a ping is answered after the filter was read.
    stalled.send(Message::Ping(b"live".to_vec().into())).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stalled.next()).await.unwrap() {
            Some(Ok(Message::Pong(_))) => break,
            Some(Ok(_)) => {}
            other => panic!("the subscription ended: {other:?}"),
        }
    }
    // ~2,000 events of 200 KB (400 MB), 4 per request; the subscriber reads none of them.
    let mut peak = 0;
    for request in 0..500 {
        let batch: Vec<Value> = (0..4).map(|i| big_event(request * 4 + i, 200_000)).collect();
        let (status, body) = http.post("/events", Value::Array(batch)).await;
        assert_eq!(status, 200, "{body}");
        if request % 25 == 0 {
            peak = peak.max(rss_mib(&server));
        }
    }
    peak = peak.max(rss_mib(&server));
    assert!(peak < 600, "the server grew to {peak} MiB");

    // Ordinary events still post, and a subscriber that reads gets them.
    let mut reader = connect(&server, "/api/events/out").await;
    reader.send(Message::text(json!({"type": "filter", "filter": {}, "backfill": false}).to_string())).await.unwrap();
    reader.send(Message::Ping(b"live".to_vec().into())).await.unwrap();
    while !matches!(reader.next().await, Some(Ok(Message::Pong(_)))) {}
    assert_eq!(http.post("/events", event("after", "a.1")).await.0, 200);
    // (Events committed before it subscribed may still reach it first.)
    loop {
        let Some(Ok(Message::Text(text))) = tokio::time::timeout(Duration::from_secs(30), reader.next()).await.unwrap()
        else {
            panic!("no event for the reader")
        };
        if text.contains("\"a.1\"") {
            break;
        }
    }

    // The stalled subscriber was closed with 1008, behind what the socket held for it.
    let (code, reason) = close_frame(&mut stalled).await.expect("a close frame");
    assert_eq!(code, CloseCode::Policy, "{reason}");
    assert!(reason.starts_with("subscriber too slow: more than 16777216 bytes of events waiting"), "{reason}");
    common::survives(server, &["--subscriber-send-timeout", "300s"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_big_frames_on_events_in_stays_bounded_and_oversized_ones_are_refused() {
    let data = temp_dir("edge-ingest");
    let server = start_with(&data, &[]);
    let mut socket = connect(&server, "/api/events/in").await;
    // 300 frames of ~1.4 MB (420 MB) as fast as the server takes them.
    let mut peak = 0;
    for n in 0..300 {
        socket.send(Message::text(big_event(n, 1_400_000).to_string())).await.unwrap();
        if n % 20 == 0 {
            peak = peak.max(rss_mib(&server));
        }
    }
    socket.send(Message::Ping(b"done".to_vec().into())).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(120), socket.next()).await.unwrap() {
            Some(Ok(Message::Pong(_))) => break,
            Some(Ok(_)) => {}
            other => panic!("the stream ended: {other:?}"),
        }
    }
    peak = peak.max(rss_mib(&server));
    assert!(peak < 600, "the server grew to {peak} MiB");
    // Every frame is stored: count them page by page (a page holds at most 16 MiB of events).
    let http = Http::new(&server.api);
    assert_eq!(count_pages(&http, "big").await, 300, "all the frames are stored");

    // Just past the event limit: 1009 naming it.
    socket.send(Message::text(big_event(1000, 1_500_001).to_string())).await.unwrap();
    let (code, reason) = close_frame(&mut socket).await.expect("a close frame");
    assert_eq!(code, CloseCode::Size);
    assert!(reason.contains("at most 1500000 bytes"), "{reason}");
    // An absurd frame (20 MB) is refused by the WebSocket layer: the connection ends without
    // the frame being buffered or stored.
    let mut socket = connect(&server, "/api/events/in").await;
    let _ = socket.send(Message::text(big_event(2000, 20_000_000).to_string())).await;
    let ended = close_frame(&mut socket).await;
    assert!(ended.as_ref().is_none_or(|(code, _)| *code != CloseCode::Normal), "{ended:?}");
    // An ordinary event still goes in.
    let mut socket = connect(&server, "/api/events/in").await;
    socket.send(Message::text(event("ordinary", "o.1").to_string())).await.unwrap();
    socket.send(Message::Ping(b"ok".to_vec().into())).await.unwrap();
    while !matches!(socket.next().await, Some(Ok(Message::Pong(_)))) {}
    assert_eq!(count_pages(&http, "big").await + count_pages(&http, "ordinary").await, 301);
    common::survives(server, &[]).await;
}
