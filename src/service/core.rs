//! The core thread: owns the engine and the store's single writer. Decide, commit, then act:
//! a batch of commands is applied to the engine and written in one transaction; replies and
//! event notifications go out only after the commit.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use uuid::Uuid;

use crate::engine::compile::CompiledScopeFilter;
use crate::engine::{compile, panic_message, BucketPage, BucketQuery, Engine, EngineConfig, PendingFiring, Step};
use crate::model::limits;
use crate::model::run::{merge_parameters, RunCause, RUN_EVENT_PREFIX};
use crate::model::time::{Span, Timestamp};
use crate::model::{
    ClaimRequest, ClaimedRun, Completion, Deployment, Event, FailureReport, Firing, Heartbeat, HeartbeatReply,
    JsonPath, LogBatch, LogLine, Problems, Resource, Run, ScopeFilter, TriggerDefinition, TriggerSync,
};
use crate::store::{LogEntry, Snapshot, Store, StoreError, TriggerRecord, Tx};

use super::clock::new_id;
use super::runs::{compile_key, Change, Refusal, RunQueue};
use super::{IngestReport, ServiceConfig, ServiceError};

type Reply<T> = oneshot::Sender<Result<T, ServiceError>>;

/// What the core is asked to do.
#[allow(clippy::large_enum_variant)] // commands are moved once through a channel
pub(super) enum Command {
    Ingest {
        events: Vec<Event>,
        reply: Reply<IngestReport>,
    },
    Tick {
        reply: Option<oneshot::Sender<()>>,
    },
    PutTrigger {
        definition: Box<TriggerDefinition>,
        create_only: bool,
        reply: Reply<(TriggerRecord, bool)>,
    },
    DeleteTrigger {
        id: String,
        reply: Reply<()>,
    },
    SetEnabled {
        id: String,
        enabled: bool,
        reply: Reply<TriggerRecord>,
    },
    Buckets {
        id: String,
        query: BucketQuery,
        reply: Reply<Option<BucketPage>>,
    },
    PutDeployment {
        deployment: Deployment,
        create_only: bool,
        reply: Reply<(Deployment, bool)>,
    },
    DeleteDeployment {
        name: String,
        reply: Reply<()>,
    },
    CreateRun {
        deployment: String,
        parameters: Option<Value>,
        priority: Option<i32>,
        reply: Reply<Run>,
    },
    SyncTriggers {
        deployment: String,
        definitions: Vec<TriggerDefinition>,
        reply: Reply<TriggerSync>,
    },
    Claim {
        request: ClaimRequest,
        reply: Reply<Vec<ClaimedRun>>,
    },
    Heartbeat {
        id: Uuid,
        heartbeat: Heartbeat,
        reply: Reply<HeartbeatReply>,
    },
    Complete {
        id: Uuid,
        completion: Completion,
        reply: Reply<Run>,
    },
    Fail {
        id: Uuid,
        failure: FailureReport,
        reply: Reply<Run>,
    },
    Cancel {
        id: Uuid,
        reply: Reply<Run>,
    },
    AppendLogs {
        id: Uuid,
        batch: LogBatch,
        reply: Reply<usize>,
    },
    PutFilter {
        filter: ScopeFilter,
        reply: Reply<ScopeFilter>,
    },
    DeleteFilter {
        id: Uuid,
        reply: Reply<()>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// Panics inside a batch, for the tests of what the core does then.
    #[cfg(test)]
    Explode {
        reply: Reply<()>,
    },
}

/// Processed event ids the engine remembers itself; the store deduplicates for the whole
/// retention period.
const ENGINE_SEEN_WINDOW: Span = Span::minutes(60);
/// Commands folded into one transaction.
const MAX_BATCH: usize = 256;
/// How often old events are pruned.
const PRUNE_EVERY: Span = Span::seconds(60);
/// Run-state events one command may feed back into the engine. A trigger on
/// `tripwire.run.scheduled` that runs its own deployment would otherwise loop forever; the
/// events past the cap are stored but not evaluated, and a warning says why.
const MAX_CASCADE: usize = 1000;

/// Batches in a row that may fail (each rebuilt from storage) before the core gives up.
const MAX_FAILED_BATCHES: u32 = 3;

/// What became of a batch.
enum Applied {
    Committed,
    /// A shutdown was asked for.
    Stopped,
    /// Nothing was committed, for this reason.
    Failed(String),
}

pub(super) struct Core {
    store: Arc<Store>,
    engine: Engine,
    config: ServiceConfig,
    events: broadcast::Sender<Arc<Event>>,
    entries_since_snapshot: u64,
    last_prune: Option<Timestamp>,
    runs: RunQueue,
    /// Run-state events waiting to be stored and evaluated, in order.
    outbox: VecDeque<Event>,
    /// Bumped after a commit that changed runs, so that waiting claims look again.
    runs_changed: Arc<watch::Sender<u64>>,
    runs_touched: bool,
}

/// Renders a decided step: the past events its firings need are read with `fetch` (the write
/// transaction, which also holds the events accepted earlier in the batch, or the store when
/// recovering). A store error is the command's error; an event that is gone (pruned by
/// retention) renders as none, as the engine documents.
fn render_step(
    engine: &mut Engine,
    step: Step<PendingFiring>,
    mut fetch: impl FnMut(&Uuid) -> Result<Option<Event>, StoreError>,
) -> Result<Step, StoreError> {
    let mut events = HashMap::new();
    for id in step.needs() {
        if let Some(event) = fetch(&id)? {
            events.insert(id, Arc::new(event));
        }
    }
    Ok(engine.render(step, &events))
}

fn install_filter(engine: &mut Engine, filter: ScopeFilter) {
    let id = filter.id;
    match CompiledScopeFilter::new(filter, &JsonPath::root()) {
        Ok(c) => engine.put_scope_filter(c),
        Err(problems) => tracing::error!(filter = %id, %problems, "stored filter does not compile; skipped"),
    }
}

fn engine_config() -> EngineConfig {
    EngineConfig { seen_window: Some(ENGINE_SEEN_WINDOW), ..EngineConfig::default() }
}

fn install(engine: &mut Engine, definition: &TriggerDefinition) {
    match compile(definition, &JsonPath::root()) {
        Ok(c) => engine.upsert(c),
        // Definitions are validated before they are stored; one that no longer compiles
        // (a newer version's syntax) is skipped rather than stopping the server.
        Err(problems) => {
            tracing::error!(trigger = %definition.id, %problems, "stored trigger does not compile; skipped")
        }
    }
}

impl Core {
    /// Rebuilds the engine: the latest snapshot, then every log entry after it. Firings that
    /// replaying produces were committed with their entries already, so they are dropped.
    pub(super) fn recover(
        store: Arc<Store>,
        config: ServiceConfig,
        events: broadcast::Sender<Arc<Event>>,
        runs_changed: Arc<watch::Sender<u64>>,
    ) -> Result<Core, ServiceError> {
        let mut engine = Engine::new(engine_config());
        let mut from = 0;
        if let Some(snapshot) = store.snapshot()? {
            for d in &snapshot.definitions {
                install(&mut engine, d);
            }
            for f in snapshot.filters {
                install_filter(&mut engine, f);
            }
            engine.restore(snapshot.state);
            from = snapshot.log_pos;
        }
        let entries = store.log_after(from)?;
        let replayed = entries.len();
        // Firings were stored when they were first made; rendering again only disables the
        // definitions whose rendering panicked then.
        let render = |engine: &mut Engine, step| render_step(engine, step, |id| store.event(id)).map(drop);
        for (_, entry) in entries {
            match entry {
                LogEntry::Event { seq, at } => match store.event_by_seq(seq)? {
                    Some(event) => {
                        let step = engine.on_event(at, event);
                        render(&mut engine, step)?;
                    }
                    None => tracing::warn!(seq, "logged event was pruned before it was snapshotted"),
                },
                LogEntry::Tick { at } => {
                    let step = engine.on_tick(at);
                    render(&mut engine, step)?;
                }
                LogEntry::PutTrigger { definition, at } => {
                    let step = engine.on_tick(at);
                    render(&mut engine, step)?;
                    install(&mut engine, &definition);
                }
                LogEntry::DeleteTrigger { id, at } => {
                    let step = engine.on_tick(at);
                    render(&mut engine, step)?;
                    engine.remove(&id);
                }
                LogEntry::PutFilter { filter, at } => {
                    let step = engine.on_tick(at);
                    render(&mut engine, step)?;
                    install_filter(&mut engine, filter);
                }
                LogEntry::DeleteFilter { id, at } => {
                    let step = engine.on_tick(at);
                    render(&mut engine, step)?;
                    engine.remove_scope_filter(&id);
                }
            }
        }
        let runs = RunQueue::new(store.deployments()?, store.active_runs()?);
        tracing::info!(
            snapshot_at = from,
            replayed,
            buckets = engine.bucket_count(),
            active_runs = runs.active_count(),
            "engine state restored"
        );
        Ok(Core {
            store,
            engine,
            config,
            events,
            entries_since_snapshot: replayed as u64,
            last_prune: None,
            runs,
            outbox: VecDeque::new(),
            runs_changed,
            runs_touched: false,
        })
    }

    /// Serves commands until shutdown. A batch that panics or cannot be committed fails its
    /// requests only: the engine is rebuilt from what is durable and the next batch goes on.
    /// When that is impossible, or [`MAX_FAILED_BATCHES`] batches in a row failed, the core
    /// stops and says why in `failure`, so that health checks fail and the process can exit
    /// for its supervisor to restart it.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Command>, failure: watch::Sender<Option<String>>) {
        let mut failed_in_a_row = 0;
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.apply(batch))).unwrap_or_else(|panic| {
                    let message = panic_message(panic.as_ref());
                    Applied::Failed(format!("a command panicked: {message}"))
                });
            let problem = match outcome {
                Applied::Committed => {
                    failed_in_a_row = 0;
                    continue;
                }
                Applied::Stopped => return,
                Applied::Failed(problem) => problem,
            };
            failed_in_a_row += 1;
            let reason = if failed_in_a_row >= MAX_FAILED_BATCHES {
                format!("{failed_in_a_row} batches in a row failed, the last with: {problem}")
            } else {
                tracing::error!(error = %problem, "a batch failed; its requests were refused, rebuilding the engine from storage");
                let changed = self.runs_changed.clone();
                match Core::recover(self.store.clone(), self.config.clone(), self.events.clone(), changed) {
                    Ok(fresh) => {
                        self = fresh;
                        continue;
                    }
                    Err(e) => format!("cannot rebuild the engine after a failed batch ({problem}): {e}"),
                }
            };
            tracing::error!(%reason, "the core stops");
            failure.send_replace(Some(reason));
            return;
        }
    }

    /// Applies a batch in one transaction.
    fn apply(&mut self, batch: Vec<Command>) -> Applied {
        let mut done: Vec<Box<dyn FnOnce()>> = Vec::new();
        let mut accepted: Vec<Arc<Event>> = Vec::new();
        let mut stop = None;
        let result = (|| -> Result<(), StoreError> {
            let tx = self.store.begin()?;
            for command in batch {
                if let Command::Shutdown { reply } = command {
                    stop = Some(reply);
                    continue;
                }
                self.handle(&tx, command, &mut done, &mut accepted)?;
                self.drain_outbox(&tx, &mut accepted)?;
            }
            if stop.is_some() || self.entries_since_snapshot >= self.config.snapshot_every {
                self.snapshot(&tx)?;
            }
            tx.commit()
        })();
        match result {
            Ok(()) => {
                for f in done {
                    f();
                }
                for e in accepted {
                    let _ = self.events.send(e);
                }
                if std::mem::take(&mut self.runs_touched) {
                    self.runs_changed.send_modify(|n| *n += 1);
                }
            }
            Err(e) => {
                // Nothing of the batch was committed: the requests fail (their replies are
                // dropped), and the caller rebuilds the engine from what is durable so that it
                // matches the store again.
                return Applied::Failed(format!("the batch could not be committed: {e}"));
            }
        }
        match stop {
            Some(reply) => {
                let _ = reply.send(());
                Applied::Stopped
            }
            None => Applied::Committed,
        }
    }

    fn snapshot(&mut self, tx: &Tx) -> Result<(), StoreError> {
        let snapshot = Snapshot {
            log_pos: tx.log_pos()?,
            definitions: self.engine.definitions().map(|c| c.definition.clone()).collect(),
            state: self.engine.export(),
            filters: self.engine.scope_filters().map(|f| f.filter.clone()).collect(),
        };
        tx.put_snapshot(&snapshot)?;
        self.entries_since_snapshot = 0;
        Ok(())
    }

    fn log(&mut self, tx: &Tx, entry: &LogEntry) -> Result<(), StoreError> {
        tx.append_log(entry)?;
        self.entries_since_snapshot += 1;
        Ok(())
    }

    fn handle(
        &mut self,
        tx: &Tx,
        command: Command,
        done: &mut Vec<Box<dyn FnOnce()>>,
        accepted: &mut Vec<Arc<Event>>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        macro_rules! answer {
            ($reply:expr, $value:expr) => {{
                let reply = $reply;
                let value = $value;
                done.push(Box::new(move || {
                    let _ = reply.send(value);
                }));
            }};
        }
        match command {
            Command::Ingest { events, reply } => {
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
                answer!(reply, Ok(report));
            }
            Command::Tick { reply } => {
                let step = self.engine.on_tick(now);
                if step.has_effects() {
                    self.log(tx, &LogEntry::Tick { at: now })?;
                    self.record(tx, step, now)?;
                }
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
                if let Some(reply) = reply {
                    done.push(Box::new(move || {
                        let _ = reply.send(());
                    }));
                }
            }
            Command::PutTrigger { definition, create_only, reply } => {
                let definition = *definition;
                let existing = tx.trigger(&definition.id)?;
                if create_only && existing.is_some() {
                    answer!(reply, Err(ServiceError::Conflict { what: "trigger", id: definition.id }));
                    return Ok(());
                }
                let compiled = match compile(&definition, &JsonPath::root()) {
                    Ok(c) => c,
                    Err(problems) => {
                        answer!(reply, Err(ServiceError::Invalid(problems)));
                        return Ok(());
                    }
                };
                self.advance_for_change(tx, now)?;
                self.log(tx, &LogEntry::PutTrigger { definition: definition.clone(), at: now })?;
                self.engine.upsert(compiled);
                let mut record = TriggerRecord {
                    created: existing.as_ref().map_or(now, |r| r.created),
                    updated: now,
                    definition,
                    error: None,
                    warning: None,
                };
                tx.put_trigger(&record)?;
                let deployment = record.definition.deployment.as_deref().map(|d| tx.deployment(d)).transpose()?;
                record.note_deployment(|_| deployment.flatten().is_some());
                answer!(reply, Ok((record, existing.is_none())));
            }
            Command::DeleteTrigger { id, reply } => {
                if tx.trigger(&id)?.is_none() {
                    answer!(reply, Err(ServiceError::NotFound { what: "trigger", id }));
                    return Ok(());
                }
                self.advance_for_change(tx, now)?;
                self.log(tx, &LogEntry::DeleteTrigger { id: id.clone(), at: now })?;
                self.engine.remove(&id);
                tx.delete_trigger(&id)?;
                answer!(reply, Ok(()));
            }
            Command::SetEnabled { id, enabled, reply } => {
                let Some(mut record) = tx.trigger(&id)? else {
                    answer!(reply, Err(ServiceError::NotFound { what: "trigger", id }));
                    return Ok(());
                };
                if record.definition.enabled != enabled {
                    record.definition.enabled = enabled;
                    record.error = None;
                    record.updated = now;
                    self.advance_for_change(tx, now)?;
                    self.log(tx, &LogEntry::PutTrigger { definition: record.definition.clone(), at: now })?;
                    if !self.engine.set_enabled(&id, enabled) {
                        install(&mut self.engine, &record.definition);
                    }
                    tx.put_trigger(&record)?;
                }
                answer!(reply, Ok(record));
            }
            Command::Buckets { id, query, reply } => {
                if tx.trigger(&id)?.is_none() {
                    answer!(reply, Err(ServiceError::NotFound { what: "trigger", id }));
                    return Ok(());
                }
                answer!(reply, Ok(self.engine.bucket_page(&id, &query)));
            }
            Command::PutDeployment { mut deployment, create_only, reply } => {
                let existing = tx.deployment(&deployment.name)?;
                if create_only && existing.is_some() {
                    answer!(reply, Err(ServiceError::Conflict { what: "deployment", id: deployment.name }));
                    return Ok(());
                }
                let key = match compile_key(&deployment) {
                    Ok(key) => key,
                    Err(problems) => {
                        answer!(reply, Err(ServiceError::Invalid(problems)));
                        return Ok(());
                    }
                };
                deployment.created = Some(existing.as_ref().and_then(|d| d.created).unwrap_or(now));
                deployment.updated = Some(now);
                tx.put_deployment(&deployment)?;
                self.runs.set_deployment(deployment.clone(), key);
                answer!(reply, Ok((deployment, existing.is_none())));
            }
            Command::DeleteDeployment { name, reply } => {
                let removed = tx.delete_deployment(&name)?;
                self.runs.remove_deployment(&name);
                answer!(
                    reply,
                    if removed { Ok(()) } else { Err(ServiceError::NotFound { what: "deployment", id: name }) }
                );
            }
            Command::CreateRun { deployment, parameters, priority, reply } => {
                let Some(d) = tx.deployment(&deployment)? else {
                    answer!(reply, Err(ServiceError::NotFound { what: "deployment", id: deployment }));
                    return Ok(());
                };
                let parameters = match merge_parameters(&d.parameters, parameters.as_ref()) {
                    Ok(p) => p,
                    Err(problems) => {
                        answer!(reply, Err(ServiceError::Invalid(problems)));
                        return Ok(());
                    }
                };
                let mut run = Run::scheduled(new_id(), &d, parameters, None, now);
                if let Some(p) = priority {
                    run.priority = p;
                }
                let run = self.admit(tx, run, now)?;
                answer!(reply, Ok(run));
            }
            Command::SyncTriggers { deployment, definitions, reply } => {
                let result = self.sync_triggers(tx, &deployment, definitions, now)?;
                answer!(reply, result);
            }
            Command::Claim { request, reply } => {
                let changes = self.runs.claim(&request, now);
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
                answer!(reply, Ok(claimed));
            }
            Command::Heartbeat { id, heartbeat, reply } => {
                let answer = match self.runs.heartbeat(&id, &heartbeat.worker, heartbeat.lease_seconds, now) {
                    Ok(run) => {
                        tx.put_run(&run)?;
                        Ok(HeartbeatReply { run, cancel: false })
                    }
                    Err(Refusal::NotHeld(run)) => Ok(HeartbeatReply { run: *run, cancel: true }),
                    Err(Refusal::Final) => match tx.run(&id)? {
                        Some(run) => Ok(HeartbeatReply { run, cancel: true }),
                        None => Err(ServiceError::NotFound { what: "run", id: id.to_string() }),
                    },
                };
                answer!(reply, answer);
            }
            Command::Complete { id, completion, reply } => {
                let result = self.runs.complete(&id, &completion.worker, completion.output, now);
                let answer = self.settle(tx, id, &completion.worker, result, now)?;
                answer!(reply, answer);
            }
            Command::Fail { id, failure, reply } => {
                let result = self.runs.fail(&id, &failure.worker, failure.error, failure.retry, now);
                let answer = self.settle(tx, id, &failure.worker, result, now)?;
                answer!(reply, answer);
            }
            Command::Cancel { id, reply } => {
                let answer = match self.runs.cancel(&id, now) {
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
                };
                answer!(reply, answer);
            }
            Command::AppendLogs { id, batch, reply } => {
                let run = match self.runs.get(&id) {
                    Some(run) => Some(run.clone()),
                    None => tx.run(&id)?,
                };
                let Some(run) = run else {
                    answer!(reply, Err(ServiceError::NotFound { what: "run", id: id.to_string() }));
                    return Ok(());
                };
                let lines: Vec<LogLine> = batch
                    .lines
                    .into_iter()
                    .map(|l| LogLine {
                        at: l.at.unwrap_or(now),
                        level: l.level,
                        message: limits::clip(l.message, crate::model::run::MAX_LOG_LINE_BYTES),
                        attempt: run.attempt,
                    })
                    .collect();
                tx.append_run_logs(&id, &lines)?;
                answer!(reply, Ok(lines.len()));
            }
            Command::PutFilter { mut filter, reply } => {
                if tx.deployment(&filter.deployment)?.is_none() {
                    answer!(reply, Err(ServiceError::NotFound { what: "deployment", id: filter.deployment }));
                    return Ok(());
                }
                filter.created = Some(now);
                let compiled = match CompiledScopeFilter::new(filter.clone(), &JsonPath::root()) {
                    Ok(c) => c,
                    Err(problems) => {
                        answer!(reply, Err(ServiceError::Invalid(problems)));
                        return Ok(());
                    }
                };
                self.advance_for_change(tx, now)?;
                self.log(tx, &LogEntry::PutFilter { filter: filter.clone(), at: now })?;
                self.engine.put_scope_filter(compiled);
                tx.put_filter(&filter)?;
                answer!(reply, Ok(filter));
            }
            Command::DeleteFilter { id, reply } => {
                if !tx.delete_filter(&id)? {
                    answer!(reply, Err(ServiceError::NotFound { what: "filter", id: id.to_string() }));
                    return Ok(());
                }
                self.advance_for_change(tx, now)?;
                self.log(tx, &LogEntry::DeleteFilter { id, at: now })?;
                self.engine.remove_scope_filter(&id);
                answer!(reply, Ok(()));
            }
            Command::Shutdown { .. } => {}
            #[cfg(test)]
            Command::Explode { reply } => {
                drop(reply);
                panic!("a command exploded");
            }
        }
        Ok(())
    }

    /// Before a trigger changes, the periodic work due so far happens (and is logged if it
    /// fired), so that replaying the log applies the change at the same point.
    fn advance_for_change(&mut self, tx: &Tx, now: Timestamp) -> Result<(), StoreError> {
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

    /// A new run enters the queue (its concurrency strategy may cancel it or others).
    /// Returns the run as stored.
    fn admit(&mut self, tx: &Tx, run: Run, now: Timestamp) -> Result<Run, StoreError> {
        let changes = self.runs.admit(run, now);
        let run = changes[0].run.clone();
        self.changed(tx, changes, now)?;
        Ok(run)
    }

    /// Stores changed runs and queues the events of their state changes.
    fn changed(&mut self, tx: &Tx, changes: Vec<Change>, now: Timestamp) -> Result<(), StoreError> {
        for change in changes {
            tx.put_run(&change.run)?;
            self.runs_touched = true;
            if change.previous != Some(change.run.state) {
                self.outbox.push_back(run_event(&change, now));
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
    ) -> Result<Result<Run, ServiceError>, StoreError> {
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

    /// Stores and evaluates the run-state events queued so far, and those they cause.
    fn drain_outbox(&mut self, tx: &Tx, accepted: &mut Vec<Arc<Event>>) -> Result<(), StoreError> {
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

    /// Makes `definitions` exactly the triggers of `deployment`: new ones are installed,
    /// changed ones replaced, the same ones left alone (their buckets keep their state), and
    /// the deployment's other triggers removed. All or nothing.
    fn sync_triggers(
        &mut self,
        tx: &Tx,
        deployment: &str,
        definitions: Vec<TriggerDefinition>,
        now: Timestamp,
    ) -> Result<Result<TriggerSync, ServiceError>, StoreError> {
        if tx.deployment(deployment)?.is_none() {
            return Ok(Err(ServiceError::NotFound { what: "deployment", id: deployment.to_owned() }));
        }
        let mut problems = Problems::default();
        let mut compiled = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, definition) in definitions.iter().enumerate() {
            let path = JsonPath::root().index(i);
            if !seen.insert(definition.id.clone()) {
                problems.add(&path.key("id"), format!("`{}` appears twice in the list", definition.id));
            }
            if definition.deployment.as_deref() != Some(deployment) {
                problems.add(
                    &path.key("deployment"),
                    format!("must be `{deployment}` (or left out), got {:?}", definition.deployment),
                );
            }
            match compile(definition, &path) {
                Ok(c) => compiled.push(c),
                Err(p) => problems.0.extend(p.0),
            }
        }
        let existing = tx.triggers()?;
        for (definition, record) in
            definitions.iter().filter_map(|d| existing.iter().find(|r| r.definition.id == d.id).map(|r| (d, r)))
        {
            if record.definition.deployment.as_deref() != Some(deployment) {
                problems.add(
                    &JsonPath::root(),
                    format!(
                        "trigger `{}` already exists for {}; give this one another id",
                        definition.id,
                        record
                            .definition
                            .deployment
                            .as_deref()
                            .map_or("no deployment".into(), |d| format!("deployment `{d}`"))
                    ),
                );
            }
        }
        if !problems.is_empty() {
            return Ok(Err(ServiceError::Invalid(problems)));
        }
        let mut report = TriggerSync::default();
        self.advance_for_change(tx, now)?;
        for record in existing.iter().filter(|r| r.definition.deployment.as_deref() == Some(deployment)) {
            if !definitions.iter().any(|d| d.id == record.definition.id) {
                self.log(tx, &LogEntry::DeleteTrigger { id: record.definition.id.clone(), at: now })?;
                self.engine.remove(&record.definition.id);
                tx.delete_trigger(&record.definition.id)?;
                report.deleted.push(record.definition.id.clone());
            }
        }
        for (definition, c) in definitions.into_iter().zip(compiled) {
            let old = existing.iter().find(|r| r.definition.id == definition.id);
            if old.is_some_and(|r| r.definition == definition) {
                report.unchanged.push(definition.id);
                continue;
            }
            self.log(tx, &LogEntry::PutTrigger { definition: definition.clone(), at: now })?;
            self.engine.upsert(c);
            let record = TriggerRecord {
                created: old.map_or(now, |r| r.created),
                updated: now,
                definition,
                error: None,
                warning: None,
            };
            tx.put_trigger(&record)?;
            if old.is_some() { &mut report.updated } else { &mut report.created }.push(record.definition.id);
        }
        Ok(Ok(report))
    }

    fn now(&self) -> Timestamp {
        let now = self.config.clock.now();
        // The engine's clock never goes backwards, even if the wall clock does.
        self.engine.clock().map_or(now, |c| c.max(now))
    }
}

/// The event a run's state change emits, so that triggers can chain on run outcomes (as on
/// Prefect's `prefect.flow-run.Completed`): the run is the resource, its deployment (and the
/// trigger that caused it) are related resources.
fn run_event(change: &Change, now: Timestamp) -> Event {
    let run = &change.run;
    let resource = Resource::new(format!("{RUN_EVENT_PREFIX}{}", run.id))
        .with("prefect.resource.name", run.deployment.clone())
        .with("tripwire.deployment", run.deployment.clone())
        .with("tripwire.run.state", format!("{:?}", run.state));
    let mut event = Event::new(new_id(), now, format!("{RUN_EVENT_PREFIX}{}", run.state.as_lower()), resource);
    event.related.push(
        Resource::new(format!("tripwire.deployment.{}", run.deployment))
            .with("prefect.resource.role", "deployment")
            .with("prefect.resource.name", run.deployment.clone()),
    );
    if let Some(cause) = &run.cause {
        event.related.push(
            Resource::new(format!("tripwire.trigger.{}", cause.trigger))
                .with("prefect.resource.role", "trigger")
                .with("prefect.resource.name", cause.trigger.clone()),
        );
    }
    let mut payload = Map::new();
    payload.insert("run_id".into(), json!(run.id));
    payload.insert("deployment".into(), json!(run.deployment));
    payload.insert("state".into(), json!(run.state));
    payload.insert("previous_state".into(), json!(change.previous));
    payload.insert("attempt".into(), json!(run.attempt));
    payload.insert("parameters".into(), Value::Object(run.parameters.clone()));
    for (key, value) in [
        ("output", run.output.clone()),
        ("error", run.error.clone().map(Value::String)),
        ("reason", run.reason.map(|r| json!(r))),
        ("worker", run.worker.clone().map(Value::String)),
        ("concurrency_key", run.concurrency_key.clone().map(Value::String)),
    ] {
        if let Some(value) = value {
            payload.insert(key.into(), value);
        }
    }
    // Parameters and output were held to their limits when accepted, so the event fits; should
    // it not (a limit changed), they are left out rather than storing an event that cannot be
    // read back.
    let mut problems = Problems::default();
    limits::check_object(&payload, &JsonPath::root().key("payload"), limits::MAX_EVENT_BYTES / 2, &mut problems);
    if !problems.is_empty() {
        for key in ["parameters", "output"] {
            if payload.contains_key(key) {
                payload.insert(key.into(), json!(format!("[left out: {problems}]")));
            }
        }
    }
    event.payload = payload;
    event
}

/// The run a firing creates: its id is the firing's, so it can only ever be created once.
fn run_for(firing: &Firing, deployment: &Deployment, now: Timestamp) -> Result<Run, Problems> {
    let parameters = merge_parameters(&deployment.parameters, firing.parameters.as_ref())?;
    Ok(Run::scheduled(firing.id, deployment, parameters, Some(RunCause::of(firing)), now))
}
