//! `POST /api/events` (one event or an array) and `GET /api/events` (filtered, newest first,
//! paginated).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::model::{Event, EventDefaults, JsonPath, Problems, Timestamp};
use crate::service::clock::new_id;
use crate::service::{IngestReport, Service, ServiceError};
use crate::store::StoreError;

use super::{blocking, json_body, ApiError, MAX_BATCH_EVENTS};

pub(super) fn routes() -> Router<Service> {
    Router::new().route("/events", get(list).post(create))
}

/// Validates a whole request before anything is written: one bad event rejects the request.
pub(crate) fn parse_events(value: &Value, now: Timestamp) -> Result<Vec<Event>, Problems> {
    let (items, single) = match value {
        Value::Array(items) => (items.as_slice(), false),
        other => (std::slice::from_ref(other), true),
    };
    let mut problems = Problems::default();
    if items.len() > MAX_BATCH_EVENTS {
        problems.add(
            &JsonPath::root(),
            format!("{} events in one request; at most {MAX_BATCH_EVENTS} are allowed", items.len()),
        );
        return Err(problems);
    }
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = if single { JsonPath::root() } else { JsonPath::root().index(i) };
        let mut ids = new_id;
        match Event::from_json(item, &path, Some(EventDefaults { occurred: now, new_id: &mut ids })) {
            Ok(e) => events.push(e),
            Err(p) => problems.extend(p),
        }
    }
    problems.into_result(events)
}

async fn create(
    State(service): State<Service>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IngestReport>, ApiError> {
    let value = json_body(body)?;
    let now = service.config().clock.now();
    let events = parse_events(&value, now).map_err(ApiError::invalid)?;
    Ok(Json(service.ingest(events).await?))
}

#[derive(Deserialize)]
struct ListQuery {
    name: Option<String>,
    prefix: Option<String>,
    resource: Option<String>,
    related: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    page: Option<u64>,
}

/// How many stored events one page may scan looking for matches.
const SCAN_LIMIT: usize = 100_000;

async fn list(State(service): State<Service>, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let mut problems = Problems::default();
    let root = JsonPath::root();
    let mut time = |field: &str, v: &Option<String>| {
        v.as_deref().and_then(|s| Timestamp::parse(s).map_err(|e| problems.add(&root.key(field), e)).ok())
    };
    let since = time("since", &q.since);
    let until = time("until", &q.until);
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        problems.add(&root.key("limit"), format!("must be from 1 to 1000, got {limit}"));
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid(problems));
    }
    let store = service.store();
    let (events, next) = blocking(move || {
        store
            .events_desc(q.page, limit, SCAN_LIMIT, |e| {
                q.name.as_deref().is_none_or(|n| e.event == n)
                    && q.prefix.as_deref().is_none_or(|p| e.event.starts_with(p))
                    && q.resource.as_deref().is_none_or(|r| e.resource.id() == r)
                    && q.related.as_deref().is_none_or(|r| e.related.iter().any(|x| x.id() == r))
                    && since.is_none_or(|s| e.occurred >= s)
                    && until.is_none_or(|u| e.occurred <= u)
            })
            .map_err(|e: StoreError| ApiError::from(ServiceError::from(e)))
    })
    .await?;
    let events: Vec<&Event> = events.iter().map(|s| &s.event).collect();
    Ok(Json(json!({"events": events, "next_page": next})))
}
