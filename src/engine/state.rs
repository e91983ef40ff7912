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
use super::{Engine, NodeState};

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
            .map(|s| TriggerState {
                id: s.compiled.definition.id.clone(),
                fingerprint: s.compiled.fingerprint.clone(),
                nodes: s
                    .nodes
                    .iter()
                    .map(|n| match n {
                        NodeState::Event { next_pass, .. } => {
                            NodeExport::Event { buckets: Vec::new(), next_pass: *next_pass }
                        }
                        NodeState::Composite(c) => NodeExport::Composite { children: c.clone() },
                    })
                    .collect(),
            })
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
        let triggers = self
            .slots
            .iter()
            .flatten()
            .map(|s| TriggerState {
                id: s.compiled.definition.id.clone(),
                fingerprint: s.compiled.fingerprint.clone(),
                nodes: s
                    .nodes
                    .iter()
                    .map(|n| match n {
                        NodeState::Event { buckets, next_pass } => {
                            let mut all = buckets.sorted(Timestamp::from_micros(i64::MIN));
                            all.sort_by(|a, b| a.0.cmp(&b.0));
                            NodeExport::Event { buckets: all, next_pass: *next_pass }
                        }
                        NodeState::Composite(c) => NodeExport::Composite { children: c.clone() },
                    })
                    .collect(),
            })
            .collect();
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
