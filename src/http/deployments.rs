//! Deployments and runs.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::model::{Deployment, JsonPath, Problems, Run, RunState};
use crate::service::{Service, ServiceError};

use super::{blocking, json_body, ApiError};

pub(super) fn routes() -> Router<Service> {
    Router::new()
        .route("/deployments", get(list).post(create))
        .route("/deployments/{name}", get(show).put(upsert).delete(remove))
        .route("/deployments/{name}/runs", post(create_run))
        .route("/runs", get(list_runs))
        .route("/runs/{id}", get(show_run))
}

async fn create(
    State(service): State<Service>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Deployment>), ApiError> {
    let d = Deployment::from_json(&json_body(body)?, &JsonPath::root(), None).map_err(ApiError::invalid)?;
    let (d, _) = service.put_deployment(d, true).await?;
    Ok((StatusCode::CREATED, Json(d)))
}

async fn upsert(
    State(service): State<Service>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Deployment>), ApiError> {
    let d = Deployment::from_json(&json_body(body)?, &JsonPath::root(), Some(&name)).map_err(ApiError::invalid)?;
    let (d, created) = service.put_deployment(d, false).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(d)))
}

async fn list(State(service): State<Service>) -> Result<Json<Vec<Deployment>>, ApiError> {
    let store = service.store();
    Ok(Json(blocking(move || store.deployments().map_err(|e| ServiceError::from(e).into())).await?))
}

async fn show(State(service): State<Service>, Path(name): Path<String>) -> Result<Json<Deployment>, ApiError> {
    let store = service.store();
    let found = blocking({
        let name = name.clone();
        move || store.deployment(&name).map_err(|e| ServiceError::from(e).into())
    })
    .await?;
    found.map(Json).ok_or_else(|| ServiceError::NotFound { what: "deployment", id: name }.into())
}

async fn remove(State(service): State<Service>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    service.delete_deployment(name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_run(
    State(service): State<Service>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Run>), ApiError> {
    // An empty body means "no parameters".
    let value = match body {
        Ok(b) if b.is_empty() => Value::Object(Default::default()),
        other => json_body(other)?,
    };
    let mut problems = Problems::default();
    let root = JsonPath::root();
    let parameters = match &value {
        Value::Object(o) => {
            for k in o.keys().filter(|k| *k != "parameters") {
                problems.add(&root.key(k), "unknown field");
            }
            match o.get("parameters") {
                None | Some(Value::Null) => None,
                Some(p @ Value::Object(_)) => Some(p.clone()),
                Some(_) => {
                    problems.add(&root.key("parameters"), "expected an object");
                    None
                }
            }
        }
        _ => {
            problems.add(&root, "expected an object such as {\"parameters\": {...}}");
            None
        }
    };
    if !problems.is_empty() {
        return Err(ApiError::invalid(problems));
    }
    Ok((StatusCode::CREATED, Json(service.create_run(name, parameters).await?)))
}

#[derive(Deserialize)]
struct RunQuery {
    deployment: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
}

async fn list_runs(State(service): State<Service>, Query(q): Query<RunQuery>) -> Result<Json<Vec<Run>>, ApiError> {
    let mut problems = Problems::default();
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => match RunState::parse(s) {
            Some(s) => Some(s),
            None => {
                problems.add(
                    &JsonPath::root().key("state"),
                    format!("unknown state `{s}`; use Scheduled, Running, Completed, Failed or Cancelled"),
                );
                None
            }
        },
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        problems.add(&JsonPath::root().key("limit"), format!("must be from 1 to 1000, got {limit}"));
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid(problems));
    }
    let store = service.store();
    let runs = blocking(move || {
        store
            .runs(limit, |r| {
                q.deployment.as_deref().is_none_or(|d| r.deployment == d) && state.is_none_or(|s| r.state == s)
            })
            .map_err(|e| ServiceError::from(e).into())
    })
    .await?;
    Ok(Json(runs))
}

async fn show_run(State(service): State<Service>, Path(id): Path<String>) -> Result<Json<Run>, ApiError> {
    let Ok(uuid) = Uuid::parse_str(&id) else {
        let mut p = Problems::default();
        p.add(&JsonPath::root().key("id"), format!("`{id}` is not a run id (a UUID)"));
        return Err(ApiError::invalid(p));
    };
    let store = service.store();
    let found = blocking(move || store.run(&uuid).map_err(|e| ServiceError::from(e).into())).await?;
    found.map(Json).ok_or_else(|| ServiceError::NotFound { what: "run", id }.into())
}
