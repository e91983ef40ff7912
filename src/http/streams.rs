//! A run's stream: `POST /runs/{id}/stream` (the worker appends chunks) and
//! `GET /runs/{id}/stream` (server-sent events: every stored chunk from `from`, then live ones
//! until the run ends, then an `end` event with its state).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;

use crate::model::{StreamBatch, StreamChunk};
use crate::service::Service;

use super::{typed_body, uuid_in_path, ApiError, Query};

/// Chunks read from the store at a time.
const PAGE: usize = 256;
/// A follower looks at the store at least this often, besides being woken by commits.
const RECHECK: Duration = Duration::from_secs(1);

pub(super) fn routes() -> Router<Service> {
    Router::new().route("/runs/{id}/stream", get(follow).post(append))
}

async fn append(
    State(service): State<Service>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = uuid_in_path(&id, "a run id")?;
    let batch: StreamBatch = typed_body(body)?;
    let appended = service.append_stream(id, batch).await?;
    Ok(Json(json!({ "appended": appended })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FollowQuery {
    /// The first position to send (default 0, or one past the `Last-Event-ID` header).
    from: Option<u64>,
}

/// Where a follower is.
struct Following {
    service: Service,
    id: uuid::Uuid,
    next: u64,
    ready: VecDeque<StreamChunk>,
    changes: tokio::sync::watch::Receiver<u64>,
    ended: bool,
}

async fn follow(
    State(service): State<Service>,
    Path(id): Path<String>,
    Query(query): Query<FollowQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = uuid_in_path(&id, "a run id")?;
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|seen| seen.saturating_add(1));
    let next = query.from.or(resumed).unwrap_or(0);
    // Subscribed before the first read: a chunk committed in between wakes us.
    let changes = service.run_changes();
    service.run(id).await?;
    let start = Following { service, id, next, ready: VecDeque::new(), changes, ended: false };
    let events = futures_util::stream::unfold(start, |mut f| async move {
        loop {
            if let Some(chunk) = f.ready.pop_front() {
                let event = Event::default().id(chunk.seq.to_string()).event("chunk");
                let event = event.json_data(&chunk).unwrap_or_else(|_| Event::default().comment("unencodable chunk"));
                return Some((Ok(event), f));
            }
            if f.ended {
                return None;
            }
            let (chunks, state) = match f.service.stream_page(f.id, f.next, PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    f.ended = true;
                    let error = json!({"code": e.code(), "message": e.public_message()});
                    return Some((Ok(Event::default().event("error").data(error.to_string())), f));
                }
            };
            if let Some(last) = chunks.last() {
                f.next = last.seq + 1;
                f.ready.extend(chunks);
                continue;
            }
            if state.is_final() {
                f.ended = true;
                let end = json!({"state": state, "next": f.next});
                return Some((Ok(Event::default().event("end").data(end.to_string())), f));
            }
            f.changes.mark_unchanged();
            let draining = f.service.draining();
            tokio::select! {
                _ = tokio::time::timeout(RECHECK, f.changes.changed()) => {}
                () = draining => {
                    // The server is stopping: end here; the reader resumes with `from` (or
                    // `Last-Event-ID`) once it is back.
                    f.ended = true;
                    let closing = json!({"reason": "the server is shutting down", "next": f.next});
                    return Some((Ok(Event::default().event("closing").data(closing.to_string())), f));
                }
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
