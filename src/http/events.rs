//! `POST /api/events` (one event or an array) and `GET /api/events` (filtered, newest first,
//! paginated).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::model::integral;
use crate::model::{Event, JsonPath, Problems};
use crate::service::{IngestReport, Order, Service, Stamper, EVENT_SCAN_LIMIT};

use super::{json_body, ApiError, Query, Window, MAX_BATCH_EVENTS};
use crate::model::event_filter::EventFilter;

pub(super) fn routes() -> Router<Service> {
    Router::new()
        .route("/events", get(list).post(create))
        .route("/events/filter", post(filter))
        .route("/events/filter/next", get(filter_next))
}

/// Validates a whole request before anything is written: one bad event rejects the request.
pub(crate) fn parse_events(value: &Value, stamper: &Stamper) -> Result<Vec<Event>, Problems> {
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
        match stamper.read(item, &path) {
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
    let ingested = async {
        let value = json_body(body)?;
        let events = parse_events(&value, &service.stamper()).map_err(ApiError::invalid)?;
        Ok(service.ingest(events).await?)
    };
    ingested.await.map(Json).inspect_err(|e: &ApiError| service.metrics().reject(e.code()))
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

async fn list(State(service): State<Service>, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let Window { since, until, limit } = Window::parse(q.since.as_deref(), q.until.as_deref(), q.limit, (50, 1000))?;
    let page = service
        .events(Order::NewestFirst, q.page, limit, EVENT_SCAN_LIMIT, move |e| {
            q.name.as_deref().is_none_or(|n| e.event == n)
                && q.prefix.as_deref().is_none_or(|p| e.event.starts_with(p))
                && q.resource.as_deref().is_none_or(|r| e.resource.id() == r)
                && q.related.as_deref().is_none_or(|r| e.related.iter().any(|x| x.id() == r))
                && since.is_none_or(|s| e.occurred >= s)
                && until.is_none_or(|u| e.occurred <= u)
        })
        .await?;
    Ok(Json(json!({"events": page.events, "next_page": page.next})))
}

/// Prefect's `POST /api/events/filter` body: `{"filter": {...}, "limit": n}`.
fn filter_request(value: &Value) -> Result<(EventFilter, bool, usize), Problems> {
    let root = JsonPath::root();
    let mut problems = Problems::default();
    let Some(object) = value.as_object() else {
        problems.add(&root, "expected an object such as {\"filter\": {...}, \"limit\": 50}");
        return Err(problems);
    };
    for key in object.keys().filter(|k| !["filter", "limit"].contains(&k.as_str())) {
        problems.add(&root.key(key), "unknown field; the body is {\"filter\": {...}, \"limit\": n}, with `resource`, `event`, `order`, ... inside `filter`");
    }
    let null = Value::Null;
    let raw = object.get("filter").unwrap_or(&null);
    let filter = EventFilter::from_json(raw, &root.key("filter")).map_err(|p| problems.extend(p)).ok();
    let ascending = match raw.get("order") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("desc") => false,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("asc") => true,
        Some(other) => {
            problems.add(&root.key("filter").key("order"), format!("expected \"ASC\" or \"DESC\", got {other}"));
            false
        }
    };
    let limit = match object.get("limit") {
        None | Some(Value::Null) => 50,
        Some(v) => match v.as_number().and_then(integral) {
            Some(n) if (1..=1000).contains(&n) => n as usize,
            _ => {
                problems.add(&root.key("limit"), format!("must be from 1 to 1000, got {v}"));
                50
            }
        },
    };
    match filter {
        Some(f) if problems.is_empty() => Ok((f, ascending, limit)),
        _ => Err(problems),
    }
}

/// What a page token carries: the request, and where the next page starts.
fn page_token(request: &Value, cursor: u64) -> String {
    let text = json!({"request": request, "cursor": cursor}).to_string();
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn read_page_token(token: &str) -> Option<(Value, u64)> {
    let bytes: Option<Vec<u8>> =
        (0..token.len()).step_by(2).map(|i| token.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
    let value: Value = serde_json::from_slice(&bytes?).ok()?;
    Some((value["request"].clone(), value["cursor"].as_u64()?))
}

async fn filter_page(
    service: &Service,
    host: Option<&str>,
    request: Value,
    cursor: Option<u64>,
) -> Result<Json<Value>, ApiError> {
    let (filter, ascending, limit) = filter_request(&request).map_err(ApiError::invalid)?;
    let filter = std::sync::Arc::new(filter);
    let order = if ascending { Order::OldestFirst } else { Order::NewestFirst };
    let page = {
        let filter = filter.clone();
        service.events(order, cursor, limit, EVENT_SCAN_LIMIT, move |e| filter.includes(e)).await?
    };
    let total = service.count_events(move |e| filter.includes(e)).await?;
    let (events, next) = (page.events, page.next);
    let next_page = next.map(|cursor| {
        let path = format!("/api/events/filter/next?page-token={}", page_token(&request, cursor));
        match host {
            Some(h) => format!("http://{h}{path}"),
            None => path,
        }
    });
    Ok(Json(json!({"events": events, "total": total, "next_page": next_page})))
}

/// `POST /api/events/filter`, in Prefect's shape.
async fn filter(
    State(service): State<Service>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let request = match body {
        Ok(b) if b.is_empty() => json!({}),
        other => json_body(other)?,
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    filter_page(&service, host, request, None).await
}

#[derive(Deserialize)]
struct NextQuery {
    #[serde(rename = "page-token")]
    page_token: String,
}

/// `GET /api/events/filter/next?page-token=...`.
async fn filter_next(
    State(service): State<Service>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Result<Json<Value>, ApiError> {
    // 403, as Prefect answers a page token it did not issue.
    let Some((request, cursor)) = read_page_token(&q.page_token) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_page_token",
            "`page-token` is not a page token from this server; use the `next_page` of a previous answer",
        ));
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    filter_page(&service, host, request, Some(cursor)).await
}
