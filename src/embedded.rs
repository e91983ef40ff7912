//! Embedded mode: the engine and its redb store in the application's own process, with no
//! HTTP. The same [`Flow`](crate::flow::Flow)s are served against it, for single-binary apps
//! and fast tests.
//!
//! ```no_run
//! # async fn example(flow: tripwire::flow::Flow) -> Result<(), Box<dyn std::error::Error>> {
//! use tripwire::client::NewEvent;
//! use tripwire::flow::Worker;
//! use tripwire::model::Resource;
//! use tripwire::Embedded;
//!
//! let tripwire = Embedded::open("./tripwire-data").await?;
//! let worker = tokio::spawn(Worker::new(tripwire.clone()).flow(flow, []).run());
//! tripwire.emit(NewEvent::new("user:signup", Resource::new("user-1"))).await?;
//! # Ok(())
//! # }
//! ```

use std::path::PathBuf;

use serde_json::json;
use uuid::Uuid;

use crate::client::{ClientError, NewEvent};
use crate::flow::{Backend, BoxFuture};
use crate::model::{
    ClaimRequest, ClaimedRun, Completion, Deployment, FailureReport, Heartbeat, HeartbeatReply, JsonPath, LogBatch,
    Run, TriggerDefinition, TriggerSync,
};
use crate::service::{Service, ServiceConfig, ServiceError};

/// tripwire in this process: a [`Service`] that flows can be served against directly.
#[derive(Clone)]
pub struct Embedded {
    service: Service,
}

impl Embedded {
    /// Opens (or creates) the data directory and starts the engine on the wall clock.
    pub async fn open(dir: impl Into<PathBuf>) -> Result<Embedded, ServiceError> {
        Embedded::start(ServiceConfig::new(dir)).await
    }

    /// Starts with explicit settings.
    pub async fn start(config: ServiceConfig) -> Result<Embedded, ServiceError> {
        Ok(Embedded { service: Service::start(config).await? })
    }

    /// The service, for everything else (triggers, runs, the store).
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// Sends events; the id and time are filled in as the server would. Returns their ids.
    pub async fn emit_many(&self, events: Vec<NewEvent>) -> Result<Vec<Uuid>, ClientError> {
        let stamper = self.service.stamper();
        let mut parsed = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            let value = serde_json::to_value(event).map_err(|e| ClientError::Invalid(e.to_string()))?;
            let path = JsonPath::root().index(i);
            let event = stamper.read(&value, &path).map_err(|p| api_error(ServiceError::Invalid(p)))?;
            parsed.push(event);
        }
        Ok(self.service.ingest_waiting(parsed).await.map_err(api_error)?.ids)
    }

    /// Sends one event; returns its id.
    pub async fn emit(&self, event: impl Into<NewEvent>) -> Result<Uuid, ClientError> {
        let ids = self.emit_many(vec![event.into()]).await?;
        ids.into_iter().next().ok_or_else(|| ClientError::Decode("no event was acknowledged".into()))
    }

    /// Stops the engine after the work queued so far.
    pub async fn shutdown(&self) {
        self.service.shutdown().await;
    }
}

/// The error the HTTP API would have answered (the same mapping), so that workers handle
/// both modes alike.
/// A service error as the HTTP client would report it (same status, code and message).
fn api_error(e: ServiceError) -> ClientError {
    ClientError::Api { status: e.status(), code: e.code().into(), message: e.public_message() }
}

impl Backend for Embedded {
    fn put_deployment<'a>(&'a self, deployment: &'a Deployment) -> BoxFuture<'a, Result<(), ClientError>> {
        Box::pin(async move {
            // Validate as the HTTP API does, so both modes accept the same deployments.
            let value = serde_json::to_value(deployment).map_err(|e| ClientError::Invalid(e.to_string()))?;
            let mut d = Deployment::from_json(&value, &JsonPath::root(), None)
                .map_err(|p| api_error(ServiceError::Invalid(p)))?;
            d.created = None;
            self.service.put_deployment(d, false).await.map(drop).map_err(api_error)
        })
    }

    fn sync_triggers<'a>(
        &'a self,
        deployment: &'a str,
        definitions: &'a [TriggerDefinition],
    ) -> BoxFuture<'a, Result<TriggerSync, ClientError>> {
        Box::pin(async move {
            // Through JSON, as over HTTP: the definitions are validated the same way.
            let value = json!(definitions);
            let definitions =
                TriggerDefinition::list_from_json(&value).map_err(|p| api_error(ServiceError::Invalid(p)))?;
            self.service.sync_triggers(deployment.to_owned(), definitions).await.map_err(api_error)
        })
    }

    fn claim<'a>(&'a self, request: &'a ClaimRequest) -> BoxFuture<'a, Result<Vec<ClaimedRun>, ClientError>> {
        Box::pin(async move { self.service.claim(request.clone()).await.map_err(api_error) })
    }

    fn heartbeat<'a>(
        &'a self,
        id: Uuid,
        heartbeat: &'a Heartbeat,
    ) -> BoxFuture<'a, Result<HeartbeatReply, ClientError>> {
        Box::pin(async move { self.service.heartbeat(id, heartbeat.clone()).await.map_err(api_error) })
    }

    fn complete<'a>(&'a self, id: Uuid, completion: &'a Completion) -> BoxFuture<'a, Result<Run, ClientError>> {
        Box::pin(async move { self.service.complete(id, completion.clone()).await.map_err(api_error) })
    }

    fn fail<'a>(&'a self, id: Uuid, failure: &'a FailureReport) -> BoxFuture<'a, Result<Run, ClientError>> {
        Box::pin(async move { self.service.fail(id, failure.clone()).await.map_err(api_error) })
    }

    fn append_logs<'a>(&'a self, id: Uuid, batch: &'a LogBatch) -> BoxFuture<'a, Result<(), ClientError>> {
        Box::pin(async move { self.service.append_logs(id, batch.clone()).await.map(drop).map_err(api_error) })
    }

    fn emit(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<Uuid>, ClientError>> {
        Box::pin(self.emit_many(events))
    }
}
