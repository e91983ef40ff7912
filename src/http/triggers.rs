//! Trigger definitions: create, upsert, list, show, delete, enable/disable, and the live
//! buckets of a trigger ("why did or didn't it fire?").

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use std::sync::Arc;

use crate::engine::bucket::BucketKey;
use crate::engine::compile;
use crate::engine::compile::NodeKind;
use crate::model::{Event, JsonPath, Problems, TriggerDefinition};
use crate::service::{Service, ServiceError};
use crate::store::TriggerRecord;

use super::{blocking, json_body, ApiError};

pub(super) fn routes() -> Router<Service> {
    Router::new()
        .route("/triggers", get(list).post(create))
        .route("/triggers/{id}", get(show).put(upsert).delete(remove).patch(patch))
        .route("/triggers/{id}/buckets", get(buckets))
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
                let mut p = Problems::default();
                p.add(&JsonPath::root().key("id"), format!("`{given}` differs from the id in the URL, `{id}`"));
                return Err(ApiError::invalid(p));
            }
            Some(_) => {}
        }
    }
    let def = TriggerDefinition::from_json(&value, &JsonPath::root()).map_err(ApiError::invalid)?;
    compile(&def, &JsonPath::root()).map_err(ApiError::invalid)?;
    Ok(def)
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

async fn list(State(service): State<Service>) -> Result<Json<Vec<TriggerRecord>>, ApiError> {
    let store = service.store();
    Ok(Json(blocking(move || store.triggers().map_err(|e| ServiceError::from(e).into())).await?))
}

async fn show(State(service): State<Service>, Path(id): Path<String>) -> Result<Json<TriggerRecord>, ApiError> {
    let store = service.store();
    let found = blocking({
        let id = id.clone();
        move || store.trigger(&id).map_err(|e| ServiceError::from(e).into())
    })
    .await?;
    found.map(Json).ok_or_else(|| ServiceError::NotFound { what: "trigger", id }.into())
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

#[derive(Deserialize)]
struct BucketQuery {
    key: Option<String>,
}

/// Recent events scanned to show what each bucket has seen.
const EXPLAIN_SCAN: usize = 10_000;
/// Events listed per bucket.
const EXPLAIN_EVENTS: usize = 100;

/// Each live bucket with its window, count, phase, and the recent events in its window that
/// the trigger covers for its key: the answer to "why did or didn't my trigger fire?".
async fn buckets(
    State(service): State<Service>,
    Path(id): Path<String>,
    Query(q): Query<BucketQuery>,
) -> Result<Json<Value>, ApiError> {
    let views = service.buckets(id.clone(), q.key).await?;
    let store = service.store();
    let trigger_id = id.clone();
    let items = blocking(move || {
        let record = store.trigger(&trigger_id).map_err(|e| ApiError::from(ServiceError::from(e)))?;
        let compiled = record.and_then(|r| compile(&r.definition, &JsonPath::root()).ok());
        let (recent, _) = store
            .events_desc(None, EXPLAIN_SCAN, EXPLAIN_SCAN, |_| true)
            .map_err(|e| ApiError::from(ServiceError::from(e)))?;
        let recent: Vec<Arc<Event>> = recent.into_iter().rev().map(|s| Arc::new(s.event)).collect();
        let items: Vec<Value> = views
            .iter()
            .map(|b| {
                let mut seen = Vec::new();
                if let Some(NodeKind::Event(node)) = compiled.as_ref().and_then(|c| c.nodes.get(b.node)).map(|n| &n.kind) {
                    for e in &recent {
                        if seen.len() == EXPLAIN_EVENTS || e.occurred < b.bucket.start || e.occurred > b.bucket.end {
                            continue;
                        }
                        let Some(role) = node.role_of(e) else { continue };
                        if BucketKey::of(&node.for_each, e).labels(&node.for_each) == b.labels {
                            seen.push(json!({"id": e.id, "event": e.event, "occurred": e.occurred, "opens": role.opens, "counts": role.counts}));
                        }
                    }
                }
                json!({
                    "node": b.node,
                    "labels": b.labels,
                    "phase": b.phase,
                    "posture": b.posture,
                    "start": b.bucket.start,
                    "end": b.bucket.end,
                    "count": b.bucket.count,
                    "threshold": b.threshold,
                    "last_event": b.bucket.last_event,
                    "sweep_at": b.sweep_at,
                    "events": seen,
                })
            })
            .collect();
        Ok(items)
    })
    .await?;
    Ok(Json(json!({"trigger": id, "buckets": items})))
}
