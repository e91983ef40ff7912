//! Hatchet-style scope filters: an event pushed with a `scope` runs a deployment's single-key
//! triggers once per filter of that deployment and scope whose expression matches.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::fields::Fields;
use super::limits::MAX_PARAMETERS_BYTES;
use super::problems::{JsonPath, Problems};
use super::time::Timestamp;

/// A filter: positive (it lets matching events through), as Hatchet's are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScopeFilter {
    /// Assigned by the server.
    pub id: Uuid,
    /// The deployment whose single-key triggers it gates.
    pub deployment: String,
    /// The event scope it applies to.
    pub scope: String,
    /// A Jinja expression over `input` (the event's payload), `payload` (this filter's
    /// payload), `additional_metadata`, `event_key` (the event's name) and `event`.
    pub expression: String,
    /// Data for the expression and for the run's parameters (`filter` in templates).
    #[serde(default)]
    pub payload: Map<String, Value>,
    /// When it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Timestamp>,
}

impl ScopeFilter {
    /// Reads a filter from `{"deployment", "scope", "expression", "payload"?}`, reporting every
    /// problem with its path; `id` is the id to give it.
    pub fn from_json(value: &Value, path: &JsonPath, id: Uuid) -> Result<ScopeFilter, Problems> {
        let mut problems = Problems::default();
        let Some(mut fields) = Fields::open(value, path, &mut problems, "a filter must be a JSON object") else {
            return Err(problems);
        };
        fields.only(&["deployment", "scope", "expression", "payload"], "unknown field");
        let mut text = |field: &str| {
            fields.non_blank(field, &format!("the `{field}` field is required"), "a string").unwrap_or_default()
        };
        let deployment = text("deployment");
        let scope = text("scope");
        let expression = text("expression");
        // Rendered into run parameters (`{{ filter.bonus }}`): held to their limits.
        let payload = fields.opt_limited_object("payload", MAX_PARAMETERS_BYTES).cloned().unwrap_or_default();
        problems.into_result(ScopeFilter { id, deployment, scope, expression, payload, created: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_problem_is_named() {
        let err = ScopeFilter::from_json(
            &json!({"scope": "", "expression": 3, "payload": [], "x": 1}),
            &JsonPath::root(),
            Uuid::nil(),
        )
        .unwrap_err();
        let text = err.to_string();
        for want in [
            "$.x: unknown field",
            "`deployment` field is required",
            "$.scope: must not be empty",
            "$.expression: expected a string",
            "$.payload",
        ] {
            assert!(text.contains(want), "{want} not in {text}");
        }
    }

    #[test]
    fn payloads_are_held_to_the_parameter_limits() {
        let filter = |payload: Value| {
            ScopeFilter::from_json(
                &json!({"deployment": "d", "scope": "s", "expression": "true", "payload": payload}),
                &JsonPath::root(),
                Uuid::nil(),
            )
        };
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!([deep]);
        }
        let err = filter(json!({"p": deep})).unwrap_err().to_string();
        assert!(err.contains("$.payload") && err.contains("deep"), "{err}");
        let err = filter(json!({"p": "x".repeat(300_000)})).unwrap_err().to_string();
        assert!(err.contains("$.payload") && err.contains("bytes"), "{err}");
        assert!(filter(json!({"bonus": 5})).is_ok());
    }
}
