//! Worker labels and affinity, as Hatchet has them: a worker says what it is
//! (`region=eu`, `gpu=1`, `memory=64`); a deployment says which labels its runs want, each
//! required or preferred with a weight, compared with a comparator. A worker that misses a
//! required label is never handed the run; among those that meet them, the one with the most
//! weight of preferred labels met is preferred.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::Fields;
use super::problems::{JsonPath, Problems};

/// Most labels a worker may have, and a deployment may want.
pub const MAX_LABELS: usize = 64;
/// The longest label key, in characters.
pub const MAX_LABEL_KEY_CHARS: usize = 128;
/// The longest text label value, in characters.
pub const MAX_LABEL_VALUE_CHARS: usize = 1024;
/// The weight of a desired label that does not give one (Hatchet's default).
pub const DEFAULT_LABEL_WEIGHT: u32 = 100;

/// A label's value: a whole number (comparable with `GREATER_THAN`, ...) or text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum LabelValue {
    /// A whole number, e.g. `memory: 64`.
    Int(#[schemars(range(min = i64::MIN, max = i64::MAX))] i64),
    /// Text, e.g. `region: "eu"` (at most 1,024 characters).
    Text(#[schemars(length(max = 1024))] String),
}

impl<'de> Deserialize<'de> for LabelValue {
    /// Text, or a whole number written `64` or `64.0` (as JSON Schema's `integer`).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<LabelValue, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(s) => Ok(LabelValue::Text(s)),
            Value::Number(n) => super::integral(&n)
                .map(LabelValue::Int)
                .ok_or_else(|| serde::de::Error::custom(format!("expected text or a whole number, got {n}"))),
            other => Err(serde::de::Error::custom(format!(
                "expected text or a whole number, got {}",
                super::problems::kind_of(&other)
            ))),
        }
    }
}

impl fmt::Display for LabelValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelValue::Int(n) => write!(f, "{n}"),
            LabelValue::Text(s) => write!(f, "{s}"),
        }
    }
}

impl From<&str> for LabelValue {
    fn from(text: &str) -> LabelValue {
        LabelValue::Text(text.to_owned())
    }
}

impl From<i64> for LabelValue {
    fn from(n: i64) -> LabelValue {
        LabelValue::Int(n)
    }
}

/// How a worker's label value is compared with the desired one: `worker COMPARATOR value`
/// (Hatchet's). The ordering comparators compare whole numbers only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Comparator {
    /// The worker's value equals the desired one.
    #[default]
    Equal,
    /// The worker's value differs from the desired one.
    NotEqual,
    /// The worker's number is greater than the desired one.
    GreaterThan,
    /// The worker's number is greater than or equal to the desired one.
    GreaterThanOrEqual,
    /// The worker's number is less than the desired one.
    LessThan,
    /// The worker's number is less than or equal to the desired one.
    LessThanOrEqual,
}

impl Comparator {
    const ALL: [(&'static str, Comparator); 6] = [
        ("EQUAL", Comparator::Equal),
        ("NOT_EQUAL", Comparator::NotEqual),
        ("GREATER_THAN", Comparator::GreaterThan),
        ("GREATER_THAN_OR_EQUAL", Comparator::GreaterThanOrEqual),
        ("LESS_THAN", Comparator::LessThan),
        ("LESS_THAN_OR_EQUAL", Comparator::LessThanOrEqual),
    ];

    fn name(self) -> &'static str {
        Comparator::ALL.iter().find(|(_, c)| *c == self).map_or("EQUAL", |(n, _)| n)
    }

    fn orders(self) -> bool {
        !matches!(self, Comparator::Equal | Comparator::NotEqual)
    }
}

/// A label a deployment's runs want of their worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DesiredLabel {
    /// The value compared with the worker's.
    pub value: LabelValue,
    /// A worker that does not meet it is never handed the run (default: preferred only).
    #[serde(default)]
    pub required: bool,
    /// How much meeting it counts when workers are compared (default 100).
    #[serde(default = "default_weight")]
    #[schemars(with = "Option<u32>", range(max = 4_294_967_295u32))]
    pub weight: u32,
    /// `worker COMPARATOR value` (default `EQUAL`).
    #[serde(default)]
    #[schemars(with = "Option<Comparator>")]
    pub comparator: Comparator,
}

fn default_weight() -> u32 {
    DEFAULT_LABEL_WEIGHT
}

impl DesiredLabel {
    /// A worker must have the label with this value.
    pub fn required(value: impl Into<LabelValue>) -> DesiredLabel {
        DesiredLabel {
            value: value.into(),
            required: true,
            weight: DEFAULT_LABEL_WEIGHT,
            comparator: Comparator::Equal,
        }
    }

    /// A worker with the label and this value is preferred by `weight`.
    pub fn preferred(value: impl Into<LabelValue>, weight: u32) -> DesiredLabel {
        DesiredLabel { value: value.into(), required: false, weight, comparator: Comparator::Equal }
    }

    /// Compares with `comparator` instead of `EQUAL`.
    pub fn comparator(mut self, comparator: Comparator) -> DesiredLabel {
        self.comparator = comparator;
        self
    }

    /// Whether a worker's value (None: it lacks the label) meets this one.
    pub fn met_by(&self, worker: Option<&LabelValue>) -> bool {
        let Some(worker) = worker else { return false };
        match (self.comparator, worker, &self.value) {
            (Comparator::Equal, w, v) => w == v,
            (Comparator::NotEqual, w, v) => {
                // As Hatchet: both of one kind, and different.
                matches!((w, v), (LabelValue::Int(_), LabelValue::Int(_)) | (LabelValue::Text(_), LabelValue::Text(_)))
                    && w != v
            }
            (c, LabelValue::Int(w), LabelValue::Int(v)) => match c {
                Comparator::GreaterThan => w > v,
                Comparator::GreaterThanOrEqual => w >= v,
                Comparator::LessThan => w < v,
                Comparator::LessThanOrEqual => w <= v,
                Comparator::Equal | Comparator::NotEqual => unreachable!("matched above"),
            },
            _ => false,
        }
    }

    /// In words: `region = eu`, `memory >= 64`.
    pub fn describe(&self, key: &str) -> String {
        let op = match self.comparator {
            Comparator::Equal => "=",
            Comparator::NotEqual => "!=",
            Comparator::GreaterThan => ">",
            Comparator::GreaterThanOrEqual => ">=",
            Comparator::LessThan => "<",
            Comparator::LessThanOrEqual => "<=",
        };
        format!("{key} {op} {}", self.value)
    }

    /// Reads one desired label at `path`.
    fn from_json(value: &Value, path: &JsonPath, problems: &mut Problems) -> Option<DesiredLabel> {
        let mut fields =
            Fields::open(value, path, problems, "expected an object such as {\"value\": \"eu\", \"required\": true}")?;
        fields.only(
            &["value", "required", "weight", "comparator"],
            "unknown field; use `value`, `required`, `weight` and `comparator`",
        );
        let label = match fields.required("value", "the `value` field is required (text or a whole number)") {
            Some(v) => label_value(v, &fields.at("value"), fields.problems),
            None => None,
        };
        let required = fields.opt_bool("required").unwrap_or(false);
        let weight = fields.whole("weight", 0, u64::from(u32::MAX)).map_or(DEFAULT_LABEL_WEIGHT, |w| w as u32);
        let comparator = match fields.take_set("comparator") {
            None => Comparator::Equal,
            Some(Value::String(s)) => match Comparator::ALL.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
                Some((_, c)) => *c,
                None => {
                    let names: Vec<&str> = Comparator::ALL.iter().map(|(n, _)| *n).collect();
                    fields.problem("comparator", format!("unknown comparator `{s}`; use {}", names.join(", ")));
                    Comparator::Equal
                }
            },
            Some(other) => {
                fields.expected("comparator", "a string such as \"GREATER_THAN\"", other);
                Comparator::Equal
            }
        };
        if comparator.orders() && matches!(label, Some(LabelValue::Text(_))) {
            fields.rule("comparator", format!("{} compares whole numbers; the value is text", comparator.name()));
        }
        Some(DesiredLabel { value: label?, required, weight, comparator })
    }
}

/// Reads a label value: text (at most [`MAX_LABEL_VALUE_CHARS`]) or a whole number.
fn label_value(value: &Value, path: &JsonPath, problems: &mut Problems) -> Option<LabelValue> {
    match value {
        Value::String(s) if s.chars().count() > MAX_LABEL_VALUE_CHARS => {
            problems.add(path, format!("at most {MAX_LABEL_VALUE_CHARS} characters"));
            None
        }
        Value::String(s) => Some(LabelValue::Text(s.clone())),
        Value::Number(n) => match super::integral(n) {
            Some(i) => Some(LabelValue::Int(i)),
            None => {
                problems.add(path, format!("expected text or a whole number, got {n}"));
                None
            }
        },
        other => {
            problems.add(path, format!("expected text or a whole number, got {}", super::problems::kind_of(other)));
            None
        }
    }
}

/// Checks a label key (a worker's or a desired one's).
fn check_key(key: &str, path: &JsonPath, problems: &mut Problems) {
    if key.is_empty() || key.chars().count() > MAX_LABEL_KEY_CHARS {
        problems.add(path, format!("a label key is 1 to {MAX_LABEL_KEY_CHARS} characters"));
    }
}

/// Reads a worker's labels, `null` as none.
pub(super) fn labels_or_none<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, LabelValue>, D::Error> {
    Ok(Option::<BTreeMap<String, LabelValue>>::deserialize(deserializer)?.unwrap_or_default())
}

/// Checks a worker's labels (from its claim).
pub fn check_labels(labels: &BTreeMap<String, LabelValue>, path: &JsonPath, problems: &mut Problems) {
    if labels.len() > MAX_LABELS {
        problems.add(path, format!("{} labels; at most {MAX_LABELS}", labels.len()));
    }
    for (key, value) in labels {
        check_key(key, &path.key(key), problems);
        if let LabelValue::Text(s) = value {
            if s.chars().count() > MAX_LABEL_VALUE_CHARS {
                problems.add(&path.key(key), format!("at most {MAX_LABEL_VALUE_CHARS} characters"));
            }
        }
    }
}

/// Reads a deployment's `desired_labels`.
pub(super) fn desired_labels(
    value: &Value,
    path: &JsonPath,
    problems: &mut Problems,
) -> BTreeMap<String, DesiredLabel> {
    let Value::Object(map) = value else {
        problems
            .add(path, "expected an object of label keys, e.g. {\"region\": {\"value\": \"eu\", \"required\": true}}");
        return BTreeMap::new();
    };
    if map.len() > MAX_LABELS {
        problems.add(path, format!("{} labels; at most {MAX_LABELS}", map.len()));
        return BTreeMap::new();
    }
    let mut desired = BTreeMap::new();
    for (key, value) in map {
        let at = path.key(key);
        check_key(key, &at, problems);
        if let Some(label) = DesiredLabel::from_json(value, &at, problems) {
            desired.insert(key.clone(), label);
        }
    }
    desired
}

/// How well a worker's labels fit what a deployment wants: None when it misses a required
/// label, else the weight of the desired labels it meets (Hatchet's `ComputeWeight`).
pub fn affinity(desired: &BTreeMap<String, DesiredLabel>, labels: &BTreeMap<String, LabelValue>) -> Option<u64> {
    let mut weight = 0u64;
    for (key, want) in desired {
        if want.met_by(labels.get(key)) {
            weight += u64::from(want.weight);
        } else if want.required {
            return None;
        }
    }
    Some(weight)
}

/// The required labels, in words (`region = eu, memory >= 64`), for messages.
pub fn describe_required(desired: &BTreeMap<String, DesiredLabel>) -> String {
    let required: Vec<String> = desired.iter().filter(|(_, d)| d.required).map(|(k, d)| d.describe(k)).collect();
    required.join(", ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, LabelValue)]) -> BTreeMap<String, LabelValue> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn comparators_read_worker_then_value_as_hatchet_does() {
        let memory = |c| DesiredLabel::required(64).comparator(c);
        let w = |n: i64| LabelValue::Int(n);
        assert!(memory(Comparator::GreaterThanOrEqual).met_by(Some(&w(64))));
        assert!(!memory(Comparator::GreaterThan).met_by(Some(&w(64))));
        assert!(memory(Comparator::LessThan).met_by(Some(&w(32))));
        assert!(memory(Comparator::LessThanOrEqual).met_by(Some(&w(64))));
        assert!(memory(Comparator::NotEqual).met_by(Some(&w(65))));
        assert!(!memory(Comparator::GreaterThan).met_by(Some(&LabelValue::Text("big".into()))));
        assert!(!memory(Comparator::Equal).met_by(None));
        assert!(DesiredLabel::required("eu").met_by(Some(&"eu".into())));
        assert!(!DesiredLabel::required("eu").met_by(Some(&"us".into())));
    }

    #[test]
    fn affinity_is_none_without_a_required_label_else_the_weight_met() {
        let mut desired = BTreeMap::new();
        desired.insert("region".to_owned(), DesiredLabel::required("eu"));
        desired.insert("gpu".to_owned(), DesiredLabel::preferred(1, 10));
        desired.insert("memory".to_owned(), DesiredLabel::preferred(64, 5).comparator(Comparator::GreaterThanOrEqual));
        let eu = labels(&[("region", "eu".into())]);
        let eu_gpu = labels(&[("region", "eu".into()), ("gpu", 1.into()), ("memory", 128.into())]);
        let us_gpu = labels(&[("region", "us".into()), ("gpu", 1.into())]);
        assert_eq!(affinity(&desired, &eu), Some(100));
        assert_eq!(affinity(&desired, &eu_gpu), Some(115));
        assert_eq!(affinity(&desired, &us_gpu), None);
        assert_eq!(describe_required(&desired), "region = eu");
    }

    #[test]
    fn desired_labels_are_checked_with_their_paths() {
        let path = JsonPath::root().key("desired_labels");
        let mut problems = Problems::default();
        let ok = desired_labels(
            &json!({"memory": {"value": 64.0, "comparator": "greater_than_or_equal", "weight": 3}}),
            &path,
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems}");
        assert_eq!(ok["memory"], DesiredLabel::preferred(64, 3).comparator(Comparator::GreaterThanOrEqual));
        for (bad, expected) in [
            (json!({"r": {}}), "$.desired_labels.r: the `value` field is required"),
            (json!({"r": {"value": [1]}}), "$.desired_labels.r.value: expected text or a whole number"),
            (json!({"r": {"value": 1.5}}), "$.desired_labels.r.value: expected text or a whole number, got 1.5"),
            (
                json!({"r": {"value": "eu", "comparator": "LESS_THAN"}}),
                "$.desired_labels.r.comparator: LESS_THAN compares whole numbers",
            ),
            (json!({"r": {"value": "eu", "comparator": "ABOUT"}}), "unknown comparator `ABOUT`"),
            (json!({"r": {"value": "eu", "requird": true}}), "$.desired_labels.r.requird: unknown field"),
            (json!({"": {"value": "eu"}}), "a label key is 1 to 128 characters"),
            (json!(["region"]), "$.desired_labels: expected an object"),
        ] {
            let mut problems = Problems::default();
            desired_labels(&bad, &path, &mut problems);
            assert!(problems.to_string().contains(expected), "{bad}: {problems}");
        }
    }
}
