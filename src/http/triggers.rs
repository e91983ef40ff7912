//! Trigger definitions: create, upsert, list, show, delete, enable/disable, and the live
//! buckets of a trigger ("why did or didn't it fire?").

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use crate::model::{JsonPath, Problems, TriggerDefinition, TriggerRecord};
use crate::service::{BucketsPage, BucketsRequest, Service};

use super::{json_body, ApiError, Query};

pub(super) fn routes() -> Router<Service> {
    Router::new()
        .route("/triggers", get(list).post(create))
        .route("/triggers/{id}", get(show).put(upsert).delete(remove).patch(patch))
        .route("/triggers/{id}/buckets", get(buckets))
        .route("/triggers/{id}/firings", get(firings))
}

/// Parses and compiles a definition, so that template and filter errors are caught here too.
fn definition(value: &Value, id_from_path: Option<&str>) -> Result<TriggerDefinition, ApiError> {
    let mut value = value.clone();
    if let (Some(id), Some(object)) = (id_from_path, value.as_object_mut()) {
        match object.get("id") {
            None => {
                object.insert("id".into(), Value::from(id));
            }
            Some(Value::String(given)) if given != id => {
                // The URL names the trigger; a body that names another conflicts with it.
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "id_mismatch",
                    format!(
                        "the body names trigger `{given}` but the URL names `{id}`; leave `id` out or make them equal"
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    // Templates and filters are compiled by the service when it installs the definition.
    TriggerDefinition::from_json(&value, &JsonPath::root()).map_err(ApiError::invalid)
}

async fn create(
    State(service): State<Service>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<TriggerRecord>), ApiError> {
    let def = definition(&json_body(body)?, None)?;
    let (record, _) = service.put_trigger(def, true).await?;
    Ok((StatusCode::CREATED, Json(record)))
}

async fn upsert(
    State(service): State<Service>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<TriggerRecord>), ApiError> {
    let def = definition(&json_body(body)?, Some(&id))?;
    let (record, created) = service.put_trigger(def, false).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(record)))
}

/// `?stats=true` adds each trigger's live buckets and firings in the last hour.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    stats: bool,
}

async fn list(
    State(service): State<Service>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<TriggerRecord>>, ApiError> {
    Ok(Json(if q.stats { service.triggers_with_stats().await? } else { service.triggers().await? }))
}

async fn show(State(service): State<Service>, Path(id): Path<String>) -> Result<Json<TriggerRecord>, ApiError> {
    Ok(Json(service.trigger(id).await?))
}

async fn remove(State(service): State<Service>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    service.delete_trigger(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn patch(
    State(service): State<Service>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TriggerRecord>, ApiError> {
    let value = json_body(body)?;
    let mut problems = Problems::default();
    let root = JsonPath::root();
    let enabled = match value.as_object() {
        Some(o) => {
            for k in o.keys().filter(|k| *k != "enabled") {
                problems
                    .add(&root.key(k), "unknown field; PATCH changes only `enabled` (use PUT to replace a trigger)");
            }
            match o.get("enabled") {
                Some(Value::Bool(b)) => Some(*b),
                Some(other) => {
                    problems.add(&root.key("enabled"), format!("expected true or false, got {other}"));
                    None
                }
                None => {
                    problems.add(&root, "the `enabled` field is required");
                    None
                }
            }
        }
        None => {
            problems.add(&root, "expected an object such as {\"enabled\": false}");
            None
        }
    };
    let Some(enabled) = enabled.filter(|_| problems.is_empty()) else { return Err(ApiError::invalid(problems)) };
    Ok(Json(service.set_trigger_enabled(id, enabled).await?))
}

/// Buckets per page by default, and at most.
const BUCKET_PAGE: (usize, usize) = (100, 1000);

/// Reads `?key=V` (repeat it for each `for_each` label, in sorted-label order), `?limit=N`,
/// `?after=CURSOR` (the previous page's `next`).
pub(super) fn bucket_params(pairs: Vec<(String, String)>) -> Result<BucketsRequest, ApiError> {
    let mut params = BucketsRequest { key: None, after: None, limit: BUCKET_PAGE.0 };
    let mut problems = Problems::default();
    let root = JsonPath::root();
    for (name, value) in pairs {
        match name.as_str() {
            "key" => params.key.get_or_insert_with(Vec::new).push(value),
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=BUCKET_PAGE.1).contains(&n) => params.limit = n,
                _ => problems.add(&root.key("limit"), format!("must be from 1 to {}, got `{value}`", BUCKET_PAGE.1)),
            },
            "after" => params.after = Some(value),
            other => problems.add(&root.key(other), "unknown parameter; use key, limit or after"),
        }
    }
    problems.into_result(params).map_err(ApiError::invalid)
}

/// A page of live buckets with their window, count, phase, and the evidence each keeps: the
/// answer to "why did or didn't my trigger fire?".
async fn buckets(
    State(service): State<Service>,
    Path(id): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<BucketsPage>, ApiError> {
    Ok(Json(service.explain(id, bucket_params(pairs)?).await?))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FiringQuery {
    limit: Option<usize>,
}

/// Firings per answer by default, and at most.
const FIRING_PAGE: (usize, usize) = (50, 1000);

/// The definition's latest firings, newest first, each with the error that kept it from
/// creating a run (a template over its budget, a deployment that does not exist, ...).
async fn firings(
    State(service): State<Service>,
    Path(id): Path<String>,
    Query(q): Query<FiringQuery>,
) -> Result<Json<Vec<crate::model::Firing>>, ApiError> {
    let limit = q.limit.unwrap_or(FIRING_PAGE.0);
    if !(1..=FIRING_PAGE.1).contains(&limit) {
        let mut p = Problems::default();
        p.add(&JsonPath::root().key("limit"), format!("must be from 1 to {}, got {limit}", FIRING_PAGE.1));
        return Err(ApiError::invalid(p));
    }
    Ok(Json(service.firings(id, limit).await?))
}
