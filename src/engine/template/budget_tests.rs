//! Memory limits of templates: each attack fails with a RenderError naming the limit, within
//! the budget, and an ordinary template renders right after.

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{json, Value as Json};

use super::tests::{compile, event, one, render_compiled, render_with};
use super::*;
use crate::model::{JsonPath, Problems};

/// Renders `template` as parameter `v` against an event with `payload`: it must fail naming
/// `limit`, having charged no more than the budget; then an ordinary template renders.
fn rejects(template: &str, payload: Json, limit: &str) -> RenderError {
    let err = render_with(json!({ "v": template }), Some(event(payload)), &[]).unwrap_err();
    assert!(err.message.contains(limit), "{template}: {err}");
    assert!(budget::used() <= TEMPLATE_MAX_ALLOC_BYTES as u128, "{template}");
    assert_eq!(err.path, "$[0].parameters.v");
    // The budget starts again: an ordinary template renders after the failure.
    assert_eq!(one("{{ event.payload.n + 1 }}-{{ 'ab' ~ 'c' }}", json!({"n": 41})), json!("42-abc"));
    err
}

/// Each template renders, rewritten and checked, what plain minijinja renders.
fn renders_as_plain_minijinja(cases: &[&str]) {
    let mut plain = Environment::new();
    plain.set_undefined_behavior(UndefinedBehavior::Chainable);
    minijinja_contrib::add_to_environment(&mut plain);
    for t in cases {
        let expected = plain.render_str(t, minijinja::context! {}).unwrap();
        let got = one(&format!("x{t}"), json!({}));
        assert_eq!(got, json!(format!("x{expected}")), "{t} => {}", rewrite::template(t).unwrap());
    }
}

const VALUE: &str = "TEMPLATE_MAX_VALUE_BYTES";
const ALLOC: &str = "TEMPLATE_MAX_ALLOC_BYTES";

#[test]
fn indent_with_huge_widths_is_refused_before_allocating() {
    for t in [
        "{{ 'a' | indent(10**12) }}",
        "{{ 'a' | indent(2**63) }}",
        "{{ 'a' | indent(width=10**12) }}",
        "{{ 'a\nb\nc' | indent(1048576) }}",
        "{{ event.payload.s | indent(event.payload.n) }}",
    ] {
        let err = rejects(t, json!({"s": "x", "n": 1_000_000_000_000_i64}), VALUE);
        assert!(err.message.contains("`indent` would be at least"), "{err}");
    }
    // Negative and non-numeric widths are minijinja's argument errors, not allocations.
    assert!(render_with(json!({"v": "{{ 'a' | indent(-5) }}"}), None, &[]).is_err());
    assert_eq!(one("{{ 'a\nb' | indent(2) }}", json!({})), json!("a\n  b"));
    assert_eq!(one("{{ 'a\nb' | indent(2, true) }}", json!({})), json!("  a\n  b"));
}

#[test]
fn format_widths_and_precisions_are_bounded() {
    for t in [
        "{{ '{:>1000000000000}'.format(1) }}",
        "{{ '{:.1000000000000f}'.format(1.5) }}",
        "{{ '%1000000000000d' | format(1) }}",
        "{{ '%.1000000000000f' | format(1.5) }}",
        "{{ '%1048577s' | format('x') }}",
        "{{ ('{0}' * 3000).format(event.payload.s) }}",
    ] {
        rejects(t, json!({"s": "y".repeat(1000)}), VALUE);
    }
    // `%` is not string formatting in minijinja: an error, nothing built.
    let err = render_with(json!({"v": "{{ '%s' % 'x' }}"}), None, &[]).unwrap_err();
    assert!(err.message.contains("%"), "{err}");
    assert_eq!(one("{{ '{:>5}|{:.2f}'.format(1, 2.5) }}", json!({})), json!("    1|2.50"));
    assert_eq!(one("{{ '%05.1f-%s' | format(2.25, 'a') }}", json!({})), json!("002.2-a"));
}

#[test]
fn slice_batch_and_range_counts_are_bounded() {
    for t in [
        "{{ [1] | slice(10**12) }}",
        "{{ [1] | slice(2**63) }}",
        "{{ [1] | batch(10**12) }}",
        "{{ [1, 2, 3] | batch(2**63) | list }}",
        "{{ [1] | batch(2, 'x') | batch(40000) }}",
    ] {
        rejects(t, json!({}), VALUE);
    }
    let err = rejects("{% for i in range(10**12) %}{% endfor %}", json!({}), "TEMPLATE_MAX_RANGE");
    assert!(err.message.contains("1000000000000 items"), "{err}");
    rejects("{{ range(100001) | list }}", json!({}), "TEMPLATE_MAX_RANGE");
    assert_eq!(one("{{ [1, 2, 3] | batch(2) | list }}", json!({})), json!([[1, 2], [3]]));
    assert_eq!(one("{{ [1, 2, 3] | slice(2) | list }}", json!({})), json!([[1, 2], [3]]));
    assert_eq!(one("{{ range(2, 11, 4) | list }}", json!({})), json!([2, 6, 10]));
}

#[test]
fn growing_strings_in_loops_stop_at_the_limits() {
    // The brief's doubling, `replace` chains, nested and parenthesized doubling.
    for t in [
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s | replace('x', 'xx') %}{% endfor %}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s.replace('x', 'xx') %}{% endfor %}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ((ns.s) ~ (ns.s ~ '')) %}{% endfor %}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s * 2 %}{% endfor %}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = [ns.s, ns.s] | join %}{% endfor %}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = '{}{}'.format(ns.s, ns.s) %}{% endfor %}",
    ] {
        let err = render_with(json!({ "v": t }), None, &[]).unwrap_err();
        assert!(err.message.contains(VALUE) || err.message.contains(ALLOC), "{t}: {err}");
    }
    // `replace` with an empty pattern inserts between every character.
    rejects("{{ ('x' * 2000) | replace('', 'y' * 1000) }}", json!({}), VALUE);
}

#[test]
fn captures_filter_blocks_and_macros_are_counted() {
    let raw = "r".repeat(1000);
    for t in [
        // Capture-block doubling.
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set t %}{{ ns.s }}{{ ns.s }}{% endset %}{% set ns.s = t %}{% endfor %}".to_owned(),
        // Template text repeated inside a capture.
        format!("{{% set t %}}{{% for i in range(20000) %}}{raw}{{% endfor %}}{{% endset %}}{{{{ t | length }}}}"),
        // ... inside a filter block, and a macro called in a loop.
        format!("{{% filter upper %}}{{% for i in range(20000) %}}{raw}{{% endfor %}}{{% endfilter %}}"),
        format!("{{% macro m() %}}{raw}{{% endmacro %}}{{% set ns = namespace(n=0) %}}{{% for i in range(20000) %}}{{% set ns.n = m() | length %}}{{% endfor %}}"),
    ] {
        let err = render_with(json!({ "v": t }), None, &[]).unwrap_err();
        assert!(err.message.contains(ALLOC) || err.message.contains(VALUE), "{t}: {err}");
    }
    // Text in loops still renders as written.
    assert_eq!(
        one("{% for i in range(2) %}a'\\{{ i }}\n{% endfor %}{% set t %}x{% endset %}{{ t }}", json!({})),
        json!("a'\\0\na'\\1\nx")
    );
}

#[test]
fn namespace_accumulation_is_bounded_by_the_rendering_budget() {
    let err = rejects(
        "{% set ns = namespace(l=[]) %}{% for i in range(10000) %}{% set ns.l = ns.l + ['x' * 100000] %}{% endfor %}",
        json!({}),
        ALLOC,
    );
    assert!(err.message.contains("4194304 bytes per rendering"), "{err}");
    assert_eq!(
        one(
            "{% set ns = namespace(l=[]) %}{% for i in range(3) %}{% set ns.l = ns.l + [i] %}{% endfor %}{{ ns.l }}",
            json!({})
        ),
        json!("[0, 1, 2]")
    );
}

#[test]
fn repetition_sizes_from_the_event_are_checked() {
    rejects("{{ 'x' * event.payload.n }}", json!({"n": 1_000_000_000_000_i64}), VALUE);
    rejects("{{ event.payload.s * event.payload.n }}", json!({"s": "ab", "n": 524_289}), VALUE);
    rejects("{{ [1, 2] * event.payload.n }}", json!({"n": 1_000_000_000_000_i64}), VALUE);
    rejects("{{ ([1] * event.payload.n) | list }}", json!({"n": 32_769}), VALUE);
    assert_eq!(one("{{ 'ab' * event.payload.n }}", json!({"n": 3})), json!("ababab"));
    assert_eq!(one("{{ [1] * 2 }}", json!({})), json!([1, 1]));
}

#[test]
fn shared_values_cannot_be_printed_or_converted_without_limit() {
    // A list holding itself twice, 60 times over: 2**60 items when printed.
    let dag = "{% set ns = namespace(v=1) %}{% for i in range(60) %}{% set ns.v = [ns.v, ns.v] %}{% endfor %}";
    for tail in [
        "{{ ns.v }}",
        "x{{ ns.v }}",
        "{{ ns.v | tojson(indent=64) }}",
        "{{ ns.v | string }}",
        "{{ ns.v | pprint }}",
        "{{ ns.v ~ '' }}",
        "{{ [ns.v] | join }}",
        "{{ ns.v | upper }}",
        "{{ ns.v in 'abc' }}",
        "{{ ns.v is in 'abc' }}",
        "{{ '{}'.format(ns.v) }}",
        "{{ ns.v | truncate(10) }}",
    ] {
        let err = render_with(json!({ "v": format!("{dag}{tail}") }), None, &[]).unwrap_err();
        assert!(err.message.contains(VALUE) || err.message.contains(ALLOC), "{tail}: {err}");
    }
}

#[test]
fn no_namespace_can_be_stored_in_a_namespace() {
    // A namespace that could hold itself: comparing two such values would overflow the stack.
    for stored in [
        "ns",
        "(ns)",
        "[ns]",
        "[1, [2, {'k': ns}]]",
        "ms",
        "[ms] + []",
        "{'a': ms}",
        "dict(a=ms)",
        "ms if true else 1",
        "(((ns)))",
    ] {
        let template = format!(
            "{{% set ns = namespace(a=1) %}}{{% set ms = namespace(b=1) %}}{{% set ns.a = {stored} %}}{{{{ ns == ms }}}}"
        );
        let err = render_with(json!({ "v": template }), None, &[]).unwrap_err();
        assert!(err.message.contains("cannot be stored in a namespace"), "{stored}: {err}");
    }
    // Anything else is stored as before, events included.
    let ok =
        "{% set ns = namespace(a=1, l=[]) %}{% set ns.a = (1 + 2) * 3 %}{% set ns.l = ns.l + [event.id, {'k': [1]}] %}\
              {{ ns.a }} {{ ns.l | length }}";
    assert_eq!(render_with(json!({ "v": ok }), Some(event(json!({}))), &[]).unwrap(), json!({"v": "9 2"}));
}

#[test]
fn constant_operands_are_not_folded_at_compile_time() {
    // Rewritten into checked calls: nothing is built when the definition is saved ...
    assert_eq!(
        rewrite::expression("('x' * 100000000) ~ 'y'").unwrap(),
        "__tw_concat((__tw_mul('x' , 100000000)) , 'y')"
    );
    let (p, problems) = compile(&json!({"v": "{{ ('x' * 100000000) ~ 'y' }}", "w": "a{{ 'x' * 100000000 }}"}));
    assert!(problems.is_empty(), "{problems}");
    // ... and rendering fails on the limit.
    let err = render_compiled(&p, None).unwrap_err();
    assert!(err.message.contains(VALUE), "{err}");
    // Keys and filters too.
    let mut problems = Problems::default();
    let key = KeyTemplate::compile("{{ 'x' * 10**12 }}", &JsonPath::root(), &mut problems).unwrap();
    assert!(key.render(&serde_json::Map::new(), None).unwrap_err().message.contains(VALUE));
    let f = Filter::compile("('x' * 10**12) == payload.a", &JsonPath::root(), &mut problems).unwrap();
    assert!(f.matches(&event(json!({"a": 1}))).unwrap_err().message.contains(VALUE));
    assert!(problems.is_empty(), "{problems}");
}

#[test]
fn rewritten_operators_mean_what_minijinja_means() {
    // Nested, parenthesized, chained, in `set`, in filter arguments, in macros, slices.
    let cases = [
        "{{ 1 + 2 * 3 }}",
        "{{ (1 + 2) * 3 }}",
        "{{ 'a' ~ 'b' ~ 'c' }}",
        "{{ ('a' ~ ('b' ~ 'c')) ~ (('d')) }}",
        "{{ -2 * -3 + 2 ** 3 * 2 }}",
        "{{ [1, 2] + [3] }}",
        "{{ 'ab' * 2 ~ 'c' | upper }}",
        "{{ 1 in [1, 2] }}|{{ 3 not in [1, 2] }}|{{ not 1 in [2] }}|{{ 'a' in 'cat' and 'z' not in 'cat' }}",
        "{{ (1) in ([1]) }}",
        "{% set x = 'a' ~ (1 + 2) %}{{ x }}{% set y = 1 + 2 * 3 %}{{ y }}",
        "{{ 'abc' | replace('b', 'x' ~ 'y') | center if false else ('x' * 2) | upper }}",
        "{% macro m(a, b='x' ~ 'y') %}{{ a ~ b }}{% endmacro %}{{ m('q' * 2) }}",
        "{{ 'abcdef'[1:4] }}|{{ 'abcdef'[::-1] }}|{{ 'abcdef'[:2] }}|{{ 'abcdef'[4:] }}|{{ [1,2,3][1:][0] }}|{{ ('ab' ~ 'cd')[1:3] }}",
        "{{ 'abcdef'[ ( 1 ) : ( 3 ) ] }}|{{ 'abcdef'[::2] }}|{{ 'abcdef'[1:5:2] }}",
        "{{ ('a' if true else 'b') ~ 'c' }}|{{ 'x' if 1 + 1 == 2 else 'y' }}",
        "{{ [1, 2, 3] | map('string') | join('-' ~ '-') }}",
        "{% for i in range(3) if i * 2 > 1 %}{{ i ~ ',' }}{% endfor %}",
        "{{ {'a': 1 + 1, 'b': 'x' ~ 1}['b'] }}{{ (1, 2 * 2)[1] }}",
        "{{ 1 + 2 == 3 }}{{ 'a' ~ 'b' is string }}{{ 'A' ~ 'b' | lower }}",
    ];
    renders_as_plain_minijinja(&cases);
    let mut problems = Problems::default();
    for bad in ["{{ __tw_concat('a', 'b') }}", "{% include 'x' %}", "{{ 1 < 2 in [true] }}"] {
        let (_, p) = compile(&json!({ "v": bad }));
        assert_eq!(p.0.len(), 1, "{bad}");
        assert!(Filter::compile("__tw_add(1, 2)", &JsonPath::root(), &mut problems).is_none());
    }
    let err = {
        let (_, p) = compile(&json!({"v": "{% for i in [1] %}{% raw %}{{ x }}{% endraw %}{% endfor %}"}));
        p.to_string()
    };
    assert!(err.contains("raw"), "{err}");
    assert_eq!(one("{% raw %}{{ x }}{% endraw %}", json!({})), json!("{{ x }}"));
}

#[test]
fn templates_are_bounded_in_size() {
    let long = format!("{{{{ '{}' }}}}", "x".repeat(TEMPLATE_MAX_SOURCE_BYTES));
    let (_, problems) = compile(&json!({ "v": long }));
    assert_eq!(problems.0.len(), 1);
    assert_eq!(problems.0[0].path, "$[0].parameters.v");
    assert!(problems.0[0].message.contains("TEMPLATE_MAX_SOURCE_BYTES"), "{problems}");
    let mut problems = Problems::default();
    let source = format!("payload.a == '{}'", "x".repeat(TEMPLATE_MAX_SOURCE_BYTES));
    assert!(Filter::compile(&source, &JsonPath::root(), &mut problems).is_none());
    assert!(problems.to_string().contains("TEMPLATE_MAX_SOURCE_BYTES"), "{problems}");
    let just = format!("{{{{ '{}' }}}}", "x".repeat(TEMPLATE_MAX_SOURCE_BYTES - 8));
    assert_eq!(one(&just, json!({})).as_str().map(str::len), Some(TEMPLATE_MAX_SOURCE_BYTES - 8));
}

#[test]
fn rendered_parameters_are_capped() {
    let over = MAX_RENDERED_PARAMETERS_BYTES - "{\"v\":\"\"}".len() + 1;
    let err = render_with(json!({ "v": format!("{{{{ 'x' * {over} }}}}") }), None, &[]).unwrap_err();
    assert_eq!(err.path, "$[0].parameters");
    assert!(err.message.contains("MAX_RENDERED_PARAMETERS_BYTES"), "{err}");
    assert!(err.message.contains(&format!("{} bytes", MAX_RENDERED_PARAMETERS_BYTES + 1)), "{err}");
    let err = render_with(json!({"v": "{{ 'x' * 10**12 }}"}), None, &[]).unwrap_err();
    assert!(err.message.contains(VALUE), "{err}");
    let out = render_with(json!({ "v": format!("{{{{ 'x' * {} }}}}", over - 1) }), None, &[]).unwrap();
    assert_eq!(out["v"].as_str().map(str::len), Some(over - 1));
}

#[test]
fn filters_on_undefined_values_render_as_jinja_renders() {
    let out = render_with(
        json!({
            "related": "{{ event.related | length }}",
            "count": "{{ event.payload.missing | count }}",
            "default": "{{ event.payload.missing | default('x') }}",
            "first": "{{ event.payload.missing | first }}",
            "items": "{{ event.payload.missing | items | list }}",
            "bare": "{{ event.payload.missing }}",
            "nope": "{{ event.resource.nope }}",
            "text": "n={{ event.related | length }}"
        }),
        None,
        &[],
    )
    .unwrap();
    assert_eq!(
        out,
        json!({"related": 0, "count": 0, "default": "x", "first": null, "items": [], "bare": null, "nope": null, "text": "n=0"})
    );
    assert_eq!(one("{{ event.related | length }}", json!({})), json!(2));
    // none is not undefined: its length is an error, as in Jinja.
    assert!(render_with(json!({"v": "{{ none | length }}"}), None, &[]).is_err());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
    #[test]
    fn checked_operations_never_panic(
        a in proptest::sample::select(vec!["'ab'", "[1, 2]", "event.payload.s", "none", "missing", "{'k': 1}", "3", "-1", "2.5"]),
        op in proptest::sample::select(vec!["+", "*", "~", "in", "not in", "**", "%", "-", "//"]),
        n in proptest::sample::select(vec!["10**12", "2**63", "-5", "0", "1048577", "2**64", "-(2**63)", "event.payload.n"]),
        f in proptest::sample::select(vec!["indent", "batch", "slice", "center", "truncate", "tojson", "format", "join", "replace('a', 'b' * 3)", "wordwrap", "round", "string"]),
    ) {
        for t in [
            format!("{{{{ {a} {op} {n} }}}}"),
            format!("x{{{{ ({a} {op} {n}) | {f} }}}}"),
            format!("{{{{ {a} | {f}({n}) }}}}"),
            format!("{{{{ '%{n}s' | format({a}) }}}}"),
            format!("{{{{ {a}[{n}:{n}] }}}}"),
            format!("{{% set ns = namespace(s={a}) %}}{{% for i in range(50) %}}{{% set ns.s = ns.s {op} ns.s %}}{{% endfor %}}"),
        ] {
            let (p, _) = compile(&json!({ "v": t }));
            let _ = render_compiled(&p, Some(event(json!({"s": "ab", "n": 1_000_000_000_000_i64}))));
            proptest::prop_assert!(budget::used() <= TEMPLATE_MAX_ALLOC_BYTES as u128);
        }
    }
}

const WORK: &str = "TEMPLATE_MAX_WORK";

/// Two shared lists of 2**`n` leaves each, built in about 50 bytes of source per level
/// (`a40` and `b40`: equal, and 2**40 nodes when compared).
fn dags(n: usize) -> String {
    let mut s = "{% set a0 = 1 %}{% set b0 = 1 %}".to_owned();
    for i in 1..=n {
        let p = i - 1;
        s.push_str(&format!("{{% set a{i} = [a{p}, a{p}] %}}{{% set b{i} = [b{p}, b{p}] %}}"));
    }
    s
}

/// Renders `template`: it must fail naming TEMPLATE_MAX_WORK, within the budget; then an
/// ordinary template renders.
fn rejects_work(template: &str, payload: Json) -> RenderError {
    let err = rejects(template, payload, WORK);
    assert!(err.message.contains(&format!("more than {TEMPLATE_MAX_WORK} units of work")), "{template}: {err}");
    err
}

#[test]
fn comparing_shared_lists_stops_at_the_work_budget() {
    let dag = dags(40);
    for tail in [
        "{{ a40 == b40 }}",
        "{{ a40 != b40 }}",
        "{{ a40 < b40 }}",
        "{{ 1 < 2 and a40 >= b40 }}",
        "{{ (a40) == ((b40)) }}",
        "{% if not a40 == b40 %}x{% endif %}",
        "{{ 'x' if a40 == b40 else 'y' }}",
        "{{ a40 == a40 }}",
        "{{ a40 in [b40] }}",
        "{{ a40 not in [b40] }}",
        "{{ [1] + [a40] == [1] + [b40] }}",
        "{{ a40 is eq(b40) }}",
        "{{ a40 is equalto b40 }}",
        "{{ a40 is ne(b40) }}",
        "{{ a40 is in([b40]) }}",
        "{{ a40 is sameas(b40) }}",
        "{{ {'k': 1}[a40] }}",
        "{{ {a40: 1} }}",
        "{% for i in [1, 2] %}{{ loop.changed(a40) }}{% endfor %}",
        "{% set ns = namespace(x=a40 == b40) %}",
    ] {
        rejects_work(&format!("{dag}{tail}"), json!({}));
    }
    // Just under the budget: two lists of 2**17 leaves compare (2 * 2 * 2**17 nodes).
    let small = dags(17);
    assert_eq!(one(&format!("{small}{{{{ a17 == b17 }}}}"), json!({})), json!("True"));
    assert!(budget::work() < TEMPLATE_MAX_WORK);
}

#[test]
fn comparisons_still_mean_what_minijinja_means() {
    let cases = [
        "{{ 1 == 1 }}{{ 1 != 2 }}{{ 1 < 2 < 3 }}{{ 3 > 2 >= 2 }}{{ 'a' <= 'b' }}",
        "{{ [1, [2]] == [1, [2]] }}{{ {'a': [1]} == {'a': [1]} }}{{ (1 + 2) * 3 == 9 }}",
        "{{ 1 + 2 == 3 and not 2 == 3 }}{{ (1 if true else 2) == 1 }}{{ 'ab' | upper == 'AB' }}",
        "{{ 3 is eq 3 }}{{ 3 is ne(4) }}{{ 2 is lt 3 }}{{ 1 is in [1] }}{{ 'ab' is startingwith 'a' }}",
        "{{ {'a': 1}['a'] }}{{ [1, 2][1] }}{% set k = 'a' %}{{ {k: 2}[k] }}{{ {k ~ 'b': 3}['ab'] }}",
        "{% for i in [1, 1, 2] %}{{ loop.changed(i) }}{% endfor %}",
        "{{ firing.missing == none }}{{ firing.missing is eq(firing.missing) }}{{ none is ne(1) }}",
        "{{ [1, 2, 3] | select('gt', 1) | list }}{{ [3, 1] | sort == [1, 3] }}",
        "{{ ('a' ~ 'b') == 'ab' }}{{ ((1)) < ((2)) }}{{ -1 < 0 }}{{ ('b' in 'abc') == true }}",
    ];
    renders_as_plain_minijinja(&cases);
    assert_eq!(rewrite::expression("a == 'x'").unwrap(), "__tw_w(a) == 'x'");
    assert_eq!(rewrite::expression("(a + b) < c[d]").unwrap(), "(__tw_w(__tw_add(a , b))) < __tw_w(c[__tw_w(d)])");
}

#[test]
fn ordinary_comparisons_of_event_fields_render() {
    let out = render_with(
        json!({
            "big": "{% if event.payload.total > 100 %}big{% else %}small{% endif %}",
            "same": "{{ event.resource.id == 'Acme.Order.42' }}",
            "eq": "{{ event.payload == event.payload }}",
            "in": "{{ 'b' in event.payload.tags and event.event is startingwith 'order' }}",
            "sorted": "{{ (event.payload.items | sort | first) }}",
            "picked": "{{ event.payload.rows | selectattr('n', 'gt', 997) | map(attribute='n') | list }}"
        }),
        Some(event(json!({
            "total": 250,
            "tags": ["a", "b"],
            "items": (0..1000).rev().collect::<Vec<_>>(),
            "rows": (0..1000).map(|n| json!({"n": n})).collect::<Vec<_>>(),
        }))),
        &[],
    )
    .unwrap();
    assert_eq!(out["big"], json!("big"));
    assert_eq!(out["same"], json!(true));
    assert_eq!(out["eq"], json!(true));
    assert_eq!(out["in"], json!(true));
    assert_eq!(out["sorted"], json!(0));
    assert_eq!(out["picked"], json!([998, 999]));
    assert!(budget::work() < TEMPLATE_MAX_WORK / 10, "{}", budget::work());
}

#[test]
fn filters_over_shared_lists_stop_at_the_work_budget() {
    let dag = dags(40);
    for tail in [
        "{{ [a40, b40] | sort }}",
        "{{ [a40, b40] | unique | list }}",
        "{{ a40 | unique | list }}",
        "{{ a40 | max }}",
        "{{ a40 | min }}",
        "{{ [a40, b40] | max }}",
        "{{ [{'k': a40}, {'k': b40}] | selectattr('k', 'equalto', a40) | list }}",
        "{{ [a40, b40] | select('eq', a40) | list }}",
        "{{ [a40, b40] | reject('in', [b40]) | list }}",
        "{{ {'x': a40, 'y': b40} | dictsort(by='value') }}",
        "{{ [{'k': a40}, {'k': b40}] | groupby('k') }}",
        "{{ [{'k': a40}, {'k': b40}] | sort(attribute='k') }}",
        "{{ [a40, b40].count(a40) }}",
        "{{ {'k': 1}.get(a40) }}",
        "{{ 'abc'.startswith(a40) }}",
        "{{ [a40] is eq [b40] }}",
    ] {
        rejects_work(&format!("{dag}{tail}"), json!({}));
    }
}

/// A 1 MiB string from the payload, read once, and a copy built within the memory budget.
const BIG: &str = "{% set big = event.payload.big %}{% set big2 = big ~ '' %}";

fn big_payload() -> Json {
    json!({"big": "a".repeat(1 << 20), "n": 1})
}

#[test]
fn scanning_big_strings_in_loops_stops_at_the_work_budget() {
    for body in [
        "{% if big | length > 0 %}{% endif %}",
        "{% if big | count > 0 %}{% endif %}",
        "{% if big == big2 %}{% endif %}",
        "{% if big >= big2 %}{% endif %}",
        "{% if big < big2 %}{% endif %}",
        "{% if 'x' in big %}{% endif %}",
        "{% if 'x' not in big %}{% endif %}",
        "{% if big is startingwith big2 %}{% endif %}",
        "{% if big is endingwith big2 %}{% endif %}",
        "{% if 'x' is in big %}{% endif %}",
        "{% if big.startswith(big2) %}{% endif %}",
        "{% if big.endswith(big2) %}{% endif %}",
        "{% if big.count('a') > 0 %}{% endif %}",
        "{% if big.find('b') > 0 %}{% endif %}",
        "{% if big.rfind('b') > 0 %}{% endif %}",
        "{% if big.isdigit() %}{% endif %}",
        "{% if big.isalpha() %}{% endif %}",
        "{% if [big] | max == 'x' %}{% endif %}",
        "{% if [big, big2] | sort | first == 'x' %}{% endif %}",
        "{% if {big: 1}[big2] %}{% endif %}",
    ] {
        let t = format!("{BIG}{{% for i in range(99999) %}}{body}{{% endfor %}}");
        rejects_work(&t, big_payload());
    }
    // Allocating scans stop at the memory limits first.
    for body in ["{% if big | lower == 'x' %}{% endif %}", "{% if big.upper() == 'x' %}{% endif %}"] {
        let t = format!("{BIG}{{% for i in range(99999) %}}{body}{{% endfor %}}");
        let err = render_with(json!({ "v": t }), Some(event(big_payload())), &[]).unwrap_err();
        assert!([VALUE, ALLOC, WORK].iter().any(|limit| err.message.contains(limit)), "{body}: {err}");
    }
    // Once, each of these is fine.
    let once = format!(
        "{BIG}{{{{ big | length }}}} {{{{ big == big2 }}}} {{{{ 'b' in big }}}} {{{{ big.count('a') }}}} \
         {{{{ big.startswith('aa') }}}} {{{{ big is endingwith 'a' }}}} {{{{ big.find('b') }}}}"
    );
    assert_eq!(one(&once, big_payload()), json!("1048576 True False 1048576 True True -1"));
}

#[test]
fn counting_an_empty_string_does_not_loop_forever() {
    // minijinja-contrib's `str.count('')` never returns; Python counts positions.
    assert_eq!(one("{{ 'abc'.count('') }}|{{ ''.count('') }}|{{ 'abca'.count('a') }}", json!({})), json!("4|1|2"));
    let t = format!("{BIG}{{% for i in range(99999) %}}{{% if big.count('') %}}{{% endif %}}{{% endfor %}}");
    rejects_work(&t, big_payload());
}

#[test]
fn ordinary_sorts_and_selections_render() {
    let items: Vec<Json> = (0..1000).map(|n| json!({"n": (n * 7919) % 1000, "s": format!("item-{n}")})).collect();
    let out = render_with(
        json!({
            "sorted": "{{ event.payload.items | sort(attribute='n') | map(attribute='n') | first }}",
            "max": "{{ event.payload.items | map(attribute='n') | max }}",
            "unique": "{{ event.payload.items | map(attribute='n') | unique | list | length }}",
            "sel": "{{ event.payload.items | selectattr('n', 'lt', 3) | map(attribute='n') | sort | list }}",
            "groups": "{{ event.payload.items | groupby('n') | length }}",
            "text": "{{ event.payload.items | map(attribute='s') | join(',') | length }}"
        }),
        Some(event(json!({ "items": items }))),
        &[],
    )
    .unwrap();
    assert_eq!(out["sorted"], json!(0));
    assert_eq!(out["max"], json!(999));
    assert_eq!(out["unique"], json!(1000));
    assert_eq!(out["sel"], json!([0, 1, 2]));
    assert_eq!(out["groups"], json!(1000));
    assert!(budget::work() < TEMPLATE_MAX_WORK / 10, "{}", budget::work());
}

#[test]
fn a_payload_value_read_in_a_loop_is_converted_once() {
    // A 1 MB payload value read 99,999 times: once converted, shared after (it used to be
    // copied on every read, outside every budget).
    let big = "x".repeat(1 << 20);
    let template = "{% set ns = namespace(n=0) %}{% for i in range(99999) %}{% if event.payload.big %}\
                    {% set ns.n = ns.n + 1 %}{% endif %}{% endfor %}{{ ns.n }}";
    let rendered = render_with(json!({ "v": template }), Some(event(json!({ "big": big }))), &[]);
    match rendered {
        Ok(v) => assert_eq!(v, json!({"v": "99999"})),
        // Fuel may end the loop first; what matters is that it ends, quickly and cleanly.
        Err(e) => assert!(e.message.contains("fuel"), "{e}"),
    }
}

#[test]
fn rendered_parameters_are_held_to_the_json_depth() {
    // A firing's parameters are stored with it: a template may not build deeper JSON than a
    // client may send.
    let mut p = json!(1);
    for _ in 0..60 {
        p = json!([p]);
    }
    let deep = "{{ [[[[[[[[event.payload.p]]]]]]]] }}";
    let err = render_with(json!({ "v": deep }), Some(event(json!({ "p": p.clone() }))), &[]).unwrap_err();
    assert!(err.message.contains("MAX_JSON_DEPTH"), "{err}");
    assert!(render_with(json!({ "v": "{{ [event.payload.p] }}" }), Some(event(json!({ "p": p }))), &[]).is_ok());
}
