//! The event a run's state change emits, so that triggers can chain on run outcomes (as on
//! Prefect's `prefect.flow-run.Completed`).

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::event::{Event, Resource};
use super::limits;
use super::problems::{JsonPath, Problems};
use super::run::{Run, RunState, RUN_EVENT_PREFIX};
use super::time::Timestamp;

impl Run {
    /// The event of this run entering its current state from `previous`: named
    /// `tripwire.run.<state>`, the run is the resource, its deployment (and the trigger that
    /// caused it) are related resources, and the payload holds the run's id, state, attempt,
    /// parameters and outcome.
    pub fn state_event(&self, previous: Option<RunState>, id: Uuid, now: Timestamp) -> Event {
        let resource = Resource::new(format!("{RUN_EVENT_PREFIX}{}", self.id))
            .with("prefect.resource.name", self.deployment.clone())
            .with("tripwire.deployment", self.deployment.clone())
            .with("tripwire.run.state", format!("{:?}", self.state));
        let mut event = Event::new(id, now, format!("{RUN_EVENT_PREFIX}{}", self.state.as_lower()), resource);
        event.related.push(
            Resource::new(format!("tripwire.deployment.{}", self.deployment))
                .with("prefect.resource.role", "deployment")
                .with("prefect.resource.name", self.deployment.clone()),
        );
        if let Some(cause) = &self.cause {
            event.related.push(
                Resource::new(format!("tripwire.trigger.{}", cause.trigger))
                    .with("prefect.resource.role", "trigger")
                    .with("prefect.resource.name", cause.trigger.clone()),
            );
        }
        if let Some(parent) = &self.parent {
            event.related.push(
                Resource::new(format!("{RUN_EVENT_PREFIX}{}", parent.run))
                    .with("prefect.resource.role", "parent")
                    .with("tripwire.child.key", parent.key.clone()),
            );
        }
        let mut payload = Map::new();
        payload.insert("run_id".into(), json!(self.id));
        payload.insert("deployment".into(), json!(self.deployment));
        payload.insert("state".into(), json!(self.state));
        payload.insert("previous_state".into(), json!(previous));
        payload.insert("attempt".into(), json!(self.attempt));
        payload.insert("parameters".into(), Value::Object(self.parameters.clone()));
        for (key, value) in [
            ("output", self.output.clone()),
            ("error", self.error.clone().map(Value::String)),
            ("reason", self.reason.map(|r| json!(r))),
            ("worker", self.worker.clone().map(Value::String)),
            ("concurrency_key", self.concurrency_key.clone().map(Value::String)),
            ("waiting", self.waiting.clone().map(Value::String)),
        ] {
            if let Some(value) = value {
                payload.insert(key.into(), value);
            }
        }
        // Parameters and output were held to their limits when accepted, so the event fits;
        // should it not (a limit changed), they are left out rather than storing an event that
        // cannot be read back.
        let mut problems = Problems::default();
        limits::check_object(&payload, &JsonPath::root().key("payload"), limits::MAX_EVENT_BYTES / 2, &mut problems);
        if !problems.is_empty() {
            for key in ["parameters", "output"] {
                if payload.contains_key(key) {
                    payload.insert(key.into(), json!(format!("[left out: {problems}]")));
                }
            }
        }
        event.payload = payload;
        event
    }
}
