//! The engine's whole state as data (serde), so it can be persisted, exported midway and
//! restored into a fresh engine that then behaves exactly as the original would have.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::time::Timestamp;

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

impl Engine {
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
        let mut ordering = Ordering::new(self.config.seen_window);
        for (id, at) in state.seen {
            ordering.record_seen(id, at.unwrap_or_default());
        }
        for w in state.waiting {
            ordering.park(w.event, w.received);
        }
        self.ordering = ordering;
        for t in state.triggers {
            let Some(&slot) = self.by_id.get(&t.id) else { continue };
            let Some(s) = self.slots[slot as usize].as_mut() else { continue };
            if s.compiled.fingerprint != t.fingerprint || s.nodes.len() != t.nodes.len() {
                continue;
            }
            for (node, export) in t.nodes.into_iter().enumerate() {
                match (&mut s.nodes[node], export) {
                    (NodeState::Event { buckets, next_pass }, NodeExport::Event { buckets: saved, next_pass: due }) => {
                        let mut restored = Buckets::default();
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
    }
}
