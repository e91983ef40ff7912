//! Firings: the engine's record that a trigger fired.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::time::Timestamp;

/// One firing of a trigger definition, as `replay` prints it and the server stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Firing {
    /// Derived from the engine's state, so a replay reproduces it.
    pub id: Uuid,
    /// The definition's id (a compound or sequence fires under its own id).
    pub trigger: String,
    /// `{for_each label: value}`; `{}` without `for_each` and for compound/sequence firings.
    pub bucket: BTreeMap<String, String>,
    /// Reactive: the triggering event's `occurred`; proactive: the end of the window that
    /// closed; compound/sequence: that of the child firing that completed it.
    pub at: Timestamp,
    /// The processing time (engine clock) at which it fired.
    pub triggered: Timestamp,
    /// The event the firing carries, if any.
    pub triggering_event: Option<Uuid>,
    /// Every event behind the firing, the children's included, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggering_events: Vec<Uuid>,
    /// The deployment to run, when the definition names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// The rendered parameters (absent when the definition has none; null when rendering
    /// failed, see `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// The scope filter that let a scoped event through (Hatchet-style filters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Uuid>,
    /// Why the parameters could not be rendered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
