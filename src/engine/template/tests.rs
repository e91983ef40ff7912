//! Unit tests of parameters, filters, keys, the environment and its objects (the memory
//! limits are tested in `budget_tests.rs`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::{json, Value as Json};
use uuid::Uuid;

use super::environment::has_top_level_variable_end;
use super::parameters::Node;
use super::*;
use crate::model::{EventTrigger, JsonPath, Problems, Resource, Timestamp};

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
    assert_eq!(key.render(&params, None).unwrap(), "7-free");
    let missing = KeyTemplate::compile("{{ params.nope }}", &JsonPath::root(), &mut problems).unwrap();
    assert!(missing.render(&params, None).unwrap_err().message.contains("empty key"));
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
    let out =
        render_with(json!({"l": "{{ labels }}", "a": "{{ labels.team }}"}), Some(event(json!({}))), &labels).unwrap();
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
    let out =
        render_with(json!({"e": "{{ firing.triggering_event }}", "n": "{{ events | length }}"}), None, &[]).unwrap();
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
    let err = render_with(json!({"v": "{{ event.payload.s.nosuchmethod() }}"}), Some(event(json!({"s": "a"}))), &[])
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
        ("{{ event.resource | tojson }}", json!("{\"prefect.resource.id\": \"Acme.Order.42\", \"team\": \"data\"}")),
        ("{{ event.related[0].role }}/{{ event.related[0].name }}/{{ event.related[1].id }}", json!("flow/etl/tag.a")),
        ("{{ event.resource.labels.prefect.resource.id }}", json!("Acme.Order.42")),
        ("{{ event.resource_in_role['flow'].id }}", json!("prefect.flow.1")),
        ("{{ event.related | selectattr('role', 'equalto', 'tag') | map(attribute='id') | first }}", json!("tag.a")),
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
