//! Run keys (concurrency keys, dynamic rate limit keys): a text template over a run's
//! parameters and cause, parsed once when the deployment is put and rendered for each run.

use std::fmt;
use std::sync::Arc;

use minijinja::value::Value;
use serde_json::Value as Json;

use crate::model::{JsonPath, Problems, RunCause};

use super::environment::TextTemplate;
use super::{budget, describe, names, RenderError};

/// A compiled run key: a string template over a run's parameters (`params`, with
/// `parameters` and `input` as aliases) and its cause (`metadata`: `trigger`, `firing`,
/// `bucket` labels, `triggering_event`; empty for a run made by hand), e.g.
/// `{{ params.user_id }}` or `{{ metadata.bucket['prefect.resource.id'] }}`.
#[derive(Clone)]
pub struct KeyTemplate {
    source: Arc<str>,
    /// The source with checked operators (see `rewrite.rs`), parsed once.
    template: TextTemplate,
    path: String,
}

impl KeyTemplate {
    /// Parses the template once (rendering never parses again); a syntax error is added to
    /// `problems` at `path` and None returned.
    pub fn compile(source: &str, path: &JsonPath, problems: &mut Problems) -> Option<KeyTemplate> {
        match TextTemplate::compile(source) {
            Ok((template, names)) => {
                let unknown = names::check(&names, &names::KEY);
                for message in &unknown {
                    problems.add_rule(path, format!("unknown name in key template: {message}"));
                }
                unknown.is_empty().then(|| KeyTemplate { source: Arc::from(source), template, path: path.to_string() })
            }
            Err(e) => {
                problems.add_rule(path, format!("invalid key template: {}", describe(&e, source)));
                None
            }
        }
    }

    /// Renders the key for these parameters. An empty key is an error: it would put every run
    /// whose parameter is missing into one group by accident.
    /// `cause` is the firing that made the run (None for a run made by hand).
    pub fn render(
        &self,
        parameters: &serde_json::Map<String, Json>,
        cause: Option<&RunCause>,
    ) -> Result<String, RenderError> {
        let params = Value::from_serialize(parameters);
        let metadata = match cause {
            Some(cause) => Value::from_serialize(cause),
            None => Value::from_serialize(serde_json::Map::new()),
        };
        let ctx = Value::from_iter([
            ("params", params.clone()),
            ("parameters", params.clone()),
            ("input", params),
            ("metadata", metadata),
        ]);
        budget::start();
        let key = self
            .template
            .render(ctx)
            .map_err(|e| RenderError { path: self.path.clone(), message: describe(&e, &self.source) })?;
        if key.trim().is_empty() {
            return Err(RenderError {
                path: self.path.clone(),
                message: format!("`{}` rendered an empty key for these parameters", self.source),
            });
        }
        Ok(key)
    }
}

impl fmt::Debug for KeyTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyTemplate").field(&&*self.source).finish()
    }
}
