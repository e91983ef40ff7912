//! Definition → runtime: matchers, name-index keys, filters and templates are compiled once,
//! and every problem in a set of definitions is reported at once with its JSON path.

use std::sync::Arc;

use crate::model::time::Span;
use crate::model::trigger::{Posture, Require, Trigger, TriggerDefinition};
use crate::model::{Event, EventTrigger, JsonPath, Problems, ScopeFilter};

use super::matcher::{Glob, NamePrefixPattern, ResourceFilter, ValuePattern};
use super::template::{Filter, Parameters};

/// Index of a node (a trigger or one of its nested children) within its definition; the
/// root is node 0 and children follow in depth-first declaration order.
pub type NodeId = usize;

/// A definition ready to run.
#[derive(Clone, Debug)]
pub struct CompiledDefinition {
    /// The definition as written.
    pub definition: TriggerDefinition,
    /// The trigger tree, flattened depth-first.
    pub nodes: Vec<Node>,
    /// Compiled parameters, when the definition has any.
    pub parameters: Option<Parameters>,
    /// A canonical rendering of the trigger tree: restored state is only reused for the
    /// identical tree.
    pub fingerprint: String,
}

/// One trigger in a tree.
#[derive(Clone, Debug)]
pub struct Node {
    /// The composite this node is a child of, with the child's position.
    pub parent: Option<(NodeId, usize)>,
    /// What the node does.
    pub kind: NodeKind,
}

/// Event trigger or composite.
#[derive(Clone, Debug)]
pub enum NodeKind {
    /// An event trigger: owns buckets.
    Event(Box<EventNode>),
    /// A compound or sequence trigger: stores child firings.
    Composite(CompositeNode),
}

/// A compiled `EventTrigger`.
#[derive(Clone, Debug)]
pub struct EventNode {
    /// The index lookup keys: `expect ∪ after`, or `None` (every name) when `expect` is empty.
    pub index_keys: Option<Vec<Glob>>,
    /// `event_pattern` (anchored prefix regex).
    pub name_pattern: NamePrefixPattern,
    /// `expect` as role patterns (with `!` negation); empty means every event.
    pub expect: Vec<ValuePattern>,
    /// `after` as role patterns.
    pub after: Vec<ValuePattern>,
    /// `match` / `match_related`.
    pub resources: ResourceFilter,
    /// Sorted `for_each` labels.
    pub for_each: Vec<String>,
    /// Reactive or proactive.
    pub posture: Posture,
    /// Threshold.
    pub threshold: i64,
    /// Window.
    pub within: Span,
    /// tripwire's filter expression.
    pub filter: Option<Filter>,
    /// Reactive, no `after`, `within` 0, threshold at most 1: every covered event fires at
    /// once and no bucket is ever kept (the run-on-event path).
    pub stateless: bool,
}

impl EventNode {
    /// Prefect's `immediate`: reactive with `within == 0`.
    pub fn immediate(&self) -> bool {
        self.posture == Posture::Reactive && self.within == Span::ZERO
    }

    /// Prefect's `meets_threshold`.
    pub fn meets_threshold(&self, count: i64) -> bool {
        match self.posture {
            Posture::Reactive => count >= self.threshold,
            Posture::Proactive => count < self.threshold,
        }
    }

    /// Prefect's `expects`: empty `expect` expects everything.
    pub fn expects(&self, name: &str) -> bool {
        self.expect.is_empty() || self.expect.iter().any(|p| p.matches(Some(name)))
    }

    /// Prefect's `starts_after`: empty `after` starts nothing.
    pub fn starts_after(&self, name: &str) -> bool {
        self.after.iter().any(|p| p.matches(Some(name)))
    }

    /// The name checks of `find_interested_triggers` + `covers` (without resources).
    pub fn covers_name(&self, name: &str) -> bool {
        let indexed = match &self.index_keys {
            None => true,
            Some(keys) => keys.iter().any(|k| k.matches(name)),
        };
        indexed && self.name_pattern.matches(name)
    }

    /// Prefect's `covers` past the name index (the regex and the resources), plus tripwire's
    /// filter: does this trigger look at the event at all? A filter that fails to evaluate
    /// counts as not matching.
    pub fn covers_after_index(&self, event: &Arc<Event>) -> bool {
        self.name_pattern.matches(&event.event)
            && self.resources.covers(&event.resource, &event.related)
            && self.filter.as_ref().is_none_or(|f| f.matches(event).unwrap_or(false))
    }

    /// Whether the event opens windows (`after`) and/or counts (`expect`) for this trigger,
    /// when the trigger covers it at all.
    pub fn role_of(&self, event: &Arc<Event>) -> Option<EventRole> {
        if !self.covers_name(&event.event) || !self.covers_after_index(event) {
            return None;
        }
        Some(EventRole { opens: self.starts_after(&event.event), counts: self.expects(&event.event) })
    }
}

/// What an event is to a trigger that covers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EventRole {
    /// It matches `after`: it opens a window.
    pub opens: bool,
    /// It matches `expect`: it counts toward the threshold.
    pub counts: bool,
}

/// A compiled compound or sequence trigger.
#[derive(Clone, Debug)]
pub struct CompositeNode {
    /// The children's node ids, in declaration order.
    pub children: Vec<NodeId>,
    /// Sequence (order matters) or compound.
    pub sequence: bool,
    /// Child firings needed (`num_expected_firings`).
    pub required: usize,
    /// Child firings older than this (processing time) are forgotten.
    pub within: Option<Span>,
}

/// Compiles a set of definitions, reporting every problem (parse problems must already have
/// been reported by the model; these are template, filter and duplicate-id problems).
pub fn compile_all(defs: &[TriggerDefinition]) -> Result<Vec<CompiledDefinition>, Problems> {
    let mut problems = Problems::default();
    let root = JsonPath::root();
    let compiled: Vec<CompiledDefinition> =
        defs.iter().enumerate().map(|(i, d)| compile_into(d, &root.index(i), &mut problems)).collect();
    problems.into_result(compiled)
}

/// Reads and compiles a JSON array of definitions, reporting every problem in the document at
/// once: parse problems, duplicate ids, and template and filter problems of the definitions
/// that parsed.
pub fn compile_document(value: &serde_json::Value) -> Result<Vec<CompiledDefinition>, Problems> {
    let (defs, mut problems) = TriggerDefinition::parse_list(value);
    let root = JsonPath::root();
    let compiled = defs.iter().map(|(i, d)| compile_into(d, &root.index(*i), &mut problems)).collect();
    // Definitions that did not parse still get their templates checked, so one pass over the
    // file shows every problem.
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            if defs.iter().any(|(parsed, _)| *parsed == i) {
                continue;
            }
            if let Some(parameters) = item.get("parameters").filter(|p| p.is_object()) {
                Parameters::compile(parameters, &root.index(i).key("parameters"), &mut problems);
            }
        }
    }
    problems.0.sort_by_key(|p| item_index(&p.path));
    problems.into_result(compiled)
}

/// The definition index at the start of a path such as `$[3].trigger`, for ordering problems.
fn item_index(path: &str) -> usize {
    path.strip_prefix("$[").and_then(|rest| rest.split(']').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Compiles one definition whose JSON path is `path`.
pub fn compile(def: &TriggerDefinition, path: &JsonPath) -> Result<CompiledDefinition, Problems> {
    let mut problems = Problems::default();
    let compiled = compile_into(def, path, &mut problems);
    problems.into_result(compiled)
}

fn compile_into(def: &TriggerDefinition, path: &JsonPath, problems: &mut Problems) -> CompiledDefinition {
    let mut nodes = Vec::new();
    add_node(&def.trigger, None, &path.key("trigger"), &mut nodes, problems);
    let parameters = def.parameters.as_ref().map(|p| Parameters::compile(p, &path.key("parameters"), problems));
    let fingerprint = serde_json::to_string(&def.trigger).unwrap_or_default();
    CompiledDefinition { definition: def.clone(), nodes, parameters, fingerprint }
}

fn add_node(
    trigger: &Trigger,
    parent: Option<(NodeId, usize)>,
    path: &JsonPath,
    nodes: &mut Vec<Node>,
    problems: &mut Problems,
) -> NodeId {
    let id = nodes.len();
    match trigger {
        Trigger::Event(e) => {
            nodes.push(Node { parent, kind: NodeKind::Event(Box::new(event_node(e, path, problems))) })
        }
        Trigger::Compound(c) => {
            let required = match c.require {
                Require::Any => 1,
                Require::All => c.triggers.len(),
                Require::AtLeast(n) => n,
            };
            add_composite(id, &c.triggers, false, required, c.within, parent, path, nodes, problems);
        }
        Trigger::Sequence(s) => {
            add_composite(id, &s.triggers, true, s.triggers.len(), s.within, parent, path, nodes, problems);
        }
    }
    id
}

#[allow(clippy::too_many_arguments)]
fn add_composite(
    id: NodeId,
    triggers: &[Trigger],
    sequence: bool,
    required: usize,
    within: Option<Span>,
    parent: Option<(NodeId, usize)>,
    path: &JsonPath,
    nodes: &mut Vec<Node>,
    problems: &mut Problems,
) {
    nodes.push(Node {
        parent,
        kind: NodeKind::Composite(CompositeNode { children: Vec::new(), sequence, required, within }),
    });
    let children: Vec<NodeId> = triggers
        .iter()
        .enumerate()
        .map(|(i, t)| add_node(t, Some((id, i)), &path.key("triggers").index(i), nodes, problems))
        .collect();
    if let NodeKind::Composite(c) = &mut nodes[id].kind {
        c.children = children;
    }
}

fn event_node(e: &EventTrigger, path: &JsonPath, problems: &mut Problems) -> EventNode {
    let index_keys = (!e.expect.is_empty()).then(|| e.expect.iter().chain(&e.after).map(|p| Glob::new(p)).collect());
    let filter = e.filter.as_deref().and_then(|f| Filter::compile(f, &path.key("filter"), problems));
    let stateless = e.posture == Posture::Reactive && e.after.is_empty() && e.within == Span::ZERO && e.threshold <= 1;
    EventNode {
        index_keys,
        name_pattern: NamePrefixPattern::new(&e.expect, &e.after),
        expect: e.expect.iter().map(|p| ValuePattern::new(p)).collect(),
        after: e.after.iter().map(|p| ValuePattern::new(p)).collect(),
        resources: ResourceFilter::new(&e.match_resource, &e.match_related),
        for_each: e.for_each.clone(),
        posture: e.posture,
        threshold: e.threshold,
        within: e.within,
        filter,
        stateless,
    }
}

/// A scope filter with its expression compiled.
#[derive(Clone, Debug)]
pub struct CompiledScopeFilter {
    /// The filter as written.
    pub filter: ScopeFilter,
    expression: Filter,
}

impl CompiledScopeFilter {
    /// Compiles the expression; a syntax error is reported at `path.expression`.
    pub fn new(filter: ScopeFilter, path: &JsonPath) -> Result<CompiledScopeFilter, Problems> {
        let mut problems = Problems::default();
        let expression = Filter::compile(&filter.expression, &path.key("expression"), &mut problems);
        match expression {
            Some(expression) if problems.is_empty() => Ok(CompiledScopeFilter { filter, expression }),
            _ => Err(problems),
        }
    }

    /// Does it let this event through? Hatchet's variables: `input` (the event's payload),
    /// `payload` (the filter's), `additional_metadata`, `event_key`; plus `event`. An
    /// expression that fails to evaluate does not match.
    pub fn matches(&self, event: &Arc<Event>) -> bool {
        let metadata = event.additional_metadata.clone().unwrap_or_default();
        let extra = [
            ("input", serde_json::Value::Object(event.payload.clone())),
            ("payload", serde_json::Value::Object(self.filter.payload.clone())),
            ("additional_metadata", serde_json::Value::Object(metadata)),
            ("event_key", serde_json::Value::String(event.event.clone())),
        ];
        self.expression.matches_with(event, &extra).unwrap_or(false)
    }
}
