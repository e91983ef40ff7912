//! The JSON Schema of trigger definitions, written by hand where the derived one cannot say
//! what the parser accepts (Prefect's type inference, seconds as numbers or strings).

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value};

use super::{CompoundTrigger, EventTrigger, Require, SequenceTrigger, Trigger, PROACTIVE_MIN_WITHIN};
use crate::model::time::Span;

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
            "anyOf": [{"const": 0}, {"minimum": PROACTIVE_MIN_WITHIN.as_secs_f64()}]
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
