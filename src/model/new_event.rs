//! An event as a producer sends it: [`Event`] without what the receiver fills in.

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{Event, Resource, Timestamp};

/// An event to send, built with [`NewEvent::new`] and its builder methods. Unlike [`Event`],
/// `id` and `occurred` may be left out: the receiver then gives the event a fresh id and its
/// time of receipt.
///
/// It serialises to exactly the JSON that `POST /api/events` accepts (Prefect's event, plus
/// tripwire's `scope` and `additional_metadata`), leaving out what is not set.
///
/// ```
/// use serde_json::json;
/// use tripwire::model::{NewEvent, Resource};
///
/// let event = NewEvent::new("payment.failed", Resource::new("payment.7"))
///     .payload(json!({"amount": 250, "currency": "EUR"}))
///     .related(Resource::new("customer.42").with("prefect.resource.role", "customer"))
///     .scope("eu");
/// assert_eq!(
///     serde_json::to_value(&event).unwrap(),
///     json!({"event": "payment.failed", "resource": {"prefect.resource.id": "payment.7"},
///            "related": [{"prefect.resource.id": "customer.42", "prefect.resource.role": "customer"}],
///            "payload": {"amount": 250, "currency": "EUR"}, "scope": "eu"})
/// );
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// Identifier; events are deduplicated by it. `None`: the receiver picks one.
    pub id: Option<Uuid>,
    /// When it happened. `None`: the receiver's time of receipt.
    pub occurred: Option<Timestamp>,
    /// Its name, e.g. `order.created`.
    pub event: String,
    /// The resource it concerns (must carry `prefect.resource.id`).
    pub resource: Resource,
    /// Other resources involved, each with a `prefect.resource.role`.
    pub related: Vec<Resource>,
    /// Free-form data.
    pub payload: Map<String, Value>,
    /// An event that must be processed before this one.
    pub follows: Option<Uuid>,
    /// Hatchet's push `scope`: with one, a deployment's single-key triggers run it only
    /// through that deployment's scope filters for the scope.
    pub scope: Option<String>,
    /// Hatchet's `additional_metadata`: free-form data that scope filters read.
    pub additional_metadata: Option<Map<String, Value>>,
    /// Why the event cannot be sent (a payload or metadata that is not a JSON object), as
    /// [`NewEvent::check`] reports it.
    pub(crate) problem: Option<String>,
}

impl NewEvent {
    /// An event named `name` about `resource`, with the id and time left to the receiver.
    pub fn new(name: impl Into<String>, resource: Resource) -> NewEvent {
        NewEvent {
            id: None,
            occurred: None,
            event: name.into(),
            resource,
            related: Vec::new(),
            payload: Map::new(),
            follows: None,
            scope: None,
            additional_metadata: None,
            problem: None,
        }
    }

    /// Sets the id (resending the same id is deduplicated by the receiver).
    pub fn id(mut self, id: Uuid) -> NewEvent {
        self.id = Some(id);
        self
    }

    /// Sets when it happened.
    pub fn occurred(mut self, at: Timestamp) -> NewEvent {
        self.occurred = Some(at);
        self
    }

    /// Adds a related resource (it needs a `prefect.resource.role` label).
    pub fn related(mut self, resource: Resource) -> NewEvent {
        self.related.push(resource);
        self
    }

    /// Sets the payload: anything that serialises to a JSON object (a `json!({..})`, a map, a
    /// struct deriving `Serialize`); `null` (e.g. `()`) means no payload.
    ///
    /// Anything else (a number, an array, a type whose serialisation fails) is not dropped:
    /// the builder stays chainable, and sending the event fails with an error naming
    /// `payload` (see [`NewEvent::check`]).
    pub fn payload(mut self, payload: impl Serialize) -> NewEvent {
        match object("payload", &payload) {
            Ok(map) => self.payload = map.unwrap_or_default(),
            Err(problem) => self.note(problem),
        }
        self
    }

    /// Sets the event this one follows.
    pub fn follows(mut self, id: Uuid) -> NewEvent {
        self.follows = Some(id);
        self
    }

    /// Sets Hatchet's push scope (a non-empty string).
    pub fn scope(mut self, scope: impl Into<String>) -> NewEvent {
        self.scope = Some(scope.into());
        self
    }

    /// Sets Hatchet's `additional_metadata`: like [`NewEvent::payload`], anything that
    /// serialises to a JSON object (`null` clears it); anything else fails at sending.
    pub fn metadata(mut self, metadata: impl Serialize) -> NewEvent {
        match object("additional_metadata", &metadata) {
            Ok(map) => self.additional_metadata = map,
            Err(problem) => self.note(problem),
        }
        self
    }

    /// `Err(why)` when the event cannot be sent: its payload or metadata did not serialise
    /// to a JSON object. Both clients check this before sending (the message names the field),
    /// and serialising such an event fails with the same message.
    pub fn check(&self) -> Result<(), String> {
        match &self.problem {
            Some(problem) => Err(problem.clone()),
            None => Ok(()),
        }
    }

    fn note(&mut self, problem: String) {
        // The first problem is the one to fix first; later ones are usually its echo.
        self.problem.get_or_insert(problem);
    }
}

/// `value` as a JSON object (`None` for `null`), or why it is not one.
fn object(field: &str, value: &impl Serialize) -> Result<Option<Map<String, Value>>, String> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(Value::Null) => Ok(None),
        Ok(other) => Err(format!("the event's `{field}` must serialise to a JSON object, got {}", kind_of(&other))),
        Err(e) => Err(format!("the event's `{field}` does not serialise to JSON: {e}")),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The wire shape: Prefect's event fields, then tripwire's extensions, each only when set.
#[derive(Serialize)]
struct Wire<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    occurred: Option<Timestamp>,
    event: &'a str,
    resource: &'a Resource,
    #[serde(skip_serializing_if = "<[Resource]>::is_empty")]
    related: &'a [Resource],
    #[serde(skip_serializing_if = "Map::is_empty")]
    payload: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    follows: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_metadata: Option<&'a Map<String, Value>>,
}

impl Serialize for NewEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let Some(problem) = &self.problem {
            return Err(serde::ser::Error::custom(problem));
        }
        Wire {
            id: self.id,
            occurred: self.occurred,
            event: &self.event,
            resource: &self.resource,
            related: &self.related,
            payload: &self.payload,
            follows: self.follows,
            scope: self.scope.as_deref(),
            additional_metadata: self.additional_metadata.as_ref(),
        }
        .serialize(s)
    }
}

impl From<Event> for NewEvent {
    fn from(e: Event) -> NewEvent {
        NewEvent {
            id: Some(e.id),
            occurred: Some(e.occurred),
            event: e.event,
            resource: e.resource,
            related: e.related,
            payload: e.payload,
            follows: e.follows,
            scope: e.scope,
            additional_metadata: e.additional_metadata,
            problem: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::{EventDefaults, JsonPath};

    /// Reads `value` as the ingest edge does.
    fn ingest(value: &Value) -> Result<Event, crate::model::Problems> {
        let mut ids = || Uuid::from_u128(99);
        Event::from_json(
            value,
            &JsonPath::root(),
            Some(EventDefaults { occurred: Timestamp::default(), new_id: &mut ids }),
        )
    }

    #[test]
    fn every_field_it_sends_is_read_back_by_ingest() {
        let at = Timestamp::parse("2026-01-02T03:04:05Z").unwrap();
        let event = NewEvent::new("order.paid", Resource::new("order.1"))
            .id(Uuid::from_u128(1))
            .occurred(at)
            .related(Resource::new("customer.9").with("prefect.resource.role", "customer"))
            .payload(json!({"amount": 120, "items": [1, 2]}))
            .follows(Uuid::from_u128(2))
            .scope("tenant-a")
            .metadata(json!({"source": "web"}));
        let value = serde_json::to_value(&event).unwrap();
        let read = ingest(&value).unwrap();
        assert_eq!(NewEvent::from(read), event);

        // What is not set is not sent, and ingest fills in the id and time.
        let bare = serde_json::to_value(NewEvent::new("ping", Resource::new("r"))).unwrap();
        assert_eq!(bare, json!({"event": "ping", "resource": {"prefect.resource.id": "r"}}));
        let read = ingest(&bare).unwrap();
        assert_eq!((read.id, read.payload.len(), read.scope), (Uuid::from_u128(99), 0, None));
    }

    #[test]
    fn a_payload_that_is_not_an_object_fails_at_sending_naming_the_field() {
        for (payload, kind) in [(json!([1, 2]), "an array"), (json!(7), "a number"), (json!("x"), "a string")] {
            let event = NewEvent::new("a", Resource::new("r")).payload(payload);
            let why = event.check().unwrap_err();
            assert!(why.contains("`payload`") && why.contains(kind), "{why}");
            let refused = serde_json::to_value(&event).unwrap_err().to_string();
            assert!(refused.contains("`payload` must serialise to a JSON object"), "{refused}");
        }
        let why = NewEvent::new("a", Resource::new("r")).metadata(vec![1u8]).check().unwrap_err();
        assert!(why.contains("`additional_metadata`"), "{why}");
        // A map whose keys are not strings does not serialise to JSON at all.
        let odd: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let why = NewEvent::new("a", Resource::new("r")).payload(odd).check().unwrap_err();
        assert!(why.contains("`payload` does not serialise"), "{why}");

        // Ordinary payloads still work, `()` means none, and a later good payload does not
        // hide an earlier bad one.
        #[derive(Serialize)]
        struct Paid {
            amount: u32,
        }
        let ok = NewEvent::new("a", Resource::new("r")).payload(Paid { amount: 5 });
        assert_eq!((ok.check(), ok.payload.get("amount")), (Ok(()), Some(&json!(5))));
        assert!(NewEvent::new("a", Resource::new("r")).payload(()).payload.is_empty());
        let mixed = NewEvent::new("a", Resource::new("r")).payload(1).payload(json!({"b": 1}));
        assert!(mixed.check().is_err());
    }
}
