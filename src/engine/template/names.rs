//! The names a template may read, checked when it is defined. Jinja renders an unknown name
//! as nothing (`ChainableUndefined`), so `{{ evnt.id }}` or `{{ event.payloadd.id }}` would
//! render an empty value on every firing and be found only when a run's parameters are wrong.
//! Names that no rendering can ever resolve are refused with the definition instead. Labels
//! and payload keys are free-form (`{{ event.resource.idd }}` may exist on some event), so only
//! the top-level names and the event's own fields are checked.

use std::collections::HashSet;

use super::environment::ENV;
use super::objects::EVENT_ATTRIBUTES;

/// What a template is rendered against: the names it may read at the top level.
pub(super) struct Scope {
    names: &'static [&'static str],
    /// For the message: "run parameters", "a filter", ...
    what: &'static str,
}

/// Run parameters: a firing's template context, as Prefect's `RunDeployment` builds it.
pub(super) const PARAMETERS: Scope = Scope {
    names: &["event", "events", "firing", "firings", "automation", "labels", "filter"],
    what: "run parameters",
};

/// A trigger's or a scope filter's expression.
pub(super) const FILTER: Scope =
    Scope { names: &["event", "payload", "input", "event_key", "additional_metadata"], what: "a filter" };

/// A deployment's run keys (concurrency, dynamic rate limits), over a run's parameters and
/// cause.
pub(super) const KEY: Scope =
    Scope { names: &["params", "parameters", "input", "metadata"], what: "a concurrency or rate limit key" };

/// Names a Prefect automation may read that Prefect loads from its orchestration API (the
/// flow run, deployment, ... the event names) and tripwire does not have.
const PREFECT_ONLY: &[&str] =
    &["deployment", "flow", "flow_run", "task_run", "work_pool", "work_queue", "concurrency_limit", "variables"];

/// Checks the names a template reads (minijinja's nested undeclared variables: `event`,
/// `event.payload.id`, ...) and returns a message for each that no rendering can resolve.
pub(super) fn check(nested: &HashSet<String>, scope: &Scope) -> Vec<String> {
    let mut names: Vec<&String> = nested.iter().collect();
    names.sort();
    let mut problems = Vec::new();
    let mut reported: HashSet<String> = HashSet::new();
    for name in names {
        let mut parts = name.split('.');
        let top = parts.next().unwrap_or_default();
        if scope.names.contains(&top) || ENV.globals().any(|(global, _)| global == top) {
            if let (true, Some(field)) = (top == "event" && scope.names.contains(&"event"), parts.next()) {
                if !EVENT_ATTRIBUTES.contains(&field) && reported.insert(format!("event.{field}")) {
                    problems.push(format!(
                        "`event.{field}`: an event has no field `{field}`{}; it has {}",
                        suggestion(field, EVENT_ATTRIBUTES),
                        EVENT_ATTRIBUTES.join(", ")
                    ));
                }
            }
            continue;
        }
        if !reported.insert(top.to_owned()) {
            continue;
        }
        if PREFECT_ONLY.contains(&top) {
            problems.push(format!(
                "`{top}` is one of the objects Prefect loads from its own API; tripwire does not have it: read \
                 what the event says instead (`event.resource`, `event.related`, `event.payload`)"
            ));
        } else {
            problems.push(format!(
                "`{top}` is not a name {} can read{}; they read {}",
                scope.what,
                suggestion(top, scope.names),
                scope.names.join(", ")
            ));
        }
    }
    problems
}

/// " (did you mean `x`?)" for the closest candidate within two edits, or nothing.
fn suggestion(name: &str, candidates: &[&str]) -> String {
    candidates
        .iter()
        .map(|c| (edits(name, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map_or_else(String::new, |(_, c)| format!(" (did you mean `{c}`?)"))
}

/// Levenshtein distance (names are short: a row of a few dozen cells).
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> HashSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_misspelt_name_or_event_field_is_named_with_what_was_meant() {
        let found = check(&names(&["evnt.id"]), &PARAMETERS);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("`evnt` is not a name run parameters can read (did you mean `event`?)"),
            "{found:?}"
        );
        let found = check(&names(&["event", "event.payloadd", "event.payloadd.id"]), &PARAMETERS);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("`event.payloadd`: an event has no field `payloadd` (did you mean `payload`?)"));
        let found = check(&names(&["flow_run.name"]), &PARAMETERS);
        assert!(found[0].contains("Prefect loads from its own API"), "{found:?}");
    }

    #[test]
    fn context_names_globals_labels_and_payload_keys_pass() {
        let ok = names(&[
            "event.resource.idd",
            "event.payload.anything.at.all",
            "event.occurred",
            "labels.team",
            "firing.triggering_labels",
            "events",
            "range",
            "namespace",
        ]);
        assert_eq!(check(&ok, &PARAMETERS), Vec::<String>::new());
        assert_eq!(check(&names(&["payload.amount", "event_key", "input.x"]), &FILTER), Vec::<String>::new());
        assert_eq!(check(&names(&["params.user_id"]), &KEY), Vec::<String>::new());
        assert_eq!(check(&names(&["event.id"]), &KEY).len(), 1);
    }

    #[test]
    fn edit_distance() {
        assert_eq!(edits("evnt", "event"), 1);
        assert_eq!(edits("payloadd", "payload"), 1);
        assert_eq!(edits("", "abc"), 3);
        assert_eq!(edits("kitten", "sitting"), 3);
    }
}
