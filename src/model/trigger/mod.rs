//! Trigger definitions, written exactly as Prefect's automation triggers are written in JSON,
//! plus the definition around them (id, name, deployment, parameters): the types.
//!
//! The JSON Schema of these types is in `schema`, the Rust builders in `builder`, and the
//! parser (every problem reported at once, each with its JSON path) in `parse`.
//!
//! A type's doc comment here is also its description in the published JSON Schema
//! (`schemas/`), so the runnable examples sit on [`EventTrigger::new`] and
//! [`TriggerDefinition::from_json`] instead.

mod builder;
mod parse;
mod schema;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use super::time::Span;
pub(crate) use schema::with_flat_form;
use schema::{compound_trigger_schema, definition_schema, event_trigger_schema, sequence_trigger_schema, Seconds};

/// Fields that mark a definition as Prefect's flat form (the trigger's fields beside `id`).
const FLAT_FORM_MARKS: &[&str] =
    &["type", "match", "match_related", "after", "expect", "for_each", "posture", "threshold", "within", "triggers"];

/// Prefect's deployment-trigger fields that the flat form may carry: accepted and ignored.
const IGNORED_DEPLOYMENT_TRIGGER_FIELDS: &[&str] =
    &["job_variables", "schedule_after", "tags", "actions_on_trigger", "actions_on_resolve"];

/// Prefect's minimum `within` for proactive triggers; `0` becomes this.
pub const PROACTIVE_MIN_WITHIN: Span = Span::seconds(10);

/// A trigger definition: what to watch for, and what a firing runs.
///
/// Written `{"id", "name"?, "description"?, "enabled"?, "trigger", "deployment"?,
/// "parameters"?}`. Prefect's flat deployment-trigger form is accepted too: no `trigger`
/// member, the trigger's own fields beside `name`, `description`, `enabled` and `parameters`
/// (`job_variables`, `schedule_after`, `tags`, `actions_on_trigger` and `actions_on_resolve`
/// are then accepted and ignored), and `name` as the id when `id` is absent.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, transform = definition_schema)]
pub struct TriggerDefinition {
    /// Unique id; firings are reported under it.
    /// When absent (or null), `name` is used.
    #[schemars(with = "Option<String>", length(min = 1))]
    pub id: String,
    /// A name for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A longer description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Disabled definitions are kept but not evaluated.
    #[schemars(default = "enabled_by_default")]
    pub enabled: bool,
    /// The criteria.
    pub trigger: Trigger,
    /// The deployment a firing runs, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Parameters for the run: any JSON, every string in it a Jinja template.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Map<String, Value>>")]
    pub parameters: Option<Value>,
}

/// A stored definition with the server's bookkeeping: what the triggers API answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerRecord {
    /// The definition.
    #[serde(flatten)]
    pub definition: TriggerDefinition,
    /// First stored.
    pub created: super::time::Timestamp,
    /// Last changed.
    pub updated: super::time::Timestamp,
    /// Why the server disabled it (evaluating it panicked); cleared when it is enabled or
    /// replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set in answers, not stored: a reason it cannot create runs now (its deployment does not
    /// exist yet; firings until it does are recorded with that reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Who installed it: the triggers API (and so the CLI), or a worker serving its
    /// deployment. Unknown for triggers stored before this was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<TriggerOrigin>,
    /// Set in answers when asked for (`GET /api/triggers?stats=true`), not stored: what it
    /// does now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<TriggerStats>,
}

/// What a trigger does now: its live buckets and its firings in the last hour.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerStats {
    /// Live `for_each` buckets (counted every second).
    pub live_buckets: u64,
    /// Firings in the hour before the answer (by their processing time, `triggered`).
    pub firings_last_hour: u64,
    /// True when the hour held more firings (of every trigger) than one answer reads
    /// (100,000): `firings_last_hour` is then a lower bound.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub firings_partial: bool,
    /// Its latest firing's processing time, within the hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_firing: Option<super::time::Timestamp>,
}

/// Who installed a trigger: serving a deployment replaces the triggers its workers
/// installed, and says so when it also removes one that came from elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerOrigin {
    /// `POST`/`PUT /api/triggers` (the CLI's `triggers apply` uses it).
    Api,
    /// A worker serving the deployment (`PUT /api/deployments/{name}/triggers`).
    Worker,
}

impl TriggerRecord {
    /// Sets [`TriggerRecord::warning`] when the definition runs a deployment that `exists`
    /// says is not there (yet): its firings are recorded, without a run, until it is.
    pub fn note_deployment(&mut self, exists: impl FnOnce(&str) -> bool) {
        self.warning = match &self.definition.deployment {
            Some(name) if !exists(name) => Some(format!(
                "deployment `{name}` does not exist yet: firings are recorded without a run until it does"
            )),
            _ => None,
        };
    }
}

/// The three kinds of trigger Prefect has.
// Definitions are few and compiled once, so an unboxed event trigger costs nothing that
// matters and keeps patterns and builders simple.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Trigger {
    /// Fires on the presence (reactive) or absence (proactive) of events.
    Event(EventTrigger),
    /// Fires when `require` of its children have fired within `within`.
    Compound(CompoundTrigger),
    /// Fires when all its children have fired, in order, within `within`.
    Sequence(SequenceTrigger),
}

/// Reactive triggers respond to the presence of events, proactive ones to their absence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Posture {
    /// Fire as soon as `threshold` events are seen.
    #[default]
    Reactive,
    /// Fire when a window closes with fewer than `threshold` events.
    Proactive,
}

/// Label patterns a resource must match: every label (AND), any value per label (OR).
#[derive(Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ResourceSpec(pub IndexMap<String, LabelValues>);

/// The value(s) a label may have, as written: one glob or a list of globs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum LabelValues {
    /// One pattern.
    One(String),
    /// Any of these patterns; an empty list never matches.
    Many(Vec<String>),
}

impl LabelValues {
    /// The patterns as a slice.
    pub fn patterns(&self) -> &[String] {
        match self {
            LabelValues::One(s) => std::slice::from_ref(s),
            LabelValues::Many(v) => v,
        }
    }
}

impl Serialize for ResourceSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// `match_related`: one spec, or a list of specs that must each be satisfied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RelatedSpec {
    /// A single spec (`{}` matches every event).
    One(ResourceSpec),
    /// Every spec must be matched by some related resource.
    Many(Vec<ResourceSpec>),
}

impl Default for RelatedSpec {
    fn default() -> Self {
        RelatedSpec::One(ResourceSpec::default())
    }
}

impl RelatedSpec {
    /// The specs as a slice.
    pub fn specs(&self) -> &[ResourceSpec] {
        match self {
            RelatedSpec::One(s) => std::slice::from_ref(s),
            RelatedSpec::Many(v) => v,
        }
    }
}

/// Prefect's `EventTrigger`.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[schemars(default, deny_unknown_fields, transform = event_trigger_schema)]
pub struct EventTrigger {
    /// Labels the primary resource must match.
    #[serde(rename = "match")]
    pub match_resource: ResourceSpec,
    /// Labels related resources must match.
    pub match_related: RelatedSpec,
    /// Event names that open a window (globs with `*`); sorted, without duplicates.
    pub after: Vec<String>,
    /// Event names that count toward the threshold; empty means every event.
    pub expect: Vec<String>,
    /// Labels whose values split the trigger into independent buckets.
    pub for_each: Vec<String>,
    /// Reactive or Proactive.
    pub posture: Posture,
    /// Events needed (reactive) or expected (proactive).
    #[schemars(range(min = 0))]
    pub threshold: i64,
    /// The window, in seconds.
    #[serde(serialize_with = "serialize_span")]
    #[schemars(with = "Seconds")]
    pub within: Span,
    /// tripwire's extension: a minijinja expression over `event` (and `payload`/`input`)
    /// that must be true for the event to count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// How many children of a compound trigger must fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Require {
    /// One child.
    Any,
    /// Every child.
    All,
    /// At least this many children (1 to the number of children).
    AtLeast(usize),
}

impl Serialize for Require {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Require::Any => s.serialize_str("any"),
            Require::All => s.serialize_str("all"),
            Require::AtLeast(n) => s.serialize_u64(*n as u64),
        }
    }
}

/// Prefect's `CompoundTrigger`.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, transform = compound_trigger_schema)]
pub struct CompoundTrigger {
    /// The children.
    #[schemars(length(min = 1))]
    pub triggers: Vec<Trigger>,
    /// How many must fire.
    pub require: Require,
    /// Child firings older than this (processing time) no longer count; `None` (null): no
    /// limit.
    #[serde(serialize_with = "serialize_opt_span")]
    #[schemars(with = "Option<Seconds>")]
    pub within: Option<Span>,
}

/// Prefect's `SequenceTrigger`.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, transform = sequence_trigger_schema)]
pub struct SequenceTrigger {
    /// The children, in the order they must fire.
    #[schemars(length(min = 1))]
    pub triggers: Vec<Trigger>,
    /// Child firings older than this (processing time) no longer count; `None` (null): no
    /// limit.
    #[serde(serialize_with = "serialize_opt_span")]
    #[schemars(with = "Option<Seconds>")]
    pub within: Option<Span>,
}

/// `"enabled"` when absent.
fn enabled_by_default() -> bool {
    true
}

fn serialize_span<S: Serializer>(span: &Span, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(span.as_secs_f64())
}

fn serialize_opt_span<S: Serializer>(span: &Option<Span>, s: S) -> Result<S::Ok, S::Error> {
    match span {
        Some(span) => s.serialize_f64(span.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl Default for EventTrigger {
    fn default() -> Self {
        EventTrigger {
            match_resource: ResourceSpec::default(),
            match_related: RelatedSpec::default(),
            after: Vec::new(),
            expect: Vec::new(),
            for_each: Vec::new(),
            posture: Posture::Reactive,
            threshold: 1,
            within: Span::ZERO,
            filter: None,
        }
    }
}
