//! Reading a JSON object field by field, each problem recorded at its JSON path: shared by
//! the trigger and deployment parsers.

use serde_json::{Map, Value};

use super::problems::{kind_of, JsonPath, Problems};
use super::time::Span;

/// Walks one JSON object, remembering which members were read so that the rest can be
/// reported as unknown.
pub(super) struct Fields<'a, 'p> {
    pub(super) object: &'a Map<String, Value>,
    pub(super) path: JsonPath,
    used: Vec<&'a str>,
    pub(super) problems: &'p mut Problems,
}

impl<'a, 'p> Fields<'a, 'p> {
    pub(super) fn new(object: &'a Map<String, Value>, path: &JsonPath, problems: &'p mut Problems) -> Self {
        Fields { object, path: path.clone(), used: Vec::new(), problems }
    }

    pub(super) fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.add(&self.path.key(key), message);
    }

    pub(super) fn take(&mut self, key: &str) -> Option<&'a Value> {
        let (k, v) = self.object.get_key_value(key)?;
        self.used.push(k.as_str());
        Some(v)
    }

    pub(super) fn opt_string(&mut self, key: &str) -> Option<String> {
        match self.take(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => {
                let k = kind_of(other);
                self.problem(key, format!("expected a string, got {k}"));
                None
            }
        }
    }

    pub(super) fn opt_bool(&mut self, key: &str) -> Option<bool> {
        match self.take(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                let k = kind_of(other);
                self.problem(key, format!("expected true or false, got {k}"));
                None
            }
        }
    }

    /// A set of strings (Prefect's `Set[str]`), returned sorted and without duplicates.
    pub(super) fn string_set(&mut self, key: &str) -> Vec<String> {
        let Some(value) = self.take(key) else { return Vec::new() };
        let Some(items) = value.as_array() else {
            let k = kind_of(value);
            self.problem(key, format!("expected an array of strings, got {k}"));
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => insert_sorted(&mut out, s.clone()),
                other => self
                    .problems
                    .add(&self.path.key(key).index(i), format!("expected a string, got {}", kind_of(other))),
            }
        }
        out
    }

    /// Seconds as a number (Prefect also accepts a number in a string), at most
    /// [`Span::MAX_WITHIN`].
    pub(super) fn seconds(&mut self, key: &str) -> Option<Option<Span>> {
        let value = self.take(key)?;
        let secs = match value {
            Value::Null => return Some(None),
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        let Some(secs) = secs else {
            let k = kind_of(value);
            self.problem(key, format!("expected a number of seconds, got {k}"));
            return Some(None);
        };
        if secs < 0.0 {
            self.problem(key, format!("must be zero or more seconds, got {secs}"));
            return Some(None);
        }
        match Span::from_secs_f64(secs).filter(|span| *span <= Span::MAX_WITHIN) {
            Some(span) => Some(Some(span)),
            None => {
                let max = Span::MAX_WITHIN.as_secs_f64();
                self.problem(key, format!("must be at most {max} seconds (100 years), got {secs}"));
                Some(None)
            }
        }
    }

    /// A whole number from `min` to `max`; absent or null is None.
    pub(super) fn whole(&mut self, key: &str, min: u64, max: u64) -> Option<u64> {
        let v = self.take(key).filter(|v| !v.is_null())?;
        match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.problem(key, format!("expected a whole number from {min} to {max}, got {v}"));
                None
            }
        }
    }

    /// A whole number that fits an `i32`; absent or null is None.
    pub(super) fn whole_signed(&mut self, key: &str) -> Option<i32> {
        let v = self.take(key).filter(|v| !v.is_null())?;
        match v.as_i64().and_then(|n| i32::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                self.problem(key, format!("expected a whole number, got {v}"));
                None
            }
        }
    }

    /// A number of seconds from `min` to `max` (`min` itself allowed when `inclusive`);
    /// absent or null is None.
    pub(super) fn number(&mut self, key: &str, min: f64, max: f64, inclusive: bool) -> Option<f64> {
        let v = self.take(key).filter(|v| !v.is_null())?;
        match v.as_f64() {
            Some(s) if (s > min || (inclusive && s == min)) && s <= max => Some(s),
            _ => {
                let bound = if inclusive { "at least" } else { "more than" };
                let upper = if max < f64::MAX { format!(" and at most {max}") } else { String::new() };
                self.problem(key, format!("expected a number of seconds {bound} {min}{upper}, got {v}"));
                None
            }
        }
    }

    /// The members not read, as a new object (for the flat definition form).
    pub(super) fn remaining(&mut self) -> Map<String, Value> {
        self.object
            .iter()
            .filter(|(k, _)| !self.used.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Reports every member that was not read.
    pub(super) fn finish(&mut self) {
        let unknown: Vec<&str> = self.object.keys().map(String::as_str).filter(|k| !self.used.contains(k)).collect();
        for key in unknown {
            self.problem(key, "unknown field");
        }
    }
}

/// Inserts into a sorted list without duplicates.
pub(super) fn insert_sorted(set: &mut Vec<String>, value: String) {
    if let Err(at) = set.binary_search(&value) {
        set.insert(at, value);
    }
}
