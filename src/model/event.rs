//! Events in Prefect's wire format, and the resources they concern.

use std::borrow::Cow;

use indexmap::IndexMap;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::fields::{object_of, Fields};
use super::limits;
use super::problems::{kind_of, JsonPath, Problems};
use super::time::Timestamp;

/// The label every resource must carry.
pub const RESOURCE_ID: &str = "prefect.resource.id";
/// The label naming a resource for people.
pub const RESOURCE_NAME: &str = "prefect.resource.name";
/// The label every related resource must carry.
pub const RESOURCE_ROLE: &str = "prefect.resource.role";

/// A resource: a set of string labels, one of which is `prefect.resource.id`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Resource(IndexMap<String, String>);

impl Resource {
    /// A resource with just an id.
    pub fn new(id: impl Into<String>) -> Resource {
        let mut labels = IndexMap::new();
        labels.insert(RESOURCE_ID.to_owned(), id.into());
        Resource(labels)
    }

    /// Adds or replaces a label.
    pub fn with(mut self, label: impl Into<String>, value: impl Into<String>) -> Resource {
        self.0.insert(label.into(), value.into());
        self
    }

    /// The value of `label`, if present.
    pub fn get(&self, label: &str) -> Option<&str> {
        self.0.get(label).map(String::as_str)
    }

    /// The `prefect.resource.id` label (empty only for an unvalidated resource).
    pub fn id(&self) -> &str {
        self.get(RESOURCE_ID).unwrap_or("")
    }

    /// The `prefect.resource.name` label.
    pub fn name(&self) -> Option<&str> {
        self.get(RESOURCE_NAME)
    }

    /// The `prefect.resource.role` label of a related resource.
    pub fn role(&self) -> Option<&str> {
        self.get(RESOURCE_ROLE)
    }

    /// All labels, in the order given.
    pub fn labels(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the resource has no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn from_json(value: &Value, path: &JsonPath, role_required: bool, problems: &mut Problems) -> Resource {
        let Some(mut fields) = Fields::open(value, path, problems, "expected an object of string labels") else {
            return Resource::default();
        };
        let object = fields.object;
        if object.len() > limits::LABELS_PER_RESOURCE {
            fields.problem_here(format!(
                "has {} labels; at most {} are allowed",
                object.len(),
                limits::LABELS_PER_RESOURCE
            ));
        }
        let mut labels = IndexMap::with_capacity(object.len());
        for (label, v) in object {
            match v {
                Value::String(s) => {
                    labels.insert(label.clone(), s.clone());
                }
                other => fields.problem(label, format!("label values must be strings, got {}", kind_of(other))),
            }
        }
        let required: &[&str] = if role_required { &[RESOURCE_ID, RESOURCE_ROLE] } else { &[RESOURCE_ID] };
        for label in required {
            match labels.get(*label) {
                None if object.contains_key(*label) => {}
                None => fields.problem_here(format!("the `{label}` label is required")),
                Some(v) if v.is_empty() => fields.problem(label, "must not be empty"),
                Some(_) => {}
            }
        }
        Resource(labels)
    }
}

/// The JSON Schema of a resource's labels; `role_required` for a related resource.
fn resource_schema(role_required: bool) -> Schema {
    let mut schema = json_schema!({
        "description": "A resource: an object of string labels, one of which is `prefect.resource.id`.",
        "type": "object",
        "properties": {
            RESOURCE_ID: {
                "description": "The resource's id, e.g. `prefect.flow-run.1234`.",
                "type": "string",
                "minLength": 1
            }
        },
        "required": [RESOURCE_ID],
        "additionalProperties": { "type": "string" },
        "maxProperties": limits::LABELS_PER_RESOURCE
    });
    if role_required {
        schema.insert(
            "description".into(),
            "A related resource: like a resource, and with a `prefect.resource.role` label too.".into(),
        );
        if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
            properties.insert(
                RESOURCE_ROLE.into(),
                serde_json::json!({
                    "description": "How the resource takes part in the event, e.g. `flow` or `tag`.",
                    "type": "string",
                    "minLength": 1
                }),
            );
        }
        schema.insert("required".into(), serde_json::json!([RESOURCE_ID, RESOURCE_ROLE]));
    }
    schema
}

impl JsonSchema for Resource {
    fn schema_name() -> Cow<'static, str> {
        "Resource".into()
    }

    fn schema_id() -> Cow<'static, str> {
        concat!(module_path!(), "::Resource").into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        resource_schema(false)
    }
}

/// The schema of an item of `related` (a [`Resource`] that must have a role).
struct RelatedResource;

impl JsonSchema for RelatedResource {
    fn schema_name() -> Cow<'static, str> {
        "RelatedResource".into()
    }

    fn schema_id() -> Cow<'static, str> {
        concat!(module_path!(), "::RelatedResource").into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        resource_schema(true)
    }
}

impl FromIterator<(String, String)> for Resource {
    fn from_iter<T: IntoIterator<Item = (String, String)>>(iter: T) -> Self {
        Resource(iter.into_iter().collect())
    }
}

/// Something that happened to a resource, as Prefect's `ReceivedEvent` describes it.
///
/// Its JSON Schema describes the form events are sent in: `id` and `occurred` may be left
/// out (or null), and the receiver fills them in; any other field is refused.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Event {
    /// Client-provided identifier; events are deduplicated by it.
    /// When absent, the receiver assigns a new one.
    #[schemars(with = "Option<Uuid>")]
    pub id: Uuid,
    /// When it happened, by the producer's clock.
    /// When absent, the receiver's clock ("now"; in a replay, the previous event's time).
    #[schemars(with = "Option<Timestamp>")]
    pub occurred: Timestamp,
    /// Its name, e.g. `order.created`.
    #[schemars(length(min = 1, max = limits::EVENT_NAME_LENGTH))]
    pub event: String,
    /// The resource it concerns.
    pub resource: Resource,
    /// Other resources involved, each with a `prefect.resource.role`.
    #[schemars(with = "Option<Vec<RelatedResource>>", length(max = limits::RELATED_RESOURCES))]
    pub related: Vec<Resource>,
    /// Free-form data.
    #[schemars(with = "Option<Map<String, Value>>")]
    pub payload: Map<String, Value>,
    /// An event that must be processed before this one.
    pub follows: Option<Uuid>,
    /// When the server received it (absent until then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received: Option<Timestamp>,
    /// tripwire's extension, Hatchet's push `scope`: an event with a scope runs a deployment's
    /// single-key triggers only through that deployment's filters for the scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub scope: Option<String>,
    /// tripwire's extension, Hatchet's `additional_metadata`: free-form data that filters read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_metadata: Option<Map<String, Value>>,
}

/// What to fill in for fields an incoming event may leave out.
pub struct EventDefaults<'a> {
    /// `occurred` when absent (the receiving clock's "now").
    pub occurred: Timestamp,
    /// Produces `id` when absent.
    pub new_id: &'a mut dyn FnMut() -> Uuid,
}

impl Event {
    /// A minimal valid event, for tests, examples and builders.
    pub fn new(id: Uuid, occurred: Timestamp, name: impl Into<String>, resource: Resource) -> Event {
        Event {
            id,
            occurred,
            event: name.into(),
            resource,
            related: Vec::new(),
            payload: Map::new(),
            follows: None,
            received: None,
            scope: None,
            additional_metadata: None,
        }
    }

    /// Reads and validates one event in Prefect's JSON format, reporting every problem with
    /// its path. With `defaults` (an event a client sends) it is also held to
    /// [`limits::MAX_EVENT_BYTES`] and [`limits::MAX_JSON_DEPTH`]; without (a stored or
    /// exported event), `id` and `occurred` are required.
    pub fn from_json(value: &Value, path: &JsonPath, defaults: Option<EventDefaults<'_>>) -> Result<Event, Problems> {
        let mut problems = Problems::default();
        let Some(object) = object_of(value, path, &mut problems, "an event must be a JSON object") else {
            return Err(problems);
        };
        if defaults.is_some() {
            // An incoming event is held to the size and depth limits; stored ones (read
            // without defaults) are read as they are, including the run-state events the
            // server builds around limited parameters and outputs.
            limits::check_json(value, path, limits::MAX_EVENT_BYTES, &mut problems);
            if !problems.is_empty() {
                return Err(problems);
            }
        }
        let mut defaults = defaults;
        let mut fields = Fields::new(object, path, &mut problems);
        let id = if fields.is_set("id") {
            fields.opt_uuid("id", "a UUID string").unwrap_or(Uuid::nil())
        } else {
            fields.take("id"); // `null` is "not given", not an unknown field
            match defaults.as_mut() {
                Some(d) => (d.new_id)(),
                None => {
                    fields.problem_here("the `id` field is required");
                    Uuid::nil()
                }
            }
        };
        let occurred = match fields.take_set("occurred") {
            Some(Value::String(s)) => match Timestamp::parse(s) {
                Ok(t) if t > Timestamp::LATEST_OCCURRED => {
                    fields.problem(
                        "occurred",
                        format!(
                            "`{s}` is too late: events may occur up to {} (windows after them must end by year 9999)",
                            Timestamp::LATEST_OCCURRED
                        ),
                    );
                    Timestamp::default()
                }
                Ok(t) => t,
                Err(e) => {
                    fields.problem("occurred", e);
                    Timestamp::default()
                }
            },
            Some(other) => {
                fields.expected("occurred", "an RFC 3339 string", other);
                Timestamp::default()
            }
            None => match defaults.as_ref() {
                Some(d) => d.occurred,
                None => {
                    fields.problem_here("the `occurred` field is required");
                    Timestamp::default()
                }
            },
        };
        let event = match fields.text("event", "the `event` field (the event's name) is required", "a string") {
            Some("") => {
                fields.problem("event", "the event name must not be empty");
                String::new()
            }
            Some(s) if s.chars().count() > limits::EVENT_NAME_LENGTH => {
                fields.problem("event", format!("event names are at most {} characters", limits::EVENT_NAME_LENGTH));
                String::new()
            }
            Some(s) => s.to_owned(),
            None => String::new(),
        };
        let resource = match fields
            .required("resource", "the `resource` field is required (an object with a `prefect.resource.id` label)")
        {
            Some(v) => {
                let p = fields.at("resource");
                Resource::from_json(v, &p, false, fields.problems)
            }
            None => Resource::default(),
        };
        let related = match fields.opt_array("related", "an array of resources") {
            Some(items) => {
                let rpath = fields.at("related");
                if items.len() > limits::RELATED_RESOURCES {
                    fields.problem(
                        "related",
                        format!(
                            "has {} related resources; at most {} are allowed",
                            items.len(),
                            limits::RELATED_RESOURCES
                        ),
                    );
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Resource::from_json(v, &rpath.index(i), true, fields.problems))
                    .collect()
            }
            None => Vec::new(),
        };
        let payload = fields.opt_object("payload").cloned().unwrap_or_default();
        let follows = fields.opt_uuid("follows", "a UUID string or null");
        let received = fields.opt_timestamp("received");
        let scope = match fields.take_set("scope") {
            None => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(other) => {
                fields.expected("scope", "a non-empty string", other);
                None
            }
        };
        let additional_metadata = fields.opt_object("additional_metadata").cloned();
        if defaults.is_some() {
            // A misspelt field (`occured`) would otherwise be dropped and its value lost.
            fields.finish_saying(
                "unknown field: an event has `id`, `occurred`, `event`, `resource`, `related`, `payload`, \
                 `follows`, `received`, `scope` and `additional_metadata`",
            );
        }
        problems.into_result(Event {
            id,
            occurred,
            event,
            resource,
            related,
            payload,
            follows,
            received,
            scope,
            additional_metadata,
        })
    }

    /// The value of a `for_each` label: a label of the primary resource, or
    /// `related:<role>:<label>` for the first related resource in that role (Prefect's
    /// `Event.find_resource_label`).
    pub fn find_resource_label(&self, label: &str) -> Option<&str> {
        if let Some((directive, related_label)) = label.rsplit_once(':') {
            let (kind, role) = directive.split_once(':').unwrap_or((directive, ""));
            if kind == "related" {
                if let Some(related) = self.related.iter().find(|r| r.role() == Some(role)) {
                    return related.get(related_label);
                }
            }
        }
        self.resource.get(label)
    }
}

impl<'de> Deserialize<'de> for Event {
    /// Strict: `id` and `occurred` must be present (stored and exported events always have them).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Event::from_json(&value, &JsonPath::root(), None).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Event, Problems> {
        let mut n = 0u128;
        let mut ids = || {
            n += 1;
            Uuid::from_u128(n)
        };
        Event::from_json(
            &v,
            &JsonPath::root(),
            Some(EventDefaults { occurred: Timestamp::from_micros(7), new_id: &mut ids }),
        )
    }

    #[test]
    fn fills_defaults_and_keeps_order_of_labels() {
        let e = parse(json!({"event": "a", "resource": {"prefect.resource.id": "x", "b": "1", "a": "2"}})).unwrap();
        assert_eq!(e.id, Uuid::from_u128(1));
        assert_eq!(e.occurred, Timestamp::from_micros(7));
        assert_eq!(e.resource.labels().map(|(k, _)| k).collect::<Vec<_>>(), ["prefect.resource.id", "b", "a"]);
    }

    #[test]
    fn a_misspelt_field_is_refused_instead_of_dropped() {
        let err = parse(json!({"event": "a", "resource": {"prefect.resource.id": "x"},
                               "occured": "2020-01-01T00:00:00Z", "payload": {}, "follows": null}))
        .unwrap_err()
        .to_string();
        assert!(err.contains("$.occured: unknown field") && err.contains("`occurred`"), "{err}");
        // Prefect's own fields and tripwire's extensions are all known.
        let known = json!({"id": "00000000-0000-0000-0000-000000000001", "occurred": "2020-01-01T00:00:00Z",
                           "event": "a", "resource": {"prefect.resource.id": "x"}, "related": [], "payload": {},
                           "follows": null, "received": "2020-01-01T00:00:01Z", "scope": "s",
                           "additional_metadata": {}});
        assert!(parse(known).is_ok());
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let err = parse(json!({"id": "nope", "event": 3, "resource": {"team": 1},
                               "related": [{"prefect.resource.id": "r"}], "payload": []}))
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "$.id",
            "$.event",
            "$.resource.team",
            "`prefect.resource.id` label is required",
            "$.related[0]: the `prefect.resource.role`",
            "$.payload",
        ] {
            assert!(text.contains(needle), "{needle} not in {text}");
        }
    }

    #[test]
    fn strict_parsing_requires_id_and_occurred() {
        let err = serde_json::from_value::<Event>(json!({"event": "a", "resource": {"prefect.resource.id": "x"}}))
            .unwrap_err();
        assert!(err.to_string().contains("`id` field is required"));
    }

    #[test]
    fn related_labels_read_the_first_resource_in_the_role() {
        let mut e = Event::new(
            Uuid::nil(),
            Timestamp::default(),
            "a",
            Resource::new("x").with("related:flow:weird", "primary"),
        );
        e.related = vec![
            Resource::new("f1").with(RESOURCE_ROLE, "flow"),
            Resource::new("f2").with(RESOURCE_ROLE, "flow").with("tag", "t"),
        ];
        assert_eq!(e.find_resource_label("related:flow:prefect.resource.id"), Some("f1"));
        assert_eq!(e.find_resource_label("related:flow:tag"), None);
        assert_eq!(e.find_resource_label("related:task:prefect.resource.id"), None);
        assert_eq!(e.find_resource_label("related:nobody:x"), None);
        let mut lone = e.clone();
        lone.related.clear();
        assert_eq!(lone.find_resource_label("related:flow:weird"), Some("primary"));
    }
}
