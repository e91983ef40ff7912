//! The client's own request and response shapes: what it sends that the model has no type for
//! (list filters: [`RunQuery`], [`EventQuery`]) and the server's answers
//! that are not model types (records with bookkeeping, ingest reports, event pages, buckets).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{Event, LogLine, RunState, Timestamp};

/// The server's answer to `POST /events`: every id in the request, in order, and those it had
/// accepted before (acknowledged, not processed again).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IngestReport {
    /// The ids acknowledged, duplicates included.
    pub ids: Vec<Uuid>,
    /// Ids that had been accepted before.
    #[serde(default)]
    pub duplicates: Vec<Uuid>,
}

/// Runs one listing returns at most ([`RunQuery::limit`]); both modes refuse more with an
/// `invalid` error naming `limit` (HTTP 400), as `GET /api/runs` does.
pub const MAX_RUNS_PAGE: usize = 1000;
/// Runs one listing returns when [`RunQuery::limit`] is not given.
pub const DEFAULT_RUNS_PAGE: usize = 100;

/// Which runs to list, newest first: every run unless narrowed down.
///
/// ```
/// use tripwire::client::RunQuery;
/// use tripwire::model::RunState;
///
/// let failed = RunQuery::new().deployment("alert-finance").state(RunState::Failed).limit(10);
/// assert_eq!(failed.get_limit(), 10);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<RunState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<usize>,
}

impl RunQuery {
    /// Every run (the newest [`DEFAULT_RUNS_PAGE`]).
    pub fn new() -> RunQuery {
        RunQuery::default()
    }

    /// Only runs of this deployment (flow).
    pub fn deployment(mut self, name: impl Into<String>) -> RunQuery {
        self.deployment = Some(name.into());
        self
    }

    /// Only runs in this state.
    pub fn state(mut self, state: RunState) -> RunQuery {
        self.state = Some(state);
        self
    }

    /// At most this many runs, 1 to [`MAX_RUNS_PAGE`] (default [`DEFAULT_RUNS_PAGE`]).
    pub fn limit(mut self, limit: usize) -> RunQuery {
        self.limit = Some(limit);
        self
    }

    /// The deployment asked for, if any.
    pub fn get_deployment(&self) -> Option<&str> {
        self.deployment.as_deref()
    }

    /// The state asked for, if any.
    pub fn get_state(&self) -> Option<RunState> {
        self.state
    }

    /// The limit asked for, or the default.
    pub fn get_limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_RUNS_PAGE)
    }

    /// Whether `run` is one the query asks for (the limit aside).
    pub fn matches(&self, run: &crate::model::Run) -> bool {
        self.deployment.as_deref().is_none_or(|d| run.deployment == d) && self.state.is_none_or(|s| run.state == s)
    }

    /// `Err(why)` when the limit is outside 1 to [`MAX_RUNS_PAGE`], with the words the HTTP API
    /// uses (`limit: must be from 1 to 1000, got ...`).
    pub fn check(&self) -> Result<(), String> {
        let limit = self.get_limit();
        if (1..=MAX_RUNS_PAGE).contains(&limit) {
            Ok(())
        } else {
            Err(format!("must be from 1 to {MAX_RUNS_PAGE}, got {limit}"))
        }
    }
}

/// Filters for `GET /events`; every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EventQuery {
    /// Exactly this event name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Event names starting with this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The resource's `prefect.resource.id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The `prefect.resource.id` of one of the related resources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub related: Option<String>,
    /// Occurred at or after this instant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// Occurred at or before this instant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
    /// Events per page, 1 to 1000 (the server's default is 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// The `next_page` of a previous answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u64>,
}

/// One page of stored events, newest first.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct EventPage {
    /// The events, newest first (each with `received` set).
    pub events: Vec<Event>,
    /// Pass as [`EventQuery::page`] for the next (older) page; `None` on the last page.
    pub next_page: Option<u64>,
}

/// A page of Prefect's event filter (`POST /events/filter`), in the filter's order.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct FilteredEvents {
    /// The events of this page.
    pub events: Vec<Event>,
    /// How many stored events match in all.
    pub total: usize,
    /// The next page's address (pass it to [`super::Client::events_filter_next`]); `None` on
    /// the last page.
    pub next_page: Option<String>,
}

pub use crate::model::TriggerRecord;

/// The answer to a PUT: the stored value, and whether it was new.
#[derive(Clone, Debug, PartialEq)]
pub struct Upserted<T> {
    /// What the server stored.
    pub value: T,
    /// True when it did not exist before (201), false when it was replaced (200).
    pub created: bool,
}

/// The live buckets of a trigger (`GET /triggers/{id}/buckets`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketsView {
    /// The definition id.
    pub trigger: String,
    /// Its live buckets (one page).
    pub buckets: Vec<BucketInfo>,
    /// The cursor of the next page (`?after=`), when there is one.
    #[serde(default)]
    pub next: Option<String>,
}

/// One live bucket: a window of one `for_each` key of one event trigger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketInfo {
    /// The event trigger inside the definition (0 is the root).
    pub node: usize,
    /// `{for_each label: value}`.
    pub labels: BTreeMap<String, String>,
    /// Window start (inclusive).
    pub start: Timestamp,
    /// Window end (exclusive).
    pub end: Timestamp,
    /// Events counted in the window.
    pub count: i64,
    /// The last event the bucket saw.
    pub last_event: Option<Uuid>,
    /// Where the window stands: `waiting` (for its `after` event), `open`, `closed`, ...
    #[serde(default)]
    pub phase: String,
    /// `Reactive` or `Proactive`.
    #[serde(default)]
    pub posture: Option<String>,
    /// Events the window needs to fire.
    #[serde(default)]
    pub threshold: Option<i64>,
    /// When the bucket is swept away (a `within: 0` window lives until then).
    #[serde(default)]
    pub sweep_at: Option<Timestamp>,
    /// The evidence the window keeps: its events, with whether each opened it or counted.
    #[serde(default)]
    pub events: Vec<BucketEvidence>,
}

/// An event a bucket keeps as evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketEvidence {
    /// The event's id.
    pub id: Uuid,
    /// Its name.
    pub event: String,
    /// When it occurred.
    pub occurred: Timestamp,
    /// Whether it opened the window.
    #[serde(default)]
    pub opens: bool,
    /// Whether it was counted towards the threshold.
    #[serde(default)]
    pub counts: bool,
}

/// A page of a run's log (`GET /runs/{id}/logs`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogPage {
    /// The lines, oldest first.
    pub lines: Vec<LogLine>,
    /// The position after the last line, to pass as `from` for newer lines.
    #[serde(default)]
    pub next: Option<u64>,
}
