//! The workers heard from lately (`GET /api/workers`): what each serves, its slots, the runs it
//! holds, and when it was last heard from. Updated by the worker protocol's calls as they pass
//! through the service; kept in memory only (a worker appears again after a restart at its next
//! claim or heartbeat), at most [`MAX_WORKERS_SEEN`] of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use uuid::Uuid;

use crate::model::{ClaimRequest, LabelValue, Span, Timestamp, WorkerState, WorkerStatus, DEFAULT_LEASE_SECONDS};

/// Most workers remembered; past it, the one heard from longest ago is forgotten.
pub const MAX_WORKERS_SEEN: usize = 10_000;
/// A worker not heard from for this long is forgotten.
pub const FORGET_WORKER_AFTER: Span = Span::minutes(60);
/// Added to a worker's lease and claim wait before it counts as offline.
const GRACE: Span = Span::seconds(5);

#[derive(Debug)]
struct Seen {
    deployments: Vec<String>,
    labels: BTreeMap<String, LabelValue>,
    slots: Option<u32>,
    /// The runs it holds, with when each lease lapses.
    held: HashMap<Uuid, Timestamp>,
    first_seen: Timestamp,
    last_seen: Timestamp,
    last_claim: Option<Timestamp>,
    lease: Span,
    wait: Span,
}

impl Seen {
    /// How long after it was last heard from a worker still counts as online: its lease and
    /// its claim's wait, and a grace.
    fn patience(&self) -> Span {
        Span::micros(self.lease.as_micros() + self.wait.as_micros() + GRACE.as_micros())
    }
}

/// Another online worker, as a claim sees it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Peer {
    pub name: String,
    pub deployments: Vec<String>,
    pub labels: BTreeMap<String, LabelValue>,
    /// Whether it holds fewer runs than its slots (true when it does not say its slots).
    pub free: bool,
}

/// The registry. Every method takes the service clock's `now`.
#[derive(Debug, Default)]
pub(super) struct Workers {
    seen: Mutex<HashMap<String, Seen>>,
}

impl Workers {
    fn with<T>(&self, worker: &str, now: Timestamp, f: impl FnOnce(&mut Seen) -> T) -> T {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.contains_key(worker) && seen.len() >= MAX_WORKERS_SEEN {
            seen.retain(|_, w| now.since(w.last_seen) < FORGET_WORKER_AFTER);
            if seen.len() >= MAX_WORKERS_SEEN {
                let stalest = seen.iter().min_by_key(|(_, w)| w.last_seen).map(|(name, _)| name.clone());
                seen.remove(&stalest.expect("the registry is full, so not empty"));
            }
        }
        let entry = seen.entry(worker.to_owned()).or_insert_with(|| Seen {
            deployments: Vec::new(),
            labels: BTreeMap::new(),
            slots: None,
            held: HashMap::new(),
            first_seen: now,
            last_seen: now,
            last_claim: None,
            lease: Span::from_secs_f64(DEFAULT_LEASE_SECONDS).unwrap_or(Span::seconds(30)),
            wait: Span::ZERO,
        });
        entry.last_seen = entry.last_seen.max(now);
        f(entry)
    }

    /// A worker asks for runs.
    pub fn claiming(&self, request: &ClaimRequest, now: Timestamp) {
        self.with(&request.worker, now, |w| {
            w.deployments = request.deployments.clone();
            w.deployments.sort();
            w.deployments.dedup();
            w.slots = request.slots.or(w.slots);
            w.labels = request.labels.clone();
            w.last_claim = Some(now);
            w.lease = Span::from_secs_f64(request.lease_seconds).unwrap_or(w.lease);
            w.wait = Span::from_secs_f64(request.wait_seconds).unwrap_or(w.wait);
        });
    }

    /// A worker now holds a run, its lease lapsing at `lease_expires` (or the worker's lease
    /// from `now` when the run does not say).
    pub fn holds(&self, worker: &str, run: Uuid, lease_expires: Option<Timestamp>, now: Timestamp) {
        self.with(worker, now, |w| {
            let until = lease_expires.unwrap_or(now.plus(w.lease));
            w.held.insert(run, until);
        });
    }

    /// A worker was heard from about a run that it no longer holds (reported, cancelled, or
    /// refused). Only a worker already known is updated: a report alone does not make one.
    pub fn released(&self, worker: &str, run: Uuid, now: Timestamp) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = seen.get_mut(worker) {
            w.held.remove(&run);
            w.last_seen = w.last_seen.max(now);
        }
    }

    /// The other online workers serving any of `deployments`: what a claim weighs a worker's
    /// labels against (a better-fitting worker with a free slot is preferred).
    pub fn peers(&self, deployments: &[String], except: &str, now: Timestamp) -> Vec<Peer> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter()
            .filter(|(name, w)| {
                name.as_str() != except
                    && now.since(w.last_seen) <= w.patience()
                    && w.deployments.iter().any(|d| deployments.contains(d))
            })
            .map(|(name, w)| Peer {
                name: name.clone(),
                deployments: w.deployments.clone(),
                labels: w.labels.clone(),
                free: w
                    .slots
                    .is_none_or(|slots| w.held.values().filter(|until| **until > now).count() < slots as usize),
            })
            .collect()
    }

    /// Every worker remembered, online ones first, then by name.
    pub fn list(&self, now: Timestamp) -> Vec<WorkerStatus> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|_, w| now.since(w.last_seen) < FORGET_WORKER_AFTER);
        let mut list: Vec<WorkerStatus> = seen
            .iter_mut()
            .map(|(name, w)| {
                w.held.retain(|_, until| *until > now);
                let online = now.since(w.last_seen) <= w.patience();
                let mut running: Vec<Uuid> = w.held.keys().copied().collect();
                running.sort();
                WorkerStatus {
                    name: name.clone(),
                    state: if online { WorkerState::Online } else { WorkerState::Offline },
                    deployments: w.deployments.clone(),
                    labels: w.labels.clone(),
                    slots: w.slots,
                    running,
                    first_seen: w.first_seen,
                    last_seen: w.last_seen,
                    last_claim: w.last_claim,
                    lease_seconds: w.lease.as_secs_f64(),
                }
            })
            .collect();
        list.sort_by(|a, b| (a.state != WorkerState::Online, &a.name).cmp(&(b.state != WorkerState::Online, &b.name)));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::parse("2026-01-01T00:00:00Z").unwrap().plus(Span::seconds(s))
    }

    fn claim(worker: &str, slots: Option<u32>) -> ClaimRequest {
        let mut request = ClaimRequest::new(worker, vec!["b".into(), "a".into(), "a".into()]);
        request.lease_seconds = 30.0;
        request.wait_seconds = 20.0;
        request.slots = slots;
        request
    }

    #[test]
    fn a_worker_is_online_while_heard_from_then_offline_then_forgotten() {
        let workers = Workers::default();
        workers.claiming(&claim("w1", Some(4)), t(0));
        let run = Uuid::from_u128(1);
        workers.holds("w1", run, Some(t(30)), t(1));
        let list = workers.list(t(10));
        assert_eq!(list.len(), 1);
        let w = &list[0];
        assert_eq!((w.state, w.slots, w.running.as_slice()), (WorkerState::Online, Some(4), &[run][..]));
        assert_eq!(w.deployments, ["a", "b"]);
        assert_eq!((w.first_seen, w.last_seen, w.last_claim), (t(0), t(1), Some(t(0))));
        // Lease 30 + wait 20 + grace 5: online at 56 s after, offline at 57; the lapsed lease
        // drops the run.
        assert_eq!(workers.list(t(56))[0].state, WorkerState::Online);
        let later = workers.list(t(57));
        assert_eq!((later[0].state, later[0].running.len()), (WorkerState::Offline, 0));
        assert!(workers.list(t(1 + 3600)).is_empty(), "forgotten an hour after it was last heard from");
    }

    #[test]
    fn a_released_run_is_no_longer_held_and_a_heartbeat_alone_makes_a_worker_known() {
        let workers = Workers::default();
        let run = Uuid::from_u128(7);
        workers.holds("after-restart", run, None, t(0));
        let w = &workers.list(t(1))[0];
        assert_eq!((w.name.as_str(), w.running.as_slice(), w.deployments.len()), ("after-restart", &[run][..], 0));
        workers.released("after-restart", run, t(2));
        assert!(workers.list(t(3))[0].running.is_empty());
    }

    #[test]
    fn the_registry_is_bounded_and_forgets_the_stalest() {
        let workers = Workers::default();
        let at = |micros: usize| t(0).plus(Span::micros(micros as i64));
        for i in 0..MAX_WORKERS_SEEN {
            workers.claiming(&claim(&format!("w{i}"), None), at(i));
        }
        workers.claiming(&claim("newcomer", None), at(MAX_WORKERS_SEEN));
        let names: Vec<String> = workers.list(at(MAX_WORKERS_SEEN)).into_iter().map(|w| w.name).collect();
        assert_eq!(names.len(), MAX_WORKERS_SEEN);
        assert!(names.contains(&"newcomer".to_owned()));
        assert!(!names.contains(&"w0".to_owned()), "the stalest was forgotten");
    }
}
