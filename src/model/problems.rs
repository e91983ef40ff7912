//! Validation problems: each names the JSON path of the field at fault and what to fix.
//!
//! Validation collects every problem in a document instead of stopping at the first, so a
//! user fixing a trigger file sees the whole list at once.

use std::fmt;

use serde::Serialize;

/// One thing wrong with an input, at a JSON path such as `$[2].trigger.within`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Where: a JSON path from the document root (`$`).
    pub path: String,
    /// What is wrong and what is expected instead.
    pub message: String,
    /// A rule the document's JSON Schema cannot state (a compound trigger requiring more
    /// children than it has, a template reading a name no firing has, a size in bytes): the
    /// HTTP API answers 422 when every problem is one, 400 when the document breaks its schema.
    #[serde(skip)]
    pub rule: bool,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one document.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(transparent)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl Problems {
    /// Records a problem at `path`.
    pub fn add(&mut self, path: &JsonPath, message: impl Into<String>) {
        self.0.push(Problem { path: path.to_string(), message: message.into(), rule: false });
    }

    /// Records a problem at `path` that breaks a rule the schema cannot state (see
    /// [`Problem::rule`]).
    pub fn add_rule(&mut self, path: &JsonPath, message: impl Into<String>) {
        self.0.push(Problem { path: path.to_string(), message: message.into(), rule: true });
    }

    /// True when there are problems and each breaks a rule the schema cannot state: the
    /// document has the documented shape, and is refused for what it says.
    pub fn only_rules(&self) -> bool {
        !self.0.is_empty() && self.0.iter().all(|p| p.rule)
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was recorded, otherwise every problem.
    pub fn into_result<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// Moves every problem of `other` into `self`.
    pub fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }

    /// Every problem with its message prefixed by what it is about, such as
    /// ``trigger `order-paid`: ``, for lists whose paths (`$[3]`) do not name the item.
    pub fn about(mut self, subject: &str) -> Problems {
        for p in &mut self.0 {
            p.message = format!("{subject}: {}", p.message);
        }
        self
    }
}

/// A JSON path under construction, e.g. `$[0].trigger.triggers[1].within`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonPath(String);

impl JsonPath {
    /// The document root, `$`.
    pub fn root() -> JsonPath {
        JsonPath("$".to_owned())
    }

    /// The path of member `name` of this object.
    pub fn key(&self, name: &str) -> JsonPath {
        let simple = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if simple {
            JsonPath(format!("{}.{name}", self.0))
        } else {
            JsonPath(format!("{}[{}]", self.0, serde_json::Value::from(name)))
        }
    }

    /// The path of item `i` of this array.
    pub fn index(&self, i: usize) -> JsonPath {
        JsonPath(format!("{}[{i}]", self.0))
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The JSON type name of a value, for messages such as "expected a string, got a number".
pub fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_quote_dotted_keys() {
        let p = JsonPath::root().index(2).key("trigger").key("prefect.resource.id");
        assert_eq!(p.to_string(), "$[2].trigger[\"prefect.resource.id\"]");
    }
}
