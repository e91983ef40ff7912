//! `GET /api/events/out` as a stream of events: the client side of a subscription.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, AUTHORIZATION};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::model::Event;

use super::ClientError;

/// Events matching a filter: with `backfill`, first those received in the last 15 minutes,
/// then live ones as they are accepted. Read them with [`Subscription::next`].
pub struct Subscription {
    socket: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
    url: String,
}

impl Subscription {
    pub(super) async fn open(
        url: String,
        api_key: Option<&str>,
        filter: &Value,
        backfill: bool,
    ) -> Result<Subscription, ClientError> {
        let mut request = url.as_str().into_client_request().map_err(|e| ClientError::Invalid(e.to_string()))?;
        if let Some(key) = api_key {
            let value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| ClientError::Invalid("the API key is not a valid header value".into()))?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| match e {
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
        let subscribe = json!({"type": "filter", "filter": filter, "backfill": backfill});
        socket
            .send(Message::text(subscribe.to_string()))
            .await
            .map_err(|e| ClientError::Transport { url: url.clone(), message: e.to_string() })?;
        Ok(Subscription { socket, url })
    }

    /// The next event; `None` when the server closed the subscription normally. A close with
    /// a reason (an invalid filter, a subscriber too slow to keep up) is an error carrying it.
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        loop {
            let message = match self.socket.next().await? {
                Ok(m) => m,
                Err(e) => return Some(Err(ClientError::Transport { url: self.url.clone(), message: e.to_string() })),
            };
            match message {
                Message::Text(text) => {
                    let parsed: Result<Value, _> = serde_json::from_str(text.as_str());
                    return Some(match parsed {
                        Ok(mut v) if v["type"] == "event" => serde_json::from_value(v["event"].take())
                            .map_err(|e| ClientError::Decode(format!("a subscribed event: {e}"))),
                        Ok(v) => Err(ClientError::Decode(format!("unexpected message on the subscription: {v}"))),
                        Err(e) => Err(ClientError::Decode(format!("a subscription message is not JSON: {e}"))),
                    });
                }
                Message::Close(Some(frame)) if frame.code != 1000.into() => {
                    return Some(Err(ClientError::Api {
                        status: u16::from(frame.code),
                        code: "subscription_closed".into(),
                        message: frame.reason.to_string(),
                    }))
                }
                Message::Close(_) => return None,
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
        let _ = self.socket.close(None).await;
    }
}
