//! Backtests: `POST /backtest` starts one over the stored events and answers 202 with its
//! record; `GET /backtest/{id}` follows it (progress, then the summary), `/firings` lists what
//! would have fired, `/buckets` why the rest would not have; `DELETE` cancels it.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{Backtest, BacktestRequest, Firing, JsonPath, Problems};
use crate::service::{BucketsPage, Service};

use super::triggers::bucket_params;
use super::{typed_body, uuid_in_path, ApiError, Query};

pub(super) fn routes() -> Router<Service> {
    Router::new()
        .route("/backtest", get(list).post(start))
        .route("/backtest/{id}", get(show).delete(cancel))
        .route("/backtest/{id}/firings", get(firings))
        .route("/backtest/{id}/buckets", get(buckets))
}

fn backtest_id(text: &str) -> Result<Uuid, ApiError> {
    uuid_in_path(text, "a backtest id")
}

async fn start(State(service): State<Service>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let request: BacktestRequest = typed_body(body)?;
    let started = service.start_backtest(request).await?;
    let mut response = (StatusCode::ACCEPTED, Json(&started)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/backtest/{}", started.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn list(State(service): State<Service>) -> Json<Vec<Backtest>> {
    Json(service.backtests())
}

async fn show(State(service): State<Service>, Path(id): Path<String>) -> Result<Json<Backtest>, ApiError> {
    Ok(Json(service.backtest(backtest_id(&id)?)?))
}

async fn cancel(State(service): State<Service>, Path(id): Path<String>) -> Result<Json<Backtest>, ApiError> {
    Ok(Json(service.cancel_backtest(backtest_id(&id)?)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FiringsQuery {
    from: Option<usize>,
    limit: Option<usize>,
}

/// Firings per page by default, and at most.
const FIRING_PAGE: (usize, usize) = (100, 1000);

/// A page of the firings a backtest found, in the order they happened.
#[derive(Serialize)]
struct FiringsPage {
    firings: Vec<Firing>,
    /// Pass as `from` for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<usize>,
}

async fn firings(
    State(service): State<Service>,
    Path(id): Path<String>,
    Query(q): Query<FiringsQuery>,
) -> Result<Json<FiringsPage>, ApiError> {
    let id = backtest_id(&id)?;
    let limit = q.limit.unwrap_or(FIRING_PAGE.0);
    if !(1..=FIRING_PAGE.1).contains(&limit) {
        let mut problems = Problems::default();
        problems.add(&JsonPath::root().key("limit"), format!("must be from 1 to {}, got {limit}", FIRING_PAGE.1));
        return Err(ApiError::invalid(problems));
    }
    let (firings, next) = service.backtest_firings(id, q.from.unwrap_or(0), limit)?;
    Ok(Json(FiringsPage { firings, next }))
}

/// One tried definition's buckets at the end: `trigger=ID`, then the live buckets' `key`,
/// `after` and `limit`.
async fn buckets(
    State(service): State<Service>,
    Path(id): Path<String>,
    Query(mut pairs): Query<Vec<(String, String)>>,
) -> Result<Json<BucketsPage>, ApiError> {
    let id = backtest_id(&id)?;
    let trigger = pairs.iter().position(|(k, _)| k == "trigger").map(|i| pairs.remove(i).1);
    let Some(trigger) = trigger else {
        let mut problems = Problems::default();
        problems.add(&JsonPath::root().key("trigger"), "name the tried definition: `trigger=ID`");
        return Err(ApiError::invalid(problems));
    };
    Ok(Json(service.backtest_buckets(id, trigger, bucket_params(pairs)?).await?))
}
