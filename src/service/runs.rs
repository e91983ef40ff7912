//! The run queue: which runs wait, which run, and what their deployment's settings do to them
//! (retries with backoff, execution and schedule timeouts, leases, concurrency limits and
//! strategies, priority). Pure decisions on an in-memory view of the active runs: the core
//! persists every run this returns and emits its state change as an event.

use std::collections::HashMap;

use serde_json::Value;
use uuid::Uuid;

use crate::engine::template::KeyTemplate;
use crate::model::time::{Span, Timestamp};
use crate::model::{ClaimRequest, ConcurrencyStrategy, Deployment, JsonPath, Problems, Run, RunState, StateReason};

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
}

/// The concurrency group of a run: its deployment and its rendered key ("" without one).
type Group = (String, String);

fn group_of(run: &Run) -> Group {
    (run.deployment.clone(), run.concurrency_key.clone().unwrap_or_default())
}

fn seconds(s: f64) -> Span {
    Span::from_secs_f64(s).unwrap_or(Span::seconds(i64::MAX / 2_000_000))
}

/// Compiles a deployment's concurrency key, for validation before it is stored.
pub(super) fn compile_key(deployment: &Deployment) -> Result<Option<KeyTemplate>, Problems> {
    let Some(c) = &deployment.concurrency else { return Ok(None) };
    let mut problems = Problems::default();
    let key = KeyTemplate::compile(&c.key, &JsonPath::root().key("concurrency").key("key"), &mut problems);
    problems.into_result(key)
}

#[derive(Default)]
pub(super) struct RunQueue {
    active: HashMap<Uuid, Run>,
    settings: HashMap<String, Settings>,
    /// When each group was last given a run (a claim counter), for round-robin fairness.
    served: HashMap<Group, u64>,
    claims: u64,
}

impl RunQueue {
    pub fn new(deployments: Vec<Deployment>, active: Vec<Run>) -> RunQueue {
        let mut queue = RunQueue::default();
        for d in deployments {
            let key = match compile_key(&d) {
                Ok(key) => key,
                Err(problems) => {
                    tracing::error!(deployment = %d.name, %problems, "stored concurrency key does not compile");
                    None
                }
            };
            queue.set_deployment(d, key);
        }
        queue.active = active.into_iter().filter(|r| !r.is_final()).map(|r| (r.id, r)).collect();
        queue
    }

    /// Installs or replaces a deployment's settings, with its concurrency key as compiled by
    /// [`compile_key`] (once: each run's key is rendered from it, never parsed again).
    pub fn set_deployment(&mut self, deployment: Deployment, key: Option<KeyTemplate>) {
        self.settings.insert(deployment.name.clone(), Settings { deployment, key });
    }

    pub fn remove_deployment(&mut self, name: &str) {
        self.settings.remove(name);
    }

    pub fn get(&self, id: &Uuid) -> Option<&Run> {
        self.active.get(id)
    }

    pub fn active_count(&self) -> usize {
        self.active.len()
    }

    /// A new run enters: its concurrency key is rendered and its deployment's strategy
    /// applied. Returns the new run (possibly already final) and the runs it cancelled.
    pub fn admit(&mut self, mut run: Run, now: Timestamp) -> Vec<Change> {
        let mut changes = Vec::new();
        let settings = self.settings.get(&run.deployment);
        let concurrency = settings.and_then(|s| s.deployment.concurrency.clone());
        if let (Some(c), Some(key)) = (&concurrency, settings.and_then(|s| s.key.as_ref())) {
            match key.render(&run.parameters) {
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
    pub fn claim(&mut self, request: &ClaimRequest, now: Timestamp) -> Vec<Change> {
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
                let deployment_ok = settings
                    .and_then(|d| d.concurrency_limit)
                    .is_none_or(|limit| running_per_deployment.get(&r.deployment).copied().unwrap_or(0) < limit);
                let key_ok = match (settings.and_then(|d| d.concurrency.as_ref()), &r.concurrency_key) {
                    (Some(c), Some(_)) => running_per_group.get(&group_of(r)).copied().unwrap_or(0) < c.max_runs,
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
    pub fn heartbeat(&mut self, id: &Uuid, worker: &str, lease_seconds: f64, now: Timestamp) -> Result<Run, Refusal> {
        let run = self.held(id, worker)?;
        run.lease_expires = Some(now.plus(seconds(lease_seconds)));
        Ok(run.clone())
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
        let reason = (!retry).then_some(StateReason::InvalidParameters);
        self.after_failure(*id, error, retry, reason, now).ok_or(Refusal::Final)
    }

    /// Cancels an active run; its worker learns it at its next heartbeat.
    pub fn cancel(&mut self, id: &Uuid, now: Timestamp) -> Result<Change, Refusal> {
        self.finish(*id, RunState::Cancelled, now, |r| {
            r.reason = Some(StateReason::CancelledByUser);
            r.error = Some("cancelled through the API".into());
        })
        .ok_or(Refusal::Final)
    }

    /// The time-driven changes due by `now`: lapsed leases (the run waits again), attempts
    /// past their timeout (failed, perhaps retried), runs nobody claimed in time (cancelled).
    pub fn due(&mut self, now: Timestamp) -> Vec<Change> {
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
    fn finish(&mut self, id: Uuid, state: RunState, now: Timestamp, edit: impl FnOnce(&mut Run)) -> Option<Change> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Concurrency;
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
        q.claim(&req, at(now)).into_iter().map(|c| c.run.id.as_u128()).collect()
    }

    #[test]
    fn retries_back_off_exponentially_then_fail() {
        let mut d = Deployment::new("d");
        d.retries = 2;
        d.retry_delay_seconds = 1.0;
        let mut q = RunQueue::new(vec![d.clone()], vec![]);
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
        let mut q = RunQueue::new(vec![d.clone()], vec![]);
        q.admit(run(1, &d, json!({}), 0), at(0));
        assert_eq!(claim(&mut q, "a", "d", 5, 0), [1]);
        assert!(matches!(q.complete(&Uuid::from_u128(1), "b", json!(1), at(1)), Err(Refusal::NotHeld(_))));
        q.heartbeat(&Uuid::from_u128(1), "a", 10.0, at(5)).unwrap();
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
        let mut q = RunQueue::new(vec![d.clone()], vec![]);
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
        let mut q = RunQueue::new(vec![d.clone()], vec![]);
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
        let mut q = RunQueue::new(vec![d.clone()], vec![]);
        q.admit(run(1, &d, json!({"k": "A"}), 0), at(0));
        claim(&mut q, "w", "d", 1, 0);
        let changes = q.admit(run(2, &d, json!({"k": "A"}), 1), at(1));
        assert_eq!(changes[1].run.id, Uuid::from_u128(1));
        assert_eq!(changes[1].run.reason, Some(StateReason::ConcurrencyCancelInProgress));
        assert!(q.admit(run(3, &d, json!({"k": "B"}), 1), at(1)).len() == 1, "other keys are untouched");

        let mut d = Deployment::new("e");
        d.concurrency = Some(Concurrency::new("{{ params.k }}", 1).strategy(ConcurrencyStrategy::CancelNewest));
        q.set_deployment(d.clone(), compile_key(&d).unwrap());
        q.admit(run(11, &d, json!({"k": "A"}), 0), at(0));
        let changes = q.admit(run(12, &d, json!({"k": "A"}), 1), at(1));
        assert_eq!((changes[0].run.state, changes.len()), (RunState::Cancelled, 1));
        assert_eq!(q.get(&Uuid::from_u128(11)).unwrap().state, RunState::Scheduled);
    }

    #[test]
    fn priority_and_deployment_limits() {
        let mut d = Deployment::new("d");
        d.concurrency_limit = Some(1);
        let mut q = RunQueue::new(vec![d.clone()], vec![]);
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
        let mut q = RunQueue::new(vec![d.clone()], vec![]);
        let changes = q.admit(run(1, &d, json!({}), 0), at(0));
        assert_eq!(changes[0].run.state, RunState::Failed);
        assert_eq!(changes[0].run.reason, Some(StateReason::ConcurrencyKeyError));
        assert!(changes[0].run.error.as_deref().unwrap().contains("empty key"));
    }
}
