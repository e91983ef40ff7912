//! Building trigger definitions in Rust: `EventTrigger::new().expect(..).within(..)` and the
//! like, each producing what the same JSON would parse to.

use std::time::Duration;

use serde_json::Value;

use super::{
    CompoundTrigger, EventTrigger, LabelValues, Posture, RelatedSpec, Require, ResourceSpec, SequenceTrigger, Trigger,
    TriggerDefinition,
};
use crate::model::fields::insert_sorted;
use crate::model::time::Span;

impl ResourceSpec {
    /// A spec that matches every resource until labels are added.
    pub fn new() -> ResourceSpec {
        ResourceSpec::default()
    }

    /// Requires `label` to match `pattern` (a glob; a leading `!` negates).
    pub fn label(mut self, label: impl Into<String>, pattern: impl Into<String>) -> ResourceSpec {
        self.0.insert(label.into(), LabelValues::One(pattern.into()));
        self
    }
}

impl EventTrigger {
    /// A reactive trigger with Prefect's defaults: every event, threshold 1, within 0.
    ///
    /// A proactive trigger fires when an expected event does *not* arrive: here, for each order
    /// (`for_each` the resource id), when fewer than one `order.paid` follows its `order.created`
    /// within an hour. The builder gives the same trigger as the JSON:
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use serde_json::json;
    /// use tripwire::model::{EventTrigger, JsonPath, Posture, Trigger, TriggerDefinition};
    ///
    /// let unpaid = EventTrigger::new()
    ///     .after("order.created")
    ///     .expect("order.paid")
    ///     .for_each("prefect.resource.id")
    ///     .threshold(1)
    ///     .within(Duration::from_secs(60 * 60))
    ///     .proactive();
    /// assert_eq!(unpaid.posture, Posture::Proactive);
    ///
    /// let json = json!({"id": "unpaid", "trigger": {
    ///     "posture": "Proactive", "after": ["order.created"], "expect": ["order.paid"],
    ///     "for_each": ["prefect.resource.id"], "threshold": 1, "within": 3600
    /// }});
    /// let definition = TriggerDefinition::from_json(&json, &JsonPath::root()).expect("a valid definition");
    /// assert_eq!(definition.trigger, Trigger::Event(unpaid.clone()));
    /// assert_eq!(definition, TriggerDefinition::new("unpaid", unpaid));
    /// ```
    pub fn new() -> EventTrigger {
        EventTrigger::default()
    }

    /// Adds an expected event name (glob).
    pub fn expect(mut self, name: impl Into<String>) -> Self {
        insert_sorted(&mut self.expect, name.into());
        self
    }

    /// Adds an event name (glob) that opens a window.
    pub fn after(mut self, name: impl Into<String>) -> Self {
        insert_sorted(&mut self.after, name.into());
        self
    }

    /// Adds a `for_each` label.
    pub fn for_each(mut self, label: impl Into<String>) -> Self {
        insert_sorted(&mut self.for_each, label.into());
        self
    }

    /// Requires the primary resource's `label` to match `pattern` (one more value is OR-ed).
    pub fn match_label(mut self, label: impl Into<String>, pattern: impl Into<String>) -> Self {
        let pattern = pattern.into();
        let entry = self.match_resource.0.entry(label.into()).or_insert(LabelValues::Many(Vec::new()));
        match entry {
            LabelValues::Many(v) => v.push(pattern),
            LabelValues::One(one) => *entry = LabelValues::Many(vec![std::mem::take(one), pattern]),
        }
        self
    }

    /// Adds a related-resource spec that some related resource must match.
    pub fn match_related(mut self, spec: ResourceSpec) -> Self {
        self.match_related = match self.match_related {
            RelatedSpec::One(s) if s.0.is_empty() => RelatedSpec::Many(vec![spec]),
            RelatedSpec::One(s) => RelatedSpec::Many(vec![s, spec]),
            RelatedSpec::Many(mut v) => {
                v.push(spec);
                RelatedSpec::Many(v)
            }
        };
        self
    }

    /// Sets the threshold.
    pub fn threshold(mut self, n: i64) -> Self {
        self.threshold = n;
        self
    }

    /// Sets the window (`within`): the period over which the events must occur, as in Prefect.
    /// Kept to the microsecond; written as seconds in JSON.
    pub fn within(mut self, window: Duration) -> Self {
        self.within = Span::from(window);
        self
    }

    /// Makes the trigger proactive (fires on absence); `within` below 10 s becomes 10 s.
    pub fn proactive(mut self) -> Self {
        self.posture = Posture::Proactive;
        self
    }

    /// Sets a filter expression over `event` / `payload`.
    pub fn filter(mut self, expression: impl Into<String>) -> Self {
        self.filter = Some(expression.into());
        self
    }
}

impl CompoundTrigger {
    /// A compound trigger over `triggers` that requires `require` of them.
    pub fn new(triggers: Vec<Trigger>, require: Require) -> Self {
        CompoundTrigger { triggers, require, within: None }
    }

    /// Sets `within`: child firings older than this no longer count. Kept to the
    /// microsecond; written as seconds in JSON.
    pub fn within(mut self, window: Duration) -> Self {
        self.within = Some(Span::from(window));
        self
    }
}

impl SequenceTrigger {
    /// A sequence of `triggers`.
    pub fn new(triggers: Vec<Trigger>) -> Self {
        SequenceTrigger { triggers, within: None }
    }

    /// Sets `within`: child firings older than this no longer count. Kept to the
    /// microsecond; written as seconds in JSON.
    pub fn within(mut self, window: Duration) -> Self {
        self.within = Some(Span::from(window));
        self
    }
}

impl From<EventTrigger> for Trigger {
    fn from(t: EventTrigger) -> Self {
        Trigger::Event(t)
    }
}

impl From<CompoundTrigger> for Trigger {
    fn from(t: CompoundTrigger) -> Self {
        Trigger::Compound(t)
    }
}

impl From<SequenceTrigger> for Trigger {
    fn from(t: SequenceTrigger) -> Self {
        Trigger::Sequence(t)
    }
}

impl TriggerDefinition {
    /// A definition with this id and trigger, enabled, without deployment or parameters.
    pub fn new(id: impl Into<String>, trigger: impl Into<Trigger>) -> Self {
        TriggerDefinition {
            id: id.into(),
            name: None,
            description: None,
            enabled: true,
            trigger: trigger.into(),
            deployment: None,
            parameters: None,
        }
    }

    /// Sets the run parameters (templates).
    pub fn parameters(mut self, parameters: Value) -> Self {
        self.parameters = Some(parameters);
        self
    }

    /// Sets the deployment a firing runs.
    pub fn deployment(mut self, name: impl Into<String>) -> Self {
        self.deployment = Some(name.into());
        self
    }

    /// Sets the name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}
