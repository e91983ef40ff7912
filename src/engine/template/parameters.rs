//! Run parameters: a JSON value whose strings are templates, compiled once (expressions, and
//! text templates parsed once, with the context names they read) and rendered into JSON
//! against a firing's [`TemplateContext`].

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::Arc;

use minijinja::value::Value;
use minijinja::Expression;
use serde_json::Value as Json;

use crate::model::{JsonPath, Problems};

use super::convert::{json_len, to_json};
use super::environment::{compile_expression, TextTemplate};
use super::objects::{datetime_value, event_value, LabelTree};
use super::{budget, describe, names, RenderError, TemplateContext};

/// The most bytes the rendered parameters of one firing may take as JSON: the model's limit
/// on any run's parameters, 256 KiB. Past it `Parameters::render` fails with a
/// `RenderError` at the parameters' path ("rendered parameters are N bytes of JSON; at most
/// 262144 bytes (MAX_RENDERED_PARAMETERS_BYTES)"), so the firing records the error and
/// creates no run.
pub const MAX_RENDERED_PARAMETERS_BYTES: usize = crate::model::limits::MAX_PARAMETERS_BYTES;

/// A compiled `parameters` value: any JSON whose strings are templates (in nested objects AND
/// lists).
#[derive(Clone)]
pub struct Parameters {
    source: Arc<Json>,
    path: String,
    pub(super) root: Arc<Node>,
    /// The context names the templates read: only those are built for a rendering.
    used: Arc<BTreeSet<String>>,
}

pub(super) enum Node {
    /// JSON without templates, passed through.
    Literal(Json),
    /// `{{ expr }}` alone: its value, as JSON.
    Expression {
        path: String,
        source: String,
        expr: Expression<'static, 'static>,
    },
    /// Any other template: rendered as a string.
    Text {
        path: String,
        source: String,
        /// The source with checked operators (see `rewrite.rs`), parsed once.
        template: TextTemplate,
    },
    /// A template with a syntax error (already reported at compile time).
    Broken {
        path: String,
        message: String,
    },
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// The inner expression of a single-expression template (Prefect's test: the trimmed string
/// starts with `{{`, ends with `}}` and contains one `{{`), without whitespace-control marks.
fn single_expression(s: &str) -> Option<&str> {
    let t = s.trim();
    if !(t.starts_with("{{") && t.ends_with("}}") && t.matches("{{").count() == 1) {
        return None;
    }
    let inner = t.get(2..t.len().checked_sub(2)?)?;
    let inner = inner.strip_prefix(['-', '+']).unwrap_or(inner);
    Some(inner.strip_suffix(['-', '+']).unwrap_or(inner))
}

/// Prefect's `maybe_template`.
fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// Compiles one value; the top-level names its templates read are added to `used`.
fn compile_node(value: &Json, path: &JsonPath, problems: &mut Problems, used: &mut BTreeSet<String>) -> Node {
    match value {
        Json::String(s) if is_template(s) => {
            if let Some(inner) = single_expression(s) {
                // What does not parse as one expression (e.g. `{{ a }} b }}`) is a text template.
                if let Ok(expr) = compile_expression(inner) {
                    read(&expr.undeclared_variables(true), path, problems, used);
                    return Node::Expression { path: path.to_string(), source: s.clone(), expr };
                }
            }
            match TextTemplate::compile(s) {
                Ok((template, names)) => {
                    read(&names, path, problems, used);
                    Node::Text { path: path.to_string(), source: s.clone(), template }
                }
                Err(e) => {
                    let message = format!("invalid template: {}", describe(&e, s));
                    problems.add_rule(path, message.clone());
                    Node::Broken { path: path.to_string(), message }
                }
            }
        }
        Json::Array(items) => {
            let nodes: Vec<Node> =
                items.iter().enumerate().map(|(i, v)| compile_node(v, &path.index(i), problems, used)).collect();
            if nodes.iter().all(|n| matches!(n, Node::Literal(_))) {
                Node::Literal(value.clone())
            } else {
                Node::Array(nodes)
            }
        }
        Json::Object(map) => {
            let nodes: Vec<(String, Node)> =
                map.iter().map(|(k, v)| (k.clone(), compile_node(v, &path.key(k), problems, used))).collect();
            if nodes.iter().all(|(_, n)| matches!(n, Node::Literal(_))) {
                Node::Literal(value.clone())
            } else {
                Node::Object(nodes)
            }
        }
        other => Node::Literal(other.clone()),
    }
}

/// Notes the context names a template reads (`names`: minijinja's nested names, such as
/// `event.payload.id`) in `used`, and each that no firing can resolve in `problems`.
fn read(names: &HashSet<String>, path: &JsonPath, problems: &mut Problems, used: &mut BTreeSet<String>) {
    used.extend(names.iter().map(|name| name.split('.').next().unwrap_or_default().to_owned()));
    for message in names::check(names, &names::PARAMETERS) {
        problems.add_rule(path, format!("unknown name in template: {message}"));
    }
}

fn render_node(node: &Node, ctx: &Value) -> Result<Json, RenderError> {
    match node {
        Node::Literal(v) => Ok(v.clone()),
        Node::Expression { path, source, expr } => {
            let value =
                expr.eval(ctx).map_err(|e| RenderError { path: path.clone(), message: describe(&e, source) })?;
            to_json(&value, 0).map_err(|message| RenderError { path: path.clone(), message })
        }
        Node::Text { path, source, template } => template
            .render(ctx)
            .map(Json::String)
            .map_err(|e| RenderError { path: path.clone(), message: describe(&e, source) }),
        Node::Broken { path, message } => Err(RenderError { path: path.clone(), message: message.clone() }),
        Node::Array(items) => items.iter().map(|n| render_node(n, ctx)).collect::<Result<_, _>>().map(Json::Array),
        Node::Object(entries) => {
            let mut map = serde_json::Map::with_capacity(entries.len());
            for (k, n) in entries {
                map.insert(k.clone(), render_node(n, ctx)?);
            }
            Ok(Json::Object(map))
        }
    }
}

/// The template context, holding only the names in `used` (building the firing and the
/// definition as template values costs more than most renderings).
fn context_value(ctx: &TemplateContext<'_>, used: &BTreeSet<String>) -> Result<Value, String> {
    let wants = |name: &str| used.contains(name);
    let event = ctx.event.as_ref().map_or(Value::from(()), event_value);
    let firing = if wants("firing") || wants("firings") { firing_value(ctx, &event)? } else { Value::UNDEFINED };
    let mut entries: Vec<(&str, Value)> = vec![("event", event)];
    if wants("automation") {
        entries.push(("automation", Value::from_serialize(ctx.automation)));
    }
    if wants("labels") {
        let labels = LabelTree(ctx.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        entries.push(("labels", Value::from_object(labels)));
    }
    if wants("firings") {
        // Prefect's `firings` lists the firing and the child firings behind it; tripwire
        // keeps only the events of child firings, so it lists the firing itself.
        entries.push(("firings", Value::from(vec![firing.clone()])));
    }
    if wants("firing") {
        entries.push(("firing", firing));
    }
    if wants("events") {
        entries.push(("events", Value::from(ctx.events.iter().map(event_value).collect::<Vec<_>>())));
    }
    if let Some(filter) = ctx.filter.filter(|_| wants("filter")) {
        entries.push(("filter", Value::from_serialize(filter)));
    }
    Ok(Value::from_iter(entries))
}

/// `firing`: the firing serialized, with datetimes, the event object and the labels as a dict.
fn firing_value(ctx: &TemplateContext<'_>, event: &Value) -> Result<Value, String> {
    let plain_labels = Value::from_iter(ctx.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    Ok(match serde_json::to_value(ctx.firing).map_err(|e| format!("cannot expose the firing to templates: {e}"))? {
        Json::Object(fields) => {
            let mut entries: Vec<(String, Value)> = fields
                .into_iter()
                .map(|(k, v)| {
                    let value = match k.as_str() {
                        "triggering_event" => event.clone(),
                        "at" => datetime_value(ctx.firing.at),
                        "triggered" => datetime_value(ctx.firing.triggered),
                        _ => Value::from_serialize(&v),
                    };
                    (k, value)
                })
                .collect();
            if !entries.iter().any(|(k, _)| k == "triggering_event") {
                entries.push(("triggering_event".to_owned(), event.clone()));
            }
            entries.push(("triggering_labels".to_owned(), plain_labels));
            Value::from_iter(entries)
        }
        other => Value::from_serialize(&other),
    })
}

impl Parameters {
    /// Compiles every template string; each syntax error is added to `problems` at the JSON
    /// path of the string (e.g. `$[0].parameters.user_id`, `$[0].parameters.list[2]`), using
    /// `path` as the path of the parameters value itself.
    pub fn compile(value: &serde_json::Value, path: &JsonPath, problems: &mut Problems) -> Parameters {
        let mut used = BTreeSet::new();
        let root = Arc::new(compile_node(value, path, problems, &mut used));
        Parameters { source: Arc::new(value.clone()), path: path.to_string(), root, used: Arc::new(used) }
    }

    /// Renders into JSON. The first template that fails fails the whole value, as in Prefect.
    pub fn render(&self, ctx: &TemplateContext<'_>) -> Result<serde_json::Value, RenderError> {
        if let Node::Literal(v) = &*self.root {
            return Ok(v.clone());
        }
        budget::start();
        let ctx = context_value(ctx, &self.used).map_err(|message| RenderError { path: self.path.clone(), message })?;
        let rendered = render_node(&self.root, &ctx)?;
        let bytes = json_len(&rendered);
        if bytes > MAX_RENDERED_PARAMETERS_BYTES as u128 {
            return Err(RenderError {
                path: self.path.clone(),
                message: format!(
                    "rendered parameters are {bytes} bytes of JSON; at most {MAX_RENDERED_PARAMETERS_BYTES} bytes \
                     (MAX_RENDERED_PARAMETERS_BYTES)"
                ),
            });
        }
        // Stored with the firing: held to the same depth as any other value.
        let depth = crate::model::limits::depth(&rendered);
        if depth > crate::model::limits::MAX_JSON_DEPTH {
            return Err(RenderError {
                path: self.path.clone(),
                message: format!(
                    "rendered parameters are nested {depth} levels deep; at most {} (MAX_JSON_DEPTH)",
                    crate::model::limits::MAX_JSON_DEPTH
                ),
            });
        }
        Ok(rendered)
    }

    /// True when a template reads the context name `name` (`event`, `events`, `firing`, ...):
    /// only those are built for a rendering, and only the events they read are fetched.
    pub fn reads(&self, name: &str) -> bool {
        self.used.contains(name)
    }

    /// The parameters as written.
    pub fn source(&self) -> &serde_json::Value {
        &self.source
    }
}

impl fmt::Debug for Parameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Parameters").field(&*self.source).finish()
    }
}
