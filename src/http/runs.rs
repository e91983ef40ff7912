//! Runs: listing and reading them, their logs, and the worker protocol (claim, heartbeat,
//! complete, fail) plus cancelling; the workers heard from (`GET /workers`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use uuid::Uuid;

use crate::model::{
    ChildRequest, ClaimRequest, ClaimedRun, Completion, FailureReport, Heartbeat, HeartbeatReply, JsonPath, LogBatch,
    Problems, Run, RunState, WorkerStatus,
};
use crate::service::{LogPage, Service};

use super::{typed_body, ApiError, Query};

/// Most log lines one `GET /runs/{id}/logs` returns.
const MAX_LOG_PAGE: usize = 1000;

pub(super) fn routes() -> Router<Service> {
    Router::new()
        .route("/runs", get(list_runs))
        .route("/runs/claim", post(claim))
        .route("/runs/{id}", get(show_run))
        .route("/runs/{id}/heartbeat", post(heartbeat))
        .route("/runs/{id}/complete", post(complete))
        .route("/runs/{id}/fail", post(fail))
        .route("/runs/{id}/cancel", post(cancel))
        .route("/runs/{id}/logs", get(logs).post(append_logs))
        .route("/runs/{id}/children", get(children).post(spawn_child))
        .route("/workers", get(workers))
}

async fn workers(State(service): State<Service>) -> Json<Vec<WorkerStatus>> {
    Json(service.workers())
}

fn run_id(id: &str) -> Result<Uuid, ApiError> {
    super::uuid_in_path(id, "a run id")
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
    let runs = service
        .runs(limit, move |r| {
            q.deployment.as_deref().is_none_or(|d| r.deployment == d) && state.is_none_or(|s| r.state == s)
        })
        .await?;
    Ok(Json(runs))
}

async fn show_run(State(service): State<Service>, Path(id): Path<String>) -> Result<Json<Run>, ApiError> {
    Ok(Json(service.run(run_id(&id)?).await?))
}

async fn claim(
    State(service): State<Service>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<ClaimedRun>>, ApiError> {
    let request: ClaimRequest = typed_body(body)?;
    Ok(Json(service.claim(request).await?))
}

async fn heartbeat(
    State(service): State<Service>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<HeartbeatReply>, ApiError> {
    let id = run_id(&id)?;
    let heartbeat: Heartbeat = typed_body(body)?;
    Ok(Json(service.heartbeat(id, heartbeat).await?))
}

async fn complete(
    State(service): State<Service>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Run>, ApiError> {
    let id = run_id(&id)?;
    let completion: Completion = typed_body(body)?;
    Ok(Json(service.complete(id, completion).await?))
}

async fn fail(
    State(service): State<Service>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Run>, ApiError> {
    let id = run_id(&id)?;
    let failure: FailureReport = typed_body(body)?;
    Ok(Json(service.fail(id, failure).await?))
}

/// A child run for the worker running the parent: 201 when made now, 200 when the key named
/// it before (a retried parent finds its children).
async fn spawn_child(
    State(service): State<Service>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Run>), ApiError> {
    let id = run_id(&id)?;
    let request: ChildRequest = typed_body(body)?;
    let (run, created) = service.spawn_child(id, request).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(run)))
}

/// The children a run spawned, by key.
async fn children(State(service): State<Service>, Path(id): Path<String>) -> Result<Json<Vec<Run>>, ApiError> {
    Ok(Json(service.children(run_id(&id)?).await?))
}

async fn cancel(State(service): State<Service>, Path(id): Path<String>) -> Result<Json<Run>, ApiError> {
    Ok(Json(service.cancel_run(run_id(&id)?).await?))
}

#[derive(Deserialize)]
struct LogQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

async fn logs(
    State(service): State<Service>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Json<LogPage>, ApiError> {
    let uuid = run_id(&id)?;
    let limit = q.limit.unwrap_or(MAX_LOG_PAGE);
    if !(1..=MAX_LOG_PAGE).contains(&limit) {
        let mut p = Problems::default();
        p.add(&JsonPath::root().key("limit"), format!("must be from 1 to {MAX_LOG_PAGE}, got {limit}"));
        return Err(ApiError::invalid(p));
    }
    Ok(Json(service.logs(uuid, q.from.unwrap_or(0), limit).await?))
}

async fn append_logs(
    State(service): State<Service>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = run_id(&id)?;
    let batch: LogBatch = typed_body(body)?;
    let appended = service.append_logs(id, batch).await?;
    Ok(Json(serde_json::json!({ "appended": appended })))
}
