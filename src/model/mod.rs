//! Pure data types and their validation: events, trigger definitions, firings, deployments,
//! runs, rate limits and the worker protocol's messages, time.
//!
//! Nothing here does I/O or reads a clock.

pub mod access;
pub mod affinity;
pub mod backtest;
pub mod child;
pub mod deployment;
pub mod event;
pub mod event_filter;
mod fields;
pub(crate) use fields::integral;
pub mod filter;
pub mod firing;
pub mod limits;
mod new_event;
pub mod problems;
pub mod rate_limit;
pub mod run;
mod run_event;
pub mod schema;
pub mod stream;
pub mod time;
pub mod trigger;
pub mod worker;

pub use access::{ApiKey, CreatedApiKey, NewApiKey, Permission, Role};
pub use affinity::{Comparator, DesiredLabel, LabelValue};
pub use backtest::{Backtest, BacktestRequest, BacktestState, BacktestSummary};
pub use child::{ChildRequest, RunParent};
pub use deployment::{Concurrency, ConcurrencyStrategy, Deployment};
pub use event::{Event, EventDefaults, Resource};
pub use filter::ScopeFilter;
pub use firing::Firing;
pub use new_event::NewEvent;
pub use problems::{JsonPath, Problem, Problems};
pub use rate_limit::{
    RateDuration, RateLimit, RateLimitKind, RateLimitQuota, RateLimitStatus, RateLimitUse, RateLimitWindow,
    RunRateLimit,
};
pub use run::{
    ClaimRequest, ClaimedRun, Completion, FailureReport, Heartbeat, HeartbeatReply, LogBatch, LogLevel, LogLine,
    NewLogLine, Run, RunCause, RunState, StateReason, TriggerSync, DEFAULT_LEASE_SECONDS,
};
pub use stream::{StreamBatch, StreamChunk};
pub use time::{Span, Timestamp};
pub use trigger::{
    CompoundTrigger, EventTrigger, Posture, Require, ResourceSpec, SequenceTrigger, Trigger, TriggerDefinition,
    TriggerOrigin, TriggerRecord, TriggerStats,
};
pub use worker::{WorkerState, WorkerStatus};
