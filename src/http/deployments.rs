//! Deployments, their triggers, and runs created by hand.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

use crate::model::integral;
use crate::model::{Deployment, JsonPath, Problems, Run, TriggerDefinition, TriggerRecord, TriggerSync};
use crate::service::Service;

use super::{json_body, ApiError};

pub(super) fn routes() -> Router<Service> {
    Router::new()
        .route("/deployments", get(list).post(create))
        .route("/deployments/{name}", get(show).put(upsert).delete(remove))
        .route("/deployments/{name}/runs", post(create_run))
        .route("/deployments/{name}/triggers", get(list_triggers).put(sync_triggers))
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
    let value = json_body(body)?;
    // The URL names the deployment; a body that names another conflicts with it.
    if let Some(other) = value.get("name").and_then(Value::as_str).filter(|n| *n != name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "name_mismatch",
            format!(
                "the body names deployment `{other}` but the URL names `{name}`; leave `name` out or make them equal"
            ),
        ));
    }
    let d = Deployment::from_json(&value, &JsonPath::root(), Some(&name)).map_err(ApiError::invalid)?;
    let (d, created) = service.put_deployment(d, false).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(d)))
}

async fn list(State(service): State<Service>) -> Result<Json<Vec<Deployment>>, ApiError> {
    Ok(Json(service.deployments().await?))
}

async fn show(State(service): State<Service>, Path(name): Path<String>) -> Result<Json<Deployment>, ApiError> {
    Ok(Json(service.deployment(name).await?))
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
    let mut priority = None;
    let parameters = match &value {
        Value::Object(o) => {
            for k in o.keys().filter(|k| !["parameters", "priority"].contains(&k.as_str())) {
                problems.add(&root.key(k), "unknown field; use `parameters` and `priority`");
            }
            match o.get("priority") {
                None | Some(Value::Null) => {}
                Some(v) => match v.as_number().and_then(integral).and_then(|n| i32::try_from(n).ok()) {
                    Some(n) => priority = Some(n),
                    None => problems.add(&root.key("priority"), format!("expected a whole number, got {v}")),
                },
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
    Ok((StatusCode::CREATED, Json(service.create_run(name, parameters, priority).await?)))
}

/// The triggers that run this deployment.
async fn list_triggers(
    State(service): State<Service>,
    Path(name): Path<String>,
) -> Result<Json<Vec<TriggerRecord>>, ApiError> {
    Ok(Json(service.deployment_triggers(name).await?))
}

/// Replaces the deployment's triggers with the list (what a worker does when it serves a
/// flow): unchanged ones keep their state, missing ones are removed.
async fn sync_triggers(
    State(service): State<Service>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TriggerSync>, ApiError> {
    let mut value = json_body(body)?;
    if let Value::Array(items) = &mut value {
        for item in items.iter_mut() {
            if let Some(o) = item.as_object_mut() {
                // Left out or null (as Prefect's clients send unset fields): this deployment.
                let deployment = o.entry("deployment").or_insert(Value::Null);
                if deployment.is_null() {
                    *deployment = Value::String(name.clone());
                }
            }
        }
    }
    let definitions = TriggerDefinition::list_from_json(&value).map_err(ApiError::invalid)?;
    Ok(Json(service.sync_triggers(name, definitions).await?))
}
