//! Prefect's `EventFilter`, shared by the `/api/events/out` subscription and
//! `POST /api/events/filter`.

use serde_json::{Map, Value};
use uuid::Uuid;

use super::problems::kind_of;
use super::{Event, JsonPath, Problems, Resource, Timestamp};

/// The subset of Prefect's `EventFilter` tripwire understands, with Prefect's meaning: every
/// list is an OR of its values and is no constraint when empty; the fields are ANDed.
///
/// - `occurred {since, until}`: inclusive bounds on `occurred`; an absent bound is open.
/// - `event {prefix, name, exclude_prefix, exclude_name}`.
/// - `resource {id, id_prefix, labels}`: the primary resource.
/// - `related {id, role, resources_in_roles, labels}` (one filter or a list, all of which
///   must hold): some related resource satisfies every part at once.
/// - `any_resource {id, id_prefix, labels}` (one or a list): the primary or a related
///   resource satisfies every part.
/// - `id {id}`: event ids.
///
/// `labels` maps a label to a value or a list of values, each exact, `prefix*`, or negated with
/// a leading `!` (Prefect's `ResourceSpecification.matches`). Other fields (`order`, `text`,
/// `resource.distinct`, ...) are ignored, as are unknown ones.
#[derive(Clone, Debug, Default)]
pub(crate) struct EventFilter {
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    name: NameFilter,
    resource: Option<ResourceIdFilter>,
    related: Vec<RelatedFilter>,
    any_resource: Vec<ResourceIdFilter>,
    ids: Vec<Uuid>,
}

#[derive(Clone, Debug, Default)]
struct NameFilter {
    prefix: Vec<String>,
    name: Vec<String>,
    exclude_prefix: Vec<String>,
    exclude_name: Vec<String>,
}

/// `id`, `id_prefix` and `labels` of one resource.
#[derive(Clone, Debug, Default)]
struct ResourceIdFilter {
    id: Vec<String>,
    id_prefix: Vec<String>,
    labels: Option<LabelFilter>,
}

#[derive(Clone, Debug, Default)]
struct RelatedFilter {
    id: Vec<String>,
    role: Vec<String>,
    resources_in_roles: Vec<(String, String)>,
    labels: Option<LabelFilter>,
}

/// Prefect's `ResourceSpecification` as used by event filters.
#[derive(Clone, Debug, Default)]
struct LabelFilter(Vec<(String, Vec<String>)>);

impl EventFilter {
    /// Reads a filter, reporting every problem with its path; `null` matches every event.
    pub(crate) fn from_json(value: &Value, path: &JsonPath) -> Result<EventFilter, Problems> {
        let mut problems = Problems::default();
        let mut filter = EventFilter::default();
        let Some(object) = object(value, path, &mut problems) else { return problems.into_result(filter) };
        known(
            object,
            path,
            &["occurred", "event", "resource", "related", "any_resource", "id", "order"],
            &mut problems,
        );
        if let Some(occurred) = object.get("occurred") {
            let path = path.key("occurred");
            if let Some(o) = self::object(occurred, &path, &mut problems) {
                known(o, &path, &["since", "until"], &mut problems);
                filter.since = timestamp(o.get("since"), &path.key("since"), &mut problems);
                filter.until = timestamp(o.get("until"), &path.key("until"), &mut problems);
            }
        }
        if let Some(event) = object.get("event") {
            let path = path.key("event");
            if let Some(o) = self::object(event, &path, &mut problems) {
                known(o, &path, &["prefix", "name", "exclude_prefix", "exclude_name"], &mut problems);
                let mut list = |field: &str| strings(o.get(field), &path.key(field), &mut problems);
                filter.name = NameFilter {
                    prefix: list("prefix"),
                    name: list("name"),
                    exclude_prefix: list("exclude_prefix"),
                    exclude_name: list("exclude_name"),
                };
            }
        }
        if let Some(resource) = object.get("resource") {
            let path = path.key("resource");
            filter.resource = self::object(resource, &path, &mut problems)
                .map(|o| ResourceIdFilter::from_json(o, &path, &mut problems));
        }
        filter.related =
            one_or_many(object.get("related"), &path.key("related"), &mut problems, RelatedFilter::from_json);
        filter.any_resource = one_or_many(
            object.get("any_resource"),
            &path.key("any_resource"),
            &mut problems,
            ResourceIdFilter::from_json,
        );
        if let Some(id) = object.get("id") {
            let path = path.key("id");
            if let Some(o) = self::object(id, &path, &mut problems) {
                known(o, &path, &["id"], &mut problems);
                let path = path.key("id");
                for (i, text) in strings(o.get("id"), &path, &mut problems).into_iter().enumerate() {
                    match Uuid::parse_str(&text) {
                        Ok(id) => filter.ids.push(id),
                        Err(_) => problems.add(&path.index(i), format!("`{text}` is not a UUID")),
                    }
                }
            }
        }
        problems.into_result(filter)
    }

    /// Whether `event` passes the filter.
    pub(crate) fn includes(&self, event: &Event) -> bool {
        self.since.is_none_or(|since| event.occurred >= since)
            && self.until.is_none_or(|until| event.occurred <= until)
            && self.name.includes(&event.event)
            && self.resource.as_ref().is_none_or(|r| r.includes(&event.resource))
            && self.related.iter().all(|r| r.includes(&event.related))
            && self
                .any_resource
                .iter()
                .all(|f| f.includes(&event.resource) || event.related.iter().any(|r| f.includes(r)))
            && (self.ids.is_empty() || self.ids.contains(&event.id))
    }
}

impl NameFilter {
    fn includes(&self, name: &str) -> bool {
        (self.prefix.is_empty() || self.prefix.iter().any(|p| name.starts_with(p.as_str())))
            && !self.exclude_prefix.iter().any(|p| name.starts_with(p.as_str()))
            && (self.name.is_empty() || self.name.iter().any(|n| n == name))
            && !self.exclude_name.iter().any(|n| n == name)
    }
}

impl ResourceIdFilter {
    fn from_json(object: &Map<String, Value>, path: &JsonPath, problems: &mut Problems) -> ResourceIdFilter {
        known(object, path, &["id", "id_prefix", "labels", "distinct"], problems);
        if object.get("distinct").is_some_and(|d| *d == Value::Bool(true)) {
            problems.add(&path.key("distinct"), "`distinct: true` is not supported; leave it out or false");
        }
        ResourceIdFilter {
            id: strings(object.get("id"), &path.key("id"), problems),
            id_prefix: strings(object.get("id_prefix"), &path.key("id_prefix"), problems),
            labels: LabelFilter::from_json(object.get("labels"), &path.key("labels"), problems),
        }
    }

    fn includes(&self, resource: &Resource) -> bool {
        let id = resource.id();
        (self.id.is_empty() || self.id.iter().any(|x| x == id))
            && (self.id_prefix.is_empty() || self.id_prefix.iter().any(|p| id.starts_with(p.as_str())))
            && self.labels.as_ref().is_none_or(|l| l.matches(resource))
    }
}

impl RelatedFilter {
    fn from_json(object: &Map<String, Value>, path: &JsonPath, problems: &mut Problems) -> RelatedFilter {
        known(object, path, &["id", "role", "resources_in_roles", "labels"], problems);
        let mut resources_in_roles = Vec::new();
        match object.get("resources_in_roles") {
            None | Some(Value::Null) => {}
            Some(Value::Array(pairs)) => {
                for (i, pair) in pairs.iter().enumerate() {
                    match pair.as_array().map(Vec::as_slice) {
                        Some([Value::String(id), Value::String(role)]) => {
                            resources_in_roles.push((id.clone(), role.clone()))
                        }
                        _ => problems.add(
                            &path.key("resources_in_roles").index(i),
                            "expected a pair of strings [resource id, role]",
                        ),
                    }
                }
            }
            Some(other) => problems.add(
                &path.key("resources_in_roles"),
                format!("expected a list of [resource id, role] pairs, got {}", kind_of(other)),
            ),
        }
        RelatedFilter {
            id: strings(object.get("id"), &path.key("id"), problems),
            role: strings(object.get("role"), &path.key("role"), problems),
            resources_in_roles,
            labels: LabelFilter::from_json(object.get("labels"), &path.key("labels"), problems),
        }
    }

    fn is_empty(&self) -> bool {
        self.id.is_empty() && self.role.is_empty() && self.resources_in_roles.is_empty() && self.labels.is_none()
    }

    fn includes(&self, related: &[Resource]) -> bool {
        self.is_empty()
            || related.iter().any(|r| {
                let (id, role) = (r.id(), r.role().unwrap_or(""));
                (self.id.is_empty() || self.id.iter().any(|x| x == id))
                    && (self.role.is_empty() || self.role.iter().any(|x| x == role))
                    && (self.resources_in_roles.is_empty()
                        || self.resources_in_roles.iter().any(|(i, o)| i == id && o == role))
                    && self.labels.as_ref().is_none_or(|l| l.matches(r))
            })
    }
}

impl LabelFilter {
    fn from_json(value: Option<&Value>, path: &JsonPath, problems: &mut Problems) -> Option<LabelFilter> {
        let object = object(value?, path, problems)?;
        let mut labels = Vec::with_capacity(object.len());
        for (label, values) in object {
            let values = match values {
                Value::String(s) => vec![s.clone()],
                other => strings(Some(other), &path.key(label), problems),
            };
            labels.push((label.clone(), values));
        }
        Some(LabelFilter(labels))
    }

    /// Every label matches one of its values; an empty list of values matches nothing.
    fn matches(&self, resource: &Resource) -> bool {
        self.0.iter().all(|(label, expected)| {
            let value = resource.get(label);
            expected.iter().any(|e| value_matches(e, value))
        })
    }
}

/// Prefect's `matches(expected, value)`: a leading `!` negates, a trailing `*` matches a
/// prefix, and a missing value matches nothing (not even a negation).
fn value_matches(expected: &str, value: Option<&str>) -> bool {
    let Some(value) = value else { return false };
    let (expected, positive) = match expected.strip_prefix('!') {
        Some(rest) => (rest, false),
        None => (expected, true),
    };
    let matched = match expected.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => value == expected,
    };
    matched == positive
}

/// An object, or `None` for `null` (and a problem for anything else).
/// Reports every field that tripwire does not know and that is set (Prefect's clients send
/// unset fields as `null`, which are accepted): an ignored filter field would silently match
/// more events than asked for.
fn known(object: &Map<String, Value>, path: &JsonPath, fields: &[&str], problems: &mut Problems) {
    for (key, value) in object {
        if !value.is_null() && !fields.contains(&key.as_str()) {
            problems.add(&path.key(key), format!("unknown or unsupported filter field; use {}", fields.join(", ")));
        }
    }
}

fn object<'a>(value: &'a Value, path: &JsonPath, problems: &mut Problems) -> Option<&'a Map<String, Value>> {
    match value {
        Value::Object(o) => Some(o),
        Value::Null => None,
        other => {
            problems.add(path, format!("expected an object, got {}", kind_of(other)));
            None
        }
    }
}

/// A list of strings; absent or `null` is the empty list.
fn strings(value: Option<&Value>, path: &JsonPath, problems: &mut Problems) -> Vec<String> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| match item {
                Value::String(s) => Some(s.clone()),
                other => {
                    problems.add(&path.index(i), format!("expected a string, got {}", kind_of(other)));
                    None
                }
            })
            .collect(),
        Some(other) => {
            problems.add(path, format!("expected a list of strings, got {}", kind_of(other)));
            Vec::new()
        }
    }
}

fn timestamp(value: Option<&Value>, path: &JsonPath, problems: &mut Problems) -> Option<Timestamp> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Timestamp::parse(s).map_err(|e| problems.add(path, e)).ok(),
        Some(other) => {
            problems.add(path, format!("expected an RFC 3339 string, got {}", kind_of(other)));
            None
        }
    }
}

/// One filter object or a list of them (each must hold); absent or `null` is none.
fn one_or_many<T>(
    value: Option<&Value>,
    path: &JsonPath,
    problems: &mut Problems,
    read: impl Fn(&Map<String, Value>, &JsonPath, &mut Problems) -> T,
) -> Vec<T> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(o)) => vec![read(o, path, problems)],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let path = path.index(i);
                object(item, &path, problems).map(|o| read(o, &path, problems))
            })
            .collect(),
        Some(other) => {
            problems.add(path, format!("expected an object or a list of objects, got {}", kind_of(other)));
            Vec::new()
        }
    }
}
