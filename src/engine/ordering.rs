//! Causal ordering and deduplication: Prefect's `ordering/memory.py`.
//!
//! An event id is processed once (for as long as the engine keeps seen ids: tripwire's
//! deviation 1). An event whose `follows` leader has not been processed is parked until the
//! leader is, or until 15 minutes of processing time have passed, or (tripwire's bound) until
//! [`MAX_PARKED_FOLLOWERS`] others are parked after it. Parking, release and loss each take
//! `O(log n)` in the number parked.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::time::{Span, Timestamp};
use crate::model::Event;

/// How long a follower waits for its leader (`PRECEDING_EVENT_LOOKBACK`).
pub const FOLLOWER_WAIT: Span = Span::minutes(15);
/// How deep chains of followers are processed (`MAX_DEPTH_OF_PRECEDING_EVENT`).
pub const MAX_FOLLOWER_DEPTH: usize = 20;
/// How many followers may be parked at once, engine-wide (default 10,000). When one more
/// follower would have to wait, the one that has waited longest is released as lost at once,
/// exactly as it would be after its [`FOLLOWER_WAIT`]: it is evaluated without its leader (its
/// firings come in the step of the event that displaced it) and a leader arriving later no
/// longer finds it. Nothing accepted is dropped, and parked followers take bounded memory.
pub const MAX_PARKED_FOLLOWERS: usize = 10_000;

/// A parked follower.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    /// The event.
    pub event: Arc<Event>,
    /// When it arrived (processing time).
    pub received: Timestamp,
}

/// A parked follower and the rank of its first parking (ties of `occurred` are released in
/// the order they were parked).
#[derive(Clone, Debug)]
struct Parked {
    waiting: Waiting,
    rank: u64,
}

/// A follower's place among its leader's followers: `occurred`, then parking rank.
type FollowerKey = (Timestamp, u64, Uuid);

/// Seen ids and parked followers.
#[derive(Clone, Debug, Default)]
pub struct Ordering {
    seen: HashSet<Uuid>,
    /// Seen ids by the time they were seen, kept only when seen ids expire.
    seen_order: VecDeque<(Timestamp, Uuid)>,
    seen_window: Option<Span>,
    waiting: HashMap<Uuid, Parked>,
    /// Parked followers by leader, in release order.
    followers: HashMap<Uuid, BTreeSet<FollowerKey>>,
    /// Parked followers by the time they are lost (which orders them by arrival).
    due: BTreeSet<(Timestamp, Uuid)>,
    next_rank: u64,
    /// Followers parked or unparked since [`Ordering::take_changed`], when tracked.
    changed: Option<HashSet<Uuid>>,
}

impl Ordering {
    /// An empty ordering whose seen ids expire after `seen_window` (never when `None`).
    pub fn new(seen_window: Option<Span>) -> Ordering {
        Ordering { seen_window, ..Ordering::default() }
    }

    /// The same, remembering which followers are parked or unparked when `track` is set.
    pub fn tracked(seen_window: Option<Span>, track: bool) -> Ordering {
        Ordering { changed: track.then(HashSet::new), ..Ordering::new(seen_window) }
    }

    /// The followers parked or unparked since the last call: each id with when it arrived if
    /// it is parked now, `None` if it is not.
    pub fn take_changed(&mut self) -> Vec<(Uuid, Option<Timestamp>)> {
        let Some(changed) = &mut self.changed else { return Vec::new() };
        let mut out: Vec<(Uuid, Option<Timestamp>)> =
            changed.drain().map(|id| (id, self.waiting.get(&id).map(|p| p.waiting.received))).collect();
        out.sort_unstable_by_key(|(id, _)| *id);
        out
    }

    /// Marks every parked follower changed.
    pub fn mark_all_changed(&mut self) {
        if let Some(changed) = &mut self.changed {
            changed.extend(self.waiting.keys().copied());
        }
    }

    /// Is this id parked?
    pub fn is_parked(&self, id: &Uuid) -> bool {
        self.waiting.contains_key(id)
    }

    /// Has this id been processed?
    pub fn has_been_seen(&self, id: &Uuid) -> bool {
        self.seen.contains(id)
    }

    /// Records that an id was processed at `clock`; false when it had been already.
    pub fn record_seen(&mut self, id: Uuid, clock: Timestamp) -> bool {
        let new = self.seen.insert(id);
        if new && self.seen_window.is_some() {
            self.seen_order.push_back((clock, id));
        }
        new
    }

    /// Forgets seen ids older than the window.
    pub fn expire_seen(&mut self, clock: Timestamp) {
        let Some(window) = self.seen_window else { return };
        while let Some(&(t, id)) = self.seen_order.front() {
            if t.plus(window) > clock {
                break;
            }
            self.seen_order.pop_front();
            self.seen.remove(&id);
        }
    }

    /// Prefect's `wait_for_leader`: must this event wait?
    pub fn must_wait(&self, event: &Event, received: Timestamp, clock: Timestamp) -> bool {
        match event.follows {
            None => false,
            Some(leader) if leader == event.id => false,
            Some(leader) => clock.since(received) < FOLLOWER_WAIT && !self.seen.contains(&leader),
        }
    }

    /// Would parking this id take one more place (it is not parked already) when
    /// [`MAX_PARKED_FOLLOWERS`] are parked?
    pub fn is_full_for(&self, id: &Uuid) -> bool {
        self.waiting.len() >= MAX_PARKED_FOLLOWERS && !self.waiting.contains_key(id)
    }

    /// Parks a follower (a duplicate delivery replaces the parked copy and its arrival time,
    /// and keeps its place among followers that occurred at the same time). `O(log n)`.
    ///
    /// This does not enforce [`MAX_PARKED_FOLLOWERS`]: the engine makes room first with
    /// [`Ordering::is_full_for`] and [`Ordering::take_longest_waiting`].
    pub fn park(&mut self, event: Arc<Event>, received: Timestamp) {
        let Some(leader) = event.follows else { return };
        let id = event.id;
        let rank = match self.remove(&id) {
            Some(old) => old.rank,
            None => {
                self.next_rank += 1;
                self.next_rank
            }
        };
        self.followers.entry(leader).or_default().insert((event.occurred, rank, id));
        self.due.insert((received.plus(FOLLOWER_WAIT), id));
        self.waiting.insert(id, Parked { waiting: Waiting { event, received }, rank });
        if let Some(changed) = &mut self.changed {
            changed.insert(id);
        }
    }

    /// Unparks a follower by id.
    fn remove(&mut self, id: &Uuid) -> Option<Parked> {
        let parked = self.waiting.remove(id)?;
        if let Some(changed) = &mut self.changed {
            changed.insert(*id);
        }
        let w = &parked.waiting;
        self.due.remove(&(w.received.plus(FOLLOWER_WAIT), *id));
        if let Some(leader) = w.event.follows {
            if let Some(set) = self.followers.get_mut(&leader) {
                set.remove(&(w.event.occurred, parked.rank, *id));
                if set.is_empty() {
                    self.followers.remove(&leader);
                }
            }
        }
        Some(parked)
    }

    /// The followers waiting on `leader`, in `occurred` order, ties in the order they were
    /// parked (they stay parked until [`Ordering::forget`]).
    pub fn followers_of(&self, leader: &Uuid) -> Vec<Waiting> {
        if self.followers.is_empty() {
            // The common case: nothing is parked.
            return Vec::new();
        }
        self.followers
            .get(leader)
            .into_iter()
            .flatten()
            .filter_map(|(_, _, id)| self.waiting.get(id).map(|p| p.waiting.clone()))
            .collect()
    }

    /// Prefect's `forget_follower`. `O(log n)`.
    pub fn forget(&mut self, event: &Event) {
        if event.follows.is_some() {
            self.remove(&event.id);
        }
    }

    /// Unparks the follower that has waited longest (the next one due to be lost), to make
    /// room for another under [`MAX_PARKED_FOLLOWERS`].
    pub fn take_longest_waiting(&mut self) -> Option<Waiting> {
        while let Some((_, id)) = self.due.pop_first() {
            if let Some(p) = self.remove(&id) {
                return Some(p.waiting);
            }
        }
        None
    }

    /// When the next lost follower is due.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.due.first().map(|(t, _)| *t)
    }

    /// Prefect's `get_lost_followers`: removes and returns, in `occurred` order, the
    /// followers that have waited 15 minutes by `clock`.
    pub fn take_lost(&mut self, clock: Timestamp) -> Vec<Waiting> {
        let mut lost = Vec::new();
        while let Some(&(t, id)) = self.due.first() {
            if t > clock {
                break;
            }
            self.due.pop_first();
            if let Some(p) = self.remove(&id) {
                lost.push(p.waiting);
            }
        }
        lost.sort_by_key(|w| w.event.occurred);
        lost
    }

    /// Seen ids (for export), oldest first when they expire.
    pub fn export_seen(&self) -> Vec<(Uuid, Option<Timestamp>)> {
        if self.seen_window.is_some() {
            self.seen_order.iter().map(|(t, id)| (*id, Some(*t))).collect()
        } else {
            let mut ids: Vec<Uuid> = self.seen.iter().copied().collect();
            ids.sort();
            ids.into_iter().map(|id| (id, None)).collect()
        }
    }

    /// Parked followers (for export), by arrival.
    pub fn export_waiting(&self) -> Vec<Waiting> {
        let mut out: Vec<Waiting> = self.waiting.values().map(|p| p.waiting.clone()).collect();
        out.sort_by_key(|w| (w.received, w.event.id));
        out
    }

    /// Number of parked followers.
    #[cfg(test)]
    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resource;
    use proptest::prelude::*;

    /// The former implementation (a list per leader, in first-parking order), the oracle.
    #[derive(Default)]
    struct ListModel {
        waiting: HashMap<Uuid, Waiting>,
        followers: HashMap<Uuid, Vec<Uuid>>,
        due: BTreeSet<(Timestamp, Uuid)>,
    }

    impl ListModel {
        fn park(&mut self, event: Arc<Event>, received: Timestamp) {
            let Some(leader) = event.follows else { return };
            let id = event.id;
            if let Some(old) = self.waiting.insert(id, Waiting { event, received }) {
                self.due.remove(&(old.received.plus(FOLLOWER_WAIT), id));
            }
            let list = self.followers.entry(leader).or_default();
            if !list.contains(&id) {
                list.push(id);
            }
            self.due.insert((received.plus(FOLLOWER_WAIT), id));
        }

        fn followers_of(&self, leader: &Uuid) -> Vec<Waiting> {
            let mut out: Vec<Waiting> = self
                .followers
                .get(leader)
                .into_iter()
                .flatten()
                .filter_map(|id| self.waiting.get(id).cloned())
                .collect();
            out.sort_by_key(|w| w.event.occurred);
            out
        }

        fn forget(&mut self, event: &Event) {
            let Some(leader) = event.follows else { return };
            if let Some(w) = self.waiting.remove(&event.id) {
                self.due.remove(&(w.received.plus(FOLLOWER_WAIT), event.id));
            }
            if let Some(list) = self.followers.get_mut(&leader) {
                list.retain(|id| *id != event.id);
            }
        }

        fn take_lost(&mut self, clock: Timestamp) -> Vec<Waiting> {
            let mut lost = Vec::new();
            while let Some(&(t, id)) = self.due.first() {
                if t > clock {
                    break;
                }
                self.due.pop_first();
                if let Some(w) = self.waiting.remove(&id) {
                    if let Some(list) = w.event.follows.and_then(|l| self.followers.get_mut(&l)) {
                        list.retain(|f| *f != id);
                    }
                    lost.push(w);
                }
            }
            lost.sort_by_key(|w| w.event.occurred);
            lost
        }

        fn export_waiting(&self) -> Vec<Waiting> {
            let mut out: Vec<Waiting> = self.waiting.values().cloned().collect();
            out.sort_by_key(|w| (w.received, w.event.id));
            out
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Park follower `id` (its leader is `id % 3`) occurring at `occurred` seconds.
        Park {
            id: u8,
            occurred: i64,
        },
        Forget {
            id: u8,
        },
        /// Advance the clock by this many minutes and take the lost followers.
        TakeLost {
            minutes: i64,
        },
        FollowersOf {
            leader: u8,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..12, 0i64..4).prop_map(|(id, occurred)| Op::Park { id, occurred }),
            1 => (0u8..12).prop_map(|id| Op::Forget { id }),
            1 => (0i64..10).prop_map(|minutes| Op::TakeLost { minutes }),
            2 => (0u8..3).prop_map(|leader| Op::FollowersOf { leader }),
        ]
    }

    fn follower(id: u8, occurred: i64) -> Arc<Event> {
        let mut e = Event::new(
            Uuid::from_u128(100 + u128::from(id)),
            Timestamp::from_micros(occurred * 1_000_000),
            "e",
            Resource::new("x"),
        );
        e.follows = Some(Uuid::from_u128(u128::from(id % 3)));
        Arc::new(e)
    }

    fn ids(ws: &[Waiting]) -> Vec<(Uuid, Timestamp, Timestamp)> {
        ws.iter().map(|w| (w.event.id, w.event.occurred, w.received)).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Release and loss orders, ties of `occurred` and duplicate parkings included, are
        /// those of the former list-based implementation.
        #[test]
        fn orders_like_the_list_implementation(ops in prop::collection::vec(op(), 0..60)) {
            let (mut new, mut old) = (Ordering::new(None), ListModel::default());
            let mut clock = Timestamp::from_micros(0);
            for op in ops {
                match op {
                    Op::Park { id, occurred } => {
                        clock = clock.plus(Span::seconds(1));
                        new.park(follower(id, occurred), clock);
                        old.park(follower(id, occurred), clock);
                    }
                    Op::Forget { id } => {
                        new.forget(&follower(id, 0));
                        old.forget(&follower(id, 0));
                    }
                    Op::TakeLost { minutes } => {
                        clock = clock.plus(Span::minutes(minutes));
                        prop_assert_eq!(ids(&new.take_lost(clock)), ids(&old.take_lost(clock)));
                    }
                    Op::FollowersOf { leader } => {
                        let leader = Uuid::from_u128(u128::from(leader));
                        prop_assert_eq!(ids(&new.followers_of(&leader)), ids(&old.followers_of(&leader)));
                    }
                }
                prop_assert_eq!(ids(&new.export_waiting()), ids(&old.export_waiting()));
                prop_assert_eq!(new.next_due(), old.due.first().map(|(t, _)| *t));
            }
        }
    }

    #[test]
    fn the_longest_waiting_follower_is_taken_first() {
        let mut o = Ordering::new(None);
        o.park(follower(5, 0), Timestamp::from_micros(2));
        o.park(follower(4, 9), Timestamp::from_micros(1));
        o.park(follower(3, 1), Timestamp::from_micros(2));
        let taken: Vec<Uuid> = std::iter::from_fn(|| o.take_longest_waiting()).map(|w| w.event.id).collect();
        assert_eq!(taken, [104, 103, 105].map(Uuid::from_u128), "by arrival, ties by id");
        assert_eq!(o.waiting_len(), 0);
        assert!(o.followers_of(&Uuid::from_u128(1)).is_empty() && o.next_due().is_none());
    }
}
