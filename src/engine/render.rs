//! Rendering, after the decision. [`Engine::on_event`] and [`Engine::on_tick`] decide firings
//! without reading any past event; each [`PendingFiring`] names the events its parameters read
//! ([`PendingFiring::needs`], [`Step::needs`]), the caller fetches them (the service through its
//! write transaction, failing the command on a store error; `replay` from the events it has
//! seen) and [`Engine::render`] renders. A panic while rendering disables the definition, as a
//! panic while deciding does, and every other firing is rendered.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::model::{Event, Firing};

use super::compile::CompiledDefinition;
use super::composite::ChildFiring;
use super::template::TemplateContext;
use super::{Engine, FiringContext, Step};

/// A firing the engine decided and has not rendered yet.
#[derive(Clone, Debug)]
pub struct PendingFiring {
    /// The firing as decided: id, trigger, bucket, times, triggering events, scope filter.
    /// `parameters` is None until [`Engine::render`] renders it.
    pub firing: Firing,
    /// The definition as compiled when it fired: its compiled parameters are rendered.
    definition: Arc<CompiledDefinition>,
    /// The event being processed when it fired (kept only when there are parameters): found
    /// without a lookup.
    current: Option<Arc<Event>>,
    /// The payload of the scope filter that let a scoped event through (kept only when there
    /// are parameters), exposed to templates as `filter`.
    filter: Option<Map<String, Value>>,
}

impl PendingFiring {
    pub(super) fn new(
        definition: Arc<CompiledDefinition>,
        id: Uuid,
        bucket: BTreeMap<String, String>,
        child: ChildFiring,
        context: FiringContext<'_>,
    ) -> PendingFiring {
        let def = &definition.definition;
        let firing = Firing {
            id,
            trigger: def.id.clone(),
            bucket,
            at: child.at,
            triggered: child.triggered,
            triggering_event: child.event,
            triggering_events: child.events,
            deployment: def.deployment.clone(),
            parameters: None,
            filter: context.filter.map(|(id, _)| id),
            error: None,
        };
        let (current, filter) = match definition.parameters {
            Some(_) => (context.current.cloned(), context.filter.map(|(_, payload)| payload.clone())),
            None => (None, None),
        };
        PendingFiring { firing, definition, current, filter }
    }

    /// The ids of the past events its rendering reads and does not carry: the triggering event
    /// (when the parameters read `event`, `firing` or `firings`) and the events behind the
    /// firing (when they read `events`), except the event being processed. Empty without
    /// parameters.
    pub fn needs(&self) -> impl Iterator<Item = Uuid> + '_ {
        let (event, events) = match &self.definition.parameters {
            Some(p) => (p.reads("event") || p.reads("firing") || p.reads("firings"), p.reads("events")),
            None => (false, false),
        };
        let current = self.current.as_ref().map(|e| e.id);
        let first = self.firing.triggering_event.filter(|_| event);
        let behind = self.firing.triggering_events.iter().copied().filter(move |_| events);
        first.into_iter().chain(behind).filter(move |id| Some(*id) != current)
    }

    /// Renders the parameters with `events`; an event not there renders as none (as in a
    /// proactive firing no event opened). A template error is the firing's error.
    fn render(self, events: &HashMap<Uuid, Arc<Event>>) -> Firing {
        let PendingFiring { mut firing, definition, current, filter } = self;
        let Some(parameters) = &definition.parameters else { return firing };
        let resolve = |id: &Uuid| match &current {
            Some(e) if e.id == *id => Some(e.clone()),
            _ => events.get(id).cloned(),
        };
        let ctx = TemplateContext {
            automation: &definition.definition,
            event: firing.triggering_event.as_ref().and_then(resolve),
            labels: &firing.bucket,
            firing: &firing,
            events: firing.triggering_events.iter().filter_map(resolve).collect(),
            filter: filter.as_ref(),
        };
        match parameters.render(&ctx) {
            Ok(value) => firing.parameters = Some(value),
            Err(e) => {
                firing.parameters = Some(Value::Null);
                firing.error = Some(e.to_string());
            }
        }
        firing
    }
}

impl Step<PendingFiring> {
    /// Every past event the step's firings need to render ([`PendingFiring::needs`]), each
    /// id once, in the order they are first needed.
    pub fn needs(&self) -> Vec<Uuid> {
        let mut seen = HashSet::new();
        self.firings.iter().flat_map(PendingFiring::needs).filter(|id| seen.insert(*id)).collect()
    }
}

impl Engine {
    /// Renders a decided step's firings. `events` holds the needed past events
    /// ([`Step::needs`]) the caller found, by id; one it did not find (pruned by retention)
    /// renders as none. Firing ids and order are those decided. A panic while rendering
    /// disables the definition as a panic while deciding does (a [`super::Fault`] in the
    /// step); its later firings in the step are dropped (disabled at the first, it would not
    /// have fired again) and every other firing is rendered.
    pub fn render(&mut self, step: Step<PendingFiring>, events: &HashMap<Uuid, Arc<Event>>) -> Step {
        let Step { outcome, firings, overflows, mut faults } = step;
        let mut rendered = Vec::with_capacity(firings.len());
        let mut disabled: Vec<Arc<CompiledDefinition>> = Vec::new();
        for pending in firings {
            let definition = pending.definition.clone();
            if disabled.iter().any(|d| d.definition.id == definition.definition.id) {
                continue;
            }
            match catch_unwind(AssertUnwindSafe(|| pending.render(events))) {
                Ok(firing) => rendered.push(firing),
                Err(panic) => {
                    let id = &definition.definition.id;
                    // Disabled once: a definition that panicked while deciding already is.
                    if !faults.iter().any(|f| f.trigger == *id) {
                        if let Some(&slot) = self.by_id.get(id) {
                            self.fault(slot, panic.as_ref(), &mut faults);
                        }
                    }
                    disabled.push(definition);
                }
            }
        }
        Step { outcome, firings: rendered, overflows, faults }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::engine::{compile_all, EngineConfig};
    use crate::model::{Resource, Timestamp, TriggerDefinition};

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_micros(Timestamp::parse("2026-01-01T00:00:00Z").unwrap().as_micros() + secs * 1_000_000)
    }

    fn ev(n: u128, at: Timestamp, name: &str, rid: &str) -> Arc<Event> {
        Arc::new(Event::new(Uuid::from_u128(n), at, name, Resource::new(rid)))
    }

    fn engine(definitions: serde_json::Value) -> Engine {
        let defs = TriggerDefinition::list_from_json(&definitions).expect("valid definitions");
        let mut engine = Engine::new(EngineConfig::default());
        for d in compile_all(&defs).expect("compiles") {
            engine.upsert(d);
        }
        engine
    }

    /// Decides and renders, with every event delivered so far at hand.
    fn step(engine: &mut Engine, seen: &mut HashMap<Uuid, Arc<Event>>, now: Timestamp, e: Arc<Event>) -> Step {
        seen.insert(e.id, e.clone());
        let decided = engine.on_event(now, e);
        engine.render(decided, seen)
    }

    #[test]
    fn a_trigger_whose_rendering_panics_is_disabled_alone_and_the_others_keep_firing() {
        let mut engine = engine(json!([
            // Its firing renders a template that panics (a test-only filter).
            {"id": "bad", "trigger": {"type": "compound", "require": "all", "within": 60,
                                      "triggers": [{"expect": ["a"]}, {"expect": ["b"]}]},
             "parameters": {"n": "{{ events | length }}", "boom": "{{ 'the rendering exploded' | test_panic }}"}},
            {"id": "good", "trigger": {"expect": ["b", "order.created"]}, "parameters": {"id": "{{ event.resource.id }}"}},
        ]));
        let mut seen = HashMap::new();
        step(&mut engine, &mut seen, t(0), ev(1, t(0), "a", "x"));
        let decided = engine.on_event(t(30), ev(3, t(30), "b", "x"));
        // Both fired; the compound one reads the first child's event, the other nothing past.
        assert_eq!(decided.firings.len(), 2);
        assert_eq!(decided.needs(), [Uuid::from_u128(1)]);
        let ids: Vec<Uuid> = decided.firings.iter().map(|f| f.firing.id).collect();
        let rendered = engine.render(decided, &seen);
        assert_eq!(rendered.faults.len(), 1, "{rendered:?}");
        assert_eq!(rendered.faults[0].trigger, "bad");
        assert_eq!(rendered.faults[0].error, "disabled: evaluating it panicked: the rendering exploded");
        // The other firing of the step is rendered, with the id it was decided with.
        assert_eq!(rendered.firings.len(), 1);
        assert_eq!((rendered.firings[0].trigger.as_str(), rendered.firings[0].id), ("good", ids[1]));
        assert_eq!(rendered.firings[0].parameters, Some(json!({"id": "x"})));
        let disabled = engine.definitions().find(|d| d.definition.id == "bad").expect("still installed");
        assert!(!disabled.definition.enabled, "disabled, so that it cannot panic again");
        // Every other trigger goes on, and the disabled one stays quiet.
        step(&mut engine, &mut seen, t(31), ev(4, t(31), "a", "x"));
        let after = step(&mut engine, &mut seen, t(32), ev(5, t(32), "b", "x"));
        assert_eq!(after.firings.iter().map(|f| f.trigger.as_str()).collect::<Vec<_>>(), ["good"]);
        let after = step(&mut engine, &mut seen, t(33), ev(2, t(33), "order.created", "123"));
        assert_eq!(after.firings[0].parameters, Some(json!({"id": "123"})));
        let tick = engine.on_tick(t(120));
        assert!(engine.render(tick, &seen).faults.is_empty());
    }

    #[test]
    fn only_the_past_events_the_templates_read_are_needed_and_a_missing_one_renders_as_none() {
        let mut engine = engine(json!([
            {"id": "reads-events", "trigger": {"type": "sequence", "within": 60,
                                               "triggers": [{"expect": ["a"]}, {"expect": ["b"]}]},
             "parameters": {"names": "{{ events | map(attribute='event') | list }}"}},
            {"id": "reads-nothing", "trigger": {"type": "sequence", "within": 60,
                                                "triggers": [{"expect": ["a"]}, {"expect": ["b"]}]},
             "parameters": {"fixed": "{{ labels | length }}"}},
            {"id": "no-parameters", "trigger": {"type": "sequence", "within": 60,
                                                "triggers": [{"expect": ["a"]}, {"expect": ["b"]}]}},
        ]));
        assert!(engine.on_event(t(0), ev(1, t(0), "a", "x")).needs().is_empty());
        let decided = engine.on_event(t(1), ev(2, t(1), "b", "x"));
        assert_eq!(decided.firings.len(), 3);
        // The event being processed travels with the firing; only the earlier one is needed.
        assert_eq!(decided.needs(), [Uuid::from_u128(1)]);
        assert_eq!(decided.firings[1].needs().count(), 0);
        assert_eq!(decided.firings[2].needs().count(), 0);
        // Found: both events render. Gone (pruned): it is left out, nothing fails.
        let found = HashMap::from([(Uuid::from_u128(1), ev(1, t(0), "a", "x"))]);
        let rendered = engine.clone().render(decided.clone(), &found);
        assert_eq!(rendered.firings[0].parameters, Some(json!({"names": ["a", "b"]})));
        let rendered = engine.render(decided, &HashMap::new());
        assert_eq!(rendered.firings[0].parameters, Some(json!({"names": ["b"]})));
        assert_eq!(rendered.firings[0].error, None);
        assert_eq!(rendered.firings[1].parameters, Some(json!({"fixed": 0})));
        assert_eq!(rendered.firings[2].parameters, None);
    }
}
