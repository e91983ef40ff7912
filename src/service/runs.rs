//! The run queue: which runs wait, which run, and what their deployment's settings do to them
//! (retries with backoff, execution and schedule timeouts, leases, concurrency limits and
//! strategies, priority). Pure decisions on an in-memory view of the active runs: the core
//! persists every run this returns and emits its state change as an event.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;

use serde_json::Value;
use uuid::Uuid;

use crate::engine::template::KeyTemplate;
use crate::model::rate_limit::MAX_RATE_LIMIT_KEY_BYTES;
use crate::model::time::{Span, Timestamp};
use crate::model::{
    ClaimRequest, ConcurrencyStrategy, Deployment, JsonPath, Problems, Run, RunRateLimit, RunState, StateReason,
};

use super::rate_limits::RateLimiter;
use super::workers::Peer;
use crate::model::affinity::affinity;

/// How long a ready run waits for a better-fitting online worker with a free slot (by its
/// deployment's preferred labels) before a worker that fits less may take it.
pub const PREFERENCE_WAIT: Span = Span::seconds(2);

/// A run that changed, and the state it left (None for a new run).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Change {
    pub run: Run,
    pub previous: Option<RunState>,
}

/// Why a worker's request about a run was refused.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Refusal {
    /// The run is not active: it is final, or does not exist.
    Final,
    /// Another worker holds it, or it is waiting to be claimed again.
    NotHeld(Box<Run>),
}

/// A deployment's settings as the queue uses them.
struct Settings {
    deployment: Deployment,
    key: Option<KeyTemplate>,
    /// The templates of its dynamic rate limit keys, by position in `rate_limits` (None for
    /// a static key).
    rate_keys: Vec<Option<KeyTemplate>>,
}

/// A deployment's templates, compiled once when it is put.
#[derive(Default)]
pub(super) struct Compiled {
    key: Option<KeyTemplate>,
    rate_keys: Vec<Option<KeyTemplate>>,
}

impl Settings {
    fn new(deployment: Deployment, compiled: Compiled) -> Settings {
        Settings { deployment, key: compiled.key, rate_keys: compiled.rate_keys }
    }
}

/// The concurrency group of a run: its deployment and its rendered key ("" without one).
type Group = (String, String);

fn group_of(run: &Run) -> Group {
    (run.deployment.clone(), run.concurrency_key.clone().unwrap_or_default())
}

fn seconds(s: f64) -> Span {
    Span::from_secs_f64(s).unwrap_or(Span::seconds(i64::MAX / 2_000_000))
}

/// Compiles a deployment's concurrency key and dynamic rate limit keys, for validation
/// before it is stored.
pub(super) fn compile(deployment: &Deployment) -> Result<Compiled, Problems> {
    let mut problems = Problems::default();
    let key = deployment
        .concurrency
        .as_ref()
        .and_then(|c| KeyTemplate::compile(&c.key, &JsonPath::root().key("concurrency").key("key"), &mut problems));
    let rate_keys = deployment
        .rate_limits
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let path = JsonPath::root().key("rate_limits").index(i).key("dynamic_key");
            r.dynamic_key.as_ref().and_then(|template| KeyTemplate::compile(template, &path, &mut problems))
        })
        .collect();
    problems.into_result(Compiled { key, rate_keys })
}

/// A deployment's compiled templates, or none (logged) when a stored one no longer compiles.
fn compiled_or_logged(deployment: &Deployment) -> Compiled {
    compile(deployment).unwrap_or_else(|problems| {
        tracing::error!(deployment = %deployment.name, %problems, "a stored key template does not compile");
        Compiled::default()
    })
}

/// A ready run's place in its group: highest priority first, then the oldest.
type ReadyKey = (Reverse<i32>, Timestamp, Uuid);
/// A group's best ready run as claims order them: highest priority, then the group served
/// longest ago, then the oldest.
type HeadKey = (Reverse<i32>, u64, Timestamp, Uuid);

/// The last possible id, for ranges "up to and including this time".
const LAST_ID: Uuid = Uuid::from_u128(u128::MAX);

/// What `due` does to a run whose time came.
enum Due {
    Lapsed,
    /// Its execution deadline passed; the attempt's error.
    TimedOut(String),
    Unclaimed(f64),
}

/// A running attempt's execution deadline: the one its flow refreshed, else its start plus the
/// deployment's timeout; with the error to fail it with once passed.
fn execution_deadline(d: Option<&Deployment>, r: &Run) -> Option<(Timestamp, String)> {
    if let Some(at) = r.timeout_at {
        return Some((at, format!("timed out: the attempt ran past its refreshed deadline, {at}")));
    }
    let (t, started) = (d?.timeout_seconds?, r.started?);
    Some((started.plus(seconds(t)), format!("timed out: the attempt ran longer than {t} s")))
}

/// The active runs indexed for the questions the queue asks on every tick and claim, so that
/// neither scans: which deadlines have passed, which runs are ready per group, which groups
/// have room. Kept in step with `RunQueue::active` by `add` and `remove`, which every change
/// of an active run goes through (remove, change, add).
#[derive(Debug, Default, PartialEq)]
struct Index {
    /// Each active run's next deadline: the earliest time `due` acts on it (lease expiry,
    /// execution timeout, schedule timeout).
    deadlines: BTreeSet<(Timestamp, Uuid)>,
    /// The active runs of each concurrency group, oldest first.
    members: HashMap<Group, BTreeSet<(Timestamp, Uuid)>>,
    /// The active runs of each deployment (to re-index them when its settings change).
    by_deployment: HashMap<String, HashSet<Uuid>>,
    /// Running runs per deployment.
    running_deployment: HashMap<String, u32>,
    /// Running runs per group.
    running_group: HashMap<Group, u32>,
    /// Scheduled runs that may be claimed at `clock`, per group.
    ready: HashMap<Group, BTreeSet<ReadyKey>>,
    /// Scheduled runs whose `not_before` is after `clock`.
    waiting: BTreeSet<(Timestamp, Uuid)>,
    /// Ready runs that have a `not_before` (at or before `clock`): put back to waiting if the
    /// clock a claim gives moves back.
    promoted: BTreeSet<(Timestamp, Uuid)>,
    /// Per deployment, the best ready run of each group that has room under its key's limit.
    heads: HashMap<String, BTreeSet<(HeadKey, String)>>,
    /// Each group's entry in `heads`.
    head_of: HashMap<Group, HeadKey>,
    /// The time the ready/waiting split is for (None: no claim yet, every `not_before` waits).
    clock: Option<Timestamp>,
}

/// Adds one to a count.
fn bump<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, u32>, key: K) {
    *counts.entry(key).or_default() += 1;
}

/// Takes one from a count, forgetting it at zero.
fn drop_one<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, u32>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// Removes `item` from the set under `key`, forgetting the set once empty.
fn unset<K: std::hash::Hash + Eq, T: Ord>(sets: &mut HashMap<K, BTreeSet<T>>, key: &K, item: &T) {
    if let Some(set) = sets.get_mut(key) {
        set.remove(item);
        if set.is_empty() {
            sets.remove(key);
        }
    }
}

/// The deployment's settings, if it exists.
fn deployment_of<'a>(settings: &'a HashMap<String, Settings>, name: &str) -> Option<&'a Deployment> {
    settings.get(name).map(|s| &s.deployment)
}

/// The rate limits a new run of these settings takes: static keys as named, dynamic keys
/// rendered from its parameters and cause; or why a dynamic key did not render.
fn rate_limits_of(settings: &Settings, run: &Run) -> Result<Vec<RunRateLimit>, String> {
    let uses = settings.deployment.rate_limits.iter().zip(&settings.rate_keys);
    uses.map(|(r, template)| {
        let key = match (&r.static_key, template) {
            (Some(key), _) => key.clone(),
            (None, Some(template)) => {
                let key = template
                    .render(&run.parameters, run.cause.as_ref())
                    .map_err(|e| format!("the rate limit key did not render: {}", e.message))?;
                if key.len() > MAX_RATE_LIMIT_KEY_BYTES {
                    return Err(format!(
                        "the rate limit key rendered {} bytes; at most {MAX_RATE_LIMIT_KEY_BYTES}",
                        key.len()
                    ));
                }
                key
            }
            (None, None) => return Err("a dynamic rate limit key that does not compile".into()),
        };
        Ok(RunRateLimit { key, units: r.units, limit: r.limit, duration: r.duration })
    })
    .collect()
}

/// When a Scheduled run became claimable: its last change, or its backoff's end.
fn ready_since(r: &Run) -> Timestamp {
    r.not_before.map_or(r.updated, |nb| nb.max(r.updated))
}

/// The earliest time `due` acts on a run, under its deployment's settings.
fn deadline(settings: &HashMap<String, Settings>, r: &Run) -> Option<Timestamp> {
    let d = deployment_of(settings, &r.deployment);
    match r.state {
        RunState::Running => {
            let timeout = execution_deadline(d, r).map(|(at, _)| at);
            [timeout, r.lease_expires].into_iter().flatten().min()
        }
        RunState::Scheduled => d.and_then(|d| d.schedule_timeout_seconds).map(|t| ready_since(r).plus(seconds(t))),
        _ => None,
    }
}

/// What `due` does to a run at `now`, and the time it became due (None: nothing yet).
fn due_at(settings: &HashMap<String, Settings>, r: &Run, now: Timestamp) -> Option<(Timestamp, Due)> {
    let d = deployment_of(settings, &r.deployment);
    match r.state {
        RunState::Running => {
            if let Some((at, error)) = execution_deadline(d, r) {
                if at <= now {
                    return Some((at, Due::TimedOut(error)));
                }
            }
            r.lease_expires.filter(|t| *t <= now).map(|at| (at, Due::Lapsed))
        }
        RunState::Scheduled => {
            let t = d.and_then(|d| d.schedule_timeout_seconds)?;
            let at = ready_since(r).plus(seconds(t));
            (at <= now).then_some((at, Due::Unclaimed(t)))
        }
        _ => None,
    }
}

/// The limit of a group's running runs, when its deployment has a concurrency key and the
/// group is a key's (not the runs without one).
fn key_limit(settings: &HashMap<String, Settings>, group: &Group) -> Option<u32> {
    let c = deployment_of(settings, &group.0)?.concurrency.as_ref()?;
    (!group.1.is_empty()).then_some(c.max_runs)
}

impl Index {
    /// Indexes an active run.
    fn add(&mut self, r: &Run, settings: &HashMap<String, Settings>, served: &HashMap<Group, u64>) {
        let group = group_of(r);
        self.members.entry(group.clone()).or_default().insert((r.created, r.id));
        self.by_deployment.entry(r.deployment.clone()).or_default().insert(r.id);
        if let Some(at) = deadline(settings, r) {
            self.deadlines.insert((at, r.id));
        }
        match r.state {
            RunState::Running => {
                bump(&mut self.running_deployment, r.deployment.clone());
                bump(&mut self.running_group, group.clone());
                self.refresh(&group, settings, served);
            }
            RunState::Scheduled => match r.not_before {
                Some(t) if self.clock.is_none_or(|c| t > c) => {
                    self.waiting.insert((t, r.id));
                }
                not_before => {
                    if let Some(t) = not_before {
                        self.promoted.insert((t, r.id));
                    }
                    self.ready.entry(group.clone()).or_default().insert((Reverse(r.priority), r.created, r.id));
                    self.refresh(&group, settings, served);
                }
            },
            _ => {}
        }
    }

    /// Forgets an active run, indexed by `add` under the same settings.
    fn remove(&mut self, r: &Run, settings: &HashMap<String, Settings>, served: &HashMap<Group, u64>) {
        let group = group_of(r);
        unset(&mut self.members, &group, &(r.created, r.id));
        if let Some(ids) = self.by_deployment.get_mut(&r.deployment) {
            ids.remove(&r.id);
            if ids.is_empty() {
                self.by_deployment.remove(&r.deployment);
            }
        }
        if let Some(at) = deadline(settings, r) {
            self.deadlines.remove(&(at, r.id));
        }
        match r.state {
            RunState::Running => {
                drop_one(&mut self.running_deployment, &r.deployment);
                drop_one(&mut self.running_group, &group);
                self.refresh(&group, settings, served);
            }
            RunState::Scheduled => {
                if let Some(t) = r.not_before {
                    self.waiting.remove(&(t, r.id));
                    self.promoted.remove(&(t, r.id));
                }
                unset(&mut self.ready, &group, &(Reverse(r.priority), r.created, r.id));
                self.refresh(&group, settings, served);
            }
            _ => {}
        }
    }

    /// Puts a group's entry in `heads` in step with its ready runs, its running count, its
    /// deployment's settings and when it was last served.
    fn refresh(&mut self, group: &Group, settings: &HashMap<String, Settings>, served: &HashMap<Group, u64>) {
        if let Some(old) = self.head_of.remove(group) {
            unset(&mut self.heads, &group.0, &(old, group.1.clone()));
        }
        let Some(&(priority, created, id)) = self.ready.get(group).and_then(|s| s.first()) else { return };
        let running = self.running_group.get(group).copied().unwrap_or(0);
        if key_limit(settings, group).is_some_and(|max| running >= max) {
            return;
        }
        let head = (priority, served.get(group).copied().unwrap_or(0), created, id);
        self.heads.entry(group.0.clone()).or_default().insert((head, group.1.clone()));
        self.head_of.insert(group.clone(), head);
    }
}

/// What a claim did: the runs handed to the worker, and the runs it found over a rate
/// limit and put back to wait for the window's reset (true: the first time for this attempt).
#[derive(Debug, Default)]
pub(super) struct Claimed {
    pub runs: Vec<Change>,
    pub deferred: Vec<(Change, bool)>,
}

#[derive(Default)]
pub(super) struct RunQueue {
    active: HashMap<Uuid, Run>,
    limiter: RateLimiter,
    settings: HashMap<String, Settings>,
    /// When each group was last given a run (a claim counter), for round-robin fairness.
    served: HashMap<Group, u64>,
    claims: u64,
    index: Index,
}

impl RunQueue {
    pub fn new(deployments: Vec<Deployment>, active: Vec<Run>, limiter: RateLimiter) -> RunQueue {
        let mut queue = RunQueue { limiter, ..RunQueue::default() };
        for d in deployments {
            let compiled = compiled_or_logged(&d);
            queue.set_deployment(d, compiled);
        }
        for run in active.into_iter().filter(|r| !r.is_final()) {
            queue.insert_active(run);
        }
        queue
    }

    /// Installs or replaces a deployment's settings, with its templates as compiled by
    /// [`compile`] (once: each run's keys are rendered from them, never parsed again).
    pub fn set_deployment(&mut self, deployment: Deployment, compiled: Compiled) {
        let name = deployment.name.clone();
        self.resettle(&name, |settings| {
            settings.insert(name.clone(), Settings::new(deployment, compiled));
        });
    }

    /// The rate limiter (static limits and open windows).
    pub fn limiter(&mut self) -> &mut RateLimiter {
        &mut self.limiter
    }

    /// The deployments that take units from the static limit `key`, with the units.
    pub fn users_of(&self, key: &str) -> Vec<(String, u64)> {
        let mut users: Vec<(String, u64)> = self
            .settings
            .values()
            .flat_map(|s| {
                s.deployment
                    .rate_limits
                    .iter()
                    .filter(|r| r.static_key.as_deref() == Some(key))
                    .map(|r| (s.deployment.name.clone(), r.units))
            })
            .collect();
        users.sort();
        users
    }

    pub fn remove_deployment(&mut self, name: &str) {
        self.resettle(name, |settings| {
            settings.remove(name);
        });
    }

    /// Changes a deployment's settings with its active runs re-indexed under the new ones.
    fn resettle(&mut self, name: &str, change: impl FnOnce(&mut HashMap<String, Settings>)) {
        let ids: Vec<Uuid> =
            self.index.by_deployment.get(name).map(|ids| ids.iter().copied().collect()).unwrap_or_default();
        let runs: Vec<Run> = ids.iter().filter_map(|id| self.remove_active(id)).collect();
        change(&mut self.settings);
        for run in runs {
            self.insert_active(run);
        }
    }

    /// A deployment's settings as the queue holds them (the same as stored: every put and
    /// delete of a deployment updates both).
    pub fn deployment(&self, name: &str) -> Option<&Deployment> {
        deployment_of(&self.settings, name)
    }

    pub fn get(&self, id: &Uuid) -> Option<&Run> {
        self.active.get(id)
    }

    pub fn active_count(&self) -> usize {
        self.active.len()
    }

    /// Makes a run active (replacing one with its id), indexed.
    fn insert_active(&mut self, run: Run) {
        self.remove_active(&run.id);
        self.index.add(&run, &self.settings, &self.served);
        self.active.insert(run.id, run);
    }

    /// Takes a run out of the active ones and the index.
    fn remove_active(&mut self, id: &Uuid) -> Option<Run> {
        let run = self.active.remove(id)?;
        self.index.remove(&run, &self.settings, &self.served);
        Some(run)
    }

    /// Changes an active run, re-indexing it.
    fn update<R>(&mut self, id: &Uuid, change: impl FnOnce(&mut Run) -> R) -> Option<R> {
        let mut run = self.remove_active(id)?;
        let result = change(&mut run);
        self.insert_active(run);
        Some(result)
    }

    /// Moves the ready/waiting split to `now`: runs whose backoff ended become ready (and,
    /// should the clock have gone back, ready ones whose backoff has not ended wait again).
    fn sync(&mut self, now: Timestamp) {
        if self.index.clock == Some(now) {
            return;
        }
        let mut moved: Vec<Uuid> = self.index.waiting.range(..=(now, LAST_ID)).map(|(_, id)| *id).collect();
        moved.extend(self.index.promoted.range((Bound::Excluded((now, LAST_ID)), Bound::Unbounded)).map(|(_, id)| *id));
        // Out of the index under the old split, back in under the new one.
        let runs: Vec<Run> = moved.iter().filter_map(|id| self.remove_active(id)).collect();
        self.index.clock = Some(now);
        for run in runs {
            self.insert_active(run);
        }
    }

    /// A new run enters: its concurrency key is rendered and its deployment's strategy
    /// applied. Returns the new run (possibly already final) and the runs it cancelled.
    pub fn admit(&mut self, mut run: Run, now: Timestamp) -> Vec<Change> {
        let mut changes = Vec::new();
        let settings = self.settings.get(&run.deployment);
        let concurrency = settings.and_then(|s| s.deployment.concurrency.clone());
        if let Some(settings) = settings {
            match rate_limits_of(settings, &run) {
                Ok(needs) => run.rate_limits = needs,
                Err(message) => {
                    run.state = RunState::Failed;
                    run.finished = Some(now);
                    run.reason = Some(StateReason::RateLimitKeyError);
                    run.error = Some(message);
                    return vec![Change { run, previous: None }];
                }
            }
        }
        if let (Some(c), Some(key)) = (&concurrency, settings.and_then(|s| s.key.as_ref())) {
            match key.render(&run.parameters, run.cause.as_ref()) {
                Ok(k) => run.concurrency_key = Some(k),
                Err(e) => {
                    run.state = RunState::Failed;
                    run.finished = Some(now);
                    run.reason = Some(StateReason::ConcurrencyKeyError);
                    run.error = Some(format!("the concurrency key did not render: {}", e.message));
                    return vec![Change { run, previous: None }];
                }
            }
            let group = group_of(&run);
            // The group's active runs, oldest first.
            let same = self.index.members.get(&group);
            let count = same.map_or(0, |s| s.len());
            let max = c.max_runs as usize;
            match c.strategy {
                ConcurrencyStrategy::GroupRoundRobin => {}
                ConcurrencyStrategy::CancelNewest => {
                    if count >= max {
                        run.state = RunState::Cancelled;
                        run.finished = Some(now);
                        run.reason = Some(StateReason::ConcurrencyCancelNewest);
                        run.error = Some(format!(
                            "concurrency key `{}` already has {} active run(s), its limit (CANCEL_NEWEST)",
                            group.1, count
                        ));
                        return vec![Change { run, previous: None }];
                    }
                }
                ConcurrencyStrategy::CancelInProgress => {
                    let excess = (count + 1).saturating_sub(max);
                    let doomed: Vec<Uuid> = same.into_iter().flatten().take(excess).map(|(_, id)| *id).collect();
                    for id in doomed {
                        let message = format!(
                            "cancelled for the newer run {} of concurrency key `{}` (CANCEL_IN_PROGRESS)",
                            run.id, group.1
                        );
                        if let Some(change) = self.finish(id, RunState::Cancelled, now, |r| {
                            r.reason = Some(StateReason::ConcurrencyCancelInProgress);
                            r.error = Some(message);
                        }) {
                            changes.push(change);
                        }
                    }
                }
            }
        }
        self.insert_active(run.clone());
        changes.insert(0, Change { run, previous: None });
        changes
    }

    /// Hands up to `limit` ready runs of the worker's deployments to it: highest priority
    /// first, then the group served longest ago, then the oldest; within the deployment's and
    /// the key's limits. Each pick reads the first head of each requested deployment.
    pub fn claim(&mut self, request: &ClaimRequest, peers: &[Peer], now: Timestamp) -> Claimed {
        self.sync(now);
        let deployments: BTreeSet<&str> = request.deployments.iter().map(String::as_str).collect();
        let lease = seconds(request.lease_seconds);
        let mut claimed = Claimed::default();
        while claimed.runs.len() < request.limit as usize {
            let mut best: Option<(HeadKey, Group)> = None;
            for d in &deployments {
                let limit = deployment_of(&self.settings, d).and_then(|d| d.concurrency_limit);
                let running = self.index.running_deployment.get(*d).copied().unwrap_or(0);
                if limit.is_some_and(|limit| running >= limit) {
                    continue;
                }
                if let Some((head, key)) = self.index.heads.get(*d).and_then(|h| h.first()) {
                    if !self.fits(d, request, peers, &head.3, now) {
                        continue;
                    }
                    if best.as_ref().is_none_or(|(b, _)| head < b) {
                        best = Some((*head, ((*d).to_owned(), key.clone())));
                    }
                }
            }
            let Some((head, group)) = best else { break };
            // Over a rate limit: back to waiting until the window resets (it keeps its place:
            // priority first, then since when it was ready), and the next head is looked at.
            let needs = self.active.get(&head.3).map(|r| r.rate_limits.clone()).unwrap_or_default();
            if let Err(blocked) = self.limiter.check(&needs, now) {
                let deferred = self.update(&head.3, |run| {
                    let first = run.reason != Some(StateReason::RateLimited);
                    run.not_before = Some(blocked.until);
                    run.reason = Some(StateReason::RateLimited);
                    run.waiting = Some(blocked.message);
                    (Change { run: run.clone(), previous: Some(run.state) }, first)
                });
                match deferred {
                    Some(change) => claimed.deferred.push(change),
                    None => break,
                }
                continue;
            }
            self.limiter.take(&needs, now);
            self.claims += 1;
            self.served.insert(group, self.claims);
            let change = self.update(&head.3, |run| {
                let previous = run.state;
                run.state = RunState::Running;
                run.worker = Some(request.worker.clone());
                run.lease_expires = Some(now.plus(lease));
                run.started = Some(now);
                run.timeout_at = None;
                run.not_before = None;
                run.waiting = None;
                if run.reason == Some(StateReason::RateLimited) {
                    run.reason = None;
                }
                run.updated = now;
                Change { run: run.clone(), previous: Some(previous) }
            });
            match change {
                Some(change) => claimed.runs.push(change),
                None => break,
            }
        }
        claimed
    }

    /// Whether the claiming worker may take `d`'s best ready run (`head`): it meets every
    /// required label of the deployment, and no other online worker with a free slot fits its
    /// preferred labels better, unless the run has waited [`PREFERENCE_WAIT`] for one.
    fn fits(&self, d: &str, request: &ClaimRequest, peers: &[Peer], head: &Uuid, now: Timestamp) -> bool {
        let Some(desired) = self.settings.get(d).map(|s| &s.deployment.desired_labels).filter(|l| !l.is_empty()) else {
            return true;
        };
        let Some(mine) = affinity(desired, &request.labels) else { return false };
        if self.active.get(head).is_none_or(|r| now.since(ready_since(r)) >= PREFERENCE_WAIT) {
            return true;
        }
        !peers.iter().any(|p| {
            p.free
                && p.deployments.iter().any(|served| served == d)
                && affinity(desired, &p.labels).is_some_and(|theirs| theirs > mine)
        })
    }

    /// Whether `worker` holds the run.
    fn held(&self, id: &Uuid, worker: &str) -> Result<(), Refusal> {
        match self.active.get(id) {
            None => Err(Refusal::Final),
            Some(r) if r.state == RunState::Running && r.worker.as_deref() == Some(worker) => Ok(()),
            Some(r) => Err(Refusal::NotHeld(Box::new(r.clone()))),
        }
    }

    /// Extends the lease of a run `worker` holds (no state change, nothing to emit).
    /// Extends the holder's lease, and with `timeout_seconds` refreshes the attempt's
    /// execution deadline to that long from now.
    pub fn heartbeat(
        &mut self,
        id: &Uuid,
        worker: &str,
        lease_seconds: f64,
        timeout_seconds: Option<f64>,
        now: Timestamp,
    ) -> Result<Run, Refusal> {
        self.held(id, worker)?;
        self.update(id, |run| {
            run.lease_expires = Some(now.plus(seconds(lease_seconds)));
            if let Some(t) = timeout_seconds {
                run.timeout_at = Some(now.plus(seconds(t)));
            }
            run.clone()
        })
        .ok_or(Refusal::Final)
    }

    pub fn complete(&mut self, id: &Uuid, worker: &str, output: Value, now: Timestamp) -> Result<Change, Refusal> {
        self.held(id, worker)?;
        self.finish(*id, RunState::Completed, now, |r| {
            r.output = Some(output);
            r.error = None;
            r.reason = None;
        })
        .ok_or(Refusal::Final)
    }

    pub fn fail(
        &mut self,
        id: &Uuid,
        worker: &str,
        error: String,
        retry: bool,
        now: Timestamp,
    ) -> Result<Change, Refusal> {
        self.held(id, worker)?;
        // A worker that stops its flow at the deadline reports it before `due` sees it.
        let past_deadline = self.active.get(id).is_some_and(|r| {
            execution_deadline(deployment_of(&self.settings, &r.deployment), r).is_some_and(|(at, _)| at <= now)
        });
        let reason = match (retry, past_deadline) {
            (false, _) => Some(StateReason::InvalidParameters),
            (true, true) => Some(StateReason::TimedOut),
            (true, false) => None,
        };
        self.after_failure(*id, error, retry, reason, now).ok_or(Refusal::Final)
    }

    /// Cancels an active run; its worker learns it at its next heartbeat.
    pub fn cancel(&mut self, id: &Uuid, now: Timestamp) -> Result<Change, Refusal> {
        self.cancel_because(id, StateReason::CancelledByUser, "cancelled through the API".into(), now)
    }

    /// Cancels a waiting or running run for `reason`, explained by `error`.
    pub fn cancel_because(
        &mut self,
        id: &Uuid,
        reason: StateReason,
        error: String,
        now: Timestamp,
    ) -> Result<Change, Refusal> {
        self.finish(*id, RunState::Cancelled, now, |r| {
            r.reason = Some(reason);
            r.error = Some(error);
        })
        .ok_or(Refusal::Final)
    }

    /// The time-driven changes due by `now`: lapsed leases (the run waits again), attempts
    /// past their timeout (failed, perhaps retried), runs nobody claimed in time (cancelled).
    /// Reads only the runs whose deadline has passed.
    pub fn due(&mut self, now: Timestamp) -> Vec<Change> {
        let mut due: Vec<(Timestamp, Uuid, Due)> = Vec::new();
        for (_, id) in self.index.deadlines.range(..=(now, LAST_ID)) {
            if let Some((at, what)) = self.active.get(id).and_then(|r| due_at(&self.settings, r, now)) {
                due.push((at, *id, what));
            }
        }
        due.sort_by_key(|(at, id, _)| (*at, *id));
        let mut changes = Vec::new();
        for (_, id, what) in due {
            let change = match what {
                Due::Lapsed => self.update(&id, |r| {
                    let previous = r.state;
                    r.error = Some(format!(
                        "worker `{}` stopped sending heartbeats; the run was put back in the queue",
                        r.worker.as_deref().unwrap_or("?")
                    ));
                    r.state = RunState::Scheduled;
                    r.reason = Some(StateReason::LeaseExpired);
                    r.worker = None;
                    r.lease_expires = None;
                    r.started = None;
                    r.timeout_at = None;
                    r.updated = now;
                    Change { run: r.clone(), previous: Some(previous) }
                }),
                Due::TimedOut(error) => self.after_failure(id, error, true, Some(StateReason::TimedOut), now),
                Due::Unclaimed(t) => self.finish(id, RunState::Cancelled, now, |r| {
                    r.reason = Some(StateReason::ScheduleTimeout);
                    r.error = Some(format!("no worker claimed it within {t} s (schedule_timeout_seconds)"));
                }),
            };
            changes.extend(change);
        }
        self.limiter.prune(now);
        if self.served.len() > 2 * self.active.len() + 1024 {
            let live = &self.index.members;
            self.served.retain(|g, _| live.contains_key(g));
        }
        changes
    }

    /// A failed attempt: another attempt after the backoff while retries remain (and `retry`
    /// allows), otherwise Failed.
    fn after_failure(
        &mut self,
        id: Uuid,
        error: String,
        retry: bool,
        reason: Option<StateReason>,
        now: Timestamp,
    ) -> Option<Change> {
        let run = self.active.get(&id)?;
        let deployment = deployment_of(&self.settings, &run.deployment);
        let retries = deployment.map_or(0, |d| d.retries);
        if retry && run.attempt <= retries {
            let delay = deployment.map_or(0.0, |d| d.retry_delay(run.attempt));
            return self.update(&id, |run| {
                let previous = run.state;
                run.state = RunState::Scheduled;
                run.attempt += 1;
                run.not_before = Some(now.plus(seconds(delay)));
                run.error = Some(error);
                run.reason = Some(StateReason::Retry);
                run.worker = None;
                run.lease_expires = None;
                run.started = None;
                run.timeout_at = None;
                run.updated = now;
                Change { run: run.clone(), previous: Some(previous) }
            });
        }
        self.finish(id, RunState::Failed, now, |r| {
            r.error = Some(error);
            r.reason = reason;
        })
    }

    /// Moves an active run to a final state and out of the queue.
    fn finish(&mut self, id: Uuid, state: RunState, now: Timestamp, edit: impl FnOnce(&mut Run)) -> Option<Change> {
        let mut run = self.remove_active(&id)?;
        let previous = run.state;
        run.state = state;
        run.finished = Some(now);
        run.updated = now;
        run.lease_expires = None;
        run.timeout_at = None;
        run.not_before = None;
        edit(&mut run);
        Some(Change { run, previous: Some(previous) })
    }

    /// Panics unless the index equals one built afresh from the active runs (tests).
    #[cfg(test)]
    fn check_index(&self) {
        let mut fresh = Index { clock: self.index.clock, ..Index::default() };
        for run in self.active.values() {
            fresh.add(run, &self.settings, &self.served);
        }
        assert_eq!(fresh, self.index, "the index drifted from the active runs");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Concurrency;
    use proptest::prelude::*;
    use serde_json::json;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_micros(s * 1_000_000)
    }

    fn run(n: u128, d: &Deployment, params: Value, created: i64) -> Run {
        Run::scheduled(Uuid::from_u128(n), d, params.as_object().unwrap().clone(), None, at(created))
    }

    fn claim(q: &mut RunQueue, worker: &str, d: &str, limit: u32, now: i64) -> Vec<u128> {
        let mut req = ClaimRequest::new(worker, vec![d.to_owned()]);
        req.limit = limit;
        req.lease_seconds = 10.0;
        q.claim(&req, &[], at(now)).runs.into_iter().map(|c| c.run.id.as_u128()).collect()
    }

    mod scan {
        //! The queue as it was before the index: every question answered by scanning the active
        //! runs. The oracle the indexed queue is checked against.
        use std::collections::HashMap;

        use serde_json::Value;
        use uuid::Uuid;

        use super::super::{compile, group_of, seconds, Change, Compiled, Group, Refusal, Settings};
        use crate::model::time::Timestamp;
        use crate::model::{ClaimRequest, ConcurrencyStrategy, Deployment, Run, RunState, StateReason};

        #[derive(Default)]
        pub(super) struct ScanQueue {
            active: HashMap<Uuid, Run>,
            settings: HashMap<String, Settings>,
            /// When each group was last given a run (a claim counter), for round-robin fairness.
            served: HashMap<Group, u64>,
            claims: u64,
        }

        impl ScanQueue {
            pub(super) fn new(deployments: Vec<Deployment>, active: Vec<Run>) -> ScanQueue {
                let mut queue = ScanQueue::default();
                for d in deployments {
                    let compiled = compile(&d).unwrap_or_default();
                    queue.set_deployment(d, compiled);
                }
                queue.active = active.into_iter().filter(|r| !r.is_final()).map(|r| (r.id, r)).collect();
                queue
            }

            /// Installs or replaces a deployment's settings, with its concurrency key as compiled by
            /// [`compile`] (once: each run's key is rendered from it, never parsed again).
            pub(super) fn set_deployment(&mut self, deployment: Deployment, compiled: Compiled) {
                self.settings.insert(deployment.name.clone(), Settings::new(deployment, compiled));
            }

            pub(super) fn remove_deployment(&mut self, name: &str) {
                self.settings.remove(name);
            }

            pub(super) fn get(&self, id: &Uuid) -> Option<&Run> {
                self.active.get(id)
            }

            pub(super) fn active_count(&self) -> usize {
                self.active.len()
            }

            /// A new run enters: its concurrency key is rendered and its deployment's strategy
            /// applied. Returns the new run (possibly already final) and the runs it cancelled.
            pub(super) fn admit(&mut self, mut run: Run, now: Timestamp) -> Vec<Change> {
                let mut changes = Vec::new();
                let settings = self.settings.get(&run.deployment);
                let concurrency = settings.and_then(|s| s.deployment.concurrency.clone());
                if let (Some(c), Some(key)) = (&concurrency, settings.and_then(|s| s.key.as_ref())) {
                    match key.render(&run.parameters, run.cause.as_ref()) {
                        Ok(k) => run.concurrency_key = Some(k),
                        Err(e) => {
                            run.state = RunState::Failed;
                            run.finished = Some(now);
                            run.reason = Some(StateReason::ConcurrencyKeyError);
                            run.error = Some(format!("the concurrency key did not render: {}", e.message));
                            return vec![Change { run, previous: None }];
                        }
                    }
                    let group = group_of(&run);
                    let mut same: Vec<&Run> = self.active.values().filter(|r| group_of(r) == group).collect();
                    same.sort_by_key(|r| (r.created, r.id));
                    let max = c.max_runs as usize;
                    match c.strategy {
                        ConcurrencyStrategy::GroupRoundRobin => {}
                        ConcurrencyStrategy::CancelNewest => {
                            if same.len() >= max {
                                run.state = RunState::Cancelled;
                                run.finished = Some(now);
                                run.reason = Some(StateReason::ConcurrencyCancelNewest);
                                run.error = Some(format!(
                                    "concurrency key `{}` already has {} active run(s), its limit (CANCEL_NEWEST)",
                                    group.1,
                                    same.len()
                                ));
                                return vec![Change { run, previous: None }];
                            }
                        }
                        ConcurrencyStrategy::CancelInProgress => {
                            let excess = (same.len() + 1).saturating_sub(max);
                            let doomed: Vec<Uuid> = same.iter().take(excess).map(|r| r.id).collect();
                            for id in doomed {
                                let message = format!(
                                    "cancelled for the newer run {} of concurrency key `{}` (CANCEL_IN_PROGRESS)",
                                    run.id, group.1
                                );
                                if let Some(change) = self.finish(id, RunState::Cancelled, now, |r| {
                                    r.reason = Some(StateReason::ConcurrencyCancelInProgress);
                                    r.error = Some(message);
                                }) {
                                    changes.push(change);
                                }
                            }
                        }
                    }
                }
                self.active.insert(run.id, run.clone());
                changes.insert(0, Change { run, previous: None });
                changes
            }

            /// Hands up to `limit` ready runs of the worker's deployments to it: highest priority
            /// first, then the group served longest ago, then the oldest; within the deployment's and
            /// the key's limits.
            pub(super) fn claim(&mut self, request: &ClaimRequest, now: Timestamp) -> Vec<Change> {
                let mut running_per_deployment: HashMap<&str, u32> = HashMap::new();
                let mut running_per_group: HashMap<Group, u32> = HashMap::new();
                for r in self.active.values().filter(|r| r.state == RunState::Running) {
                    *running_per_deployment.entry(r.deployment.as_str()).or_default() += 1;
                    *running_per_group.entry(group_of(r)).or_default() += 1;
                }
                let mut candidates: Vec<&Run> = self
                    .active
                    .values()
                    .filter(|r| {
                        r.state == RunState::Scheduled
                            && r.not_before.is_none_or(|t| t <= now)
                            && request.deployments.contains(&r.deployment)
                    })
                    .collect();
                candidates.sort_by_key(|r| (std::cmp::Reverse(r.priority), r.created, r.id));
                let mut chosen: Vec<Uuid> = Vec::new();
                let mut running_per_deployment: HashMap<String, u32> =
                    running_per_deployment.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                while chosen.len() < request.limit as usize {
                    let allowed = |r: &Run| {
                        let settings = self.settings.get(&r.deployment).map(|s| &s.deployment);
                        let deployment_ok = settings.and_then(|d| d.concurrency_limit).is_none_or(|limit| {
                            running_per_deployment.get(&r.deployment).copied().unwrap_or(0) < limit
                        });
                        let key_ok = match (settings.and_then(|d| d.concurrency.as_ref()), &r.concurrency_key) {
                            (Some(c), Some(_)) => {
                                running_per_group.get(&group_of(r)).copied().unwrap_or(0) < c.max_runs
                            }
                            _ => true,
                        };
                        deployment_ok && key_ok && !chosen.contains(&r.id)
                    };
                    // Highest priority first; among equals, the group served longest ago, then the
                    // oldest run (the candidates are sorted by priority and age already).
                    let pick = candidates
                        .iter()
                        .filter(|r| allowed(r))
                        .min_by_key(|r| {
                            (
                                std::cmp::Reverse(r.priority),
                                self.served.get(&group_of(r)).copied().unwrap_or(0),
                                r.created,
                                r.id,
                            )
                        })
                        .map(|r| (*r).clone());
                    let Some(run) = pick else { break };
                    self.claims += 1;
                    self.served.insert(group_of(&run), self.claims);
                    *running_per_deployment.entry(run.deployment.clone()).or_default() += 1;
                    *running_per_group.entry(group_of(&run)).or_default() += 1;
                    chosen.push(run.id);
                }
                let lease = seconds(request.lease_seconds);
                chosen
                    .into_iter()
                    .filter_map(|id| {
                        let run = self.active.get_mut(&id)?;
                        let previous = run.state;
                        run.state = RunState::Running;
                        run.worker = Some(request.worker.clone());
                        run.lease_expires = Some(now.plus(lease));
                        run.started = Some(now);
                        run.not_before = None;
                        run.updated = now;
                        Some(Change { run: run.clone(), previous: Some(previous) })
                    })
                    .collect()
            }

            /// The run if `worker` holds it.
            fn held(&mut self, id: &Uuid, worker: &str) -> Result<&mut Run, Refusal> {
                match self.active.get_mut(id) {
                    None => Err(Refusal::Final),
                    Some(r) if r.state == RunState::Running && r.worker.as_deref() == Some(worker) => Ok(r),
                    Some(r) => Err(Refusal::NotHeld(Box::new(r.clone()))),
                }
            }

            /// Extends the lease of a run `worker` holds (no state change, nothing to emit).
            pub(super) fn heartbeat(
                &mut self,
                id: &Uuid,
                worker: &str,
                lease_seconds: f64,
                now: Timestamp,
            ) -> Result<Run, Refusal> {
                let run = self.held(id, worker)?;
                run.lease_expires = Some(now.plus(seconds(lease_seconds)));
                Ok(run.clone())
            }

            pub(super) fn complete(
                &mut self,
                id: &Uuid,
                worker: &str,
                output: Value,
                now: Timestamp,
            ) -> Result<Change, Refusal> {
                self.held(id, worker)?;
                self.finish(*id, RunState::Completed, now, |r| {
                    r.output = Some(output);
                    r.error = None;
                    r.reason = None;
                })
                .ok_or(Refusal::Final)
            }

            pub(super) fn fail(
                &mut self,
                id: &Uuid,
                worker: &str,
                error: String,
                retry: bool,
                now: Timestamp,
            ) -> Result<Change, Refusal> {
                self.held(id, worker)?;
                let past_deadline = self.active.get(id).is_some_and(|r| {
                    let d = self.settings.get(&r.deployment).map(|s| &s.deployment);
                    match (d.and_then(|d| d.timeout_seconds), r.started) {
                        (Some(t), Some(started)) => started.plus(seconds(t)) <= now,
                        _ => false,
                    }
                });
                let reason = match (retry, past_deadline) {
                    (false, _) => Some(StateReason::InvalidParameters),
                    (true, true) => Some(StateReason::TimedOut),
                    (true, false) => None,
                };
                self.after_failure(*id, error, retry, reason, now).ok_or(Refusal::Final)
            }

            /// Cancels an active run; its worker learns it at its next heartbeat.
            pub(super) fn cancel(&mut self, id: &Uuid, now: Timestamp) -> Result<Change, Refusal> {
                self.finish(*id, RunState::Cancelled, now, |r| {
                    r.reason = Some(StateReason::CancelledByUser);
                    r.error = Some("cancelled through the API".into());
                })
                .ok_or(Refusal::Final)
            }

            /// The time-driven changes due by `now`: lapsed leases (the run waits again), attempts
            /// past their timeout (failed, perhaps retried), runs nobody claimed in time (cancelled).
            pub(super) fn due(&mut self, now: Timestamp) -> Vec<Change> {
                enum Due {
                    Lapsed,
                    TimedOut(f64),
                    Unclaimed(f64),
                }
                let mut due: Vec<(Timestamp, Uuid, Due)> = Vec::new();
                for r in self.active.values() {
                    let d = self.settings.get(&r.deployment).map(|s| &s.deployment);
                    match r.state {
                        RunState::Running => {
                            let timeout = d.and_then(|d| d.timeout_seconds);
                            if let (Some(t), Some(started)) = (timeout, r.started) {
                                let at = started.plus(seconds(t));
                                if at <= now {
                                    due.push((at, r.id, Due::TimedOut(t)));
                                    continue;
                                }
                            }
                            if let Some(at) = r.lease_expires.filter(|t| *t <= now) {
                                due.push((at, r.id, Due::Lapsed));
                            }
                        }
                        RunState::Scheduled => {
                            if let Some(t) = d.and_then(|d| d.schedule_timeout_seconds) {
                                let ready = r.not_before.map_or(r.updated, |nb| nb.max(r.updated));
                                let at = ready.plus(seconds(t));
                                if at <= now {
                                    due.push((at, r.id, Due::Unclaimed(t)));
                                }
                            }
                        }
                        _ => {}
                    }
                }
                due.sort_by_key(|(at, id, _)| (*at, *id));
                let mut changes = Vec::new();
                for (_, id, what) in due {
                    let change = match what {
                        Due::Lapsed => self.active.get_mut(&id).map(|r| {
                            let previous = r.state;
                            r.error = Some(format!(
                                "worker `{}` stopped sending heartbeats; the run was put back in the queue",
                                r.worker.as_deref().unwrap_or("?")
                            ));
                            r.state = RunState::Scheduled;
                            r.reason = Some(StateReason::LeaseExpired);
                            r.worker = None;
                            r.lease_expires = None;
                            r.started = None;
                            r.updated = now;
                            Change { run: r.clone(), previous: Some(previous) }
                        }),
                        Due::TimedOut(t) => self.after_failure(
                            id,
                            format!("timed out: the attempt ran longer than {t} s"),
                            true,
                            Some(StateReason::TimedOut),
                            now,
                        ),
                        Due::Unclaimed(t) => self.finish(id, RunState::Cancelled, now, |r| {
                            r.reason = Some(StateReason::ScheduleTimeout);
                            r.error = Some(format!("no worker claimed it within {t} s (schedule_timeout_seconds)"));
                        }),
                    };
                    changes.extend(change);
                }
                if self.served.len() > 2 * self.active.len() + 1024 {
                    let live: std::collections::HashSet<Group> = self.active.values().map(group_of).collect();
                    self.served.retain(|g, _| live.contains(g));
                }
                changes
            }

            /// A failed attempt: another attempt after the backoff while retries remain (and `retry`
            /// allows), otherwise Failed.
            fn after_failure(
                &mut self,
                id: Uuid,
                error: String,
                retry: bool,
                reason: Option<StateReason>,
                now: Timestamp,
            ) -> Option<Change> {
                let run = self.active.get(&id)?;
                let deployment = self.settings.get(&run.deployment).map(|s| &s.deployment);
                let retries = deployment.map_or(0, |d| d.retries);
                if retry && run.attempt <= retries {
                    let delay = deployment.map_or(0.0, |d| d.retry_delay(run.attempt));
                    let run = self.active.get_mut(&id)?;
                    let previous = run.state;
                    run.state = RunState::Scheduled;
                    run.attempt += 1;
                    run.not_before = Some(now.plus(seconds(delay)));
                    run.error = Some(error);
                    run.reason = Some(StateReason::Retry);
                    run.worker = None;
                    run.lease_expires = None;
                    run.started = None;
                    run.updated = now;
                    return Some(Change { run: run.clone(), previous: Some(previous) });
                }
                self.finish(id, RunState::Failed, now, |r| {
                    r.error = Some(error);
                    r.reason = reason;
                })
            }

            /// Moves an active run to a final state and out of the queue.
            fn finish(
                &mut self,
                id: Uuid,
                state: RunState,
                now: Timestamp,
                edit: impl FnOnce(&mut Run),
            ) -> Option<Change> {
                let mut run = self.active.remove(&id)?;
                let previous = run.state;
                run.state = state;
                run.finished = Some(now);
                run.updated = now;
                run.lease_expires = None;
                run.not_before = None;
                edit(&mut run);
                Some(Change { run, previous: Some(previous) })
            }
        }
    }

    /// Every kind of change, with the index checked against a fresh build after each.
    #[test]
    fn the_index_stays_in_step_through_every_operation() {
        let mut d = Deployment::new("d");
        d.retries = 1;
        d.retry_delay_seconds = 2.0;
        d.timeout_seconds = Some(20.0);
        d.schedule_timeout_seconds = Some(30.0);
        d.concurrency = Some(Concurrency::new("{{ params.k }}", 1));
        let mut q = RunQueue::new(vec![d.clone()], vec![], RateLimiter::default());
        let id = Uuid::from_u128;
        for n in 1..=4 {
            q.admit(run(n, &d, json!({"k": if n % 2 == 0 { "A" } else { "B" }}), 0), at(0));
            q.check_index();
        }
        assert_eq!(q.index.deadlines.len(), 4, "each waiting run has its schedule timeout indexed");
        assert_eq!(claim(&mut q, "w", "d", 4, 1), [1, 2], "one per key: the others wait for room");
        q.check_index();
        assert!(!q.index.heads.contains_key("d"), "both keys are full, so no group heads the claims");
        assert_eq!(q.index.deadlines.first(), Some(&(at(11), id(1))), "the lease (10 s) comes before the timeout");
        q.heartbeat(&id(1), "w", 10.0, None, at(5)).unwrap();
        q.check_index();
        assert_eq!(q.index.deadlines.first(), Some(&(at(11), id(2))), "run 1's lease moved to 15 s");
        let c = q.fail(&id(1), "w", "boom".into(), true, at(6)).unwrap();
        assert_eq!((c.run.state, c.run.not_before), (RunState::Scheduled, Some(at(8))));
        q.check_index();
        assert!(q.index.waiting.contains(&(at(8), id(1))), "the retry waits for its backoff");
        assert_eq!(claim(&mut q, "w", "d", 4, 7), [3], "key B has room again: its next run, not the backing-off one");
        q.check_index();
        q.complete(&id(3), "w", json!(1), at(8)).unwrap();
        q.check_index();
        assert_eq!(claim(&mut q, "w", "d", 4, 8), [1], "the backoff ended");
        q.check_index();
        assert!(q.index.waiting.is_empty() && q.index.promoted.is_empty());
        q.cancel(&id(4), at(9)).unwrap();
        q.check_index();
        let lapsed = q.due(at(11));
        assert_eq!(lapsed.len(), 1, "run 2's lease lapsed");
        assert_eq!(lapsed[0].run.reason, Some(StateReason::LeaseExpired));
        q.check_index();
        let timed_out = q.due(at(28));
        assert_eq!(timed_out[0].run.reason, Some(StateReason::TimedOut), "run 1 started at 8 ran 20 s");
        q.check_index();
        // Settings change: the deadlines and the keys' room are re-indexed.
        d.schedule_timeout_seconds = Some(1.0);
        d.concurrency = None;
        q.set_deployment(d.clone(), Compiled::default());
        q.check_index();
        let expired = q.due(at(28));
        assert_eq!(expired.len(), 1, "run 2 waits since 11 s, past the new 1 s schedule timeout");
        assert_eq!(expired[0].run.id, id(2));
        q.remove_deployment("d");
        q.check_index();
        assert_eq!(q.active_count(), 0);
        assert_eq!(q.index, Index { clock: q.index.clock, ..Index::default() }, "nothing left behind");
    }

    /// A clock that goes back puts a run whose backoff was over at the later time back to
    /// waiting, as a scan would.
    #[test]
    fn a_claim_at_an_earlier_time_sees_the_backoff_again() {
        let mut d = Deployment::new("d");
        d.retries = 1;
        d.retry_delay_seconds = 5.0;
        let mut q = RunQueue::new(vec![d.clone()], vec![], RateLimiter::default());
        q.admit(run(1, &d, json!({}), 0), at(0));
        assert_eq!(claim(&mut q, "w", "d", 1, 0), [1]);
        q.fail(&Uuid::from_u128(1), "w", "boom".into(), true, at(1)).unwrap();
        assert!(claim(&mut q, "w", "other", 1, 10).is_empty(), "a claim at 10 s for another deployment");
        assert!(q.index.promoted.contains(&(at(6), Uuid::from_u128(1))), "at 10 s the backoff (to 6 s) is over");
        assert!(claim(&mut q, "w", "d", 1, 3).is_empty(), "at 3 s it is not");
        q.check_index();
        assert_eq!(claim(&mut q, "w", "d", 1, 6), [1]);
        q.check_index();
    }

    /// The settings of one random deployment.
    fn deployment(name: &str, s: SettingsSeed) -> Deployment {
        let mut d = Deployment::new(name);
        d.retries = s.0;
        d.retry_delay_seconds = f64::from(s.1);
        d.timeout_seconds = s.2.map(f64::from);
        d.schedule_timeout_seconds = s.3.map(f64::from);
        d.concurrency_limit = s.4;
        d.concurrency = s.5.map(|(max, strategy)| {
            let strategy = match strategy {
                0 => ConcurrencyStrategy::GroupRoundRobin,
                1 => ConcurrencyStrategy::CancelNewest,
                _ => ConcurrencyStrategy::CancelInProgress,
            };
            Concurrency::new("{{ params.k }}", max).strategy(strategy)
        });
        d
    }

    type SettingsSeed = (u32, u8, Option<u8>, Option<u8>, Option<u32>, Option<(u32, u8)>);

    fn settings_seed() -> impl Strategy<Value = SettingsSeed> {
        (
            0u32..3,
            0u8..4,
            proptest::option::of(1u8..6),
            proptest::option::of(1u8..9),
            proptest::option::of(1u32..4),
            proptest::option::of((1u32..3, 0u8..3)),
        )
    }

    #[derive(Clone, Debug)]
    enum Op {
        Admit { deployment: usize, key: u8, priority: i32 },
        Claim { worker: u8, deployments: Vec<usize>, limit: u32, lease: u8 },
        Heartbeat { run: usize, worker: u8, lease: u8 },
        Complete { run: usize, worker: u8 },
        Fail { run: usize, worker: u8, retry: bool },
        Cancel { run: usize },
        Due,
        Advance(u8),
        Back(u8),
        Settings { deployment: usize, seed: SettingsSeed },
        Remove { deployment: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0usize..3, 0u8..4, -1i32..2).prop_map(|(deployment, key, priority)| Op::Admit { deployment, key, priority }),
            3 => (0u8..2, proptest::collection::vec(0usize..4, 1..3), 1u32..4, 1u8..6)
                .prop_map(|(worker, deployments, limit, lease)| Op::Claim { worker, deployments, limit, lease }),
            1 => (0usize..64, 0u8..2, 1u8..6).prop_map(|(run, worker, lease)| Op::Heartbeat { run, worker, lease }),
            1 => (0usize..64, 0u8..2).prop_map(|(run, worker)| Op::Complete { run, worker }),
            1 => (0usize..64, 0u8..2, any::<bool>()).prop_map(|(run, worker, retry)| Op::Fail { run, worker, retry }),
            1 => (0usize..64).prop_map(|run| Op::Cancel { run }),
            3 => Just(Op::Due),
            3 => (0u8..4).prop_map(Op::Advance),
            1 => (1u8..3).prop_map(Op::Back),
            1 => (0usize..3, settings_seed()).prop_map(|(deployment, seed)| Op::Settings { deployment, seed }),
            1 => (0usize..3).prop_map(|deployment| Op::Remove { deployment }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random sequences of every operation: the indexed queue answers exactly as the
        /// scanning one, and its index equals one built afresh after every step.
        #[test]
        fn the_indexed_queue_answers_as_a_scan_does(
            seeds in proptest::collection::vec(settings_seed(), 3),
            ops in proptest::collection::vec(op(), 1..120),
        ) {
            const NAMES: [&str; 4] = ["d0", "d1", "d2", "gone"];
            let deployments: Vec<Deployment> = seeds.iter().enumerate().map(|(i, s)| deployment(NAMES[i], *s)).collect();
            let mut indexed = RunQueue::new(deployments.clone(), vec![], RateLimiter::default());
            let mut scan = scan::ScanQueue::new(deployments.clone(), vec![]);
            let mut current = deployments;
            let mut now = 0i64;
            let mut ids: Vec<Uuid> = Vec::new();
            let worker = |w: u8| format!("w{w}");
            for op in ops {
                let pick = |n: usize| ids.get(n % ids.len().max(1)).copied().unwrap_or(Uuid::nil());
                match op {
                    Op::Admit { deployment, key, priority } => {
                        let id = Uuid::from_u128(ids.len() as u128 + 1);
                        ids.push(id);
                        let mut r = Run::scheduled(
                            id,
                            &current[deployment],
                            json!({ "k": format!("k{key}") }).as_object().unwrap().clone(),
                            None,
                            at(now),
                        );
                        r.priority = priority;
                        prop_assert_eq!(indexed.admit(r.clone(), at(now)), scan.admit(r, at(now)));
                    }
                    Op::Claim { worker: w, deployments, limit, lease } => {
                        let mut req = ClaimRequest::new(worker(w), deployments.iter().map(|d| NAMES[*d].to_owned()).collect());
                        req.limit = limit;
                        req.lease_seconds = f64::from(lease);
                        prop_assert_eq!(indexed.claim(&req, &[], at(now)).runs, scan.claim(&req, at(now)));
                    }
                    Op::Heartbeat { run, worker: w, lease } => {
                        let id = pick(run);
                        prop_assert_eq!(
                            indexed.heartbeat(&id, &worker(w), f64::from(lease), None, at(now)),
                            scan.heartbeat(&id, &worker(w), f64::from(lease), at(now))
                        );
                    }
                    Op::Complete { run, worker: w } => {
                        let id = pick(run);
                        prop_assert_eq!(
                            indexed.complete(&id, &worker(w), json!(1), at(now)),
                            scan.complete(&id, &worker(w), json!(1), at(now))
                        );
                    }
                    Op::Fail { run, worker: w, retry } => {
                        let id = pick(run);
                        prop_assert_eq!(
                            indexed.fail(&id, &worker(w), "boom".into(), retry, at(now)),
                            scan.fail(&id, &worker(w), "boom".into(), retry, at(now))
                        );
                    }
                    Op::Cancel { run } => {
                        let id = pick(run);
                        prop_assert_eq!(indexed.cancel(&id, at(now)), scan.cancel(&id, at(now)));
                    }
                    Op::Due => prop_assert_eq!(indexed.due(at(now)), scan.due(at(now))),
                    Op::Advance(s) => now += i64::from(s),
                    Op::Back(s) => now -= i64::from(s),
                    Op::Settings { deployment, seed } => {
                        let d = self::deployment(NAMES[deployment], seed);
                        current[deployment] = d.clone();
                        indexed.set_deployment(d.clone(), compile(&d).unwrap());
                        scan.set_deployment(d.clone(), compile(&d).unwrap());
                    }
                    Op::Remove { deployment } => {
                        indexed.remove_deployment(NAMES[deployment]);
                        scan.remove_deployment(NAMES[deployment]);
                    }
                }
                indexed.check_index();
                prop_assert_eq!(indexed.active_count(), scan.active_count());
                for id in &ids {
                    prop_assert_eq!(indexed.get(id), scan.get(id));
                }
            }
        }
    }

    /// Cost of one `due()` among 100,000 active runs, with none and with 100 due (schedule
    /// timeouts at -3600 s and 3600 s), and of one claim, indexed and scanning; printed, not
    /// asserted: `cargo test --release --lib due_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement for the record, not a check"]
    #[allow(clippy::disallowed_methods)] // it reads the wall clock to time, which is its point
    fn due_cost_among_100k_active_runs() {
        let mut d = Deployment::new("d");
        d.schedule_timeout_seconds = Some(3600.0);
        let runs: Vec<Run> = (0..100_000u128)
            .map(|n| {
                let created = if n < 100 { -7200 } else { 0 };
                Run::scheduled(Uuid::from_u128(n + 1), &d, Default::default(), None, at(created))
            })
            .collect();
        let mut indexed = RunQueue::new(vec![d.clone()], runs.clone(), RateLimiter::default());
        let mut scan = scan::ScanQueue::new(vec![d.clone()], runs);
        let timed = |f: &mut dyn FnMut() -> usize| {
            let start = std::time::Instant::now();
            let n = f();
            (n, start.elapsed())
        };
        let (n, nothing_due) = timed(&mut || indexed.due(at(-4000)).len());
        assert_eq!(n, 0);
        let (scan_n, scan_nothing) = timed(&mut || scan.due(at(-4000)).len());
        assert_eq!(scan_n, 0);
        let (n, hundred) = timed(&mut || indexed.due(at(0)).len());
        let (scan_n, scan_hundred) = timed(&mut || scan.due(at(0)).len());
        assert_eq!((n, scan_n), (100, 100));
        let mut req = ClaimRequest::new("w", vec!["d".into()]);
        req.limit = 10;
        let (n, claim) = timed(&mut || indexed.claim(&req, &[], at(0)).runs.len());
        let (scan_n, scan_claim) = timed(&mut || scan.claim(&req, at(0)).len());
        assert_eq!((n, scan_n), (10, 10));
        println!("100,000 active runs: due() with none due: indexed {nothing_due:?}, scan {scan_nothing:?}");
        println!("100,000 active runs: due() with 100 due: indexed {hundred:?}, scan {scan_hundred:?}");
        println!("99,900 ready runs: claim of 10: indexed {claim:?}, scan {scan_claim:?}");
    }

    #[test]
    fn retries_back_off_exponentially_then_fail() {
        let mut d = Deployment::new("d");
        d.retries = 2;
        d.retry_delay_seconds = 1.0;
        let mut q = RunQueue::new(vec![d.clone()], vec![], RateLimiter::default());
        q.admit(run(1, &d, json!({}), 0), at(0));
        assert_eq!(claim(&mut q, "w", "d", 1, 0), [1]);
        let c = q.fail(&Uuid::from_u128(1), "w", "boom".into(), true, at(1)).unwrap();
        assert_eq!((c.run.state, c.run.attempt, c.run.not_before), (RunState::Scheduled, 2, Some(at(2))));
        assert!(claim(&mut q, "w", "d", 1, 1).is_empty(), "not before the backoff");
        assert_eq!(claim(&mut q, "w", "d", 1, 2), [1]);
        let c = q.fail(&Uuid::from_u128(1), "w", "boom".into(), true, at(3)).unwrap();
        assert_eq!(c.run.not_before, Some(at(5)), "the second retry waits twice as long");
        assert_eq!(claim(&mut q, "w", "d", 1, 5), [1]);
        let c = q.fail(&Uuid::from_u128(1), "w", "boom".into(), true, at(6)).unwrap();
        assert_eq!((c.run.state, c.run.attempt), (RunState::Failed, 3));
        assert_eq!(q.active_count(), 0);
    }

    #[test]
    fn only_the_holder_reports_and_lapsed_leases_requeue() {
        let d = Deployment::new("d");
        let mut q = RunQueue::new(vec![d.clone()], vec![], RateLimiter::default());
        q.admit(run(1, &d, json!({}), 0), at(0));
        assert_eq!(claim(&mut q, "a", "d", 5, 0), [1]);
        assert!(matches!(q.complete(&Uuid::from_u128(1), "b", json!(1), at(1)), Err(Refusal::NotHeld(_))));
        q.heartbeat(&Uuid::from_u128(1), "a", 10.0, None, at(5)).unwrap();
        assert!(q.due(at(14)).is_empty(), "the heartbeat extended the lease to 15 s");
        let lapsed = q.due(at(15));
        assert_eq!(lapsed[0].run.reason, Some(StateReason::LeaseExpired));
        assert_eq!(claim(&mut q, "b", "d", 5, 16), [1]);
        assert!(matches!(q.complete(&Uuid::from_u128(1), "a", json!(1), at(17)), Err(Refusal::NotHeld(_))));
        let done = q.complete(&Uuid::from_u128(1), "b", json!(2), at(17)).unwrap();
        assert_eq!((done.run.state, done.run.output), (RunState::Completed, Some(json!(2))));
        assert!(matches!(q.complete(&Uuid::from_u128(1), "b", json!(2), at(18)), Err(Refusal::Final)));
    }

    #[test]
    fn timeouts_fail_attempts_and_unclaimed_runs_expire() {
        let mut d = Deployment::new("d");
        d.timeout_seconds = Some(2.0);
        d.schedule_timeout_seconds = Some(5.0);
        let mut q = RunQueue::new(vec![d.clone()], vec![], RateLimiter::default());
        q.admit(run(1, &d, json!({}), 0), at(0));
        q.admit(run(2, &d, json!({}), 0), at(0));
        assert_eq!(claim(&mut q, "w", "d", 1, 0), [1]);
        let changes = q.due(at(2));
        assert_eq!(changes.len(), 1);
        assert_eq!((changes[0].run.state, changes[0].run.reason), (RunState::Failed, Some(StateReason::TimedOut)));
        let changes = q.due(at(5));
        assert_eq!(changes[0].run.id, Uuid::from_u128(2));
        assert_eq!(changes[0].run.reason, Some(StateReason::ScheduleTimeout));
    }

    #[test]
    fn group_round_robin_takes_turns_between_keys() {
        let mut d = Deployment::new("d");
        d.concurrency = Some(Concurrency::new("{{ params.k }}", 2));
        let mut q = RunQueue::new(vec![d.clone()], vec![], RateLimiter::default());
        let mut n = 0;
        for k in ["A", "B", "C"] {
            for _ in 0..3 {
                n += 1;
                q.admit(run(n, &d, json!({"k": k}), n as i64), at(n as i64));
            }
        }
        let order: Vec<String> = (0..6)
            .map(|i| {
                let id = claim(&mut q, "w", "d", 1, 100 + i)[0];
                q.get(&Uuid::from_u128(id)).unwrap().concurrency_key.clone().unwrap()
            })
            .collect();
        assert_eq!(order, ["A", "B", "C", "A", "B", "C"]);
        assert!(claim(&mut q, "w", "d", 1, 200).is_empty(), "each key has its 2 slots taken");
    }

    #[test]
    fn cancel_strategies_keep_the_newest_or_the_oldest() {
        let mut d = Deployment::new("d");
        d.concurrency = Some(Concurrency::new("{{ params.k }}", 1).strategy(ConcurrencyStrategy::CancelInProgress));
        let mut q = RunQueue::new(vec![d.clone()], vec![], RateLimiter::default());
        q.admit(run(1, &d, json!({"k": "A"}), 0), at(0));
        claim(&mut q, "w", "d", 1, 0);
        let changes = q.admit(run(2, &d, json!({"k": "A"}), 1), at(1));
        assert_eq!(changes[1].run.id, Uuid::from_u128(1));
        assert_eq!(changes[1].run.reason, Some(StateReason::ConcurrencyCancelInProgress));
        assert!(q.admit(run(3, &d, json!({"k": "B"}), 1), at(1)).len() == 1, "other keys are untouched");

        let mut d = Deployment::new("e");
        d.concurrency = Some(Concurrency::new("{{ params.k }}", 1).strategy(ConcurrencyStrategy::CancelNewest));
        q.set_deployment(d.clone(), compile(&d).unwrap());
        q.admit(run(11, &d, json!({"k": "A"}), 0), at(0));
        let changes = q.admit(run(12, &d, json!({"k": "A"}), 1), at(1));
        assert_eq!((changes[0].run.state, changes.len()), (RunState::Cancelled, 1));
        assert_eq!(q.get(&Uuid::from_u128(11)).unwrap().state, RunState::Scheduled);
    }

    #[test]
    fn priority_and_deployment_limits() {
        let mut d = Deployment::new("d");
        d.concurrency_limit = Some(1);
        let mut q = RunQueue::new(vec![d.clone()], vec![], RateLimiter::default());
        q.admit(run(1, &d, json!({}), 0), at(0));
        let mut urgent = run(2, &d, json!({}), 1);
        urgent.priority = 3;
        q.admit(urgent, at(1));
        assert_eq!(claim(&mut q, "w", "d", 5, 2), [2], "higher priority first, one at a time");
        assert!(claim(&mut q, "w", "d", 5, 3).is_empty(), "the deployment's limit is taken");
    }

    #[test]
    fn a_key_that_does_not_render_fails_the_run() {
        let mut d = Deployment::new("d");
        d.concurrency = Some(Concurrency::new("{{ params.user }}", 1));
        let mut q = RunQueue::new(vec![d.clone()], vec![], RateLimiter::default());
        let changes = q.admit(run(1, &d, json!({}), 0), at(0));
        assert_eq!(changes[0].run.state, RunState::Failed);
        assert_eq!(changes[0].run.reason, Some(StateReason::ConcurrencyKeyError));
        assert!(changes[0].run.error.as_deref().unwrap().contains("empty key"));
    }
}
