//! Prefect's `EventFilter`, shared by the `/api/events/out` subscription and
//! `POST /api/events/filter`.

use serde_json::Value;
use uuid::Uuid;

use super::fields::Fields;
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
        if value.is_null() {
            return Ok(filter);
        }
        let Some(mut fields) = Fields::open(value, path, &mut problems, "expected an object") else {
            return Err(problems);
        };
        known(&mut fields, &["occurred", "event", "resource", "related", "any_resource", "id", "order"]);
        if let Some(mut o) = fields.nested("occurred") {
            known(&mut o, &["since", "until"]);
            filter.since = o.opt_timestamp("since");
            filter.until = o.opt_timestamp("until");
        }
        if let Some(mut o) = fields.nested("event") {
            known(&mut o, &["prefix", "name", "exclude_prefix", "exclude_name"]);
            filter.name = NameFilter {
                prefix: o.strings("prefix"),
                name: o.strings("name"),
                exclude_prefix: o.strings("exclude_prefix"),
                exclude_name: o.strings("exclude_name"),
            };
        }
        filter.resource = fields.nested("resource").map(|mut o| ResourceIdFilter::from_json(&mut o));
        filter.related = fields.one_or_many("related", RelatedFilter::from_json);
        filter.any_resource = fields.one_or_many("any_resource", ResourceIdFilter::from_json);
        if let Some(mut o) = fields.nested("id") {
            known(&mut o, &["id"]);
            let path = o.at("id");
            for (i, text) in o.indexed_strings("id") {
                match Uuid::parse_str(&text) {
                    Ok(id) => filter.ids.push(id),
                    Err(_) => o.problems.add(&path.index(i), format!("`{text}` is not a UUID")),
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
    fn from_json(fields: &mut Fields<'_, '_>) -> ResourceIdFilter {
        known(fields, &["id", "id_prefix", "labels", "distinct"]);
        if fields.object.get("distinct").is_some_and(|d| !matches!(d, Value::Null | Value::Bool(false))) {
            fields.problem("distinct", "only `false` (or null) is supported; leave it out or false");
        }
        ResourceIdFilter {
            id: fields.strings("id"),
            id_prefix: fields.strings("id_prefix"),
            labels: LabelFilter::from_json(fields),
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
    fn from_json(fields: &mut Fields<'_, '_>) -> RelatedFilter {
        known(fields, &["id", "role", "resources_in_roles", "labels"]);
        let mut resources_in_roles = Vec::new();
        let path = fields.at("resources_in_roles");
        for (i, pair) in fields
            .opt_array("resources_in_roles", "a list of [resource id, role] pairs")
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            match pair.as_array().map(Vec::as_slice) {
                Some([Value::String(id), Value::String(role)]) => resources_in_roles.push((id.clone(), role.clone())),
                _ => fields.problems.add(&path.index(i), "expected a pair of strings [resource id, role]"),
            }
        }
        RelatedFilter {
            id: fields.strings("id"),
            role: fields.strings("role"),
            resources_in_roles,
            labels: LabelFilter::from_json(fields),
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
    /// The `labels` member of a resource filter, if given.
    fn from_json(fields: &mut Fields<'_, '_>) -> Option<LabelFilter> {
        let mut o = fields.nested("labels")?;
        let object = o.object;
        let mut labels = Vec::with_capacity(object.len());
        for (label, values) in object {
            let values = match values {
                Value::String(s) => vec![s.clone()],
                _ => o.strings(label),
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

/// Reports every field that tripwire does not know and that is set (Prefect's clients send
/// unset fields as `null`, which are accepted): an ignored filter field would silently match
/// more events than asked for.
fn known(fields: &mut Fields<'_, '_>, known: &[&str]) {
    fields.only_set(known, &format!("unknown or unsupported filter field; use {}", known.join(", ")));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(v: Value) -> String {
        EventFilter::from_json(&v, &JsonPath::root()).map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn a_bad_id_is_named_by_its_own_index() {
        let text = problems(json!({"id": {"id": ["x", 1, "bad"]}}));
        assert_eq!(
            text,
            "$.id.id[1]: expected a string, got a number; $.id.id[0]: `x` is not a UUID; \
             $.id.id[2]: `bad` is not a UUID"
        );
    }

    #[test]
    fn unset_unknown_fields_pass_and_set_ones_are_named() {
        let ok = json!({"text": null, "event": {"name": ["a"], "order": null}});
        assert!(EventFilter::from_json(&ok, &JsonPath::root()).is_ok());
        let text = problems(json!({"event": {"name": ["a"], "regex": "a.*"}, "resource": {"distinct": true}}));
        assert!(text.starts_with("$.event.regex: unknown or unsupported filter field; use prefix, name,"), "{text}");
        assert!(text.contains("$.resource.distinct: only `false` (or null) is supported"), "{text}");
        assert!(EventFilter::from_json(&Value::Null, &JsonPath::root()).is_ok());
    }
}
