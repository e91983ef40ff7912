//! One test per matching rule and per state transition of SEMANTICS.md, through the public
//! engine API on a virtual clock. Each test states the rule it pins.

use serde_json::{json, Value};
use tripwire::engine::replay::Replay;
use tripwire::engine::MAX_PARKED_FOLLOWERS;
use tripwire::engine::{compile_all, EngineConfig, Outcome};
use tripwire::model::{Event, Firing, JsonPath, Resource, Timestamp, TriggerDefinition};
use uuid::Uuid;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_micros(Timestamp::parse("2026-01-01T00:00:00Z").unwrap().as_micros() + secs * 1_000_000)
}

/// An event `n` named `name` at `secs`, for resource `rid` with extra labels.
fn ev(n: u128, secs: i64, name: &str, rid: &str, labels: &[(&str, &str)]) -> Event {
    let mut r = Resource::new(rid);
    for (k, v) in labels {
        r = r.with(*k, *v);
    }
    Event::new(Uuid::from_u128(n), t(secs), name, r)
}

fn replay_cfg(triggers: Value, events: Vec<Event>, until: i64, config: EngineConfig) -> Vec<Firing> {
    let defs = TriggerDefinition::list_from_json(&triggers).expect("valid definitions");
    let mut r = Replay::new(compile_all(&defs).expect("compiles"), config);
    let mut out: Vec<Firing> = events.into_iter().flat_map(|e| r.push(e)).collect();
    out.extend(r.finish(t(until)));
    out
}

/// Firings as (trigger, at seconds, triggering event number).
fn run(trigger: Value, events: Vec<Event>, until: i64) -> Vec<(String, i64, Option<u128>)> {
    let triggers = json!([{"id": "t", "trigger": trigger}]);
    replay_cfg(triggers, events, until, EngineConfig::default())
        .into_iter()
        .map(|f| {
            (f.trigger, (f.at.as_micros() - t(0).as_micros()) / 1_000_000, f.triggering_event.map(|u| u.as_u128()))
        })
        .collect()
}

fn fired_by(trigger: Value, events: Vec<Event>) -> Vec<u128> {
    run(trigger, events, 0).into_iter().filter_map(|f| f.2).collect()
}

// ---- event names -------------------------------------------------------------------------

#[test]
fn star_needs_at_least_one_character_unless_another_pattern_covers() {
    let evs = || vec![ev(1, 0, "order.", "x", &[]), ev(2, 1, "order.created", "x", &[])];
    assert_eq!(fired_by(json!({"expect": ["order.*"]}), evs()), [2]);
    assert_eq!(fired_by(json!({"expect": ["order.*", "order."]}), evs()), [1, 2]);
}

#[test]
fn names_match_whole_and_case_sensitively() {
    let evs = vec![
        ev(1, 0, "order.created.v2", "x", &[]),
        ev(2, 1, "Order.created", "x", &[]),
        ev(3, 2, "order.created", "x", &[]),
    ];
    assert_eq!(fired_by(json!({"expect": ["order.created"]}), evs), [3]);
}

#[test]
fn question_mark_and_classes_are_literal_in_names() {
    let evs = || {
        vec![ev(1, 0, "a1", "x", &[]), ev(2, 1, "a?", "x", &[]), ev(3, 2, "[ab]", "x", &[]), ev(4, 3, "a", "x", &[])]
    };
    assert_eq!(fired_by(json!({"expect": ["a?"]}), evs()), [2]);
    // The index lookup reads `[ab]` as a class and the regex as literal text: nothing passes both.
    assert!(fired_by(json!({"expect": ["[ab]"]}), evs()).is_empty());
}

#[test]
fn negation_does_not_work_in_expect() {
    let evs = vec![ev(1, 0, "order.paid", "x", &[]), ev(2, 1, "!order.created", "x", &[])];
    assert_eq!(fired_by(json!({"expect": ["!order.created"]}), evs), [2]);
}

#[test]
fn empty_expect_matches_every_name_even_with_after() {
    let evs = vec![ev(1, 0, "anything", "x", &[]), ev(2, 1, "else", "x", &[])];
    assert_eq!(fired_by(json!({}), evs), [1, 2]);
    let evs = vec![ev(1, 0, "start", "x", &[]), ev(2, 1, "else", "x", &[])];
    assert_eq!(fired_by(json!({"after": ["start"], "within": 10}), evs), [2]);
}

#[test]
fn log_write_events_are_never_evaluated() {
    let defs = TriggerDefinition::list_from_json(&json!([{"id": "t", "trigger": {}}])).unwrap();
    let mut r = Replay::new(compile_all(&defs).unwrap(), EngineConfig::default());
    let step = r.on_event(t(0), ev(1, 0, "prefect.log.write", "x", &[]));
    assert_eq!(step.outcome, Some(Outcome::Ignored));
    assert!(step.firings.is_empty());
}

// ---- resources ---------------------------------------------------------------------------

#[test]
fn label_lists_are_ored_and_labels_anded() {
    let trigger = json!({"expect": ["e"], "match": {"env": ["prod", "stage"], "team": "data*"}});
    let evs = vec![
        ev(1, 0, "e", "x", &[("env", "prod"), ("team", "data-eng")]),
        ev(2, 1, "e", "x", &[("env", "dev"), ("team", "data")]),
        ev(3, 2, "e", "x", &[("env", "stage")]),
        ev(4, 3, "e", "x", &[("env", "stage"), ("team", "data")]),
    ];
    assert_eq!(fired_by(trigger, evs), [1, 4]);
}

#[test]
fn negation_missing_labels_and_empty_lists() {
    let evs =
        || vec![ev(1, 0, "e", "x", &[("env", "prod")]), ev(2, 1, "e", "x", &[]), ev(3, 2, "e", "x", &[("env", "")])];
    assert_eq!(
        fired_by(json!({"expect": ["e"], "match": {"env": "!prod"}}), evs()),
        [3],
        "a missing label never matches, even a negation"
    );
    assert_eq!(fired_by(json!({"expect": ["e"], "match": {"env": "*"}}), evs()), [1, 3], "an empty value matches *");
    assert!(fired_by(json!({"expect": ["e"], "match": {"env": []}}), evs()).is_empty());
    assert_eq!(
        fired_by(json!({"expect": ["e"], "match": {"env": ["!prod", "!stage"]}}), evs()),
        [1, 3],
        "an OR of negations"
    );
}

#[test]
fn match_related_specs_each_need_some_related_resource() {
    let mut a = ev(1, 0, "e", "x", &[]);
    a.related = vec![
        Resource::new("flow.1").with("prefect.resource.role", "flow"),
        Resource::new("tag.a").with("prefect.resource.role", "tag"),
    ];
    let mut b = ev(2, 1, "e", "x", &[]);
    b.related = vec![Resource::new("flow.1").with("prefect.resource.role", "flow")];
    let c = ev(3, 2, "e", "x", &[]);
    let both = json!({"expect": ["e"], "match_related": [{"prefect.resource.role": "flow"}, {"prefect.resource.role": "tag"}]});
    assert_eq!(fired_by(both, vec![a.clone(), b.clone(), c.clone()]), [1]);
    assert_eq!(
        fired_by(json!({"expect": ["e"], "match_related": {}}), vec![a, b, c]),
        [1, 2, 3],
        "an empty spec matches events without related resources"
    );
}

// ---- for_each ----------------------------------------------------------------------------

#[test]
fn for_each_keeps_separate_counts_and_missing_labels_share_the_empty_bucket() {
    let trigger = json!({"expect": ["e"], "for_each": ["team"], "threshold": 2, "within": 60});
    let evs = vec![
        ev(1, 0, "e", "x", &[("team", "a")]),
        ev(2, 1, "e", "x", &[("team", "b")]),
        ev(3, 2, "e", "x", &[]),
        ev(4, 3, "e", "y", &[]),
        ev(5, 4, "e", "x", &[("team", "a")]),
    ];
    let defs = TriggerDefinition::list_from_json(&json!([{"id": "t", "trigger": trigger}])).unwrap();
    let mut r = Replay::new(compile_all(&defs).unwrap(), EngineConfig::default());
    let firings: Vec<Firing> = evs.into_iter().flat_map(|e| r.push(e)).collect();
    let buckets: Vec<String> = firings.iter().map(|f| f.bucket["team"].clone()).collect();
    assert_eq!(buckets, ["", "a"]);
}

// ---- reactive windows --------------------------------------------------------------------

#[test]
fn first_bucket_reaches_back_15_minutes_and_fires_at_the_late_event() {
    // b occurred 10 minutes before a but arrives later: they combine.
    let fired = run(
        json!({"expect": ["e"], "threshold": 2, "within": 60}),
        vec![ev(1, 600, "e", "x", &[]), ev(2, 0, "e", "x", &[])],
        700,
    );
    assert_eq!(fired, [("t".into(), 0, Some(2))]);
}

#[test]
fn in_order_events_further_apart_than_within_do_not_combine() {
    let fired = run(
        json!({"expect": ["e"], "threshold": 2, "within": 60}),
        vec![ev(1, 0, "e", "x", &[]), ev(2, 61, "e", "x", &[])],
        200,
    );
    assert!(fired.is_empty());
}

#[test]
fn cooldown_lasts_until_the_firing_bucket_ends_and_drops_events_before_it() {
    let trigger = json!({"expect": ["e"], "threshold": 2, "within": 10});
    // Fires at 1; the next bucket is [10, 20): the event at 5 is dropped, 12 and 15 fire.
    let evs = vec![
        ev(1, 0, "e", "x", &[]),
        ev(2, 1, "e", "x", &[]),
        ev(3, 5, "e", "x", &[]),
        ev(4, 12, "e", "x", &[]),
        ev(5, 15, "e", "x", &[]),
    ];
    assert_eq!(fired_by(trigger, evs), [2, 5]);
}

#[test]
fn an_event_after_the_bucket_ended_starts_and_counts_in_a_new_one() {
    let evs = vec![ev(1, 0, "e", "x", &[]), ev(2, 100, "e", "x", &[]), ev(3, 105, "e", "x", &[])];
    assert_eq!(fired_by(json!({"expect": ["e"], "threshold": 2, "within": 10}), evs), [3]);
}

#[test]
fn within_zero_keeps_counting_until_the_sweep_60s_after_the_first() {
    let trigger = json!({"expect": ["e"], "threshold": 2, "within": 0});
    assert_eq!(fired_by(trigger.clone(), vec![ev(1, 0, "e", "x", &[]), ev(2, 59, "e", "x", &[])]), [2]);
    assert!(fired_by(trigger.clone(), vec![ev(1, 0, "e", "x", &[]), ev(2, 60, "e", "x", &[])]).is_empty());
    let four: Vec<Event> = (1..=4).map(|n| ev(n, n as i64, "e", "x", &[])).collect();
    assert_eq!(fired_by(trigger, four), [2, 4]);
}

#[test]
fn threshold_zero_fires_on_every_covered_event_outside_the_cooldown() {
    let evs = vec![ev(1, 0, "e", "x", &[]), ev(2, 1, "e", "x", &[]), ev(3, 11, "e", "x", &[])];
    assert_eq!(fired_by(json!({"expect": ["e"], "threshold": 0, "within": 10}), evs), [1, 3]);
}

// ---- after → expect ----------------------------------------------------------------------

#[test]
fn after_opens_a_window_that_a_firing_consumes() {
    let trigger = json!({"after": ["open"], "expect": ["hit"], "for_each": ["prefect.resource.id"], "within": 30});
    let evs = vec![
        ev(1, 0, "hit", "u", &[]), // no window yet: ignored
        ev(2, 1, "open", "u", &[]),
        ev(3, 2, "hit", "u", &[]), // fires, window consumed
        ev(4, 3, "hit", "u", &[]), // no window
        ev(5, 4, "hit", "v", &[]), // other key: no window
    ];
    assert_eq!(fired_by(trigger, evs), [3]);
}

#[test]
fn a_repeated_after_does_not_move_the_window() {
    let trigger = json!({"after": ["open"], "expect": ["hit"], "within": 30});
    let evs = vec![ev(1, 0, "open", "u", &[]), ev(2, 20, "open", "u", &[]), ev(3, 35, "hit", "u", &[])];
    assert!(fired_by(trigger, evs).is_empty(), "the window is still [0, 30)");
}

#[test]
fn an_expected_event_after_the_window_removes_it_without_firing() {
    let trigger = json!({"after": ["open"], "expect": ["hit"], "within": 10});
    let evs = vec![
        ev(1, 0, "open", "u", &[]),
        ev(2, 15, "hit", "u", &[]),
        ev(3, 16, "open", "u", &[]),
        ev(4, 17, "hit", "u", &[]),
    ];
    assert_eq!(fired_by(trigger, evs), [4]);
}

#[test]
fn within_zero_after_window_lives_until_the_sweep() {
    let trigger = json!({"after": ["created"], "expect": ["complete"], "within": 0});
    assert_eq!(fired_by(trigger.clone(), vec![ev(1, 0, "created", "u", &[]), ev(2, 59, "complete", "u", &[])]), [2]);
    assert!(fired_by(trigger, vec![ev(1, 0, "created", "u", &[]), ev(2, 60, "complete", "u", &[])]).is_empty());
}

#[test]
fn same_name_in_after_and_expect_fires_on_every_second_event() {
    let evs: Vec<Event> = (1..=5).map(|n| ev(n, n as i64, "beat", "u", &[])).collect();
    assert_eq!(fired_by(json!({"after": ["beat"], "expect": ["beat"], "within": 60}), evs.clone()), [2, 4]);
    assert!(fired_by(json!({"after": ["beat"], "expect": ["beat"], "within": 0}), evs).is_empty());
}

// ---- proactive ---------------------------------------------------------------------------

#[test]
fn proactive_windows_open_at_the_first_pass_without_events() {
    let fired =
        run(json!({"posture": "Proactive", "expect": ["beat"], "within": 30}), vec![ev(1, 0, "other", "x", &[])], 95);
    assert_eq!(fired, [("t".into(), 30, None), ("t".into(), 60, None), ("t".into(), 90, None)]);
}

#[test]
fn satisfied_proactive_windows_are_deleted_not_renewed() {
    // Heartbeats at 0, 20, 50, 100 with within 30 fire only at 180 (the SEMANTICS.md example).
    let evs = vec![
        ev(1, 0, "hb", "x", &[]),
        ev(2, 20, "hb", "x", &[]),
        ev(3, 50, "hb", "x", &[]),
        ev(4, 100, "hb", "x", &[]),
    ];
    let fired = run(json!({"posture": "Proactive", "expect": ["hb"], "within": 30}), evs, 200);
    assert_eq!(fired, [("t".into(), 180, None)]);
}

#[test]
fn proactive_for_each_with_after_fires_with_the_after_event() {
    let trigger = json!({"posture": "Proactive", "after": ["start"], "expect": ["done"], "for_each": ["prefect.resource.id"], "within": 30});
    let evs = vec![ev(1, 0, "start", "a", &[]), ev(2, 5, "start", "b", &[]), ev(3, 10, "done", "b", &[])];
    assert_eq!(run(trigger, evs, 100), [("t".into(), 30, Some(1))]);
}

#[test]
fn proactive_heartbeat_restarts_its_window_at_each_beat() {
    let trigger = json!({"posture": "Proactive", "after": ["hb"], "expect": ["hb"], "for_each": ["prefect.resource.id"], "within": 30});
    let evs = vec![ev(1, 0, "hb", "run", &[]), ev(2, 20, "hb", "run", &[]), ev(3, 40, "hb", "run", &[])];
    assert_eq!(run(trigger, evs, 200), [("t".into(), 70, Some(3))]);
}

#[test]
fn proactive_within_below_ten_seconds_is_rejected_and_zero_becomes_ten() {
    let err =
        TriggerDefinition::list_from_json(&json!([{"id": "t", "trigger": {"posture": "Proactive", "within": 9}}]))
            .unwrap_err();
    assert_eq!(err.0[0].path, "$[0].trigger.within");
    let fired = run(json!({"posture": "Proactive", "expect": ["x"], "within": 0}), vec![ev(1, 0, "y", "r", &[])], 25);
    assert_eq!(fired.iter().map(|f| f.1).collect::<Vec<_>>(), [10, 20]);
}

// ---- compound and sequence ---------------------------------------------------------------

#[test]
fn compound_all_fires_once_every_child_fired_within_processing_time() {
    let trigger =
        json!({"type": "compound", "require": "all", "within": 10, "triggers": [{"expect": ["a"]}, {"expect": ["b"]}]});
    assert_eq!(
        fired_by(trigger.clone(), vec![ev(1, 0, "a", "x", &[]), ev(2, 10, "b", "x", &[])]),
        [2],
        "the boundary is inclusive"
    );
    assert!(fired_by(trigger, vec![ev(1, 0, "a", "x", &[]), ev(2, 11, "b", "x", &[])]).is_empty());
}

#[test]
fn compound_any_fires_on_each_child_firing() {
    let trigger = json!({"type": "compound", "require": "any", "triggers": [{"expect": ["a"]}, {"expect": ["b"]}]});
    assert_eq!(
        fired_by(trigger, vec![ev(1, 0, "a", "x", &[]), ev(2, 1, "b", "x", &[]), ev(3, 2, "a", "x", &[])]),
        [1, 2, 3]
    );
}

#[test]
fn sequence_fires_only_in_order() {
    let trigger = json!({"type": "sequence", "within": 60, "triggers": [{"expect": ["a"]}, {"expect": ["b"]}, {"expect": ["c"]}]});
    assert!(fired_by(trigger.clone(), vec![ev(1, 0, "b", "x", &[]), ev(2, 1, "a", "x", &[]), ev(3, 2, "c", "x", &[])])
        .is_empty());
    let evs = vec![
        ev(1, 0, "b", "x", &[]),
        ev(2, 1, "a", "x", &[]),
        ev(3, 2, "c", "x", &[]),
        ev(4, 3, "b", "x", &[]),
        ev(5, 4, "c", "x", &[]),
    ];
    assert_eq!(fired_by(trigger, evs), [5], "a later b and then c complete it");
}

#[test]
fn compound_and_sequence_require_is_validated() {
    let err = TriggerDefinition::list_from_json(&json!([
        {"id": "a", "trigger": {"type": "compound", "require": 3, "triggers": [{}, {}]}},
        {"id": "b", "trigger": {"type": "compound", "require": 0, "triggers": [{}]}},
        {"id": "c", "trigger": {"type": "compound", "require": "most", "triggers": [{}]}}
    ]))
    .unwrap_err();
    let paths: Vec<&str> = err.0.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["$[0].trigger.require", "$[1].trigger.require", "$[2].trigger.require"]);
}

// ---- duplicates and follows --------------------------------------------------------------

#[test]
fn duplicate_ids_are_processed_once() {
    let defs = TriggerDefinition::list_from_json(&json!([{"id": "t", "trigger": {"expect": ["e"]}}])).unwrap();
    let mut r = Replay::new(compile_all(&defs).unwrap(), EngineConfig::default());
    assert_eq!(r.push(ev(1, 0, "e", "x", &[])).len(), 1);
    let step = r.on_event(t(4000), ev(1, 4000, "e", "x", &[]));
    assert_eq!(step.outcome, Some(Outcome::Duplicate), "kept beyond Prefect's 30-minute cache");
    assert!(step.firings.is_empty());
}

#[test]
fn followers_wait_for_their_leader_and_chains_resolve_in_order() {
    let trigger = json!({"type": "sequence", "triggers": [{"expect": ["a"]}, {"expect": ["b"]}, {"expect": ["c"]}]});
    let mut c = ev(3, 2, "c", "x", &[]);
    c.follows = Some(Uuid::from_u128(2));
    let mut b = ev(2, 1, "b", "x", &[]);
    b.follows = Some(Uuid::from_u128(1));
    let a = ev(1, 0, "a", "x", &[]);
    assert_eq!(fired_by(trigger, vec![c, b, a]), [3]);
}

#[test]
fn a_follower_whose_leader_never_comes_is_processed_15_minutes_after_arrival() {
    let mut lone = ev(2, 0, "e", "x", &[]);
    lone.follows = Some(Uuid::from_u128(99));
    let fired = run(json!({"expect": ["e"]}), vec![lone.clone()], 899);
    assert!(fired.is_empty());
    let fired = run(json!({"expect": ["e"]}), vec![lone], 900);
    assert_eq!(fired, [("t".into(), 0, Some(2))]);
}

/// `count` followers of a leader that has not come yet, the i-th (from 1) arriving at
/// `i` ms and occurring `i` seconds before the start (so later arrivals occurred earlier).
/// Returns the engine and the triggering events of the firings, in firing order.
fn park_followers(count: u128, leader: Uuid) -> (Replay, Vec<u128>) {
    let defs = TriggerDefinition::list_from_json(&json!([{"id": "t", "trigger": {"expect": ["e"]}}])).unwrap();
    let mut r = Replay::new(compile_all(&defs).unwrap(), EngineConfig::default());
    let mut fired = Vec::new();
    for i in 1..=count {
        let mut e = ev(i, -(i as i64), "e", "x", &[]);
        e.follows = Some(leader);
        let now = Timestamp::from_micros(t(0).as_micros() + i as i64 * 1_000);
        let step = r.on_event(now, e);
        assert_eq!(step.outcome, Some(Outcome::Parked { leader }), "follower {i}");
        fired.extend(step.firings.iter().filter_map(|f| f.triggering_event.map(|u| u.as_u128())));
    }
    (r, fired)
}

fn triggering(firings: &[Firing]) -> Vec<u128> {
    firings.iter().filter_map(|f| f.triggering_event.map(|u| u.as_u128())).collect()
}

#[test]
fn parked_followers_are_capped_by_releasing_the_longest_waiting_as_lost() {
    let cap = MAX_PARKED_FOLLOWERS as u128;
    let leader = Uuid::from_u128(1 << 100);
    let (mut r, fired) = park_followers(cap + 50, leader);
    // The 50 that arrived first were processed as lost followers, in arrival order.
    assert_eq!(fired, (1..=50).collect::<Vec<_>>());
    assert_eq!(r.engine.export().waiting.len(), MAX_PARKED_FOLLOWERS);
    // A lost follower is seen: delivering it again is a duplicate.
    let mut again = ev(1, -1, "e", "x", &[]);
    again.follows = Some(leader);
    assert_eq!(r.on_event(t(20), again).outcome, Some(Outcome::Duplicate));
    // The leader releases the rest in `occurred` order (the reverse of their arrival).
    let step = r.on_event(t(21), ev(1 << 100, 21, "leader", "x", &[]));
    assert_eq!(triggering(&step.firings), (51..=cap + 50).rev().collect::<Vec<_>>());
    assert!(r.engine.export().waiting.is_empty());
    // Ordinary events and followers work as before.
    let mut f = ev(cap + 52, 22, "e", "x", &[]);
    f.follows = Some(Uuid::from_u128(cap + 51));
    assert_eq!(r.on_event(t(22), f).outcome, Some(Outcome::Parked { leader: Uuid::from_u128(cap + 51) }));
    let step = r.on_event(t(23), ev(cap + 51, 23, "e", "x", &[]));
    assert_eq!(triggering(&step.firings), [cap + 51, cap + 52]);
}

#[test]
fn a_follower_displacing_its_own_leader_is_processed_after_it() {
    let cap = MAX_PARKED_FOLLOWERS as u128;
    let (mut r, fired) = park_followers(cap, Uuid::from_u128(1 << 100));
    assert!(fired.is_empty());
    // Follower 1 (the longest waiting) is this event's leader: once released, nothing waits.
    let mut f = ev(cap + 1, 0, "e", "x", &[]);
    f.follows = Some(Uuid::from_u128(1));
    let step = r.on_event(t(1), f);
    assert_eq!(step.outcome, Some(Outcome::Processed));
    assert_eq!(triggering(&step.firings), [1, cap + 1]);
    assert_eq!(r.engine.export().waiting.len(), MAX_PARKED_FOLLOWERS - 1);
}

#[test]
fn a_hundred_thousand_followers_of_one_leader_are_each_processed_once() {
    let count = 100_000u128;
    let leader = Uuid::from_u128(1 << 100);
    let (mut r, mut fired) = park_followers(count, leader);
    let lost = count - MAX_PARKED_FOLLOWERS as u128;
    assert_eq!(fired, (1..=lost).collect::<Vec<_>>());
    let step = r.on_event(t(200), ev(1 << 100, 200, "leader", "x", &[]));
    assert_eq!(triggering(&step.firings), (lost + 1..=count).rev().collect::<Vec<_>>());
    fired.extend(triggering(&step.firings));
    fired.sort_unstable();
    assert_eq!(fired, (1..=count).collect::<Vec<_>>());
    assert!(r.engine.export().waiting.is_empty());
}

// ---- limits and filters ------------------------------------------------------------------

#[test]
fn bucket_cap_reports_overflow_instead_of_growing() {
    let defs = TriggerDefinition::list_from_json(&json!([{"id": "t", "trigger": {"expect": ["e"], "for_each": ["prefect.resource.id"], "threshold": 2, "within": 60}}])).unwrap();
    let config = EngineConfig { max_buckets_per_trigger: 2, ..EngineConfig::default() };
    let mut r = Replay::new(compile_all(&defs).unwrap(), config);
    r.push(ev(1, 0, "e", "a", &[]));
    r.push(ev(2, 0, "e", "b", &[]));
    let step = r.on_event(t(0), ev(3, 0, "e", "c", &[]));
    assert_eq!(step.overflows.iter().map(|o| o.trigger.as_str()).collect::<Vec<_>>(), ["t"]);
    assert_eq!(r.engine.bucket_count(), 2);
    let step = r.on_event(t(1), ev(4, 1, "e", "a", &[]));
    assert_eq!(step.firings.len(), 1, "existing buckets still work");
}

#[test]
fn filters_select_events_by_payload() {
    let trigger = json!({"expect": ["user:signup"], "filter": "payload.amount > 100 and event.resource.id != 'x'"});
    let mut a = ev(1, 0, "user:signup", "u", &[]);
    a.payload.insert("amount".into(), json!(150));
    let mut b = ev(2, 1, "user:signup", "u", &[]);
    b.payload.insert("amount".into(), json!(50));
    let mut c = ev(3, 2, "user:signup", "x", &[]);
    c.payload.insert("amount".into(), json!(500));
    assert_eq!(fired_by(trigger, vec![a, b, c]), [1]);
}

#[test]
fn bad_filters_and_templates_are_rejected_at_definition_time_with_paths() {
    let defs = TriggerDefinition::list_from_json(&json!([
        {"id": "a", "trigger": {"expect": ["e"], "filter": "payload.amount >"}},
        {"id": "b", "trigger": {"expect": ["e"]}, "parameters": {"x": {"y": ["{{ event.id "]}}}
    ]))
    .unwrap();
    let err = compile_all(&defs).unwrap_err();
    let paths: Vec<&str> = err.0.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["$[0].trigger.filter", "$[1].parameters.x.y[0]"]);
    let _ = JsonPath::root();
}

// ---- enabling and disabling ----------------------------------------------------------------

#[test]
fn disabling_and_enabling_reuses_the_compiled_definition_and_keeps_its_state() {
    let defs = TriggerDefinition::list_from_json(&json!([{"id": "t", "trigger": {"expect": ["e"], "for_each": ["prefect.resource.id"], "threshold": 2, "within": 600}, "parameters": {"id": "{{ event.resource.id }}"}}])).unwrap();
    let mut r = Replay::new(compile_all(&defs).unwrap(), EngineConfig::default());
    assert!(r.push(ev(1, 0, "e", "x", &[])).is_empty());
    assert!(r.engine.set_enabled("t", false));
    assert!(!r.engine.definitions().next().unwrap().definition.enabled);
    assert!(r.push(ev(2, 1, "e", "x", &[])).is_empty(), "a disabled trigger sees nothing");
    assert!(r.engine.set_enabled("t", true));
    let fired = r.push(ev(3, 2, "e", "x", &[]));
    assert_eq!(triggering(&fired), [3], "the count of 1 from before was kept");
    assert_eq!(fired[0].parameters, Some(json!({"id": "x"})), "the compiled parameters still render");
    assert!(!r.engine.set_enabled("nope", true), "not installed");
}
