//! Replay on a virtual clock, as `conformance/FORMAT.md` defines it: the clock starts at the
//! first event's `occurred`, each arriving event moves it to `max(clock, occurred)`, periodic
//! work happens at the instant it is due, and after the last event the clock runs to `until`.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::model::time::Timestamp;
use crate::model::{Event, Firing};

use super::compile::CompiledDefinition;
use super::{Engine, EngineConfig, Step};

/// Runs `events` (in the order given) through a fresh engine holding `definitions`, and
/// returns every firing in the order it happened.
pub fn replay(definitions: Vec<CompiledDefinition>, events: Vec<Event>, until: Option<Timestamp>) -> Vec<Firing> {
    let mut replay = Replay::new(definitions, EngineConfig::default());
    let mut firings = Vec::new();
    for event in events {
        firings.extend(replay.push(event));
    }
    if let Some(until) = until {
        firings.extend(replay.finish(until));
    }
    firings
}

/// A replay in progress: events can be pushed in batches, and the engine inspected,
/// exported or swapped between them.
pub struct Replay {
    /// The engine being driven.
    pub engine: Engine,
    /// Every event seen, by id (the first delivery of an id wins).
    pub events: HashMap<Uuid, Arc<Event>>,
}

impl Replay {
    /// A fresh engine with these definitions.
    pub fn new(definitions: Vec<CompiledDefinition>, config: EngineConfig) -> Replay {
        let mut engine = Engine::new(config);
        for d in definitions {
            engine.upsert(d);
        }
        Replay { engine, events: HashMap::new() }
    }

    /// Delivers one event at `max(clock, occurred)`; returns the firings it (and the periodic
    /// work due before it) caused.
    pub fn push(&mut self, mut event: Event) -> Vec<Firing> {
        let now = self.engine.clock().map_or(event.occurred, |c| c.max(event.occurred));
        event.received.get_or_insert(now);
        self.on_event(now, event).firings
    }

    /// Delivers one event at processing time `now`, as it is (the first delivery of an id is
    /// remembered), and renders the step with the events seen so far.
    pub fn on_event(&mut self, now: Timestamp, event: impl Into<Arc<Event>>) -> Step {
        let event = event.into();
        self.events.entry(event.id).or_insert_with(|| event.clone());
        let step = self.engine.on_event(now, event);
        self.engine.render(step, &self.events)
    }

    /// Advances the clock to `until`, doing the periodic work due on the way.
    pub fn finish(&mut self, until: Timestamp) -> Vec<Firing> {
        let step = self.engine.on_tick(until);
        self.engine.render(step, &self.events).firings
    }
}
