//! Child runs: a running flow asks for a run of another deployment (`ctx.spawn`), keyed by its
//! parent and a key, so that a retried parent finds the children it made before instead of
//! making new ones (Hatchet's child spawning, durable).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::problems::{JsonPath, Problems};
use super::run::MAX_WORKER_NAME_CHARS;

/// The most children one run may have (every attempt together).
pub const MAX_CHILDREN_PER_RUN: usize = 1_000;
/// The longest child key, in characters.
pub const MAX_CHILD_KEY_CHARS: usize = 256;

/// Where a child run comes from: its parent and the key the parent gave it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RunParent {
    /// The parent run's id.
    pub run: Uuid,
    /// The child's key among its parent's children (the spawn's position, `0`, `1`, ..., or
    /// the key the flow gave).
    pub key: String,
}

/// `POST /runs/{parent}/children`: the worker running `parent` asks for a child run. The same
/// `key` answers the same child, whatever the attempt: a parent that is retried re-runs its
/// code and finds the children it made before.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChildRequest {
    /// The worker holding the parent run (as in its heartbeats).
    #[schemars(length(min = 1, max = MAX_WORKER_NAME_CHARS), regex(pattern = r"\S"))]
    pub worker: String,
    /// The child's deployment.
    #[schemars(length(min = 1, max = 256), regex(pattern = r"\S"))]
    pub deployment: String,
    /// The child's key among the parent's children (1 to 256 characters).
    #[schemars(length(min = 1, max = MAX_CHILD_KEY_CHARS), regex(pattern = r"\S"))]
    pub key: String,
    /// Parameters over the deployment's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
}

impl ChildRequest {
    /// Checks the fields a schema cannot fully state.
    pub fn validate(&self) -> Result<(), Problems> {
        let root = JsonPath::root();
        let mut problems = Problems::default();
        for (field, text, max) in [
            ("worker", &self.worker, MAX_WORKER_NAME_CHARS),
            ("deployment", &self.deployment, 256),
            ("key", &self.key, MAX_CHILD_KEY_CHARS),
        ] {
            let chars = text.chars().count();
            if text.trim().is_empty() {
                problems.add(&root.key(field), "must not be empty");
            } else if chars > max {
                problems.add(&root.key(field), format!("is {chars} characters; at most {max}"));
            }
        }
        problems.into_result(())
    }

    /// The parameters as the run-creating code takes them.
    pub fn parameters_value(&self) -> Option<Value> {
        self.parameters.clone().map(Value::Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_long_fields_are_named() {
        let mut request = ChildRequest {
            worker: " ".into(),
            deployment: "child".into(),
            key: "k".repeat(MAX_CHILD_KEY_CHARS + 1),
            parameters: None,
        };
        let problems = request.validate().unwrap_err().to_string();
        assert!(problems.contains("$.worker: must not be empty"), "{problems}");
        assert!(problems.contains("$.key: is 257 characters; at most 256"), "{problems}");
        request.worker = "w".into();
        request.key = "0".into();
        assert!(request.validate().is_ok());
    }
}
