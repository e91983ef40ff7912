//! `GET /api/firings`: what fired, when, with which parameters, or why it created no run;
//! newest first, by trigger and time, paged.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::service::Service;

use super::{ApiError, Query, Window};

/// Firings per page: the default and the most.
const PAGE: (usize, usize) = (50, 1000);

pub(super) fn routes() -> Router<Service> {
    Router::new().route("/firings", get(list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    trigger: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    page: Option<u64>,
}

/// `?trigger=&since=&until=&limit=&page=`: answers `{"firings": [...], "next_page": n|null}`;
/// `page` is the previous answer's `next_page`. A page looks at most at the newest 100,000
/// firings before its cursor, so it may come back short with a `next_page` to go on with.
async fn list(State(service): State<Service>, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let Window { since, until, limit } = Window::parse(q.since.as_deref(), q.until.as_deref(), q.limit, PAGE)?;
    let (firings, next) = service.firing_page(q.trigger, since, until, q.page, limit).await?;
    Ok(Json(json!({"firings": firings, "next_page": next})))
}
