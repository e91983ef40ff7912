//! Causal ordering and deduplication: Prefect's `ordering/memory.py`.
//!
//! An event id is processed once (for as long as the engine keeps seen ids: tripwire's
//! deviation 1). An event whose `follows` leader has not been processed is parked until the
//! leader is, or until 15 minutes of processing time have passed.

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

/// A parked follower.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    /// The event.
    pub event: Arc<Event>,
    /// When it arrived (processing time).
    pub received: Timestamp,
}

/// Seen ids and parked followers.
#[derive(Clone, Debug, Default)]
pub struct Ordering {
    seen: HashSet<Uuid>,
    /// Seen ids by the time they were seen, kept only when seen ids expire.
    seen_order: VecDeque<(Timestamp, Uuid)>,
    seen_window: Option<Span>,
    waiting: HashMap<Uuid, Waiting>,
    followers: HashMap<Uuid, Vec<Uuid>>,
    due: BTreeSet<(Timestamp, Uuid)>,
}

impl Ordering {
    /// An empty ordering whose seen ids expire after `seen_window` (never when `None`).
    pub fn new(seen_window: Option<Span>) -> Ordering {
        Ordering { seen_window, ..Ordering::default() }
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

    /// Parks a follower (a duplicate delivery replaces the parked copy and its arrival time).
    pub fn park(&mut self, event: Arc<Event>, received: Timestamp) {
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

    /// The followers waiting on `leader`, in `occurred` order (they stay parked until
    /// [`Ordering::forget`]).
    pub fn followers_of(&self, leader: &Uuid) -> Vec<Waiting> {
        if self.followers.is_empty() {
            // The common case: nothing is parked.
            return Vec::new();
        }
        let mut out: Vec<Waiting> =
            self.followers.get(leader).into_iter().flatten().filter_map(|id| self.waiting.get(id).cloned()).collect();
        out.sort_by_key(|w| w.event.occurred);
        out
    }

    /// Prefect's `forget_follower`.
    pub fn forget(&mut self, event: &Event) {
        let Some(leader) = event.follows else { return };
        if let Some(w) = self.waiting.remove(&event.id) {
            self.due.remove(&(w.received.plus(FOLLOWER_WAIT), event.id));
        }
        if let Some(list) = self.followers.get_mut(&leader) {
            list.retain(|id| *id != event.id);
            if list.is_empty() {
                self.followers.remove(&leader);
            }
        }
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
            if let Some(w) = self.waiting.remove(&id) {
                if let Some(leader) = w.event.follows {
                    if let Some(list) = self.followers.get_mut(&leader) {
                        list.retain(|f| *f != id);
                        if list.is_empty() {
                            self.followers.remove(&leader);
                        }
                    }
                }
                lost.push(w);
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
        let mut out: Vec<Waiting> = self.waiting.values().cloned().collect();
        out.sort_by_key(|w| (w.received, w.event.id));
        out
    }

    /// Number of parked followers.
    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }
}
