//! [`Tripwire`]: the calls an application makes, the same for a remote server ([`Client`])
//! and for the engine in its own process ([`crate::Embedded`]).

use std::future::Future;
use std::time::Duration;

use serde_json::{Map, Value};
use uuid::Uuid;

#[cfg(feature = "client")]
use crate::client::Client;
use crate::client::{ClientError, RunQuery};
use crate::model::{Deployment, NewEvent, Run, TriggerRecord};

use super::protocol::WorkerProtocol;

/// The longest pause between two looks at a run in [`Tripwire::wait_for_run`].
const WAIT_POLL_MAX: Duration = Duration::from_millis(250);

/// tripwire as an application sees it: send events, read runs and wait for them, list
/// triggers and deployments. [`Client`] (a server over HTTP) and [`crate::Embedded`] (the
/// engine in this process) implement it with the same return types and the same errors, so
/// code written against `impl Tripwire` runs in both modes; a [`super::Worker`] serves flows
/// on either.
///
/// It comes with `use tripwire::prelude::*`.
///
/// ```no_run
/// use tripwire::prelude::*;
///
/// /// Works with a `Client` and with an `Embedded` alike.
/// async fn checkout(tw: &impl Tripwire, cart: &str) -> Result<Uuid, ClientError> {
///     tw.emit(NewEvent::new("order.placed", Resource::new(format!("cart.{cart}")))).await
/// }
/// # use uuid::Uuid;
/// ```
pub trait Tripwire: WorkerProtocol + Clone {
    /// Sends one event; returns its id (the one it was given, or a fresh one). Returns once
    /// the event is durable and evaluated: a trigger registered before the call sees it.
    fn emit(&self, event: impl Into<NewEvent>) -> impl Future<Output = Result<Uuid, ClientError>> + Send;

    /// Sends events in one batch, all or none; returns their ids, in order.
    fn emit_many<E: Into<NewEvent>>(
        &self,
        events: impl IntoIterator<Item = E>,
    ) -> impl Future<Output = Result<Vec<Uuid>, ClientError>> + Send;

    /// The newest runs that `query` asks for.
    fn runs(&self, query: RunQuery) -> impl Future<Output = Result<Vec<Run>, ClientError>> + Send;

    /// One run (`ClientError::Api` with status 404 when there is none).
    fn run(&self, id: Uuid) -> impl Future<Output = Result<Run, ClientError>> + Send;

    /// Every trigger definition, by id.
    fn triggers(&self) -> impl Future<Output = Result<Vec<TriggerRecord>, ClientError>> + Send;

    /// Every deployment.
    fn deployments(&self) -> impl Future<Output = Result<Vec<Deployment>, ClientError>> + Send;

    /// Creates a run of `target` (a [`super::Flow`], a deployment's name) with `parameters`
    /// over the deployment's defaults and returns it at once, `Scheduled` (Hatchet's
    /// `run_no_wait`). `parameters` is anything that serialises to a JSON object (or `()`:
    /// none).
    fn enqueue(
        &self,
        target: &(impl RunTarget + ?Sized),
        parameters: impl serde::Serialize + Send,
    ) -> impl Future<Output = Result<Run, ClientError>> + Send;

    /// Creates a run of `target` and waits for it to end (Hatchet's `aio_run`): its output
    /// when it completed, [`ClientError::RunFailed`] with its error when it failed or was
    /// cancelled. Waits as long as the run takes (retries included); wrap it in
    /// `tokio::time::timeout` to bound it.
    ///
    /// Named `run_flow` because [`Tripwire::run`] reads a run by its id.
    fn run_flow(
        &self,
        target: &(impl RunTarget + ?Sized),
        parameters: impl serde::Serialize + Send,
    ) -> impl Future<Output = Result<Value, ClientError>> + Send {
        let created = self.enqueue(target, parameters);
        async move {
            let run = created.await?;
            ClientError::output_of(until_final(self, run.id, None).await?)
        }
    }

    /// Waits until the run is final (`Completed`, `Failed` or `Cancelled`) and returns it;
    /// [`ClientError::Timeout`] naming its last state when `timeout` passes first. A run
    /// waiting for a retry is not final.
    fn wait_for_run(&self, id: Uuid, timeout: Duration) -> impl Future<Output = Result<Run, ClientError>> + Send {
        async move {
            let last = std::sync::Mutex::new(None);
            match tokio::time::timeout(timeout, until_final(self, id, Some(&last))).await {
                Ok(result) => result,
                Err(_) => Err(ClientError::Timeout(format!(
                    "run {id} is still {} after {timeout:?}",
                    last.lock().ok().and_then(|l| *l).map_or_else(|| "not found".to_owned(), |s| format!("{s:?}"))
                ))),
            }
        }
    }
}

/// What names a deployment to run ([`Tripwire::enqueue`], [`super::FlowContext::spawn`]): a
/// [`super::Flow`], a [`Deployment`], or a deployment's name.
pub trait RunTarget: Sync {
    /// The deployment's name.
    fn deployment_name(&self) -> &str;
}

impl RunTarget for super::Flow {
    fn deployment_name(&self) -> &str {
        self.name()
    }
}

impl RunTarget for Deployment {
    fn deployment_name(&self) -> &str {
        &self.name
    }
}

impl RunTarget for str {
    fn deployment_name(&self) -> &str {
        self
    }
}

impl RunTarget for String {
    fn deployment_name(&self) -> &str {
        self
    }
}

/// Run parameters from anything that serialises to a JSON object (`()` and `null`: none).
pub(crate) fn parameters_of(parameters: impl serde::Serialize) -> Result<Option<Map<String, Value>>, ClientError> {
    match serde_json::to_value(parameters) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(Value::Null) => Ok(None),
        Ok(other) => Err(ClientError::Invalid(format!("run parameters must serialise to a JSON object, not {other}"))),
        Err(e) => Err(ClientError::Invalid(format!("run parameters did not serialise: {e}"))),
    }
}

/// Polls a run until it is final, more slowly as it goes on (at most every 250 ms); `last`
/// keeps the state last seen, for a caller that gives up.
pub(crate) async fn until_final(
    backend: &(impl WorkerProtocol + ?Sized),
    id: Uuid,
    last: Option<&std::sync::Mutex<Option<crate::model::RunState>>>,
) -> Result<Run, ClientError> {
    let mut pause = Duration::from_millis(5);
    loop {
        let run = backend.fetch_run(id).await?;
        if run.is_final() {
            return Ok(run);
        }
        if let Some(Ok(mut l)) = last.map(|l| l.lock()) {
            *l = Some(run.state);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(WAIT_POLL_MAX);
    }
}

#[cfg(feature = "client")]
impl Tripwire for Client {
    fn emit(&self, event: impl Into<NewEvent>) -> impl Future<Output = Result<Uuid, ClientError>> + Send {
        Client::emit(self, event.into())
    }

    fn emit_many<E: Into<NewEvent>>(
        &self,
        events: impl IntoIterator<Item = E>,
    ) -> impl Future<Output = Result<Vec<Uuid>, ClientError>> + Send {
        let events: Vec<NewEvent> = events.into_iter().map(Into::into).collect();
        Client::emit_many(self, events)
    }

    fn runs(&self, query: RunQuery) -> impl Future<Output = Result<Vec<Run>, ClientError>> + Send {
        Client::runs(self, query)
    }

    fn run(&self, id: Uuid) -> impl Future<Output = Result<Run, ClientError>> + Send {
        Client::run(self, id)
    }

    fn triggers(&self) -> impl Future<Output = Result<Vec<TriggerRecord>, ClientError>> + Send {
        Client::triggers(self)
    }

    fn deployments(&self) -> impl Future<Output = Result<Vec<Deployment>, ClientError>> + Send {
        Client::deployments(self)
    }

    async fn enqueue(
        &self,
        target: &(impl RunTarget + ?Sized),
        parameters: impl serde::Serialize + Send,
    ) -> Result<Run, ClientError> {
        Client::create_run(self, target.deployment_name(), parameters_of(parameters)?).await
    }
}
