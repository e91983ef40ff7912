//! Deployments: served flows that runs are created for, with their run settings
//! (retries, timeouts, concurrency, rate limits, worker affinity, priority).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::affinity::DesiredLabel;
use super::fields::Fields;
use super::limits::MAX_PARAMETERS_BYTES;
use super::problems::{JsonPath, Problems};
use super::rate_limit::{RateLimitUse, MAX_RATE_LIMITS_PER_DEPLOYMENT};
use super::time::Timestamp;

/// Longest delay between retries that a deployment may ask for, and the default cap.
pub const MAX_RETRY_DELAY_SECONDS: f64 = 86_400.0;
/// Longest `timeout_seconds` and `schedule_timeout_seconds`: one year. Longer values are refused
/// naming the field (a worker turns the timeout into a timer, which must be representable).
pub const MAX_TIMEOUT_SECONDS: f64 = 31_536_000.0;

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
    /// Retries after a failed attempt (a run is tried at most `retries + 1` times).
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(max = 1000))]
    pub retries: u32,
    /// Wait before the first retry, in seconds; each later retry waits
    /// `retry_backoff_factor` times longer, up to `retry_max_delay_seconds`.
    #[serde(default = "default_retry_delay")]
    #[schemars(with = "Option<f64>", range(min = 0, max = 86400))]
    pub retry_delay_seconds: f64,
    /// Multiplier of the delay from one retry to the next (exponential backoff).
    #[serde(default = "default_backoff_factor")]
    #[schemars(with = "Option<f64>", range(min = 1, max = 100))]
    pub retry_backoff_factor: f64,
    /// The longest wait between retries, in seconds.
    #[serde(default = "default_max_delay")]
    #[schemars(with = "Option<f64>", range(min = 0, max = 86400))]
    pub retry_max_delay_seconds: f64,
    /// Execution timeout of one attempt, in seconds: the attempt fails (and may be retried)
    /// and its worker is told to cancel it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = 31_536_000))]
    pub timeout_seconds: Option<f64>,
    /// A run that no worker claims within this many seconds of becoming claimable is
    /// cancelled with the reason `schedule_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = 31_536_000))]
    pub schedule_timeout_seconds: Option<f64>,
    /// Runs of this deployment that may run at once (the rest wait their turn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = u32::MAX))]
    pub concurrency_limit: Option<u32>,
    /// A concurrency limit per key, as in Hatchet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// Rate limits each run takes units from when it is claimed (Hatchet's static and
    /// dynamic keys); a run whose units do not fit waits until the window resets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Option<Vec<RateLimitUse>>", length(max = 16))]
    pub rate_limits: Vec<RateLimitUse>,
    /// Labels its runs want of their worker (Hatchet's worker affinity): a worker that misses
    /// a required one is never handed a run; among the rest, the one meeting the most weight
    /// of preferred ones is preferred.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(
        with = "Option<BTreeMap<String, DesiredLabel>>",
        extend("maxProperties" = 64, "propertyNames" = {"minLength": 1, "maxLength": 128})
    )]
    pub desired_labels: BTreeMap<String, DesiredLabel>,
    /// Runs with a higher priority are claimed first (ties: oldest first).
    #[serde(default)]
    #[schemars(with = "Option<i32>")]
    pub priority: i32,
    /// When it was first created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("readOnly" = true))]
    pub created: Option<Timestamp>,
    /// When it was last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("readOnly" = true))]
    pub updated: Option<Timestamp>,
}

fn default_retry_delay() -> f64 {
    1.0
}

fn default_backoff_factor() -> f64 {
    2.0
}

fn default_max_delay() -> f64 {
    300.0
}

/// A concurrency limit per key: runs whose `key` renders to the same string share `max_runs`
/// slots, and `strategy` says what happens to runs beyond them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Concurrency {
    /// A minijinja template over the run's parameters, e.g. `{{ params.user_id }}`
    /// (`parameters` and `input` name the same object).
    #[schemars(length(min = 1))]
    pub key: String,
    /// Runs per key at once.
    #[serde(default = "one")]
    #[schemars(with = "Option<u32>", range(min = 1, max = u32::MAX))]
    pub max_runs: u32,
    /// What happens to runs beyond `max_runs`.
    #[serde(default)]
    #[schemars(with = "Option<ConcurrencyStrategy>")]
    pub strategy: ConcurrencyStrategy,
}

fn one() -> u32 {
    1
}

/// Hatchet's concurrency strategies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConcurrencyStrategy {
    /// Runs beyond the limit wait; keys take turns, so one busy key cannot starve the others.
    #[default]
    GroupRoundRobin,
    /// A new run takes a slot: the oldest runs of its key (waiting or running) are cancelled
    /// to make room.
    CancelInProgress,
    /// A new run that finds its key's slots taken is cancelled; the runs in progress go on.
    CancelNewest,
}

impl ConcurrencyStrategy {
    const ALL: [(&'static str, ConcurrencyStrategy); 3] = [
        ("GROUP_ROUND_ROBIN", ConcurrencyStrategy::GroupRoundRobin),
        ("CANCEL_IN_PROGRESS", ConcurrencyStrategy::CancelInProgress),
        ("CANCEL_NEWEST", ConcurrencyStrategy::CancelNewest),
    ];
}

impl Deployment {
    /// A deployment with defaults.
    pub fn new(name: impl Into<String>) -> Deployment {
        Deployment {
            name: name.into(),
            description: None,
            parameters: Map::new(),
            retries: 0,
            retry_delay_seconds: default_retry_delay(),
            retry_backoff_factor: default_backoff_factor(),
            retry_max_delay_seconds: default_max_delay(),
            timeout_seconds: None,
            schedule_timeout_seconds: None,
            concurrency_limit: None,
            concurrency: None,
            rate_limits: Vec::new(),
            desired_labels: BTreeMap::new(),
            priority: 0,
            created: None,
            updated: None,
        }
    }

    /// The wait before attempt `attempt + 1` after attempt `attempt` failed, in seconds.
    pub fn retry_delay(&self, attempt: u32) -> f64 {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        (self.retry_delay_seconds * self.retry_backoff_factor.powi(exponent)).min(self.retry_max_delay_seconds)
    }

    /// Reads a deployment, reporting every problem with its path. `name` may come from the
    /// URL instead of the body (`name_from_path`).
    pub fn from_json(value: &Value, path: &JsonPath, name_from_path: Option<&str>) -> Result<Deployment, Problems> {
        let mut problems = Problems::default();
        let Some(mut fields) = Fields::open(value, path, &mut problems, "a deployment must be a JSON object") else {
            return Err(problems);
        };
        fields.only(
            &[
                "name",
                "description",
                "parameters",
                "retries",
                "retry_delay_seconds",
                "retry_backoff_factor",
                "retry_max_delay_seconds",
                "timeout_seconds",
                "schedule_timeout_seconds",
                "concurrency_limit",
                "concurrency",
                "rate_limits",
                "desired_labels",
                "priority",
                "created",
                "updated",
            ],
            "unknown field",
        );
        let name = match (fields.take("name"), name_from_path) {
            (Some(Value::String(n)), Some(p)) if n != p => {
                fields.problem("name", format!("`{n}` differs from the name in the URL, `{p}`"));
                n.clone()
            }
            (Some(Value::String(n)), _) => n.clone(),
            (None, Some(p)) => p.to_owned(),
            (None, None) => {
                fields.problem_here("the `name` field is required");
                String::new()
            }
            (Some(other), _) => {
                fields.expected("name", "a string", other);
                String::new()
            }
        };
        if name.is_empty() && fields.problems.is_empty() {
            fields.problem("name", "must not be empty");
        } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
            fields.problem("name", "may only contain letters, digits, `-`, `_`, `.` and `:`");
        }
        let description = fields.opt_string("description");
        let parameters = fields.opt_limited_object("parameters", MAX_PARAMETERS_BYTES).cloned().unwrap_or_default();
        let retries = fields.whole("retries", 0, 1000).unwrap_or(0) as u32;
        let retry_delay_seconds =
            fields.number("retry_delay_seconds", 0.0, MAX_RETRY_DELAY_SECONDS, true).unwrap_or(default_retry_delay());
        let retry_backoff_factor =
            fields.number("retry_backoff_factor", 1.0, 100.0, true).unwrap_or(default_backoff_factor());
        let retry_max_delay_seconds =
            fields.number("retry_max_delay_seconds", 0.0, MAX_RETRY_DELAY_SECONDS, true).unwrap_or(default_max_delay());
        let timeout_seconds = fields.number("timeout_seconds", 0.0, MAX_TIMEOUT_SECONDS, false);
        let schedule_timeout_seconds = fields.number("schedule_timeout_seconds", 0.0, MAX_TIMEOUT_SECONDS, false);
        let concurrency_limit = fields.whole("concurrency_limit", 1, u32::MAX as u64).map(|n| n as u32);
        let priority = fields.whole_signed("priority").unwrap_or(0);
        let concurrency = fields.take_set("concurrency").and_then(|v| {
            let p = fields.at("concurrency");
            Concurrency::from_json(v, &p, fields.problems)
        });
        let mut rate_limits = Vec::new();
        if let Some(items) = fields.opt_array("rate_limits", "an array of rate limits") {
            if items.len() > MAX_RATE_LIMITS_PER_DEPLOYMENT {
                fields.problem(
                    "rate_limits",
                    format!("{} rate limits; at most {MAX_RATE_LIMITS_PER_DEPLOYMENT}", items.len()),
                );
            }
            let path = fields.at("rate_limits");
            for (i, item) in items.iter().enumerate().take(MAX_RATE_LIMITS_PER_DEPLOYMENT) {
                rate_limits.extend(RateLimitUse::from_json(item, &path.index(i), fields.problems));
            }
        }
        let desired_labels = match fields.take_set("desired_labels") {
            Some(value) => {
                let path = fields.at("desired_labels");
                super::affinity::desired_labels(value, &path, fields.problems)
            }
            None => BTreeMap::new(),
        };
        problems.into_result(Deployment {
            name,
            description,
            parameters,
            retries,
            retry_delay_seconds,
            retry_backoff_factor,
            retry_max_delay_seconds,
            timeout_seconds,
            schedule_timeout_seconds,
            concurrency_limit,
            concurrency,
            rate_limits,
            desired_labels,
            priority,
            created: None,
            updated: None,
        })
    }
}

impl Concurrency {
    /// A limit of `max_runs` per key with the default strategy, `GROUP_ROUND_ROBIN`.
    pub fn new(key: impl Into<String>, max_runs: u32) -> Concurrency {
        Concurrency { key: key.into(), max_runs, strategy: ConcurrencyStrategy::default() }
    }

    /// Sets the strategy.
    pub fn strategy(mut self, strategy: ConcurrencyStrategy) -> Concurrency {
        self.strategy = strategy;
        self
    }

    fn from_json(value: &Value, path: &JsonPath, problems: &mut Problems) -> Option<Concurrency> {
        let mut fields = Fields::open(
            value,
            path,
            problems,
            "expected an object such as {\"key\": \"{{ params.user_id }}\", \"max_runs\": 1}",
        )?;
        fields.only(&["key", "max_runs", "strategy"], "unknown field; use `key`, `max_runs` and `strategy`");
        let key =
            fields.non_blank("key", "the `key` field is required, e.g. \"{{ params.user_id }}\"", "a template string");
        let max_runs = fields.whole("max_runs", 1, u32::MAX as u64).map_or(1, |n| n as u32);
        let strategy = match fields.take_set("strategy") {
            None => ConcurrencyStrategy::default(),
            Some(Value::String(s)) => {
                match ConcurrencyStrategy::ALL.iter().find(|(name, _)| name.eq_ignore_ascii_case(s)) {
                    Some((_, strategy)) => *strategy,
                    None => {
                        fields.problem(
                            "strategy",
                            format!(
                                "unknown strategy `{s}`; use GROUP_ROUND_ROBIN, CANCEL_IN_PROGRESS or CANCEL_NEWEST"
                            ),
                        );
                        ConcurrencyStrategy::default()
                    }
                }
            }
            Some(other) => {
                fields.expected("strategy", "a string", other);
                ConcurrencyStrategy::default()
            }
        };
        Some(Concurrency { key: key?, max_runs, strategy })
    }
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
        assert_eq!(d.retry_delay_seconds, 1.0);
    }

    #[test]
    fn concurrency_and_retry_settings_are_checked() {
        let err = Deployment::from_json(
            &json!({"name": "f", "concurrency": {"max_runs": 0, "strategy": "FIFO", "x": 1}, "retry_backoff_factor": 0.5}),
            &JsonPath::root(),
            None,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("$.concurrency.x: unknown field"), "{text}");
        assert!(text.contains("$.concurrency: the `key` field is required"), "{text}");
        assert!(text.contains("$.concurrency.max_runs"), "{text}");
        assert!(text.contains("unknown strategy `FIFO`"), "{text}");
        assert!(text.contains("$.retry_backoff_factor"), "{text}");
        let d = Deployment::from_json(
            &json!({"name": "f", "retries": 3, "retry_delay_seconds": 2, "retry_max_delay_seconds": 5,
                    "concurrency": {"key": "{{ params.user }}", "strategy": "cancel_newest"}}),
            &JsonPath::root(),
            None,
        )
        .unwrap();
        assert_eq!(
            d.concurrency,
            Some(Concurrency::new("{{ params.user }}", 1).strategy(ConcurrencyStrategy::CancelNewest))
        );
        assert_eq!([d.retry_delay(1), d.retry_delay(2), d.retry_delay(3)], [2.0, 4.0, 5.0]);
        let back: Deployment = serde_json::from_value(serde_json::to_value(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }
}
