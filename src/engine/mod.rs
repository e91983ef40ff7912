//! Pure matching and per-bucket state machines: no I/O, no wall clock.
//!
//! The [`Engine`] takes events and clock ticks and returns [`Step`]s holding the firings it
//! decided. The processing time is always passed in, so the same inputs give the same firings;
//! this is what `tripwire replay` and the conformance cases rely on. Deciding reads no past
//! event: each [`PendingFiring`] names the events its parameters read, the caller fetches them
//! (from its store, with its own error handling) and [`Engine::render`] renders (see `render.rs`).
//!
//! ```
//! use std::collections::HashMap;
//! use tripwire::engine::{compile, Engine, EngineConfig};
//! use tripwire::model::{Event, EventTrigger, JsonPath, Resource, Timestamp, TriggerDefinition};
//!
//! let def = TriggerDefinition::new(
//!     "post-order",
//!     EventTrigger::new().expect("order.complete").after("order.created").for_each("prefect.resource.id"),
//! )
//! .parameters(serde_json::json!({"user_id": "{{ event.resource.id }}"}));
//! let mut engine = Engine::new(EngineConfig::default());
//! engine.upsert(compile(&def, &JsonPath::root()).unwrap());
//!
//! let t0 = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
//! let e = |n: u128, name: &str| Event::new(uuid::Uuid::from_u128(n), t0, name, Resource::new("123"));
//! assert!(engine.on_event(t0, e(1, "order.created")).firings.is_empty());
//! let step = engine.on_event(t0, e(2, "order.complete"));
//! // The event being processed travels with its firing: nothing else is needed here.
//! assert!(step.needs().is_empty());
//! let events = HashMap::new(); // the needed past events, by id, as the caller fetched them
//! let step = engine.render(step, &events);
//! assert_eq!(step.firings[0].parameters, Some(serde_json::json!({"user_id": "123"})));
//! ```

// The state machines and their parts are the engine's own; what users (and the service)
// need is re-exported below.
pub(crate) mod bucket;
pub(crate) mod compile;
mod composite;
mod index;
mod matcher;
mod ordering;
mod render;
pub mod replay;
pub mod state;
pub(crate) mod template;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use crate::model::time::{Span, Timestamp};
use crate::model::trigger::Posture;
use crate::model::{Event, Firing};

use self::bucket::{BucketFiring, Buckets};
use self::compile::{NodeId, NodeKind};
pub use self::composite::ChildFiring;
use self::composite::ChildFirings;
use self::index::{NameIndex, NodeRef};
use self::ordering::Ordering;

pub use self::bucket::{Bucket, BucketKey, MAX_BUCKET_KEY_BYTES};
pub use self::compile::{compile, compile_all, compile_document, CompiledDefinition, CompiledScopeFilter};
pub use self::ordering::{Waiting, FOLLOWER_WAIT, MAX_FOLLOWER_DEPTH, MAX_PARKED_FOLLOWERS};
pub use self::render::PendingFiring;
pub use self::state::{BucketChanges, EngineState, InstallOrder, StateChanges, TriggerState};
pub use self::template::{
    MAX_RENDERED_PARAMETERS_BYTES, TEMPLATE_FUEL, TEMPLATE_MAX_ALLOC_BYTES, TEMPLATE_MAX_ITEMS,
    TEMPLATE_MAX_NAMESPACE_WALK, TEMPLATE_MAX_RANGE, TEMPLATE_MAX_SOURCE_BYTES, TEMPLATE_MAX_VALUE_BYTES,
    TEMPLATE_MAX_WORK,
};

/// Events with this name are never evaluated (Prefect's consumer drops them).
pub const LOG_WRITE_EVENT: &str = "prefect.log.write";

/// Default cap on live buckets per event trigger.
pub const DEFAULT_MAX_BUCKETS_PER_TRIGGER: usize = 2_000_000;
/// Default of [`EngineConfig::max_bucket_bytes_per_trigger`]: 256 MiB.
pub const DEFAULT_MAX_BUCKET_BYTES_PER_TRIGGER: usize = 256 * 1024 * 1024;

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// How long processed event ids are remembered for deduplication; `None`: forever.
    pub seen_window: Option<Span>,
    /// Live buckets one event trigger may hold; an event that would open one more is not
    /// counted for that trigger and is reported in [`Step::overflows`].
    pub max_buckets_per_trigger: usize,
    /// The same, by bytes: what one event trigger's buckets may cost in all (each
    /// `bucket::BUCKET_OVERHEAD_BYTES` plus its key's length).
    pub max_bucket_bytes_per_trigger: usize,
    /// Remember what changes, for [`Engine::take_changes`] (a caller that persists the state
    /// as it changes sets it; replay does not).
    pub track_changes: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            seen_window: None,
            max_buckets_per_trigger: DEFAULT_MAX_BUCKETS_PER_TRIGGER,
            max_bucket_bytes_per_trigger: DEFAULT_MAX_BUCKET_BYTES_PER_TRIGGER,
            track_changes: false,
        }
    }
}

/// What happened to an event handed to [`Engine::on_event`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Evaluated against the triggers.
    Processed,
    /// Its id was processed before: dropped.
    Duplicate,
    /// Waiting for the event it follows.
    Parked {
        /// The leader it waits for.
        leader: Uuid,
    },
    /// A `prefect.log.write` event: never evaluated.
    Ignored,
}

/// The engine's only output: what [`Engine::on_event`] and [`Engine::on_tick`] decided
/// (`Step<PendingFiring>`), then, from [`Engine::render`], the same with rendered firings
/// (`Step<Firing>`, the default).
#[derive(Clone, Debug, PartialEq)]
pub struct Step<F = Firing> {
    /// What happened to the event given (None for a tick).
    pub outcome: Option<Outcome>,
    /// Firings, in the order they happened.
    pub firings: Vec<F>,
    /// Events a trigger did not count: its buckets were full (by count or bytes), or the
    /// event's key was too long.
    pub overflows: Vec<Overflow>,
    /// Definitions disabled because evaluating them panicked.
    pub faults: Vec<Fault>,
    /// What the firings with parameters are rendered from, in firing order (always empty once
    /// rendered). Kept beside the firings so that a [`PendingFiring`] is laid out exactly as
    /// a [`Firing`] and rendering turns one into the other in place.
    renders: Vec<render::RenderInput>,
}

impl<F> Default for Step<F> {
    fn default() -> Self {
        Step { outcome: None, firings: Vec::new(), overflows: Vec::new(), faults: Vec::new(), renders: Vec::new() }
    }
}

/// An event a trigger did not count, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overflow {
    /// The definition's id.
    pub trigger: String,
    /// Why, naming the limit.
    pub reason: String,
}

/// The message a caught panic carried.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// A definition that was disabled because evaluating it panicked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The definition's id.
    pub trigger: String,
    /// What happened, for its record.
    pub error: String,
}

/// Mutable state of one node of a definition.
#[derive(Clone, Debug)]
enum NodeState {
    Event { buckets: Buckets, next_pass: Option<Timestamp> },
    Composite(ChildFirings),
}

#[derive(Clone, Debug)]
struct Slot {
    compiled: Arc<CompiledDefinition>,
    nodes: Vec<NodeState>,
}

impl Slot {
    fn new(compiled: Arc<CompiledDefinition>, track: bool) -> Slot {
        let nodes = compiled
            .nodes
            .iter()
            .map(|n| match n.kind {
                NodeKind::Event(_) => NodeState::Event { buckets: Buckets::new(track), next_pass: None },
                NodeKind::Composite(_) => NodeState::Composite(ChildFirings::default()),
            })
            .collect();
        Slot { compiled, nodes }
    }
}

/// The trigger engine: one state machine per (trigger, bucket), evolving by Prefect's rules.
#[derive(Clone, Debug)]
pub struct Engine {
    config: EngineConfig,
    clock: Option<Timestamp>,
    slots: Vec<Option<Slot>>,
    by_id: HashMap<String, u32>,
    index: NameIndex,
    ordering: Ordering,
    /// Proactive passes by due time.
    passes: BTreeSet<(Timestamp, u32, u32)>,
    /// Proactive nodes installed before the engine had a clock: their first pass is at the
    /// first instant the engine sees.
    unscheduled: Vec<NodeRef>,
    firing_seq: u64,
    scratch: Vec<NodeRef>,
    fired_scratch: Vec<BucketFiring>,
    /// Hatchet-style scope filters, in installation order.
    scope_filters: Vec<CompiledScopeFilter>,
    /// What changed since [`Engine::take_changes`] besides buckets and parked followers
    /// (which their own structures track), when `config.track_changes` is set.
    changes: state::Tracked,
}

struct MaxDepthExceeded;

/// Whether `process` must record the event as seen (it may have been already).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Recorded,
    NotYet,
}

/// What a firing carries to its rendering besides the engine's state.
#[derive(Clone, Copy, Default)]
struct FiringContext<'a> {
    /// The event being processed (found without a lookup).
    current: Option<&'a Arc<Event>>,
    /// The scope filter (id, payload) that let a scoped event through.
    filter: Option<(Uuid, &'a serde_json::Map<String, serde_json::Value>)>,
}

impl Engine {
    /// An engine without triggers.
    pub fn new(config: EngineConfig) -> Engine {
        Engine {
            ordering: Ordering::tracked(config.seen_window, config.track_changes),
            config,
            clock: None,
            slots: Vec::new(),
            by_id: HashMap::new(),
            index: NameIndex::default(),
            passes: BTreeSet::new(),
            unscheduled: Vec::new(),
            firing_seq: 0,
            scratch: Vec::new(),
            fired_scratch: Vec::new(),
            scope_filters: Vec::new(),
            changes: state::Tracked::default(),
        }
    }

    /// Installs or replaces (by id) a scope filter.
    pub fn put_scope_filter(&mut self, filter: CompiledScopeFilter) {
        match self.scope_filters.iter_mut().find(|f| f.filter.id == filter.filter.id) {
            Some(existing) => *existing = filter,
            None => {
                self.scope_filters.push(filter);
                self.changes.order = true;
            }
        }
    }

    /// Removes a scope filter; false when there was none.
    pub fn remove_scope_filter(&mut self, id: &Uuid) -> bool {
        let before = self.scope_filters.len();
        self.scope_filters.retain(|f| f.filter.id != *id);
        let removed = self.scope_filters.len() != before;
        self.changes.order |= removed;
        removed
    }

    /// The installed scope filters, in installation order.
    pub fn scope_filters(&self) -> impl Iterator<Item = &CompiledScopeFilter> {
        self.scope_filters.iter()
    }

    /// The engine's clock: the latest processing time it was given.
    pub fn clock(&self) -> Option<Timestamp> {
        self.clock
    }

    /// Installs or replaces a definition. A replaced definition keeps its state only when its
    /// trigger tree is unchanged; a new trigger sees only events that arrive after it.
    pub fn upsert(&mut self, compiled: CompiledDefinition) {
        let compiled = Arc::new(compiled);
        let slot = match self.by_id.get(&compiled.definition.id) {
            Some(&slot) => {
                let keep =
                    self.slots[slot as usize].as_ref().is_some_and(|s| s.compiled.fingerprint == compiled.fingerprint);
                self.unregister(slot);
                if !keep {
                    self.changes.reset(&compiled.definition.id);
                }
                let state = if keep {
                    let mut old = self.slots[slot as usize].take().map(|s| s.nodes).unwrap_or_default();
                    for n in old.iter_mut() {
                        if let NodeState::Event { next_pass, .. } = n {
                            *next_pass = None;
                        }
                    }
                    old
                } else {
                    Slot::new(compiled.clone(), self.config.track_changes).nodes
                };
                self.slots[slot as usize] = Some(Slot { compiled, nodes: state });
                slot
            }
            None => {
                let slot = self.slots.len() as u32;
                self.by_id.insert(compiled.definition.id.clone(), slot);
                self.slots.push(Some(Slot::new(compiled, self.config.track_changes)));
                self.changes.order = true;
                slot
            }
        };
        self.changes.slot(slot);
        self.register(slot);
    }

    /// Enables or disables an installed definition, reusing its compiled form (nothing is
    /// compiled again; its state is kept as for any upsert of the same trigger tree). False
    /// when it is not installed.
    pub fn set_enabled(&mut self, id: &str, enabled: bool) -> bool {
        let Some(s) = self.by_id.get(id).and_then(|&slot| self.slots[slot as usize].as_ref()) else { return false };
        let mut compiled = (*s.compiled).clone();
        compiled.definition.enabled = enabled;
        self.upsert(compiled);
        true
    }

    /// Removes a definition and its state; false when there was none.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(slot) = self.by_id.remove(id) else { return false };
        self.unregister(slot);
        self.slots[slot as usize] = None;
        self.changes.reset(id);
        self.changes.order = true;
        true
    }

    /// The installed definitions, in installation order.
    pub fn definitions(&self) -> impl Iterator<Item = &CompiledDefinition> {
        self.slots.iter().flatten().map(|s| s.compiled.as_ref())
    }

    fn register(&mut self, slot: u32) {
        let Some(s) = &self.slots[slot as usize] else { return };
        if !s.compiled.definition.enabled {
            return;
        }
        let compiled = s.compiled.clone();
        for (id, node) in compiled.nodes.iter().enumerate() {
            let NodeKind::Event(e) = &node.kind else { continue };
            let r = (slot, id as u32);
            self.index.add(r, e.index_keys.as_deref());
            if e.posture == Posture::Proactive {
                // Prefect evaluates a newly loaded proactive trigger at its next pass.
                match self.clock {
                    Some(now) => self.schedule(r, now),
                    None => self.unscheduled.push(r),
                }
            }
        }
    }

    fn unregister(&mut self, slot: u32) {
        self.index.remove_slot(slot);
        self.passes.retain(|(_, s, _)| *s != slot);
        self.unscheduled.retain(|(s, _)| *s != slot);
    }

    fn schedule(&mut self, (slot, node): NodeRef, at: Timestamp) {
        if let Some(NodeState::Event { next_pass, .. }) =
            self.slots[slot as usize].as_mut().and_then(|s| s.nodes.get_mut(node as usize))
        {
            if let Some(old) = next_pass.replace(at) {
                self.passes.remove(&(old, slot, node));
            }
            self.passes.insert((at, slot, node));
            self.changes.slot(slot);
        }
    }

    /// When periodic work (a proactive pass, a lost follower) is next due.
    pub fn next_due(&self) -> Option<Timestamp> {
        let pass = self.passes.first().map(|(t, _, _)| *t);
        let follower = self.ordering.next_due();
        let pending = (!self.unscheduled.is_empty()).then_some(self.clock).flatten();
        [pass, follower, pending].into_iter().flatten().min()
    }

    /// Advances the clock to `now`, doing every piece of periodic work that falls due on the
    /// way at the instant it is due. The clock never goes backwards.
    pub fn on_tick(&mut self, now: Timestamp) -> Step<PendingFiring> {
        let mut step = Step::default();
        self.advance(now, &mut step);
        step
    }

    /// Processes one event at processing time `now` (periodic work due up to `now` happens
    /// first).
    pub fn on_event(&mut self, now: Timestamp, event: impl Into<Arc<Event>>) -> Step<PendingFiring> {
        self.on_event_with(now, event, false)
    }

    /// [`Engine::on_event`] for a caller that keeps its own record of processed events (the
    /// service's store, for as long as events are retained): `leader_processed` says that the
    /// event's `follows` leader was processed before, even if this engine no longer remembers
    /// it (its seen ids expire, and are not persisted). A leader parked here still waits.
    pub fn on_event_with(
        &mut self,
        now: Timestamp,
        event: impl Into<Arc<Event>>,
        leader_processed: bool,
    ) -> Step<PendingFiring> {
        let event = event.into();
        let mut step = Step::default();
        self.advance(now, &mut step);
        let clock = self.clock.unwrap_or(now);
        if let Some(leader) = event.follows.filter(|l| leader_processed && *l != event.id) {
            if !self.ordering.is_parked(&leader) {
                self.ordering.record_seen(leader, clock);
            }
        }
        let outcome = if event.event == LOG_WRITE_EVENT {
            Outcome::Ignored
        } else if event.follows.is_none_or(|leader| leader == event.id) {
            // An event that follows nothing is processed now, so it can be marked seen first:
            // one lookup both detects a duplicate and records the id.
            if self.ordering.record_seen(event.id, clock) {
                let _ = self.process(event, clock, 0, Seen::Recorded, &mut step);
                Outcome::Processed
            } else {
                Outcome::Duplicate
            }
        } else if self.ordering.has_been_seen(&event.id) {
            Outcome::Duplicate
        } else {
            let leader = event.follows;
            match self.process(event, clock, 0, Seen::NotYet, &mut step) {
                Ok(true) => Outcome::Processed,
                Ok(false) | Err(MaxDepthExceeded) => Outcome::Parked { leader: leader.unwrap_or_default() },
            }
        };
        step.outcome = Some(outcome);
        step
    }

    fn advance(&mut self, now: Timestamp, step: &mut Step<PendingFiring>) {
        let target = self.clock.map_or(now, |c| c.max(now));
        if self.clock.is_none() {
            self.clock = Some(target);
        }
        let start = self.clock.unwrap_or(target);
        for r in std::mem::take(&mut self.unscheduled) {
            self.schedule(r, start);
        }
        while let Some(due) = self.next_due().filter(|d| *d <= target) {
            let at = self.clock.map_or(due, |c| c.max(due));
            self.clock = Some(at);
            // Lost followers first, then proactive passes (Prefect runs both every few
            // seconds; the cases assume instantaneous polling).
            for w in self.ordering.take_lost(at) {
                let _ = self.process(w.event, w.received, 0, Seen::NotYet, step);
            }
            while let Some(&(t, slot, node)) = self.passes.first() {
                if t > at {
                    break;
                }
                self.passes.pop_first();
                self.proactive_pass(slot, node, at, step);
            }
        }
        self.clock = Some(target);
        self.ordering.expire_seen(target);
    }

    fn proactive_pass(&mut self, slot: u32, node: u32, as_of: Timestamp, step: &mut Step<PendingFiring>) {
        let Some(compiled) = self.slots[slot as usize].as_ref().map(|s| s.compiled.clone()) else { return };
        let NodeKind::Event(e) = &compiled.nodes[node as usize].kind else { return };
        let mut fired = Vec::new();
        {
            let Some(NodeState::Event { buckets, next_pass }) =
                self.slots[slot as usize].as_mut().and_then(|s| s.nodes.get_mut(node as usize))
            else {
                return;
            };
            *next_pass = None;
            let again = bucket::proactive_pass(e, buckets, as_of, &mut fired);
            *next_pass = Some(again);
            self.passes.insert((again, slot, node));
            self.changes.slot(slot);
        }
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for f in fired {
                self.fire(slot, node as NodeId, f, FiringContext::default(), step);
            }
        }));
        if let Err(panic) = rendered {
            self.fault(slot, panic.as_ref(), &mut step.faults);
        }
    }

    /// Prefect's `preceding_event_confirmed` around `reactive_evaluation`. Returns false when
    /// the event was parked.
    fn process(
        &mut self,
        event: Arc<Event>,
        received: Timestamp,
        depth: usize,
        seen: Seen,
        step: &mut Step<PendingFiring>,
    ) -> Result<bool, MaxDepthExceeded> {
        if depth > MAX_FOLLOWER_DEPTH {
            return Err(MaxDepthExceeded);
        }
        let clock = self.clock.unwrap_or(received);
        if self.ordering.must_wait(&event, received, clock) {
            // At MAX_PARKED_FOLLOWERS, the follower that has waited longest is lost now rather
            // than after its 15 minutes (and it may have been this event's leader).
            while self.ordering.is_full_for(&event.id) {
                let Some(lost) = self.ordering.take_longest_waiting() else { break };
                self.release(lost.event, clock, 0, Seen::NotYet, step);
            }
            if self.ordering.must_wait(&event, received, clock) {
                self.ordering.park(event, received);
                return Ok(false);
            }
        }
        self.release(event, clock, depth, seen, step);
        Ok(true)
    }

    /// Evaluates an event that does not (or no longer) wait, then the followers it releases.
    fn release(
        &mut self,
        event: Arc<Event>,
        clock: Timestamp,
        depth: usize,
        seen: Seen,
        step: &mut Step<PendingFiring>,
    ) {
        self.evaluate_triggers(&event, step);
        if seen == Seen::NotYet {
            self.ordering.record_seen(event.id, clock);
        }
        for follower in self.ordering.followers_of(&event.id) {
            if self.process(follower.event, follower.received, depth + 1, Seen::NotYet, step).is_err() {
                break;
            }
        }
        if event.follows.is_some_and(|leader| leader != event.id) {
            self.ordering.forget(&event);
        }
    }

    fn evaluate_triggers(&mut self, event: &Arc<Event>, step: &mut Step<PendingFiring>) {
        let clock = self.clock.unwrap_or(event.occurred);
        let mut candidates = std::mem::take(&mut self.scratch);
        self.index.candidates(&event.event, &mut candidates);
        let mut fired = std::mem::take(&mut self.fired_scratch);
        for &(slot, node) in &candidates {
            let evaluated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.evaluate_node(slot, node, event, clock, step, &mut fired)
            }));
            if let Err(panic) = evaluated {
                fired.clear();
                self.fault(slot, panic.as_ref(), &mut step.faults);
            }
        }
        self.scratch = candidates;
        self.fired_scratch = fired;
    }

    /// Evaluates one event trigger of a definition against `event`.
    #[allow(clippy::too_many_arguments)] // the loop's state, lent to one step of it
    fn evaluate_node(
        &mut self,
        slot: u32,
        node: u32,
        event: &Arc<Event>,
        clock: Timestamp,
        step: &mut Step<PendingFiring>,
        fired: &mut Vec<BucketFiring>,
    ) {
        let Some(compiled) = self.slots[slot as usize].as_ref().map(|s| s.compiled.clone()) else { return };
        let NodeKind::Event(e) = &compiled.nodes[node as usize].kind else { return };
        // A definition disabled by a fault earlier in this loop is still among the candidates.
        if !compiled.definition.enabled || !e.covers_after_index(event) {
            return;
        }
        if let (Some(scope), Some(deployment), 0, true) =
            (&event.scope, &compiled.definition.deployment, node, e.stateless)
        {
            // A scoped event runs a deployment's single-key trigger once per matching
            // filter of that scope, and not at all without one (Hatchet's rule).
            if e.expects(&event.event) {
                let passed: Vec<(Uuid, serde_json::Map<String, serde_json::Value>)> = self
                    .scope_filters
                    .iter()
                    .filter(|f| f.filter.deployment == *deployment && f.filter.scope == *scope && f.matches(event))
                    .map(|f| (f.filter.id, f.filter.payload.clone()))
                    .collect();
                for (id, payload) in passed {
                    let firing = BucketFiring {
                        key: BucketKey::of(&e.for_each, event),
                        at: event.occurred,
                        event: Some(event.id),
                    };
                    let context = FiringContext { current: Some(event), filter: Some((id, &payload)) };
                    self.fire(slot, 0, firing, context, step);
                }
            }
            return;
        }
        let Some(NodeState::Event { buckets, .. }) =
            self.slots[slot as usize].as_mut().and_then(|s| s.nodes.get_mut(node as usize))
        else {
            return;
        };
        // Built once: the caps below look at it, and the evaluation uses it.
        let key = BucketKey::of(&e.for_each, event);
        if !e.stateless {
            let key_len = key.as_str().len();
            let cost = bucket::bucket_cost(&key);
            let overflow = |reason: String| Overflow { trigger: compiled.definition.id.clone(), reason };
            if key_len > bucket::MAX_BUCKET_KEY_BYTES {
                step.overflows.push(overflow(format!(
                    "the event's for_each key is {key_len} bytes; at most {} are allowed",
                    bucket::MAX_BUCKET_KEY_BYTES
                )));
                return;
            }
            let (max_count, max_bytes) =
                (self.config.max_buckets_per_trigger, self.config.max_bucket_bytes_per_trigger);
            let full = |b: &Buckets| b.len() >= max_count || b.bytes() + cost > max_bytes;
            if full(buckets) {
                buckets.sweep(clock);
                if full(buckets) && buckets.live(&key, clock).is_none() {
                    step.overflows.push(overflow(format!(
                        "the trigger holds {} buckets ({} bytes); at most {max_count} buckets and {max_bytes} bytes",
                        buckets.len(),
                        buckets.bytes()
                    )));
                    return;
                }
            }
        }
        bucket::on_event(e, buckets, clock, event, key, fired);
        for f in fired.drain(..) {
            self.fire(slot, node as NodeId, f, FiringContext { current: Some(event), filter: None }, step);
        }
    }

    /// A definition panicked while it was evaluated (a bug, or a template that got past its
    /// budget): it is disabled with the error, its state dropped, and every other definition
    /// goes on. Deterministic, like the rest: replaying the same inputs disables it again.
    fn fault(&mut self, slot: u32, panic: &(dyn std::any::Any + Send), faults: &mut Vec<Fault>) {
        let message = panic_message(panic);
        let Some(s) = self.slots[slot as usize].take() else { return };
        self.unregister(slot);
        let mut compiled = (*s.compiled).clone();
        compiled.definition.enabled = false;
        let trigger = compiled.definition.id.clone();
        self.slots[slot as usize] = Some(Slot::new(Arc::new(compiled), self.config.track_changes));
        self.changes.reset(&trigger);
        self.changes.slot(slot);
        faults.push(Fault { trigger, error: format!("disabled: evaluating it panicked: {message}") });
    }

    /// Passes a bucket firing up the trigger tree and reports the definition's firing when it
    /// reaches the root.
    fn fire(
        &mut self,
        slot: u32,
        node: NodeId,
        firing: BucketFiring,
        context: FiringContext<'_>,
        step: &mut Step<PendingFiring>,
    ) {
        let clock = self.clock.unwrap_or(firing.at);
        let Some(s) = self.slots[slot as usize].as_mut() else { return };
        let compiled = s.compiled.clone();
        let bucket = match &compiled.nodes[node].kind {
            NodeKind::Event(e) if node == 0 => firing.key.labels(&e.for_each),
            _ => BTreeMap::new(),
        };
        let mut child = ChildFiring {
            triggered: clock,
            at: firing.at,
            event: firing.event,
            events: firing.event.into_iter().collect(),
        };
        let mut at_node = node;
        while let Some((parent, position)) = compiled.nodes[at_node].parent {
            let NodeKind::Composite(c) = &compiled.nodes[parent].kind else { return };
            let NodeState::Composite(stored) = &mut s.nodes[parent] else { return };
            self.changes.slot(slot);
            match composite::receive(c, stored, position, child) {
                Some(next) => child = next,
                None => return,
            }
            at_node = parent;
        }
        self.firing_seq += 1;
        let id = firing_id(&compiled.definition.id, self.firing_seq);
        let (firing, input) = PendingFiring::new(compiled, id, bucket, child, context, step.firings.len());
        step.firings.push(firing);
        step.renders.extend(input);
    }

    /// One page of a definition's live buckets, for "why did / didn't it fire?": ordered by
    /// (event trigger, key), after `query.after`, at most `query.limit`. With `query.key` (the
    /// `for_each` values in sorted-label order), only that key's bucket in each event trigger:
    /// a lookup, whatever the number of buckets. A single value given for several labels
    /// matches buckets holding it as any of their values (a scan of the trigger's buckets).
    /// The cost is one pass over the buckets at most, keeping only the page.
    pub fn bucket_page(&self, id: &str, query: &BucketQuery) -> Option<BucketPage> {
        let &slot = self.by_id.get(id)?;
        let s = self.slots[slot as usize].as_ref()?;
        let clock = self.clock.unwrap_or_default();
        let limit = query.limit.max(1);
        // The page's entries, smallest (node, key) first, holding at most limit + 1.
        let mut page: BTreeMap<(usize, BucketKey), Bucket> = BTreeMap::new();
        let mut offer = |node: usize, key: &BucketKey, bucket: Bucket| {
            if bucket.swept_at(clock) || query.after.as_ref().is_some_and(|(n, k)| (node, key) <= (*n, k)) {
                return;
            }
            if page.len() > limit {
                match page.last_key_value() {
                    Some(((n, k), _)) if (node, key) < (*n, k) => {
                        page.pop_last();
                    }
                    _ => return,
                }
            }
            page.insert((node, key.clone()), bucket);
        };
        for (node, state) in s.nodes.iter().enumerate() {
            let (NodeKind::Event(e), NodeState::Event { buckets, .. }) = (&s.compiled.nodes[node].kind, state) else {
                continue;
            };
            match &query.key {
                Some(values) if values.len() == e.for_each.len() || values.len() != 1 => {
                    let values: Vec<&str> = values.iter().map(String::as_str).collect();
                    let key = BucketKey::from_values(&values);
                    if let Some(b) = buckets.get(&key, clock) {
                        offer(node, &key, b);
                    }
                }
                Some(values) => {
                    for (key, b) in buckets.iter() {
                        if key.labels(&e.for_each).values().any(|v| *v == values[0]) {
                            offer(node, key, *b);
                        }
                    }
                }
                None => {
                    for (key, b) in buckets.iter() {
                        offer(node, key, *b);
                    }
                }
            }
        }
        let more = page.len() > limit;
        let buckets: Vec<BucketView> = page
            .into_iter()
            .take(limit)
            .filter_map(|((node, key), b)| {
                let NodeKind::Event(e) = &s.compiled.nodes[node].kind else { return None };
                // A zero-length window (`within: 0`) counts expected events until the sweep
                // deletes it: open until then.
                let phase = if clock < b.start {
                    BucketPhase::CoolingDown
                } else if clock < b.end || b.start == b.end {
                    BucketPhase::Open
                } else {
                    BucketPhase::Closed
                };
                Some(BucketView {
                    node,
                    labels: key.labels(&e.for_each),
                    phase,
                    posture: e.posture,
                    threshold: e.threshold,
                    sweep_at: b.end.plus(bucket::EXPIRED_BUCKET_BUFFER),
                    bucket: b,
                    key,
                })
            })
            .collect();
        let next = if more { buckets.last().map(|b| (b.node, b.key.clone())) } else { None };
        let composites = s
            .compiled
            .nodes
            .iter()
            .zip(&s.nodes)
            .enumerate()
            .filter_map(|(node, (compiled, state))| {
                let (NodeKind::Composite(c), NodeState::Composite(kept)) = (&compiled.kind, state) else { return None };
                let mut children = kept.0.clone();
                children.resize(c.children.len(), None);
                Some(CompositeView {
                    node,
                    children: c.children.clone(),
                    sequence: c.sequence,
                    required: c.required,
                    within: c.within,
                    fired: children,
                    clock,
                })
            })
            .collect();
        Some(BucketPage { definition: s.compiled.clone(), buckets, next, composites })
    }

    /// Physically drops buckets the sweep has deleted (they are already invisible).
    pub fn compact(&mut self) {
        let Some(clock) = self.clock else { return };
        for s in self.slots.iter_mut().flatten() {
            for n in s.nodes.iter_mut() {
                if let NodeState::Event { buckets, .. } = n {
                    buckets.sweep(clock);
                }
            }
        }
    }

    /// Number of stored buckets across all triggers.
    pub fn bucket_count(&self) -> usize {
        self.bucket_counts().map(|(_, n)| n).sum()
    }

    /// Number of stored buckets of each installed definition, by id.
    pub fn bucket_counts(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.per_definition(|b| b.len() as u64).map(|(id, n)| (id, n as usize))
    }

    /// Buckets each installed definition opened since this engine was made (restored ones
    /// are not counted), by id: what a backtest reports.
    pub fn buckets_opened(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.per_definition(Buckets::opened)
    }

    /// `of` summed over each definition's event nodes, by id.
    fn per_definition(&self, of: impl Fn(&Buckets) -> u64 + 'static) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.slots.iter().flatten().map(move |s| {
            let sum = s
                .nodes
                .iter()
                .map(|n| match n {
                    NodeState::Event { buckets, .. } => of(buckets),
                    NodeState::Composite(_) => 0,
                })
                .sum();
            (s.compiled.definition.id.as_str(), sum)
        })
    }
}

/// One live bucket, as shown to people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BucketView {
    /// The event trigger inside the definition (0 is the root).
    pub node: usize,
    /// The bucket's key (a page cursor is its node and key).
    pub key: BucketKey,
    /// `{for_each label: value}`.
    pub labels: BTreeMap<String, String>,
    /// Where the window stands by the engine's clock.
    pub phase: BucketPhase,
    /// The trigger's posture.
    pub posture: Posture,
    /// The trigger's threshold.
    pub threshold: i64,
    /// When the sweep deletes the bucket if nothing else does first.
    pub sweep_at: Timestamp,
    /// Window and count.
    pub bucket: Bucket,
}

/// Which buckets [`Engine::bucket_page`] shows.
#[derive(Clone, Debug, Default)]
pub struct BucketQuery {
    /// Only this key's bucket: the `for_each` values in sorted-label order.
    pub key: Option<Vec<String>>,
    /// Start after this (event trigger, key): the previous page's `next`.
    pub after: Option<(usize, BucketKey)>,
    /// At most this many.
    pub limit: usize,
}

/// A page of live buckets.
#[derive(Clone, Debug)]
pub struct BucketPage {
    /// The definition, as compiled (to explain the evidence each bucket keeps).
    pub definition: Arc<CompiledDefinition>,
    /// The buckets, by (event trigger, key).
    pub buckets: Vec<BucketView>,
    /// Where the next page starts, when there is one.
    pub next: Option<(usize, BucketKey)>,
    /// Each compound and sequence trigger's progress.
    pub composites: Vec<CompositeView>,
}

/// A compound or sequence trigger's progress: the latest firing it keeps of each child
/// (Prefect keeps one per child, and forgets those older than `within` at the next child
/// firing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompositeView {
    /// The composite inside the definition (0 is the root).
    pub node: usize,
    /// Its children's nodes, in declaration order.
    pub children: Vec<usize>,
    /// A sequence (children in order) or a compound.
    pub sequence: bool,
    /// Child firings needed (with `1`, any child's firing fires it and nothing is kept).
    pub required: usize,
    /// Child firings older than this (processing time) no longer count.
    pub within: Option<Span>,
    /// The kept firing of each child, by position.
    pub fired: Vec<Option<ChildFiring>>,
    /// The engine's clock when it was read.
    pub clock: Timestamp,
}

/// Where a bucket's window stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BucketPhase {
    /// Before the window starts: the cooldown after a firing; events are ignored.
    CoolingDown,
    /// Counting events (a `within: 0` window: until the sweep deletes it).
    Open,
    /// The window has ended: the next event or proactive pass decides, or the sweep deletes it.
    Closed,
}

/// A firing id derived from the definition id and the engine's firing counter, so a replay
/// reproduces it.
fn firing_id(trigger: &str, seq: u64) -> Uuid {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in trigger.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    uuid::Builder::from_u128((u128::from(hash) << 64) | u128::from(seq))
        .with_version(uuid::Version::Custom)
        .with_variant(uuid::Variant::RFC4122)
        .into_uuid()
}
