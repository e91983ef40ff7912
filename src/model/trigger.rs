//! Trigger definitions, written exactly as Prefect's automation triggers are written in JSON,
//! plus the definition around them (id, name, deployment, parameters).
//!
//! Parsing is hand-written over `serde_json::Value` so that every problem in a document is
//! reported at once, each with the JSON path of the field at fault.

use std::borrow::Cow;

use indexmap::IndexMap;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::fields::{insert_sorted, Fields};
use super::limits;
use super::problems::{kind_of, JsonPath, Problems};
use super::time::Span;

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

impl ResourceSpec {
    /// A spec that matches every resource until labels are added.
    pub fn new() -> ResourceSpec {
        ResourceSpec::default()
    }

    /// Requires `label` to match `pattern` (a glob; a leading `!` negates).
    pub fn label(mut self, label: impl Into<String>, pattern: impl Into<String>) -> ResourceSpec {
        self.0.insert(label.into(), LabelValues::One(pattern.into()));
        self
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

/// The JSON of a span of time: seconds, as a number or (as Prefect also accepts) a number in
/// a string.
struct Seconds;

impl JsonSchema for Seconds {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Seconds".into()
    }

    fn schema_id() -> Cow<'static, str> {
        concat!(module_path!(), "::Seconds").into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Seconds: a number, or a number in a string; at most 3155760000 (100 years).",
            "type": ["number", "string"],
            "minimum": 0,
            "maximum": Span::MAX_WITHIN.as_secs_f64(),
            "pattern": r"^\s*\+?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$"
        })
    }
}

impl JsonSchema for Require {
    fn schema_name() -> Cow<'static, str> {
        "Require".into()
    }

    fn schema_id() -> Cow<'static, str> {
        concat!(module_path!(), "::Require").into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "How many children of a compound trigger must fire: \"any\" (one), \"all\", or a number from 1 to the number of children.",
            "oneOf": [
                { "type": "string", "enum": ["any", "all"] },
                { "type": "integer", "minimum": 1 }
            ]
        })
    }
}

impl JsonSchema for Trigger {
    fn schema_name() -> Cow<'static, str> {
        "Trigger".into()
    }

    fn schema_id() -> Cow<'static, str> {
        concat!(module_path!(), "::Trigger").into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "One of Prefect's trigger kinds, told apart by `type`: \"event\", \"compound\" or \"sequence\". Without `type` (or with null), Prefect's rule decides: `triggers` with `require` is a compound trigger, `triggers` alone a sequence, anything else an event trigger.",
            "oneOf": [
                generator.subschema_for::<EventTrigger>(),
                generator.subschema_for::<CompoundTrigger>(),
                generator.subschema_for::<SequenceTrigger>()
            ]
        })
    }
}

/// Adds the members every kind of trigger accepts to a trigger's schema, first: `type`
/// (`kind`, or absent or null when Prefect's inference picks this kind) and Prefect's `id`.
fn add_trigger_members(schema: &mut Schema, kind: &str) {
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    let mut members = Map::new();
    members.insert(
        "type".into(),
        serde_json::json!({
            "description": format!(
                "\"{kind}\". May be left out (or null): then `triggers` with `require` means a \
                 compound trigger, `triggers` alone a sequence, anything else an event trigger."
            ),
            "enum": [kind, null]
        }),
    );
    members.insert(
        "id".into(),
        serde_json::json!({"description": "Prefect's id for the trigger (a UUID): accepted and ignored."}),
    );
    members.extend(std::mem::take(properties));
    *properties = members;
}

fn event_trigger_schema(schema: &mut Schema) {
    add_trigger_members(schema, "event");
    schema.insert(
        "if".into(),
        serde_json::json!({"properties": {"posture": {"const": "Proactive"}}, "required": ["posture"]}),
    );
    schema.insert(
        "then".into(),
        serde_json::json!({"properties": {"within": {
            "description": "A proactive trigger's window is at least 10 seconds; 0 means 10.",
            "anyOf": [{"const": 0}, {"minimum": PROACTIVE_MIN_WITHIN.as_secs_f64()}]
        }}}),
    );
}

fn compound_trigger_schema(schema: &mut Schema) {
    add_trigger_members(schema, "compound");
}

fn sequence_trigger_schema(schema: &mut Schema) {
    add_trigger_members(schema, "sequence");
}

/// `id` may be left out when `name` is given (and is not empty).
fn definition_schema(schema: &mut Schema) {
    schema.insert(
        "anyOf".into(),
        serde_json::json!([
            {"required": ["id"], "properties": {"id": {"type": "string"}}},
            {"required": ["name"], "properties": {"name": {"type": "string", "minLength": 1}}}
        ]),
    );
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

impl EventTrigger {
    /// A reactive trigger with Prefect's defaults: every event, threshold 1, within 0.
    pub fn new() -> EventTrigger {
        EventTrigger::default()
    }

    /// Adds an expected event name (glob).
    pub fn expect(mut self, name: impl Into<String>) -> Self {
        insert_sorted(&mut self.expect, name.into());
        self
    }

    /// Adds an event name (glob) that opens a window.
    pub fn after(mut self, name: impl Into<String>) -> Self {
        insert_sorted(&mut self.after, name.into());
        self
    }

    /// Adds a `for_each` label.
    pub fn for_each(mut self, label: impl Into<String>) -> Self {
        insert_sorted(&mut self.for_each, label.into());
        self
    }

    /// Requires the primary resource's `label` to match `pattern` (one more value is OR-ed).
    pub fn match_label(mut self, label: impl Into<String>, pattern: impl Into<String>) -> Self {
        let pattern = pattern.into();
        let entry = self.match_resource.0.entry(label.into()).or_insert(LabelValues::Many(Vec::new()));
        match entry {
            LabelValues::Many(v) => v.push(pattern),
            LabelValues::One(one) => *entry = LabelValues::Many(vec![std::mem::take(one), pattern]),
        }
        self
    }

    /// Adds a related-resource spec that some related resource must match.
    pub fn match_related(mut self, spec: ResourceSpec) -> Self {
        self.match_related = match self.match_related {
            RelatedSpec::One(s) if s.0.is_empty() => RelatedSpec::Many(vec![spec]),
            RelatedSpec::One(s) => RelatedSpec::Many(vec![s, spec]),
            RelatedSpec::Many(mut v) => {
                v.push(spec);
                RelatedSpec::Many(v)
            }
        };
        self
    }

    /// Sets the threshold.
    pub fn threshold(mut self, n: i64) -> Self {
        self.threshold = n;
        self
    }

    /// Sets the window in seconds.
    pub fn within(mut self, seconds: i64) -> Self {
        self.within = Span::seconds(seconds);
        self
    }

    /// Makes the trigger proactive (fires on absence); `within` below 10 s becomes 10 s.
    pub fn proactive(mut self) -> Self {
        self.posture = Posture::Proactive;
        self
    }

    /// Sets a filter expression over `event` / `payload`.
    pub fn filter(mut self, expression: impl Into<String>) -> Self {
        self.filter = Some(expression.into());
        self
    }
}

impl CompoundTrigger {
    /// A compound trigger over `triggers` that requires `require` of them.
    pub fn new(triggers: Vec<Trigger>, require: Require) -> Self {
        CompoundTrigger { triggers, require, within: None }
    }

    /// Sets `within` in seconds.
    pub fn within(mut self, seconds: i64) -> Self {
        self.within = Some(Span::seconds(seconds));
        self
    }
}

impl SequenceTrigger {
    /// A sequence of `triggers`.
    pub fn new(triggers: Vec<Trigger>) -> Self {
        SequenceTrigger { triggers, within: None }
    }

    /// Sets `within` in seconds.
    pub fn within(mut self, seconds: i64) -> Self {
        self.within = Some(Span::seconds(seconds));
        self
    }
}

impl From<EventTrigger> for Trigger {
    fn from(t: EventTrigger) -> Self {
        Trigger::Event(t)
    }
}

impl From<CompoundTrigger> for Trigger {
    fn from(t: CompoundTrigger) -> Self {
        Trigger::Compound(t)
    }
}

impl From<SequenceTrigger> for Trigger {
    fn from(t: SequenceTrigger) -> Self {
        Trigger::Sequence(t)
    }
}

impl TriggerDefinition {
    /// A definition with this id and trigger, enabled, without deployment or parameters.
    pub fn new(id: impl Into<String>, trigger: impl Into<Trigger>) -> Self {
        TriggerDefinition {
            id: id.into(),
            name: None,
            description: None,
            enabled: true,
            trigger: trigger.into(),
            deployment: None,
            parameters: None,
        }
    }

    /// Sets the run parameters (templates).
    pub fn parameters(mut self, parameters: Value) -> Self {
        self.parameters = Some(parameters);
        self
    }

    /// Sets the deployment a firing runs.
    pub fn deployment(mut self, name: impl Into<String>) -> Self {
        self.deployment = Some(name.into());
        self
    }

    /// Sets the name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Reads a JSON array of definitions, reporting every problem in it at once.
    pub fn list_from_json(value: &Value) -> Result<Vec<TriggerDefinition>, Problems> {
        let (defs, problems) = TriggerDefinition::parse_list(value);
        problems.into_result(defs.into_iter().map(|(_, d)| d).collect())
    }

    /// Reads a JSON array of definitions as far as possible: the definitions that parsed, each
    /// with its index, and every problem found (including duplicate ids).
    pub fn parse_list(value: &Value) -> (Vec<(usize, TriggerDefinition)>, Problems) {
        let root = JsonPath::root();
        let mut problems = Problems::default();
        let Some(items) = value.as_array() else {
            problems.add(&root, format!("expected a JSON array of trigger definitions, got {}", kind_of(value)));
            return (Vec::new(), problems);
        };
        let mut defs = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match TriggerDefinition::from_json(item, &root.index(i)) {
                Ok(d) => defs.push((i, d)),
                Err(p) => problems.extend(p),
            }
        }
        let mut seen = std::collections::HashMap::new();
        for (i, d) in &defs {
            if let Some(first) = seen.insert(d.id.as_str(), *i) {
                problems.add(
                    &root.index(*i).key("id"),
                    format!("duplicate id `{}` (also used by definition {first})", d.id),
                );
            }
        }
        (defs, problems)
    }

    /// Reads one definition: `{"id", "name"?, "enabled"?, "trigger": {...}, "deployment"?,
    /// "parameters"?}`, or Prefect's flat deployment-trigger form where the trigger's fields
    /// sit beside `name` and `parameters`.
    pub fn from_json(value: &Value, path: &JsonPath) -> Result<TriggerDefinition, Problems> {
        let mut problems = Problems::default();
        let Some(object) = value.as_object() else {
            problems.add(path, format!("a trigger definition must be a JSON object, got {}", kind_of(value)));
            return Err(problems);
        };
        // Stored inside snapshots and log entries, a few levels deeper: held to the JSON rule
        // so that every stored definition reads back (a sequence nested 62 deep once left a
        // snapshot the server could not read).
        limits::check_json(value, path, limits::MAX_DEFINITION_BYTES, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut fields = Fields::new(object, path, &mut problems);
        let name = fields.opt_string("name");
        let description = fields.opt_string("description");
        let id = match fields.opt_string("id") {
            Some(id) if !id.is_empty() => id,
            Some(_) => {
                fields.problem("id", "must not be empty");
                String::new()
            }
            None => match &name {
                Some(n) if !n.is_empty() => n.clone(),
                _ => {
                    fields.problems.add(path, "the `id` field is required (or a `name` to use as id)");
                    String::new()
                }
            },
        };
        let enabled = fields.opt_bool("enabled").unwrap_or(true);
        let deployment = fields.opt_string("deployment");
        let parameters = match fields.take("parameters") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => {
                let p = fields.path.key("parameters");
                limits::check_json(v, &p, limits::MAX_PARAMETERS_BYTES, fields.problems);
                Some(v.clone())
            }
            Some(other) => {
                let k = kind_of(other);
                fields.problem("parameters", format!("expected an object, got {k}"));
                None
            }
        };
        let trigger = if let Some(inner) = fields.take("trigger") {
            let p = fields.path.key("trigger");
            let t = Trigger::from_json(inner, &p, fields.problems);
            fields.finish();
            t
        } else if !FLAT_TRIGGER_FIELDS.iter().any(|k| object.contains_key(*k)) {
            // Without a trigger the definition would match every event, its own runs' events
            // included: a cascade of runs from one event.
            fields.problems.add(
                path,
                "the `trigger` field is required: an object such as {\"expect\": [\"order.created\"]} \
                 (or Prefect's flat form with the trigger's fields beside `id`)",
            );
            None
        } else {
            // Prefect's flat DeploymentTrigger form: these fields belong to the deployment
            // trigger and have no effect here.
            for ignored in ["job_variables", "schedule_after", "tags", "actions_on_trigger", "actions_on_resolve"] {
                fields.take(ignored);
            }
            let remaining = fields.remaining();
            let p = path.clone();
            Trigger::from_fields(remaining, &p, fields.problems)
        };
        problems.into_result(TriggerDefinition {
            id,
            name,
            description,
            enabled,
            trigger: trigger.unwrap_or(Trigger::Event(EventTrigger::default())),
            deployment,
            parameters,
        })
    }
}

/// Fields that mark a definition as Prefect's flat form (the trigger's fields beside `id`).
const FLAT_TRIGGER_FIELDS: &[&str] =
    &["type", "match", "match_related", "after", "expect", "for_each", "posture", "threshold", "within", "triggers"];

impl Trigger {
    /// Reads a trigger (`event`, `compound` or `sequence`), reporting problems into `problems`.
    /// When `type` is missing, `triggers` + `require` means compound, `triggers` alone
    /// sequence, anything else event (as Prefect decides).
    pub fn from_json(value: &Value, path: &JsonPath, problems: &mut Problems) -> Option<Trigger> {
        match value.as_object() {
            Some(object) => Trigger::from_fields(object.clone(), path, problems),
            None => {
                problems.add(path, format!("a trigger must be a JSON object, got {}", kind_of(value)));
                None
            }
        }
    }

    fn from_fields(object: Map<String, Value>, path: &JsonPath, problems: &mut Problems) -> Option<Trigger> {
        let mut fields = Fields::new(&object, path, problems);
        let kind = match fields.take("type") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => {
                let has_triggers = object.contains_key("triggers");
                match (has_triggers, object.contains_key("require")) {
                    (true, true) => "compound".into(),
                    (true, false) => "sequence".into(),
                    _ => "event".into(),
                }
            }
            Some(other) => {
                let k = kind_of(other);
                fields.problem("type", format!("expected \"event\", \"compound\" or \"sequence\", got {k}"));
                return None;
            }
        };
        // Prefect gives every trigger a UUID `id`; it is accepted and not used.
        fields.take("id");
        let trigger = match kind.as_str() {
            "event" => Some(Trigger::Event(event_fields(&mut fields))),
            "compound" | "sequence" => {
                let children = match fields.take("triggers") {
                    Some(Value::Array(items)) if items.is_empty() => {
                        fields.problem("triggers", "needs at least one trigger");
                        Vec::new()
                    }
                    Some(Value::Array(items)) => {
                        let p = fields.path.key("triggers");
                        items
                            .iter()
                            .enumerate()
                            .filter_map(|(i, v)| Trigger::from_json(v, &p.index(i), fields.problems))
                            .collect()
                    }
                    Some(other) => {
                        let k = kind_of(other);
                        fields.problem("triggers", format!("expected an array of triggers, got {k}"));
                        Vec::new()
                    }
                    None => {
                        fields.problems.add(path, format!("a {kind} trigger needs `triggers`"));
                        Vec::new()
                    }
                };
                let within = fields.seconds("within").flatten();
                if kind == "sequence" {
                    Some(Trigger::Sequence(SequenceTrigger { triggers: children, within }))
                } else {
                    let n = children.len();
                    let require = match fields.take("require") {
                        Some(Value::String(s)) if s == "any" => Some(Require::Any),
                        Some(Value::String(s)) if s == "all" => Some(Require::All),
                        Some(Value::Number(num)) => match num.as_i64() {
                            Some(r) if r >= 1 && (r as usize) <= n.max(1) => Some(Require::AtLeast(r as usize)),
                            Some(r) if r < 1 => {
                                fields.problem("require", format!("must be at least 1, got {r}"));
                                None
                            }
                            Some(r) => {
                                fields.problem(
                                    "require",
                                    format!("must be at most the number of triggers ({n}), got {r}"),
                                );
                                None
                            }
                            None => {
                                fields.problem("require", format!("must be a whole number, got {num}"));
                                None
                            }
                        },
                        Some(other) => {
                            let shown = other.to_string();
                            fields.problem(
                                "require",
                                format!("expected \"any\", \"all\" or a number from 1 to {n}, got {shown}"),
                            );
                            None
                        }
                        None => {
                            fields
                                .problems
                                .add(path, "a compound trigger needs `require` (\"any\", \"all\" or a number)");
                            None
                        }
                    };
                    Some(Trigger::Compound(CompoundTrigger {
                        triggers: children,
                        require: require.unwrap_or(Require::All),
                        within,
                    }))
                }
            }
            "metric" => {
                fields
                    .problem("type", "metric triggers are not supported; use \"event\", \"compound\" or \"sequence\"");
                None
            }
            other => {
                fields.problem("type", format!("expected \"event\", \"compound\" or \"sequence\", got \"{other}\""));
                None
            }
        };
        fields.finish();
        trigger
    }
}

fn event_fields(fields: &mut Fields<'_, '_>) -> EventTrigger {
    let match_resource = match fields.take("match") {
        None => ResourceSpec::default(),
        Some(v) => {
            let p = fields.path.key("match");
            resource_spec(v, &p, fields.problems)
        }
    };
    let match_related = match fields.take("match_related") {
        None => RelatedSpec::default(),
        Some(Value::Array(items)) => {
            let p = fields.path.key("match_related");
            RelatedSpec::Many(
                items.iter().enumerate().map(|(i, v)| resource_spec(v, &p.index(i), fields.problems)).collect(),
            )
        }
        Some(v) => {
            let p = fields.path.key("match_related");
            RelatedSpec::One(resource_spec(v, &p, fields.problems))
        }
    };
    let after = fields.string_set("after");
    let expect = fields.string_set("expect");
    let for_each = fields.string_set("for_each");
    let posture = match fields.take("posture") {
        None => Posture::Reactive,
        Some(Value::String(s)) if s == "Reactive" => Posture::Reactive,
        Some(Value::String(s)) if s == "Proactive" => Posture::Proactive,
        Some(Value::String(s)) if s == "Metric" => {
            fields.problem("posture", "metric triggers are not supported; use \"Reactive\" or \"Proactive\"");
            Posture::Reactive
        }
        Some(other) => {
            let shown = other.to_string();
            fields.problem("posture", format!("expected \"Reactive\" or \"Proactive\", got {shown}"));
            Posture::Reactive
        }
    };
    let threshold = match fields.take("threshold") {
        None => 1,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(t) if t >= 0 => t,
            Some(t) => {
                fields.problem("threshold", format!("must be zero or more, got {t}"));
                1
            }
            None => {
                fields.problem("threshold", format!("must be a whole number, got {n}"));
                1
            }
        },
        Some(other) => {
            let k = kind_of(other);
            fields.problem("threshold", format!("expected a whole number, got {k}"));
            1
        }
    };
    let within = match fields.seconds("within") {
        None => Span::ZERO,
        Some(Some(w)) => w,
        Some(None) => {
            if fields.object.get("within").is_some_and(Value::is_null) {
                fields.problem("within", "must be a number of seconds, not null");
            }
            Span::ZERO
        }
    };
    let within = if posture == Posture::Proactive {
        if within == Span::ZERO {
            PROACTIVE_MIN_WITHIN
        } else {
            if within < PROACTIVE_MIN_WITHIN {
                fields.problem(
                    "within",
                    format!("proactive triggers need `within` of at least 10 seconds, got {}", within.as_secs_f64()),
                );
            }
            within
        }
    } else {
        within
    };
    let filter = fields.opt_string("filter");
    EventTrigger { match_resource, match_related, after, expect, for_each, posture, threshold, within, filter }
}

fn resource_spec(value: &Value, path: &JsonPath, problems: &mut Problems) -> ResourceSpec {
    let Some(object) = value.as_object() else {
        problems.add(path, format!("expected an object of label patterns, got {}", kind_of(value)));
        return ResourceSpec::default();
    };
    let mut spec = IndexMap::with_capacity(object.len());
    for (label, v) in object {
        let values = match v {
            Value::String(s) => LabelValues::One(s.clone()),
            Value::Array(items) => {
                let mut patterns = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => patterns.push(s.clone()),
                        other => problems.add(
                            &path.key(label).index(i),
                            format!("expected a string pattern, got {}", kind_of(other)),
                        ),
                    }
                }
                LabelValues::Many(patterns)
            }
            other => {
                problems.add(
                    &path.key(label),
                    format!("expected a string pattern or a list of them, got {}", kind_of(other)),
                );
                continue;
            }
        };
        spec.insert(label.clone(), values);
    }
    ResourceSpec(spec)
}

impl<'de> Deserialize<'de> for TriggerDefinition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        TriggerDefinition::from_json(&value, &JsonPath::root()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(v: Value) -> Result<TriggerDefinition, Problems> {
        TriggerDefinition::from_json(&v, &JsonPath::root())
    }

    #[test]
    fn prefect_defaults_and_type_inference() {
        let d = one(json!({"id": "t", "trigger": {"expect": ["a"]}})).unwrap();
        assert_eq!(d.trigger, Trigger::Event(EventTrigger::new().expect("a")));
        let d = one(json!({"id": "t", "trigger": {"triggers": [{"expect": ["a"]}], "require": "any"}})).unwrap();
        assert!(matches!(d.trigger, Trigger::Compound(CompoundTrigger { require: Require::Any, within: None, .. })));
        let d = one(json!({"id": "t", "trigger": {"triggers": [{"expect": ["a"]}], "within": 5}})).unwrap();
        assert!(
            matches!(d.trigger, Trigger::Sequence(SequenceTrigger { within: Some(w), .. }) if w == Span::seconds(5))
        );
    }

    #[test]
    fn proactive_within_zero_becomes_ten_and_below_ten_is_rejected() {
        let d = one(json!({"id": "t", "trigger": {"posture": "Proactive", "within": 0}})).unwrap();
        let Trigger::Event(e) = d.trigger else { panic!() };
        assert_eq!(e.within, Span::seconds(10));
        let err = one(json!({"id": "t", "trigger": {"posture": "Proactive", "within": 5}})).unwrap_err();
        assert_eq!(err.0[0].path, "$.trigger.within");
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let err = one(json!({"id": "t", "bogus": 1, "trigger": {"type": "compound", "require": 3, "within": -1,
            "triggers": [{"expect": "a", "posture": "Sideways", "threshold": "x", "extra": true}]}}))
        .unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "$.bogus",
            "$.trigger.require",
            "$.trigger.within",
            "$.trigger.triggers[0].expect",
            "$.trigger.triggers[0].posture",
            "$.trigger.triggers[0].threshold",
            "$.trigger.triggers[0].extra",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
    }

    #[test]
    fn flat_deployment_trigger_form() {
        let d = one(json!({"name": "order", "enabled": true, "type": "event", "expect": ["order.complete"],
            "after": ["order.created"], "for_each": ["prefect.resource.id"], "posture": "Reactive",
            "threshold": 1, "within": 0, "parameters": {"user_id": "{{ event.resource.id }}"},
            "job_variables": null, "schedule_after": 0.0, "description": ""}))
        .unwrap();
        assert_eq!(d.id, "order");
        assert!(d.parameters.is_some());
        let Trigger::Event(e) = &d.trigger else { panic!() };
        assert_eq!(e.after, ["order.created"]);
        let err = one(json!({"name": "x", "expect": ["a"], "nonsense": 1})).unwrap_err();
        assert_eq!(err.0[0].path, "$.nonsense");
    }

    #[test]
    fn serialises_back_to_prefect_json() {
        let d = TriggerDefinition::new(
            "t",
            EventTrigger::new().expect("b").after("a").for_each("prefect.resource.id").within(60),
        );
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["trigger"]["type"], "event");
        assert_eq!(v["trigger"]["within"], 60.0);
        assert_eq!(one(v).unwrap(), d);
    }
}
