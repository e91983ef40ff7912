//! tripwire: a stateful sequence-trigger automation engine with Prefect's trigger semantics.
#![warn(missing_docs)]

pub mod cli;
pub mod client;
pub mod embedded;
pub mod engine;
pub mod flow;
pub mod http;
pub mod model;
pub mod service;
pub mod store;

pub use embedded::Embedded;
