//! Embedded mode: the engine and its redb store in the application's own process, with no
//! HTTP. The same [`Flow`](crate::flow::Flow)s are served against it, for single-binary apps
//! and fast tests, and code written against [`Tripwire`] runs unchanged on an [`Embedded`]
//! and on a [`Client`](crate::client::Client).
//!
//! See [`Embedded`] for an example.

use std::future::Future;
use std::path::PathBuf;

use serde_json::json;
use uuid::Uuid;

use crate::client::{ClientError, RunQuery};
use crate::flow::api::{parameters_of, RunTarget};
use crate::flow::{BoxFuture, Tripwire, WorkerProtocol};
use crate::model::{
    ChildRequest, ClaimRequest, ClaimedRun, Completion, Deployment, FailureReport, Heartbeat, HeartbeatReply, JsonPath,
    LogBatch, NewEvent, Problems, Run, StreamBatch, TriggerDefinition, TriggerRecord, TriggerSync,
};
use crate::service::{Service, ServiceConfig, ServiceError};

/// tripwire in this process: a [`Service`] that flows can be served against directly, and
/// that implements [`Tripwire`] as [`Client`](crate::client::Client) does.
///
/// ```
/// use std::time::Duration;
/// use tripwire::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("tripwire-doc-embedded-{}", std::process::id()));
/// let tripwire = Embedded::open(&dir).await?; // e.g. "./tripwire-data"
/// let welcome = Flow::new("welcome", |ctx: FlowContext, _: serde_json::Value| async move {
///     Ok(format!("welcome, {}", ctx.event().map_or("?", |e| e.resource.id())))
/// });
/// let on_signup = TriggerDefinition::new("welcome-on-signup", EventTrigger::new().expect("user.signup"));
///
/// // `start` returns once the trigger is registered: the event below is not lost.
/// let worker = Worker::new(tripwire.clone()).flow(welcome, [on_signup]).start().await?;
/// tripwire.emit(NewEvent::new("user.signup", Resource::new("ada"))).await?;
/// let run = &tripwire.runs(RunQuery::new().deployment("welcome")).await?[0];
/// let run = tripwire.wait_for_run(run.id, Duration::from_secs(10)).await?;
/// assert_eq!(run.output, Some(serde_json::json!("welcome, ada")));
/// worker.stop().await?;
/// tripwire.shutdown().await;
/// # drop(tripwire);
/// # let _ = std::fs::remove_dir_all(&dir);
/// # Ok(())
/// # }
/// ```
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

    /// The service, for what [`Tripwire`] does not cover (trigger management, buckets,
    /// scope filters, the clock's ticks).
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// Sends events in one batch, all or none; the id and time are filled in as the server
    /// would, and they are validated as `POST /api/events` does (same limits, same errors).
    /// Returns their ids once they are durable and evaluated.
    pub async fn emit_many<E: Into<NewEvent>>(
        &self,
        events: impl IntoIterator<Item = E>,
    ) -> Result<Vec<Uuid>, ClientError> {
        let events: Vec<NewEvent> = events.into_iter().map(Into::into).collect();
        self.ingest(events).await
    }

    async fn ingest(&self, events: Vec<NewEvent>) -> Result<Vec<Uuid>, ClientError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let stamper = self.service.stamper();
        let mut parsed = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            event.check().map_err(|why| ClientError::Invalid(format!("event {i}: {why}")))?;
            let value = serde_json::to_value(event).map_err(|e| ClientError::Invalid(e.to_string()))?;
            let path = JsonPath::root().index(i);
            let event = stamper.read(&value, &path).map_err(|p| api_error(ServiceError::Invalid(p)))?;
            parsed.push(event);
        }
        Ok(self.service.ingest_waiting(parsed).await.map_err(api_error)?.ids)
    }

    /// Sends one event; returns its id once it is durable and evaluated.
    pub async fn emit(&self, event: impl Into<NewEvent>) -> Result<Uuid, ClientError> {
        let ids = self.ingest(vec![event.into()]).await?;
        ids.into_iter().next().ok_or_else(|| ClientError::Decode("no event was acknowledged".into()))
    }

    /// Stops the engine after the work queued so far.
    pub async fn shutdown(&self) {
        self.service.shutdown().await;
    }
}

/// A service error as the HTTP client would report it (same status, code and message), so
/// that code handles both modes alike.
fn api_error(e: ServiceError) -> ClientError {
    ClientError::Api { status: e.status(), code: e.code().into(), message: e.public_message() }
}

impl WorkerProtocol for Embedded {
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

    fn append_stream<'a>(&'a self, id: Uuid, batch: &'a StreamBatch) -> BoxFuture<'a, Result<(), ClientError>> {
        Box::pin(async move { self.service.append_stream(id, batch.clone()).await.map(drop).map_err(api_error) })
    }

    fn send_events(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<Uuid>, ClientError>> {
        Box::pin(self.ingest(events))
    }

    fn spawn_child<'a>(&'a self, parent: Uuid, request: &'a ChildRequest) -> BoxFuture<'a, Result<Run, ClientError>> {
        Box::pin(async move {
            self.service.spawn_child(parent, request.clone()).await.map(|(run, _)| run).map_err(api_error)
        })
    }

    fn fetch_run(&self, id: Uuid) -> BoxFuture<'_, Result<Run, ClientError>> {
        Box::pin(async move { self.service.run(id).await.map_err(api_error) })
    }

    fn children(&self, parent: Uuid) -> BoxFuture<'_, Result<Vec<Run>, ClientError>> {
        Box::pin(async move { self.service.children(parent).await.map_err(api_error) })
    }
}

impl Tripwire for Embedded {
    fn emit(&self, event: impl Into<NewEvent>) -> impl Future<Output = Result<Uuid, ClientError>> + Send {
        Embedded::emit(self, event.into())
    }

    fn emit_many<E: Into<NewEvent>>(
        &self,
        events: impl IntoIterator<Item = E>,
    ) -> impl Future<Output = Result<Vec<Uuid>, ClientError>> + Send {
        self.ingest(events.into_iter().map(Into::into).collect())
    }

    async fn runs(&self, query: RunQuery) -> Result<Vec<Run>, ClientError> {
        if let Err(why) = query.check() {
            let mut problems = Problems::default();
            problems.add(&JsonPath::root().key("limit"), why);
            return Err(api_error(ServiceError::Invalid(problems)));
        }
        let limit = query.get_limit();
        self.service.runs(limit, move |r| query.matches(r)).await.map_err(api_error)
    }

    async fn run(&self, id: Uuid) -> Result<Run, ClientError> {
        self.service.run(id).await.map_err(api_error)
    }

    async fn triggers(&self) -> Result<Vec<TriggerRecord>, ClientError> {
        self.service.triggers().await.map_err(api_error)
    }

    async fn deployments(&self) -> Result<Vec<Deployment>, ClientError> {
        self.service.deployments().await.map_err(api_error)
    }

    async fn enqueue(
        &self,
        target: &(impl RunTarget + ?Sized),
        parameters: impl serde::Serialize + Send,
    ) -> Result<Run, ClientError> {
        let parameters = parameters_of(parameters)?.map(serde_json::Value::Object);
        let name = target.deployment_name().to_owned();
        self.service.create_run(name, parameters, None).await.map_err(api_error)
    }
}
