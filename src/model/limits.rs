//! The limits on every JSON value the server accepts and stores, in one place.
//!
//! One rule: a value is checked where it is accepted (an event, a run's parameters, a flow's
//! output, a deployment's defaults), and also where the server builds one itself (a run-state
//! event carries the run's parameters and output), so that everything stored can be read back.
//! The store's decoder refuses JSON nested deeper than 128 levels; values are held to
//! [`MAX_JSON_DEPTH`], which leaves room for the levels the server wraps around them.

use serde::Serialize;
use serde_json::{Map, Value};

use super::problems::{JsonPath, Problems};

/// Nesting of objects and arrays in any JSON value a client sends (a payload, parameters, an
/// output): `{"a": [1]}` is 2 levels deep. Deeper values are refused naming the path.
pub const MAX_JSON_DEPTH: usize = 64;
/// Bytes in one event as compact JSON (Prefect's `PREFECT_EVENTS_MAXIMUM_SIZE_BYTES`).
pub const MAX_EVENT_BYTES: usize = 1_500_000;
/// Labels on one resource (Prefect's `PREFECT_EVENTS_MAXIMUM_LABELS_PER_RESOURCE`).
pub const LABELS_PER_RESOURCE: usize = 500;
/// Related resources on one event (Prefect's `PREFECT_EVENTS_MAXIMUM_RELATED_RESOURCES`).
pub const RELATED_RESOURCES: usize = 100;
/// Characters in an event name.
pub const EVENT_NAME_LENGTH: usize = 1024;
/// Bytes of a run's parameters as compact JSON: given by hand, rendered by a trigger, or a
/// deployment's defaults. A firing whose rendered parameters are larger is recorded with an
/// error and creates no run.
pub const MAX_PARAMETERS_BYTES: usize = 256 * 1024;
/// Bytes of one trigger definition as compact JSON (nested triggers count toward
/// [`MAX_JSON_DEPTH`] too: a sequence of sequences may nest about 30 deep).
pub const MAX_DEFINITION_BYTES: usize = 1024 * 1024;
/// Bytes of a flow's output as compact JSON.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;
/// Bytes of a failed attempt's error message; longer ones are cut, saying so.
pub const MAX_ERROR_BYTES: usize = 16 * 1024;

/// Checks `value` against [`MAX_JSON_DEPTH`] and `max_bytes` (its size as compact JSON),
/// adding a problem at `path` for each limit it crosses. Costs at most one walk of the value
/// and stops counting bytes past the limit.
pub fn check_json(value: &Value, path: &JsonPath, max_bytes: usize, problems: &mut Problems) {
    check(depth(value), value, path, max_bytes, problems);
}

/// [`check_json`] for an object's fields (e.g. a run's parameters).
pub fn check_object(object: &Map<String, Value>, path: &JsonPath, max_bytes: usize, problems: &mut Problems) {
    let depth = 1 + object.values().map(depth).max().unwrap_or(0);
    check(depth, object, path, max_bytes, problems);
}

fn check(depth: usize, value: &impl Serialize, path: &JsonPath, max_bytes: usize, problems: &mut Problems) {
    if depth > MAX_JSON_DEPTH {
        problems.add_rule(path, format!("is nested {depth} levels deep; at most {MAX_JSON_DEPTH} are allowed"));
        // Too deep to serialize safely: the size is not measured.
        return;
    }
    if let Some(size) = size_past(value, max_bytes) {
        problems.add_rule(path, format!("is {size}+ bytes as JSON; at most {max_bytes} are allowed"));
    }
}

/// How deeply objects and arrays nest (0 for a scalar), without recursion.
pub fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(items) => {
                deepest = deepest.max(d + 1);
                stack.extend(items.iter().map(|item| (item, d + 1)));
            }
            Value::Object(map) => {
                deepest = deepest.max(d + 1);
                stack.extend(map.values().map(|item| (item, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// `Some(bytes written so far)` when `value` as compact JSON is longer than `max` bytes.
fn size_past(value: &impl Serialize, max: usize) -> Option<usize> {
    struct Counter {
        written: usize,
        max: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.written += buf.len();
            if self.written > self.max {
                return Err(std::io::Error::other("past the limit"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { written: 0, max };
    serde_json::to_writer(&mut counter, value).err().map(|_| counter.written)
}

/// Cuts `message` to [`MAX_ERROR_BYTES`] at a character boundary, saying so.
pub fn clip_error(message: String) -> String {
    clip(message, MAX_ERROR_BYTES)
}

/// Cuts `message` to `max` bytes at a character boundary, saying so.
pub fn clip(mut message: String, max: usize) -> String {
    if message.len() > max {
        let mut cut = max;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(&format!(" [cut: longer than {} KiB]", max / 1024));
    }
    message
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nested(levels: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!([v]);
        }
        v
    }

    #[test]
    fn depth_counts_containers() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({"a": [1, {"b": {}}]})), 4);
        assert_eq!(depth(&nested(1_000)), 1_000);
    }

    #[test]
    fn values_past_either_limit_are_named() {
        let mut problems = Problems::default();
        check_json(&nested(MAX_JSON_DEPTH), &JsonPath::root().key("payload"), 1000, &mut problems);
        assert!(problems.is_empty(), "{problems}");
        check_json(&nested(MAX_JSON_DEPTH + 1), &JsonPath::root().key("payload"), 1000, &mut problems);
        check_json(&json!({"s": "x".repeat(2000)}), &JsonPath::root().key("output"), 1000, &mut problems);
        let text = problems.to_string();
        assert!(text.contains("$.payload") && text.contains("65 levels deep"), "{text}");
        assert!(text.contains("$.output") && text.contains("at most 1000 are allowed"), "{text}");
    }

    #[test]
    fn clipping_keeps_characters_whole() {
        let clipped = clip("é".repeat(10), 5);
        assert!(clipped.starts_with("éé") && clipped.contains("[cut"), "{clipped}");
        assert_eq!(clip("short".into(), 5), "short");
    }
}
