//! The JSON Schema of trigger definitions, written by hand where the derived one cannot say
//! what the parser accepts (Prefect's type inference, seconds as numbers or strings).

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value};

use super::{CompoundTrigger, EventTrigger, Require, SequenceTrigger, Trigger, PROACTIVE_MIN_WITHIN};
use crate::model::time::Span;

/// Seconds written as text: digits with an optional fraction (at most 999,999,999 seconds in
/// this form, well under the limit; the parser also reads exponents, which the schema leaves
/// out so that every string it admits is in range).
const SECONDS_TEXT: &str = r"^[ \t\n\r]*\+?([0-9]{1,9}(\.[0-9]*)?|\.[0-9]+)[ \t\n\r]*$";

/// A proactive trigger's window as text: zero, or 10 seconds and more.
const PROACTIVE_SECONDS_TEXT: &str = r"^[ \t\n\r]*\+?(0+(\.0*)?|\.0+|0*[1-9][0-9]{1,8}(\.[0-9]*)?)[ \t\n\r]*$";

/// The JSON of a span of time: seconds, as a number or (as Prefect also accepts) a number in
/// a string.
pub(super) struct Seconds;

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
            "pattern": SECONDS_TEXT
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

pub(super) fn event_trigger_schema(schema: &mut Schema) {
    add_trigger_members(schema, "event");
    schema.insert(
        "if".into(),
        serde_json::json!({"properties": {"posture": {"const": "Proactive"}}, "required": ["posture"]}),
    );
    schema.insert(
        "then".into(),
        serde_json::json!({"properties": {"within": {
            "description": "A proactive trigger's window is at least 10 seconds; 0 means 10.",
            "anyOf": [
                {"type": "number", "maximum": 0},
                {"type": "number", "minimum": PROACTIVE_MIN_WITHIN.as_secs_f64()},
                {"type": "string", "pattern": PROACTIVE_SECONDS_TEXT}
            ]
        }}}),
    );
}

pub(super) fn compound_trigger_schema(schema: &mut Schema) {
    add_trigger_members(schema, "compound");
}

pub(super) fn sequence_trigger_schema(schema: &mut Schema) {
    add_trigger_members(schema, "sequence");
}

/// `id` may be left out when `name` is given (and is not empty).
pub(super) fn definition_schema(schema: &mut Schema) {
    schema.insert(
        "anyOf".into(),
        serde_json::json!([
            {"required": ["id"], "properties": {"id": {"type": "string"}}},
            {"required": ["name"], "properties": {"name": {"type": "string", "minLength": 1}}}
        ]),
    );
}

/// Prefect's flat deployment-trigger form, which the parser reads beside the nested one: the
/// trigger's own members beside the definition's (`id`, `name`, `parameters`, ...), no
/// `trigger` member. The root schema becomes `anyOf` the nested form and one flat form per
/// trigger kind, each as strict as the parser.
pub(crate) fn with_flat_form(mut root: Value) -> Value {
    let defs = root.get("$defs").cloned().unwrap_or_default();
    let Some(members) = root.as_object_mut() else { return root };
    let mut nested = Map::new();
    for key in ["type", "additionalProperties", "properties", "required"] {
        if let Some(v) = members.remove(key) {
            nested.insert(key.to_owned(), v);
        }
    }
    let id_or_name = members.remove("anyOf").unwrap_or(Value::Array(Vec::new()));
    nested.insert("anyOf".into(), id_or_name.clone());
    let mut definition = nested.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
    definition.remove("trigger");
    for &ignored in super::IGNORED_DEPLOYMENT_TRIGGER_FIELDS {
        definition.insert(
            ignored.to_owned(),
            serde_json::json!({"description": "Prefect's deployment-trigger field: accepted and ignored."}),
        );
    }
    let mut branches = vec![Value::Object(nested)];
    for kind in ["EventTrigger", "CompoundTrigger", "SequenceTrigger"] {
        let Some(trigger) = defs.get(kind).and_then(Value::as_object) else { continue };
        let mut properties = trigger.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
        // The definition's `id` (and the rest) win over the trigger's ignored `id`.
        properties.extend(definition.clone());
        let mut branch = Map::new();
        branch.insert("type".into(), "object".into());
        branch.insert("additionalProperties".into(), false.into());
        branch.insert("properties".into(), Value::Object(properties.clone()));
        let mut all_of = vec![serde_json::json!({"anyOf": id_or_name})];
        match trigger.get("required") {
            Some(required) => {
                branch.insert("required".into(), required.clone());
            }
            None => {
                // An event trigger has no required member: one of its own marks the form.
                let marks: Vec<Value> = super::FLAT_FORM_MARKS
                    .iter()
                    .filter(|m| properties.contains_key(**m))
                    .map(|m| serde_json::json!({"required": [m]}))
                    .collect();
                all_of.push(serde_json::json!({"anyOf": marks}));
            }
        }
        for key in ["if", "then"] {
            if let Some(v) = trigger.get(key) {
                branch.insert(key.to_owned(), v.clone());
            }
        }
        branch.insert("allOf".into(), Value::Array(all_of));
        branches.push(Value::Object(branch));
    }
    let defs = members.remove("$defs");
    members.insert("anyOf".into(), Value::Array(branches));
    if let Some(defs) = defs {
        members.insert("$defs".into(), defs);
    }
    root
}
