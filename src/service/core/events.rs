//! Events into the engine: ingest, the periodic tick, recording what a step fired, and the
//! run-state events that runs feed back in.

use std::collections::HashSet;
use std::sync::Arc;

use crate::model::time::Timestamp;
use crate::model::{Event, Firing};
use crate::store::{Ingested, PreparedEvent, StoreError, Tx};

use super::runs::run_for;
use super::{render_step, Core, Note, GAUGE_EVERY, MAX_CASCADE, PRUNE_EVERY};
use crate::engine::{PendingFiring, Step};
use crate::service::IngestReport;

impl Core {
    /// Stores each new event and evaluates it, in order; an id stored before is
    /// reported as a duplicate and not evaluated again.
    pub(super) fn ingest(
        &mut self,
        tx: &Tx,
        events: Vec<PreparedEvent>,
        now: Timestamp,
        accepted: &mut Vec<Arc<Event>>,
    ) -> Result<IngestReport, StoreError> {
        let mut report = IngestReport::default();
        for mut prepared in events {
            report.ids.push(prepared.event.id);
            // The store knows whether a follower's leader was processed (the engine forgets).
            let leader_processed = match tx.ingest_event(&mut prepared, now)? {
                Ingested::Duplicate => {
                    report.duplicates.push(prepared.event.id);
                    continue;
                }
                Ingested::Stored { leader_processed } => leader_processed,
            };
            let event = Arc::new(prepared.event);
            let step = self.engine.on_event_with(now, event.clone(), leader_processed);
            self.record(tx, step, now)?;
            accepted.push(event);
            self.drain_outbox(tx, accepted)?;
        }
        Ok(report)
    }

    /// The periodic work: proactive windows that closed, runs whose timers are due, and
    /// pruning past the retention period.
    pub(super) fn tick(&mut self, tx: &Tx, now: Timestamp) -> Result<(), StoreError> {
        self.advance_for_change(tx, now)?;
        let due = self.runs.due(now);
        self.changed(tx, due, now)?;
        self.store_windows(tx)?;
        if self.last_prune.is_none_or(|t| now.since(t) >= PRUNE_EVERY) {
            self.last_prune = Some(now);
            let pruned = tx.prune_events(now.minus(self.config.retention), 10_000)?;
            if pruned > 0 {
                tracing::info!(pruned, "old events pruned");
            }
            self.engine.compact();
        }
        if self.last_gauged.is_none_or(|t| now.since(t) >= GAUGE_EVERY) {
            self.last_gauged = Some(now);
            self.gauge_buckets();
        }
        Ok(())
    }

    /// Sets the live-bucket gauge of every installed trigger, and drops those of triggers
    /// that are gone.
    fn gauge_buckets(&mut self) {
        let mut seen = HashSet::with_capacity(self.gauged.len());
        for (id, count) in self.engine.bucket_counts() {
            self.metrics.live_buckets.get_or_create(&vec![("trigger", id.to_owned())]).set(count as i64);
            seen.insert(id.to_owned());
        }
        for gone in self.gauged.difference(&seen) {
            self.metrics.live_buckets.remove(&vec![("trigger", gone.clone())]);
        }
        self.gauged = seen;
    }

    /// Before a trigger changes, the periodic work due so far happens, so that the change
    /// applies at the same point as in a replay of the same inputs.
    pub(super) fn advance_for_change(&mut self, tx: &Tx, now: Timestamp) -> Result<(), StoreError> {
        let step = self.engine.on_tick(now);
        self.record(tx, step, now)?;
        Ok(())
    }

    /// Renders a decided step, stores its firings and creates the runs they ask for.
    fn record(&mut self, tx: &Tx, step: Step<PendingFiring>, now: Timestamp) -> Result<(), StoreError> {
        let step = render_step(&mut self.engine, step, |id| tx.event(id))?;
        for overflow in &step.overflows {
            tracing::warn!(trigger = %overflow.trigger, reason = %overflow.reason, "an event was not counted");
        }
        for fault in &step.faults {
            tracing::error!(trigger = %fault.trigger, error = %fault.error, "trigger disabled");
            if let Some(mut record) = tx.trigger(&fault.trigger)? {
                record.definition.enabled = false;
                record.error = Some(fault.error.clone());
                record.updated = now;
                tx.put_trigger(&record)?;
            }
        }
        for firing in step.firings {
            self.file_firing(tx, firing, now)?;
        }
        Ok(())
    }

    /// Stores one firing and creates the run it asks for, with the deployment's settings as
    /// the run queue holds them (kept in step with the store on every put and delete).
    /// Insert-only: a firing whose id was stored before (a repeat, e.g. after recovery) is
    /// refused by the store, logged and counted (`Store::duplicate_ids`), and creates no run;
    /// the first firing and its run stay as they are.
    fn file_firing(&mut self, tx: &Tx, mut firing: Firing, now: Timestamp) -> Result<(), StoreError> {
        let mut run = None;
        if let Some(name) = &firing.deployment {
            if firing.error.is_none() {
                match self.runs.deployment(name).map(|d| run_for(&firing, d, now)) {
                    Some(Ok(r)) => run = Some(r),
                    Some(Err(problems)) => firing.error = Some(format!("no run was created: {problems}")),
                    None => firing.error = Some(format!("deployment `{name}` does not exist; no run was created")),
                }
            }
        }
        if !tx.insert_firing(&firing)? {
            return Ok(());
        }
        let bucket = firing.bucket.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        self.notes.push(Note::Fired {
            trigger: firing.trigger.clone(),
            bucket,
            run: run.as_ref().map(|r: &crate::model::Run| r.id),
            deployment: firing.deployment.clone(),
            error: firing.error.clone(),
        });
        if let Some(run) = run {
            self.admit(tx, run, now)?;
        }
        Ok(())
    }

    /// Stores and evaluates the run-state events queued so far, and those they cause.
    pub(super) fn drain_outbox(&mut self, tx: &Tx, accepted: &mut Vec<Arc<Event>>) -> Result<(), StoreError> {
        let mut evaluated = 0;
        while let Some(event) = self.outbox.pop_front() {
            let now = self.now();
            let mut prepared = PreparedEvent::new(event);
            tx.put_event(&mut prepared, now)?;
            let event = Arc::new(prepared.event);
            if evaluated < MAX_CASCADE {
                evaluated += 1;
                let step = self.engine.on_event(now, event.clone());
                self.record(tx, step, now)?;
            } else {
                tracing::warn!(
                    event = %event.event,
                    id = %event.id,
                    "more than {MAX_CASCADE} run events in one step (a trigger that runs its own deployment?); \
                     stored without evaluating"
                );
            }
            accepted.push(event);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;
    use tokio::sync::{broadcast, watch};
    use uuid::Uuid;

    use super::*;
    use crate::model::{ClaimRequest, Completion, Deployment, RunState};
    use crate::service::metrics::Metrics;
    use crate::service::ServiceConfig;
    use crate::store::Store;

    /// A firing repeated under the same id (as a recovery that fired twice would make it):
    /// the first firing and its run, completed by then, stay as they were; the repeat is
    /// refused, creates no run and is counted once.
    #[test]
    fn a_repeated_firing_keeps_the_first_run_and_is_counted() {
        let dir = std::env::temp_dir().join(format!("tripwire-core-repeat-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(Store::open(&dir).unwrap());
        let (events, _) = broadcast::channel(16);
        let changed = Arc::new(watch::channel(0u64).0);
        let mut core = Core::recover(store.clone(), ServiceConfig::new(&dir), events, changed, Metrics::new()).unwrap();
        let now = Timestamp::from_micros(1_000_000);
        let id = Uuid::from_u128(42);
        let firing = Firing {
            id,
            trigger: "t".into(),
            bucket: BTreeMap::new(),
            at: now,
            triggered: now,
            triggering_event: None,
            triggering_events: vec![],
            deployment: Some("d".into()),
            parameters: Some(json!({"n": 1})),
            filter: None,
            error: None,
        };

        let tx = store.begin().unwrap();
        core.put_deployment(&tx, Deployment::new("d"), false, now).unwrap().unwrap();
        core.file_firing(&tx, firing.clone(), now).unwrap();
        let claimed = core.claim(&tx, &ClaimRequest::new("w", vec!["d".into()]), &[], now).unwrap();
        assert_eq!(claimed.len(), 1);
        let done = Completion { worker: "w".into(), output: json!("first") };
        core.complete(&tx, id, done, now).unwrap().unwrap();
        tx.commit().unwrap();
        let first = store.run(&id).unwrap().unwrap();
        assert_eq!(first.state, RunState::Completed);
        assert_eq!(store.duplicate_ids(), 0);

        let queued = core.outbox.len();
        let tx = store.begin().unwrap();
        let mut again = firing.clone();
        again.parameters = Some(json!({"n": 2}));
        core.file_firing(&tx, again, now.plus(crate::model::time::Span::seconds(5))).unwrap();
        tx.commit().unwrap();
        assert_eq!(store.duplicate_ids(), 1, "the repeat is counted once (not again for its run)");
        assert_eq!(store.run(&id).unwrap(), Some(first), "the first run is untouched");
        assert_eq!(store.firings(10, |_| true).unwrap(), [firing], "the first firing is the only one");
        assert_eq!(core.runs.active_count(), 0, "the repeat made no run");
        assert_eq!(core.outbox.len(), queued, "and no run-state event");

        // A run created under a stored id (not through a firing) is refused the same way.
        let tx = store.begin().unwrap();
        let d = Deployment::new("d");
        let repeat = crate::model::Run::scheduled(id, &d, Default::default(), None, now);
        let answered = core.admit(&tx, repeat, now).unwrap();
        tx.commit().unwrap();
        assert_eq!(answered.state, RunState::Completed, "the answer is the first run");
        assert_eq!(store.duplicate_ids(), 2);
        assert_eq!(core.runs.active_count(), 0);
        drop(core);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
