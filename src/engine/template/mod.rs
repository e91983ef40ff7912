//! Jinja templates (minijinja) for run parameters and trigger filters.
//!
//! Parameters follow Prefect's `RunDeployment` rules (SEMANTICS.md, "Parameters"): every string
//! containing `{{` or `{%` is a template, a string that is exactly one `{{ expr }}` keeps the
//! JSON type of its value, and any other template renders as text. Where Prefect fails the
//! whole parameter set on a single expression (a datetime, a UUID, an undefined value,
//! dict-method shadowing, the `| tojson` precedence trap), tripwire renders the value the user
//! means (SEMANTICS.md, "tripwire's deviations", 2).
//!
//! Every template runs in one shared, sandboxed environment: undefined values are chainable,
//! each rendering has [`TEMPLATE_FUEL`] instructions of fuel, auto-escaping is off (parameters
//! are JSON, not HTML), and Python's string, dict and list methods are available.
//!
//! Templates come from untrusted users and render on the engine's core thread, so memory is
//! bounded as well as time: every operation that can build more than its input is checked
//! before it allocates ([`TEMPLATE_MAX_VALUE_BYTES`] per value, [`TEMPLATE_MAX_ALLOC_BYTES`]
//! per rendering, see `budget.rs`), operators are rewritten into checked calls at compile time
//! (`rewrite.rs`), templates are at most [`TEMPLATE_MAX_SOURCE_BYTES`] long, and rendered
//! parameters at most [`MAX_RENDERED_PARAMETERS_BYTES`] of JSON.
//!
//! The files: `environment.rs` (the environment, its Python-compatible filters, compiling),
//! `objects.rs` (event, resource, label and datetime objects), `convert.rs` (values to JSON),
//! `parameters.rs`, `key.rs` (run concurrency keys) and `filter.rs` (trigger filters); the
//! limits in `budget.rs`, `checked.rs` and `rewrite.rs`.

mod budget;
#[cfg(test)]
mod budget_tests;
mod checked;
mod convert;
mod environment;
mod filter;
mod key;
mod names;
mod objects;
mod parameters;
mod rewrite;
#[cfg(test)]
mod tests;

pub use budget::{
    TEMPLATE_MAX_ALLOC_BYTES, TEMPLATE_MAX_ITEMS, TEMPLATE_MAX_SOURCE_BYTES, TEMPLATE_MAX_VALUE_BYTES,
    TEMPLATE_MAX_WORK,
};
pub use checked::{TEMPLATE_MAX_NAMESPACE_WALK, TEMPLATE_MAX_RANGE};
pub use environment::TEMPLATE_FUEL;
pub use filter::Filter;
pub use key::KeyTemplate;
pub use parameters::{Parameters, MAX_RENDERED_PARAMETERS_BYTES};

use std::collections::BTreeMap;
use std::sync::Arc;

use minijinja::Error;

use crate::model::{Event, Firing, TriggerDefinition};

/// A rendering failure (a runtime error; syntax errors are caught at compile time).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RenderError {
    /// The JSON path of the failing template string, e.g. `$[0].parameters.user_id`.
    pub path: String,
    /// What went wrong, e.g. "unknown filter: filter foo is unknown".
    pub message: String,
}

/// What a template sees (Prefect's `RunDeployment` context).
pub struct TemplateContext<'a> {
    /// Exposed as `automation`: the definition, serialized.
    pub automation: &'a TriggerDefinition,
    /// Exposed as `event`: the triggering event, or none (a proactive window no event opened).
    pub event: Option<Arc<Event>>,
    /// Exposed as `labels`: the firing's bucket labels. Besides `labels['team']` and
    /// `labels.team`, dotted labels can be walked as in Prefect's `LabelDiver`:
    /// `labels.prefect.resource.id`.
    pub labels: &'a BTreeMap<String, String>,
    /// Exposed as `firing`: the firing, serialized, with `firing.triggering_labels` (the labels
    /// as a plain dict) and `firing.triggering_event` (the event object, or none).
    pub firing: &'a Firing,
    /// Exposed as `events`: every event behind the firing.
    pub events: Vec<Arc<Event>>,
    /// Exposed as `filter`: the payload of the scope filter that let a scoped event through
    /// (undefined otherwise).
    pub filter: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

/// A minijinja error as one line: "kind: detail", the line for multi-line templates, and the
/// errors behind it.
fn describe(err: &Error, source: &str) -> String {
    let mut message = match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    };
    if source.contains('\n') {
        if let Some(line) = err.line() {
            message.push_str(&format!(" (line {line})"));
        }
    }
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message
}
