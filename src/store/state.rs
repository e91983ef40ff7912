//! The engine's state, persisted as it changes: each batch writes what the engine reports
//! changed ([`StateChanges`]) in the same transaction as the events that changed it, so that
//! what is stored is always the state after the last committed batch. A restart reads it back
//! ([`Store::engine_state`]); nothing is replayed, and nothing stops the writer to snapshot.
//!
//! Layout (keys partition-ready: a trigger's rows are contiguous, and a bucket's key names
//! its trigger, event trigger and `for_each` values):
//! - `buckets`: `[trigger id length: u32 BE][trigger id][node: u32 BE][bucket key]` → a
//!   bucket in the fixed binary layout of [`encode_bucket`] (20 or 36 bytes);
//! - `trigger_state`: trigger id → its fingerprint and node state besides buckets (proactive
//!   schedule, composite children), JSON (written only when that changes);
//! - `parked`: follower event id → when it arrived (the event is in `events`);
//! - in `meta`: `engine` (clock and firing count, 16 bytes) and `install_order` (JSON).

use std::sync::Arc;

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};
use uuid::Uuid;

use crate::engine::state::NodeExport;
use crate::engine::{Bucket, BucketKey, EngineState, InstallOrder, StateChanges, TriggerState, Waiting};
use crate::model::time::Timestamp;
use crate::model::Event;

use super::{decode, encode, Store, StoreError, Tx, EVENTS, EVENT_IDS, META};

pub(super) const BUCKETS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("buckets");
pub(super) const TRIGGER_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("trigger_state");
pub(super) const PARKED: TableDefinition<u128, i64> = TableDefinition::new("parked");
const ENGINE_KEY: &str = "engine";
const ORDER_KEY: &str = "install_order";

/// The start of every bucket row of one trigger.
fn trigger_prefix(trigger: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + trigger.len() + 4 + 24);
    key.extend_from_slice(&(trigger.len() as u32).to_be_bytes());
    key.extend_from_slice(trigger.as_bytes());
    key
}

/// A bucket row's key.
fn bucket_row(prefix: &[u8], node: u32, key: &BucketKey) -> Vec<u8> {
    let mut row = Vec::with_capacity(prefix.len() + 4 + key.as_str().len());
    row.extend_from_slice(prefix);
    row.extend_from_slice(&node.to_be_bytes());
    row.extend_from_slice(key.as_str().as_bytes());
    row
}

/// A bucket row's key, read back: (trigger id, node, bucket key).
fn parse_row(row: &[u8]) -> Option<(&str, u32, BucketKey)> {
    let len = u32::from_be_bytes(row.get(..4)?.try_into().ok()?) as usize;
    let trigger = std::str::from_utf8(row.get(4..4 + len)?).ok()?;
    let rest = row.get(4 + len..)?;
    let node = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let key = std::str::from_utf8(&rest[4..]).ok()?;
    Some((trigger, node, BucketKey::from_packed(key)))
}

/// A bucket as stored: start and end (microseconds, i64 LE), count (i32 LE), then the last
/// event's id (16 bytes) when there is one.
pub(super) fn encode_bucket(bucket: &Bucket) -> ([u8; 36], usize) {
    let mut out = [0u8; 36];
    out[..8].copy_from_slice(&bucket.start.as_micros().to_le_bytes());
    out[8..16].copy_from_slice(&bucket.end.as_micros().to_le_bytes());
    out[16..20].copy_from_slice(&bucket.count.to_le_bytes());
    match bucket.last_event {
        Some(id) => {
            out[20..].copy_from_slice(id.as_bytes());
            (out, 36)
        }
        None => (out, 20),
    }
}

pub(super) fn decode_bucket(bytes: &[u8]) -> Result<Bucket, StoreError> {
    let corrupt = || StoreError::Corrupt { what: "bucket", message: format!("{} bytes", bytes.len()) };
    if bytes.len() != 20 && bytes.len() != 36 {
        return Err(corrupt());
    }
    let i64_at = |at: usize| i64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
    Ok(Bucket {
        start: Timestamp::from_micros(i64_at(0)),
        end: Timestamp::from_micros(i64_at(8)),
        count: i32::from_le_bytes(bytes[16..20].try_into().map_err(|_| corrupt())?),
        last_event: (bytes.len() == 36).then(|| Uuid::from_slice(&bytes[20..]).unwrap_or_default()),
    })
}

fn encode_engine(clock: Option<Timestamp>, firing_seq: u64) -> [u8; 17] {
    let mut out = [0u8; 17];
    if let Some(c) = clock {
        out[0] = 1;
        out[1..9].copy_from_slice(&c.as_micros().to_le_bytes());
    }
    out[9..].copy_from_slice(&firing_seq.to_le_bytes());
    out
}

fn decode_engine(bytes: &[u8]) -> Result<(Option<Timestamp>, u64), StoreError> {
    let corrupt = || StoreError::Corrupt { what: "engine clock", message: format!("{} bytes", bytes.len()) };
    if bytes.len() != 17 {
        return Err(corrupt());
    }
    let clock = (bytes[0] == 1)
        .then(|| bytes[1..9].try_into().map(|b| Timestamp::from_micros(i64::from_le_bytes(b))))
        .transpose()
        .map_err(|_| corrupt())?;
    let seq = u64::from_le_bytes(bytes[9..].try_into().map_err(|_| corrupt())?);
    Ok((clock, seq))
}

impl Tx {
    /// Writes what changed in the engine. Resets first (every row of those triggers goes),
    /// then node state, buckets and parked followers.
    ///
    /// A transaction that wrote nothing else and has no state change writes nothing here
    /// either (an idle tick is not committed): the clock it would record only moved over time
    /// in which nothing happened, and a restart's first tick advances over the same time again.
    pub fn write_state(&self, changes: &StateChanges) -> Result<(), StoreError> {
        if !self.written.get() && changes.is_empty() {
            return Ok(());
        }
        let mut meta = self.writable(META)?;
        meta.insert(ENGINE_KEY, encode_engine(changes.clock, changes.firing_seq).as_slice())?;
        if let Some(order) = &changes.order {
            meta.insert(ORDER_KEY, encode(order).as_slice())?;
        }
        drop(meta);
        if !changes.reset.is_empty() || !changes.triggers.is_empty() {
            let mut nodes = self.writable(TRIGGER_STATE)?;
            let mut buckets = self.writable(BUCKETS)?;
            for id in &changes.reset {
                nodes.remove(id.as_str())?;
                let prefix = trigger_prefix(id);
                let doomed: Vec<Vec<u8>> = buckets
                    .range(prefix.as_slice()..)?
                    .map(|item| item.map(|(k, _)| k.value().to_vec()))
                    .take_while(|k| k.as_ref().map_or(true, |k| k.starts_with(&prefix)))
                    .collect::<Result<_, _>>()?;
                for row in doomed {
                    buckets.remove(row.as_slice())?;
                }
            }
            for t in &changes.triggers {
                nodes.insert(t.id.as_str(), encode(t).as_slice())?;
            }
        }
        if !changes.buckets.is_empty() {
            let mut buckets = self.writable(BUCKETS)?;
            for group in &changes.buckets {
                let prefix = trigger_prefix(&group.trigger);
                for (key, bucket) in &group.changes {
                    let row = bucket_row(&prefix, group.node, key);
                    match bucket {
                        Some(b) => {
                            let (bytes, len) = encode_bucket(b);
                            buckets.insert(row.as_slice(), &bytes[..len])?;
                        }
                        None => {
                            buckets.remove(row.as_slice())?;
                        }
                    }
                }
            }
        }
        if !changes.parked.is_empty() {
            let mut parked = self.writable(PARKED)?;
            for (id, received) in &changes.parked {
                match received {
                    Some(at) => parked.insert(id.as_u128(), at.as_micros())?,
                    None => parked.remove(id.as_u128())?,
                };
            }
        }
        Ok(())
    }
}

impl Store {
    /// The engine state as last committed, with the order definitions and filters were
    /// installed in; `None` when none was ever written. Bucket rows of a trigger with no node
    /// state are left out (the engine then reports them reset, and they are removed).
    pub fn engine_state(&self) -> Result<Option<(InstallOrder, EngineState)>, StoreError> {
        let rx = self.read()?;
        let meta = rx.open_table(META)?;
        let Some(engine) = meta.get(ENGINE_KEY)? else { return Ok(None) };
        let (clock, firing_seq) = decode_engine(engine.value())?;
        let order: InstallOrder =
            meta.get(ORDER_KEY)?.map(|v| decode("install order", v.value())).transpose()?.unwrap_or_default();
        let mut triggers: Vec<TriggerState> = Vec::new();
        let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for item in rx.open_table(TRIGGER_STATE)?.iter()? {
            let (k, v) = item?;
            at.insert(k.value().to_owned(), triggers.len());
            triggers.push(decode("trigger state", v.value())?);
        }
        let mut orphans: Vec<String> = Vec::new();
        let mut last: Option<(String, Option<usize>)> = None;
        let table = rx.open_table(BUCKETS)?;
        // A node's rows are contiguous: its list is given room for every row left when it
        // starts (the pages it does not use are never touched), so it never grows by copying.
        let mut left = table.len()? as usize;
        let mut open: Option<(usize, u32)> = None;
        for item in table.iter()? {
            left = left.saturating_sub(1);
            let (k, v) = item?;
            let row = k.value();
            let (trigger, node, key) = parse_row(row)
                .ok_or_else(|| StoreError::Corrupt { what: "bucket key", message: format!("{row:?}") })?;
            let index = match &last {
                Some((id, index)) if id == trigger => *index,
                _ => {
                    let index = at.get(trigger).copied();
                    if index.is_none() {
                        orphans.push(trigger.to_owned());
                    }
                    last = Some((trigger.to_owned(), index));
                    index
                }
            };
            let Some(index) = index else { continue };
            if open != Some((index, node)) {
                // The previous node's rows are all read: give back the room it did not use.
                if let Some((i, n)) = open {
                    if let Some(NodeExport::Event { buckets, .. }) = triggers[i].nodes.get_mut(n as usize) {
                        buckets.shrink_to_fit();
                    }
                }
                open = Some((index, node));
            }
            if let Some(NodeExport::Event { buckets, .. }) = triggers[index].nodes.get_mut(node as usize) {
                if buckets.capacity() == 0 {
                    buckets.reserve_exact(left + 1);
                }
                buckets.push((key, decode_bucket(v.value())?));
            }
        }
        // Orphaned rows still need removing: an empty state of that id marks them void.
        for id in orphans {
            triggers.push(TriggerState { id, fingerprint: String::new(), nodes: Vec::new() });
        }
        let ids = rx.open_table(EVENT_IDS)?;
        let events = rx.open_table(EVENTS)?;
        let mut waiting = Vec::new();
        for item in rx.open_table(PARKED)?.iter()? {
            let (k, v) = item?;
            let id = Uuid::from_u128(k.value());
            let event: Option<Event> = super::event_by_id(&ids, &events, &id)?;
            match event {
                Some(event) => {
                    waiting.push(Waiting { event: Arc::new(event), received: Timestamp::from_micros(v.value()) })
                }
                None => tracing::warn!(%id, "a parked follower's event is gone (pruned); it is dropped"),
            }
        }
        waiting.sort_by_key(|w| (w.received, w.event.id));
        let state = EngineState {
            version: crate::engine::state::STATE_VERSION,
            clock,
            firing_seq,
            triggers,
            seen: Vec::new(),
            waiting,
        };
        Ok(Some((order, state)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::BucketChanges;

    fn bucket(n: i64, last: Option<u128>) -> Bucket {
        Bucket {
            start: Timestamp::from_micros(n),
            end: Timestamp::from_micros(n / 2 - 1),
            count: -1,
            last_event: last.map(Uuid::from_u128),
        }
    }

    fn trigger(id: &str, fingerprint: &str) -> TriggerState {
        TriggerState {
            id: id.into(),
            fingerprint: fingerprint.into(),
            nodes: vec![NodeExport::Event { buckets: vec![], next_pass: Some(Timestamp::from_micros(5)) }],
        }
    }

    #[test]
    fn buckets_round_trip_in_their_binary_layout() {
        for b in [bucket(i64::MIN, None), bucket(i64::MAX, Some(u128::MAX)), bucket(0, Some(7))] {
            let (bytes, len) = encode_bucket(&b);
            assert_eq!(decode_bucket(&bytes[..len]).unwrap(), b);
        }
        assert!(matches!(decode_bucket(&[0; 21]), Err(StoreError::Corrupt { what: "bucket", .. })));
        let key = BucketKey::from_values(&["a", "b:c"]);
        let row = bucket_row(&trigger_prefix("t:1"), 3, &key);
        assert_eq!(parse_row(&row), Some(("t:1", 3, key)));
        assert_eq!(parse_row(&row[..6]), None, "a truncated row does not parse");
    }

    /// What is written reads back; a reset drops every row of its trigger (and only its);
    /// bucket rows of a trigger without node state come back as a void state to remove.
    #[test]
    fn changes_write_and_read_back() {
        let dir = std::env::temp_dir().join(format!("tripwire-store-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.engine_state().unwrap(), None, "nothing written yet");
        // A batch that changed nothing but the clock (an idle tick) is not committed.
        let tx = store.begin().unwrap();
        let idle = StateChanges { clock: Some(Timestamp::from_micros(50)), ..StateChanges::default() };
        tx.write_state(&idle).unwrap();
        tx.commit().unwrap();
        assert_eq!(store.engine_state().unwrap(), None, "an idle tick writes nothing");
        let changes = |t: &str, keys: &[(&str, Option<Bucket>)]| BucketChanges {
            trigger: t.into(),
            node: 0,
            changes: keys.iter().map(|(k, b)| (BucketKey::from_values(&[k]), *b)).collect(),
        };
        let tx = store.begin().unwrap();
        tx.write_state(&StateChanges {
            clock: Some(Timestamp::from_micros(99)),
            firing_seq: 12,
            order: Some(InstallOrder { triggers: vec!["b".into(), "a".into()], filters: vec![Uuid::from_u128(3)] }),
            reset: vec![],
            triggers: vec![trigger("a", "fa"), trigger("ab", "fab")],
            buckets: vec![
                changes("a", &[("k1", Some(bucket(1, Some(1)))), ("k2", Some(bucket(2, None)))]),
                changes("ab", &[("k1", Some(bucket(3, None)))]),
                changes("orphan", &[("k", Some(bucket(4, None)))]),
            ],
            parked: vec![],
        })
        .unwrap();
        tx.commit().unwrap();
        let (order, state) = store.engine_state().unwrap().unwrap();
        assert_eq!(order.triggers, ["b", "a"]);
        assert_eq!((state.clock, state.firing_seq), (Some(Timestamp::from_micros(99)), 12));
        let buckets_of = |state: &EngineState, id: &str| -> Vec<(BucketKey, Bucket)> {
            let t = state.triggers.iter().find(|t| t.id == id).unwrap();
            match &t.nodes[..] {
                [NodeExport::Event { buckets, .. }] => buckets.clone(),
                _ => vec![],
            }
        };
        assert_eq!(buckets_of(&state, "a").len(), 2);
        assert_eq!(buckets_of(&state, "ab"), [(BucketKey::from_values(&["k1"]), bucket(3, None))]);
        let orphan = state.triggers.iter().find(|t| t.id == "orphan").unwrap();
        assert!(orphan.nodes.is_empty() && orphan.fingerprint.is_empty(), "a void state marks the orphan");

        // Remove one bucket; reset `a` (whose id starts `ab`'s: their rows stay apart).
        let tx = store.begin().unwrap();
        tx.write_state(&StateChanges {
            clock: Some(Timestamp::from_micros(100)),
            firing_seq: 13,
            reset: vec!["a".into(), "orphan".into()],
            buckets: vec![changes("ab", &[("k1", None), ("k9", Some(bucket(9, None)))])],
            ..StateChanges::default()
        })
        .unwrap();
        tx.commit().unwrap();
        let (order, state) = store.engine_state().unwrap().unwrap();
        assert_eq!(order.triggers, ["b", "a"], "the order stays when not written");
        assert!(state.triggers.iter().all(|t| t.id == "ab"), "{:?}", state.triggers);
        assert_eq!(buckets_of(&state, "ab"), [(BucketKey::from_values(&["k9"]), bucket(9, None))]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A parked follower's row goes when retention prunes its event (a restart could not read
    /// it back); until then it reads back with its event.
    #[test]
    fn a_parked_follower_reads_back_until_its_event_is_pruned() {
        use crate::model::Resource;
        use crate::store::PreparedEvent;
        let dir = std::env::temp_dir().join(format!("tripwire-store-parked-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        let t = Timestamp::from_micros(1_000_000);
        let mut follower = Event::new(Uuid::from_u128(7), t, "b", Resource::new("x"));
        follower.follows = Some(Uuid::from_u128(6));
        let tx = store.begin().unwrap();
        tx.put_event(&mut PreparedEvent::new(follower), t).unwrap();
        tx.write_state(&StateChanges { parked: vec![(Uuid::from_u128(7), Some(t))], ..StateChanges::default() })
            .unwrap();
        tx.commit().unwrap();
        let (_, state) = store.engine_state().unwrap().unwrap();
        assert_eq!(state.waiting.len(), 1);
        assert_eq!(state.waiting[0].event.id, Uuid::from_u128(7));
        let tx = store.begin().unwrap();
        assert_eq!(tx.prune_events(t.plus(crate::model::time::Span::seconds(1)), 10).unwrap(), 1);
        tx.commit().unwrap();
        let (_, state) = store.engine_state().unwrap().unwrap();
        assert!(state.waiting.is_empty());
        let rx = store.read().unwrap();
        assert!(rx.open_table(PARKED).unwrap().is_empty().unwrap(), "the row went with the event");
        drop(rx);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
