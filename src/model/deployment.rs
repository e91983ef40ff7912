//! Deployments (served flows) and their runs.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::problems::{kind_of, JsonPath, Problems};
use super::time::Timestamp;

/// A deployment: a named flow that runs are created for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Deployment {
    /// Unique name, e.g. `post-order-complete`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.:-]+$"))]
    pub name: String,
    /// A description for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Default parameters; a run's parameters are merged over them.
    #[serde(default)]
    #[schemars(with = "Option<Map<String, Value>>")]
    pub parameters: Map<String, Value>,
    /// Retries after a failed attempt.
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(max = 1000))]
    pub retries: u32,
    /// Execution timeout in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub timeout_seconds: Option<f64>,
    /// Runs of this deployment that may run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub concurrency_limit: Option<u32>,
    /// When it was first created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("readOnly" = true))]
    pub created: Option<Timestamp>,
    /// When it was last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("readOnly" = true))]
    pub updated: Option<Timestamp>,
}

impl Deployment {
    /// A deployment with defaults.
    pub fn new(name: impl Into<String>) -> Deployment {
        Deployment {
            name: name.into(),
            description: None,
            parameters: Map::new(),
            retries: 0,
            timeout_seconds: None,
            concurrency_limit: None,
            created: None,
            updated: None,
        }
    }

    /// Reads a deployment, reporting every problem with its path. `name` may come from the
    /// URL instead of the body (`name_from_path`).
    pub fn from_json(value: &Value, path: &JsonPath, name_from_path: Option<&str>) -> Result<Deployment, Problems> {
        let mut problems = Problems::default();
        let Some(object) = value.as_object() else {
            problems.add(path, format!("a deployment must be a JSON object, got {}", kind_of(value)));
            return Err(problems);
        };
        let known = [
            "name",
            "description",
            "parameters",
            "retries",
            "timeout_seconds",
            "concurrency_limit",
            "created",
            "updated",
        ];
        for key in object.keys() {
            if !known.contains(&key.as_str()) {
                problems.add(&path.key(key), "unknown field");
            }
        }
        let name = match (object.get("name"), name_from_path) {
            (Some(Value::String(n)), Some(p)) if n != p => {
                problems.add(&path.key("name"), format!("`{n}` differs from the name in the URL, `{p}`"));
                n.clone()
            }
            (Some(Value::String(n)), _) => n.clone(),
            (None, Some(p)) => p.to_owned(),
            (None, None) => {
                problems.add(path, "the `name` field is required");
                String::new()
            }
            (Some(other), _) => {
                problems.add(&path.key("name"), format!("expected a string, got {}", kind_of(other)));
                String::new()
            }
        };
        if name.is_empty() && problems.is_empty() {
            problems.add(&path.key("name"), "must not be empty");
        } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
            problems.add(&path.key("name"), "may only contain letters, digits, `-`, `_`, `.` and `:`");
        }
        let description = match object.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                problems.add(&path.key("description"), format!("expected a string, got {}", kind_of(other)));
                None
            }
        };
        let parameters = match object.get("parameters") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => {
                problems.add(&path.key("parameters"), format!("expected an object, got {}", kind_of(other)));
                Map::new()
            }
        };
        let retries = match object.get("retries") {
            None | Some(Value::Null) => 0,
            Some(v) => match v.as_u64() {
                Some(n) if n <= 1000 => n as u32,
                _ => {
                    problems.add(&path.key("retries"), format!("expected a whole number from 0 to 1000, got {v}"));
                    0
                }
            },
        };
        let timeout_seconds = match object.get("timeout_seconds") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_f64() {
                Some(s) if s > 0.0 => Some(s),
                _ => {
                    problems
                        .add(&path.key("timeout_seconds"), format!("expected a positive number of seconds, got {v}"));
                    None
                }
            },
        };
        let concurrency_limit = match object.get("concurrency_limit") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if (1..=u32::MAX as u64).contains(&n) => Some(n as u32),
                _ => {
                    problems
                        .add(&path.key("concurrency_limit"), format!("expected a whole number of at least 1, got {v}"));
                    None
                }
            },
        };
        problems.into_result(Deployment {
            name,
            description,
            parameters,
            retries,
            timeout_seconds,
            concurrency_limit,
            created: None,
            updated: None,
        })
    }
}

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RunState {
    /// Waiting for a worker.
    Scheduled,
    /// Claimed by a worker, running.
    Running,
    /// Finished with an output.
    Completed,
    /// Failed after its last attempt.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl RunState {
    /// Parses `Scheduled`, `Running`, ... (case-insensitive).
    pub fn parse(text: &str) -> Option<RunState> {
        [RunState::Scheduled, RunState::Running, RunState::Completed, RunState::Failed, RunState::Cancelled]
            .into_iter()
            .find(|s| format!("{s:?}").eq_ignore_ascii_case(text))
    }
}

/// What caused a run that a trigger created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunCause {
    /// The trigger definition id.
    pub trigger: String,
    /// The firing's id.
    pub firing: Uuid,
    /// The bucket's labels.
    pub bucket: std::collections::BTreeMap<String, String>,
    /// The event the firing carries.
    pub triggering_event: Option<Uuid>,
    /// Every event behind the firing.
    #[serde(default)]
    pub triggering_events: Vec<Uuid>,
}

impl RunCause {
    /// What a run created by this firing records of it.
    pub fn of(firing: &super::Firing) -> RunCause {
        RunCause {
            trigger: firing.trigger.clone(),
            firing: firing.id,
            bucket: firing.bucket.clone(),
            triggering_event: firing.triggering_event,
            triggering_events: firing.triggering_events.clone(),
        }
    }
}

/// One run of a deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Run {
    /// Unique id.
    pub id: Uuid,
    /// The deployment's name.
    pub deployment: String,
    /// Current state.
    pub state: RunState,
    /// Parameters: the firing's rendered parameters (or the request's) over the
    /// deployment's defaults.
    pub parameters: Map<String, Value>,
    /// The trigger firing that created it (absent for runs created by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<RunCause>,
    /// Attempt number, from 1.
    #[schemars(range(min = 1))]
    pub attempt: u32,
    /// When it was created.
    pub created: Timestamp,
    /// When its state last changed.
    pub updated: Timestamp,
    /// Higher runs are claimed first.
    #[serde(default)]
    pub priority: i32,
    /// Not claimed before this instant (retries with backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    /// The worker holding it, while `Running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// When the worker's lease lapses unless a heartbeat extends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires: Option<Timestamp>,
    /// When the current attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Timestamp>,
    /// When it reached a final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Timestamp>,
    /// The flow's output, once `Completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Run {
    /// A new `Scheduled` run, attempt 1.
    pub fn scheduled(
        id: Uuid,
        deployment: &Deployment,
        parameters: Map<String, Value>,
        cause: Option<RunCause>,
        now: Timestamp,
    ) -> Run {
        Run {
            id,
            deployment: deployment.name.clone(),
            state: RunState::Scheduled,
            parameters,
            cause,
            attempt: 1,
            created: now,
            updated: now,
            priority: 0,
            not_before: None,
            worker: None,
            lease_expires: None,
            started: None,
            finished: None,
            output: None,
            error: None,
        }
    }
}

/// Merges `over` onto `defaults`, key by key (top level), as Prefect merges run parameters
/// over deployment defaults.
pub fn merge_parameters(defaults: &Map<String, Value>, over: Option<&Value>) -> Map<String, Value> {
    let mut merged = defaults.clone();
    if let Some(Value::Object(o)) = over {
        for (k, v) in o {
            merged.insert(k.clone(), v.clone());
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deployments_validate_every_field() {
        let err = Deployment::from_json(
            &json!({"name": "a b", "retries": -1, "timeout_seconds": 0, "x": 1}),
            &JsonPath::root(),
            None,
        )
        .unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["$.x", "$.name", "$.retries", "$.timeout_seconds"]);
        let d = Deployment::from_json(&json!({"parameters": {"a": 1}}), &JsonPath::root(), Some("flow")).unwrap();
        assert_eq!(d.name, "flow");
    }

    #[test]
    fn run_parameters_merge_over_defaults() {
        let defaults = json!({"a": 1, "b": 2}).as_object().unwrap().clone();
        let merged = merge_parameters(&defaults, Some(&json!({"b": 3, "c": 4})));
        assert_eq!(Value::Object(merged), json!({"a": 1, "b": 3, "c": 4}));
        assert_eq!(RunState::parse("scheduled"), Some(RunState::Scheduled));
    }
}
