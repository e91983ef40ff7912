//! Jinja templates (minijinja) for run parameters and trigger filters.
//!
//! Parameters follow Prefect's `RunDeployment` rules (SEMANTICS.md, "Parameters"): every string
//! containing `{{` or `{%` is a template, a string that is exactly one `{{ expr }}` keeps the
//! JSON type of its value, and any other template renders as text. Where Prefect fails the
//! whole parameter set on a single expression (a datetime, a UUID, an undefined value,
//! dict-method shadowing, the `| tojson` precedence trap), tripwire renders the value the user
//! means (SEMANTICS.md, "tripwire's deviations", 2).
//!
//! Every template runs in one shared, sandboxed environment: undefined values are chainable,
//! each rendering has [`TEMPLATE_FUEL`] instructions of fuel, auto-escaping is off (parameters
//! are JSON, not HTML), and Python's string, dict and list methods are available.
//!
//! Templates come from untrusted users and render on the engine's core thread, so memory is
//! bounded as well as time: every operation that can build more than its input is checked
//! before it allocates ([`TEMPLATE_MAX_VALUE_BYTES`] per value, [`TEMPLATE_MAX_ALLOC_BYTES`]
//! per rendering, see `budget.rs`), operators are rewritten into checked calls at compile time
//! (`rewrite.rs`), templates are at most [`TEMPLATE_MAX_SOURCE_BYTES`] long, and rendered
//! parameters at most [`MAX_RENDERED_PARAMETERS_BYTES`] of JSON.

mod budget;
#[cfg(test)]
mod budget_tests;
mod checked;
mod rewrite;

pub use budget::{
    TEMPLATE_MAX_ALLOC_BYTES, TEMPLATE_MAX_ITEMS, TEMPLATE_MAX_SOURCE_BYTES, TEMPLATE_MAX_VALUE_BYTES,
    TEMPLATE_MAX_WORK, VALUE_COST, WORK_BYTES_PER_UNIT, WORK_PER_NODE,
};
pub use checked::TEMPLATE_MAX_RANGE;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, LazyLock};

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Datelike, Timelike, Utc};
use minijinja::value::{from_args, DynObject, Enumerator, Kwargs, Object, ObjectRepr, Rest, Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Expression, Output, State, UndefinedBehavior};
use serde_json::Value as Json;

use crate::model::{Event, Firing, JsonPath, Problems, Resource, Timestamp, TriggerDefinition};

/// Fuel per rendering (minijinja `set_fuel`), a documented limit: roughly the number of
/// instructions one template or filter may execute before it fails with "ran out of fuel".
pub const TEMPLATE_FUEL: u64 = 100_000;

/// Nesting depth of macros, loops and conditionals a template may reach at run time.
const RECURSION_LIMIT: usize = 100;

/// Nesting depth of a value converted to JSON.
const JSON_DEPTH_LIMIT: usize = 128;

/// The widest indentation `tojson(indent=n)` accepts.
const MAX_JSON_INDENT: usize = 64;

/// The most bytes the rendered parameters of one firing may take as JSON: the model's limit
/// on any run's parameters, 256 KiB. Past it [`Parameters::render`] fails with a
/// [`RenderError`] at the parameters' path ("rendered parameters are N bytes of JSON; at most
/// 262144 bytes (MAX_RENDERED_PARAMETERS_BYTES)"), so the firing records the error and
/// creates no run.
pub const MAX_RENDERED_PARAMETERS_BYTES: usize = crate::model::limits::MAX_PARAMETERS_BYTES;

/// A rendering failure (a runtime error; syntax errors are caught at compile time).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RenderError {
    /// The JSON path of the failing template string, e.g. `$[0].parameters.user_id`.
    pub path: String,
    /// What went wrong, e.g. "unknown filter: filter foo is unknown".
    pub message: String,
}

/// What a template sees (Prefect's `RunDeployment` context).
pub struct TemplateContext<'a> {
    /// Exposed as `automation`: the definition, serialized.
    pub automation: &'a TriggerDefinition,
    /// Exposed as `event`: the triggering event, or none (a proactive window no event opened).
    pub event: Option<Arc<Event>>,
    /// Exposed as `labels`: the firing's bucket labels. Besides `labels['team']` and
    /// `labels.team`, dotted labels can be walked as in Prefect's `LabelDiver`:
    /// `labels.prefect.resource.id`.
    pub labels: &'a BTreeMap<String, String>,
    /// Exposed as `firing`: the firing, serialized, with `firing.triggering_labels` (the labels
    /// as a plain dict) and `firing.triggering_event` (the event object, or none).
    pub firing: &'a Firing,
    /// Exposed as `events`: every event behind the firing.
    pub events: Vec<Arc<Event>>,
    /// Exposed as `filter`: the payload of the scope filter that let a scoped event through
    /// (undefined otherwise).
    pub filter: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

// ---------------------------------------------------------------------------------------------
// The environment
// ---------------------------------------------------------------------------------------------

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_formatter(python_formatter);
    env.set_unknown_method_callback(checked::method_callback);
    // pluralize, filesizeformat, striptags, cycler, joiner (no randomness: the contrib `rand`
    // feature is off, so rendering stays deterministic).
    minijinja_contrib::add_to_environment(&mut env);
    // Checked operators, functions, filters, tests (after the builtins they replace).
    checked::install(&mut env);
    env.add_filter("truncate", truncate_filter);
    env.add_filter("tojson", tojson_filter);
    env.add_filter("string", string_filter);
    // A template bug on demand, for the tests of what a panic while rendering does.
    #[cfg(test)]
    env.add_filter("test_panic", |message: String| -> Result<Value, Error> { panic!("{message}") });
    env
});

/// Text output as Python's `str()` prints these: `None`, `True`, `False`. Every emission
/// (also inside captures, filter blocks and macros) is charged to the rendering's budget.
fn python_formatter(out: &mut Output, state: &State, value: &Value) -> Result<(), Error> {
    let text = match value.kind() {
        ValueKind::None => "None",
        ValueKind::Bool if value.is_true() => "True",
        ValueKind::Bool => "False",
        _ => {
            budget::charge(&"output", budget::display_len(&"output", value)?)?;
            return minijinja::escape_formatter(out, state, value);
        }
    };
    out.write_str(text).map_err(Error::from)
}

/// `string`: like the builtin, but none and booleans read as Python prints them.
fn string_filter(value: &Value) -> Result<Value, Error> {
    Ok(match value.kind() {
        ValueKind::String => value.clone(),
        ValueKind::None => Value::from("None"),
        ValueKind::Bool if value.is_true() => Value::from("True"),
        ValueKind::Bool => Value::from("False"),
        _ => {
            let mut out = budget::Capped::string(TEMPLATE_MAX_VALUE_BYTES);
            let result = fmt::write(&mut out, format_args!("{value}"));
            Value::from(out.finish(&"`string`", result)?)
        }
    })
}

/// Jinja2's `truncate(s, length=255, killwords=False, end='...', leeway=5)`, exactly.
fn truncate_filter(value: &Value, args: Rest<Value>) -> Result<Value, Error> {
    type Args = (Option<i64>, Option<bool>, Option<String>, Option<i64>, Kwargs);
    let (length, killwords, end, leeway, kwargs): Args = from_args(&args)?;
    let length = match length {
        Some(n) => n,
        None => kwargs.get::<Option<i64>>("length")?.unwrap_or(255),
    };
    let killwords = match killwords {
        Some(k) => k,
        None => kwargs.get::<Option<bool>>("killwords")?.unwrap_or(false),
    };
    let end = match end {
        Some(e) => e,
        None => kwargs.get::<Option<String>>("end")?.unwrap_or_else(|| "...".to_owned()),
    };
    let leeway = match leeway {
        Some(n) => n,
        None => kwargs.get::<Option<i64>>("leeway")?.unwrap_or(5),
    };
    kwargs.assert_all_used()?;
    let end_len = end.chars().count() as i64;
    if length < end_len {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("truncate: expected length >= {end_len}, got {length}"),
        ));
    }
    if leeway < 0 {
        return Err(Error::new(ErrorKind::InvalidOperation, format!("truncate: expected leeway >= 0, got {leeway}")));
    }
    let value = budget::stringify(&"`truncate`", value)?;
    let s = match value.as_str() {
        Some(s) => s.to_owned(),
        None => value.to_string(),
    };
    budget::charge(&"`truncate`", (s.len() as u128).saturating_add(end.len() as u128))?;
    if (s.chars().count() as i64) <= length.saturating_add(leeway) {
        return Ok(Value::from(s));
    }
    let keep = usize::try_from(length - end_len).unwrap_or(0);
    let head: String = s.chars().take(keep).collect();
    let head = if killwords {
        head
    } else {
        match head.rsplit_once(' ') {
            Some((before, _)) => before.to_owned(),
            None => head,
        }
    };
    Ok(Value::from(head + &end))
}

/// `tojson(indent=None)` as Jinja2 writes it (sorted keys, `", "` and `": "` separators,
/// ASCII only, and `<`, `>`, `&`, `'` escaped), over tripwire's JSON view of the value (an
/// event is its JSON, a datetime its ISO 8601 string).
fn tojson_filter(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match indent {
        Some(indent) => Some(indent),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) if v.kind() == ValueKind::Bool => v.is_true().then(|| "  ".to_owned()),
        Some(v) if v.kind() == ValueKind::String => {
            Some(v.as_str().unwrap_or("").chars().take(MAX_JSON_INDENT).collect())
        }
        Some(v) => {
            let n = i64::try_from(v)
                .map_err(|_| Error::new(ErrorKind::InvalidOperation, "tojson: indent must be a number"))?;
            Some(" ".repeat(n.clamp(0, MAX_JSON_INDENT as i64) as usize))
        }
    };
    let json = to_json(value, 0).map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    // Indentation can make the text much longer than the value: written within the limits.
    let mut out = budget::Capped::plain_string(TEMPLATE_MAX_VALUE_BYTES);
    let result = write_python_json(&json, indent.as_deref(), 0, &mut out);
    Ok(Value::from_safe_string(out.finish(&"`tojson`", result)?))
}

fn write_python_json(value: &Json, indent: Option<&str>, level: usize, out: &mut impl fmt::Write) -> fmt::Result {
    let newline = |out: &mut dyn fmt::Write, level: usize| -> fmt::Result {
        if let Some(indent) = indent {
            out.write_char('\n')?;
            for _ in 0..level {
                out.write_str(indent)?;
            }
        }
        Ok(())
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match value {
        Json::Null => out.write_str("null"),
        Json::Bool(b) => out.write_str(if *b { "true" } else { "false" }),
        Json::Number(n) => write!(out, "{n}"),
        Json::String(s) => write_python_json_string(s, out),
        Json::Array(items) if items.is_empty() => out.write_str("[]"),
        Json::Array(items) => {
            out.write_char('[')?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_str(item_sep)?;
                }
                newline(out, level + 1)?;
                write_python_json(item, indent, level + 1, out)?;
            }
            newline(out, level)?;
            out.write_char(']')
        }
        Json::Object(map) if map.is_empty() => out.write_str("{}"),
        Json::Object(map) => {
            let mut entries: Vec<(&String, &Json)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.write_char('{')?;
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.write_str(item_sep)?;
                }
                newline(out, level + 1)?;
                write_python_json_string(key, out)?;
                out.write_str(": ")?;
                write_python_json(item, indent, level + 1, out)?;
            }
            newline(out, level)?;
            out.write_char('}')
        }
    }
}

fn write_python_json_string(s: &str, out: &mut impl fmt::Write) -> fmt::Result {
    out.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            '\u{08}' => out.write_str("\\b")?,
            '\u{0c}' => out.write_str("\\f")?,
            '<' | '>' | '&' | '\'' => write!(out, "\\u{:04x}", c as u32)?,
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(out, "\\u{:04x}", unit)?;
                }
            }
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

// ---------------------------------------------------------------------------------------------
// Template objects: events, resources, labels, datetimes
// ---------------------------------------------------------------------------------------------

/// The event as a template object: `event.id` (the UUID string), `event.occurred` (a datetime:
/// `.isoformat()`, `.strftime(fmt)`, `.timestamp()`, `.year` ...), `event.event`,
/// `event.resource` and `event.related[i]` (dicts of labels with `.id`, `.name`, `.role` and
/// `.labels`), `event.payload`, `event.follows`, `event.received`. `event | tojson` is the
/// event's JSON.
pub fn event_value(event: &Arc<Event>) -> Value {
    Value::from_object(EventObject(Arc::clone(event), Arc::new(PayloadObject::new(event))))
}

/// The event, and its payload as one object for the whole rendering (so that each payload
/// value is converted once, however often a loop reads it).
#[derive(Debug)]
struct EventObject(Arc<Event>, Arc<PayloadObject>);

const EVENT_FIELDS: &[&str] = &["id", "occurred", "event", "resource", "related", "payload", "follows"];
const RECEIVED_EVENT_FIELDS: &[&str] =
    &["id", "occurred", "event", "resource", "related", "payload", "follows", "received"];

impl Object for EventObject {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        let e = &self.0;
        Some(match key {
            "id" => Value::from(e.id.to_string()),
            "occurred" => datetime_value(e.occurred),
            "event" => Value::from(e.event.as_str()),
            "resource" => Value::from_object(ResourceObject { event: Arc::clone(e), related: None }),
            "related" => Value::from(
                (0..e.related.len())
                    .map(|i| Value::from_object(ResourceObject { event: Arc::clone(e), related: Some(i) }))
                    .collect::<Vec<_>>(),
            ),
            "payload" => Value::from_dyn_object(self.1.clone()),
            "follows" => e.follows.map_or(Value::from(()), |id| Value::from(id.to_string())),
            "received" => e.received.map_or(Value::from(()), datetime_value),
            // Prefect's `Event` properties.
            "involved_resources" => Value::from(
                std::iter::once(None)
                    .chain((0..e.related.len()).map(Some))
                    .map(|related| Value::from_object(ResourceObject { event: Arc::clone(e), related }))
                    .collect::<Vec<_>>(),
            ),
            "resource_in_role" => {
                let mut by_role: Vec<(String, Value)> = Vec::new();
                for (i, r) in e.related.iter().enumerate() {
                    let role = r.role().unwrap_or("").to_owned();
                    if !by_role.iter().any(|(k, _)| *k == role) {
                        by_role.push((
                            role,
                            Value::from_object(ResourceObject { event: Arc::clone(e), related: Some(i) }),
                        ));
                    }
                }
                Value::from_iter(by_role)
            }
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(if self.0.received.is_some() { RECEIVED_EVENT_FIELDS } else { EVENT_FIELDS })
    }
}

/// The payload, converted key by key as a template reads it, each key once (a 1 MB value read
/// in a loop would otherwise be copied on every read, outside every budget).
#[derive(Debug)]
struct PayloadObject(Arc<Event>, std::sync::Mutex<std::collections::HashMap<String, Value>>);

impl PayloadObject {
    fn new(event: &Arc<Event>) -> PayloadObject {
        PayloadObject(Arc::clone(event), std::sync::Mutex::default())
    }

    fn lookup(&self, key: &str) -> Option<Value> {
        let json = self.0.payload.get(key)?;
        let Ok(mut converted) = self.1.lock() else { return Some(Value::from_serialize(json)) };
        Some(converted.entry(key.to_owned()).or_insert_with(|| Value::from_serialize(json)).clone())
    }
}

impl Object for PayloadObject {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.lookup(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        self.lookup(key)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.payload.keys().map(|k| Value::from(k.as_str())).collect())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.0.payload.len())
    }
}

/// A resource of an event (the primary one, or `related[i]`): a dict of its labels, plus
/// Prefect's properties `.id`, `.name`, `.role` and `.labels`.
#[derive(Debug)]
struct ResourceObject {
    event: Arc<Event>,
    related: Option<usize>,
}

impl ResourceObject {
    fn resource(&self) -> Option<&Resource> {
        match self.related {
            None => Some(&self.event.resource),
            Some(i) => self.event.related.get(i),
        }
    }
}

impl Object for ResourceObject {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        let resource = self.resource()?;
        match key {
            "id" => Some(Value::from(resource.id())),
            "name" => Some(resource.name().map_or(Value::from(()), Value::from)),
            "role" if self.related.is_some() => Some(resource.role().map_or(Value::from(()), Value::from)),
            "labels" => Some(Value::from_object(LabelTree(
                resource.labels().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            ))),
            _ => resource.get(key).map(Value::from),
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.resource() {
            Some(r) => Enumerator::Values(r.labels().map(|(k, _)| Value::from(k)).collect()),
            None => Enumerator::Empty,
        }
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.resource().map_or(0, Resource::len))
    }
}

/// Labels as Prefect's `LabelDiver` shows them: a plain dict of the labels, whose dotted
/// labels can also be walked by attribute (`labels.prefect.resource.id`).
#[derive(Debug)]
struct LabelTree(Vec<(String, String)>);

impl Object for LabelTree {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        if let Some((_, v)) = self.0.iter().find(|(k, _)| k == key) {
            return Some(Value::from(v.as_str()));
        }
        let below: Vec<(String, String)> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(key)?.strip_prefix('.')?;
                Some((rest.to_owned(), v.clone()))
            })
            .collect();
        (!below.is_empty()).then(|| Value::from_object(LabelTree(below)))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.iter().map(|(k, _)| Value::from(k.as_str())).collect())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.0.len())
    }
}

fn datetime_value(t: Timestamp) -> Value {
    Value::from_object(DateTimeObject(t.to_datetime()))
}

/// A UTC datetime that prints as Python's `str(datetime)` does.
#[derive(Debug)]
struct DateTimeObject(DateTime<Utc>);

impl DateTimeObject {
    fn time_part(&self, timespec: &str) -> Result<String, Error> {
        let t = &self.0;
        let (h, m, s) = (t.hour(), t.minute(), t.second());
        let micros = t.timestamp_subsec_micros();
        Ok(match timespec {
            "auto" if micros == 0 => format!("{h:02}:{m:02}:{s:02}"),
            "auto" | "microseconds" => format!("{h:02}:{m:02}:{s:02}.{micros:06}"),
            "milliseconds" => format!("{h:02}:{m:02}:{s:02}.{:03}", micros / 1000),
            "seconds" => format!("{h:02}:{m:02}:{s:02}"),
            "minutes" => format!("{h:02}:{m:02}"),
            "hours" => format!("{h:02}"),
            other => return Err(Error::new(ErrorKind::InvalidOperation, format!("unknown timespec `{other}`"))),
        })
    }

    fn date_part(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.0.year(), self.0.month(), self.0.day())
    }

    fn isoformat(&self, sep: &str, timespec: &str) -> Result<String, Error> {
        Ok(format!("{}{sep}{}+00:00", self.date_part(), self.time_part(timespec)?))
    }

    fn strftime(&self, format: &str) -> Result<String, Error> {
        // Python's `%f` is six digits of microseconds; chrono's is nanoseconds.
        let mut translated = String::with_capacity(format.len() + 4);
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            translated.push(c);
            if c == '%' {
                match chars.next() {
                    Some('f') => translated.push_str("6f"),
                    Some(d) => translated.push(d),
                    None => {}
                }
            }
        }
        let items: Vec<Item<'_>> = StrftimeItems::new(&translated).collect();
        if items.iter().any(|i| matches!(i, Item::Error)) {
            return Err(Error::new(ErrorKind::InvalidOperation, format!("strftime: invalid format `{format}`")));
        }
        let mut out = String::new();
        fmt::Write::write_fmt(&mut out, format_args!("{}", self.0.format_with_items(items.iter())))
            .map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("strftime: cannot format `{format}`")))?;
        Ok(out)
    }
}

impl Object for DateTimeObject {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        let t = &self.0;
        Some(match key {
            "year" => Value::from(t.year()),
            "month" => Value::from(t.month()),
            "day" => Value::from(t.day()),
            "hour" => Value::from(t.hour()),
            "minute" => Value::from(t.minute()),
            "second" => Value::from(t.second()),
            "microsecond" => Value::from(t.timestamp_subsec_micros()),
            _ => return None,
        })
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn call_method(self: &Arc<Self>, _state: &State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        match method {
            "isoformat" => {
                let (sep, kwargs): (Option<String>, Kwargs) = from_args(args)?;
                let sep = match sep {
                    Some(sep) => sep,
                    None => kwargs.get::<Option<String>>("sep")?.unwrap_or_else(|| "T".to_owned()),
                };
                let timespec = kwargs.get::<Option<String>>("timespec")?.unwrap_or_else(|| "auto".to_owned());
                kwargs.assert_all_used()?;
                Ok(Value::from(self.isoformat(&sep, &timespec)?))
            }
            "strftime" => {
                let (format,): (String,) = from_args(args)?;
                Ok(Value::from(self.strftime(&format)?))
            }
            "timestamp" => {
                let () = from_args(args)?;
                Ok(Value::from(self.0.timestamp_micros() as f64 / 1_000_000.0))
            }
            "date" => {
                let () = from_args(args)?;
                Ok(Value::from(self.date_part()))
            }
            "time" => {
                let () = from_args(args)?;
                Ok(Value::from(self.time_part("auto")?))
            }
            "weekday" => {
                let () = from_args(args)?;
                Ok(Value::from(self.0.weekday().num_days_from_monday()))
            }
            "isoweekday" => {
                let () = from_args(args)?;
                Ok(Value::from(self.0.weekday().number_from_monday()))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn custom_cmp(self: &Arc<Self>, other: &DynObject) -> Option<std::cmp::Ordering> {
        Some(self.0.cmp(&other.downcast_ref::<Self>()?.0))
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.isoformat(" ", "auto") {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Values to JSON
// ---------------------------------------------------------------------------------------------

/// The JSON a single-expression template means: undefined and none are null, a datetime its
/// ISO 8601 string, an event its JSON; a function or other opaque object is an error.
fn to_json(value: &Value, depth: usize) -> Result<Json, String> {
    if depth > JSON_DEPTH_LIMIT {
        return Err(format!("a value nested more than {JSON_DEPTH_LIMIT} levels deep cannot be converted to JSON"));
    }
    // Every node is charged (a value can share one list many times over, and its JSON would
    // copy it each time).
    let charge = |bytes: u128| budget::charge(&"converting to JSON", bytes).map_err(|e| plain_error(&e));
    charge(budget::VALUE_COST + value.as_str().map_or(0, |s| s.len() as u128))?;
    if let Some(obj) = value.as_object() {
        if let Some(e) = obj.downcast_ref::<EventObject>() {
            charge(json_len(&*e.0).saturating_mul(2))?;
            return serde_json::to_value(&*e.0).map_err(|e| e.to_string());
        }
        if let Some(p) = obj.downcast_ref::<PayloadObject>() {
            charge(json_len(&p.0.payload).saturating_mul(2))?;
            return Ok(Json::Object(p.0.payload.clone()));
        }
        if let Some(t) = obj.downcast_ref::<DateTimeObject>() {
            return t.isoformat("T", "auto").map(Json::String).map_err(|e| e.to_string());
        }
    }
    Ok(match value.kind() {
        ValueKind::Undefined | ValueKind::None => Json::Null,
        ValueKind::Bool => Json::Bool(value.is_true()),
        ValueKind::String => Json::String(value.as_str().unwrap_or_default().to_owned()),
        ValueKind::Number => number_to_json(value)?,
        ValueKind::Seq | ValueKind::Iterable => {
            let items = value.try_iter().map_err(|e| e.to_string())?;
            Json::Array(items.map(|item| to_json(&item, depth + 1)).collect::<Result<_, _>>()?)
        }
        ValueKind::Map => {
            let mut map = serde_json::Map::new();
            if let Some(pairs) = value.as_object().and_then(|o| o.try_iter_pairs()) {
                for (k, v) in pairs {
                    let key = match k.as_str() {
                        Some(s) => s.to_owned(),
                        None => k.to_string(),
                    };
                    map.insert(key, to_json(&v, depth + 1)?);
                }
            }
            Json::Object(map)
        }
        ValueKind::Bytes => return Err("bytes cannot be converted to JSON".to_owned()),
        ValueKind::Plain => {
            return Err("a function (or another object without a JSON form) cannot be converted to JSON".to_owned())
        }
        ValueKind::Invalid => return Err(value.to_string()),
        other => return Err(format!("a value of type {other} cannot be converted to JSON")),
    })
}

/// The length of `value` as JSON, counted without writing it.
fn json_len<T: serde::Serialize + ?Sized>(value: &T) -> u128 {
    struct Count(u128);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len() as u128);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        // Not serializable: nothing will be built from it.
        Err(_) => 0,
    }
}

/// A minijinja error as "kind: detail", without location.
fn plain_error(err: &Error) -> String {
    match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    }
}

fn number_to_json(value: &Value) -> Result<Json, String> {
    if value.is_integer() {
        if let Ok(i) = i64::try_from(value.clone()) {
            return Ok(Json::from(i));
        }
        if let Ok(u) = u64::try_from(value.clone()) {
            return Ok(Json::from(u));
        }
    }
    let f = f64::try_from(value.clone()).map_err(|e| e.to_string())?;
    serde_json::Number::from_f64(f)
        .map(Json::Number)
        .ok_or_else(|| format!("{f} is not a finite number and cannot be converted to JSON"))
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A minijinja error as one line: "kind: detail", the line for multi-line templates, and the
/// errors behind it.
fn describe(err: &Error, source: &str) -> String {
    let mut message = match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    };
    if source.contains('\n') {
        if let Some(line) = err.line() {
            message.push_str(&format!(" (line {line})"));
        }
    }
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message
}

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

/// A compiled `parameters` value: any JSON whose strings are templates (in nested objects AND
/// lists).
#[derive(Clone)]
pub struct Parameters {
    source: Arc<Json>,
    path: String,
    root: Arc<Node>,
    /// The context names the templates read: only those are built for a rendering.
    used: Arc<BTreeSet<String>>,
}

enum Node {
    /// JSON without templates, passed through.
    Literal(Json),
    /// `{{ expr }}` alone: its value, as JSON.
    Expression {
        path: String,
        source: String,
        expr: Expression<'static, 'static>,
    },
    /// Any other template: rendered as a string.
    Text {
        path: String,
        source: String,
        /// The source with checked operators (see `rewrite.rs`), parsed once.
        template: TextTemplate,
    },
    /// A template with a syntax error (already reported at compile time).
    Broken {
        path: String,
        message: String,
    },
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// The inner expression of a single-expression template (Prefect's test: the trimmed string
/// starts with `{{`, ends with `}}` and contains one `{{`), without whitespace-control marks.
fn single_expression(s: &str) -> Option<&str> {
    let t = s.trim();
    if !(t.starts_with("{{") && t.ends_with("}}") && t.matches("{{").count() == 1) {
        return None;
    }
    let inner = t.get(2..t.len().checked_sub(2)?)?;
    let inner = inner.strip_prefix(['-', '+']).unwrap_or(inner);
    Some(inner.strip_suffix(['-', '+']).unwrap_or(inner))
}

/// True when `expr`, lexed as minijinja lexes an expression, has a variable end (`}}`, `-}}`
/// or `+}}`) outside brackets and strings. Such an expression is never valid, and minijinja
/// 2.24's expression lexer panics ("empty lexer stack") on any input after one, so it must not
/// be handed to `compile_expression`.
fn has_top_level_variable_end(expr: &str) -> bool {
    let bytes = expr.as_bytes();
    let mut balance: isize = 0;
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        if balance == 0 {
            let rest = &bytes[i..];
            if rest.starts_with(b"}}") || rest.starts_with(b"-}}") || rest.starts_with(b"+}}") {
                return true;
            }
        }
        match c {
            b'(' | b'[' | b'{' => balance += 1,
            b')' | b']' | b'}' => balance -= 1,
            b'\'' | b'"' => {
                // Skip the string literal, escapes included, as the lexer does.
                i += 1;
                while let Some(&d) = bytes.get(i) {
                    if d == b'\\' {
                        i += 1;
                    } else if d == c {
                        break;
                    }
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

/// Compiles a standalone expression (see [`has_top_level_variable_end`]), with its operators
/// rewritten into checked calls (see `rewrite.rs`).
fn compile_expression(source: &str) -> Result<Expression<'static, 'static>, Error> {
    if has_top_level_variable_end(source) {
        return Err(Error::new(ErrorKind::SyntaxError, "unexpected `}}` in an expression"));
    }
    let rewritten = rewrite::expression(source)?;
    if has_top_level_variable_end(&rewritten) {
        return Err(Error::new(ErrorKind::SyntaxError, "unexpected `}}` in an expression"));
    }
    ENV.compile_expression_owned(rewritten)
}

/// Prefect's `maybe_template`.
fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// A text template parsed once, at compile time: rendering runs its compiled instructions and
/// never parses. (The shared environment can only hold `'static` sources, so each template
/// lives in a copy of it: the copy shares its filters, tests and globals, and holds only this
/// template.)
#[derive(Clone)]
struct TextTemplate(Arc<Environment<'static>>);

impl TextTemplate {
    /// The name of the one template in the copy (minijinja's name for a template from a string).
    const NAME: &'static str = "<string>";

    /// Rewrites `source` (see `rewrite.rs`) and parses the result. Returns the template and the
    /// names it reads.
    fn compile(source: &str) -> Result<(TextTemplate, std::collections::HashSet<String>), Error> {
        let rewritten = rewrite::template(source)?;
        let mut env = ENV.clone();
        env.add_template_owned(Self::NAME, rewritten)?;
        let names = env.get_template(Self::NAME)?.undeclared_variables(false);
        Ok((TextTemplate(Arc::new(env)), names))
    }

    /// Renders with this context.
    fn render<S: serde::Serialize>(&self, ctx: S) -> Result<String, Error> {
        self.0.get_template(Self::NAME)?.render(ctx)
    }
}

/// Compiles one value; the top-level names its templates read are added to `used`.
fn compile_node(value: &Json, path: &JsonPath, problems: &mut Problems, used: &mut BTreeSet<String>) -> Node {
    match value {
        Json::String(s) if is_template(s) => {
            if let Some(inner) = single_expression(s) {
                // What does not parse as one expression (e.g. `{{ a }} b }}`) is a text template.
                if let Ok(expr) = compile_expression(inner) {
                    used.extend(expr.undeclared_variables(false));
                    return Node::Expression { path: path.to_string(), source: s.clone(), expr };
                }
            }
            match TextTemplate::compile(s) {
                Ok((template, names)) => {
                    used.extend(names);
                    Node::Text { path: path.to_string(), source: s.clone(), template }
                }
                Err(e) => {
                    let message = format!("invalid template: {}", describe(&e, s));
                    problems.add(path, message.clone());
                    Node::Broken { path: path.to_string(), message }
                }
            }
        }
        Json::Array(items) => {
            let nodes: Vec<Node> =
                items.iter().enumerate().map(|(i, v)| compile_node(v, &path.index(i), problems, used)).collect();
            if nodes.iter().all(|n| matches!(n, Node::Literal(_))) {
                Node::Literal(value.clone())
            } else {
                Node::Array(nodes)
            }
        }
        Json::Object(map) => {
            let nodes: Vec<(String, Node)> =
                map.iter().map(|(k, v)| (k.clone(), compile_node(v, &path.key(k), problems, used))).collect();
            if nodes.iter().all(|(_, n)| matches!(n, Node::Literal(_))) {
                Node::Literal(value.clone())
            } else {
                Node::Object(nodes)
            }
        }
        other => Node::Literal(other.clone()),
    }
}

fn render_node(node: &Node, ctx: &Value) -> Result<Json, RenderError> {
    match node {
        Node::Literal(v) => Ok(v.clone()),
        Node::Expression { path, source, expr } => {
            let value =
                expr.eval(ctx).map_err(|e| RenderError { path: path.clone(), message: describe(&e, source) })?;
            to_json(&value, 0).map_err(|message| RenderError { path: path.clone(), message })
        }
        Node::Text { path, source, template } => template
            .render(ctx)
            .map(Json::String)
            .map_err(|e| RenderError { path: path.clone(), message: describe(&e, source) }),
        Node::Broken { path, message } => Err(RenderError { path: path.clone(), message: message.clone() }),
        Node::Array(items) => items.iter().map(|n| render_node(n, ctx)).collect::<Result<_, _>>().map(Json::Array),
        Node::Object(entries) => {
            let mut map = serde_json::Map::with_capacity(entries.len());
            for (k, n) in entries {
                map.insert(k.clone(), render_node(n, ctx)?);
            }
            Ok(Json::Object(map))
        }
    }
}

/// The template context, holding only the names in `used` (building the firing and the
/// definition as template values costs more than most renderings).
fn context_value(ctx: &TemplateContext<'_>, used: &BTreeSet<String>) -> Result<Value, String> {
    let wants = |name: &str| used.contains(name);
    let event = ctx.event.as_ref().map_or(Value::from(()), event_value);
    let firing = if wants("firing") || wants("firings") { firing_value(ctx, &event)? } else { Value::UNDEFINED };
    let mut entries: Vec<(&str, Value)> = vec![("event", event)];
    if wants("automation") {
        entries.push(("automation", Value::from_serialize(ctx.automation)));
    }
    if wants("labels") {
        let labels = LabelTree(ctx.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        entries.push(("labels", Value::from_object(labels)));
    }
    if wants("firings") {
        // Prefect's `firings` lists the firing and the child firings behind it; tripwire
        // keeps only the events of child firings, so it lists the firing itself.
        entries.push(("firings", Value::from(vec![firing.clone()])));
    }
    if wants("firing") {
        entries.push(("firing", firing));
    }
    if wants("events") {
        entries.push(("events", Value::from(ctx.events.iter().map(event_value).collect::<Vec<_>>())));
    }
    if let Some(filter) = ctx.filter.filter(|_| wants("filter")) {
        entries.push(("filter", Value::from_serialize(filter)));
    }
    Ok(Value::from_iter(entries))
}

/// `firing`: the firing serialized, with datetimes, the event object and the labels as a dict.
fn firing_value(ctx: &TemplateContext<'_>, event: &Value) -> Result<Value, String> {
    let plain_labels = Value::from_iter(ctx.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    Ok(match serde_json::to_value(ctx.firing).map_err(|e| format!("cannot expose the firing to templates: {e}"))? {
        Json::Object(fields) => {
            let mut entries: Vec<(String, Value)> = fields
                .into_iter()
                .map(|(k, v)| {
                    let value = match k.as_str() {
                        "triggering_event" => event.clone(),
                        "at" => datetime_value(ctx.firing.at),
                        "triggered" => datetime_value(ctx.firing.triggered),
                        _ => Value::from_serialize(&v),
                    };
                    (k, value)
                })
                .collect();
            if !entries.iter().any(|(k, _)| k == "triggering_event") {
                entries.push(("triggering_event".to_owned(), event.clone()));
            }
            entries.push(("triggering_labels".to_owned(), plain_labels));
            Value::from_iter(entries)
        }
        other => Value::from_serialize(&other),
    })
}

impl Parameters {
    /// Compiles every template string; each syntax error is added to `problems` at the JSON
    /// path of the string (e.g. `$[0].parameters.user_id`, `$[0].parameters.list[2]`), using
    /// `path` as the path of the parameters value itself.
    pub fn compile(value: &serde_json::Value, path: &JsonPath, problems: &mut Problems) -> Parameters {
        let mut used = BTreeSet::new();
        let root = Arc::new(compile_node(value, path, problems, &mut used));
        Parameters { source: Arc::new(value.clone()), path: path.to_string(), root, used: Arc::new(used) }
    }

    /// Renders into JSON. The first template that fails fails the whole value, as in Prefect.
    pub fn render(&self, ctx: &TemplateContext<'_>) -> Result<serde_json::Value, RenderError> {
        if let Node::Literal(v) = &*self.root {
            return Ok(v.clone());
        }
        budget::start();
        let ctx = context_value(ctx, &self.used).map_err(|message| RenderError { path: self.path.clone(), message })?;
        let rendered = render_node(&self.root, &ctx)?;
        let bytes = json_len(&rendered);
        if bytes > MAX_RENDERED_PARAMETERS_BYTES as u128 {
            return Err(RenderError {
                path: self.path.clone(),
                message: format!(
                    "rendered parameters are {bytes} bytes of JSON; at most {MAX_RENDERED_PARAMETERS_BYTES} bytes \
                     (MAX_RENDERED_PARAMETERS_BYTES)"
                ),
            });
        }
        // Stored with the firing: held to the same depth as any other value.
        let depth = crate::model::limits::depth(&rendered);
        if depth > crate::model::limits::MAX_JSON_DEPTH {
            return Err(RenderError {
                path: self.path.clone(),
                message: format!(
                    "rendered parameters are nested {depth} levels deep; at most {} (MAX_JSON_DEPTH)",
                    crate::model::limits::MAX_JSON_DEPTH
                ),
            });
        }
        Ok(rendered)
    }

    /// True when a template reads the context name `name` (`event`, `events`, `firing`, ...):
    /// only those are built for a rendering, and only the events they read are fetched.
    pub fn reads(&self, name: &str) -> bool {
        self.used.contains(name)
    }

    /// The parameters as written.
    pub fn source(&self) -> &serde_json::Value {
        &self.source
    }
}

impl fmt::Debug for Parameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Parameters").field(&*self.source).finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Concurrency keys
// ---------------------------------------------------------------------------------------------

/// A compiled concurrency key: a string template over a run's parameters (`params`, with
/// `parameters` and `input` as aliases), e.g. `{{ params.user_id }}`.
#[derive(Clone)]
pub struct KeyTemplate {
    source: Arc<str>,
    /// The source with checked operators (see `rewrite.rs`), parsed once.
    template: TextTemplate,
    path: String,
}

impl KeyTemplate {
    /// Parses the template once (rendering never parses again); a syntax error is added to
    /// `problems` at `path` and None returned.
    pub fn compile(source: &str, path: &JsonPath, problems: &mut Problems) -> Option<KeyTemplate> {
        match TextTemplate::compile(source) {
            Ok((template, _)) => Some(KeyTemplate { source: Arc::from(source), template, path: path.to_string() }),
            Err(e) => {
                problems.add(path, format!("invalid key template: {}", describe(&e, source)));
                None
            }
        }
    }

    /// Renders the key for these parameters. An empty key is an error: it would put every run
    /// whose parameter is missing into one group by accident.
    pub fn render(&self, parameters: &serde_json::Map<String, Json>) -> Result<String, RenderError> {
        let params = Value::from_serialize(parameters);
        let ctx = Value::from_iter([("params", params.clone()), ("parameters", params.clone()), ("input", params)]);
        budget::start();
        let key = self
            .template
            .render(ctx)
            .map_err(|e| RenderError { path: self.path.clone(), message: describe(&e, &self.source) })?;
        if key.trim().is_empty() {
            return Err(RenderError {
                path: self.path.clone(),
                message: format!("`{}` rendered an empty key for these parameters", self.source),
            });
        }
        Ok(key)
    }
}

impl fmt::Debug for KeyTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyTemplate").field(&&*self.source).finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------------

/// A compiled trigger filter: a minijinja expression over `event`, with `payload` and `input`
/// as aliases of `event.payload` and `event_key` the event's name.
#[derive(Clone)]
pub struct Filter {
    source: Arc<str>,
    path: String,
    expr: Arc<Expression<'static, 'static>>,
}

impl Filter {
    /// Compiles; a syntax error is added to `problems` at `path` and None returned.
    pub fn compile(source: &str, path: &JsonPath, problems: &mut Problems) -> Option<Filter> {
        match compile_expression(source) {
            Ok(expr) => Some(Filter { source: Arc::from(source), path: path.to_string(), expr: Arc::new(expr) }),
            Err(e) => {
                problems.add(path, format!("invalid filter expression: {}", describe(&e, source)));
                None
            }
        }
    }

    /// True when the expression is truthy for this event. Evaluation errors → Err (caller
    /// treats as no match).
    pub fn matches(&self, event: &Arc<Event>) -> Result<bool, RenderError> {
        self.matches_with(event, &[])
    }

    /// Same, with extra top-level variables (for Hatchet-style filters: `input`, `payload`,
    /// `additional_metadata`, `event_key`); a name in `extra` replaces the default one.
    pub fn matches_with(&self, event: &Arc<Event>, extra: &[(&str, serde_json::Value)]) -> Result<bool, RenderError> {
        let payload = Value::from_object(PayloadObject::new(event));
        let mut vars: Vec<(&str, Value)> = vec![
            ("event", event_value(event)),
            ("payload", payload.clone()),
            ("input", payload),
            ("event_key", Value::from(event.event.as_str())),
        ];
        for (name, value) in extra {
            let value = Value::from_serialize(value);
            match vars.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = value,
                None => vars.push((name, value)),
            }
        }
        let ctx = Value::from_iter(vars);
        budget::start();
        self.expr
            .eval(&ctx)
            .map(|v| v.is_true())
            .map_err(|e| RenderError { path: self.path.clone(), message: describe(&e, &self.source) })
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Filter").field(&&*self.source).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EventTrigger;
    use serde_json::json;
    use uuid::Uuid;

    #[test]
    fn concurrency_keys_render_from_parameters() {
        let mut problems = Problems::default();
        let key = KeyTemplate::compile(
            "{{ params.user_id }}-{{ input.tier | default('free') }}",
            &JsonPath::root(),
            &mut problems,
        )
        .unwrap();
        let params = json!({"user_id": 7}).as_object().unwrap().clone();
        assert_eq!(key.render(&params).unwrap(), "7-free");
        let missing = KeyTemplate::compile("{{ params.nope }}", &JsonPath::root(), &mut problems).unwrap();
        assert!(missing.render(&params).unwrap_err().message.contains("empty key"));
        assert!(KeyTemplate::compile("{{ params.", &JsonPath::root().key("key"), &mut problems).is_none());
        assert!(problems.to_string().starts_with("$.key: invalid key template"), "{problems}");
    }

    pub(super) fn event(payload: Json) -> Arc<Event> {
        Arc::new(
            serde_json::from_value(json!({
                "id": "00000000-0000-0000-0000-000000000001",
                "occurred": "2026-01-01T00:00:00Z",
                "event": "order.Complete",
                "resource": {"prefect.resource.id": "Acme.Order.42", "team": "data"},
                "related": [
                    {"prefect.resource.id": "prefect.flow.1", "prefect.resource.role": "flow", "prefect.resource.name": "etl"},
                    {"prefect.resource.id": "tag.a", "prefect.resource.role": "tag"}
                ],
                "payload": payload
            }))
            .unwrap(),
        )
    }

    pub(super) fn compile(params: &Json) -> (Parameters, Problems) {
        let mut problems = Problems::default();
        let p = Parameters::compile(params, &JsonPath::root().index(0).key("parameters"), &mut problems);
        (p, problems)
    }

    pub(super) fn render_with(
        params: Json,
        event: Option<Arc<Event>>,
        labels: &[(&str, &str)],
    ) -> Result<Json, RenderError> {
        let (p, problems) = compile(&params);
        assert!(problems.is_empty(), "{problems}");
        let def = TriggerDefinition::new("t", EventTrigger::new().expect("n")).name("My trigger");
        let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let t0 = Timestamp::parse("2026-01-01T00:00:30Z").unwrap();
        let firing = Firing {
            id: Uuid::from_u128(9),
            trigger: "t".into(),
            bucket: labels.clone(),
            at: t0,
            triggered: t0,
            triggering_event: event.as_ref().map(|e| e.id),
            triggering_events: event.iter().map(|e| e.id).collect(),
            deployment: None,
            parameters: None,
            filter: None,
            error: None,
        };
        let ctx = TemplateContext {
            automation: &def,
            event: event.clone(),
            labels: &labels,
            firing: &firing,
            events: event.into_iter().collect(),
            filter: None,
        };
        p.render(&ctx)
    }

    pub(super) fn render(params: Json, payload: Json) -> Json {
        render_with(params, Some(event(payload)), &[]).unwrap()
    }

    /// Renders one template string against the standard event.
    pub(super) fn one(template: &str, payload: Json) -> Json {
        render(json!({ "v": template }), payload)["v"].clone()
    }

    #[test]
    fn params_jinja_filters() {
        let params = json!({
            "upper": "{{ event.resource.id | upper }}",
            "lower": "{{ event.event | lower }}",
            "title": "{{ event.payload.note | title }}",
            "replace": "{{ event.resource.id | replace('.', '/') }}",
            "default": "{{ event.payload.missing | default('none') }}",
            "length": "{{ event.payload.note | length }}",
            "id_string": "{{ event.id | string }}",
            "split_join": "{{ event.resource.id.split('.') | join('-') }}",
            "truncate": "{{ event.payload.note | truncate(9, True, '') }}"
        });
        assert_eq!(
            render(params, json!({"note": "hello world"})),
            json!({
                "upper": "ACME.ORDER.42",
                "lower": "order.complete",
                "title": "Hello World",
                "replace": "Acme/Order/42",
                "default": "none",
                "length": 11,
                "id_string": "00000000-0000-0000-0000-000000000001",
                "split_join": "Acme-Order-42",
                "truncate": "hello world"
            })
        );
    }

    #[test]
    fn truncate_has_jinja2_semantics() {
        let long = json!({"s": "the quick brown fox jumps over the lazy dog"});
        assert_eq!(one("{{ event.payload.s | truncate(20) }}", long.clone()), json!("the quick brown..."));
        assert_eq!(one("{{ event.payload.s | truncate(20, True) }}", long.clone()), json!("the quick brown f..."));
        assert_eq!(
            one("{{ event.payload.s | truncate(20, killwords=true, end='!') }}", long.clone()),
            json!("the quick brown fox!")
        );
        assert_eq!(
            one("{{ event.payload.s | truncate(length=40) }}", long.clone()),
            json!("the quick brown fox jumps over the lazy dog")
        );
        assert_eq!(
            one("{{ event.payload.s | truncate(40, leeway=0) }}", long.clone()),
            json!("the quick brown fox jumps over the...")
        );
        assert_eq!(one("{{ event.payload.s | truncate(10, False, '...', 0) }}", long.clone()), json!("the..."));
        assert_eq!(one("{{ event.payload.s | truncate }}", long), json!("the quick brown fox jumps over the lazy dog"));
        let err = render_with(json!({"v": "{{ 'abc' | truncate(1) }}"}), None, &[]).unwrap_err();
        assert!(err.message.contains("expected length >= 3"), "{err}");
    }

    #[test]
    fn params_labels_and_firing_context() {
        let labels = [("team", "data")];
        let out = render_with(
            json!({"l": "team={{ labels['team'] }}", "tl": "{{ firing.triggering_labels }}"}),
            Some(event(json!({}))),
            &labels,
        )
        .unwrap();
        assert_eq!(out, json!({"l": "team=data", "tl": {"team": "data"}}));
        // tripwire renders `{{ labels }}` alone (Prefect fails).
        let out = render_with(json!({"l": "{{ labels }}", "a": "{{ labels.team }}"}), Some(event(json!({}))), &labels)
            .unwrap();
        assert_eq!(out, json!({"l": {"team": "data"}, "a": "data"}));
    }

    #[test]
    fn labels_walk_dotted_names_like_prefects_label_diver() {
        let labels = [("prefect.resource.id", "x"), ("team", "data")];
        let out = render_with(
            json!({
                "dotted": "{{ labels.prefect.resource.id }}",
                "item": "{{ labels['prefect.resource.id'] }}",
                "missing": "{{ labels.nope.deeper }}",
                "count": "{{ labels | length }}",
                "same": "{{ labels == firing.triggering_labels }}",
                "text": "{% for k in labels %}{{ k }}={{ labels[k] }};{% endfor %}"
            }),
            None,
            &labels,
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"dotted": "x", "item": "x", "missing": null, "count": 2, "same": true,
                   "text": "prefect.resource.id=x;team=data;"})
        );
    }

    #[test]
    fn firing_and_automation_context() {
        let out = render_with(
            json!({
                "trigger": "{{ firing.trigger }}",
                "event": "{{ firing.triggering_event.id }}",
                "at": "{{ firing.at.isoformat() }}",
                "name": "{{ automation.name }}",
                "events": "{{ events | length }}",
                "first": "{{ events[0].event }}"
            }),
            Some(event(json!({}))),
            &[],
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"trigger": "t", "event": "00000000-0000-0000-0000-000000000001",
                   "at": "2026-01-01T00:00:30+00:00", "name": "My trigger", "events": 1, "first": "order.Complete"})
        );
        let out = render_with(json!({"e": "{{ firing.triggering_event }}", "n": "{{ events | length }}"}), None, &[])
            .unwrap();
        assert_eq!(out, json!({"e": null, "n": 0}));
    }

    #[test]
    fn params_occurred_as_text_and_as_single_expression() {
        let params = json!({
            "when": "at {{ event.occurred }}",
            "iso": "{{ event.occurred.isoformat() }}",
            "day": "{{ event.occurred.strftime('%Y-%m-%d') }}",
            "epoch": "{{ event.occurred.timestamp() | int }}"
        });
        assert_eq!(
            render(params, json!({})),
            json!({"when": "at 2026-01-01 00:00:00+00:00", "iso": "2026-01-01T00:00:00+00:00", "day": "2026-01-01", "epoch": 1767225600})
        );
        // Prefect fails here; tripwire gives the RFC 3339 string.
        assert_eq!(one("{{ event.occurred }}", json!({})), json!("2026-01-01T00:00:00+00:00"));
    }

    #[test]
    fn datetimes_behave_like_python() {
        let mut e = (*event(json!({}))).clone();
        e.occurred = Timestamp::parse("2026-03-04T05:06:07.000123Z").unwrap();
        e.received = Some(Timestamp::parse("2026-03-04T05:06:08Z").unwrap());
        let out = render_with(
            json!({
                "str": "{{ event.occurred }}.",
                "single": "{{ event.occurred }}",
                "iso": "{{ event.occurred.isoformat() }}",
                "iso_sep": "{{ event.occurred.isoformat(' ', timespec='milliseconds') }}",
                "fmt": "{{ event.occurred.strftime('%Y/%m/%d %H:%M:%S.%f %z %Z %a %A %b %B %j %p %y %I %%f') }}",
                "ts": "{{ event.occurred.timestamp() }}",
                "parts": "{{ [event.occurred.year, event.occurred.month, event.occurred.day, event.occurred.hour, event.occurred.minute, event.occurred.second, event.occurred.microsecond] }}",
                "date": "{{ event.occurred.date() }}",
                "weekday": "{{ event.occurred.weekday() }}",
                "cmp": "{{ event.received > event.occurred }}",
                "received": "{{ event.received }}"
            }),
            Some(Arc::new(e)),
            &[],
        )
        .unwrap();
        assert_eq!(
            out,
            json!({
                "str": "2026-03-04 05:06:07.000123+00:00.",
                "single": "2026-03-04T05:06:07.000123+00:00",
                "iso": "2026-03-04T05:06:07.000123+00:00",
                "iso_sep": "2026-03-04 05:06:07.000+00:00",
                "fmt": "2026/03/04 05:06:07.000123 +0000 UTC Wed Wednesday Mar March 063 AM 26 05 %f",
                "ts": 1772600767.000123,
                "parts": [2026, 3, 4, 5, 6, 7, 123],
                "date": "2026-03-04",
                "weekday": 2,
                "cmp": true,
                "received": "2026-03-04T05:06:08+00:00"
            })
        );
        let err =
            render_with(json!({"v": "{{ event.occurred.strftime('%Q') }}"}), Some(event(json!({}))), &[]).unwrap_err();
        assert!(err.message.contains("strftime"), "{err}");
    }

    #[test]
    fn params_tojson_upgrade_precedence() {
        let p = json!({"n": 2, "s": "hi"});
        assert_eq!(one("{{ event.payload.n + 1 }}", p.clone()), json!(3));
        assert_eq!(one("{{ (event.payload.n + 1) }}", p.clone()), json!(3));
        assert_eq!(one("{{ event.payload.s ~ '!' }}", p.clone()), json!("hi!"));
        assert_eq!(one("{% if event.payload.n > 1 %}big{% else %}small{% endif %}", p), json!("big"));
    }

    #[test]
    fn tripwire_single_expression_values() {
        let params = json!({
            "when": "{{ event.occurred }}",
            "id": "{{ event.id }}",
            "missing": "{{ event.payload.nope }}",
            "items": "{{ event.payload.items }}",
            "next": "{{ event.payload.n + 1 }}",
            "text": "at {{ event.occurred }}"
        });
        assert_eq!(
            render(params, json!({"items": [1, 2], "n": 41})),
            json!({
                "when": "2026-01-01T00:00:00+00:00",
                "id": "00000000-0000-0000-0000-000000000001",
                "missing": null,
                "items": [1, 2],
                "next": 42,
                "text": "at 2026-01-01 00:00:00+00:00"
            })
        );
    }

    #[test]
    fn single_expressions_keep_json_types() {
        let p = json!({"n": 41, "f": 1.5, "b": true, "s": "007", "o": {"a": [1, {"b": null}]}, "html": "<&\">"});
        let cases = [
            ("{{ event.payload.n }}", json!(41)),
            ("  {{ event.payload.f }}  ", json!(1.5)),
            ("{{ event.payload.b }}", json!(true)),
            ("{{ event.payload.s }}", json!("007")),
            ("{{ event.payload.o }}", json!({"a": [1, {"b": null}]})),
            ("{{ event.payload }}", p.clone()),
            ("{{ [1, 'a', none] }}", json!([1, "a", null])),
            ("{{ {'k': event.payload.n} }}", json!({"k": 41})),
            ("{{- event.payload.n -}}", json!(41)),
            ("{{ event.payload.html | safe }}", json!("<&\">")),
            ("{{ event.resource }}", json!({"prefect.resource.id": "Acme.Order.42", "team": "data"})),
            ("{{ event.related | map(attribute='role') | list }}", json!(["flow", "tag"])),
            ("{{ event.payload.o.items() | list }}", json!([["a", [1, {"b": null}]]])),
            ("{{ none }}", json!(null)),
            ("{{ event.payload.n is number }}", json!(true)),
            // Not one expression: rendered as text.
            ("{{ event.payload.n }} }}", json!("41 }}")),
        ];
        for (template, expected) in cases {
            assert_eq!(one(template, p.clone()), expected, "{template}");
        }
        let whole = one("{{ event }}", p.clone());
        assert_eq!(whole, serde_json::to_value(&*event(p)).unwrap());
    }

    #[test]
    fn params_proactive_firing_event_context() {
        let out = render_with(
            json!({
                "r": "r={{ event.resource.id }}",
                "has_event": "{{ event is not none }}",
                "is_none": "{{ event is none }}",
                "alone": "{{ event.resource.id }}",
                "deep": "{{ event.payload.a.b.c }}",
                "text_deep": "[{{ event.payload.a.b.c }}]"
            }),
            None,
            &[],
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"r": "r=", "has_event": false, "is_none": true, "alone": null, "deep": null, "text_deep": "[]"})
        );
        // The after-event case: the firing carries the event that opened the window.
        let mut e = (*event(json!({"k": 1}))).clone();
        e.resource = Resource::new("y");
        let out =
            render_with(json!({"r": "{{ event.resource.id }}", "k": "{{ event.payload.k }}"}), Some(Arc::new(e)), &[])
                .unwrap();
        assert_eq!(out, json!({"r": "y", "k": 1}));
    }

    #[test]
    fn nested_objects_and_lists_render_and_plain_values_pass_through() {
        let params = json!({
            "name": "{{ event.event }}",
            "nested": {"id": "{{ event.resource.id }}", "tags": ["{{ event.payload.s }}", "static", ["{{ event.payload.n }}", 3]]},
            "list": [{"deep": [{"x": "{{ event.payload.n * 2 }}"}]}],
            "plain": "no template {here} } or %} or {#",
            "n": 5, "f": 2.5, "b": false, "null": null, "empty": {}, "empty_list": []
        });
        let out = render(params, json!({"s": "c", "n": 7}));
        assert_eq!(
            out,
            json!({
                "name": "order.Complete",
                "nested": {"id": "Acme.Order.42", "tags": ["c", "static", [7, 3]]},
                "list": [{"deep": [{"x": 14}]}],
                "plain": "no template {here} } or %} or {#",
                "n": 5, "f": 2.5, "b": false, "null": null, "empty": {}, "empty_list": []
            })
        );
        // Parameters without templates need no context at all.
        let (p, _) = compile(&json!({"a": [1, "x"]}));
        assert!(matches!(&*p.root, Node::Literal(_)));
    }

    #[test]
    fn syntax_errors_are_reported_at_their_paths() {
        let (p, problems) = compile(&json!({
            "ok": "{{ event.id }}",
            "user_id": "{{ event.resource.id | }}",
            "list": ["a", "b", "{% if event %}x"],
            "dotted.key": {"v": "{{ }}"}
        }));
        let paths: Vec<&str> = problems.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["$[0].parameters.user_id", "$[0].parameters.list[2]", "$[0].parameters[\"dotted.key\"].v"]);
        assert!(problems.0.iter().all(|p| p.message.starts_with("invalid template: syntax error")), "{problems}");
        // Rendering anyway reports the first broken template.
        assert_eq!(render_compiled(&p, None).unwrap_err().path, "$[0].parameters.user_id");
    }

    /// Renders compiled parameters (syntax problems or not) without labels.
    pub(super) fn render_compiled(p: &Parameters, event: Option<Arc<Event>>) -> Result<Json, RenderError> {
        let def = TriggerDefinition::new("t", EventTrigger::new());
        let firing = Firing {
            id: Uuid::nil(),
            trigger: "t".into(),
            bucket: BTreeMap::new(),
            at: Timestamp::default(),
            triggered: Timestamp::default(),
            triggering_event: None,
            triggering_events: vec![],
            deployment: None,
            parameters: None,
            filter: None,
            error: None,
        };
        let labels = BTreeMap::new();
        let ctx =
            TemplateContext { automation: &def, event, labels: &labels, firing: &firing, events: vec![], filter: None };
        p.render(&ctx)
    }

    #[test]
    fn runtime_errors_name_the_path() {
        let err = render_with(json!({"a": {"b": ["x", "v={{ 1 // 0 }}"]}}), None, &[]).unwrap_err();
        assert_eq!(err.path, "$[0].parameters.a.b[1]");
        assert!(err.message.contains("//"), "{err}");
        let err = render_with(json!({"v": "{{ 1 / 0 }}"}), None, &[]).unwrap_err();
        assert_eq!(err.path, "$[0].parameters.v");
        assert!(err.message.contains("not a finite number"), "{err}");
        let err = render_with(json!({"v": "x {{ event | nosuchfilter }}"}), None, &[]).unwrap_err();
        assert!(err.message.contains("unknown filter"), "{err}");
        assert_eq!(err.to_string(), format!("$[0].parameters.v: {}", err.message));
        let err = render_with(json!({"v": "{{ range }}"}), None, &[]).unwrap_err();
        assert!(err.message.contains("cannot be converted to JSON"), "{err}");
        let err =
            render_with(json!({"v": "{{ event.payload.s.nosuchmethod() }}"}), Some(event(json!({"s": "a"}))), &[])
                .unwrap_err();
        assert!(err.message.contains("unknown method"), "{err}");
    }

    #[test]
    fn fuel_stops_runaway_templates() {
        let err = render_with(
            json!({"v": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"}),
            None,
            &[],
        )
        .unwrap_err();
        assert!(err.message.contains("fuel"), "{err}");
        let err = render_with(json!({"v": "{% for i in range(1000000) %}{% endfor %}"}), None, &[]).unwrap_err();
        assert!(!err.message.is_empty());
        let err =
            render_with(json!({"v": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"}), None, &[]).unwrap_err();
        assert!(!err.message.is_empty());
    }

    #[test]
    fn output_is_not_escaped() {
        let p = json!({"html": "<b>&\"'</b>"});
        assert_eq!(one("x {{ event.payload.html }} <&\"'>", p.clone()), json!("x <b>&\"'</b> <&\"'>"));
        assert_eq!(one("{{ event.payload.html }}", p.clone()), json!("<b>&\"'</b>"));
        assert_eq!(one("{{ event.payload.html | upper }}!", p), json!("<B>&\"'</B>!"));
    }

    #[test]
    fn text_prints_none_and_booleans_as_python_does() {
        let p = json!({"t": true, "f": false, "z": null});
        assert_eq!(
            one("{{ event.payload.t }} {{ event.payload.f }} {{ event.payload.z }}", p.clone()),
            json!("True False None")
        );
        assert_eq!(one("{{ event.resource.name }}|{{ event.related[0].name }}", p.clone()), json!("None|etl"));
        assert_eq!(one("{{ event.payload.t | string }}", p), json!("True"));
    }

    #[test]
    fn resources_are_dicts_of_labels_with_properties() {
        let cases = [
            ("{{ event.resource.id }}", json!("Acme.Order.42")),
            ("{{ event.resource['team'] }}", json!("data")),
            ("{{ event.resource.team }}", json!("data")),
            ("{{ event.resource.get('nope', 'd') }}", json!("d")),
            ("{{ event.resource.keys() | list }}", json!(["prefect.resource.id", "team"])),
            ("{{ event.resource | length }}", json!(2)),
            (
                "{% for k, v in event.resource.items() %}{{ k }}={{ v }} {% endfor %}",
                json!("prefect.resource.id=Acme.Order.42 team=data "),
            ),
            (
                "{{ event.resource | tojson }}",
                json!("{\"prefect.resource.id\": \"Acme.Order.42\", \"team\": \"data\"}"),
            ),
            (
                "{{ event.related[0].role }}/{{ event.related[0].name }}/{{ event.related[1].id }}",
                json!("flow/etl/tag.a"),
            ),
            ("{{ event.resource.labels.prefect.resource.id }}", json!("Acme.Order.42")),
            ("{{ event.resource_in_role['flow'].id }}", json!("prefect.flow.1")),
            (
                "{{ event.related | selectattr('role', 'equalto', 'tag') | map(attribute='id') | first }}",
                json!("tag.a"),
            ),
            ("{{ event.resource.id.startswith('Acme') }}", json!(true)),
            ("{{ event.id }}", json!("00000000-0000-0000-0000-000000000001")),
            ("{{ event.follows }}", json!(null)),
        ];
        for (template, expected) in cases {
            assert_eq!(one(template, json!({})), expected, "{template}");
        }
    }

    #[test]
    fn tojson_writes_as_jinja2_does() {
        let p = json!({"b": [1, 2.5, "é<"], "a": {"z": null, "y": true}});
        assert_eq!(
            one("j={{ event.payload | tojson }}", p.clone()),
            json!("j={\"a\": {\"y\": true, \"z\": null}, \"b\": [1, 2.5, \"\\u00e9\\u003c\"]}")
        );
        assert_eq!(
            one("{{ event.payload.a | tojson(indent=2) }}", p.clone()),
            json!("{\n  \"y\": true,\n  \"z\": null\n}")
        );
        // The JSON string of the event is the event's JSON.
        let text = one("{{ event | tojson }}", p.clone());
        let parsed: Json = serde_json::from_str(text.as_str().unwrap()).unwrap();
        assert_eq!(parsed, serde_json::to_value(&*event(p)).unwrap());
    }

    #[test]
    fn payload_keys_are_not_shadowed_by_dict_methods() {
        let p = json!({"items": [1], "keys": "k", "values": 3, "get": "g"});
        assert_eq!(
            one(
                "{{ event.payload.items }}|{{ event.payload.keys }}|{{ event.payload.values }}|{{ event.payload.get }}",
                p.clone()
            ),
            json!("[1]|k|3|g")
        );
        assert_eq!(one("{{ event.payload['items'] }}", p.clone()), json!([1]));
        assert_eq!(one("{{ event.payload.keys() | list | length }}", json!({"a": 1, "b": 2})), json!(2));
    }

    #[test]
    fn filters_match_events() {
        let mut problems = Problems::default();
        let path = JsonPath::root().index(0).key("trigger").key("filter");
        let f = Filter::compile("payload.amount > 100 and event.resource.id != \"x\"", &path, &mut problems).unwrap();
        let g = Filter::compile("input.amount > 100", &path, &mut problems).unwrap();
        let h = Filter::compile(
            "event.payload.customer.tier == 'gold' and event_key == 'order.Complete'",
            &path,
            &mut problems,
        )
        .unwrap();
        assert!(problems.is_empty());
        assert!(f.matches(&event(json!({"amount": 150}))).unwrap());
        assert!(!f.matches(&event(json!({"amount": 50}))).unwrap());
        assert!(!f.matches(&event(json!({}))).unwrap(), "missing is undefined, not an error");
        assert!(g.matches(&event(json!({"amount": 101}))).unwrap());
        assert!(h.matches(&event(json!({"customer": {"tier": "gold"}}))).unwrap());
        assert!(!h.matches(&event(json!({"customer": "gold"}))).unwrap());
        // Hatchet-style variables override the defaults.
        assert!(g.matches_with(&event(json!({"amount": 1})), &[("input", json!({"amount": 500}))]).unwrap());
        let k = Filter::compile("additional_metadata.source == 'api'", &path, &mut problems).unwrap();
        assert!(k.matches_with(&event(json!({})), &[("additional_metadata", json!({"source": "api"}))]).unwrap());
        assert!(!k.matches(&event(json!({}))).unwrap());
        // Runtime errors are errors, with the filter's path.
        let bad = Filter::compile("payload.amount | nosuchfilter", &path, &mut problems).unwrap();
        let err = bad.matches(&event(json!({"amount": 1}))).unwrap_err();
        assert_eq!(err.path, "$[0].trigger.filter");
        assert_eq!(bad.source(), "payload.amount | nosuchfilter");
        assert_eq!(format!("{bad:?}"), "Filter(\"payload.amount | nosuchfilter\")");
        // Syntax errors are problems.
        assert!(Filter::compile("payload.amount >", &path, &mut problems).is_none());
        assert!(Filter::compile("", &path, &mut problems).is_none());
        assert_eq!(problems.0.len(), 2);
        assert_eq!(problems.0[0].path, "$[0].trigger.filter");
        assert!(problems.0[0].message.starts_with("invalid filter expression: syntax error"), "{problems}");
    }

    #[test]
    fn stray_variable_ends_are_syntax_errors_not_panics() {
        let mut problems = Problems::default();
        for source in ["a }} b", "payload.x -}} ", "(a) +}}x", "a }}"] {
            assert!(Filter::compile(source, &JsonPath::root(), &mut problems).is_none(), "{source}");
        }
        assert_eq!(problems.0.len(), 4);
        assert!(problems.0.iter().all(|p| p.message.contains("syntax error")), "{problems}");
        // Inside strings and brackets, `}}` is not an end.
        assert!(!has_top_level_variable_end("'}} x' ~ \"a\\\"}}\" ~ {'a': {'b': 1}}"));
        assert!(Filter::compile("{'a': {'b': '}}'}}.a.b == '}}'", &JsonPath::root(), &mut problems)
            .unwrap()
            .matches(&event(json!({})))
            .unwrap());
        assert_eq!(one("{{ {'a': {'b': 1}} }}", json!({})), json!({"a": {"b": 1}}));
        assert_eq!(one("{{ '}}' }} x }}", json!({})), json!("}} x }}"));
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        let deep = format!("{{{{ {}1{} }}}}", "(".repeat(10_000), ")".repeat(10_000));
        let (_, problems) = compile(&json!({ "v": deep }));
        assert_eq!(problems.0.len(), 1);
        let mut problems = Problems::default();
        assert!(Filter::compile(&"[".repeat(10_000), &JsonPath::root(), &mut problems).is_none());
        for template in [
            "{{ event.payload | tojson(indent=99999999999) }}",
            "{{ event.payload.s * 1000000000 }}",
            "{{ event.occurred.strftime('%') }}",
            "{{ event.occurred.isoformat(timespec='x') }}",
            "{{ 'a' | truncate(-5) }}",
            "{{ 'a b c' | truncate(3, leeway=-1) }}",
            "{{ 99999999999999999999 * 99999999999999999999 }}",
            "{{ event.payload.s[::-1] }}",
        ] {
            let _ = render_with(json!({"v": template}), Some(event(json!({"s": "ab"}))), &[]);
        }
    }

    #[test]
    fn compiled_values_are_shareable() {
        fn assert_traits<T: Send + Sync + Clone + fmt::Debug>() {}
        assert_traits::<Parameters>();
        assert_traits::<Filter>();
        let (p, _) = compile(&json!({"a": "{{ event.id }}"}));
        let q = p.clone();
        assert_eq!(format!("{q:?}"), "Parameters(Object {\"a\": String(\"{{ event.id }}\")})");
        assert_eq!(q.source(), &json!({"a": "{{ event.id }}"}));
        let handle = std::thread::spawn(move || {
            let out = render_with(json!({"a": "{{ event.id }}"}), Some(event(json!({}))), &[]).unwrap();
            drop(p);
            out
        });
        assert_eq!(handle.join().unwrap(), json!({"a": "00000000-0000-0000-0000-000000000001"}));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        #[test]
        fn arbitrary_templates_never_panic(s in "[{}%#()\\[\\]a-z0-9 .|'~+*/,=<>-]{0,40}") {
            let mut problems = Problems::default();
            let p = Parameters::compile(&json!({"v": format!("{{{{ {s} }}}}"), "w": s.clone()}), &JsonPath::root(), &mut problems);
            let def = TriggerDefinition::new("t", EventTrigger::new());
            let labels = BTreeMap::new();
            let firing = Firing {
                id: Uuid::nil(), trigger: "t".into(), bucket: BTreeMap::new(), at: Timestamp::default(),
                triggered: Timestamp::default(), triggering_event: None, triggering_events: vec![],
                deployment: None, parameters: None, filter: None, error: None,
            };
            let ctx = TemplateContext { automation: &def, event: Some(event(json!({"a": 1}))), labels: &labels, firing: &firing, events: vec![], filter: None };
            let _ = p.render(&ctx);
            if let Some(f) = Filter::compile(&s, &JsonPath::root(), &mut problems) {
                let _ = f.matches(&event(json!({"a": [1, 2]})));
            }
        }

        #[test]
        fn brace_soup_never_panics(s in "[{}()\\[\\]'\"\\\\ a+-]{0,14}") {
            let mut problems = Problems::default();
            if let Some(f) = Filter::compile(&s, &JsonPath::root(), &mut problems) {
                let _ = f.matches(&event(json!({})));
            }
            let _ = Parameters::compile(&json!([format!("{{{{{s}}}}}"), format!("{{{{ {s} }}}}"), s]), &JsonPath::root(), &mut problems);
        }
    }
}
