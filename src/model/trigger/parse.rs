//! Reading trigger definitions from JSON, hand-written over `serde_json::Value` so that every
//! problem in a document is reported at once, each with the JSON path of the field at fault.

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::{
    CompoundTrigger, EventTrigger, LabelValues, Posture, RelatedSpec, Require, ResourceSpec, SequenceTrigger, Trigger,
    TriggerDefinition, PROACTIVE_MIN_WITHIN,
};
use crate::model::fields::{integral, object_of, Fields};
use crate::model::limits;
use crate::model::problems::{kind_of, JsonPath, Problems};
use crate::model::time::Span;

impl TriggerDefinition {
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
                problems.add_rule(
                    &root.index(*i).key("id"),
                    format!("duplicate id `{}` (also used by definition {first})", d.id),
                );
            }
        }
        (defs, problems)
    }

    /// Holds a definition built in Rust to the rules of the JSON format, by reading its JSON
    /// back: what is accepted is what will be read back from the log and snapshots. Returns
    /// it as the JSON reading gives it (a proactive `within` of 0 becomes 10 seconds), or every
    /// problem, at JSON paths under `path` (e.g. `$.trigger.within` for `.within(Duration::MAX)`).
    pub fn checked(&self, path: &JsonPath) -> Result<TriggerDefinition, Problems> {
        match serde_json::to_value(self) {
            Ok(value) => TriggerDefinition::from_json(&value, path),
            Err(e) => {
                let mut problems = Problems::default();
                problems.add(path, format!("cannot be written as JSON: {e}"));
                Err(problems)
            }
        }
    }

    /// Reads one definition: `{"id", "name"?, "enabled"?, "trigger": {...}, "deployment"?,
    /// "parameters"?}`, or Prefect's flat deployment-trigger form where the trigger's fields
    /// sit beside `name` and `parameters`.
    ///
    /// Every problem is reported at once, each at the JSON path of the field at fault:
    ///
    /// ```
    /// use serde_json::json;
    /// use tripwire::model::{JsonPath, Trigger, TriggerDefinition};
    ///
    /// let json = json!({
    ///     "id": "order-complete",
    ///     "deployment": "post-order-complete",
    ///     "trigger": {"after": ["order.created"], "expect": ["order.complete"], "within": 60},
    ///     "parameters": {"user_id": "{{ event.resource.id }}"}
    /// });
    /// let definition = TriggerDefinition::from_json(&json, &JsonPath::root()).expect("a valid definition");
    /// assert_eq!(definition.deployment.as_deref(), Some("post-order-complete"));
    /// let Trigger::Event(trigger) = &definition.trigger else { panic!("an event trigger") };
    /// assert_eq!(trigger.after, ["order.created"]);
    ///
    /// let bad = json!({"id": "t", "trigger": {"expect": "order.complete", "within": -1}});
    /// let problems = TriggerDefinition::from_json(&bad, &JsonPath::root()).unwrap_err();
    /// assert_eq!(
    ///     problems.to_string(),
    ///     "$.trigger.expect: expected an array of strings, got a string; \
    ///      $.trigger.within: must be zero or more seconds, got -1"
    /// );
    /// ```
    pub fn from_json(value: &Value, path: &JsonPath) -> Result<TriggerDefinition, Problems> {
        let mut problems = Problems::default();
        let Some(object) = object_of(value, path, &mut problems, "a trigger definition must be a JSON object") else {
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
                    fields.problem_here("the `id` field is required (or a `name` to use as id)");
                    String::new()
                }
            },
        };
        let enabled = fields.opt_bool("enabled").unwrap_or(true);
        let deployment = fields.opt_string("deployment");
        let parameters =
            fields.opt_limited_object("parameters", limits::MAX_PARAMETERS_BYTES).map(|m| Value::Object(m.clone()));
        let trigger = if let Some(inner) = fields.take("trigger") {
            let p = fields.at("trigger");
            let t = Trigger::from_json(inner, &p, fields.problems);
            fields.finish();
            t
        } else if !super::FLAT_FORM_MARKS.iter().any(|k| object.contains_key(*k)) {
            // Without a trigger the definition would match every event, its own runs' events
            // included: a cascade of runs from one event.
            fields.problem_here(
                "the `trigger` field is required: an object such as {\"expect\": [\"order.created\"]} \
                 (or Prefect's flat form with the trigger's fields beside `id`)",
            );
            None
        } else {
            // Prefect's flat DeploymentTrigger form: these fields belong to the deployment
            // trigger and have no effect here.
            for &ignored in super::IGNORED_DEPLOYMENT_TRIGGER_FIELDS {
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

impl Trigger {
    /// Reads a trigger (`event`, `compound` or `sequence`), reporting problems into `problems`.
    /// When `type` is missing, `triggers` + `require` means compound, `triggers` alone
    /// sequence, anything else event (as Prefect decides).
    pub fn from_json(value: &Value, path: &JsonPath, problems: &mut Problems) -> Option<Trigger> {
        let object = object_of(value, path, problems, "a trigger must be a JSON object")?;
        Trigger::from_fields(object.clone(), path, problems)
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
                fields.expected("type", "\"event\", \"compound\" or \"sequence\"", other);
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
                        let p = fields.at("triggers");
                        items
                            .iter()
                            .enumerate()
                            .filter_map(|(i, v)| Trigger::from_json(v, &p.index(i), fields.problems))
                            .collect()
                    }
                    Some(other) => {
                        fields.expected("triggers", "an array of triggers", other);
                        Vec::new()
                    }
                    None => {
                        fields.problem_here(format!("a {kind} trigger needs `triggers`"));
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
                        Some(Value::Number(num)) => match integral(num) {
                            Some(r) if r >= 1 && (r as usize) <= n.max(1) => Some(Require::AtLeast(r as usize)),
                            Some(r) if r < 1 => {
                                fields.problem("require", format!("must be at least 1, got {r}"));
                                None
                            }
                            Some(r) => {
                                fields
                                    .rule("require", format!("must be at most the number of triggers ({n}), got {r}"));
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
                            fields.problem_here("a compound trigger needs `require` (\"any\", \"all\" or a number)");
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
            let p = fields.at("match");
            resource_spec(v, &p, fields.problems)
        }
    };
    let match_related = match fields.take("match_related") {
        None => RelatedSpec::default(),
        Some(Value::Array(items)) => {
            let p = fields.at("match_related");
            RelatedSpec::Many(
                items.iter().enumerate().map(|(i, v)| resource_spec(v, &p.index(i), fields.problems)).collect(),
            )
        }
        Some(v) => {
            let p = fields.at("match_related");
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
        Some(Value::Number(n)) => match integral(n) {
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
            fields.expected("threshold", "a whole number", other);
            1
        }
    };
    // A window of a few nanoseconds rounds to zero; a proactive trigger still refuses it
    // (it asked for a window under 10 seconds), as its schema says.
    let asked_for_some = fields.object.get("within").is_some_and(|w| match w {
        Value::Number(n) => n.as_f64().is_some_and(|f| f > 0.0),
        Value::String(s) => s.trim().parse::<f64>().is_ok_and(|f| f > 0.0),
        _ => false,
    });
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
        if within == Span::ZERO && !asked_for_some {
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
    let Some(mut fields) = Fields::open(value, path, problems, "expected an object of label patterns") else {
        return ResourceSpec::default();
    };
    let object = fields.object;
    let mut spec = IndexMap::with_capacity(object.len());
    for (label, v) in object {
        let values = match v {
            Value::String(s) => LabelValues::One(s.clone()),
            Value::Array(items) => {
                let mut patterns = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => patterns.push(s.clone()),
                        other => fields.expected_at(&path.key(label).index(i), "a string pattern", other),
                    }
                }
                LabelValues::Many(patterns)
            }
            other => {
                fields.expected(label, "a string pattern or a list of them", other);
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
    use std::time::Duration;

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
            EventTrigger::new().expect("b").after("a").for_each("prefect.resource.id").within(Duration::from_secs(60)),
        );
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["trigger"]["type"], "event");
        assert_eq!(v["trigger"]["within"], 60.0);
        assert_eq!(one(v).unwrap(), d);
    }
}
