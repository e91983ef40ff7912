//! The engine under hostile input: bucket keys and bucket memory are capped, and far-future
//! times stay representable through a snapshot. (That a trigger whose rendering panics is
//! disabled alone is tested next to the rendering, in `src/engine/render.rs`: the panic needs
//! a test-only template filter.)

use serde_json::json;
use tripwire::engine::{compile_all, BucketQuery, Engine, EngineConfig, EngineState};
use tripwire::model::{Event, Resource, Span, Timestamp, TriggerDefinition};
use uuid::Uuid;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_micros(Timestamp::parse("2026-01-01T00:00:00Z").unwrap().as_micros() + secs * 1_000_000)
}

fn ev(n: u128, at: Timestamp, name: &str, rid: &str) -> Event {
    Event::new(Uuid::from_u128(n), at, name, Resource::new(rid))
}

fn engine(definitions: serde_json::Value, config: EngineConfig) -> Engine {
    let defs = TriggerDefinition::list_from_json(&definitions).expect("valid definitions");
    let mut engine = Engine::new(config);
    for d in compile_all(&defs).expect("compiles") {
        engine.upsert(d);
    }
    engine
}

#[test]
fn a_key_past_its_limit_is_reported_not_stored() {
    let mut engine = engine(
        json!([{"id": "t", "trigger": {"expect": ["e"], "for_each": ["prefect.resource.id"], "threshold": 2, "within": 60}}]),
        EngineConfig::default(),
    );
    let limit = tripwire::engine::MAX_BUCKET_KEY_BYTES;
    let step = engine.on_event(t(0), ev(1, t(0), "e", &"k".repeat(limit + 1)));
    assert_eq!(step.overflows.len(), 1);
    assert!(step.overflows[0].reason.contains(&format!("at most {limit}")), "{}", step.overflows[0].reason);
    assert_eq!(engine.bucket_count(), 0);
    // 100 KB keys, as an attacker would send, cost nothing either.
    for n in 0..100 {
        engine.on_event(t(1), ev(10 + n, t(1), "e", &format!("{n}{}", "x".repeat(100_000))));
    }
    assert_eq!(engine.bucket_count(), 0);
    // A key at the limit still counts and fires.
    let key = "k".repeat(limit);
    engine.on_event(t(2), ev(2, t(2), "e", &key));
    let step = engine.on_event(t(3), ev(3, t(3), "e", &key));
    assert_eq!(step.firings.len(), 1);
}

#[test]
fn buckets_are_capped_by_bytes_as_well_as_count() {
    let config = EngineConfig { max_bucket_bytes_per_trigger: 10 * (64 + 100), ..EngineConfig::default() };
    let mut engine = engine(
        json!([{"id": "t", "trigger": {"expect": ["e"], "for_each": ["prefect.resource.id"], "threshold": 2, "within": 60}}]),
        config,
    );
    let key = |n: u128| format!("{n:0>100}");
    let mut overflows = Vec::new();
    for n in 0..20 {
        overflows.extend(engine.on_event(t(0), ev(n, t(0), "e", &key(n))).overflows);
    }
    assert_eq!(engine.bucket_count(), 10, "ten 100-byte keys fill 1,640 bytes");
    assert_eq!(overflows.len(), 10);
    assert!(overflows[0].reason.contains("bytes"), "{}", overflows[0].reason);
    // A key that has a bucket still counts: the second event of key 0 fires.
    let step = engine.on_event(t(1), ev(100, t(1), "e", &key(0)));
    assert_eq!(step.firings.len(), 1);
}

#[test]
fn far_future_windows_end_at_the_end_of_time_and_survive_a_snapshot() {
    let mut engine = engine(
        json!([{"id": "t", "trigger": {"after": ["a"], "expect": ["b"], "for_each": ["prefect.resource.id"], "within": 3_000_000_000u64}}]),
        EngineConfig::default(),
    );
    let late = Timestamp::parse("9999-12-31T23:00:00Z").unwrap();
    engine.on_event(t(0), ev(1, late, "a", "x"));
    let state = engine.export();
    let text = serde_json::to_string(&state).unwrap();
    assert!(!text.contains("+10000"), "every instant is written as a 4-digit year");
    let back: EngineState = serde_json::from_str(&text).expect("the snapshot reads back");
    assert_eq!(back, state);
    let page = engine.bucket_page("t", &BucketQuery { limit: 10, ..BucketQuery::default() }).unwrap();
    assert_eq!(page.buckets[0].bucket.end, Timestamp::MAX);
    assert_eq!(late.plus(Span::MAX), Timestamp::MAX);
    // ...and the window still works.
    let step = engine.on_event(t(1), ev(2, late, "b", "x"));
    assert_eq!(step.firings.len(), 1);
}

#[test]
fn the_bucket_view_pages_and_looks_one_key_up() {
    let mut engine = engine(
        json!([{"id": "t", "trigger": {"expect": ["e"], "for_each": ["prefect.resource.id"], "threshold": 5, "within": 600}}]),
        EngineConfig::default(),
    );
    for n in 0..25u128 {
        engine.on_event(t(0), ev(n, t(0), "e", &format!("k{n:02}")));
    }
    let mut seen = Vec::new();
    let mut query = BucketQuery { limit: 10, ..BucketQuery::default() };
    loop {
        let page = engine.bucket_page("t", &query).unwrap();
        assert!(page.buckets.len() <= 10);
        seen.extend(page.buckets.iter().map(|b| b.labels["prefect.resource.id"].clone()));
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|n| format!("k{n:02}")).collect();
    assert_eq!(seen, expected, "every bucket once, in key order");
    let one = engine.bucket_page("t", &BucketQuery { key: Some(vec!["k07".into()]), limit: 10, after: None }).unwrap();
    assert_eq!(one.buckets.len(), 1);
    assert_eq!(one.buckets[0].bucket.last_event, Some(Uuid::from_u128(7)));
    let none =
        engine.bucket_page("t", &BucketQuery { key: Some(vec!["nope".into()]), limit: 10, after: None }).unwrap();
    assert!(none.buckets.is_empty() && none.next.is_none());
    assert!(engine.bucket_page("missing", &BucketQuery::default()).is_none());
}

#[test]
fn a_window_cut_short_by_the_end_of_time_does_not_recurse() {
    // Events are refused past 9800 at the edge; the engine must still not loop on a window
    // that saturates to nothing at Timestamp::MAX.
    let mut engine = engine(
        json!([{"id": "t", "trigger": {"expect": ["e"], "for_each": ["prefect.resource.id"], "threshold": 2, "within": 60}}]),
        EngineConfig::default(),
    );
    for n in 0..3 {
        let step = engine.on_event(t(n), ev(n as u128, Timestamp::MAX, "e", "x"));
        assert!(step.faults.is_empty());
    }
    assert!(engine.bucket_count() <= 1);
}
