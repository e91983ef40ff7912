//! The JSON Schemas in `schemas/`: they must be exactly what `tripwire schemas` generates, and
//! they must agree with tripwire's own parsers on real and broken examples.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jsonschema::Validator;
use serde_json::{json, Value};
use tripwire::model::schema;
use tripwire::model::{
    Deployment, Event, EventDefaults, Firing, JsonPath, Run, RunCause, RunState, Timestamp, TriggerDefinition,
};
use uuid::Uuid;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The generated schema called `name` (e.g. `event.json`).
fn generated(name: &str) -> Value {
    schema::all().into_iter().find(|(n, _)| *n == name).map(|(_, s)| s).unwrap_or_else(|| panic!("no {name}"))
}

fn validator(name: &str) -> Validator {
    jsonschema::validator_for(&generated(name)).unwrap_or_else(|e| panic!("{name} is not a usable schema: {e}"))
}

/// Why `instance` is invalid, or `None` when it is valid.
fn errors(validator: &Validator, instance: &Value) -> Option<String> {
    let messages: Vec<String> =
        validator.iter_errors(instance).map(|e| format!("{}: {e}", e.instance_path())).collect();
    (!messages.is_empty()).then(|| messages.join("; "))
}

#[test]
fn schema_files_match_the_generated_schemas() {
    let dir = root().join("schemas");
    for (name, schema) in schema::all() {
        let path = dir.join(name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == schema::to_text(&schema),
            "schemas/{name} is missing or out of date: run `cargo run -- schemas` and commit the result"
        );
    }
    let names: Vec<&str> = schema::all().into_iter().map(|(n, _)| n).collect();
    for entry in std::fs::read_dir(&dir).expect("schemas/ exists") {
        let file = entry.expect("readable entry").file_name().to_string_lossy().into_owned();
        assert!(
            names.contains(&file.as_str()),
            "schemas/{file} is not generated any more: delete it and run `cargo run -- schemas`"
        );
    }
}

#[test]
fn schemas_are_valid_draft_2020_12() {
    for (name, schema) in schema::all() {
        if let Err(e) = jsonschema::meta::validate(&schema) {
            panic!("{name}: {e}");
        }
        assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    }
}

fn conformance_cases() -> Vec<(PathBuf, Value)> {
    let dir = root().join("tests/conformance");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/conformance exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty());
    paths
        .into_iter()
        .map(|p| {
            let case = serde_json::from_str(&std::fs::read_to_string(&p).expect("readable case")).expect("valid JSON");
            (p, case)
        })
        .collect()
}

#[test]
fn every_conformance_trigger_definition_and_event_is_valid() {
    let definitions = validator("trigger-definition.json");
    let events = validator("event.json");
    let (mut n_definitions, mut n_events) = (0, 0);
    for (path, case) in conformance_cases() {
        let file = path.file_name().unwrap().to_string_lossy();
        for (i, d) in case["triggers"].as_array().expect("triggers array").iter().enumerate() {
            if let Some(e) = errors(&definitions, d) {
                panic!("{file}: triggers[{i}] is rejected by trigger-definition.json: {e}");
            }
            n_definitions += 1;
        }
        for (i, ev) in case["events"].as_array().expect("events array").iter().enumerate() {
            if let Some(e) = errors(&events, ev) {
                panic!("{file}: events[{i}] is rejected by event.json: {e}");
            }
            n_events += 1;
        }
    }
    assert!(n_definitions > 50 && n_events > 100, "{n_definitions} definitions, {n_events} events");
}

fn parse_event(v: &Value) -> bool {
    let mut new_id = Uuid::nil;
    let defaults = EventDefaults { occurred: Timestamp::from_micros(0), new_id: &mut new_id };
    Event::from_json(v, &JsonPath::root(), Some(defaults)).is_ok()
}

fn parse_definition(v: &Value) -> bool {
    TriggerDefinition::from_json(v, &JsonPath::root()).is_ok()
}

fn parse_deployment(v: &Value) -> bool {
    Deployment::from_json(v, &JsonPath::root(), None).is_ok()
}

/// Each example must be accepted (or rejected) by the schema and by tripwire's parser alike.
fn check_agreement(schema: &str, parse: fn(&Value) -> bool, examples: &[(bool, Value)]) {
    let validator = validator(schema);
    for (accept, example) in examples {
        let schema_errors = errors(&validator, example);
        assert_eq!(parse(example), *accept, "the parser disagrees with the test on {example}");
        match (accept, schema_errors) {
            (true, Some(e)) => panic!("{schema} rejects {example}: {e}"),
            (false, None) => panic!("{schema} accepts {example}"),
            _ => {}
        }
    }
}

#[test]
fn event_schema_agrees_with_the_parser() {
    let long_name = "e".repeat(1025);
    check_agreement(
        "event.json",
        parse_event,
        &[
            (true, json!({"event": "a", "resource": {"prefect.resource.id": "x"}})),
            (
                true,
                json!({"id": null, "occurred": null, "event": "a", "resource": {"prefect.resource.id": "x", "k": "v"},
                       "related": null, "payload": null, "follows": null, "received": null}),
            ),
            (
                true,
                json!({"id": "00000000-0000-0000-0000-000000000001", "occurred": "2026-01-01T00:00:00Z",
                       "event": "a", "resource": {"prefect.resource.id": "x"},
                       "related": [{"prefect.resource.id": "f", "prefect.resource.role": "flow"}],
                       "payload": {"n": [1, 2]}, "follows": "00000000-0000-0000-0000-000000000002",
                       "received": "2026-01-01T00:00:01.5+01:00", "scope": "s", "additional_metadata": {}}),
            ),
            // A misspelt field is refused by both, not dropped.
            (false, json!({"event": "a", "resource": {"prefect.resource.id": "x"}, "occured": "2026-01-01T00:00:00Z"})),
            (false, json!({"event": "a"})),
            (false, json!({"resource": {"prefect.resource.id": "x"}})),
            (false, json!({"event": "", "resource": {"prefect.resource.id": "x"}})),
            (false, json!({"event": long_name, "resource": {"prefect.resource.id": "x"}})),
            (false, json!({"event": 1, "resource": {"prefect.resource.id": "x"}})),
            (false, json!({"event": "a", "resource": {"team": "x"}})),
            (false, json!({"event": "a", "resource": {"prefect.resource.id": ""}})),
            (false, json!({"event": "a", "resource": {"prefect.resource.id": "x", "n": 1}})),
            (false, json!({"event": "a", "resource": "x"})),
            (
                false,
                json!({"event": "a", "resource": {"prefect.resource.id": "x"}, "related": [{"prefect.resource.id": "r"}]}),
            ),
            (false, json!({"event": "a", "resource": {"prefect.resource.id": "x"}, "related": {}})),
            (false, json!({"event": "a", "resource": {"prefect.resource.id": "x"}, "payload": []})),
            (false, json!({"event": "a", "resource": {"prefect.resource.id": "x"}, "follows": 3})),
            (false, json!({"event": "a", "resource": {"prefect.resource.id": "x"}, "occurred": 3})),
            (false, json!([])),
        ],
    );
}

#[test]
fn trigger_definition_schema_agrees_with_the_parser() {
    let def = |t: Value| json!({"id": "t", "trigger": t});
    check_agreement(
        "trigger-definition.json",
        parse_definition,
        &[
            (true, json!({"id": "t", "trigger": {}})),
            (true, json!({"name": "named", "trigger": {"expect": ["a"]}})),
            (
                true,
                json!({"id": "t", "name": null, "description": "d", "enabled": false, "deployment": "dep",
                       "parameters": {"x": "{{ event.id }}"}, "trigger": {"type": null}}),
            ),
            (true, json!({"id": "t", "parameters": null, "deployment": null, "trigger": {"type": "event"}})),
            (
                true,
                def(json!({"id": "9d8b2c6e-0000-0000-0000-000000000000", "match": {"a": "x*", "b": ["1", "2"]},
                             "match_related": [{"prefect.resource.role": "flow"}], "after": ["a"],
                             "expect": ["b"], "for_each": ["prefect.resource.id"], "posture": "Reactive",
                             "threshold": 0, "within": "30", "filter": null})),
            ),
            (true, def(json!({"match_related": {"prefect.resource.role": "flow"}, "within": 1.5}))),
            (true, def(json!({"posture": "Proactive", "within": 0}))),
            (true, def(json!({"posture": "Proactive", "within": 10}))),
            (true, def(json!({"posture": "Proactive"}))),
            (true, def(json!({"triggers": [{"expect": ["a"]}], "require": "any"}))),
            (true, def(json!({"triggers": [{"expect": ["a"]}], "require": 1, "within": null}))),
            (true, def(json!({"triggers": [{"expect": ["a"]}, {"expect": ["b"]}], "within": 60}))),
            (
                true,
                def(json!({"type": "sequence", "triggers": [{"type": "compound", "require": "all",
                                "triggers": [{"expect": ["a"]}]}]})),
            ),
            (false, json!({"id": "t", "trigger": {}, "bogus": 1})),
            (false, json!({"trigger": {}})),
            (false, json!({"id": "", "trigger": {}})),
            (false, json!({"name": "", "trigger": {}})),
            (false, json!({"id": 1, "trigger": {}})),
            (false, json!({"id": "t", "enabled": null, "trigger": {}})),
            (false, json!({"id": "t", "parameters": [1], "trigger": {}})),
            (false, json!({"id": "t", "trigger": []})),
            (false, def(json!({"posture": "Sideways"}))),
            (false, def(json!({"posture": "Metric"}))),
            (false, def(json!({"type": "metric"}))),
            (false, def(json!({"type": 3}))),
            (false, def(json!({"extra": true}))),
            (false, def(json!({"expect": "a"}))),
            (false, def(json!({"expect": [1]}))),
            (false, def(json!({"for_each": null}))),
            (false, def(json!({"match": null}))),
            (false, def(json!({"match": {"a": 1}}))),
            (false, def(json!({"match": {"a": [1]}}))),
            (false, def(json!({"match_related": [1]}))),
            (false, def(json!({"threshold": -1}))),
            (false, def(json!({"threshold": "x"}))),
            (false, def(json!({"within": -1}))),
            (false, def(json!({"within": null}))),
            (false, def(json!({"within": "soon"}))),
            (false, def(json!({"posture": "Proactive", "within": 5}))),
            (false, def(json!({"type": "event", "triggers": [{}]}))),
            (false, def(json!({"type": "compound", "triggers": [{}]}))),
            (false, def(json!({"type": "compound", "triggers": [], "require": "any"}))),
            (false, def(json!({"triggers": [{}], "require": 0}))),
            (false, def(json!({"triggers": [{}], "require": "some"}))),
            (false, def(json!({"type": "sequence", "triggers": [{}], "require": "any"}))),
            (false, def(json!({"triggers": [{"posture": "Sideways"}]}))),
            (false, def(json!({"triggers": [{}], "within": -5}))),
        ],
    );
}

#[test]
fn the_schema_accepts_prefects_flat_form_as_the_parser_does() {
    // Prefect's flat deployment-trigger form: the trigger's members beside the definition's.
    check_agreement(
        "trigger-definition.json",
        parse_definition,
        &[
            (
                true,
                json!({"name": "order", "enabled": true, "type": "event", "expect": ["order.complete"],
                          "posture": "Reactive", "threshold": 1, "within": 0, "job_variables": null}),
            ),
            (
                true,
                json!({"id": "c", "triggers": [{"expect": ["a"]}, {"expect": ["b"]}], "require": "all", "tags": ["x"]}),
            ),
            (true, json!({"id": "s", "triggers": [{"expect": ["a"]}], "within": 30, "parameters": {"a": 1}})),
            (true, json!({"id": "p", "expect": ["a"], "posture": "Proactive", "within": "0"})),
            // No trigger member at all, flat or nested.
            (false, json!({"id": "none", "parameters": {}})),
            // `require` belongs to a compound trigger, which needs `triggers`.
            (false, json!({"id": "r", "expect": ["a"], "require": "any"})),
            // A sequence has no `require`; an event trigger no `triggers`.
            (false, json!({"id": "s", "type": "sequence", "triggers": [{}], "require": "any"})),
            (false, json!({"id": "e", "type": "event", "triggers": [{}]})),
            (false, json!({"id": "x", "expect": ["a"], "colour": "red"})),
            (false, json!({"expect": ["a"]})),
            // A proactive window under 10 seconds, however small.
            (false, json!({"id": "p", "expect": ["a"], "posture": "Proactive", "within": 1e-42})),
            (false, json!({"id": "p", "expect": ["a"], "posture": "Proactive", "within": "5"})),
        ],
    );
}

#[test]
fn deployment_schema_agrees_with_the_parser() {
    check_agreement(
        "deployment.json",
        parse_deployment,
        &[
            (true, json!({"name": "post-order_complete.v2:prod"})),
            (
                true,
                json!({"name": "d", "description": "x", "parameters": {"a": 1}, "retries": 1000,
                       "timeout_seconds": 0.5, "concurrency_limit": 1}),
            ),
            (
                true,
                json!({"name": "d", "description": null, "parameters": null, "retries": null,
                       "timeout_seconds": null, "concurrency_limit": null}),
            ),
            (false, json!({})),
            (false, json!({"name": "a b"})),
            (false, json!({"name": ""})),
            (false, json!({"name": 1})),
            (false, json!({"name": "d", "x": 1})),
            (false, json!({"name": "d", "parameters": []})),
            (false, json!({"name": "d", "retries": -1})),
            (false, json!({"name": "d", "retries": 1001})),
            (false, json!({"name": "d", "timeout_seconds": 0})),
            (false, json!({"name": "d", "concurrency_limit": 0})),
            (false, json!({"name": "d", "description": 1})),
        ],
    );
}

fn a_firing() -> Firing {
    Firing {
        id: Uuid::from_u128(1),
        trigger: "t".into(),
        bucket: BTreeMap::from([("prefect.resource.id".to_owned(), "o.1".to_owned())]),
        at: Timestamp::from_micros(1_767_225_600_000_000),
        triggered: Timestamp::from_micros(1_767_225_600_500_000),
        triggering_event: Some(Uuid::from_u128(2)),
        triggering_events: vec![Uuid::from_u128(2)],
        deployment: Some("d".into()),
        parameters: Some(json!({"x": 1})),
        filter: None,
        error: None,
    }
}

#[test]
fn firings_and_runs_as_written_are_valid() {
    let firings = validator("firing.json");
    let mut firing = a_firing();
    let full = serde_json::to_value(&firing).unwrap();
    assert_eq!(errors(&firings, &full), None);
    firing.triggering_event = None;
    firing.triggering_events.clear();
    firing.deployment = None;
    firing.parameters = None;
    firing.error = Some("render failed".into());
    assert_eq!(errors(&firings, &serde_json::to_value(&firing).unwrap()), None);
    let mut no_bucket = full.clone();
    no_bucket.as_object_mut().unwrap().remove("bucket");
    assert!(errors(&firings, &no_bucket).is_some());

    let runs = validator("run.json");
    let firing = a_firing();
    let cause = RunCause::of(&firing);
    let deployment = tripwire::model::Deployment::new("d");
    let parameters = json!({"x": 1}).as_object().unwrap().clone();
    let mut run = Run::scheduled(Uuid::from_u128(3), &deployment, parameters, Some(cause), firing.triggered);
    let full = serde_json::to_value(&run).unwrap();
    assert_eq!(errors(&runs, &full), None);
    run.cause = None;
    run.state = RunState::Cancelled;
    assert_eq!(errors(&runs, &serde_json::to_value(&run).unwrap()), None);
    let mut bad = full.clone();
    bad["state"] = json!("Sideways");
    assert!(errors(&runs, &bad).is_some());
    let mut bad = full;
    bad["attempt"] = json!(0);
    assert!(errors(&runs, &bad).is_some());
}

#[test]
fn key_structural_facts() {
    let event = generated("event.json");
    assert_eq!(event["required"], json!(["event", "resource"]));
    assert_eq!(event["$defs"]["Resource"]["required"], json!(["prefect.resource.id"]));
    assert_eq!(event["$defs"]["RelatedResource"]["required"], json!(["prefect.resource.id", "prefect.resource.role"]));

    let definition = generated("trigger-definition.json");
    let forms = definition["anyOf"].as_array().expect("the nested form and three flat ones");
    assert_eq!(forms.len(), 4);
    for form in forms {
        assert_eq!(form["additionalProperties"], json!(false), "{form}");
    }
    assert_eq!(forms[0]["required"], json!(["trigger"]));
    assert!(definition["description"].as_str().unwrap().contains("flat deployment-trigger form"));
    let defs = &definition["$defs"];
    for kind in ["EventTrigger", "CompoundTrigger", "SequenceTrigger"] {
        assert_eq!(defs[kind]["additionalProperties"], json!(false), "{kind}");
    }
    assert_eq!(defs["Trigger"]["oneOf"].as_array().unwrap().len(), 3);
    let postures: Vec<&Value> = defs["Posture"]["oneOf"].as_array().unwrap().iter().map(|v| &v["const"]).collect();
    assert_eq!(postures, [&json!("Reactive"), &json!("Proactive")]);
    assert_eq!(defs["CompoundTrigger"]["required"], json!(["triggers", "require"]));
}
