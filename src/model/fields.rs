//! The one JSON field reader of the model: every `from_json` walks its object with [`Fields`],
//! which records each problem at the JSON path of the member at fault and goes on, so that a
//! document's problems are all reported at once.
//!
//! Conventions shared by the readers: `opt_*` readers take absent and `null` alike as "not
//! given" (Prefect's clients send unset fields as `null`); a value of the wrong type is
//! reported as "expected `what`, got `kind`" at the member's path; a required member that is
//! absent is reported at the object's own path, in the caller's words.

use serde_json::{Map, Value};
use uuid::Uuid;

use super::limits;
use super::problems::{kind_of, JsonPath, Problems};
use super::time::{Span, Timestamp};

/// A JSON number with no fractional part, as an integer: `8` and `8.0` alike (JSON Schema's
/// `integer`, and Prefect's pydantic, take both).
pub(crate) fn integral(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        let f = n.as_f64()?;
        // i64::MAX as f64 rounds up to 2^63, which does not fit: the bound is exclusive.
        (f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64).then_some(f as i64)
    })
}

/// `value` as an object; otherwise records "`not_object`, got <kind>" at `path` (e.g.
/// "an event must be a JSON object, got an array").
pub(super) fn object_of<'a>(
    value: &'a Value,
    path: &JsonPath,
    problems: &mut Problems,
    not_object: &str,
) -> Option<&'a Map<String, Value>> {
    match value {
        Value::Object(object) => Some(object),
        other => {
            problems.add(path, format!("{not_object}, got {}", kind_of(other)));
            None
        }
    }
}

/// Walks one JSON object, remembering which members were read so that the rest can be
/// reported as unknown.
pub(super) struct Fields<'a, 'p> {
    pub(super) object: &'a Map<String, Value>,
    pub(super) path: JsonPath,
    used: Vec<&'a str>,
    pub(super) problems: &'p mut Problems,
}

impl<'a, 'p> Fields<'a, 'p> {
    /// A reader of `object`, which stands at `path`.
    pub(super) fn new(object: &'a Map<String, Value>, path: &JsonPath, problems: &'p mut Problems) -> Self {
        Fields { object, path: path.clone(), used: Vec::new(), problems }
    }

    /// A reader of `value` when it is an object; otherwise records "`not_object`, got <kind>"
    /// at `path` (see [`object_of`]).
    pub(super) fn open(
        value: &'a Value,
        path: &JsonPath,
        problems: &'p mut Problems,
        not_object: &str,
    ) -> Option<Self> {
        let object = object_of(value, path, problems, not_object)?;
        Some(Fields::new(object, path, problems))
    }

    /// The path of member `key`.
    pub(super) fn at(&self, key: &str) -> JsonPath {
        self.path.key(key)
    }

    /// Records a problem with member `key`.
    pub(super) fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.add(&self.path.key(key), message);
    }

    /// Records a problem with member `key` that breaks a rule the schema cannot state.
    pub(super) fn rule(&mut self, key: &str, message: impl Into<String>) {
        self.problems.add_rule(&self.path.key(key), message);
    }

    /// Records a problem with the object itself (at its own path), such as a required member
    /// that is absent.
    pub(super) fn problem_here(&mut self, message: impl Into<String>) {
        self.problems.add(&self.path, message);
    }

    /// Records "expected `what`, got <kind of `value`>" at `path`.
    pub(super) fn expected_at(&mut self, path: &JsonPath, what: &str, value: &Value) {
        self.problems.add(path, format!("expected {what}, got {}", kind_of(value)));
    }

    /// Records "expected `what`, got <kind of `value`>" at member `key`.
    pub(super) fn expected(&mut self, key: &str, what: &str, value: &Value) {
        let path = self.path.key(key);
        self.expected_at(&path, what, value);
    }

    /// Reports, before anything else is read, every member not in `known`, with `message`.
    pub(super) fn only(&mut self, known: &[&str], message: &str) {
        self.report_unknown(known, message, true);
    }

    /// Like [`Fields::only`], but an unknown member set to `null` is accepted (Prefect's
    /// clients send unset fields as `null`).
    pub(super) fn only_set(&mut self, known: &[&str], message: &str) {
        self.report_unknown(known, message, false);
    }

    fn report_unknown(&mut self, known: &[&str], message: &str, null_too: bool) {
        let object = self.object;
        for (key, value) in object {
            if (null_too || !value.is_null()) && !known.contains(&key.as_str()) {
                self.problem(key, message);
            }
        }
    }

    /// Member `key` as written (`null` included), marked as read.
    pub(super) fn take(&mut self, key: &str) -> Option<&'a Value> {
        let (k, v) = self.object.get_key_value(key)?;
        self.used.push(k.as_str());
        Some(v)
    }

    /// Member `key` unless it is absent or `null`, marked as read.
    pub(super) fn take_set(&mut self, key: &str) -> Option<&'a Value> {
        self.take(key).filter(|v| !v.is_null())
    }

    /// True when member `key` is present and not `null` (it is not marked as read).
    pub(super) fn is_set(&self, key: &str) -> bool {
        self.object.get(key).is_some_and(|v| !v.is_null())
    }

    /// Member `key`, `null` included; when absent, records `missing` at the object's path.
    pub(super) fn required(&mut self, key: &str, missing: &str) -> Option<&'a Value> {
        let value = self.take(key);
        if value.is_none() {
            self.problem_here(missing);
        }
        value
    }

    /// A required string: absent records `missing` at the object's path, anything but a
    /// string (`null` included) "expected `what`, got <kind>".
    pub(super) fn text(&mut self, key: &str, missing: &str, what: &str) -> Option<&'a str> {
        match self.required(key, missing)? {
            Value::String(s) => Some(s),
            other => {
                self.expected(key, what, other);
                None
            }
        }
    }

    /// A required string that is not blank: as [`Fields::text`], and "must not be empty"
    /// when it is only white space.
    pub(super) fn non_blank(&mut self, key: &str, missing: &str, what: &str) -> Option<String> {
        let s = self.text(key, missing, what)?;
        if s.trim().is_empty() {
            self.problem(key, "must not be empty");
            return None;
        }
        Some(s.to_owned())
    }

    /// An optional string.
    pub(super) fn opt_string(&mut self, key: &str) -> Option<String> {
        match self.take_set(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.expected(key, "a string", other);
                None
            }
        }
    }

    /// An optional boolean (`null` is not accepted).
    pub(super) fn opt_bool(&mut self, key: &str) -> Option<bool> {
        match self.take(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.expected(key, "true or false", other);
                None
            }
        }
    }

    /// An optional object.
    pub(super) fn opt_object(&mut self, key: &str) -> Option<&'a Map<String, Value>> {
        match self.take_set(key)? {
            Value::Object(object) => Some(object),
            other => {
                self.expected(key, "an object", other);
                None
            }
        }
    }

    /// An optional object that is also held to [`limits::MAX_JSON_DEPTH`] and `max_bytes`
    /// (see [`limits::check_json`]); an object past a limit is still returned, its problem
    /// recorded.
    pub(super) fn opt_limited_object(&mut self, key: &str, max_bytes: usize) -> Option<&'a Map<String, Value>> {
        let value = self.take_set(key)?;
        let object = self.opt_object(key)?;
        let path = self.path.key(key);
        limits::check_json(value, &path, max_bytes, self.problems);
        Some(object)
    }

    /// An optional array; anything else records "expected `what`, got <kind>".
    pub(super) fn opt_array(&mut self, key: &str, what: &str) -> Option<&'a [Value]> {
        match self.take_set(key)? {
            Value::Array(items) => Some(items),
            other => {
                self.expected(key, what, other);
                None
            }
        }
    }

    /// An optional object member, read with a reader of its own (at the member's path).
    pub(super) fn nested(&mut self, key: &str) -> Option<Fields<'a, '_>> {
        let object = self.opt_object(key)?;
        let path = self.path.key(key);
        Some(Fields::new(object, &path, self.problems))
    }

    /// One object or a list of objects (`null` items skipped), each read by `read`; absent
    /// or `null` is none.
    pub(super) fn one_or_many<T>(&mut self, key: &str, mut read: impl FnMut(&mut Fields<'a, '_>) -> T) -> Vec<T> {
        let path = self.path.key(key);
        match self.take_set(key) {
            None => Vec::new(),
            Some(Value::Object(object)) => vec![read(&mut Fields::new(object, &path, self.problems))],
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate().filter(|(_, item)| !item.is_null()) {
                    if let Some(mut fields) = Fields::open(item, &path.index(i), self.problems, "expected an object") {
                        out.push(read(&mut fields));
                    }
                }
                out
            }
            Some(other) => {
                self.expected(key, "an object or a list of objects", other);
                Vec::new()
            }
        }
    }

    /// An optional RFC 3339 instant (see [`Timestamp::parse`]).
    pub(super) fn opt_timestamp(&mut self, key: &str) -> Option<Timestamp> {
        match self.take_set(key)? {
            Value::String(s) => Timestamp::parse(s).map_err(|e| self.problem(key, e)).ok(),
            other => {
                self.expected(key, "an RFC 3339 string", other);
                None
            }
        }
    }

    /// An optional UUID in a string; anything but a string records "expected `what`, got
    /// <kind>".
    pub(super) fn opt_uuid(&mut self, key: &str, what: &str) -> Option<Uuid> {
        match self.take_set(key)? {
            Value::String(s) => Uuid::parse_str(s).map_err(|_| self.problem(key, format!("`{s}` is not a UUID"))).ok(),
            other => {
                self.expected(key, what, other);
                None
            }
        }
    }

    /// A set of strings (Prefect's `Set[str]`), returned sorted and without duplicates;
    /// absent is empty, `null` is refused.
    pub(super) fn string_set(&mut self, key: &str) -> Vec<String> {
        let Some(value) = self.take(key) else { return Vec::new() };
        let mut out = Vec::new();
        for (_, s) in self.string_items(key, value, "an array of strings") {
            insert_sorted(&mut out, s);
        }
        out
    }

    /// A list of strings, in order; absent or `null` is empty.
    pub(super) fn strings(&mut self, key: &str) -> Vec<String> {
        self.indexed_strings(key).into_iter().map(|(_, s)| s).collect()
    }

    /// [`Fields::strings`], each with its index in the list as written.
    pub(super) fn indexed_strings(&mut self, key: &str) -> Vec<(usize, String)> {
        match self.take_set(key) {
            Some(value) => self.string_items(key, value, "a list of strings"),
            None => Vec::new(),
        }
    }

    /// The strings of an array, each with its index; a non-string item is reported at its
    /// index and left out.
    fn string_items(&mut self, key: &str, value: &Value, what: &str) -> Vec<(usize, String)> {
        let Value::Array(items) = value else {
            self.expected(key, what, value);
            return Vec::new();
        };
        let path = self.path.key(key);
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => out.push((i, s.clone())),
                other => self.expected_at(&path.index(i), "a string", other),
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
            self.expected(key, "a number of seconds", value);
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
        let v = self.take_set(key)?;
        let n = v.as_number().and_then(integral).and_then(|n| u64::try_from(n).ok());
        match n {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.problem(key, format!("expected a whole number from {min} to {max}, got {v}"));
                None
            }
        }
    }

    /// A whole number that fits an `i32`; absent or null is None.
    pub(super) fn whole_signed(&mut self, key: &str) -> Option<i32> {
        let v = self.take_set(key)?;
        match v.as_number().and_then(integral).and_then(|n| i32::try_from(n).ok()) {
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
        let v = self.take_set(key)?;
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
        self.finish_saying("unknown field");
    }

    /// Reports every member that was not read with `message`.
    pub(super) fn finish_saying(&mut self, message: &str) {
        let unknown: Vec<&str> = self.object.keys().map(String::as_str).filter(|k| !self.used.contains(k)).collect();
        for key in unknown {
            self.problem(key, message);
        }
    }
}

/// Inserts into a sorted list without duplicates.
pub(super) fn insert_sorted(set: &mut Vec<String>, value: String) {
    if let Err(at) = set.binary_search(&value) {
        set.insert(at, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_reader_names_the_member_and_what_it_expected() {
        let value =
            json!({"s": 1, "b": null, "o": [], "t": "noon", "u": "x", "l": ["a", 2], "blank": " ", "extra": null});
        let mut problems = Problems::default();
        let mut f = Fields::open(&value, &JsonPath::root().key("doc"), &mut problems, "a doc must be a JSON object")
            .expect("an object");
        assert_eq!(f.opt_string("s"), None);
        assert_eq!(f.opt_bool("b"), None);
        assert_eq!(f.opt_object("o"), None);
        assert_eq!(f.opt_timestamp("t"), None);
        assert_eq!(f.opt_uuid("u", "a UUID string"), None);
        assert_eq!(f.strings("l"), ["a"]);
        assert_eq!(f.non_blank("blank", "unused", "a string"), None);
        assert_eq!(f.text("name", "the `name` field is required", "a string"), None);
        assert_eq!(f.opt_string("absent"), None);
        f.finish();
        let text = problems.to_string();
        let want = [
            "$.doc.s: expected a string, got a number",
            "$.doc.b: expected true or false, got null",
            "$.doc.o: expected an object, got an array",
            "$.doc.t: ",
            "$.doc.u: `x` is not a UUID",
            "$.doc.l[1]: expected a string, got a number",
            "$.doc.blank: must not be empty",
            "$.doc: the `name` field is required",
            "$.doc.extra: unknown field",
        ];
        for w in want {
            assert!(text.contains(w), "{w} not in {text}");
        }
        assert_eq!(problems.0.len(), want.len(), "{text}");
    }

    #[test]
    fn a_value_that_is_not_an_object_is_named() {
        let mut problems = Problems::default();
        assert!(Fields::open(&json!([1]), &JsonPath::root(), &mut problems, "a doc must be a JSON object").is_none());
        assert_eq!(problems.to_string(), "$: a doc must be a JSON object, got an array");
    }
}
