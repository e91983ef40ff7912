//! Trigger definitions: create, upsert, list, show, delete, enable/disable, and the live
//! buckets of a trigger ("why did or didn't it fire?").

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::engine::bucket::BucketKey;
use crate::engine::compile;
use crate::engine::compile::NodeKind;
use crate::engine::BucketQuery;
use crate::model::{JsonPath, Problems, TriggerDefinition};
use crate::service::{Service, ServiceError};
use crate::store::TriggerRecord;

use super::{blocking, json_body, ApiError, Query};

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

/// The stored records, each with a warning when its deployment does not exist (yet).
fn records_with_warnings(store: &crate::store::Store, id: Option<&str>) -> Result<Vec<TriggerRecord>, ApiError> {
    let read = || -> Result<Vec<TriggerRecord>, crate::store::StoreError> {
        let mut records = match id {
            Some(id) => store.trigger(id)?.into_iter().collect(),
            None => store.triggers()?,
        };
        let deployments: std::collections::HashSet<String> = store.deployments()?.into_iter().map(|d| d.name).collect();
        for r in &mut records {
            r.note_deployment(|name| deployments.contains(name));
        }
        Ok(records)
    };
    read().map_err(|e| ServiceError::from(e).into())
}

async fn list(State(service): State<Service>) -> Result<Json<Vec<TriggerRecord>>, ApiError> {
    let store = service.store();
    Ok(Json(blocking(move || records_with_warnings(&store, None)).await?))
}

async fn show(State(service): State<Service>, Path(id): Path<String>) -> Result<Json<TriggerRecord>, ApiError> {
    let store = service.store();
    let found = blocking({
        let id = id.clone();
        move || records_with_warnings(&store, Some(&id))
    })
    .await?;
    found.into_iter().next().map(Json).ok_or_else(|| ServiceError::NotFound { what: "trigger", id }.into())
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
/// Evidence events read from the store per blocking step: a client that goes away stops the
/// work at the next step.
const EVIDENCE_CHUNK: usize = 50;

/// `?key=V` (repeat it for each `for_each` label, in sorted-label order), `?limit=N`,
/// `?after=CURSOR` (the previous page's `next`).
fn bucket_query(pairs: Vec<(String, String)>) -> Result<BucketQuery, ApiError> {
    let mut query = BucketQuery { limit: BUCKET_PAGE.0, ..BucketQuery::default() };
    let mut problems = Problems::default();
    let root = JsonPath::root();
    for (name, value) in pairs {
        match name.as_str() {
            "key" => query.key.get_or_insert_with(Vec::new).push(value),
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=BUCKET_PAGE.1).contains(&n) => query.limit = n,
                _ => problems.add(&root.key("limit"), format!("must be from 1 to {}, got `{value}`", BUCKET_PAGE.1)),
            },
            "after" => match value.split_once(':').and_then(|(n, k)| Some((n.parse::<usize>().ok()?, k))) {
                Some((node, key)) => query.after = Some((node, BucketKey::from_packed(key))),
                None => problems.add(&root.key("after"), "expected the `next` cursor of a previous page"),
            },
            other => problems.add(&root.key(other), "unknown parameter; use key, limit or after"),
        }
    }
    problems.into_result(query).map_err(ApiError::invalid)
}

/// A page of live buckets with their window, count, phase, and the evidence each keeps (the
/// last event it saw, with what it did there): the answer to "why did or didn't my trigger
/// fire?". Read from the engine's own state: no event scan, one lookup per bucket shown.
async fn buckets(
    State(service): State<Service>,
    Path(id): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let query = bucket_query(pairs)?;
    let Some(page) = service.bucket_page(id.clone(), query).await? else {
        return Ok(Json(json!({"trigger": id, "buckets": [], "next": null})));
    };
    let mut items = Vec::with_capacity(page.buckets.len());
    for chunk in page.buckets.chunks(EVIDENCE_CHUNK) {
        let ids: Vec<_> = chunk.iter().map(|b| b.bucket.last_event).collect();
        let store = service.store();
        let events = blocking(move || {
            ids.iter()
                .map(|id| match id {
                    Some(id) => store.event(id).map_err(|e| ApiError::from(ServiceError::from(e))),
                    None => Ok(None),
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
        for (b, event) in chunk.iter().zip(events) {
            let evidence: Vec<Value> = event
                .map(std::sync::Arc::new)
                .and_then(|e| {
                    let NodeKind::Event(node) = &page.definition.nodes.get(b.node)?.kind else { return None };
                    let role = node.role_of(&e)?;
                    Some(json!({"id": e.id, "event": e.event, "occurred": e.occurred, "opens": role.opens, "counts": role.counts}))
                })
                .into_iter()
                .collect();
            items.push(json!({
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
                "events": evidence,
            }));
        }
    }
    let next = page.next.map(|(node, key)| format!("{node}:{}", key.as_str()));
    Ok(Json(json!({"trigger": id, "buckets": items, "next": next})))
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
    let store = service.store();
    blocking(move || {
        if store.trigger(&id).map_err(|e| ApiError::from(ServiceError::from(e)))?.is_none() {
            return Err(ServiceError::NotFound { what: "trigger", id }.into());
        }
        store.firings(limit, |f| f.trigger == id).map_err(|e| ServiceError::from(e).into())
    })
    .await
    .map(Json)
}
