//! The core thread: owns the engine and the store's single writer. Decide, commit, then act:
//! a batch of commands is applied to the engine and written in one transaction; replies and
//! event notifications go out only after the commit.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};
use uuid::Uuid;

use crate::engine::compile::CompiledScopeFilter;
use crate::engine::{compile, BucketView, Engine, EngineConfig, EventLookup, Step};
use crate::model::deployment::{merge_parameters, RunCause};
use crate::model::time::{Span, Timestamp};
use crate::model::{Deployment, Event, Firing, JsonPath, Run, ScopeFilter, TriggerDefinition};
use crate::store::{LogEntry, Snapshot, Store, StoreError, TriggerRecord, Tx};

use super::clock::new_id;
use super::{IngestReport, ServiceConfig, ServiceError};

type Reply<T> = oneshot::Sender<Result<T, ServiceError>>;

/// What the core is asked to do.
#[allow(clippy::large_enum_variant)] // commands are moved once through a channel
pub(super) enum Command {
    Ingest { events: Vec<Event>, reply: Reply<IngestReport> },
    Tick { reply: Option<oneshot::Sender<()>> },
    PutTrigger { definition: Box<TriggerDefinition>, create_only: bool, reply: Reply<(TriggerRecord, bool)> },
    DeleteTrigger { id: String, reply: Reply<()> },
    SetEnabled { id: String, enabled: bool, reply: Reply<TriggerRecord> },
    Buckets { id: String, key: Option<String>, reply: Reply<Vec<BucketView>> },
    PutDeployment { deployment: Deployment, create_only: bool, reply: Reply<(Deployment, bool)> },
    DeleteDeployment { name: String, reply: Reply<()> },
    CreateRun { deployment: String, parameters: Option<Value>, reply: Reply<Run> },
    PutFilter { filter: ScopeFilter, reply: Reply<ScopeFilter> },
    DeleteFilter { id: Uuid, reply: Reply<()> },
    Shutdown { reply: oneshot::Sender<()> },
}

/// Processed event ids the engine remembers itself; the store deduplicates for the whole
/// retention period.
const ENGINE_SEEN_WINDOW: Span = Span::minutes(60);
/// Commands folded into one transaction.
const MAX_BATCH: usize = 256;
/// How often old events are pruned.
const PRUNE_EVERY: Span = Span::seconds(60);

pub(super) struct Core {
    store: Arc<Store>,
    engine: Engine,
    config: ServiceConfig,
    events: broadcast::Sender<Arc<Event>>,
    entries_since_snapshot: u64,
    last_prune: Option<Timestamp>,
}

/// Past events for the engine, read through the open write transaction.
struct TxLookup<'a>(&'a Tx);

impl EventLookup for TxLookup<'_> {
    fn event(&self, id: &Uuid) -> Option<Arc<Event>> {
        self.0.event(id).ok().flatten().map(Arc::new)
    }
}

struct StoreLookup<'a>(&'a Store);

impl EventLookup for StoreLookup<'_> {
    fn event(&self, id: &Uuid) -> Option<Arc<Event>> {
        self.0.event(id).ok().flatten().map(Arc::new)
    }
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
        let lookup = StoreLookup(&store);
        for (_, entry) in entries {
            match entry {
                LogEntry::Event { seq, at } => match store.event_by_seq(seq)? {
                    Some(event) => {
                        engine.on_event(at, event, &lookup);
                    }
                    None => tracing::warn!(seq, "logged event was pruned before it was snapshotted"),
                },
                LogEntry::Tick { at } => {
                    engine.on_tick(at, &lookup);
                }
                LogEntry::PutTrigger { definition, at } => {
                    engine.on_tick(at, &lookup);
                    install(&mut engine, &definition);
                }
                LogEntry::DeleteTrigger { id, at } => {
                    engine.on_tick(at, &lookup);
                    engine.remove(&id);
                }
                LogEntry::PutFilter { filter, at } => {
                    engine.on_tick(at, &lookup);
                    install_filter(&mut engine, filter);
                }
                LogEntry::DeleteFilter { id, at } => {
                    engine.on_tick(at, &lookup);
                    engine.remove_scope_filter(&id);
                }
            }
        }
        tracing::info!(snapshot_at = from, replayed, buckets = engine.bucket_count(), "engine state restored");
        Ok(Core { store, engine, config, events, entries_since_snapshot: replayed as u64, last_prune: None })
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            if !self.apply(batch) {
                break;
            }
        }
    }

    /// Applies a batch in one transaction; false when the core should stop.
    fn apply(&mut self, batch: Vec<Command>) -> bool {
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
            }
            Err(e) => {
                // Nothing of the batch was committed: the requests fail, and the engine is
                // rebuilt from what is durable so that it matches the store again.
                tracing::error!(error = %e, "commit failed; rebuilding the engine from storage");
                drop(done);
                match Core::recover(self.store.clone(), self.config.clone(), self.events.clone()) {
                    Ok(fresh) => *self = fresh,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot rebuild the engine; stopping");
                        return false;
                    }
                }
            }
        }
        match stop {
            Some(reply) => {
                let _ = reply.send(());
                false
            }
            None => true,
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
                    let step = self.engine.on_event(now, event.clone(), &TxLookup(tx));
                    self.record(tx, step, now)?;
                    accepted.push(event);
                }
                answer!(reply, Ok(report));
            }
            Command::Tick { reply } => {
                let step = self.engine.on_tick(now, &TxLookup(tx));
                if !step.firings.is_empty() {
                    self.log(tx, &LogEntry::Tick { at: now })?;
                    self.record(tx, step, now)?;
                }
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
                let record =
                    TriggerRecord { created: existing.as_ref().map_or(now, |r| r.created), updated: now, definition };
                tx.put_trigger(&record)?;
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
                    record.updated = now;
                    self.advance_for_change(tx, now)?;
                    self.log(tx, &LogEntry::PutTrigger { definition: record.definition.clone(), at: now })?;
                    install(&mut self.engine, &record.definition);
                    tx.put_trigger(&record)?;
                }
                answer!(reply, Ok(record));
            }
            Command::Buckets { id, key, reply } => {
                if tx.trigger(&id)?.is_none() {
                    answer!(reply, Err(ServiceError::NotFound { what: "trigger", id }));
                    return Ok(());
                }
                let mut buckets = self.engine.buckets(&id);
                if let Some(key) = key {
                    buckets.retain(|b| b.labels.values().any(|v| *v == key));
                }
                answer!(reply, Ok(buckets));
            }
            Command::PutDeployment { mut deployment, create_only, reply } => {
                let existing = tx.deployment(&deployment.name)?;
                if create_only && existing.is_some() {
                    answer!(reply, Err(ServiceError::Conflict { what: "deployment", id: deployment.name }));
                    return Ok(());
                }
                deployment.created = Some(existing.as_ref().and_then(|d| d.created).unwrap_or(now));
                deployment.updated = Some(now);
                tx.put_deployment(&deployment)?;
                answer!(reply, Ok((deployment, existing.is_none())));
            }
            Command::DeleteDeployment { name, reply } => {
                let removed = tx.delete_deployment(&name)?;
                answer!(
                    reply,
                    if removed { Ok(()) } else { Err(ServiceError::NotFound { what: "deployment", id: name }) }
                );
            }
            Command::CreateRun { deployment, parameters, reply } => {
                let Some(d) = tx.deployment(&deployment)? else {
                    answer!(reply, Err(ServiceError::NotFound { what: "deployment", id: deployment }));
                    return Ok(());
                };
                let parameters = merge_parameters(&d.parameters, parameters.as_ref());
                let run = Run::scheduled(new_id(), &d, parameters, None, now);
                tx.put_run(&run)?;
                answer!(reply, Ok(run));
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
        }
        Ok(())
    }

    /// Before a trigger changes, the periodic work due so far happens (and is logged if it
    /// fired), so that replaying the log applies the change at the same point.
    fn advance_for_change(&mut self, tx: &Tx, now: Timestamp) -> Result<(), StoreError> {
        let step = self.engine.on_tick(now, &TxLookup(tx));
        if !step.firings.is_empty() {
            self.log(tx, &LogEntry::Tick { at: now })?;
            self.record(tx, step, now)?;
        }
        Ok(())
    }

    /// Stores firings and creates the runs they ask for.
    fn record(&mut self, tx: &Tx, step: Step, now: Timestamp) -> Result<(), StoreError> {
        for trigger in &step.overflows {
            tracing::warn!(%trigger, "bucket limit reached: an event was not counted");
        }
        for mut firing in step.firings {
            if let Some(name) = firing.deployment.clone() {
                if firing.error.is_none() {
                    match tx.deployment(&name)? {
                        Some(d) => tx.put_run(&run_for(&firing, &d, now))?,
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

    fn now(&self) -> Timestamp {
        let now = self.config.clock.now();
        // The engine's clock never goes backwards, even if the wall clock does.
        self.engine.clock().map_or(now, |c| c.max(now))
    }
}

/// The run a firing creates: its id is the firing's, so it can only ever be created once.
fn run_for(firing: &Firing, deployment: &Deployment, now: Timestamp) -> Run {
    let parameters = merge_parameters(&deployment.parameters, firing.parameters.as_ref());
    Run::scheduled(firing.id, deployment, parameters, Some(RunCause::of(firing)), now)
}
