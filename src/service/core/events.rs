//! Events into the engine: ingest, the periodic tick, recording what a step fired, and the
//! run-state events that runs feed back in.

use std::sync::Arc;

use crate::model::time::Timestamp;
use crate::model::Event;
use crate::store::{LogEntry, StoreError, Tx};

use super::runs::run_for;
use super::{render_step, Core, MAX_CASCADE, PRUNE_EVERY};
use crate::engine::{PendingFiring, Step};
use crate::service::IngestReport;

impl Core {
    /// Stores each new event, logs it and evaluates it, in order; an id stored before is
    /// reported as a duplicate and not evaluated again.
    pub(super) fn ingest(
        &mut self,
        tx: &Tx,
        events: Vec<Event>,
        now: Timestamp,
        accepted: &mut Vec<Arc<Event>>,
    ) -> Result<IngestReport, StoreError> {
        let mut report = IngestReport::default();
        for mut event in events {
            report.ids.push(event.id);
            if tx.has_event(&event.id)? {
                report.duplicates.push(event.id);
                continue;
            }
            event.received = Some(now);
            let seq = tx.put_event(&event)?;
            self.log(tx, &LogEntry::Event { seq, at: now })?;
            let event = Arc::new(event);
            let step = self.engine.on_event(now, event.clone());
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
        if self.last_prune.is_none_or(|t| now.since(t) >= PRUNE_EVERY) {
            self.last_prune = Some(now);
            let pruned = tx.prune_events(now.minus(self.config.retention), 10_000)?;
            if pruned > 0 {
                tracing::info!(pruned, "old events pruned");
            }
            self.engine.compact();
        }
        Ok(())
    }

    /// Before a trigger changes, the periodic work due so far happens (and is logged if it
    /// fired), so that replaying the log applies the change at the same point.
    pub(super) fn advance_for_change(&mut self, tx: &Tx, now: Timestamp) -> Result<(), StoreError> {
        let step = self.engine.on_tick(now);
        if step.has_effects() {
            self.log(tx, &LogEntry::Tick { at: now })?;
            self.record(tx, step, now)?;
        }
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
        for mut firing in step.firings {
            if let Some(name) = firing.deployment.clone() {
                if firing.error.is_none() {
                    match tx.deployment(&name)? {
                        Some(d) => match run_for(&firing, &d, now) {
                            Ok(run) => {
                                self.admit(tx, run, now)?;
                            }
                            Err(problems) => {
                                firing.error = Some(format!("no run was created: {problems}"));
                            }
                        },
                        None => firing.error = Some(format!("deployment `{name}` does not exist; no run was created")),
                    }
                }
            }
            if let Some(error) = &firing.error {
                tracing::warn!(trigger = %firing.trigger, %error, "firing without a run");
            }
            tx.put_firing(&firing)?;
        }
        Ok(())
    }

    /// Stores and evaluates the run-state events queued so far, and those they cause.
    pub(super) fn drain_outbox(&mut self, tx: &Tx, accepted: &mut Vec<Arc<Event>>) -> Result<(), StoreError> {
        let mut evaluated = 0;
        while let Some(mut event) = self.outbox.pop_front() {
            let now = self.now();
            event.received = Some(now);
            let seq = tx.put_event(&event)?;
            let event = Arc::new(event);
            if evaluated < MAX_CASCADE {
                evaluated += 1;
                self.log(tx, &LogEntry::Event { seq, at: now })?;
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
