//! Pure data types and their validation: events, trigger definitions, firings, time.
//!
//! Nothing here does I/O or reads a clock.

pub mod deployment;
pub mod event;
pub mod filter;
pub mod firing;
pub mod problems;
pub mod schema;
pub mod time;
pub mod trigger;

pub use deployment::{Deployment, Run, RunCause, RunState};
pub use event::{Event, EventDefaults, Resource};
pub use filter::ScopeFilter;
pub use firing::Firing;
pub use problems::{JsonPath, Problem, Problems};
pub use time::{Span, Timestamp};
pub use trigger::{
    CompoundTrigger, EventTrigger, Posture, Require, SequenceTrigger, Trigger, TriggerDefinition, TriggerRecord,
};
