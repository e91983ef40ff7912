//! Backtests: trigger definitions tried against the events the server already holds, before
//! they go live (`POST /api/backtest`), and what they would have done.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::time::Timestamp;
use super::{JsonPath, Problems, TriggerDefinition};

/// Most definitions one backtest tries.
pub const MAX_BACKTEST_DEFINITIONS: usize = 100;

/// `POST /api/backtest`: which definitions to try, over which stored events.
///
/// Give `definitions` (drafts: nothing is installed), or `trigger`, the id of an installed
/// definition, optionally with `changes` merged over it (JSON merge patch, RFC 7386: `null`
/// removes a member). Events are taken in arrival order; `from` and `until` bound their
/// arrival (`received`) time, and the virtual clock runs on to `until` at the end, so that
/// proactive windows that close before it fire.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BacktestRequest {
    /// Definitions to try, as `PUT /api/triggers` takes them (1 to 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<TriggerDefinition>", length(max = MAX_BACKTEST_DEFINITIONS))]
    pub definitions: Vec<Value>,
    /// Or the id of an installed definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub trigger: Option<String>,
    /// With `trigger`: changes merged over it (JSON merge patch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub changes: Option<Value>,
    /// The earliest arrival time of the events read (default: the oldest retained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Timestamp>,
    /// The latest arrival time of the events read, and where the virtual clock stops
    /// (default: when the backtest starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
}

impl BacktestRequest {
    /// The shape's problems (the definitions themselves are checked when they are compiled):
    /// exactly one of `definitions` and `trigger`, `changes` only with `trigger`, at most 100
    /// definitions, `from` not after `until`.
    pub fn validate(&self) -> Result<(), Problems> {
        let root = JsonPath::root();
        let mut problems = Problems::default();
        // Rules between members, which a JSON Schema does not say: 422.
        match (self.definitions.is_empty(), &self.trigger) {
            (true, None) => problems.add_rule(&root, "give `definitions` to try, or the id of an installed `trigger`"),
            (false, Some(_)) => problems.add_rule(&root.key("trigger"), "give `definitions` or `trigger`, not both"),
            _ => {}
        }
        if self.changes.is_some() && self.trigger.is_none() {
            problems.add_rule(&root.key("changes"), "`changes` apply to an installed `trigger`; name it");
        }
        if let Some(changes) = self.changes.as_ref().filter(|c| !c.is_object()) {
            problems.add(&root.key("changes"), format!("must be an object (a JSON merge patch), got {changes}"));
        }
        if self.definitions.len() > MAX_BACKTEST_DEFINITIONS {
            problems.add(
                &root.key("definitions"),
                format!("{} definitions; at most {MAX_BACKTEST_DEFINITIONS} at once", self.definitions.len()),
            );
        }
        if let (Some(from), Some(until)) = (self.from, self.until) {
            if from > until {
                problems.add_rule(&root.key("from"), format!("is after `until` ({until})"));
            }
        }
        problems.into_result(())
    }
}

/// Applies a JSON merge patch (RFC 7386) to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Value::Object(object) = target else { return };
    for (key, value) in patch {
        if value.is_null() {
            object.remove(key);
        } else {
            merge_patch(object.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Where a backtest stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BacktestState {
    /// Reading events.
    Running,
    /// Every event in the range was read, and the clock ran on to `until`.
    Completed,
    /// Stopped when asked (`DELETE /api/backtest/{id}`); what it found until then is kept.
    Cancelled,
    /// Stopped by an error (`error` says which).
    Failed,
}

/// A backtest: what it tries, how far it got, and what it found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Backtest {
    /// Its id.
    pub id: Uuid,
    /// Where it stands.
    pub state: BacktestState,
    /// The ids of the definitions tried.
    pub triggers: Vec<String>,
    /// The range read: arrival times from (absent: the oldest retained event) …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Timestamp>,
    /// … to, where the virtual clock stops.
    pub until: Timestamp,
    /// When it started.
    pub started: Timestamp,
    /// When it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Timestamp>,
    /// Events read so far.
    pub events_read: u64,
    /// Events stored when it started (an upper bound of what it reads).
    pub events_stored: u64,
    /// What it found so far.
    pub summary: BacktestSummary,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a backtest found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BacktestSummary {
    /// Firings, by definition id.
    pub firings: BTreeMap<String, u64>,
    /// Firings whose parameters could not be rendered (each has its `error`).
    pub errors: u64,
    /// Firings kept to be listed (`GET /api/backtest/{id}/firings`); past 10,000 they are
    /// only counted.
    pub firings_kept: u64,
    /// Buckets each definition opened (a key that had none got one), by definition id.
    #[serde(default)]
    pub buckets_opened: BTreeMap<String, u64>,
    /// Live buckets of each definition at the end (`GET /api/backtest/{id}/buckets` says
    /// why each has not fired).
    pub open_buckets: BTreeMap<String, u64>,
    /// Events a definition could not count because its buckets were full.
    pub overflows: u64,
    /// The virtual clock at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_merge_patch_replaces_adds_and_removes_members() {
        let mut target = json!({"trigger": {"within": 0, "expect": ["a"]}, "parameters": {"x": 1}});
        merge_patch(&mut target, &json!({"trigger": {"within": 30}, "parameters": null, "name": "v2"}));
        assert_eq!(target, json!({"trigger": {"within": 30, "expect": ["a"]}, "name": "v2"}));
    }

    #[test]
    fn a_request_names_what_it_tries_once() {
        let problems = |r: BacktestRequest| r.validate().unwrap_err().to_string();
        assert!(problems(BacktestRequest::default()).contains("give `definitions`"));
        let both = BacktestRequest { definitions: vec![json!({})], trigger: Some("t".into()), ..Default::default() };
        assert!(problems(both).contains("$.trigger"));
        let stray = BacktestRequest { definitions: vec![json!({})], changes: Some(json!({})), ..Default::default() };
        assert!(problems(stray).contains("$.changes"));
        let t = |s: &str| Timestamp::parse(s).unwrap();
        let backwards = BacktestRequest {
            trigger: Some("t".into()),
            from: Some(t("2026-01-02T00:00:00Z")),
            until: Some(t("2026-01-01T00:00:00Z")),
            ..Default::default()
        };
        assert!(problems(backwards).contains("$.from"));
        assert!(BacktestRequest { trigger: Some("t".into()), ..Default::default() }.validate().is_ok());
    }
}
