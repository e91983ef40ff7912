//! `GET /api/firings`: what fired, when, with which parameters, or why it created no run;
//! newest first, by trigger and time, paged.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::model::{JsonPath, Problems, Timestamp};
use crate::service::Service;

use super::{ApiError, Query};

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
    let mut problems = Problems::default();
    let root = JsonPath::root();
    let mut time = |field: &str, v: &Option<String>| {
        v.as_deref().and_then(|s| Timestamp::parse(s).map_err(|e| problems.add(&root.key(field), e)).ok())
    };
    let since = time("since", &q.since);
    let until = time("until", &q.until);
    let limit = q.limit.unwrap_or(PAGE.0);
    if !(1..=PAGE.1).contains(&limit) {
        problems.add(&root.key("limit"), format!("must be from 1 to {}, got {limit}", PAGE.1));
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid(problems));
    }
    let (firings, next) = service.firing_page(q.trigger, since, until, q.page, limit).await?;
    Ok(Json(json!({"firings": firings, "next_page": next})))
}
