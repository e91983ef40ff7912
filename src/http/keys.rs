//! API keys, for administrators: `GET /api/admin/keys` lists them, `POST /api/admin/keys`
//! makes one (its token is in this answer only), `POST /api/admin/keys/{name}/revoke` revokes
//! one (by name, or by id).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::model::{ApiKey, CreatedApiKey, NewApiKey};
use crate::service::Service;

use super::{typed_body, ApiError};

pub(super) fn routes() -> Router<Service> {
    Router::new().route("/admin/keys", get(list).post(create)).route("/admin/keys/{which}/revoke", post(revoke))
}

async fn list(State(service): State<Service>) -> Json<Vec<ApiKey>> {
    Json(service.keys())
}

async fn create(
    State(service): State<Service>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    let new: NewApiKey = typed_body(body)?;
    Ok((StatusCode::CREATED, Json(service.create_key(new).await?)))
}

async fn revoke(State(service): State<Service>, Path(which): Path<String>) -> Result<Json<ApiKey>, ApiError> {
    Ok(Json(service.revoke_key(which).await?))
}
