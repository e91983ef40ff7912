//! tripwire: a stateful sequence-trigger automation engine with Prefect's trigger semantics.
#![warn(missing_docs)]

pub mod cli;
pub mod client;
pub mod engine;
pub mod http;
pub mod model;
pub mod service;
pub mod store;
