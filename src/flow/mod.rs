//! Flows: Rust async functions that a worker serves together with their triggers, like
//! Prefect's `flow.serve(triggers=[...])` and a Hatchet worker.
//!
//! A flow's function takes the run's [`FlowContext`] and its parameters (any
//! `Deserialize` type) and returns a [`flow::Result`](Result) of any `Serialize` output: `?`
//! works on every error type, and `Err("message".into())` fails the attempt with a message.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use serde::Deserialize;
//! use serde_json::json;
//! use tripwire::prelude::*;
//!
//! #[derive(Deserialize)]
//! struct OrderParams {
//!     user_id: String,
//! }
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let flow = Flow::new("post-order-complete", |_ctx: FlowContext, params: OrderParams| async move {
//!     println!("User {} has completed an order -- doing stuff now", params.user_id);
//!     Ok(())
//! });
//! let trigger = TriggerDefinition::new(
//!     "order-complete",
//!     EventTrigger::new().after("order.created").expect("order.complete").for_each("prefect.resource.id")
//!         .within(Duration::from_secs(60)),
//! )
//! .parameters(json!({"user_id": "{{ event.resource.id }}"}));
//! flow.serve(&Client::from_env()?, [trigger]).await?; // until Ctrl-C
//! # Ok(())
//! # }
//! ```

pub(crate) mod api;
mod context;
mod notice;
mod protocol;
mod worker;
mod workflow;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::client::ClientError;
use crate::model::{Concurrency, Deployment, DesiredLabel, RateLimitUse, TriggerDefinition};

pub use self::api::{RunTarget, Tripwire};
pub use self::context::{FlowContext, Logger};
pub use self::protocol::{BoxFuture, WorkerProtocol};
pub use self::worker::{serve_many, Worker, WorkerHandle};
pub use self::workflow::{Task, Workflow, ON_FAILURE_KEY};

/// How long a flow told to stop (`ctx.cancelled()` resolved: the run was cancelled, timed out,
/// or taken away) has to return before the worker drops it, unless
/// [`Worker::cancel_grace`] says otherwise.
pub const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// The error a flow returns: any error type (`?` converts it), or a message
/// (`Err("no such user".into())`). Its `Display` text is stored as the attempt's error.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The exit code of a program's outcome, its error printed as people read it (`error: no
/// tripwire server at ...`), not as Rust debug output: `fn main() -> ExitCode {
/// exit_code(run()) }`.
pub fn exit_code(outcome: Result<(), Box<dyn std::error::Error>>) -> std::process::ExitCode {
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What a flow's function returns: its output, or the [`Error`] that fails the attempt.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an attempt failed, as the worker reports it.
pub(crate) enum Failure {
    /// The parameters do not deserialise into the flow's type: no retry can help.
    Parameters(String),
    /// The flow returned an error (or its output does not serialise).
    Error(String),
}

type Handler = dyn Fn(FlowContext, Value) -> BoxFuture<'static, std::result::Result<Value, Failure>> + Send + Sync;

/// A flow: a name (its deployment's), an async function of typed parameters, and the
/// deployment's run settings.
#[derive(Clone)]
pub struct Flow {
    deployment: Deployment,
    handler: Arc<Handler>,
}

impl Flow {
    /// A flow named `name` running `f`. The run's parameters are deserialised into `P` (a
    /// run whose parameters do not fit fails at once, naming the field, and is not retried);
    /// `f`'s output is serialised and stored with the run; an error fails the attempt (it is
    /// retried while the deployment's retries last).
    ///
    /// `f` returns a [`flow::Result`](Result): `Ok(output)`, `?` on any error, or
    /// `Err("why".into())`. The error type is fixed so that a closure's `async` block needs no
    /// annotation; a named function with an error type of its own converts it with
    /// `.map_err(Into::into)` or returns `flow::Result` itself.
    ///
    /// ```
    /// use serde::Deserialize;
    /// use tripwire::prelude::*;
    ///
    /// #[derive(Deserialize)]
    /// struct Payment {
    ///     amount: String,
    /// }
    ///
    /// let flow = Flow::new("alert-finance", |ctx: FlowContext, p: Payment| async move {
    ///     let amount: f64 = p.amount.parse()?; // any error type converts
    ///     if amount < 0.0 {
    ///         return Err("a negative amount".into());
    ///     }
    ///     ctx.log().warning(format!("payment of {amount} failed"));
    ///     Ok(serde_json::json!({"alerted": amount}))
    /// })
    /// .retries(3, std::time::Duration::from_secs(1));
    /// assert_eq!(flow.name(), "alert-finance");
    /// ```
    pub fn new<P, O, F, Fut>(name: impl Into<String>, f: F) -> Flow
    where
        P: DeserializeOwned + Send + 'static,
        O: Serialize + 'static,
        F: Fn(FlowContext, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O>> + Send + 'static,
    {
        let name = name.into();
        let flow_name = name.clone();
        let f = Arc::new(f);
        let handler = move |ctx: FlowContext,
                            parameters: Value|
              -> BoxFuture<'static, std::result::Result<Value, Failure>> {
            let f = f.clone();
            let flow_name = flow_name.clone();
            Box::pin(async move {
                let params: P = serde_json::from_value(parameters)
                    .map_err(|e| Failure::Parameters(format!("the parameters do not fit flow `{flow_name}`: {e}")))?;
                let output = f(ctx, params).await.map_err(|e| Failure::Error(e.to_string()))?;
                serde_json::to_value(&output)
                    .map_err(|e| Failure::Error(format!("the flow's output does not serialise to JSON: {e}")))
            })
        };
        Flow { deployment: Deployment::new(name), handler: Arc::new(handler) }
    }

    /// The flow's name (its deployment's).
    pub fn name(&self) -> &str {
        &self.deployment.name
    }

    /// The deployment this flow registers.
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// A description for people.
    pub fn description(mut self, text: impl Into<String>) -> Flow {
        self.deployment.description = Some(text.into());
        self
    }

    /// Default parameters, under a run's own.
    pub fn default_parameters(mut self, parameters: Map<String, Value>) -> Flow {
        self.deployment.parameters = parameters;
        self
    }

    /// Retries after a failed attempt, with exponential backoff from `delay` (doubling each
    /// time, at most 5 minutes by default).
    pub fn retries(mut self, retries: u32, delay: Duration) -> Flow {
        self.deployment.retries = retries;
        self.deployment.retry_delay_seconds = delay.as_secs_f64();
        self
    }

    /// How the wait between retries grows: multiplied by `factor` after each failed attempt
    /// (1.0: a fixed delay), never longer than `max_delay`. The defaults are 2.0 and 5
    /// minutes.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tripwire::prelude::*;
    ///
    /// let flow = Flow::new("sync", |_: FlowContext, _: serde_json::Value| async move { Ok(()) })
    ///     .retries(5, Duration::from_secs(1))
    ///     .retry_backoff(3.0, Duration::from_secs(60));
    /// assert_eq!(flow.deployment().retry_delay(3), 9.0); // seconds before the 4th attempt
    /// ```
    pub fn retry_backoff(mut self, factor: f64, max_delay: Duration) -> Flow {
        self.deployment.retry_backoff_factor = factor;
        self.deployment.retry_max_delay_seconds = max_delay.as_secs_f64();
        self
    }

    /// Execution timeout of one attempt.
    pub fn timeout(mut self, timeout: Duration) -> Flow {
        self.deployment.timeout_seconds = Some(timeout.as_secs_f64());
        self
    }

    /// A run nobody claims within this long is cancelled.
    pub fn schedule_timeout(mut self, timeout: Duration) -> Flow {
        self.deployment.schedule_timeout_seconds = Some(timeout.as_secs_f64());
        self
    }

    /// Runs of this flow at once, across all workers.
    pub fn concurrency_limit(mut self, limit: u32) -> Flow {
        self.deployment.concurrency_limit = Some(limit);
        self
    }

    /// A concurrency limit per key, e.g. `Concurrency::new("{{ params.user_id }}", 1)`.
    pub fn concurrency(mut self, concurrency: Concurrency) -> Flow {
        self.deployment.concurrency = Some(concurrency);
        self
    }

    /// A rate limit each run takes units from when it is claimed:
    /// `RateLimitUse::static_key("github-api", 1)` (a limit made with
    /// `Client::put_rate_limit`), or `RateLimitUse::dynamic_key("{{ params.user_id }}", 1, 10,
    /// RateDuration::Minute)`. Runs over a limit wait for its window to reset.
    pub fn rate_limit(mut self, limit: RateLimitUse) -> Flow {
        self.deployment.rate_limits.push(limit);
        self
    }

    /// A label its runs want of their worker (Hatchet's worker affinity):
    /// `.desired_label("region", DesiredLabel::required("eu"))` runs only on workers labelled
    /// `region=eu`; `.desired_label("gpu", DesiredLabel::preferred(1, 10))` prefers them.
    pub fn desired_label(mut self, key: impl Into<String>, label: DesiredLabel) -> Flow {
        self.deployment.desired_labels.insert(key.into(), label);
        self
    }

    /// The priority of its runs (higher first).
    pub fn priority(mut self, priority: i32) -> Flow {
        self.deployment.priority = priority;
        self
    }

    /// Replaces the deployment settings wholesale (the name stays the flow's).
    pub fn with_deployment(mut self, mut deployment: Deployment) -> Flow {
        deployment.name = self.deployment.name.clone();
        self.deployment = deployment;
        self
    }

    /// Registers the deployment and exactly these triggers, then runs a worker for this flow
    /// until Ctrl-C; in-flight runs finish before it returns. See [`Worker`] for more control.
    pub async fn serve(
        self,
        tripwire: &impl Tripwire,
        triggers: impl IntoIterator<Item = TriggerDefinition>,
    ) -> Result<(), ClientError> {
        Worker::new(tripwire.clone()).flow(self, triggers).run().await
    }

    pub(crate) fn call(
        &self,
        ctx: FlowContext,
        parameters: Value,
    ) -> BoxFuture<'static, std::result::Result<Value, Failure>> {
        (self.handler)(ctx, parameters)
    }
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow").field("deployment", &self.deployment).finish_non_exhaustive()
    }
}
