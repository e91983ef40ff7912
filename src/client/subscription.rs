//! `GET /api/events/out` as a stream of events: the client side of a subscription, which
//! reconnects on its own when the connection drops or the server restarts, and resumes
//! without a gap or a duplicate.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, AUTHORIZATION, DATE};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use crate::model::{Event, Timestamp};

use super::ClientError;

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a subscription tries to reconnect before it gives up: the server's backfill
/// window (15 minutes), past which a reconnection could no longer fill the gap.
pub const RECONNECT_FOR: Duration = Duration::from_secs(15 * 60);
/// Event ids remembered to drop what a reconnection's backfill delivers again.
const REMEMBERED_IDS: usize = 10_000;
/// The first pause before reconnecting; it doubles up to [`RECONNECT_PAUSE_MAX`].
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);
const RECONNECT_PAUSE_MAX: Duration = Duration::from_secs(2);

/// Events matching a filter: with `backfill`, first those received in the last 15 minutes,
/// then live ones as they are accepted. Read them with [`Subscription::next`].
///
/// When the connection drops or the server restarts (or closes it as too slow to keep up),
/// the subscription reconnects on its own, with backfill, and resumes: the events received
/// while it was away are delivered (the backfill: by `occurred`), and none twice (the ids of
/// the last 10,000 delivered are remembered, and the backfill holds the newest 1,000). A
/// subscription begun without backfill gets nothing received before it began, reconnections
/// included (to the second, if it was interrupted before its first event). It tries for [`RECONNECT_FOR`] (the server's backfill
/// window); a gap of more than 1,000 matching events, or longer than that, cannot be filled.
/// Then `next` answers the error. A refusal (an invalid filter, a revoked key) is answered at
/// once.
pub struct Subscription {
    socket: Option<Socket>,
    url: String,
    api_key: Option<String>,
    filter: Value,
    /// Without backfill: when the subscription began (the first event's arrival, or the
    /// server's time to the second). A reconnection's backfill reaches back 15 minutes; what
    /// was received before this was never wanted.
    floor: Option<Timestamp>,
    /// Without backfill, until the first event or reconnection: the first event delivered
    /// live sets `floor` exactly (live events come in order of arrival).
    floor_from_first: bool,
    seen: HashSet<Uuid>,
    seen_order: VecDeque<Uuid>,
    reconnects: u64,
}

impl Subscription {
    pub(super) async fn open(
        url: String,
        api_key: Option<&str>,
        filter: &Value,
        backfill: bool,
    ) -> Result<Subscription, ClientError> {
        let mut subscription = Subscription {
            socket: None,
            url,
            api_key: api_key.map(str::to_owned),
            filter: filter.clone(),
            floor: None,
            floor_from_first: !backfill,
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            reconnects: 0,
        };
        let server_time = subscription.connect(backfill).await?;
        // Without backfill, nothing received before now is wanted, even after a reconnection.
        if !backfill {
            subscription.floor = server_time;
        }
        Ok(subscription)
    }

    /// Connects and sends the filter; answers the server's time (its `Date`, to the second).
    async fn connect(&mut self, backfill: bool) -> Result<Option<Timestamp>, ClientError> {
        let url = self.url.clone();
        let mut request = url.as_str().into_client_request().map_err(|e| ClientError::Invalid(e.to_string()))?;
        if let Some(key) = &self.api_key {
            let value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| ClientError::Invalid("the API key is not a valid header value".into()))?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let (mut socket, response) = tokio_tungstenite::connect_async(request).await.map_err(|e| match e {
            tungstenite::Error::Http(response) if matches!(response.status().as_u16(), 401 | 403) => {
                let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                let message = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| body.into_owned());
                let status = response.status().as_u16();
                let code = if status == 401 { "unauthorized" } else { "forbidden" };
                ClientError::Api { status, code: code.into(), message }
            }
            e => ClientError::Unreachable {
                url: url.clone(),
                message: format!("cannot subscribe at {url}: {e}; is `tripwire serve` running?"),
            },
        })?;
        let server_time = response
            .headers()
            .get(DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
            .map(|d| Timestamp::from_micros(d.timestamp_micros()));
        let subscribe = json!({"type": "filter", "filter": self.filter, "backfill": backfill});
        socket
            .send(Message::text(subscribe.to_string()))
            .await
            .map_err(|e| ClientError::Transport { url: url.clone(), message: e.to_string() })?;
        self.socket = Some(socket);
        Ok(server_time)
    }

    /// How many times it reconnected.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Reconnects with backfill, pausing longer each time, for at most [`RECONNECT_FOR`].
    async fn reconnect(&mut self, why: ClientError) -> Result<(), ClientError> {
        tracing::warn!(url = %self.url, error = %why, "the subscription was interrupted; reconnecting");
        let deadline = Instant::now() + RECONNECT_FOR;
        let mut pause = RECONNECT_PAUSE;
        loop {
            tokio::time::sleep(pause).await;
            match self.connect(true).await {
                Ok(_) => {
                    self.reconnects += 1;
                    self.floor_from_first = false;
                    return Ok(());
                }
                Err(e @ (ClientError::Unreachable { .. } | ClientError::Transport { .. })) => {
                    if Instant::now() >= deadline {
                        return Err(ClientError::Unreachable {
                            url: self.url.clone(),
                            message: format!(
                                "the subscription could not reconnect within {} minutes ({e}); events received since may be missed: subscribe again with backfill",
                                RECONNECT_FOR.as_secs() / 60
                            ),
                        });
                    }
                }
                Err(refused) => return Err(refused),
            }
            pause = (pause * 2).min(RECONNECT_PAUSE_MAX);
        }
    }

    /// Whether `event` is new to this subscription (and remembers it).
    fn first_time(&mut self, event: &Event) -> bool {
        if let (Some(floor), Some(received)) = (self.floor, event.received) {
            if received < floor {
                return false;
            }
        }
        if !self.seen.insert(event.id) {
            return false;
        }
        if self.floor_from_first {
            self.floor_from_first = false;
            self.floor = event.received.or(self.floor);
        }
        self.seen_order.push_back(event.id);
        if self.seen_order.len() > REMEMBERED_IDS {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    /// The next event; `None` when the server closed the subscription normally. A refusal
    /// (an invalid filter, a revoked key) is an error carrying the server's reason; a dropped
    /// connection, a restart or a "too slow" close is resumed (see [`Subscription`]).
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        loop {
            let interrupted = match self.receive().await {
                Received::Event(event) => {
                    if self.first_time(&event) {
                        return Some(Ok(*event));
                    }
                    continue;
                }
                Received::Ended => return None,
                Received::Failed(e) => return Some(Err(e)),
                Received::Interrupted(why) => why,
            };
            self.socket = None;
            if let Err(e) = self.reconnect(interrupted).await {
                return Some(Err(e));
            }
        }
    }

    /// The next message of the connection, read.
    async fn receive(&mut self) -> Received {
        let Some(socket) = self.socket.as_mut() else {
            return Received::Interrupted(ClientError::Transport {
                url: self.url.clone(),
                message: "not connected".into(),
            });
        };
        loop {
            let message = match socket.next().await {
                None => {
                    let message = "the connection ended without a close".into();
                    return Received::Interrupted(ClientError::Transport { url: self.url.clone(), message });
                }
                Some(Err(e)) => {
                    return Received::Interrupted(ClientError::Transport {
                        url: self.url.clone(),
                        message: e.to_string(),
                    })
                }
                Some(Ok(m)) => m,
            };
            match message {
                Message::Text(text) => {
                    let parsed: Result<Value, _> = serde_json::from_str(text.as_str());
                    return match parsed {
                        Ok(mut v) if v["type"] == "event" => match serde_json::from_value(v["event"].take()) {
                            Ok(event) => Received::Event(Box::new(event)),
                            Err(e) => Received::Failed(ClientError::Decode(format!("a subscribed event: {e}"))),
                        },
                        Ok(v) => Received::Failed(ClientError::Decode(format!(
                            "unexpected message on the subscription: {v}"
                        ))),
                        Err(e) => {
                            Received::Failed(ClientError::Decode(format!("a subscription message is not JSON: {e}")))
                        }
                    };
                }
                Message::Close(Some(frame)) if frame.code != CloseCode::Normal => {
                    let error = ClientError::Api {
                        status: u16::from(frame.code),
                        code: "subscription_closed".into(),
                        message: frame.reason.to_string(),
                    };
                    // The server going away, busy or failing, or the subscriber too slow: the
                    // gap is filled from the backfill. A refusal is final.
                    let resumable = matches!(
                        frame.code,
                        CloseCode::Away | CloseCode::Again | CloseCode::Error | CloseCode::Restart
                    ) || (frame.code == CloseCode::Policy
                        && frame.reason.starts_with("subscriber too slow"));
                    return if resumable { Received::Interrupted(error) } else { Received::Failed(error) };
                }
                Message::Close(_) => return Received::Ended,
                _ => continue,
            }
        }
    }

    /// The events as a [`Stream`](futures_util::Stream), ending when the server closes the
    /// subscription.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<Event, ClientError>> {
        futures_util::stream::unfold(self, |mut subscription| async move {
            let next = subscription.next().await?;
            Some((next, subscription))
        })
    }

    /// Closes the subscription.
    pub async fn close(mut self) {
        if let Some(socket) = self.socket.as_mut() {
            let _ = socket.close(None).await;
        }
    }
}

/// What one read of the connection gave.
enum Received {
    Event(Box<Event>),
    /// Closed normally.
    Ended,
    /// Refused, or unreadable: answered to the caller.
    Failed(ClientError),
    /// Dropped or closed for a reason a reconnection resumes from.
    Interrupted(ClientError),
}
