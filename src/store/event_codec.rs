//! Events as stored: a 25-byte header (a format tag, when the server received the event, its
//! id) and then the event's JSON without `received`. The JSON is written by
//! [`PreparedEvent::new`] on the request's thread, before the event reaches the single writer,
//! which only fills in `received` and inserts the bytes; pruning reads the header alone.
//! Events stored before the header existed (plain JSON, starting with `{`) still read.

use uuid::Uuid;

use crate::model::time::Timestamp;
use crate::model::Event;

use super::{decode, StoreError};

/// The format tag of a stored event with a header.
const TAG: u8 = 1;
/// Bytes before the JSON: tag, received (i64 LE microseconds), id.
const HEADER: usize = 1 + 8 + 16;

/// An event with its stored form written, but for when it is received.
#[derive(Clone, Debug)]
pub struct PreparedEvent {
    /// The event (its `received` is set when it is stored).
    pub event: Event,
    body: Vec<u8>,
}

impl PreparedEvent {
    /// Encodes `event` (whose `received` is ignored: the writer sets it).
    pub fn new(event: Event) -> PreparedEvent {
        let mut body = Vec::with_capacity(HEADER + 256);
        body.push(TAG);
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(event.id.as_bytes());
        let received = event.received;
        let mut bare = event;
        bare.received = None;
        // Our own types always serialise.
        let _ = serde_json::to_writer(&mut body, &bare);
        bare.received = received;
        PreparedEvent { event: bare, body }
    }

    /// Sets when the event was received, in the event and in its stored form.
    pub(super) fn receive(&mut self, at: Timestamp) -> &[u8] {
        self.event.received = Some(at);
        self.body[1..9].copy_from_slice(&at.as_micros().to_le_bytes());
        &self.body
    }
}

/// The stored form of an event that has its `received` set.
#[cfg(test)]
fn encode_event(event: &Event) -> Vec<u8> {
    let mut prepared = PreparedEvent::new(event.clone());
    let at = event.received.unwrap_or(event.occurred);
    prepared.receive(at);
    prepared.body
}

/// An event read back.
pub(super) fn decode_event(bytes: &[u8]) -> Result<Event, StoreError> {
    match bytes.first() {
        Some(&TAG) if bytes.len() >= HEADER => {
            let mut event: Event = decode("event", &bytes[HEADER..])?;
            event.received = Some(received_at(bytes));
            Ok(event)
        }
        _ => decode("event", bytes),
    }
}

fn received_at(bytes: &[u8]) -> Timestamp {
    let mut micros = [0; 8];
    micros.copy_from_slice(&bytes[1..9]);
    Timestamp::from_micros(i64::from_le_bytes(micros))
}

/// When a stored event was received, and its id, read from the header alone when it has one.
pub(super) fn received_and_id(bytes: &[u8]) -> Result<(Timestamp, Uuid), StoreError> {
    match bytes.first() {
        Some(&TAG) if bytes.len() >= HEADER => {
            let id = Uuid::from_slice(&bytes[9..HEADER]).unwrap_or_default();
            Ok((received_at(bytes), id))
        }
        _ => {
            let event: Event = decode("event", bytes)?;
            Ok((event.received.unwrap_or(event.occurred), event.id))
        }
    }
}

/// Stored as before the header existed (for the tests that read old data).
#[cfg(test)]
pub(super) fn encode_legacy(event: &Event) -> Vec<u8> {
    super::encode(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resource;

    #[test]
    fn events_read_back_with_and_without_the_header() {
        let t = Timestamp::from_micros(1_700_000_000_000_000);
        let mut e = Event::new(Uuid::from_u128(9), t, "a", Resource::new("x"));
        e.payload.insert("n".into(), serde_json::json!(1));
        let mut prepared = PreparedEvent::new(e.clone());
        let at = t.plus(crate::model::time::Span::seconds(1));
        let bytes = prepared.receive(at).to_vec();
        e.received = Some(at);
        assert_eq!(prepared.event, e);
        assert_eq!(decode_event(&bytes).unwrap(), e);
        assert_eq!(received_and_id(&bytes).unwrap(), (at, e.id));
        assert_eq!(encode_event(&e), bytes);
        let old = encode_legacy(&e);
        assert_eq!(decode_event(&old).unwrap(), e);
        assert_eq!(received_and_id(&old).unwrap(), (at, e.id));
        assert!(decode_event(&[TAG, 0, 0]).is_err(), "a short value is corrupt, not a panic");
    }
}
