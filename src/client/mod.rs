//! Talking to tripwire: the typed async [`Client`] of a server's HTTP API (the SDK's transport
//! and the CLI's), the error both modes answer ([`ClientError`]), and the request and response
//! shapes ([`RunQuery`], [`IngestReport`], [`EventPage`], [`BucketsView`], ...).
//!
//! It is an edge that speaks HTTP: it depends on the model's data types only, never on the
//! service, store or HTTP internals. [`Client`] needs the `client` cargo feature; the rest is
//! also there for embedded-only builds.
//!
//! ```no_run
//! # async fn example() -> Result<(), tripwire::client::ClientError> {
//! use tripwire::prelude::*;
//!
//! let client = Client::from_env()?; // TRIPWIRE_API, or http://127.0.0.1:4200/api
//! let id = client.emit(NewEvent::new("order.created", Resource::new("order.123"))).await?;
//! let run = client.runs(RunQuery::new().deployment("post-order").limit(1)).await?;
//! println!("accepted {id}; latest run: {run:?}");
//! # Ok(())
//! # }
//! ```

mod error;
#[cfg(feature = "client")]
mod http;
#[cfg(feature = "client")]
mod run_stream;
#[cfg(feature = "client")]
mod subscription;
mod types;

pub use self::error::ClientError;
#[cfg(feature = "client")]
pub use self::http::{Client, API_ENV, API_KEY_ENV, DEFAULT_API, DEFAULT_TIMEOUT};
#[cfg(feature = "client")]
pub use self::run_stream::RunStream;
#[cfg(feature = "client")]
pub use self::subscription::{Subscription, RECONNECT_FOR};
pub use self::types::{
    BucketEvidence, BucketInfo, BucketsView, EventPage, EventQuery, FilteredEvents, IngestReport, LogPage, RunQuery,
    TriggerRecord, Upserted, DEFAULT_RUNS_PAGE, MAX_RUNS_PAGE,
};
/// An event to send; the model's [`crate::model::NewEvent`], re-exported here for callers of
/// the client.
pub use crate::model::NewEvent;
