//! Runs of deployments, their logs, and the worker protocol's messages.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::deployment::Deployment;
use super::event::Event;
use super::limits;
use super::problems::{JsonPath, Problems};
use super::time::Timestamp;

/// The prefix of the events a run's state changes emit: `tripwire.run.scheduled`,
/// `tripwire.run.running`, `tripwire.run.completed`, `tripwire.run.failed`,
/// `tripwire.run.cancelled`.
pub const RUN_EVENT_PREFIX: &str = "tripwire.run.";

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RunState {
    /// Waiting for a worker.
    Scheduled,
    /// Claimed by a worker, running.
    Running,
    /// Finished with an output.
    Completed,
    /// Failed after its last attempt.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl RunState {
    /// True for Completed, Failed and Cancelled: nothing happens to the run any more.
    pub fn is_final(self) -> bool {
        matches!(self, RunState::Completed | RunState::Failed | RunState::Cancelled)
    }

    /// The state in lower case, as in event names (`tripwire.run.completed`).
    pub fn as_lower(self) -> &'static str {
        match self {
            RunState::Scheduled => "scheduled",
            RunState::Running => "running",
            RunState::Completed => "completed",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    /// Parses `Scheduled`, `Running`, ... (case-insensitive).
    pub fn parse(text: &str) -> Option<RunState> {
        [RunState::Scheduled, RunState::Running, RunState::Completed, RunState::Failed, RunState::Cancelled]
            .into_iter()
            .find(|s| format!("{s:?}").eq_ignore_ascii_case(text))
    }
}

/// What caused a run that a trigger created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunCause {
    /// The trigger definition id.
    pub trigger: String,
    /// The firing's id.
    pub firing: Uuid,
    /// The bucket's labels.
    pub bucket: std::collections::BTreeMap<String, String>,
    /// The event the firing carries.
    pub triggering_event: Option<Uuid>,
    /// Every event behind the firing.
    #[serde(default)]
    pub triggering_events: Vec<Uuid>,
}

impl RunCause {
    /// What a run created by this firing records of it.
    pub fn of(firing: &super::Firing) -> RunCause {
        RunCause {
            trigger: firing.trigger.clone(),
            firing: firing.id,
            bucket: firing.bucket.clone(),
            triggering_event: firing.triggering_event,
            triggering_events: firing.triggering_events.clone(),
        }
    }
}

/// One run of a deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Run {
    /// Unique id.
    pub id: Uuid,
    /// The deployment's name.
    pub deployment: String,
    /// Current state.
    pub state: RunState,
    /// Parameters: the firing's rendered parameters (or the request's) over the
    /// deployment's defaults.
    pub parameters: Map<String, Value>,
    /// The trigger firing that created it (absent for runs created by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<RunCause>,
    /// Attempt number, from 1.
    #[schemars(range(min = 1))]
    pub attempt: u32,
    /// When it was created.
    pub created: Timestamp,
    /// When its state last changed.
    pub updated: Timestamp,
    /// Higher runs are claimed first.
    #[serde(default)]
    pub priority: i32,
    /// Not claimed before this instant (retries with backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    /// The worker holding it, while `Running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// When the worker's lease lapses unless a heartbeat extends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires: Option<Timestamp>,
    /// When the current attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Timestamp>,
    /// The running attempt's execution deadline once its flow refreshed it
    /// (`ctx.refresh_timeout`): it replaces `started` plus the deployment's `timeout_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_at: Option<Timestamp>,
    /// When it reached a final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Timestamp>,
    /// The flow's output, once `Completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the run is in its state, when something other than its worker put it there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<StateReason>,
    /// The rendered concurrency key, for deployments with a per-key limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// The rate limits it takes units from when it is claimed (dynamic keys rendered).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<super::RunRateLimit>,
    /// Why a `Scheduled` run is not claimed yet, in words (a rate limit used up until
    /// `not_before`); cleared when it is claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// The run that spawned it (`ctx.spawn`) and its key there; absent for other runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<super::RunParent>,
}

impl Run {
    /// A new `Scheduled` run, attempt 1.
    pub fn scheduled(
        id: Uuid,
        deployment: &Deployment,
        parameters: Map<String, Value>,
        cause: Option<RunCause>,
        now: Timestamp,
    ) -> Run {
        Run {
            id,
            deployment: deployment.name.clone(),
            state: RunState::Scheduled,
            parameters,
            cause,
            attempt: 1,
            created: now,
            updated: now,
            priority: deployment.priority,
            not_before: None,
            worker: None,
            lease_expires: None,
            started: None,
            timeout_at: None,
            finished: None,
            output: None,
            error: None,
            reason: None,
            concurrency_key: None,
            rate_limits: Vec::new(),
            waiting: None,
            parent: None,
        }
    }

    /// True once the run is Completed, Failed or Cancelled.
    pub fn is_final(&self) -> bool {
        self.state.is_final()
    }
}

/// Merges `over` onto `defaults`, key by key (top level), as Prefect merges run parameters
/// over deployment defaults. The result is held to [`limits::MAX_PARAMETERS_BYTES`] and
/// [`limits::MAX_JSON_DEPTH`]: a run whose parameters could not be stored and read back is
/// refused (by hand: 422; from a firing: the firing records why and no run is made).
pub fn merge_parameters(defaults: &Map<String, Value>, over: Option<&Value>) -> Result<Map<String, Value>, Problems> {
    let mut merged = defaults.clone();
    if let Some(Value::Object(o)) = over {
        for (k, v) in o {
            merged.insert(k.clone(), v.clone());
        }
    }
    let mut problems = Problems::default();
    limits::check_object(&merged, &JsonPath::root().key("parameters"), limits::MAX_PARAMETERS_BYTES, &mut problems);
    problems.into_result(merged)
}

/// Why a run is in its state when its worker did not put it there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StateReason {
    /// Scheduled again after a failed attempt, for the next attempt (after the backoff).
    Retry,
    /// Scheduled again because its worker stopped sending heartbeats (the lease lapsed).
    LeaseExpired,
    /// The attempt ran longer than the deployment's `timeout_seconds`.
    TimedOut,
    /// Not claimed within the deployment's `schedule_timeout_seconds`.
    ScheduleTimeout,
    /// Cancelled by `CANCEL_IN_PROGRESS`: a newer run of its concurrency key took its slot.
    ConcurrencyCancelInProgress,
    /// Cancelled by `CANCEL_NEWEST`: its concurrency key's slots were taken.
    ConcurrencyCancelNewest,
    /// Failed because the deployment's concurrency key did not render.
    ConcurrencyKeyError,
    /// Waiting: a rate limit it takes units from is used up until `not_before`.
    RateLimited,
    /// Failed because one of the deployment's dynamic rate limit keys did not render.
    RateLimitKeyError,
    /// Waiting: no online worker serving its deployment has the labels it requires (worked
    /// out when the run is read; not stored).
    NoMatchingWorker,
    /// Cancelled through the API.
    CancelledByUser,
    /// Cancelled because the run that spawned it was cancelled.
    ParentCancelled,
    /// Failed without retrying because the flow could not read its parameters.
    InvalidParameters,
}

/// The level of a log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Detail.
    Debug,
    /// Normal progress.
    #[default]
    Info,
    /// Something unexpected that the flow survived.
    Warning,
    /// A failure.
    Error,
}

/// One line a flow logged while running.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogLine {
    /// When it was logged.
    pub at: Timestamp,
    /// Its level.
    #[serde(default)]
    pub level: LogLevel,
    /// The text.
    pub message: String,
    /// The attempt that logged it (from 1).
    #[serde(default)]
    pub attempt: u32,
}

/// Most lines one request may append to a run's log.
pub const MAX_LOG_LINES_PER_REQUEST: usize = 1000;
/// Longest log line kept; longer ones are cut, with a marker.
pub const MAX_LOG_LINE_BYTES: usize = 16 * 1024;
/// Most runs one claim may return.
pub const MAX_CLAIM: u32 = 100;
/// Longest a claim may wait for runs.
pub const MAX_CLAIM_WAIT_SECONDS: f64 = 60.0;
/// The most slots a worker may say it has.
pub const MAX_WORKER_SLOTS: u32 = 10_000;
/// Shortest and longest lease a worker may take.
pub const LEASE_SECONDS_RANGE: (f64, f64) = (1.0, 3600.0);
/// Lease when the worker names none.
pub const DEFAULT_LEASE_SECONDS: f64 = 30.0;

/// `POST /runs/claim`: a worker asks for runs of its deployments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The worker's name (it must send it again with heartbeats and results).
    #[schemars(length(min = 1, max = MAX_WORKER_NAME_CHARS), regex(pattern = NOT_ONLY_WHITESPACE))]
    pub worker: String,
    /// The deployments it serves.
    #[schemars(length(min = 1))]
    pub deployments: Vec<String>,
    /// Most runs to return (1 to 100).
    #[serde(default = "one", deserialize_with = "whole_u32")]
    #[schemars(range(min = 1, max = MAX_CLAIM))]
    pub limit: u32,
    /// How long the worker holds a claimed run without a heartbeat, in seconds.
    #[serde(default = "default_lease")]
    #[schemars(range(min = LEASE_SECONDS_RANGE.0, max = LEASE_SECONDS_RANGE.1))]
    pub lease_seconds: f64,
    /// Wait up to this long for a run when none is ready (long-poll), in seconds (0 to 60).
    #[serde(default)]
    #[schemars(range(min = 0.0, max = MAX_CLAIM_WAIT_SECONDS))]
    pub wait_seconds: f64,
    /// The runs the worker can hold at once (1 to 10,000), shown in `GET /api/workers`.
    /// Optional: claims are limited by `limit`, not by this.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole_u32_opt")]
    #[schemars(range(min = 1, max = MAX_WORKER_SLOTS))]
    pub slots: Option<u32>,
    /// What the worker is (`{"region": "eu", "memory": 64}`: text or whole numbers), matched
    /// against deployments' `desired_labels` (at most 64).
    #[serde(
        default,
        skip_serializing_if = "std::collections::BTreeMap::is_empty",
        deserialize_with = "super::affinity::labels_or_none"
    )]
    #[schemars(
        with = "Option<std::collections::BTreeMap<String, super::LabelValue>>",
        extend("maxProperties" = 64, "propertyNames" = {"minLength": 1, "maxLength": 128})
    )]
    pub labels: std::collections::BTreeMap<String, super::LabelValue>,
}

fn one() -> u32 {
    1
}

/// A whole number: `17` and `17.0` alike, as JSON Schema's `integer` (and the rest of the API)
/// reads them.
fn whole_u32<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let n = serde_json::Number::deserialize(deserializer)?;
    crate::model::integral(&n)
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| serde::de::Error::custom(format!("expected a whole number from 0 to {}, got {n}", u32::MAX)))
}

/// [`whole_u32`], or `null`.
fn whole_u32_opt<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    Option::<serde_json::Number>::deserialize(deserializer)?
        .map(|n| whole_u32(n).map_err(serde::de::Error::custom))
        .transpose()
}

fn default_lease() -> f64 {
    DEFAULT_LEASE_SECONDS
}

/// The longest worker name, in bytes (it is stored with every run the worker holds, and in
/// its run-state events).
pub const MAX_WORKER_NAME_CHARS: usize = 256;

/// A string with a character that is not whitespace (Unicode `White_Space`, as
/// `char::is_whitespace` and `str::trim` read it): a worker's name.
const NOT_ONLY_WHITESPACE: &str =
    "[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

fn check_worker(worker: &str, path: &JsonPath, problems: &mut Problems) {
    if worker.trim().is_empty() {
        problems.add(&path.key("worker"), "must name the worker");
    } else if worker.chars().count() > MAX_WORKER_NAME_CHARS {
        let chars = worker.chars().count();
        problems.add(&path.key("worker"), format!("is {chars} characters; at most {MAX_WORKER_NAME_CHARS}"));
    }
}

fn check_lease(lease: f64, path: &JsonPath, problems: &mut Problems) {
    let (min, max) = LEASE_SECONDS_RANGE;
    if !(min..=max).contains(&lease) {
        problems.add(&path.key("lease_seconds"), format!("must be from {min} to {max} seconds, got {lease}"));
    }
}

impl ClaimRequest {
    /// A claim of one run of `deployments`, with the default lease and no waiting.
    pub fn new(worker: impl Into<String>, deployments: Vec<String>) -> ClaimRequest {
        ClaimRequest {
            worker: worker.into(),
            deployments,
            limit: 1,
            lease_seconds: DEFAULT_LEASE_SECONDS,
            wait_seconds: 0.0,
            slots: None,
            labels: std::collections::BTreeMap::new(),
        }
    }

    /// Every problem with the request.
    pub fn validate(&self) -> Result<(), Problems> {
        let root = JsonPath::root();
        let mut problems = Problems::default();
        check_worker(&self.worker, &root, &mut problems);
        if self.deployments.is_empty() {
            problems.add(&root.key("deployments"), "name at least one deployment");
        }
        if !(1..=MAX_CLAIM).contains(&self.limit) {
            problems.add(&root.key("limit"), format!("must be from 1 to {MAX_CLAIM}, got {}", self.limit));
        }
        check_lease(self.lease_seconds, &root, &mut problems);
        super::affinity::check_labels(&self.labels, &root.key("labels"), &mut problems);
        if let Some(slots) = self.slots.filter(|s| !(1..=MAX_WORKER_SLOTS).contains(s)) {
            problems.add(&root.key("slots"), format!("must be from 1 to {MAX_WORKER_SLOTS}, got {slots}"));
        }
        if !(0.0..=MAX_CLAIM_WAIT_SECONDS).contains(&self.wait_seconds) {
            problems.add(
                &root.key("wait_seconds"),
                format!("must be from 0 to {MAX_CLAIM_WAIT_SECONDS} seconds, got {}", self.wait_seconds),
            );
        }
        problems.into_result(())
    }
}

/// A claimed run, with the events that caused it (those still stored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClaimedRun {
    /// The run, now `Running` and leased to the worker.
    pub run: Run,
    /// The triggering events, oldest first.
    #[serde(default)]
    pub events: Vec<Event>,
}

/// `POST /runs/{id}/heartbeat`: the worker still runs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The worker holding the run.
    #[schemars(length(min = 1, max = MAX_WORKER_NAME_CHARS), regex(pattern = NOT_ONLY_WHITESPACE))]
    pub worker: String,
    /// The new lease, from now, in seconds.
    #[serde(default = "default_lease")]
    #[schemars(range(min = LEASE_SECONDS_RANGE.0, max = LEASE_SECONDS_RANGE.1))]
    pub lease_seconds: f64,
    /// Refreshes the attempt's execution deadline to this many seconds from now (Hatchet's
    /// `refresh_timeout`), whatever the deployment's `timeout_seconds` said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = 31_536_000))]
    pub timeout_seconds: Option<f64>,
}

impl Heartbeat {
    /// A heartbeat of `worker` extending the lease to `lease_seconds` from now.
    pub fn new(worker: impl Into<String>, lease_seconds: f64) -> Heartbeat {
        Heartbeat { worker: worker.into(), lease_seconds, timeout_seconds: None }
    }

    /// Every problem with the request.
    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::default();
        check_worker(&self.worker, &JsonPath::root(), &mut problems);
        check_lease(self.lease_seconds, &JsonPath::root(), &mut problems);
        if let Some(t) = self.timeout_seconds {
            let max = super::deployment::MAX_TIMEOUT_SECONDS;
            if !(t > 0.0 && t <= max) {
                problems.add(
                    &JsonPath::root().key("timeout_seconds"),
                    format!("must be more than 0 and at most {max} seconds, got {t}"),
                );
            }
        }
        problems.into_result(())
    }
}

/// The answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HeartbeatReply {
    /// The run as it is now.
    pub run: Run,
    /// True when the worker must stop the run: it timed out, was cancelled, or is no longer
    /// held by this worker. Its result would be refused.
    pub cancel: bool,
}

/// `POST /runs/{id}/complete`: the flow returned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Completion {
    /// The worker holding the run.
    #[schemars(length(min = 1, max = MAX_WORKER_NAME_CHARS), regex(pattern = NOT_ONLY_WHITESPACE))]
    pub worker: String,
    /// What the flow returned.
    #[serde(default)]
    pub output: Value,
}

impl Completion {
    /// Every problem with the request: the output is held to [`limits::MAX_OUTPUT_BYTES`] and
    /// [`limits::MAX_JSON_DEPTH`].
    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::default();
        check_worker(&self.worker, &JsonPath::root(), &mut problems);
        limits::check_json(&self.output, &JsonPath::root().key("output"), limits::MAX_OUTPUT_BYTES, &mut problems);
        problems.into_result(())
    }
}

/// `POST /runs/{id}/fail`: the attempt failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailureReport {
    /// The worker holding the run.
    #[schemars(length(min = 1, max = MAX_WORKER_NAME_CHARS), regex(pattern = NOT_ONLY_WHITESPACE))]
    pub worker: String,
    /// What went wrong.
    pub error: String,
    /// False when another attempt cannot succeed (e.g. parameters that do not deserialise):
    /// the run fails at once, retries left or not.
    #[serde(default = "yes")]
    pub retry: bool,
}

fn yes() -> bool {
    true
}

/// `POST /runs/{id}/logs`: lines to append.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogBatch {
    /// The lines, oldest first (at most 1,000 per request). `at` may be left out: the
    /// server's time of receipt.
    #[schemars(length(max = MAX_LOG_LINES_PER_REQUEST))]
    pub lines: Vec<NewLogLine>,
}

/// A line to append to a run's log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLogLine {
    /// When it was logged (default: when received).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    /// Its level.
    #[serde(default)]
    pub level: LogLevel,
    /// The text.
    pub message: String,
}

impl LogBatch {
    /// Every problem with the request.
    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::default();
        if self.lines.len() > MAX_LOG_LINES_PER_REQUEST {
            problems.add(
                &JsonPath::root().key("lines"),
                format!("at most {MAX_LOG_LINES_PER_REQUEST} lines per request, got {}", self.lines.len()),
            );
        }
        problems.into_result(())
    }

    /// The lines as stored for `attempt`: a missing `at` is `now`, and a line longer than
    /// [`MAX_LOG_LINE_BYTES`] is cut, with a marker.
    pub fn into_lines(self, attempt: u32, now: Timestamp) -> Vec<LogLine> {
        self.lines
            .into_iter()
            .map(|l| LogLine {
                at: l.at.unwrap_or(now),
                level: l.level,
                message: limits::clip(l.message, MAX_LOG_LINE_BYTES),
                attempt,
            })
            .collect()
    }
}

/// What `PUT /deployments/{name}/triggers` changed: the trigger ids in each group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TriggerSync {
    /// Installed for the first time.
    pub created: Vec<String>,
    /// Replaced by a different definition (their buckets start afresh).
    pub updated: Vec<String>,
    /// The same as before, left alone (their buckets keep their state).
    pub unchanged: Vec<String>,
    /// Triggers of the deployment that were not in the list.
    pub deleted: Vec<String>,
    /// What the caller should know, such as a deleted trigger that was installed with the
    /// triggers API or the CLI rather than by serving the deployment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn run_parameters_merge_over_defaults() {
        let defaults = json!({"a": 1, "b": 2}).as_object().unwrap().clone();
        let merged = merge_parameters(&defaults, Some(&json!({"b": 3, "c": 4}))).unwrap();
        assert_eq!(Value::Object(merged), json!({"a": 1, "b": 3, "c": 4}));
        assert_eq!(RunState::parse("scheduled"), Some(RunState::Scheduled));
        assert!(RunState::Cancelled.is_final() && !RunState::Running.is_final());
    }

    #[test]
    fn worker_requests_are_checked() {
        let claim: ClaimRequest = serde_json::from_value(json!({"worker": "", "deployments": [], "limit": 0,
            "lease_seconds": 0.5, "wait_seconds": 61}))
        .unwrap();
        let text = claim.validate().unwrap_err().to_string();
        for field in ["$.worker", "$.deployments", "$.limit", "$.lease_seconds", "$.wait_seconds"] {
            assert!(text.contains(field), "{text}");
        }
        let claim: ClaimRequest = serde_json::from_value(json!({"worker": "w", "deployments": ["d"]})).unwrap();
        assert_eq!(claim, ClaimRequest::new("w", vec!["d".into()]));
        assert!(claim.validate().is_ok());
        assert!(serde_json::from_value::<Completion>(json!({"worker": "w", "oops": 1})).is_err());
    }
}
