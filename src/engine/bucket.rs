//! Per-bucket state machines of event triggers: Prefect's `reactive_evaluation`, `evaluate`
//! and `proactive_evaluation`, decision by decision (SEMANTICS.md pins each).

use compact_str::CompactString;
use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::time::{Span, Timestamp};
use crate::model::trigger::Posture;
use crate::model::Event;

use super::compile::EventNode;

/// How far back the first bucket of a key reaches (`PRECEDING_EVENT_LOOKBACK`).
pub const PRECEDING_EVENT_LOOKBACK: Span = Span::minutes(15);
/// How long after its end a bucket survives the sweep (`PREFECT_EVENTS_EXPIRED_BUCKET_BUFFER`).
pub const EXPIRED_BUCKET_BUFFER: Span = Span::seconds(60);

/// The values of a trigger's sorted `for_each` labels, packed into one small string: the
/// value itself for one label, `len:value` pairs for several. Values up to 24 bytes live
/// inline, without a heap allocation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BucketKey(CompactString);

impl BucketKey {
    /// The key of `event` for these (sorted) labels; a missing label counts as `""`.
    pub fn of(for_each: &[String], event: &Event) -> BucketKey {
        match for_each {
            [] => BucketKey::default(),
            [label] => BucketKey(CompactString::from(event.find_resource_label(label).unwrap_or(""))),
            labels => {
                let mut key = CompactString::default();
                for label in labels {
                    let value = event.find_resource_label(label).unwrap_or("");
                    key.push_str(&value.len().to_string());
                    key.push(':');
                    key.push_str(value);
                }
                BucketKey(key)
            }
        }
    }

    /// The packed key, as a page cursor carries it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key a cursor carried.
    pub fn from_packed(packed: &str) -> BucketKey {
        BucketKey(CompactString::from(packed))
    }

    /// The key made of these values (one per sorted label).
    pub fn from_values(values: &[&str]) -> BucketKey {
        match values {
            [] => BucketKey::default(),
            [one] => BucketKey(CompactString::from(*one)),
            many => {
                let mut key = CompactString::default();
                for v in many {
                    key.push_str(&v.len().to_string());
                    key.push(':');
                    key.push_str(v);
                }
                BucketKey(key)
            }
        }
    }

    /// The values again, one per label.
    pub fn values(&self, label_count: usize) -> Vec<&str> {
        match label_count {
            0 => Vec::new(),
            1 => vec![self.0.as_str()],
            _ => {
                let mut out = Vec::with_capacity(label_count);
                let mut rest = self.0.as_str();
                while let Some((len, tail)) = rest.split_once(':') {
                    let len: usize = len.parse().unwrap_or(0);
                    let len = len.min(tail.len());
                    out.push(&tail[..len]);
                    rest = &tail[len..];
                }
                out
            }
        }
    }

    /// `{label: value}` for the given sorted labels.
    pub fn labels(&self, for_each: &[String]) -> std::collections::BTreeMap<String, String> {
        for_each.iter().cloned().zip(self.values(for_each.len()).into_iter().map(str::to_owned)).collect()
    }
}

/// One window of one key: Prefect's `automation_bucket` row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Window start (inclusive).
    pub start: Timestamp,
    /// Window end (exclusive).
    pub end: Timestamp,
    /// The last event the bucket saw (a proactive firing carries it).
    pub last_event: Option<Uuid>,
    /// Events counted in the window (starts at -1 when an event both opens and counts).
    pub count: i32,
}

impl Bucket {
    /// True once the periodic sweep would have deleted it (`end <= now - 60 s`). The sweep is
    /// applied lazily, whenever a bucket is read, which is equivalent because a bucket only
    /// changes when it is read.
    pub fn swept_at(&self, clock: Timestamp) -> bool {
        self.end.plus(EXPIRED_BUCKET_BUFFER) <= clock
    }
}

/// A firing of an event trigger, before it is reported or passed to a composite parent.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketFiring {
    /// The bucket that fired.
    pub key: BucketKey,
    /// Reactive: the event's `occurred`; proactive: the window's end.
    pub at: Timestamp,
    /// The triggering event, or the bucket's last event.
    pub event: Option<Uuid>,
}

/// The longest bucket key, in bytes: the `for_each` label values of one event, together. An
/// event whose key is longer is not counted for that trigger (reported in `Step::overflows`
/// with this reason), so that keys cannot hold the engine's memory hostage.
pub const MAX_BUCKET_KEY_BYTES: usize = 1024;
/// What one bucket costs besides its key's bytes, as counted against a trigger's byte cap
/// (`EngineConfig::max_bucket_bytes_per_trigger`).
pub const BUCKET_OVERHEAD_BYTES: usize = 64;

/// The buckets of one event trigger, by key.
#[derive(Clone, Debug, Default)]
pub struct Buckets {
    map: HashMap<BucketKey, Bucket>,
    /// The buckets' cost: [`BUCKET_OVERHEAD_BYTES`] plus the key's length, each.
    bytes: usize,
    /// Keys written or removed since [`Buckets::take_changed`], when changes are tracked
    /// (`EngineConfig::track_changes`); `None` otherwise.
    changed: Option<hashbrown::HashSet<BucketKey>>,
    /// Buckets opened by events since these were made (a key that had no bucket got one);
    /// restored buckets are not counted.
    opened: u64,
}

/// What a bucket of `key` counts against a trigger's byte cap.
pub fn bucket_cost(key: &BucketKey) -> usize {
    BUCKET_OVERHEAD_BYTES + key.0.len()
}

impl Buckets {
    /// No buckets; with `track`, every change is remembered for [`Buckets::take_changed`].
    pub fn new(track: bool) -> Buckets {
        Buckets { changed: track.then(Default::default), ..Buckets::default() }
    }

    /// The same, with room for `n` buckets (restoring them without growing step by step).
    pub fn with_capacity(track: bool, n: usize) -> Buckets {
        Buckets { map: HashMap::with_capacity(n), ..Buckets::new(track) }
    }

    fn mark(&mut self, key: &BucketKey) {
        if let Some(changed) = &mut self.changed {
            if !changed.contains(key) {
                changed.insert(key.clone());
            }
        }
    }

    /// The buckets changed since the last call, each with its bucket now (`None`: removed).
    pub fn take_changed(&mut self, out: &mut Vec<(BucketKey, Option<Bucket>)>) {
        let Some(changed) = &mut self.changed else { return };
        out.extend(changed.drain().map(|k| {
            let now = self.map.get(&k).copied();
            (k, now)
        }));
    }

    /// Marks every bucket changed (so that all of them are written again).
    pub fn mark_all(&mut self) {
        if let Some(changed) = &mut self.changed {
            changed.extend(self.map.keys().cloned());
        }
    }

    /// The live bucket of `key`, dropping it if the sweep would have.
    pub fn live(&mut self, key: &BucketKey, clock: Timestamp) -> Option<Bucket> {
        let bucket = *self.map.get(key)?;
        if bucket.swept_at(clock) {
            self.remove(key);
            return None;
        }
        Some(bucket)
    }

    /// The bytes the buckets count against the trigger's byte cap.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn store(&mut self, key: &BucketKey, bucket: Bucket) {
        self.mark(key);
        if self.map.insert(key.clone(), bucket).is_none() {
            self.bytes += bucket_cost(key);
            self.opened += 1;
        }
    }

    /// Buckets opened by events since these were made (not counting restored ones).
    pub fn opened(&self) -> u64 {
        self.opened
    }

    fn retain(&mut self, mut keep: impl FnMut(&Bucket) -> bool) {
        let mut freed = 0;
        let changed = &mut self.changed;
        self.map.retain(|k, b| {
            let kept = keep(b);
            if !kept {
                freed += bucket_cost(k);
                if let Some(changed) = changed.as_mut() {
                    changed.insert(k.clone());
                }
            }
            kept
        });
        self.bytes -= freed;
    }

    /// Prefect's `ensure_bucket`: creates the bucket if there is none, otherwise leaves its
    /// window and count alone and only records `last_event`.
    fn ensure(&mut self, key: &BucketKey, clock: Timestamp, fresh: Bucket) -> Bucket {
        match self.live(key, clock) {
            Some(mut existing) => {
                if fresh.last_event.is_some() {
                    existing.last_event = fresh.last_event;
                    self.store(key, existing);
                }
                existing
            }
            None => {
                self.store(key, fresh);
                fresh
            }
        }
    }

    fn put(&mut self, key: &BucketKey, bucket: Bucket) {
        self.store(key, bucket);
    }

    fn remove(&mut self, key: &BucketKey) {
        if self.map.remove(key).is_some() {
            self.bytes -= bucket_cost(key);
            self.mark(key);
        }
    }

    /// Number of stored buckets (including ones the sweep has not reached yet).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Drops every bucket the sweep would have deleted by `clock`.
    pub fn sweep(&mut self, clock: Timestamp) {
        self.retain(|b| !b.swept_at(clock));
    }

    /// The live bucket of `key`, if any (a lookup; nothing is dropped).
    pub fn get(&self, key: &BucketKey, clock: Timestamp) -> Option<Bucket> {
        self.map.get(key).copied().filter(|b| !b.swept_at(clock))
    }

    /// Every stored bucket, in no particular order (the sweep may not have reached some).
    pub fn iter(&self) -> impl Iterator<Item = (&BucketKey, &Bucket)> {
        self.map.iter()
    }

    /// Live buckets sorted by window start, then key (the order Prefect reads them in).
    pub fn sorted(&self, clock: Timestamp) -> Vec<(BucketKey, Bucket)> {
        let mut all: Vec<(BucketKey, Bucket)> =
            self.map.iter().filter(|(_, b)| !b.swept_at(clock)).map(|(k, b)| (k.clone(), *b)).collect();
        all.sort_by(|a, b| (a.1.start, &a.0).cmp(&(b.1.start, &b.0)));
        all
    }

    /// Restores a bucket from exported or persisted state (not a change: it is stored
    /// already).
    pub fn insert(&mut self, key: BucketKey, bucket: Bucket) {
        if self.map.insert(key.clone(), bucket).is_none() {
            self.bytes += bucket_cost(&key);
        }
    }
}

/// Prefect's `reactive_evaluation` for one interested trigger: opens or finds the event's
/// bucket and evaluates it. `clock` is the processing time; the evaluation's "now" is the
/// event's `occurred`.
/// `key` is [`BucketKey::of`] the event for the trigger's `for_each`.
pub fn on_event(
    node: &EventNode,
    buckets: &mut Buckets,
    clock: Timestamp,
    event: &Event,
    key: BucketKey,
    out: &mut Vec<BucketFiring>,
) {
    let name = event.event.as_str();
    let occurred = event.occurred;
    if node.stateless {
        if node.expects(name) {
            out.push(BucketFiring { key, at: occurred, event: Some(event.id) });
        }
        return;
    }
    let mut bucket = None;
    if !node.after.is_empty() && node.starts_after(name) {
        // An event that both opens and counts starts at -1 so it can spend itself.
        let count = if node.expects(name) { -1 } else { 0 };
        let fresh = Bucket { start: occurred, end: occurred.plus(node.within), last_event: Some(event.id), count };
        bucket = Some(buckets.ensure(&key, clock, fresh));
    }
    if bucket.is_none() && node.after.is_empty() && node.expects(name) {
        // A key's first bucket reaches back so that late events still count.
        let fresh = Bucket {
            start: occurred.minus(PRECEDING_EVENT_LOOKBACK),
            end: occurred.plus(node.within),
            last_event: Some(event.id),
            count: 0,
        };
        bucket = Some(buckets.ensure(&key, clock, fresh));
    }
    if !node.expects(name) {
        return;
    }
    let Some(bucket) = bucket.or_else(|| buckets.live(&key, clock)) else { return };
    evaluate(node, buckets, &key, bucket, occurred, Some(event), out);
}

/// Prefect's `proactive_evaluation` of one trigger at `as_of`; returns when it is due again.
pub fn proactive_pass(
    node: &EventNode,
    buckets: &mut Buckets,
    as_of: Timestamp,
    out: &mut Vec<BucketFiring>,
) -> Timestamp {
    let mut run_again_at = as_of.plus(node.within);
    if node.for_each.is_empty() {
        let fresh = Bucket { start: as_of, end: as_of.plus(node.within), last_event: None, count: 0 };
        buckets.ensure(&BucketKey::default(), as_of, fresh);
    }
    // Satisfied windows are deleted, not renewed.
    let threshold = node.threshold;
    buckets.retain(|b| !b.swept_at(as_of) && i64::from(b.count) < threshold);
    for (key, bucket) in buckets.sorted(as_of) {
        if let Some(next) = evaluate(node, buckets, &key, bucket, as_of, None, out) {
            if as_of < next.end && next.end < run_again_at {
                run_again_at = next.end;
            }
        }
    }
    run_again_at
}

/// Prefect's `evaluate`: spends the event's count, fires when ready, and sets up the next
/// bucket. `bucket` is the stored bucket of `key`; the function leaves the map holding what
/// Prefect's table would hold, and returns what Prefect's `evaluate` returns.
pub fn evaluate(
    node: &EventNode,
    buckets: &mut Buckets,
    key: &BucketKey,
    mut bucket: Bucket,
    now: Timestamp,
    event: Option<&Event>,
    out: &mut Vec<BucketFiring>,
) -> Option<Bucket> {
    let mut count = i32::from(event.is_some());
    if now < bucket.start {
        // A late event, or one inside the cooldown after a firing: ignored.
        return Some(bucket);
    }
    if count > 0 && (node.immediate() || (bucket.start <= now && now < bucket.end)) {
        bucket.count = bucket.count.saturating_add(count);
        if let Some(e) = event {
            bucket.last_event = Some(e.id);
        }
        buckets.put(key, bucket);
        count = 0;
    }
    let reactive = node.posture == Posture::Reactive;
    let ready_to_fire = reactive || bucket.end <= now;
    let meets_threshold = node.meets_threshold(i64::from(bucket.count));
    if ready_to_fire && meets_threshold {
        out.push(BucketFiring {
            key: key.clone(),
            at: if reactive { now } else { bucket.end },
            event: event.map(|e| e.id).or(bucket.last_event),
        });
        buckets.remove(key);
    } else if now < bucket.end {
        // The heartbeat case: an event in both `after` and `expect` restarts the window.
        if let Some(e) = event {
            if !reactive && !meets_threshold && node.starts_after(&e.event) && node.expects(&e.event) {
                let fresh =
                    Bucket { start: e.occurred, end: e.occurred.plus(node.within), last_event: Some(e.id), count: 0 };
                buckets.put(key, fresh);
                return Some(fresh);
            }
        }
        return Some(bucket);
    }
    if !node.after.is_empty() {
        // Only another `after` event opens the next window.
        buckets.remove(key);
        return None;
    }
    if node.within == Span::ZERO {
        // The (unfired) bucket stays as it is: its count carries over to the next event.
        return None;
    }
    let start = bucket.end.max(now);
    let end = start.plus(node.within);
    if reactive && count > 0 && start < end {
        // The event came after the window: it opens the next one and is counted there (an
        // empty window, cut short by the end of time, cannot count it: no recursion then).
        let fresh = Bucket { start, end, last_event: None, count: 0 };
        buckets.put(key, fresh);
        evaluate(node, buckets, key, fresh, now, event, out)
    } else {
        let fresh = Bucket { start, end, last_event: None, count };
        buckets.put(key, fresh);
        Some(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_do_not_collide() {
        let a = BucketKey::from_values(&["a:1", "b"]);
        let b = BucketKey::from_values(&["a", "1:b"]);
        assert_ne!(a, b);
        assert_eq!(a.values(2), ["a:1", "b"]);
        assert_eq!(b.values(2), ["a", "1:b"]);
        assert_eq!(BucketKey::from_values(&["", ""]).values(2), ["", ""]);
        assert_eq!(BucketKey::from_values(&["solo"]).values(1), ["solo"]);
    }

    #[test]
    fn bucket_stays_small() {
        assert!(std::mem::size_of::<Bucket>() <= 40, "{}", std::mem::size_of::<Bucket>());
        assert_eq!(std::mem::size_of::<BucketKey>(), 24);
    }
}
