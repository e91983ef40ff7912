//! What a worker needs from tripwire, behind one trait of its own: the HTTP [`Client`]
//! implements it for a remote server, and [`crate::Embedded`] for an engine in the same
//! process. User code never names it: it writes against [`super::Tripwire`].

use std::future::Future;
use std::pin::Pin;

use uuid::Uuid;

#[cfg(feature = "client")]
use crate::client::Client;
use crate::client::ClientError;
use crate::model::NewEvent;
use crate::model::{
    ChildRequest, ClaimRequest, ClaimedRun, Completion, Deployment, FailureReport, Heartbeat, HeartbeatReply, LogBatch,
    Run, StreamBatch, TriggerDefinition, TriggerSync,
};

/// A boxed, sendable future (the trait is object-safe so that flows can share one backend).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The worker protocol (register, claim, heartbeat, complete, fail, logs) and the one other
/// call a served flow makes (emit). Errors use [`ClientError`] in both modes, so that a
/// worker handles them one way (a refused result is `ClientError::Api` with status 409 in
/// both). Object-safe, so that a worker's runs share one `Arc<dyn WorkerProtocol>`.
///
/// Implemented by [`Client`] and [`crate::Embedded`]; [`super::Worker`] is its only user.
pub trait WorkerProtocol: Send + Sync + 'static {
    /// Creates or replaces the deployment.
    fn put_deployment<'a>(&'a self, deployment: &'a Deployment) -> BoxFuture<'a, Result<(), ClientError>>;
    /// Makes `definitions` exactly the deployment's triggers.
    fn sync_triggers<'a>(
        &'a self,
        deployment: &'a str,
        definitions: &'a [TriggerDefinition],
    ) -> BoxFuture<'a, Result<TriggerSync, ClientError>>;
    /// Claims ready runs (long-poll).
    fn claim<'a>(&'a self, request: &'a ClaimRequest) -> BoxFuture<'a, Result<Vec<ClaimedRun>, ClientError>>;
    /// Extends a lease.
    fn heartbeat<'a>(
        &'a self,
        id: Uuid,
        heartbeat: &'a Heartbeat,
    ) -> BoxFuture<'a, Result<HeartbeatReply, ClientError>>;
    /// Reports an output.
    fn complete<'a>(&'a self, id: Uuid, completion: &'a Completion) -> BoxFuture<'a, Result<Run, ClientError>>;
    /// Reports a failed attempt.
    fn fail<'a>(&'a self, id: Uuid, failure: &'a FailureReport) -> BoxFuture<'a, Result<Run, ClientError>>;
    /// Appends log lines to a run.
    fn append_logs<'a>(&'a self, id: Uuid, batch: &'a LogBatch) -> BoxFuture<'a, Result<(), ClientError>>;
    /// Appends chunks to the run's stream (what `ctx.stream` calls). A backend that keeps
    /// no streams answers an error (the default).
    fn append_stream<'a>(&'a self, id: Uuid, batch: &'a StreamBatch) -> BoxFuture<'a, Result<(), ClientError>> {
        let _ = batch;
        Box::pin(async move { Err(ClientError::Invalid(format!("this backend keeps no stream for run {id}"))) })
    }
    /// Sends events; returns their ids (what a flow's `ctx.emit` calls).
    fn send_events(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<Uuid>, ClientError>>;
    /// A child run of the run the worker holds (what `ctx.spawn` calls): the one its key
    /// named before, or a new one. A backend without child runs answers an error (the
    /// default).
    fn spawn_child<'a>(&'a self, parent: Uuid, request: &'a ChildRequest) -> BoxFuture<'a, Result<Run, ClientError>> {
        let _ = request;
        Box::pin(async move { Err(ClientError::Invalid(format!("this backend spawns no children of run {parent}"))) })
    }
    /// The children of a run, by key (what a workflow task reads its parents' outputs from).
    /// A backend without child runs answers an error (the default).
    fn children(&self, parent: Uuid) -> BoxFuture<'_, Result<Vec<Run>, ClientError>> {
        Box::pin(async move { Err(ClientError::Invalid(format!("this backend lists no children of run {parent}"))) })
    }
    /// A run as it is now (what `ctx.spawn` polls while the child runs). A backend that
    /// cannot read runs answers an error (the default).
    fn fetch_run(&self, id: Uuid) -> BoxFuture<'_, Result<Run, ClientError>> {
        Box::pin(async move { Err(ClientError::Invalid(format!("this backend cannot read run {id}"))) })
    }
}

#[cfg(feature = "client")]
impl WorkerProtocol for Client {
    fn put_deployment<'a>(&'a self, deployment: &'a Deployment) -> BoxFuture<'a, Result<(), ClientError>> {
        Box::pin(async move { Client::put_deployment(self, deployment).await.map(drop) })
    }

    fn sync_triggers<'a>(
        &'a self,
        deployment: &'a str,
        definitions: &'a [TriggerDefinition],
    ) -> BoxFuture<'a, Result<TriggerSync, ClientError>> {
        Box::pin(Client::sync_triggers(self, deployment, definitions))
    }

    fn claim<'a>(&'a self, request: &'a ClaimRequest) -> BoxFuture<'a, Result<Vec<ClaimedRun>, ClientError>> {
        Box::pin(Client::claim(self, request))
    }

    fn heartbeat<'a>(
        &'a self,
        id: Uuid,
        heartbeat: &'a Heartbeat,
    ) -> BoxFuture<'a, Result<HeartbeatReply, ClientError>> {
        Box::pin(Client::heartbeat(self, id, heartbeat))
    }

    fn complete<'a>(&'a self, id: Uuid, completion: &'a Completion) -> BoxFuture<'a, Result<Run, ClientError>> {
        Box::pin(Client::complete(self, id, completion))
    }

    fn fail<'a>(&'a self, id: Uuid, failure: &'a FailureReport) -> BoxFuture<'a, Result<Run, ClientError>> {
        Box::pin(Client::fail(self, id, failure))
    }

    fn append_logs<'a>(&'a self, id: Uuid, batch: &'a LogBatch) -> BoxFuture<'a, Result<(), ClientError>> {
        Box::pin(Client::append_logs(self, id, batch))
    }

    fn append_stream<'a>(&'a self, id: Uuid, batch: &'a StreamBatch) -> BoxFuture<'a, Result<(), ClientError>> {
        Box::pin(Client::append_stream(self, id, batch))
    }

    fn send_events(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<Uuid>, ClientError>> {
        Box::pin(Client::emit_many(self, events))
    }

    fn spawn_child<'a>(&'a self, parent: Uuid, request: &'a ChildRequest) -> BoxFuture<'a, Result<Run, ClientError>> {
        Box::pin(Client::spawn_child(self, parent, request))
    }

    fn fetch_run(&self, id: Uuid) -> BoxFuture<'_, Result<Run, ClientError>> {
        Box::pin(Client::run(self, id))
    }

    fn children(&self, parent: Uuid) -> BoxFuture<'_, Result<Vec<Run>, ClientError>> {
        Box::pin(Client::children(self, parent))
    }
}
