//! The event WebSockets, driven over a real socket the way Prefect's clients use them
//! (PROTOCOL.md): `/api/events/in` for `emit_event`, `/api/events/out` for subscribers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tripwire::model::{Event, JsonPath};
use tripwire::service::{Service, ServiceConfig};
use uuid::Uuid;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

/// A served app over a data directory that is removed on drop.
struct App {
    service: Service,
    addr: SocketAddr,
    dir: PathBuf,
}

impl App {
    async fn start(test: &str) -> App {
        let dir = std::env::temp_dir().join(format!("tripwire-websocket-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let service = Service::start(ServiceConfig::new(&dir)).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = tripwire::http::router(service.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        App { service, addr, dir }
    }

    /// Connects to `path`, asking for the `prefect` subprotocol when `prefect` is set.
    async fn connect(&self, path: &str, prefect: bool) -> Socket {
        let mut request = format!("ws://{}{path}", self.addr).into_client_request().unwrap();
        if prefect {
            request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("prefect"));
        }
        let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        let protocol = response.headers().get("Sec-WebSocket-Protocol").map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(protocol.as_deref(), prefect.then_some("prefect"));
        socket
    }

    /// Connects as `emit_event` does: subprotocol, ping/pong, then the auth exchange.
    async fn connect_prefect(&self, path: &str) -> Socket {
        let mut socket = self.connect(path, true).await;
        checkpoint(&mut socket).await;
        socket.send(Message::text(json!({"type": "auth", "token": null}).to_string())).await.unwrap();
        assert_eq!(next_json(&mut socket).await, json!({"type": "auth_success"}));
        socket
    }

    async fn stored(&self, id: Uuid) -> Option<Event> {
        self.service.event(id).await.unwrap()
    }

    async fn count(&self) -> u64 {
        self.service.event_count().await.unwrap()
    }

    async fn stop(self) {
        self.service.shutdown().await;
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn event_json(n: u128, name: &str, resource: &str) -> Value {
    json!({
        "id": Uuid::from_u128(n).to_string(),
        "occurred": "2026-01-01T00:00:00Z",
        "event": name,
        "resource": {"prefect.resource.id": resource},
        "related": [{"prefect.resource.id": "customer.42", "prefect.resource.role": "customer"}],
        "payload": {"n": n as u64},
        "follows": null,
    })
}

async fn next_message(socket: &mut Socket) -> Message {
    tokio::time::timeout(WAIT, socket.next()).await.expect("no message in time").expect("socket ended").unwrap()
}

/// The next text frame as JSON, skipping pings and pongs.
async fn next_json(socket: &mut Socket) -> Value {
    loop {
        match next_message(socket).await {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Sends a ping and waits for its pong, as Prefect's client checkpoints.
async fn checkpoint(socket: &mut Socket) {
    socket.send(Message::Ping(b"checkpoint".to_vec().into())).await.unwrap();
    match next_message(socket).await {
        Message::Pong(data) => assert_eq!(&data[..], b"checkpoint"),
        other => panic!("expected the pong, got {other:?}"),
    }
}

/// Waits for the server's close frame and returns its code and reason.
async fn closed_with(socket: &mut Socket) -> (CloseCode, String) {
    loop {
        match next_message(socket).await {
            Message::Close(Some(frame)) => return (frame.code, frame.reason.as_str().to_owned()),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn send_event(socket: &mut Socket, event: &Value) {
    socket.send(Message::text(event.to_string())).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn emitted_events_are_durable_at_the_pong_and_stored_once_after_a_resend() {
    let app = App::start("resend").await;
    let first: Vec<Value> = (1..=5).map(|n| event_json(n, "order.created", &format!("order.{n}"))).collect();

    let mut socket = app.connect_prefect("/api/events/in").await;
    for event in &first {
        send_event(&mut socket, event).await;
    }
    checkpoint(&mut socket).await;
    for n in 1..=5 {
        let stored = app.stored(Uuid::from_u128(n)).await.expect("stored before the pong");
        assert_eq!(stored.resource.id(), format!("order.{n}"));
        assert!(stored.received.is_some());
    }
    socket.close(None).await.unwrap();

    // Prefect's client resends everything not checkpointed after a reconnect.
    let mut socket = app.connect_prefect("/api/events/in").await;
    let mut again = first.clone();
    again.push(event_json(6, "order.paid", "order.1"));
    for event in &again {
        send_event(&mut socket, event).await;
    }
    checkpoint(&mut socket).await;
    assert_eq!(app.count().await, 6);
    for n in 1..=6 {
        assert!(app.stored(Uuid::from_u128(n)).await.is_some());
    }
    socket.close(None).await.unwrap();

    let events: Vec<Event> = again.iter().map(|v| Event::from_json(v, &JsonPath::root(), None).unwrap()).collect();
    let report = app.service.ingest(events).await.unwrap();
    assert_eq!(report.duplicates, (1..=6).map(Uuid::from_u128).collect::<Vec<_>>());
    assert_eq!(app.count().await, 6);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_without_the_subprotocol_sends_events_directly() {
    let app = App::start("plain").await;
    let mut socket = app.connect("/api/events/in", false).await;
    // No auth exchange: the first frame is an event; `id` and `occurred` get defaults.
    send_event(&mut socket, &json!({"event": "order.created", "resource": {"prefect.resource.id": "order.1"}})).await;
    send_event(&mut socket, &event_json(7, "order.paid", "order.1")).await;
    checkpoint(&mut socket).await;
    assert_eq!(app.count().await, 2);
    assert_eq!(app.stored(Uuid::from_u128(7)).await.unwrap().event, "order.paid");
    socket.close(None).await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_event_closes_with_1007_naming_the_field() {
    let app = App::start("invalid").await;
    let mut socket = app.connect_prefect("/api/events/in").await;
    send_event(&mut socket, &event_json(1, "order.created", "order.1")).await;
    send_event(&mut socket, &json!({"event": "order.created", "resource": {"name": "no id"}})).await;
    send_event(&mut socket, &event_json(2, "order.created", "order.2")).await;
    let (code, reason) = closed_with(&mut socket).await;
    assert_eq!(code, CloseCode::Invalid);
    assert!(reason.contains("$.resource") && reason.contains("prefect.resource.id"), "{reason}");
    // The event before the bad one is kept; nothing after it is read.
    assert!(app.stored(Uuid::from_u128(1)).await.is_some());
    assert!(app.stored(Uuid::from_u128(2)).await.is_none());

    let mut socket = app.connect("/api/events/in", false).await;
    socket.send(Message::text("{not json")).await.unwrap();
    let (code, reason) = closed_with(&mut socket).await;
    assert_eq!(code, CloseCode::Invalid);
    assert!(reason.contains("not valid JSON"), "{reason}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_message_must_be_auth_when_the_subprotocol_is_used() {
    let app = App::start("auth").await;
    let mut socket = app.connect("/api/events/in", true).await;
    send_event(&mut socket, &event_json(1, "order.created", "order.1")).await;
    let (code, reason) = closed_with(&mut socket).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("auth"), "{reason}");
    assert_eq!(app.count().await, 0);

    let mut socket = app.connect("/api/events/in", true).await;
    socket.send(Message::text(json!({"type": "auth", "token": "any token"}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut socket).await, json!({"type": "auth_success"}));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribers_get_the_backfill_then_live_events_that_match() {
    let app = App::start("subscribe").await;
    let earlier: Vec<Event> =
        [(1, "order.created", "order.1"), (2, "user.signed-up", "user.1"), (3, "order.paid", "order.1")]
            .iter()
            .map(|(n, name, resource)| {
                Event::from_json(&event_json(*n, name, resource), &JsonPath::root(), None).unwrap()
            })
            .collect();
    app.service.ingest(earlier).await.unwrap();

    let mut socket = app.connect_prefect("/api/events/out").await;
    let filter = json!({"event": {"prefix": ["order."]}, "related": {"role": ["customer"]}, "order": "ASC"});
    socket
        .send(Message::text(json!({"type": "filter", "filter": filter, "backfill": true}).to_string()))
        .await
        .unwrap();
    for n in [1, 3] {
        let message = next_json(&mut socket).await;
        assert_eq!(message["type"], "event");
        assert_eq!(message["event"]["id"], Uuid::from_u128(n).to_string());
        assert!(message["event"]["received"].is_string(), "{message}");
    }

    // Live: the non-matching event is skipped, the matching ones arrive in order.
    let mut emitter = app.connect_prefect("/api/events/in").await;
    send_event(&mut emitter, &event_json(4, "user.signed-up", "user.2")).await;
    send_event(&mut emitter, &event_json(5, "order.shipped", "order.1")).await;
    checkpoint(&mut emitter).await;
    let message = next_json(&mut socket).await;
    assert_eq!(message["event"]["id"], Uuid::from_u128(5).to_string());
    assert_eq!(message["event"]["event"], "order.shipped");
    socket.close(None).await.unwrap();

    // Without backfill, only live events arrive.
    let mut socket = app.connect("/api/events/out", false).await;
    socket
        .send(Message::text(
            json!({"type": "filter", "filter": {"resource": {"id": ["order.9"]}}, "backfill": false}).to_string(),
        ))
        .await
        .unwrap();
    checkpoint(&mut socket).await;
    send_event(&mut emitter, &event_json(6, "order.created", "order.8")).await;
    send_event(&mut emitter, &event_json(7, "order.created", "order.9")).await;
    checkpoint(&mut emitter).await;
    let message = next_json(&mut socket).await;
    assert_eq!(message["event"]["id"], Uuid::from_u128(7).to_string());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_subscription_is_closed_with_a_reason() {
    let app = App::start("bad-filter").await;
    let mut socket = app.connect_prefect("/api/events/out").await;
    let message = json!({"type": "filter", "filter": {"event": {"prefix": "order."}}});
    socket.send(Message::text(message.to_string())).await.unwrap();
    let (code, reason) = closed_with(&mut socket).await;
    assert_eq!(code, CloseCode::Invalid);
    assert!(reason.contains("$.filter.event.prefix"), "{reason}");

    let mut socket = app.connect_prefect("/api/events/out").await;
    socket.send(Message::text(json!({"type": "subscribe"}).to_string())).await.unwrap();
    let (code, reason) = closed_with(&mut socket).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("filter"), "{reason}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_that_reads_keeps_up_with_a_burst_of_a_thousand_events() {
    let app = App::start("burst").await;
    let mut socket = app.connect("/api/events/out", false).await;
    socket.send(Message::text(json!({"type": "filter", "filter": {}, "backfill": false}).to_string())).await.unwrap();
    checkpoint(&mut socket).await;
    let burst: Vec<Event> = (1..=1000)
        .map(|n| Event::from_json(&event_json(n, "order.created", "order.1"), &JsonPath::root(), None).unwrap())
        .collect();
    app.service.ingest(burst).await.unwrap();
    for n in 1..=1000u128 {
        let message = next_json(&mut socket).await;
        assert_eq!(message["event"]["id"], Uuid::from_u128(n).to_string(), "{message}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backfill_stops_at_its_byte_limit_and_an_oversized_subscription_ends_the_connection() {
    let app = App::start("backfill-bytes").await;
    // Ten events of ~1 MB: only the newest that fit in BACKFILL_MAX_BYTES (8 MiB) are sent.
    let big: Vec<Event> = (1..=10u128)
        .map(|n| {
            let mut value = event_json(n, "order.created", &format!("order.{n}"));
            value["payload"] = json!({"blob": "x".repeat(1_000_000)});
            Event::from_json(&value, &JsonPath::root(), None).unwrap()
        })
        .collect();
    app.service.ingest(big).await.unwrap();
    let mut socket = app.connect("/api/events/out", false).await;
    socket.send(Message::text(json!({"type": "filter", "filter": {}, "backfill": true}).to_string())).await.unwrap();
    let fit = tripwire::http::BACKFILL_MAX_BYTES / 1_000_300;
    assert_eq!(fit, 8);
    for n in (10 - fit as u128 + 1)..=10 {
        let message = next_json(&mut socket).await;
        assert_eq!(message["event"]["id"], Uuid::from_u128(n).to_string());
    }
    // Nothing else was backfilled: the next message is a live one.
    app.service
        .ingest(vec![Event::from_json(&event_json(11, "order.paid", "order.1"), &JsonPath::root(), None).unwrap()])
        .await
        .unwrap();
    assert_eq!(next_json(&mut socket).await["event"]["id"], Uuid::from_u128(11).to_string());
    socket.close(None).await.unwrap();

    // A subscription message past MAX_SUBSCRIPTION_BYTES (1 MiB) ends the connection.
    let mut socket = app.connect("/api/events/out", false).await;
    let huge = json!({"type": "filter", "filter": {"event": {"name": ["x".repeat(2_000_000)]}}}).to_string();
    let _ = socket.send(Message::text(huge)).await;
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the connection ends");
    assert_ne!(ended, Some(CloseCode::Normal));
    // An ordinary subscription still works.
    let mut socket = app.connect("/api/events/out", false).await;
    socket.send(Message::text(json!({"type": "filter", "filter": {}, "backfill": false}).to_string())).await.unwrap();
    checkpoint(&mut socket).await;
    app.service
        .ingest(vec![Event::from_json(&event_json(12, "order.paid", "order.1"), &JsonPath::root(), None).unwrap()])
        .await
        .unwrap();
    assert_eq!(next_json(&mut socket).await["event"]["id"], Uuid::from_u128(12).to_string());
    app.stop().await;
}
