//! Template objects: the event (`event`, `events[i]`), its payload, resources and related
//! resources as dicts of labels with Prefect's properties, labels walked as Prefect's
//! `LabelDiver` walks them, and datetimes that behave as Python's.

use std::fmt;
use std::sync::Arc;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Datelike, Timelike, Utc};
use minijinja::value::{from_args, DynObject, Enumerator, Kwargs, Object, ObjectRepr, Value};
use minijinja::{Error, ErrorKind, State};

use crate::model::{Event, Resource, Timestamp};

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
pub(super) struct EventObject(pub(super) Arc<Event>, Arc<PayloadObject>);

/// Every name `event.X` resolves (the fields, and Prefect's `Event` properties): what a
/// template may read of an event, checked when the template is defined.
pub(super) const EVENT_ATTRIBUTES: &[&str] = &[
    "id",
    "occurred",
    "event",
    "resource",
    "related",
    "payload",
    "follows",
    "received",
    "involved_resources",
    "resource_in_role",
];
/// What `event | items` lists: the fields, `received` only once the server has stamped it.
const EVENT_FIELDS: &[&str] = EVENT_ATTRIBUTES.split_at(7).0;
const RECEIVED_EVENT_FIELDS: &[&str] = EVENT_ATTRIBUTES.split_at(8).0;

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
pub(super) struct PayloadObject(pub(super) Arc<Event>, std::sync::Mutex<std::collections::HashMap<String, Value>>);

impl PayloadObject {
    pub(super) fn new(event: &Arc<Event>) -> PayloadObject {
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
pub(super) struct LabelTree(pub(super) Vec<(String, String)>);

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

pub(super) fn datetime_value(t: Timestamp) -> Value {
    Value::from_object(DateTimeObject(t.to_datetime()))
}

/// A UTC datetime that prints as Python's `str(datetime)` does.
#[derive(Debug)]
pub(super) struct DateTimeObject(DateTime<Utc>);

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

    pub(super) fn isoformat(&self, sep: &str, timespec: &str) -> Result<String, Error> {
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
