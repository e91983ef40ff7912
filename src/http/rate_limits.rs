//! Rate limits: static keys made and removed by hand, and every key's window as it stands.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use crate::model::{RateLimit, RateLimitQuota, RateLimitStatus};
use crate::service::Service;

use super::{typed_body, ApiError};

pub(super) fn routes() -> Router<Service> {
    Router::new().route("/rate-limits", get(list)).route("/rate-limits/{key}", axum::routing::put(put).delete(remove))
}

async fn list(State(service): State<Service>) -> Result<Json<Vec<RateLimitStatus>>, ApiError> {
    Ok(Json(service.rate_limits().await?))
}

async fn put(
    State(service): State<Service>,
    Path(key): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<RateLimit>), ApiError> {
    let quota: RateLimitQuota = typed_body(body)?;
    let (limit, created) = service.put_rate_limit(key, quota).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(limit)))
}

async fn remove(State(service): State<Service>, Path(key): Path<String>) -> Result<StatusCode, ApiError> {
    service.delete_rate_limit(key).await?;
    Ok(StatusCode::NO_CONTENT)
}
