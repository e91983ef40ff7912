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

/// A firing the engine decided and has not rendered yet: the firing as decided (id,
/// trigger, bucket, times, triggering events, scope filter), `parameters` None until
/// [`Engine::render`] renders it. Laid out exactly as a [`Firing`], so that rendering a step
/// turns its firings into rendered ones in place; what rendering needs sits in the step.
#[derive(Clone, Debug, PartialEq)]
#[repr(transparent)]
pub struct PendingFiring {
    /// The firing as decided.
    pub firing: Firing,
}

/// What the parameters of one firing of a step are rendered from, besides the firing itself.
#[derive(Clone, Debug)]
pub(super) struct RenderInput {
    /// The firing's position in the step.
    index: usize,
    /// The definition as compiled when it fired: its compiled parameters are rendered.
    definition: Arc<CompiledDefinition>,
    /// The event being processed when it fired: found without a lookup.
    current: Option<Arc<Event>>,
    /// The payload of the scope filter that let a scoped event through, exposed to templates
    /// as `filter`.
    filter: Option<Map<String, Value>>,
}

impl PartialEq for RenderInput {
    fn eq(&self, other: &RenderInput) -> bool {
        self.index == other.index
            && Arc::ptr_eq(&self.definition, &other.definition)
            && self.current.as_ref().map(|e| e.id) == other.current.as_ref().map(|e| e.id)
            && self.filter == other.filter
    }
}

impl PendingFiring {
    /// The firing decided at position `index` of its step, and what rendering it needs when
    /// its definition has parameters (nothing otherwise: it passes through as it is).
    pub(super) fn new(
        definition: Arc<CompiledDefinition>,
        id: Uuid,
        bucket: BTreeMap<String, String>,
        child: ChildFiring,
        context: FiringContext<'_>,
        index: usize,
    ) -> (PendingFiring, Option<RenderInput>) {
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
        let input = definition.parameters.is_some().then(|| RenderInput {
            index,
            current: context.current.cloned(),
            filter: context.filter.map(|(_, payload)| payload.clone()),
            definition,
        });
        (PendingFiring { firing }, input)
    }
}

impl RenderInput {
    /// The ids of the past events rendering reads and the firing does not carry: the
    /// triggering event (when the parameters read `event`, `firing` or `firings`) and the
    /// events behind the firing (when they read `events`), except the event being processed.
    fn needs<'a>(&'a self, firing: &'a Firing) -> impl Iterator<Item = Uuid> + 'a {
        let reads = |name| self.definition.parameters.as_ref().is_some_and(|p| p.reads(name));
        let (event, events) = (reads("event") || reads("firing") || reads("firings"), reads("events"));
        let current = self.current.as_ref().map(|e| e.id);
        let first = firing.triggering_event.filter(|_| event);
        let behind = firing.triggering_events.iter().copied().filter(move |_| events);
        first.into_iter().chain(behind).filter(move |id| Some(*id) != current)
    }

    /// Renders `firing`'s parameters with `events`; an event not there renders as none (as in
    /// a proactive firing no event opened). A template error is the firing's error.
    fn render(&self, firing: &mut Firing, events: &HashMap<Uuid, Arc<Event>>) {
        let Some(parameters) = &self.definition.parameters else { return };
        let resolve = |id: &Uuid| match &self.current {
            Some(e) if e.id == *id => Some(e.clone()),
            _ => events.get(id).cloned(),
        };
        let ctx = TemplateContext {
            automation: &self.definition.definition,
            event: firing.triggering_event.as_ref().and_then(resolve),
            labels: &firing.bucket,
            firing,
            events: firing.triggering_events.iter().filter_map(resolve).collect(),
            filter: self.filter.as_ref(),
        };
        let rendered = parameters.render(&ctx);
        match rendered {
            Ok(value) => firing.parameters = Some(value),
            Err(e) => {
                firing.parameters = Some(Value::Null);
                firing.error = Some(e.to_string());
            }
        }
    }
}

impl Step<PendingFiring> {
    /// Every past event the step's firings need to render, each id once, in the order they
    /// are first needed: the triggering event of a firing whose parameters read `event`,
    /// `firing` or `firings`, and the events behind it when they read `events`, except the
    /// event being processed (it travels with the step). Empty without parameters.
    pub fn needs(&self) -> Vec<Uuid> {
        let mut seen = HashSet::new();
        self.renders
            .iter()
            .flat_map(|input| input.needs(&self.firings[input.index].firing))
            .filter(|id| seen.insert(*id))
            .collect()
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
        let Step { outcome, firings, overflows, mut faults, renders } = step;
        // The same layout: collected in place, without allocating.
        let mut firings: Vec<Firing> = firings.into_iter().map(|p| p.firing).collect();
        let mut dropped: Vec<usize> = Vec::new();
        let mut disabled: Vec<String> = Vec::new();
        for input in renders {
            let firing = &mut firings[input.index];
            if disabled.contains(&firing.trigger) {
                dropped.push(input.index);
                continue;
            }
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| input.render(firing, events))) {
                // Disabled once: a definition that panicked while deciding already is.
                if !faults.iter().any(|f| f.trigger == firing.trigger) {
                    if let Some(&slot) = self.by_id.get(&firing.trigger) {
                        self.fault(slot, panic.as_ref(), &mut faults);
                    }
                }
                disabled.push(firing.trigger.clone());
                dropped.push(input.index);
            }
        }
        if !dropped.is_empty() {
            let mut index = 0;
            firings.retain(|_| {
                index += 1;
                !dropped.contains(&(index - 1))
            });
        }
        Step { outcome, firings, overflows, faults, renders: Vec::new() }
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
        // Only the firings with parameters carry what rendering needs; `fixed` reads no event.
        assert_eq!(decided.renders.len(), 2);
        assert_eq!(decided.renders[1].needs(&decided.firings[1].firing).count(), 0);
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
