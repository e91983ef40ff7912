//! The engine's whole state as data (serde), so it can be persisted, exported midway and
//! restored into a fresh engine that then behaves exactly as the original would have; and,
//! for a caller that persists state as it changes, what changed since it last asked
//! ([`Engine::take_changes`]), so that only that is written.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::time::Timestamp;

use std::collections::BTreeSet;

use super::bucket::{Bucket, BucketKey, Buckets};
use super::composite::ChildFirings;
use super::ordering::{Ordering, Waiting};
use super::{Engine, NodeState, Slot};

/// Version of the exported format.
pub const STATE_VERSION: u32 = 1;

/// Everything an [`Engine`] knows besides its definitions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// The engine clock.
    pub clock: Option<Timestamp>,
    /// Firings so far (firing ids derive from it).
    pub firing_seq: u64,
    /// Per-definition state.
    pub triggers: Vec<TriggerState>,
    /// Processed event ids, with when they were processed if they expire.
    pub seen: Vec<(Uuid, Option<Timestamp>)>,
    /// Parked followers.
    pub waiting: Vec<Waiting>,
}

/// The state of one definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerState {
    /// The definition id.
    pub id: String,
    /// The trigger tree it belongs to; state is dropped when the tree changed.
    pub fingerprint: String,
    /// One entry per node, in node order.
    pub nodes: Vec<NodeExport>,
}

/// The state of one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeExport {
    /// An event trigger's buckets (sorted by key) and next proactive pass.
    Event {
        /// Buckets by key.
        buckets: Vec<(BucketKey, Bucket)>,
        /// When the next proactive pass is due.
        next_pass: Option<Timestamp>,
    },
    /// A composite's stored child firings.
    Composite {
        /// One entry per child.
        children: ChildFirings,
    },
}

/// What changed in an engine since the last [`Engine::take_changes`]; applying every
/// change in order to a copy of the state brings the copy up to date.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateChanges {
    /// The engine clock.
    pub clock: Option<Timestamp>,
    /// Firings so far.
    pub firing_seq: u64,
    /// The installed definitions and scope filters, in installation order, when that changed.
    pub order: Option<InstallOrder>,
    /// Definitions whose stored state is void (removed, replaced by another trigger tree, or
    /// disabled by a fault): drop it all, before the changes below.
    pub reset: Vec<String>,
    /// Definitions whose node state (proactive schedule, composite children) changed: the
    /// whole of it, with `buckets` empty in every node (those come in `buckets`).
    pub triggers: Vec<TriggerState>,
    /// Changed buckets, by definition and event trigger.
    pub buckets: Vec<BucketChanges>,
    /// Followers parked (with their arrival) or unparked (`None`).
    pub parked: Vec<(Uuid, Option<Timestamp>)>,
}

impl StateChanges {
    /// Nothing changed but (perhaps) the clock and firing count.
    pub fn is_empty(&self) -> bool {
        self.order.is_none()
            && self.reset.is_empty()
            && self.triggers.is_empty()
            && self.buckets.is_empty()
            && self.parked.is_empty()
    }
}

/// The installed definitions and scope filters, in installation order (which decides the
/// order of firings within one step, and so their ids).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InstallOrder {
    /// Definition ids.
    pub triggers: Vec<String>,
    /// Scope filter ids.
    pub filters: Vec<Uuid>,
}

/// The changed buckets of one event trigger.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketChanges {
    /// The definition's id.
    pub trigger: String,
    /// The event trigger within it.
    pub node: u32,
    /// Each key with its bucket now, `None` when it was removed.
    pub changes: Vec<(BucketKey, Option<Bucket>)>,
}

/// The engine's own record of what changed (buckets and parked followers keep theirs).
#[derive(Clone, Debug, Default)]
pub(super) struct Tracked {
    pub(super) order: bool,
    slots: BTreeSet<u32>,
    reset: Vec<String>,
}

impl Tracked {
    /// A definition's node state changed.
    pub(super) fn slot(&mut self, slot: u32) {
        self.slots.insert(slot);
    }

    /// A definition's stored state is void.
    pub(super) fn reset(&mut self, id: &str) {
        if !self.reset.iter().any(|r| r == id) {
            self.reset.push(id.to_owned());
        }
    }
}

/// A definition's state: its node state, and its buckets (sorted by key) when `with_buckets`.
fn trigger_state(s: &Slot, with_buckets: bool) -> TriggerState {
    TriggerState {
        id: s.compiled.definition.id.clone(),
        fingerprint: s.compiled.fingerprint.clone(),
        nodes: s
            .nodes
            .iter()
            .map(|n| match n {
                NodeState::Event { buckets, next_pass } => {
                    let mut all = Vec::new();
                    if with_buckets {
                        all = buckets.sorted(Timestamp::from_micros(i64::MIN));
                        all.sort_by(|a, b| a.0.cmp(&b.0));
                    }
                    NodeExport::Event { buckets: all, next_pass: *next_pass }
                }
                NodeState::Composite(c) => NodeExport::Composite { children: c.clone() },
            })
            .collect(),
    }
}

impl Engine {
    /// What changed since the last call (everything tracked is forgotten). Empty but for the
    /// clock and firing count unless [`EngineConfig::track_changes`](super::EngineConfig) is set.
    pub fn take_changes(&mut self) -> StateChanges {
        let tracked = std::mem::take(&mut self.changes);
        let order = tracked.order.then(|| InstallOrder {
            triggers: self.definitions().map(|c| c.definition.id.clone()).collect(),
            filters: self.scope_filters.iter().map(|f| f.filter.id).collect(),
        });
        let triggers = tracked
            .slots
            .iter()
            .filter_map(|&slot| self.slots.get(slot as usize)?.as_ref())
            .map(|s| trigger_state(s, false))
            .collect();
        let mut buckets = Vec::new();
        let mut changes = Vec::new();
        for s in self.slots.iter_mut().flatten() {
            for (node, n) in s.nodes.iter_mut().enumerate() {
                if let NodeState::Event { buckets: b, .. } = n {
                    b.take_changed(&mut changes);
                    if !changes.is_empty() {
                        changes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                        buckets.push(BucketChanges {
                            trigger: s.compiled.definition.id.clone(),
                            node: node as u32,
                            changes: std::mem::take(&mut changes),
                        });
                    }
                }
            }
        }
        StateChanges {
            clock: self.clock,
            firing_seq: self.firing_seq,
            order,
            reset: tracked.reset,
            triggers,
            buckets,
            parked: self.ordering.take_changed(),
        }
    }

    /// Marks the whole state changed, so that the next [`Engine::take_changes`] holds all of
    /// it (to write a state that was rebuilt some other way).
    pub fn mark_all_changed(&mut self) {
        self.changes.order = true;
        for (slot, s) in self.slots.iter_mut().enumerate() {
            let Some(s) = s else { continue };
            self.changes.slots.insert(slot as u32);
            for n in s.nodes.iter_mut() {
                if let NodeState::Event { buckets, .. } = n {
                    buckets.mark_all();
                }
            }
        }
        self.ordering.mark_all_changed();
    }

    /// Exports the whole state, deterministically ordered.
    pub fn export(&self) -> EngineState {
        let triggers = self.slots.iter().flatten().map(|s| trigger_state(s, true)).collect();
        EngineState {
            version: STATE_VERSION,
            clock: self.clock,
            firing_seq: self.firing_seq,
            triggers,
            seen: self.ordering.export_seen(),
            waiting: self.ordering.export_waiting(),
        }
    }

    /// Loads exported state into this engine, whose definitions must already be installed.
    /// State of definitions that are gone or whose trigger tree changed is dropped.
    pub fn restore(&mut self, state: EngineState) {
        self.clock = state.clock;
        self.firing_seq = state.firing_seq;
        let mut ordering = Ordering::tracked(self.config.seen_window, self.config.track_changes);
        for (id, at) in state.seen {
            ordering.record_seen(id, at.unwrap_or_default());
        }
        for w in state.waiting {
            ordering.park(w.event, w.received);
        }
        self.ordering = ordering;
        let mut dropped = Vec::new();
        for t in state.triggers {
            let Some(s) = self.by_id.get(&t.id).and_then(|&slot| self.slots[slot as usize].as_mut()) else {
                dropped.push(t.id);
                continue;
            };
            if s.compiled.fingerprint != t.fingerprint || s.nodes.len() != t.nodes.len() {
                dropped.push(t.id);
                continue;
            }
            let slot = self.by_id[&t.id];
            let s = self.slots[slot as usize].as_mut().expect("checked above");
            for (node, export) in t.nodes.into_iter().enumerate() {
                match (&mut s.nodes[node], export) {
                    (NodeState::Event { buckets, next_pass }, NodeExport::Event { buckets: saved, next_pass: due }) => {
                        let mut restored = Buckets::with_capacity(self.config.track_changes, saved.len());
                        for (k, b) in saved {
                            restored.insert(k, b);
                        }
                        *buckets = restored;
                        if let Some(old) = next_pass.take() {
                            self.passes.remove(&(old, slot, node as u32));
                        }
                        if let Some(due) = due {
                            self.unscheduled.retain(|r| *r != (slot, node as u32));
                            *next_pass = Some(due);
                            self.passes.insert((due, slot, node as u32));
                        }
                    }
                    (NodeState::Composite(c), NodeExport::Composite { children }) => *c = children,
                    _ => {}
                }
            }
        }
        // What was restored is stored already; installing the definitions before it was not
        // a change either.
        // State of definitions that are gone or changed is void where it is stored too.
        self.changes = Tracked::default();
        let _ = self.ordering.take_changed();
        for id in dropped {
            self.changes.reset(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Arc;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::engine::{compile_document, EngineConfig};
    use crate::model::time::Span;
    use crate::model::{Event, Resource};

    /// What a store holds after applying every [`StateChanges`] in order.
    #[derive(Default)]
    struct Mirror {
        buckets: BTreeMap<(String, u32, BucketKey), Bucket>,
        triggers: HashMap<String, TriggerState>,
        parked: BTreeMap<Uuid, Timestamp>,
        clock: Option<Timestamp>,
        firing_seq: u64,
    }

    impl Mirror {
        fn apply(&mut self, changes: StateChanges) {
            self.clock = changes.clock;
            self.firing_seq = changes.firing_seq;
            for id in &changes.reset {
                self.triggers.remove(id);
                self.buckets.retain(|(t, _, _), _| t != id);
            }
            for t in changes.triggers {
                self.triggers.insert(t.id.clone(), t);
            }
            for group in changes.buckets {
                for (key, bucket) in group.changes {
                    let at = (group.trigger.clone(), group.node, key);
                    match bucket {
                        Some(b) => self.buckets.insert(at, b),
                        None => self.buckets.remove(&at),
                    };
                }
            }
            for (id, received) in changes.parked {
                match received {
                    Some(at) => self.parked.insert(id, at),
                    None => self.parked.remove(&id),
                };
            }
        }

        /// The state as a restart would read it.
        fn state(&self, events: &HashMap<Uuid, Arc<Event>>) -> EngineState {
            let mut triggers: Vec<TriggerState> = self.triggers.values().cloned().collect();
            triggers.sort_by(|a, b| a.id.cmp(&b.id));
            for ((t, node, key), b) in &self.buckets {
                let state = triggers.iter_mut().find(|s| s.id == *t).expect("bucket rows have node state");
                if let NodeExport::Event { buckets, .. } = &mut state.nodes[*node as usize] {
                    buckets.push((key.clone(), *b));
                }
            }
            let waiting =
                self.parked.iter().map(|(id, at)| Waiting { event: events[id].clone(), received: *at }).collect();
            EngineState {
                version: STATE_VERSION,
                clock: self.clock,
                firing_seq: self.firing_seq,
                triggers,
                seen: vec![],
                waiting,
            }
        }
    }

    fn definitions() -> serde_json::Value {
        json!([
            {"id": "pair", "trigger": {"after": ["a"], "expect": ["b"], "for_each": ["prefect.resource.id"], "within": 30}},
            {"id": "two", "trigger": {"expect": ["b"], "for_each": ["prefect.resource.id"], "threshold": 2, "within": 20}},
            {"id": "quiet", "trigger": {"posture": "Proactive", "after": ["a"], "expect": ["b"],
                                          "for_each": ["prefect.resource.id"], "within": 15}},
            {"id": "seq", "trigger": {"type": "sequence", "within": 60,
                                        "triggers": [{"expect": ["a"]}, {"expect": ["c"]}]}},
            {"id": "one", "trigger": {"expect": ["c"]}}
        ])
    }

    fn engine() -> Engine {
        let config = EngineConfig { seen_window: Some(Span::ZERO), track_changes: true, ..EngineConfig::default() };
        let mut engine = Engine::new(config);
        for c in compile_document(&definitions()).unwrap() {
            engine.upsert(c);
        }
        engine
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The changes an engine reports, applied in order, hold exactly its state; and an
        /// engine restored from them, fed the rest of the inputs, fires exactly as the
        /// original does (the restart the service makes).
        /// Each input: seconds forward, an event name (or a tick), a key, and whether the
        /// event follows the one before.
        #[test]
        fn changes_applied_in_order_equal_the_state_and_restore_it(
            inputs in prop::collection::vec((0u8..20, prop::option::of(0u8..3), 0u8..4, any::<bool>()), 1..60),
            restart_at in 0usize..60,
        ) {
            let mut original = engine();
            let mut mirror = Mirror::default();
            let mut restarted: Option<Engine> = None;
            let mut events: HashMap<Uuid, Arc<Event>> = HashMap::new();
            let mut now = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
            let mut previous: Option<Uuid> = None;
            for (i, (forward, name, key, follows)) in inputs.into_iter().enumerate() {
                if i == restart_at {
                    let mut fresh = engine();
                    fresh.restore(mirror.state(&events));
                    let _ = fresh.take_changes();
                    restarted = Some(fresh);
                }
                now = now.plus(Span::seconds(i64::from(forward)));
                let feed = |engine: &mut Engine, event: Option<Arc<Event>>| {
                    let step = match event {
                        Some(e) => engine.on_event_with(now, e, false),
                        None => engine.on_tick(now),
                    };
                    // No definition has parameters: nothing to fetch.
                    engine.render(step, &HashMap::new()).firings
                };
                let event = name.map(|n| {
                    let mut e = Event::new(
                        Uuid::from_u128(i as u128 + 1),
                        now,
                        ["a", "b", "c"][n as usize],
                        Resource::new(format!("k{key}")),
                    );
                    // Some events follow the one before, which may not have come yet.
                    if follows {
                        e.follows = previous.or(Some(Uuid::from_u128(1000 + i as u128)));
                    }
                    previous = Some(e.id);
                    let e = Arc::new(e);
                    events.insert(e.id, e.clone());
                    e
                });
                let fired: Vec<(String, Uuid)> = feed(&mut original, event.clone()).iter().map(|f| (f.trigger.clone(), f.id)).collect();
                mirror.apply(original.take_changes());
                if let Some(r) = restarted.as_mut() {
                    let again: Vec<(String, Uuid)> = feed(r, event).iter().map(|f| (f.trigger.clone(), f.id)).collect();
                    let _ = r.take_changes();
                    prop_assert_eq!(&again, &fired, "input {} after a restart at {}", i, restart_at);
                }
                // The mirror holds what the engine holds.
                let exported = original.export();
                let mut from_mirror = mirror.state(&events);
                for t in &mut from_mirror.triggers {
                    for n in &mut t.nodes {
                        if let NodeExport::Event { buckets, .. } = n {
                            buckets.sort_by(|a, b| a.0.cmp(&b.0));
                        }
                    }
                }
                let mut expected = exported.triggers.clone();
                expected.sort_by(|a, b| a.id.cmp(&b.id));
                prop_assert_eq!(&from_mirror.triggers, &expected, "input {}", i);
                let parked: Vec<Uuid> = exported.waiting.iter().map(|w| w.event.id).collect();
                let mut mirrored: Vec<Uuid> = mirror.parked.keys().copied().collect();
                let mut sorted = parked.clone();
                sorted.sort();
                mirrored.sort();
                prop_assert_eq!(mirrored, sorted);
                prop_assert_eq!((mirror.clock, mirror.firing_seq), (exported.clock, exported.firing_seq));
            }
        }
    }
}
