//! [`Tripwire`]: the calls an application makes, the same for a remote server ([`Client`])
//! and for the engine in its own process ([`crate::Embedded`]).

use std::future::Future;
use std::time::Duration;

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

    /// Waits until the run is final (`Completed`, `Failed` or `Cancelled`) and returns it;
    /// [`ClientError::Timeout`] naming its last state when `timeout` passes first. A run
    /// waiting for a retry is not final.
    fn wait_for_run(&self, id: Uuid, timeout: Duration) -> impl Future<Output = Result<Run, ClientError>> + Send {
        async move {
            let mut last = None;
            let waited = tokio::time::timeout(timeout, async {
                let mut pause = Duration::from_millis(5);
                loop {
                    let run = self.run(id).await?;
                    if run.is_final() {
                        return Ok(run);
                    }
                    last = Some(run.state);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(WAIT_POLL_MAX);
                }
            })
            .await;
            match waited {
                Ok(result) => result,
                Err(_) => Err(ClientError::Timeout(format!(
                    "run {id} is still {} after {timeout:?}",
                    last.map_or_else(|| "not found".to_owned(), |s| format!("{s:?}"))
                ))),
            }
        }
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
}
