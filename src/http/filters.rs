//! Hatchet-style scope filters: `POST /api/filters`, `GET /api/filters[?deployment=&scope=]`,
//! `GET|DELETE /api/filters/{id}`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use uuid::Uuid;

use crate::model::{JsonPath, ScopeFilter};
use crate::service::Service;

use super::{json_body, ApiError, Query};

pub(super) fn routes() -> Router<Service> {
    Router::new().route("/filters", get(list).post(create)).route("/filters/{id}", get(show).delete(remove))
}

fn filter_id(text: &str) -> Result<Uuid, ApiError> {
    super::uuid_in_path(text, "a filter id")
}

async fn create(
    State(service): State<Service>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ScopeFilter>), ApiError> {
    let filter =
        ScopeFilter::from_json(&json_body(body)?, &JsonPath::root(), service.new_id()).map_err(ApiError::invalid)?;
    Ok((StatusCode::CREATED, Json(service.put_filter(filter).await?)))
}

#[derive(Deserialize)]
struct ListQuery {
    deployment: Option<String>,
    scope: Option<String>,
}

async fn list(State(service): State<Service>, Query(q): Query<ListQuery>) -> Result<Json<Vec<ScopeFilter>>, ApiError> {
    let mut filters = service.filters().await?;
    filters.retain(|f| {
        q.deployment.as_deref().is_none_or(|d| f.deployment == d) && q.scope.as_deref().is_none_or(|s| f.scope == s)
    });
    Ok(Json(filters))
}

async fn show(State(service): State<Service>, Path(id): Path<String>) -> Result<Json<ScopeFilter>, ApiError> {
    Ok(Json(service.filter(filter_id(&id)?).await?))
}

async fn remove(State(service): State<Service>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    service.delete_filter(filter_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
