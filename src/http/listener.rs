//! The listener behind `tripwire serve`: accepts TCP connections and serves the API over
//! HTTP/1.1 with the limits that keep one client from holding the server's connections, time
//! or memory for ever:
//!
//! - a connection must deliver a complete request head within [`ListenerLimits::header_timeout`]
//!   of opening, and of the previous response on a kept-alive connection (so the same limit is
//!   the keep-alive idle timeout); past it the connection is closed;
//! - a request (reading its body and answering it) must finish within
//!   [`ListenerLimits::request_timeout`], or the client gets 408 with a JSON error; the worker
//!   long poll `POST /api/runs/claim` gets its own `wait_seconds` cap
//!   ([`MAX_CLAIM_WAIT_SECONDS`]) on top; a WebSocket is not limited once it is upgraded;
//! - at most [`ListenerLimits::max_connections`] connections (WebSockets included) are open at
//!   once; a connection past the cap is answered 503 with a JSON error naming the limit and
//!   closed at once.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::model::run::MAX_CLAIM_WAIT_SECONDS;

use super::ApiError;

/// Default of [`ListenerLimits::header_timeout`]: 10 s to send a request head (and the
/// keep-alive idle timeout). Past it the connection is closed without an answer.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ListenerLimits::request_timeout`]: 30 s to send the body and get the answer.
/// Past it the client gets 408 `request_timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`ListenerLimits::max_connections`]: 1,024 open connections. Past it a new
/// connection gets 503 `too_many_connections` and is closed.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// The largest timeout the settings accept (1 day); a larger one is refused at startup.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);
/// The largest connection cap the settings accept; a larger one is refused at startup.
pub const MAX_CONNECTIONS_SETTING: usize = 1_000_000;
/// The route that long-polls: its request timeout is extended by [`MAX_CLAIM_WAIT_SECONDS`].
pub const LONG_POLL_PATH: &str = "/api/runs/claim";
/// Refused connections being answered at once; past this many, a refused connection is
/// closed without the 503 (a flood of connections must not create a flood of tasks).
const MAX_REFUSALS_IN_FLIGHT: usize = 256;
/// How long a refused connection is given to send its request head and read the 503.
const REFUSAL_WAIT: Duration = Duration::from_secs(1);
/// A refused connection's request head is read up to this size before it is answered.
const MAX_REFUSED_HEAD_BYTES: usize = 16 * 1024;
/// After the shutdown signal, how long open requests are given to finish beyond the longest
/// request timeout.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The listener's limits (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Time to deliver a complete request head, from the connection opening or the previous
    /// response; also the keep-alive idle timeout.
    pub header_timeout: Duration,
    /// Time for one request: reading its body and answering it.
    pub request_timeout: Duration,
    /// Connections open at once, WebSockets included.
    pub max_connections: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl ListenerLimits {
    /// The request timeout for a path: the long poll waits up to its own cap on top.
    pub fn request_timeout_for(&self, path: &str) -> Duration {
        if path == LONG_POLL_PATH {
            self.request_timeout + Duration::from_secs_f64(MAX_CLAIM_WAIT_SECONDS)
        } else {
            self.request_timeout
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, lets the open
/// requests finish (for at most the longest request timeout) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let app = app.layer(axum::middleware::from_fn_with_state(limits, request_deadline));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let connections = Arc::new(Semaphore::new(limits.max_connections.clamp(1, MAX_CONNECTIONS_SETTING)));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    // Every connection task holds a receiver: `stop` tells them to finish, and `closed`
    // resolves once they all have.
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            refuse(stream, limits.max_connections, &refusals);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(Counted { stream, _permit: permit });
        let service = TowerToHyperService::new(app.clone());
        let connection = http.serve_connection(io, service).with_upgrades();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => finished(result),
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    finished(connection.await);
                }
            }
            drop(stopping);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(stopping);
    let grace = limits.request_timeout_for(LONG_POLL_PATH) + SHUTDOWN_GRACE;
    if tokio::time::timeout(grace, stop.closed()).await.is_err() {
        tracing::warn!("some connections were still open {} s after the shutdown signal", grace.as_secs());
    }
    Ok(())
}

fn finished(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended");
    }
}

/// An accept error: a connection that failed before it was accepted is skipped; anything
/// else (e.g. out of file descriptors) is logged and retried after a pause.
async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "cannot accept a connection; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The answer to a connection past the cap.
fn refusal(max_connections: usize) -> Vec<u8> {
    let body = serde_json::json!({"error": {
        "code": "too_many_connections",
        "message": format!("tripwire already has {max_connections} open connections (its limit); retry later"),
    }})
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers a connection past the cap with 503 once its request head has arrived (a client
/// reads an answer sent before its request as garbage), and closes it. Closed without an
/// answer when no head arrives within [`REFUSAL_WAIT`] or too many refusals are under way.
fn refuse(mut stream: TcpStream, max_connections: usize, refusals: &Arc<Semaphore>) {
    let Ok(slot) = refusals.clone().try_acquire_owned() else { return };
    tokio::spawn(async move {
        let answer = async {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REFUSED_HEAD_BYTES {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                head.extend_from_slice(&buf[..n]);
            }
            stream.write_all(&refusal(max_connections)).await?;
            stream.shutdown().await?;
            // Read what else the client sends until it closes, so that closing does not reset
            // the connection before the client has read the answer.
            while stream.read(&mut buf).await? > 0 {}
            Ok::<_, io::Error>(())
        };
        let _ = tokio::time::timeout(REFUSAL_WAIT, answer).await;
        drop(slot);
    });
}

/// Enforces the request timeout: 408 `request_timeout` past it.
async fn request_deadline(State(limits): State<ListenerLimits>, request: Request, next: Next) -> Response {
    let limit = limits.request_timeout_for(request.uri().path());
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let mut response = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request was not received and answered within {} s (the server's request timeout)",
                    limit.as_secs_f64()
                ),
            )
            .into_response();
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

/// A connection holding its slot under the cap until it is closed, also after an upgrade to
/// a WebSocket (hyper hands this same value to the upgraded connection).
struct Counted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_long_poll_gets_its_wait_on_top() {
        let limits = ListenerLimits::default();
        assert_eq!(limits.request_timeout_for("/api/events"), DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(limits.request_timeout_for(LONG_POLL_PATH), DEFAULT_REQUEST_TIMEOUT + Duration::from_secs(60));
    }

    #[test]
    fn the_refusal_is_a_complete_http_answer() {
        let answer = String::from_utf8(refusal(1024)).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "too_many_connections");
        assert!(body["error"]["message"].as_str().unwrap().contains("1024"));
    }
}
