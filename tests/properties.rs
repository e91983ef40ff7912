//! Properties of the engine over random event streams: replay is deterministic, the way a
//! stream is cut into batches (with clock ticks between them) does not change the firings,
//! and exporting the state midway and restoring it into a fresh engine changes nothing.

use proptest::prelude::*;
use serde_json::json;
use tripwire::engine::replay::Replay;
use tripwire::engine::CompiledDefinition;
use tripwire::engine::{compile_all, EngineConfig, EngineState};
use tripwire::model::{Event, Firing, Resource, Timestamp, TriggerDefinition};
use uuid::Uuid;

/// A mix of every kind of trigger, with parameters, so every path is exercised.
fn definitions() -> Vec<CompiledDefinition> {
    let defs = json!([
        {"id": "reactive", "trigger": {"expect": ["a"], "for_each": ["prefect.resource.id"], "threshold": 2, "within": 30},
         "parameters": {"rid": "{{ event.resource.id }}", "n": "{{ event.payload.n }}"}},
        {"id": "after-expect", "trigger": {"after": ["a"], "expect": ["b"], "for_each": ["prefect.resource.id"], "within": 20},
         "parameters": {"rid": "{{ event.resource.id }}"}},
        {"id": "same-name", "trigger": {"after": ["b"], "expect": ["b"], "within": 15}},
        {"id": "immediate", "trigger": {"expect": ["c"], "threshold": 2, "within": 0}},
        {"id": "single-key", "trigger": {"expect": ["c*"]}, "parameters": {"at": "{{ event.occurred }}"}},
        {"id": "proactive", "trigger": {"posture": "Proactive", "expect": ["a"], "within": 25},
         "parameters": {"has_event": "{{ event is not none }}"}},
        {"id": "proactive-each", "trigger": {"posture": "Proactive", "after": ["b"], "expect": ["c"],
         "for_each": ["prefect.resource.id"], "within": 12}, "parameters": {"rid": "{{ event.resource.id }}"}},
        {"id": "heartbeat", "trigger": {"posture": "Proactive", "after": ["a"], "expect": ["a"],
         "for_each": ["prefect.resource.id"], "within": 18}},
        {"id": "compound", "trigger": {"type": "compound", "require": "all", "within": 40, "triggers": [
            {"expect": ["a"]}, {"expect": ["b"], "threshold": 2, "within": 10}]},
         "parameters": {"name": "{{ event.event }}"}},
        {"id": "sequence", "trigger": {"type": "sequence", "within": 60, "triggers": [
            {"expect": ["a"]}, {"expect": ["c"]}, {"posture": "Proactive", "expect": ["b"], "within": 30}]}}
    ]);
    let defs = TriggerDefinition::list_from_json(&defs).expect("valid definitions");
    compile_all(&defs).expect("compiles")
}

#[derive(Clone, Debug)]
struct Spec {
    /// Seconds after the start at which the event occurred.
    offset: i64,
    name: &'static str,
    resource: u8,
    /// Deliver an earlier event's id again.
    duplicate_of: Option<usize>,
    /// Follow an earlier (or later) event.
    follows: Option<usize>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0i64..400,
        prop::sample::select(vec!["a", "b", "c", "cc", "prefect.log.write"]),
        0u8..3,
        prop::option::weighted(0.1, 0usize..40),
        prop::option::weighted(0.1, 0usize..40),
    )
        .prop_map(|(offset, name, resource, duplicate_of, follows)| Spec {
            offset,
            name,
            resource,
            duplicate_of,
            follows,
        })
}

fn stream() -> impl Strategy<Value = Vec<Spec>> {
    // Mostly increasing times with some jitter, so late and out-of-order events happen.
    prop::collection::vec(spec(), 1..40).prop_map(|mut specs| {
        let mut t = 0;
        for s in specs.iter_mut() {
            t += s.offset % 40;
            s.offset = t - (s.offset % 7) * (s.offset % 3);
        }
        specs
    })
}

fn start() -> Timestamp {
    Timestamp::parse("2026-01-01T00:00:00Z").unwrap()
}

fn events(specs: &[Spec]) -> Vec<Event> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let id = match s.duplicate_of {
                Some(d) if d < i => Uuid::from_u128(d as u128 + 1),
                _ => Uuid::from_u128(i as u128 + 1),
            };
            let occurred = Timestamp::from_micros(start().as_micros() + s.offset * 1_000_000);
            let mut e = Event::new(id, occurred, s.name, Resource::new(format!("r{}", s.resource)));
            e.payload.insert("n".into(), json!(i));
            e.follows = s.follows.map(|f| Uuid::from_u128(f as u128 + 1));
            e
        })
        .collect()
}

fn until(evs: &[Event]) -> Timestamp {
    let last = evs.iter().map(|e| e.occurred).max().unwrap_or(start());
    Timestamp::from_micros(last.as_micros() + 20 * 60 * 1_000_000)
}

fn uninterrupted(evs: &[Event]) -> Vec<Firing> {
    let mut r = Replay::new(definitions(), EngineConfig::default());
    let mut out: Vec<Firing> = evs.iter().cloned().flat_map(|e| r.push(e)).collect();
    out.extend(r.finish(until(evs)));
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn replay_is_deterministic(specs in stream()) {
        let evs = events(&specs);
        let first = uninterrupted(&evs);
        let second = uninterrupted(&evs);
        prop_assert_eq!(first, second);
    }

    #[test]
    fn batching_with_ticks_between_does_not_change_firings(specs in stream(), cuts in prop::collection::vec(any::<bool>(), 40), frac in 0u8..=100) {
        let evs = events(&specs);
        let expected = uninterrupted(&evs);
        let mut r = Replay::new(definitions(), EngineConfig::default());
        let mut got = Vec::new();
        for (i, e) in evs.iter().cloned().enumerate() {
            // At a cut, the driver ticks the clock part of the way to the next arrival, as a
            // server does between batches.
            if cuts[i % cuts.len()] {
                if let Some(clock) = r.engine.clock() {
                    let arrival = clock.max(e.occurred);
                    let gap = arrival.as_micros() - clock.as_micros();
                    let tick = Timestamp::from_micros(clock.as_micros() + gap * i64::from(frac) / 100);
                    got.extend(r.finish(tick));
                }
            }
            got.extend(r.push(e));
        }
        got.extend(r.finish(until(&evs)));
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn export_and_restore_midway_gives_the_same_firings(specs in stream(), cut in 0usize..40) {
        let evs = events(&specs);
        let expected = uninterrupted(&evs);
        let cut = cut % (evs.len() + 1);
        let mut r = Replay::new(definitions(), EngineConfig::default());
        let mut got: Vec<Firing> = evs[..cut].iter().cloned().flat_map(|e| r.push(e)).collect();
        // Through JSON, as the server will persist it.
        let text = serde_json::to_string(&r.engine.export()).unwrap();
        let state: EngineState = serde_json::from_str(&text).unwrap();
        let mut fresh = Replay::new(definitions(), EngineConfig::default());
        fresh.engine.restore(state);
        fresh.events = r.events.clone();
        got.extend(evs[cut..].iter().cloned().flat_map(|e| fresh.push(e)));
        got.extend(fresh.finish(until(&evs)));
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn the_random_streams_do_fire() {
    // Guard against the properties passing vacuously: a plain stream fires several kinds.
    let specs: Vec<Spec> = (0..30)
        .map(|i| Spec {
            offset: i * 4,
            name: ["a", "b", "c"][i as usize % 3],
            resource: (i / 3 % 2) as u8,
            duplicate_of: None,
            follows: None,
        })
        .collect();
    let firings = uninterrupted(&events(&specs));
    let kinds: std::collections::BTreeSet<&str> = firings.iter().map(|f| f.trigger.as_str()).collect();
    assert!(kinds.len() >= 5, "only {kinds:?} fired");
}
