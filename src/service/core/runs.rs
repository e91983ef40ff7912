//! Runs: created by hand or by firings, and the worker protocol (claim, heartbeat, complete,
//! fail, cancel, logs). The queue's rules live in [`crate::service::runs`]; this file stores
//! what they decide and queues the run-state events.

use serde_json::Value;
use uuid::Uuid;

use crate::model::child::MAX_CHILDREN_PER_RUN;
use crate::model::run::{merge_parameters, RunCause};
use crate::model::time::Timestamp;
use crate::model::{
    ChildRequest, ClaimRequest, ClaimedRun, Completion, Deployment, FailureReport, Firing, Heartbeat, HeartbeatReply,
    JsonPath, LogBatch, Problems, Run, RunParent, RunState, StateReason,
};
use crate::service::ServiceError;
use crate::store::{StoreError, Tx};

use super::super::runs::{Change, Refusal};
use super::{Core, Note, Outcome};

/// The run a firing creates: its id is the firing's, so it can only ever be created once.
pub(super) fn run_for(firing: &Firing, deployment: &Deployment, now: Timestamp) -> Result<Run, Problems> {
    let parameters = merge_parameters(&deployment.parameters, firing.parameters.as_ref())?;
    Ok(Run::scheduled(firing.id, deployment, parameters, Some(RunCause::of(firing)), now))
}

impl Core {
    /// A run of `deployment` asked for by hand, with `parameters` over its defaults.
    pub(super) fn create_run(
        &mut self,
        tx: &Tx,
        deployment: String,
        parameters: Option<Value>,
        priority: Option<i32>,
        now: Timestamp,
    ) -> Outcome<Run> {
        let Some(d) = tx.deployment(&deployment)? else {
            return Ok(Err(ServiceError::NotFound { what: "deployment", id: deployment }));
        };
        let parameters = match merge_parameters(&d.parameters, parameters.as_ref()) {
            Ok(p) => p,
            Err(problems) => return Ok(Err(ServiceError::Invalid(problems))),
        };
        let mut run = Run::scheduled(self.config.ids.new_id(), &d, parameters, None, now);
        if let Some(p) = priority {
            run.priority = p;
        }
        Ok(Ok(self.admit(tx, run, now)?))
    }

    /// A child run asked for by the worker running `parent` (`ctx.spawn`). A key the parent
    /// used before answers that child (and `false`): a retried parent finds what it made.
    pub(super) fn spawn_child(
        &mut self,
        tx: &Tx,
        parent: Uuid,
        request: ChildRequest,
        now: Timestamp,
    ) -> Outcome<(Run, bool)> {
        match self.runs.get(&parent) {
            Some(run) if run.state == RunState::Running && run.worker.as_deref() == Some(request.worker.as_str()) => {}
            Some(run) => {
                return Ok(Err(ServiceError::RunRefused {
                    code: "run_not_held",
                    message: format!(
                        "run {parent} is {:?}{}, not running on worker `{}`; only the attempt running it can spawn children",
                        run.state,
                        run.worker.as_deref().map(|w| format!(" on worker `{w}`")).unwrap_or_default(),
                        request.worker
                    ),
                }))
            }
            None => {
                return Ok(Err(match tx.run(&parent)? {
                    Some(run) => ServiceError::RunRefused {
                        code: "run_finished",
                        message: format!("run {parent} is already {:?}; a final run spawns no children", run.state),
                    },
                    None => ServiceError::NotFound { what: "run", id: parent.to_string() },
                }))
            }
        }
        if let Some(child) = tx.child(&parent, &request.key)? {
            if child.deployment != request.deployment {
                let mut problems = Problems::default();
                problems.add_rule(
                    &JsonPath::root().key("key"),
                    format!(
                        "run {parent}'s child `{}` is a run of `{}`, not `{}`; give each child its own key",
                        request.key, child.deployment, request.deployment
                    ),
                );
                return Ok(Err(ServiceError::Invalid(problems)));
            }
            return Ok(Ok((child, false)));
        }
        let made = tx.children(&parent, MAX_CHILDREN_PER_RUN)?.len();
        if made >= MAX_CHILDREN_PER_RUN {
            let mut problems = Problems::default();
            problems.add_rule(
                &JsonPath::root().key("key"),
                format!("run {parent} has {made} children; a run may have at most {MAX_CHILDREN_PER_RUN}"),
            );
            return Ok(Err(ServiceError::Invalid(problems)));
        }
        let Some(d) = tx.deployment(&request.deployment)? else {
            return Ok(Err(ServiceError::NotFound { what: "deployment", id: request.deployment }));
        };
        let parameters = match merge_parameters(&d.parameters, request.parameters_value().as_ref()) {
            Ok(p) => p,
            Err(problems) => return Ok(Err(ServiceError::Invalid(problems))),
        };
        let mut run = Run::scheduled(self.config.ids.new_id(), &d, parameters, None, now);
        run.parent = Some(RunParent { run: parent, key: request.key.clone() });
        tx.insert_child(&parent, &request.key, &run.id)?;
        Ok(Ok((self.admit(tx, run, now)?, true)))
    }

    /// Hands ready runs to a worker, each with the events that caused it.
    pub(super) fn claim(
        &mut self,
        tx: &Tx,
        request: &ClaimRequest,
        peers: &[crate::service::workers::Peer],
        now: Timestamp,
    ) -> Result<Vec<ClaimedRun>, StoreError> {
        let super::super::runs::Claimed { runs: changes, deferred } = self.runs.claim(request, peers, now);
        for (change, first) in deferred {
            // Still Scheduled, so `changed` emits nothing: the first wait on a rate limit is
            // announced (`tripwire.run.scheduled`, reason `rate_limited`), not every re-check.
            if first {
                let id = self.config.ids.new_id();
                self.outbox.push_back(change.run.state_event(change.previous, id, now));
            }
            self.changed(tx, vec![change], now)?;
        }
        self.store_windows(tx)?;
        let mut claimed = Vec::with_capacity(changes.len());
        for change in &changes {
            let ids = change.run.cause.as_ref().map(|c| c.triggering_events.clone()).unwrap_or_default();
            let mut events = Vec::new();
            for id in ids {
                events.extend(tx.event(&id)?);
            }
            claimed.push(ClaimedRun { run: change.run.clone(), events });
        }
        self.changed(tx, changes, now)?;
        Ok(claimed)
    }

    /// Extends a worker's lease; the answer says to stop when the run is no longer its own.
    pub(super) fn heartbeat(
        &mut self,
        tx: &Tx,
        id: Uuid,
        heartbeat: &Heartbeat,
        now: Timestamp,
    ) -> Outcome<HeartbeatReply> {
        Ok(match self.runs.heartbeat(&id, &heartbeat.worker, heartbeat.lease_seconds, heartbeat.timeout_seconds, now) {
            Ok(run) => {
                tx.put_run(&run)?;
                Ok(HeartbeatReply { run, cancel: false })
            }
            Err(Refusal::NotHeld(run)) => Ok(HeartbeatReply { run: *run, cancel: true }),
            Err(Refusal::Final) => match tx.run(&id)? {
                Some(run) => Ok(HeartbeatReply { run, cancel: true }),
                None => Err(ServiceError::NotFound { what: "run", id: id.to_string() }),
            },
        })
    }

    /// Stores the rate limit windows the queue changed (in the commit of the claims that
    /// took the units, or of the tick that found them ended).
    pub(super) fn store_windows(&mut self, tx: &Tx) -> Result<(), StoreError> {
        let changes = self.runs.limiter().take_changes();
        for window in &changes.put {
            tx.put_rate_window(window)?;
        }
        for key in &changes.deleted {
            tx.delete_rate_window(key)?;
        }
        Ok(())
    }

    /// A worker's output for the run it holds.
    pub(super) fn complete(&mut self, tx: &Tx, id: Uuid, completion: Completion, now: Timestamp) -> Outcome<Run> {
        let result = self.runs.complete(&id, &completion.worker, completion.output, now);
        self.settle(tx, id, &completion.worker, result, now)
    }

    /// A worker's failed attempt: retried or failed, by the deployment's retries.
    pub(super) fn fail(&mut self, tx: &Tx, id: Uuid, failure: FailureReport, now: Timestamp) -> Outcome<Run> {
        let result = self.runs.fail(&id, &failure.worker, failure.error, failure.retry, now);
        self.settle(tx, id, &failure.worker, result, now)
    }

    /// Cancels a waiting or running run.
    pub(super) fn cancel(&mut self, tx: &Tx, id: Uuid, now: Timestamp) -> Outcome<Run> {
        Ok(match self.runs.cancel(&id, now) {
            Ok(change) => {
                let run = change.run.clone();
                self.changed(tx, vec![change], now)?;
                Ok(run)
            }
            Err(_) => Err(match tx.run(&id)? {
                Some(run) => ServiceError::RunRefused {
                    code: "run_finished",
                    message: format!(
                        "run {id} is already {:?}; only waiting or running runs can be cancelled",
                        run.state
                    ),
                },
                None => ServiceError::NotFound { what: "run", id: id.to_string() },
            }),
        })
    }

    /// Appends chunks to a running run's stream (readers are woken after the commit). A
    /// final run's stream is closed (409); a full one refuses more (422). Answers how many.
    pub(super) fn append_stream(
        &mut self,
        tx: &Tx,
        id: Uuid,
        batch: crate::model::StreamBatch,
        now: Timestamp,
    ) -> Outcome<usize> {
        use crate::model::stream::MAX_STREAM_CHUNKS_PER_RUN;
        let Some(run) = self.runs.get(&id).cloned() else {
            return Ok(Err(match tx.run(&id)? {
                Some(run) => ServiceError::RunRefused {
                    code: "run_finished",
                    message: format!("run {id} is already {:?}; its stream is closed", run.state),
                },
                None => ServiceError::NotFound { what: "run", id: id.to_string() },
            }));
        };
        let len = tx.run_stream_len(&id)?;
        if len + batch.chunks.len() as u64 > MAX_STREAM_CHUNKS_PER_RUN {
            let mut problems = Problems::default();
            problems.add_rule(
                &crate::model::JsonPath::root().key("chunks"),
                format!("run {id}'s stream holds {len} chunks; at most {MAX_STREAM_CHUNKS_PER_RUN} are kept per run"),
            );
            return Ok(Err(ServiceError::Invalid(problems)));
        }
        let mut chunks: Vec<crate::model::StreamChunk> = batch
            .chunks
            .into_iter()
            .map(|data| crate::model::StreamChunk { seq: 0, at: now, attempt: run.attempt, data })
            .collect();
        tx.append_run_stream(&id, &mut chunks)?;
        self.runs_touched = true;
        Ok(Ok(chunks.len()))
    }

    /// Appends a flow's log lines to its run, for the attempt now running. Answers how many.
    pub(super) fn append_logs(&mut self, tx: &Tx, id: Uuid, batch: LogBatch, now: Timestamp) -> Outcome<usize> {
        let run = match self.runs.get(&id) {
            Some(run) => Some(run.clone()),
            None => tx.run(&id)?,
        };
        let Some(run) = run else {
            return Ok(Err(ServiceError::NotFound { what: "run", id: id.to_string() }));
        };
        let lines = batch.into_lines(run.attempt, now);
        tx.append_run_logs(&id, &lines)?;
        Ok(Ok(lines.len()))
    }

    /// A new run enters the queue (its concurrency strategy may cancel it or others).
    /// Returns the run as stored. Creating a run is insert-only: when its id was stored
    /// before, the store refuses it (logged and counted, see `Store::duplicate_ids`), the
    /// queue does not see it, and the first run is answered unchanged.
    pub(super) fn admit(&mut self, tx: &Tx, run: Run, now: Timestamp) -> Result<Run, StoreError> {
        if let Some(first) = tx.run(&run.id)? {
            let inserted = tx.insert_run(&run)?;
            debug_assert!(!inserted, "the run exists, so the insert is refused");
            return Ok(first);
        }
        let changes = self.runs.admit(run, now);
        let run = changes[0].run.clone();
        self.changed(tx, changes, now)?;
        Ok(run)
    }

    /// Stores changed runs (a new one insert-only) and queues the events of their state
    /// changes.
    pub(super) fn changed(&mut self, tx: &Tx, changes: Vec<Change>, now: Timestamp) -> Result<(), StoreError> {
        let mut changes = std::collections::VecDeque::from(changes);
        while let Some(change) = changes.pop_front() {
            if change.run.state == RunState::Cancelled && change.previous.is_some_and(|p| !p.is_final()) {
                // A cancelled parent cancels its children still waiting or running (and
                // theirs, as each comes round in this loop).
                for child in tx.children(&change.run.id, MAX_CHILDREN_PER_RUN)? {
                    let why = format!("its parent run {} was cancelled", change.run.id);
                    if let Ok(c) = self.runs.cancel_because(&child, StateReason::ParentCancelled, why, now) {
                        changes.push_back(c);
                    }
                }
            }
            if change.previous.is_none() {
                // Only `admit` makes new runs, and it refused a stored id already: a refusal
                // here is logged and counted by the store, and the first run stays.
                if !tx.insert_run(&change.run)? {
                    continue;
                }
            } else {
                tx.put_run(&change.run)?;
            }
            self.runs_touched = true;
            if change.previous != Some(change.run.state) {
                let id = self.config.ids.new_id();
                self.outbox.push_back(change.run.state_event(change.previous, id, now));
                self.notes.push(Note::Run {
                    id: change.run.id,
                    deployment: change.run.deployment.clone(),
                    previous: change.previous,
                    state: change.run.state,
                    attempt: change.run.attempt,
                    worker: change.run.worker.clone(),
                });
            }
        }
        Ok(())
    }

    /// The answer to a worker's result: the run as stored, or why the result was refused.
    fn settle(
        &mut self,
        tx: &Tx,
        id: Uuid,
        worker: &str,
        result: Result<Change, Refusal>,
        now: Timestamp,
    ) -> Outcome<Run> {
        Ok(match result {
            Ok(change) => {
                let run = change.run.clone();
                self.changed(tx, vec![change], now)?;
                Ok(run)
            }
            Err(Refusal::NotHeld(run)) => Err(ServiceError::RunRefused {
                code: "run_not_held",
                message: match &run.worker {
                    Some(other) => {
                        format!("run {id} is held by worker `{other}`, not `{worker}`; the result was discarded")
                    }
                    None => format!(
                        "run {id} is {:?} and held by no worker (its lease lapsed); the result was discarded",
                        run.state
                    ),
                },
            }),
            Err(Refusal::Final) => match tx.run(&id)? {
                Some(run) => Err(ServiceError::RunRefused {
                    code: "run_finished",
                    message: format!(
                        "run {id} is already {:?}{}; the result was discarded",
                        run.state,
                        run.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
                    ),
                }),
                None => Err(ServiceError::NotFound { what: "run", id: id.to_string() }),
            },
        })
    }
}
