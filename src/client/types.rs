//! The client's own request and response shapes: what it sends that the model has no type for
//! (an event whose `id`/`occurred` the server fills in, list filters) and the server's answers
//! that are not model types (records with bookkeeping, ingest reports, event pages, buckets).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::model::{Event, LogLine, Resource, Timestamp};

/// An event to send. Unlike [`Event`], `id` and `occurred` may be left out: the server then
/// gives the event a fresh id and its receiving time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NewEvent {
    /// Identifier; events are deduplicated by it. `None`: the server picks one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// When it happened. `None`: the server's time of receipt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub occurred: Option<Timestamp>,
    /// Its name, e.g. `order.created`.
    pub event: String,
    /// The resource it concerns (must carry `prefect.resource.id`).
    pub resource: Resource,
    /// Other resources involved, each with a `prefect.resource.role`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<Resource>,
    /// Free-form data.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub payload: Map<String, Value>,
    /// An event that must be processed before this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follows: Option<Uuid>,
}

impl NewEvent {
    /// An event named `name` about `resource`, with the id and time left to the server.
    pub fn new(name: impl Into<String>, resource: Resource) -> NewEvent {
        NewEvent {
            id: None,
            occurred: None,
            event: name.into(),
            resource,
            related: Vec::new(),
            payload: Map::new(),
            follows: None,
        }
    }

    /// Sets the id (resending the same id is deduplicated by the server).
    pub fn id(mut self, id: Uuid) -> NewEvent {
        self.id = Some(id);
        self
    }

    /// Sets when it happened.
    pub fn occurred(mut self, at: Timestamp) -> NewEvent {
        self.occurred = Some(at);
        self
    }

    /// Adds a related resource (it needs a `prefect.resource.role` label).
    pub fn related(mut self, resource: Resource) -> NewEvent {
        self.related.push(resource);
        self
    }

    /// Sets the payload.
    pub fn payload(mut self, payload: Map<String, Value>) -> NewEvent {
        self.payload = payload;
        self
    }

    /// Sets the event this one follows.
    pub fn follows(mut self, id: Uuid) -> NewEvent {
        self.follows = Some(id);
        self
    }
}

impl From<Event> for NewEvent {
    fn from(e: Event) -> NewEvent {
        NewEvent {
            id: Some(e.id),
            occurred: Some(e.occurred),
            event: e.event,
            resource: e.resource,
            related: e.related,
            payload: e.payload,
            follows: e.follows,
        }
    }
}

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
