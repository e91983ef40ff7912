//! tripwire: a stateful sequence-trigger automation engine with Prefect's trigger semantics.
//!
//! Events come in (Prefect's JSON, from any producer); triggers watch them for patterns in
//! time (this event, then that one within a minute, for the same order; this one *not*
//! followed by that one); a trigger that fires creates a run of a deployment, and a worker
//! runs it with your Rust function, a [`Flow`]. tripwire runs as a server (`tripwire serve`,
//! talked to with a [`Client`]) or inside your process ([`Embedded`]); the same code serves
//! and emits in both, written against the [`Tripwire`] trait.
//!
//! # The order example, end to end
//!
//! A flow runs when an order is paid after it was created, for that order:
//!
//! ```
//! use std::time::Duration;
//! use serde::Deserialize;
//! use serde_json::json;
//! use tripwire::prelude::*;
//!
//! #[derive(Deserialize)]
//! struct Order {
//!     order_id: String,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("tripwire-doc-order-{}", std::process::id()));
//! let tripwire = Embedded::open(&dir).await?;
//!
//! let ship = Flow::new("ship-order", |ctx: FlowContext, order: Order| async move {
//!     ctx.log().info(format!("shipping {}", order.order_id));
//!     Ok(json!({"shipped": order.order_id}))
//! });
//! let paid_after_created = TriggerDefinition::new(
//!     "ship-when-paid",
//!     EventTrigger::new()
//!         .after("order.created")
//!         .expect("order.paid")
//!         .for_each("prefect.resource.id")
//!         .within(Duration::from_secs(60)),
//! )
//! .parameters(json!({"order_id": "{{ event.resource.id }}"}));
//!
//! // Registers the deployment and the trigger, then serves in the background.
//! let worker = Worker::new(tripwire.clone()).flow(ship, [paid_after_created]).start().await?;
//!
//! tripwire.emit(NewEvent::new("order.created", Resource::new("order.42"))).await?;
//! tripwire.emit(NewEvent::new("order.paid", Resource::new("order.42")).payload(json!({"amount": 30}))).await?;
//!
//! let run = &tripwire.runs(RunQuery::new().deployment("ship-order")).await?[0];
//! let run = tripwire.wait_for_run(run.id, Duration::from_secs(10)).await?;
//! println!("{:?}: {}", run.state, run.output.clone().unwrap_or_default());
//! assert_eq!(run.output, Some(json!({"shipped": "order.42"})));
//!
//! worker.stop().await?;
//! tripwire.shutdown().await;
//! # drop(tripwire);
//! # let _ = std::fs::remove_dir_all(&dir);
//! # Ok(())
//! # }
//! ```
//!
//! Against a server, only the first line changes: `let tripwire = Client::from_env()?;`.
//!
//! # Cargo features
//!
//! | feature | what it builds |
//! |---|---|
//! | `client` | the model, [`Client`] (HTTP), flows and workers: no engine, no database, no server |
//! | `embedded` | the model, the engine, the store, the service, [`Embedded`], flows and workers |
//! | `server` (default) | both, plus the HTTP API and the `tripwire` binary's commands |
//!
//! # Layout
//!
//! [`model`] is pure data; [`engine`] decides; the store (redb) keeps; [`service`] owns the engine and
//! the store; `http` and `cli` are the server's edges; [`client`] and [`flow`] are the SDK.
#![warn(missing_docs)]
// Some model items (Prefect's event filter) serve only the HTTP API: without it they are unused.
#![cfg_attr(not(feature = "server"), allow(dead_code))]

/// The `tripwire` binary's commands (`src/main.rs` calls [`cli::main`]); not a library API.
#[cfg(feature = "server")]
#[doc(hidden)]
pub mod cli;
#[cfg(any(feature = "client", feature = "embedded"))]
pub mod client;
#[cfg(feature = "embedded")]
pub mod embedded;
#[cfg(feature = "embedded")]
pub mod engine;
#[cfg(any(feature = "client", feature = "embedded"))]
pub mod flow;
/// The HTTP API's router (`src/main.rs` serves it, tests mount it in-process); not a
/// library API: embed [`Service`] or [`Embedded`] instead.
#[cfg(feature = "server")]
#[doc(hidden)]
pub mod http;
pub mod model;
#[cfg(feature = "embedded")]
pub mod service;
#[cfg(feature = "embedded")]
pub(crate) mod store;

#[cfg(feature = "client")]
pub use client::Client;
#[cfg(any(feature = "client", feature = "embedded"))]
pub use client::{ClientError, RunQuery};
#[cfg(feature = "embedded")]
pub use embedded::Embedded;
#[cfg(feature = "embedded")]
pub use engine::replay::replay;
#[cfg(any(feature = "client", feature = "embedded"))]
pub use flow::{Flow, FlowContext, Tripwire, Worker, WorkerHandle, Workflow};
pub use model::{
    CompoundTrigger, Concurrency, Deployment, Event, EventTrigger, NewEvent, Posture, Resource, Run, RunState,
    SequenceTrigger, Trigger, TriggerDefinition,
};
#[cfg(feature = "embedded")]
pub use service::{Service, ServiceConfig};

/// What an application needs, in one import: `use tripwire::prelude::*;`.
///
/// Flows and workers, the [`Tripwire`] trait (so that `emit`, `runs`, `wait_for_run`, ... work
/// on a [`Client`] and an [`Embedded`] alike), both backends, events, trigger builders and
/// runs. Only tripwire's own types: no `Duration`, no `json!`.
pub mod prelude {
    #[cfg(feature = "client")]
    pub use crate::client::Client;
    #[cfg(any(feature = "client", feature = "embedded"))]
    pub use crate::client::{ClientError, RunQuery};
    #[cfg(feature = "embedded")]
    pub use crate::embedded::Embedded;
    #[cfg(any(feature = "client", feature = "embedded"))]
    pub use crate::flow::{exit_code, Flow, FlowContext, Tripwire, Worker, WorkerHandle, Workflow};
    pub use crate::model::{
        Comparator, CompoundTrigger, Concurrency, DesiredLabel, EventTrigger, NewEvent, Posture, RateDuration,
        RateLimitUse, Resource, ResourceSpec, Run, RunState, SequenceTrigger, TriggerDefinition,
    };
}
