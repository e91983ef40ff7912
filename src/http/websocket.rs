//! Prefect's event WebSockets: `GET /api/events/in` (what `emit_event` streams to) and
//! `GET /api/events/out` (what Prefect's event subscribers read).
//!
//! Both accept the `prefect` subprotocol; a client that asks for it first sends
//! `{"type": "auth", "token": ...}` and is answered `{"type": "auth_success"}` (see
//! [`admit`]). A client that does not ask for it skips the exchange: while auth is on,
//! it must then have sent credentials with the upgrade (the access layer refuses it
//! otherwise). A connection whose API key is revoked is closed with 1008 at once.
//!
//! The per-connection loops are generic over a `Sink` of messages and a `Stream` of them, so
//! they do not depend on a real socket.

use std::collections::{HashSet, VecDeque};
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Extension;
use axum::Router;
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::model::problems::kind_of;
use crate::model::time::Span;
use crate::model::{Event, JsonPath, Permission, Role, Timestamp};
use crate::service::access::{Access, Credential, Principal};
use crate::service::metrics::Raised;
use crate::service::Stamper;
use crate::service::{Service, ServiceError};

use crate::model::event_filter::EventFilter;

use super::access::Caller;

pub(super) fn routes(limits: SubscriberLimits) -> Router<Service> {
    let subscribers = Arc::new(Subscribers { limits, queued: AtomicUsize::new(0) });
    Router::new()
        .route("/events/in", get(events_in))
        .route("/events/out", get(events_out))
        .layer(Extension(subscribers))
}

/// Default of [`SubscriberLimits::send_timeout`]: a subscriber's socket must accept each
/// message within 10 s, or it is closed with 1008 `subscriber too slow: ...`.
pub const SUBSCRIBER_SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`SubscriberLimits::max_queued_bytes`]: 16 MiB of encoded events waiting for
/// one subscriber; past it the subscriber is closed with 1008 `subscriber too slow: ...`.
pub const SUBSCRIBER_MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;
/// Default of [`SubscriberLimits::max_queued_events`]: 4,096 events waiting for one
/// subscriber; past it the subscriber is closed with 1008 `subscriber too slow: ...`.
pub const SUBSCRIBER_MAX_QUEUED_EVENTS: usize = 4096;
/// Default of [`SubscriberLimits::max_total_queued_bytes`]: 128 MiB of encoded events waiting
/// for all the subscribers of the server together; the subscriber whose event would go past it
/// is closed with 1008 `subscriber too slow: ...`.
pub const SUBSCRIBERS_MAX_TOTAL_QUEUED_BYTES: usize = 128 * 1024 * 1024;
/// A subscriber's backfill holds at most this many bytes of encoded events (the newest by
/// arrival, like the count limit `BACKFILL_LIMIT`); older matching events are not sent.
pub const BACKFILL_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Event frames of `/api/events/in` buffered for one commit stop at this many bytes (or at
/// `INGEST_BATCH` frames), so one connection buffers at most this plus one frame; the
/// client simply waits for the commit before more frames are read.
pub const INGEST_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// How far the subscribers of `/api/events/out` may fall behind before they are closed with
/// 1008 and told to reconnect with backfill. Ingestion never waits for a subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscriberLimits {
    /// Time for the socket to accept one message ([`SUBSCRIBER_SEND_TIMEOUT`]).
    pub send_timeout: Duration,
    /// Encoded bytes waiting for one subscriber ([`SUBSCRIBER_MAX_QUEUED_BYTES`]).
    pub max_queued_bytes: usize,
    /// Events waiting for one subscriber ([`SUBSCRIBER_MAX_QUEUED_EVENTS`]).
    pub max_queued_events: usize,
    /// Encoded bytes waiting for all subscribers together ([`SUBSCRIBERS_MAX_TOTAL_QUEUED_BYTES`]).
    pub max_total_queued_bytes: usize,
}

impl Default for SubscriberLimits {
    fn default() -> Self {
        SubscriberLimits {
            send_timeout: SUBSCRIBER_SEND_TIMEOUT,
            max_queued_bytes: SUBSCRIBER_MAX_QUEUED_BYTES,
            max_queued_events: SUBSCRIBER_MAX_QUEUED_EVENTS,
            max_total_queued_bytes: SUBSCRIBERS_MAX_TOTAL_QUEUED_BYTES,
        }
    }
}

/// Shared by the subscribers of one app: their limits and the bytes waiting for all of them.
#[derive(Debug)]
struct Subscribers {
    limits: SubscriberLimits,
    queued: AtomicUsize,
}

/// The subprotocol Prefect's clients ask for; choosing it turns on the auth exchange.
const SUBPROTOCOL: &str = "prefect";
/// Prefect's limit on one event (`PREFECT_EVENTS_MAXIMUM_SIZE_BYTES`).
const MAX_EVENT_BYTES: usize = crate::model::limits::MAX_EVENT_BYTES;
/// Frames above this are refused by the WebSocket layer itself (the connection just ends);
/// between [`MAX_EVENT_BYTES`] and this, the client is told why with close code 1009.
const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
/// A message to `/api/events/out` (the auth and filter messages) larger than this ends the
/// connection (the WebSocket layer refuses it), so a subscriber cannot make the server buffer
/// large messages it would ignore anyway.
pub const MAX_SUBSCRIPTION_BYTES: usize = 1024 * 1024;
/// Event frames that already arrived and are committed together (at most
/// [`INGEST_BATCH_BYTES`] of them).
const INGEST_BATCH: usize = 1000;
/// How far back, by `received`, a subscriber's backfill reaches.
const BACKFILL_WINDOW: Span = Span::minutes(15);
/// At most this many events are backfilled (Prefect's page of 1,000).
const BACKFILL_LIMIT: usize = 1000;
/// Matching events kept per store call while backfilling (each is encoded and measured
/// against [`BACKFILL_MAX_BYTES`] before the next call).
const BACKFILL_PAGE: usize = 50;
/// How long to wait for the client's reply to our close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// A close reason fits in a control frame (125 bytes) after the 2-byte code.
const MAX_CLOSE_REASON: usize = 123;

/// How a connection ends.
#[derive(Debug, PartialEq)]
enum Stop {
    /// The client closed it or went away: nothing more to say.
    Disconnected,
    /// The server closes it with this code and reason.
    Close(u16, String),
}

fn close(code: u16, reason: impl Into<String>) -> Stop {
    Stop::Close(code, reason.into())
}

/// `GET /api/events/in`: one event per frame, in Prefect's JSON.
///
/// Durability: frames are handled strictly in order, and the events read so far are
/// committed before the next frame is read. tungstenite queues the pong for a ping when it
/// reads the ping and sends it on the next read or write, so the pong that follows an event
/// always goes out after that event is durable — which is what Prefect's client relies on
/// when it checkpoints with ping/pong and resends whatever was not checkpointed.
/// Resent events are acknowledged and stored once: the service deduplicates by `id`.
///
/// An invalid event is not skipped: the connection is closed with code 1007 (1009 for an
/// oversized one) and a reason naming the field, e.g.
/// `$.resource: the \`prefect.resource.id\` label is required`. Skipping would lose the event
/// without the client ever learning why, since the server sends nothing else on this socket.
/// The valid events before it are committed first.
async fn events_in(
    ws: WebSocketUpgrade,
    State(service): State<Service>,
    Extension(subscribers): Extension<Arc<Subscribers>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let ws = ws.protocols([SUBPROTOCOL]).max_message_size(MAX_MESSAGE_BYTES);
    let handshake = ws.selected_protocol().is_some();
    ws.on_upgrade(move |socket| async move {
        let (mut write, mut read) = socket.split();
        let stop = match admit(service.access(), caller, handshake, Permission::Emit, &mut write, &mut read).await {
            Ok(principal) => {
                let _open = Raised::new(&service.metrics().event_streams);
                tokio::select! {
                    stop = receive_events(&service, &mut read) => stop,
                    stop = revoked(&service, &principal) => stop,
                }
            }
            Err(stop) => stop,
        };
        if let Stop::Close(code, reason) = &stop {
            tracing::info!(code, reason = %reason, "closing /api/events/in");
            let refused = match *code {
                close_code::INVALID => Some("invalid"),
                close_code::SIZE => Some("event_too_large"),
                close_code::AGAIN => Some("overloaded"),
                close_code::POLICY => Some("refused"),
                close_code::ERROR => Some("storage"),
                _ => None,
            };
            if let Some(reason) = refused {
                service.metrics().reject(reason);
            }
        }
        finish(&mut write, &mut read, stop, subscribers.limits.send_timeout).await;
    })
}

/// `GET /api/events/out`: after the auth exchange, the client sends
/// `{"type": "filter", "filter": {...}, "backfill": true}`; the server streams
/// `{"type": "event", "event": ...}`: first the matching events received in the last 15
/// minutes (at most 1,000, ordered by `occurred`), then live ones. See [`EventFilter`] for the
/// filter. A subscriber too slow to keep up is closed with 1008 (see [`SubscriberLimits`]):
/// ingestion never waits for it.
async fn events_out(
    ws: WebSocketUpgrade,
    State(service): State<Service>,
    Extension(subscribers): Extension<Arc<Subscribers>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let ws = ws.protocols([SUBPROTOCOL]).max_message_size(MAX_SUBSCRIPTION_BYTES);
    let handshake = ws.selected_protocol().is_some();
    ws.on_upgrade(move |socket| async move {
        let (mut write, mut read) = socket.split();
        let stop = match admit(service.access(), caller, handshake, Permission::Read, &mut write, &mut read).await {
            Ok(principal) => {
                let _open = Raised::new(&service.metrics().subscribers);
                tokio::select! {
                    stop = stream_events(&service, &subscribers, &mut write, &mut read) => stop,
                    stop = revoked(&service, &principal) => stop,
                }
            }
            Err(stop) => stop,
        };
        if let Stop::Close(code, reason) = &stop {
            tracing::info!(code, reason = %reason, "closing /api/events/out");
        }
        finish(&mut write, &mut read, stop, subscribers.limits.send_timeout).await;
    })
}

/// One message read from the client.
enum Incoming {
    /// A text or binary frame's payload.
    Data(Bytes),
    /// A ping or pong (tungstenite answers pings itself).
    Control,
    /// The client closed the connection, or it failed.
    Gone,
}

fn classify<E: Display>(item: Option<Result<Message, E>>) -> Incoming {
    match item {
        Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => Incoming::Data(m.into_data()),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Incoming::Control,
        Some(Ok(Message::Close(_))) | None => Incoming::Gone,
        Some(Err(e)) => {
            tracing::debug!(error = %e, "WebSocket read failed");
            Incoming::Gone
        }
    }
}

/// The next text or binary frame, skipping pings and pongs.
async fn next_data<R, E>(read: &mut R) -> Result<Bytes, Stop>
where
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: Display,
{
    loop {
        match classify(read.next().await) {
            Incoming::Data(data) => return Ok(data),
            Incoming::Control => {}
            Incoming::Gone => return Err(Stop::Disconnected),
        }
    }
}

async fn send_json<W: Sink<Message> + Unpin>(write: &mut W, value: &Value) -> Result<(), Stop> {
    write.send(Message::Text(value.to_string().into())).await.map_err(|_| Stop::Disconnected)
}

/// Who the connection is from: the caller the access layer admitted, after Prefect's auth
/// exchange when the client asked for the `prefect` subprotocol: `{"type": "auth", "token":
/// null|string}`, answered with `{"type": "auth_success"}`, or closed with 1008 and the reason,
/// as Prefect's server does. A token is an API key or the auth string; `null` is enough when
/// the upgrade carried valid credentials, or while auth is off.
async fn admit<W, R, E>(
    access: &Access,
    caller: Caller,
    handshake: bool,
    permission: Permission,
    write: &mut W,
    read: &mut R,
) -> Result<Principal, Stop>
where
    W: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: Display,
{
    match (handshake, &caller) {
        (true, _) => {}
        (false, Caller::Known(principal)) => return Ok(principal.clone()),
        // The access layer sends only `prefect` sockets on without credentials.
        (false, Caller::Pending) => return Err(close(close_code::POLICY, "credentials are required")),
    }
    const EXPECTED: &str = r#"expected {"type": "auth", "token": null or a string} as the first message"#;
    let data = next_data(read).await?;
    let message: Value = serde_json::from_slice(&data).map_err(|_| close(close_code::POLICY, EXPECTED))?;
    if message.get("type").and_then(Value::as_str) != Some("auth") {
        return Err(close(close_code::POLICY, EXPECTED));
    }
    let token = match message.get("token") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(close(close_code::POLICY, EXPECTED)),
    };
    let principal = match (token, caller) {
        (Some(token), _) => access.authenticate(Some(Credential::Token(token))),
        (None, Caller::Known(principal)) => Ok(principal),
        (None, Caller::Pending) => access.authenticate(None),
    }
    .map_err(|e| close(close_code::POLICY, e.to_string()))?;
    if !principal.permits(permission) {
        let needs = Role::least_for(permission);
        return Err(close(
            close_code::POLICY,
            format!("{} may not use this socket; it needs `{needs}`", principal.describe()),
        ));
    }
    send_json(write, &json!({"type": "auth_success"})).await?;
    Ok(principal)
}

/// Resolves, with the close to send, once `principal`'s key is revoked (never for others).
async fn revoked(service: &Service, principal: &Principal) -> Stop {
    service.access().until_revoked(principal).await;
    close(close_code::POLICY, "the API key of this connection was revoked")
}

/// Reads one event frame; `Err` closes the connection naming what is wrong.
fn parse_event(data: &[u8], stamper: &Stamper) -> Result<Event, Stop> {
    if data.len() > MAX_EVENT_BYTES {
        return Err(close(
            close_code::SIZE,
            format!("an event is at most {MAX_EVENT_BYTES} bytes; this frame has {}", data.len()),
        ));
    }
    let value: Value = serde_json::from_slice(data)
        .map_err(|e| close(close_code::INVALID, format!("the frame is not valid JSON: {e}")))?;
    // The same defaults as `POST /api/events`: a missing `id` or `occurred` is filled in.
    stamper.read(&value, &JsonPath::root()).map_err(|problems| close(close_code::INVALID, problems.to_string()))
}

fn ingest_failed(e: ServiceError) -> Stop {
    match e {
        ServiceError::ShuttingDown => close(close_code::AWAY, "tripwire is shutting down; reconnect later"),
        ServiceError::Overloaded { .. } => close(close_code::AGAIN, "tripwire is busy; reconnect later"),
        ServiceError::Invalid(problems) => close(close_code::INVALID, problems.to_string()),
        other => {
            tracing::error!(error = %other, "could not store streamed events");
            close(close_code::ERROR, "tripwire could not store the events; see the server log")
        }
    }
}

/// The `/api/events/in` loop; returns how the connection ends.
async fn receive_events<R, E>(service: &Service, read: &mut R) -> Stop
where
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: Display,
{
    loop {
        let first = match next_data(read).await {
            Ok(data) => data,
            Err(stop) => return stop,
        };
        let stamper = service.stamper();
        let mut batch = match parse_event(&first, &stamper) {
            Ok(event) => vec![event],
            Err(stop) => return stop,
        };
        let mut batch_bytes = first.len();
        let mut stop = None;
        // Take the event frames that have already arrived, without waiting for more.
        while batch.len() < INGEST_BATCH && batch_bytes < INGEST_BATCH_BYTES {
            let Some(item) = read.next().now_or_never() else { break };
            match classify(item) {
                Incoming::Data(data) => match parse_event(&data, &stamper) {
                    Ok(event) => {
                        batch_bytes += data.len();
                        batch.push(event);
                    }
                    Err(s) => {
                        stop = Some(s);
                        break;
                    }
                },
                // A ping ends the batch: its pong goes out on the next read, which must come
                // after the events before the ping are committed.
                Incoming::Control => break,
                Incoming::Gone => {
                    stop = Some(Stop::Disconnected);
                    break;
                }
            }
        }
        if let Err(e) = service.ingest_waiting(batch).await {
            return ingest_failed(e);
        }
        if let Some(stop) = stop {
            return stop;
        }
    }
}

/// Reads `{"type": "filter", "filter": {...}, "backfill": bool}`.
fn parse_subscription(data: &[u8]) -> Result<(EventFilter, bool), Stop> {
    const EXPECTED: &str = r#"expected {"type": "filter", "filter": {...}, "backfill": true}"#;
    let message: Value = serde_json::from_slice(data).map_err(|_| close(close_code::POLICY, EXPECTED))?;
    if message.get("type").and_then(Value::as_str) != Some("filter") {
        return Err(close(close_code::POLICY, EXPECTED));
    }
    let backfill = match message.get("backfill") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(close(
                close_code::INVALID,
                format!("$.backfill: expected true or false, got {}", kind_of(other)),
            ))
        }
    };
    let filter = EventFilter::from_json(message.get("filter").unwrap_or(&Value::Null), &JsonPath::root().key("filter"))
        .map_err(|problems| close(close_code::INVALID, format!("invalid filter: {problems}")))?;
    Ok((filter, backfill))
}

/// `{"type": "event", "event": ...}`, what a subscriber is sent for each event.
#[derive(Serialize)]
struct EventMessage<'a> {
    r#type: &'static str,
    event: &'a Event,
}

fn encode_event(event: &Event) -> Result<String, Stop> {
    serde_json::to_string(&EventMessage { r#type: "event", event }).map_err(|e| {
        tracing::error!(error = %e, "could not encode an event");
        close(close_code::ERROR, "tripwire could not encode an event; see the server log")
    })
}

/// A backfilled event: its id, when it occurred and its encoded message.
type Backfilled = (Uuid, Timestamp, String);

/// The matching events received since `cutoff`, newest first by arrival, encoded: at most
/// [`BACKFILL_LIMIT`] of them and [`BACKFILL_MAX_BYTES`]; stops reading at the first event
/// received before `cutoff`.
async fn read_backfill(
    service: &Service,
    filter: &Arc<EventFilter>,
    cutoff: Timestamp,
) -> Result<Vec<Backfilled>, Stop> {
    let failed = |e: ServiceError| {
        tracing::error!(error = %e, "could not read the backfill");
        close(close_code::ERROR, "tripwire could not read stored events; see the server log")
    };
    let mut found = Vec::new();
    let mut bytes = 0;
    let mut before = None;
    loop {
        let limit = BACKFILL_PAGE.min(BACKFILL_LIMIT - found.len());
        let page = service.backfill_page(filter.clone(), cutoff, before, limit).await.map_err(failed)?;
        for event in page.events {
            let message = encode_event(&event)?;
            bytes += message.len();
            if bytes > BACKFILL_MAX_BYTES {
                return Ok(found);
            }
            found.push((event.id, event.occurred, message));
        }
        match page.next {
            Some(seq) if found.len() < BACKFILL_LIMIT => before = Some(seq),
            _ => return Ok(found),
        }
    }
}

/// Why a subscriber's message could not be sent.
enum SendFailed {
    /// The socket failed or closed.
    Gone,
    /// The socket did not accept the message within the send timeout.
    TooSlow,
}

/// The encoded events waiting for one subscriber, and the one being sent. Every byte waiting
/// is counted against the subscriber's limits and the limit of all subscribers together, and
/// given back once sent (or when the subscriber ends).
struct Outbox<'a> {
    shared: &'a Subscribers,
    waiting: VecDeque<String>,
    /// Bytes waiting or in flight, all counted in `shared.queued`.
    bytes: usize,
    /// The message being sent, until the sink takes it.
    unsent: Option<Message>,
    /// Bytes of the message being sent (until it is flushed).
    in_flight: usize,
    /// Running while a message is being sent.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<'a> Outbox<'a> {
    fn new(shared: &'a Subscribers) -> Self {
        Outbox { shared, waiting: VecDeque::new(), bytes: 0, unsent: None, in_flight: 0, deadline: None }
    }

    fn too_slow(why: String) -> Stop {
        close(close_code::POLICY, format!("subscriber too slow: {why}; reconnect with backfill"))
    }

    /// Queues a message, or says which limit it would cross.
    fn push(&mut self, message: String) -> Result<(), Stop> {
        let limits = &self.shared.limits;
        let n = message.len();
        if self.waiting.len() >= limits.max_queued_events {
            return Err(Self::too_slow(format!("more than {} events waiting", limits.max_queued_events)));
        }
        if self.bytes + n > limits.max_queued_bytes {
            return Err(Self::too_slow(format!("more than {} bytes of events waiting", limits.max_queued_bytes)));
        }
        let before = self.shared.queued.fetch_add(n, Ordering::Relaxed);
        if before + n > limits.max_total_queued_bytes {
            self.shared.queued.fetch_sub(n, Ordering::Relaxed);
            return Err(Self::too_slow(format!(
                "the server's {} bytes for waiting events are in use",
                limits.max_total_queued_bytes
            )));
        }
        self.bytes += n;
        self.waiting.push_back(message);
        Ok(())
    }

    /// Whether a message is being sent (starting the next one if there is one).
    fn busy(&mut self) -> bool {
        if self.deadline.is_none() {
            if let Some(next) = self.waiting.pop_front() {
                self.in_flight = next.len();
                self.unsent = Some(Message::Text(next.into()));
                self.deadline = Some(Box::pin(tokio::time::sleep(self.shared.limits.send_timeout)));
            }
        }
        self.deadline.is_some()
    }

    /// Drives the message being sent until the socket has taken and flushed it.
    fn poll_send<W: Sink<Message> + Unpin>(
        &mut self,
        write: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendFailed>> {
        if let Some(deadline) = &mut self.deadline {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(SendFailed::TooSlow));
            }
        }
        if self.unsent.is_some() {
            ready!(write.poll_ready_unpin(cx)).map_err(|_| SendFailed::Gone)?;
            if let Some(message) = self.unsent.take() {
                write.start_send_unpin(message).map_err(|_| SendFailed::Gone)?;
            }
        }
        ready!(write.poll_flush_unpin(cx)).map_err(|_| SendFailed::Gone)?;
        self.shared.queued.fetch_sub(self.in_flight, Ordering::Relaxed);
        self.bytes -= self.in_flight;
        self.in_flight = 0;
        self.deadline = None;
        Poll::Ready(Ok(()))
    }
}

impl Drop for Outbox<'_> {
    fn drop(&mut self) {
        self.shared.queued.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// The `/api/events/out` loop; returns how the connection ends.
///
/// Live events are taken from the service as they come, whether or not the socket keeps up,
/// and wait in the subscriber's [`Outbox`] until the socket takes them; a subscriber that
/// falls behind past its [`SubscriberLimits`] is closed, which frees what waited for it.
async fn stream_events<W, R, E>(service: &Service, subscribers: &Subscribers, write: &mut W, read: &mut R) -> Stop
where
    W: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: Display,
{
    let (filter, backfill) = match next_data(read).await.and_then(|data| parse_subscription(&data)) {
        Ok(subscription) => subscription,
        Err(stop) => return stop,
    };
    // Subscribe before reading the backfill, so that nothing committed in between is missed;
    // what arrives both ways is sent once (by id).
    let mut live = service.subscribe();
    let mut sent: HashSet<Uuid> = HashSet::new();
    let mut outbox = Outbox::new(subscribers);
    if backfill {
        let cutoff = service.now().minus(BACKFILL_WINDOW);
        let mut events = match read_backfill(service, &Arc::new(filter.clone()), cutoff).await {
            Ok(events) => events,
            Err(stop) => return stop,
        };
        // Arrival order, then by `occurred` as Prefect's server sorts its backfill (stable,
        // so events that occurred at the same instant keep their arrival order).
        events.reverse();
        events.sort_by_key(|(_, occurred, _)| *occurred);
        for (id, _, message) in events {
            sent.insert(id);
            if let Err(stop) = outbox.push(message) {
                return stop;
            }
        }
    }
    loop {
        let sending = outbox.busy();
        tokio::select! {
            // Keep reading so that pings are answered and a close is noticed; anything else
            // the client sends after the filter is ignored.
            item = read.next() => {
                if let Incoming::Gone = classify(item) {
                    return Stop::Disconnected;
                }
            }
            received = live.recv() => match received {
                Ok(event) => {
                    if !filter.includes(&event) || (!sent.is_empty() && sent.remove(&event.id)) {
                        continue;
                    }
                    if let Err(stop) = encode_event(&event).and_then(|message| outbox.push(message)) {
                        return stop;
                    }
                }
                Err(RecvError::Lagged(dropped)) => {
                    return Outbox::too_slow(format!("{dropped} events dropped"));
                }
                Err(RecvError::Closed) => return close(close_code::AWAY, "tripwire is shutting down"),
            },
            result = std::future::poll_fn(|cx| outbox.poll_send(write, cx)), if sending => match result {
                Ok(()) => {}
                Err(SendFailed::Gone) => return Stop::Disconnected,
                Err(SendFailed::TooSlow) => {
                    return Outbox::too_slow(format!(
                        "a message was not taken within {} s",
                        subscribers.limits.send_timeout.as_secs_f64()
                    ));
                }
            },
        }
    }
}

/// Ends the connection: answers the client's close, or sends ours and waits briefly for the
/// reply so that the reason is not lost to a reset. Our close frame goes after what the socket
/// has not sent yet, so it waits up to `send_wait` for the client to read that; the connection
/// is dropped past it.
async fn finish<W, R, E>(write: &mut W, read: &mut R, stop: Stop, send_wait: Duration)
where
    W: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    match stop {
        Stop::Disconnected => {
            let _ = tokio::time::timeout(CLOSE_WAIT, write.close()).await;
        }
        Stop::Close(code, reason) => {
            let frame = CloseFrame { code, reason: truncate_reason(reason).into() };
            if let Ok(Ok(())) = tokio::time::timeout(send_wait, write.send(Message::Close(Some(frame)))).await {
                let drain = async { while let Some(Ok(_)) = read.next().await {} };
                let _ = tokio::time::timeout(CLOSE_WAIT, drain).await;
            }
        }
    }
}

fn truncate_reason(mut reason: String) -> String {
    if reason.len() > MAX_CLOSE_REASON {
        let mut end = MAX_CLOSE_REASON - "...".len();
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str("...");
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::RESOURCE_ROLE;
    use crate::model::Resource;
    use crate::service::ServiceConfig;

    fn event(name: &str, resource: Resource, related: Vec<Resource>) -> Event {
        let mut e = Event::new(Uuid::from_u128(1), Timestamp::from_micros(1_000), name, resource);
        e.related = related;
        e
    }

    fn filter(v: Value) -> EventFilter {
        EventFilter::from_json(&v, &JsonPath::root()).unwrap()
    }

    #[test]
    fn names_prefixes_and_exclusions() {
        let e = event("order.created", Resource::new("order.1"), vec![]);
        assert!(filter(json!(null)).includes(&e));
        assert!(filter(json!({"event": {"prefix": ["user.", "order."]}})).includes(&e));
        assert!(!filter(json!({"event": {"prefix": ["user."]}})).includes(&e));
        assert!(!filter(json!({"event": {"exclude_prefix": ["order."]}})).includes(&e));
        assert!(filter(json!({"event": {"name": ["order.created"], "exclude_name": ["x"]}})).includes(&e));
        assert!(!filter(json!({"event": {"exclude_name": ["order.created"]}})).includes(&e));
        assert!(filter(json!({"event": {"prefix": []}, "order": "ASC", "text": null})).includes(&e));
        // A field tripwire does not know would otherwise match more than asked: it is an error.
        for (bad, path) in [
            (json!({"unknown": 1}), "$.unknown"),
            (json!({"event": {"nmae": ["x"]}}), "$.event.nmae"),
            (json!({"resource": {"distinct": true}}), "$.resource.distinct"),
            (json!({"related": {"rol": ["x"]}}), "$.related.rol"),
        ] {
            let problems = EventFilter::from_json(&bad, &JsonPath::root()).unwrap_err();
            assert_eq!(problems.0[0].path, path, "{bad}");
        }
    }

    #[test]
    fn resources_labels_and_ids() {
        let e = event("a", Resource::new("order.1").with("team", "core"), vec![]);
        assert!(filter(json!({"resource": {"id": ["order.1"]}})).includes(&e));
        assert!(filter(json!({"resource": {"id_prefix": ["order."], "distinct": false}})).includes(&e));
        assert!(!filter(json!({"resource": {"id_prefix": ["user."]}})).includes(&e));
        assert!(filter(json!({"resource": {"labels": {"team": "co*"}}})).includes(&e));
        assert!(filter(json!({"resource": {"labels": {"team": ["!ops"]}}})).includes(&e));
        assert!(!filter(json!({"resource": {"labels": {"team": ["!core"]}}})).includes(&e));
        assert!(!filter(json!({"resource": {"labels": {"missing": ["!x"]}}})).includes(&e));
        assert!(!filter(json!({"resource": {"labels": {"team": []}}})).includes(&e));
        let id = Uuid::from_u128(1).to_string();
        assert!(filter(json!({"id": {"id": [id]}})).includes(&e));
        assert!(!filter(json!({"id": {"id": [Uuid::from_u128(2).to_string()]}})).includes(&e));
        assert!(filter(json!({"occurred": {"since": "1970-01-01T00:00:00Z", "until": null}})).includes(&e));
        assert!(!filter(json!({"occurred": {"since": "2000-01-01T00:00:00Z"}})).includes(&e));
    }

    #[test]
    fn related_parts_hold_on_one_resource() {
        let e = event(
            "a",
            Resource::new("order.1"),
            vec![
                Resource::new("customer.42").with(RESOURCE_ROLE, "customer"),
                Resource::new("flow.1").with(RESOURCE_ROLE, "flow"),
            ],
        );
        assert!(filter(json!({"related": {"id": ["customer.42"], "role": ["customer"]}})).includes(&e));
        assert!(!filter(json!({"related": {"id": ["customer.42"], "role": ["flow"]}})).includes(&e));
        assert!(filter(json!({"related": [{"role": ["flow"]}, {"role": ["customer"]}]})).includes(&e));
        assert!(!filter(json!({"related": [{"role": ["flow"]}, {"role": ["tag"]}]})).includes(&e));
        assert!(filter(json!({"related": {"resources_in_roles": [["flow.1", "flow"]]}})).includes(&e));
        assert!(!filter(json!({"related": {"id": ["order.1"]}})).includes(&e), "the primary is not related");
        assert!(filter(json!({"related": {}})).includes(&event("a", Resource::new("x"), vec![])));
        assert!(filter(json!({"any_resource": {"id": ["order.1"]}})).includes(&e));
        assert!(filter(json!({"any_resource": {"id_prefix": ["flow."]}})).includes(&e));
        assert!(!filter(json!({"any_resource": [{"id_prefix": ["flow."]}, {"id": ["nope"]}]})).includes(&e));
    }

    #[test]
    fn malformed_filters_name_the_field() {
        let err = EventFilter::from_json(
            &json!({"event": {"prefix": "order."}, "id": {"id": ["nope"]}, "occurred": {"since": 3}}),
            &JsonPath::root().key("filter"),
        )
        .unwrap_err()
        .to_string();
        for needle in ["$.filter.event.prefix", "$.filter.id.id[0]", "$.filter.occurred.since"] {
            assert!(err.contains(needle), "{needle} not in {err}");
        }
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        let long = "é".repeat(200);
        let cut = truncate_reason(long);
        assert!(cut.len() <= MAX_CLOSE_REASON && cut.ends_with("..."));
        assert_eq!(truncate_reason("short".into()), "short");
    }

    fn small_event(n: u128) -> Event {
        Event::new(Uuid::from_u128(n), Timestamp::from_micros(1), "a", Resource::new("x"))
    }

    /// Runs the subscriber loop over in-memory halves whose sink takes one message and then
    /// never another, standing in for a client that stops reading; once that first event is
    /// delivered, ingests `burst` (which must never wait for the subscriber) and returns how
    /// the subscriber ends. Checks that everything it queued is given back.
    async fn stalled_subscriber(tag: &str, limits: SubscriberLimits, burst: Vec<Event>) -> Stop {
        use std::sync::Mutex;
        let dir = std::env::temp_dir().join(format!("tripwire-ws-unit-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let service = Service::start(ServiceConfig::new(&dir)).await.unwrap();
        let subscribers = Arc::new(Subscribers { limits, queued: AtomicUsize::new(0) });

        let permits = Arc::new(tokio::sync::Semaphore::new(1));
        let delivered = Arc::new(Mutex::new(0usize));
        let write = {
            let delivered = delivered.clone();
            Box::pin(futures_util::sink::unfold((), move |(), _message: Message| {
                let (permits, delivered) = (permits.clone(), delivered.clone());
                async move {
                    permits.acquire().await.unwrap().forget();
                    *delivered.lock().unwrap() += 1;
                    Ok::<_, std::convert::Infallible>(())
                }
            }))
        };
        let subscription = json!({"type": "filter", "filter": {}, "backfill": false}).to_string();
        let read = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(Message::text(subscription))])
            .chain(futures_util::stream::pending());
        let task = {
            let (service, subscribers) = (service.clone(), subscribers.clone());
            tokio::spawn(async move {
                let (mut write, mut read) = (write, read);
                stream_events(&service, &subscribers, &mut write, &mut read).await
            })
        };
        // Wait until the subscriber is live and has delivered one event (its only permit).
        let mut n = 0;
        while *delivered.lock().unwrap() == 0 {
            n += 1;
            assert!(n < 500, "the subscriber never received an event");
            service.ingest(vec![small_event(n)]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The subscriber is now stuck sending; ingestion goes on regardless.
        for chunk in burst.chunks(1000) {
            tokio::time::timeout(Duration::from_secs(30), service.ingest(chunk.to_vec())).await.unwrap().unwrap();
        }
        let stop = tokio::time::timeout(Duration::from_secs(30), task).await.unwrap().unwrap();
        assert_eq!(subscribers.queued.load(Ordering::Relaxed), 0, "the queued bytes are given back");
        service.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
        stop
    }

    fn too_slow_reason(stop: Stop) -> String {
        match stop {
            Stop::Close(code, reason) => {
                assert_eq!(code, close_code::POLICY, "{reason}");
                assert!(reason.starts_with("subscriber too slow: ") && reason.ends_with("reconnect with backfill"));
                assert!(reason.len() <= MAX_CLOSE_REASON, "{reason}");
                reason
            }
            other => panic!("expected a close, got {other:?}"),
        }
    }

    fn big_event(n: u128, bytes: usize) -> Event {
        let mut e = small_event(n);
        e.payload = [("blob".to_owned(), json!("x".repeat(bytes)))].into_iter().collect();
        e
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_stalled_subscriber_never_slows_ingestion_and_is_closed_past_its_event_count() {
        let burst: Vec<Event> = (0..6000).map(|i| small_event(1_000_000 + i)).collect();
        let reason = too_slow_reason(stalled_subscriber("count", SubscriberLimits::default(), burst).await);
        // The count limit, or the service's channel if the subscriber fell behind it first.
        assert!(reason.contains("more than 4096 events waiting") || reason.contains("events dropped"), "{reason}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_subscriber_is_closed_past_its_queued_bytes() {
        let limits = SubscriberLimits { max_queued_bytes: 100_000, ..SubscriberLimits::default() };
        // Just past the limit: the 11th event of 10 KB.
        let burst: Vec<Event> = (0..11).map(|i| big_event(1_000_000 + i, 10_000)).collect();
        let reason = too_slow_reason(stalled_subscriber("bytes", limits, burst).await);
        assert!(reason.contains("more than 100000 bytes of events waiting"), "{reason}");
        // One absurd event, far larger than the whole limit.
        let burst = vec![big_event(2_000_000, 1_000_000)];
        let reason = too_slow_reason(stalled_subscriber("bytes-absurd", limits, burst).await);
        assert!(reason.contains("more than 100000 bytes"), "{reason}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_subscriber_is_closed_when_all_subscribers_hold_too_much() {
        let limits = SubscriberLimits { max_total_queued_bytes: 50_000, ..SubscriberLimits::default() };
        let burst: Vec<Event> = (0..6).map(|i| big_event(1_000_000 + i, 10_000)).collect();
        let reason = too_slow_reason(stalled_subscriber("total", limits, burst).await);
        assert!(reason.contains("the server's 50000 bytes for waiting events are in use"), "{reason}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_subscriber_whose_socket_takes_nothing_is_closed_after_the_send_timeout() {
        let limits = SubscriberLimits { send_timeout: Duration::from_millis(200), ..SubscriberLimits::default() };
        let reason = too_slow_reason(stalled_subscriber("send-timeout", limits, vec![small_event(7_000_000)]).await);
        assert!(reason.contains("a message was not taken within 0.2 s"), "{reason}");
    }
}
