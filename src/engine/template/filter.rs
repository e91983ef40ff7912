//! Trigger filters: a compiled expression over an event (`event`, `payload`, `input`,
//! `event_key`, and Hatchet's variables for scope filters).

use std::fmt;
use std::sync::Arc;

use minijinja::value::Value;
use minijinja::Expression;

use crate::model::{Event, JsonPath, Problems};

use super::environment::compile_expression;
use super::objects::{event_value, PayloadObject};
use super::{budget, describe, names, RenderError};

/// A compiled trigger filter: a minijinja expression over `event`, with `payload` and `input`
/// as aliases of `event.payload` and `event_key` the event's name.
#[derive(Clone)]
pub struct Filter {
    source: Arc<str>,
    path: String,
    expr: Arc<Expression<'static, 'static>>,
}

impl Filter {
    /// Compiles; a syntax error is added to `problems` at `path` and None returned.
    pub fn compile(source: &str, path: &JsonPath, problems: &mut Problems) -> Option<Filter> {
        match compile_expression(source) {
            Ok(expr) => {
                let unknown = names::check(&expr.undeclared_variables(true), &names::FILTER);
                for message in &unknown {
                    problems.add_rule(path, format!("unknown name in filter expression: {message}"));
                }
                unknown.is_empty().then(|| Filter {
                    source: Arc::from(source),
                    path: path.to_string(),
                    expr: Arc::new(expr),
                })
            }
            Err(e) => {
                problems.add_rule(path, format!("invalid filter expression: {}", describe(&e, source)));
                None
            }
        }
    }

    /// True when the expression is truthy for this event. Evaluation errors → Err (caller
    /// treats as no match).
    pub fn matches(&self, event: &Arc<Event>) -> Result<bool, RenderError> {
        self.matches_with(event, &[])
    }

    /// Same, with extra top-level variables (for Hatchet-style filters: `input`, `payload`,
    /// `additional_metadata`, `event_key`); a name in `extra` replaces the default one.
    pub fn matches_with(&self, event: &Arc<Event>, extra: &[(&str, serde_json::Value)]) -> Result<bool, RenderError> {
        let payload = Value::from_object(PayloadObject::new(event));
        let mut vars: Vec<(&str, Value)> = vec![
            ("event", event_value(event)),
            ("payload", payload.clone()),
            ("input", payload),
            ("event_key", Value::from(event.event.as_str())),
        ];
        for (name, value) in extra {
            let value = Value::from_serialize(value);
            match vars.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = value,
                None => vars.push((name, value)),
            }
        }
        let ctx = Value::from_iter(vars);
        budget::start();
        self.expr
            .eval(&ctx)
            .map(|v| v.is_true())
            .map_err(|e| RenderError { path: self.path.clone(), message: describe(&e, &self.source) })
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Filter").field(&&*self.source).finish()
    }
}
