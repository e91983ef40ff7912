//! The HTTP API (axum). `router(service)` builds the whole app; all routes live under `/api`
//! so that Prefect clients pointed at `http://HOST:PORT/api` find them.

pub mod access;
mod backtest;
mod dashboard;
mod deployments;
mod error;
mod events;
mod filters;
mod firings;
mod keys;
pub mod listener;
mod openapi;
mod rate_limits;
mod runs;
mod streams;
mod triggers;
mod websocket;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode, Uri};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use crate::service::Service;

pub use self::access::Guard;
pub use self::error::ApiError;
pub use self::websocket::{
    SubscriberLimits, BACKFILL_MAX_BYTES, INGEST_BATCH_BYTES, MAX_SUBSCRIPTION_BYTES,
    SUBSCRIBERS_MAX_TOTAL_QUEUED_BYTES, SUBSCRIBER_MAX_QUEUED_BYTES, SUBSCRIBER_MAX_QUEUED_EVENTS,
    SUBSCRIBER_SEND_TIMEOUT,
};

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Events in one `POST /api/events`.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// The version answered to Prefect clients (they check the major version).
pub const PREFECT_API_VERSION: &str = "3.8.8";

/// The whole API, with the default [`SubscriberLimits`] and no other origin allowed.
pub fn router(service: Service) -> Router {
    router_with(service, SubscriberLimits::default(), Guard::default())
}

/// The whole API, with the given limits for `/api/events/out` subscribers and the origins
/// allowed besides the server's own (see [`access`]).
pub fn router_with(service: Service, subscribers: SubscriberLimits, guard: Guard) -> Router {
    let api = Router::new()
        .route("/health", get(health))
        .route("/admin/version", get(|| async { Json(PREFECT_API_VERSION) }))
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .merge(backtest::routes())
        .merge(events::routes())
        .merge(filters::routes())
        .merge(firings::routes())
        .merge(triggers::routes())
        .merge(deployments::routes())
        .merge(runs::routes())
        .merge(streams::routes())
        .merge(rate_limits::routes())
        .merge(keys::routes())
        .merge(websocket::routes(subscribers))
        .method_not_allowed_fallback(error::method_not_allowed);
    let guard = axum::middleware::from_fn_with_state((service.clone(), Arc::new(guard)), access::guard);
    Router::new()
        .merge(dashboard::routes())
        .route("/metrics", get(metrics))
        .nest("/api", api)
        .fallback(|method: Method, uri: Uri| async move { ApiError::no_route(method.as_str(), uri.path()) })
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(guard)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(service)
}

/// `true` while the service can take writes; 503 naming the failure once its core has stopped
/// (the server then exits for its supervisor to restart it).
async fn health(axum::extract::State(service): axum::extract::State<Service>) -> Result<Json<bool>, ApiError> {
    service.health().map(|()| Json(true)).map_err(|why| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "core_failed", format!("tripwire cannot take writes: {why}"))
    })
}

/// `GET /metrics`: the service's metrics in Prometheus' text format (OpenMetrics).
async fn metrics(axum::extract::State(service): axum::extract::State<Service>) -> impl axum::response::IntoResponse {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(axum::http::header::CONTENT_TYPE, content_type)], service.metrics().encode())
}

/// Reads a JSON body, answering 413 for one over the limit and 400 for one that is not JSON.
fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than {MAX_BODY_BYTES} bytes; send fewer events per request"),
            )
        } else {
            ApiError::new(rejection.status(), "bad_body", rejection.body_text())
        }
    })?;
    if bytes.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "empty_body", "the request needs a JSON body"));
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::malformed(&e))
}

/// A UUID from the path (`id`), or 400 saying what it should have been (`what`: "a run id").
fn uuid_in_path(text: &str, what: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(text).map_err(|_| {
        let mut p = crate::model::Problems::default();
        p.add(&crate::model::JsonPath::root().key("id"), format!("`{text}` is not {what} (a UUID)"));
        ApiError::invalid(p)
    })
}

/// Reads a JSON body into a typed request; a field of the wrong type, a missing or an unknown
/// field is reported as a problem naming it.
fn typed_body<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let value = json_body(body)?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        use serde_path_to_error::Segment;
        let path = e.path().iter().fold(crate::model::JsonPath::root(), |path, segment| match segment {
            Segment::Seq { index } => path.index(*index),
            Segment::Map { key } => path.key(key),
            Segment::Enum { variant } => path.key(variant),
            Segment::Unknown => path,
        });
        let mut problems = crate::model::Problems::default();
        problems.add(&path, e.into_inner().to_string());
        ApiError::invalid(problems)
    })
}

/// A listing's `since`, `until` (RFC 3339) and `limit` query parameters, checked: 400 names
/// every one at fault.
pub(crate) struct Window {
    pub since: Option<crate::model::Timestamp>,
    pub until: Option<crate::model::Timestamp>,
    pub limit: usize,
}

impl Window {
    /// Reads them; `limit` defaults to `default` and may be 1 to `max`.
    pub(crate) fn parse(
        since: Option<&str>,
        until: Option<&str>,
        limit: Option<usize>,
        (default, max): (usize, usize),
    ) -> Result<Window, ApiError> {
        let mut problems = crate::model::Problems::default();
        let root = crate::model::JsonPath::root();
        let mut time = |field: &str, v: Option<&str>| {
            v.and_then(|s| crate::model::Timestamp::parse(s).map_err(|e| problems.add(&root.key(field), e)).ok())
        };
        let (since, until) = (time("since", since), time("until", until));
        let limit = limit.unwrap_or(default);
        if !(1..=max).contains(&limit) {
            problems.add(&root.key("limit"), format!("must be from 1 to {max}, got {limit}"));
        }
        problems.into_result(Window { since, until, limit }).map_err(ApiError::invalid)
    }
}

/// Query parameters, like axum's `Query`, but a value that does not parse (a number too large,
/// a negative count) answers 400 with the JSON error body naming the parameter.
pub(crate) struct Query<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| Query(q))
            .map_err(|rejection| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", rejection.body_text()))
    }
}
