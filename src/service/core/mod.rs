//! The core thread: owns the engine and the store's single writer. Decide, commit, then act:
//! a batch of commands is applied to the engine and written in one transaction; replies and
//! event notifications go out only after the commit.

mod command;
mod deployments;
mod events;
mod filters;
mod rate_limits;
mod recovery;
mod runs;
mod triggers;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use uuid::Uuid;

use crate::engine::{panic_message, Engine, PendingFiring, Step};
use crate::model::time::{Span, Timestamp};
use crate::model::{Event, RunState};
use crate::store::{Store, StoreError, Tx};

pub(super) use self::command::Command;
use super::access;
use super::clock::Stopwatch;
use super::metrics::Metrics;
use super::runs::RunQueue;
use super::{ServiceConfig, ServiceError};

/// Processed event ids the engine remembers itself: none past the step that processed them.
/// The store deduplicates for the whole retention period, and tells the engine whether a
/// follower's leader was processed (`Engine::on_event_with`), so the engine's own record need
/// not be kept, nor persisted.
const ENGINE_SEEN_WINDOW: Span = Span::ZERO;
/// Commands folded into one transaction.
const MAX_BATCH: usize = 256;
/// How often old events are pruned.
const PRUNE_EVERY: Span = Span::seconds(60);
/// How often the live buckets of every trigger are counted for the metrics (a walk over every
/// trigger on the core thread: not on every 250 ms tick).
const GAUGE_EVERY: Span = Span::seconds(1);
/// Run-state events one command may feed back into the engine. A trigger on
/// `tripwire.run.scheduled` that runs its own deployment would otherwise loop forever; the
/// events past the cap are stored but not evaluated, and a warning says why.
const MAX_CASCADE: usize = 1000;

/// Batches in a row that may fail (each rebuilt from storage) before the core gives up.
const MAX_FAILED_BATCHES: u32 = 3;

/// What a command handler decides: an answer for the caller, or a storage failure that
/// fails the whole batch.
type Outcome<T> = Result<Result<T, ServiceError>, StoreError>;

/// Answers held until the batch commits (decide, commit, then act).
#[derive(Default)]
struct Replies(Vec<Box<dyn FnOnce()>>);

impl Replies {
    /// Holds `value` for `reply`.
    fn answer<T: Send + 'static>(&mut self, reply: oneshot::Sender<T>, value: T) {
        self.0.push(Box::new(move || {
            let _ = reply.send(value);
        }));
    }

    /// Sends every answer held, in order.
    fn send(self) {
        for answer in self.0 {
            answer();
        }
    }
}

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
    last_prune: Option<Timestamp>,
    runs: RunQueue,
    /// Run-state events waiting to be stored and evaluated, in order.
    outbox: VecDeque<Event>,
    /// Bumped after a commit that changed runs, so that waiting claims look again.
    runs_changed: Arc<watch::Sender<u64>>,
    runs_touched: bool,
    metrics: Arc<Metrics>,
    /// What this batch did, told (logged and counted) once it is committed.
    notes: Vec<Note>,
    /// The triggers whose live buckets are gauged.
    gauged: HashSet<String>,
    /// When the live buckets were last gauged.
    last_gauged: Option<Timestamp>,
}

/// Something a batch did that is logged and counted after its commit.
enum Note {
    Fired {
        trigger: String,
        bucket: String,
        run: Option<Uuid>,
        deployment: Option<String>,
        error: Option<String>,
    },
    Run {
        id: Uuid,
        deployment: String,
        previous: Option<RunState>,
        state: RunState,
        attempt: u32,
        worker: Option<String>,
    },
}

impl Note {
    /// Logs it and counts it.
    fn tell(self, metrics: &Metrics) {
        match self {
            Note::Fired { trigger, bucket, run, deployment, error } => {
                let outcome = match (&error, &deployment) {
                    (Some(error), _) => {
                        tracing::warn!(%trigger, %bucket, %error, "fired without a run");
                        "error"
                    }
                    (None, None) => {
                        tracing::info!(%trigger, %bucket, "fired (no deployment: no run)");
                        "no_run"
                    }
                    (None, Some(deployment)) => {
                        let run = run.map(|r| r.to_string()).unwrap_or_default();
                        tracing::info!(%trigger, %bucket, %deployment, %run, "fired");
                        "run"
                    }
                };
                metrics.firings.get_or_create(&vec![("trigger", trigger), ("outcome", outcome.to_owned())]).inc();
            }
            Note::Run { id, deployment, previous, state, attempt, worker } => {
                let from = previous.map_or("new", |p| p.as_lower());
                let worker = worker.unwrap_or_default();
                tracing::info!(run = %id, %deployment, from, to = state.as_lower(), attempt, %worker, "run state");
                metrics
                    .runs
                    .get_or_create(&vec![("deployment", deployment), ("state", state.as_lower().to_owned())])
                    .inc();
            }
        }
    }
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

impl Core {
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
                let metrics = self.metrics.clone();
                match Core::recover(self.store.clone(), self.config.clone(), self.events.clone(), changed, metrics) {
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
        let watch = Stopwatch::start();
        let commands = batch.len();
        self.notes.clear();
        let mut replies = Replies::default();
        let mut accepted: Vec<Arc<Event>> = Vec::new();
        let mut stop = None;
        let result = (|| -> Result<(), StoreError> {
            let tx = self.store.begin()?;
            for command in batch {
                if let Command::Shutdown { reply } = command {
                    stop = Some(reply);
                    continue;
                }
                self.handle(&tx, command, &mut replies, &mut accepted)?;
                self.drain_outbox(&tx, &mut accepted)?;
            }
            tx.write_state(&self.engine.take_changes())?;
            tx.commit()
        })();
        match result {
            Ok(()) => {
                self.metrics.batch_commands.observe(commands as f64);
                self.metrics.batch_seconds.observe(watch.elapsed().as_secs_f64());
                for note in self.notes.drain(..) {
                    note.tell(&self.metrics);
                }
                // Subscribers hear of the events before their senders are answered: a client
                // that subscribes once its events are acknowledged never gets them as live.
                for e in accepted {
                    let _ = self.events.send(e);
                }
                if std::mem::take(&mut self.runs_touched) {
                    self.runs_changed.send_modify(|n| *n += 1);
                }
                replies.send();
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

    /// Hands one command to the file of its concern; its answer is held until the commit.
    fn handle(
        &mut self,
        tx: &Tx,
        command: Command,
        replies: &mut Replies,
        accepted: &mut Vec<Arc<Event>>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        match command {
            Command::Ingest { events, reply } => replies.answer(reply, Ok(self.ingest(tx, events, now, accepted)?)),
            Command::Tick { reply } => {
                self.tick(tx, now)?;
                if let Some(reply) = reply {
                    replies.answer(reply, ());
                }
            }
            Command::PutTrigger { definition, create_only, reply } => {
                replies.answer(reply, self.put_trigger(tx, *definition, create_only, now)?)
            }
            Command::DeleteTrigger { id, reply } => replies.answer(reply, self.delete_trigger(tx, id, now)?),
            Command::SetEnabled { id, enabled, reply } => {
                replies.answer(reply, self.set_enabled(tx, id, enabled, now)?)
            }
            Command::Buckets { id, query, reply } => replies.answer(reply, self.buckets(tx, id, &query)?),
            Command::SyncTriggers { deployment, definitions, reply } => {
                replies.answer(reply, self.sync_triggers(tx, &deployment, definitions, now)?)
            }
            Command::PutDeployment { deployment, create_only, reply } => {
                replies.answer(reply, self.put_deployment(tx, deployment, create_only, now)?)
            }
            Command::DeleteDeployment { name, reply } => replies.answer(reply, self.delete_deployment(tx, name)?),
            Command::PutRateLimit { key, quota, reply } => {
                replies.answer(reply, self.put_rate_limit(tx, key, quota, now)?)
            }
            Command::DeleteRateLimit { key, reply } => replies.answer(reply, self.delete_rate_limit(tx, key)?),
            Command::CreateRun { deployment, parameters, priority, reply } => {
                replies.answer(reply, self.create_run(tx, deployment, parameters, priority, now)?)
            }
            Command::SpawnChild { parent, request, reply } => {
                replies.answer(reply, self.spawn_child(tx, parent, request, now)?)
            }
            Command::Claim { request, peers, reply } => {
                replies.answer(reply, Ok(self.claim(tx, &request, &peers, now)?))
            }
            Command::Heartbeat { id, heartbeat, reply } => {
                replies.answer(reply, self.heartbeat(tx, id, &heartbeat, now)?)
            }
            Command::Complete { id, completion, reply } => {
                replies.answer(reply, self.complete(tx, id, completion, now)?)
            }
            Command::Fail { id, failure, reply } => replies.answer(reply, self.fail(tx, id, failure, now)?),
            Command::Cancel { id, reply } => replies.answer(reply, self.cancel(tx, id, now)?),
            Command::AppendLogs { id, batch, reply } => replies.answer(reply, self.append_logs(tx, id, batch, now)?),
            Command::AppendStream { id, batch, reply } => {
                replies.answer(reply, self.append_stream(tx, id, batch, now)?)
            }
            Command::PutFilter { filter, reply } => replies.answer(reply, self.put_filter(tx, filter, now)?),
            Command::DeleteFilter { id, reply } => replies.answer(reply, self.delete_filter(tx, id, now)?),
            Command::PutKey { key, reply } => replies.answer(reply, access::insert_key(tx, key)?),
            Command::RevokeKey { which, reply } => replies.answer(reply, access::revoke_key(tx, &which, now)?),
            Command::WriteKeyUses { uses, reply } => replies.answer(reply, Ok(access::write_uses(tx, &uses)?)),
            Command::Shutdown { .. } => {}
            #[cfg(test)]
            Command::Explode { reply } => {
                drop(reply);
                panic!("a command exploded");
            }
        }
        Ok(())
    }

    fn now(&self) -> Timestamp {
        let now = self.config.clock.now();
        // The engine's clock never goes backwards, even if the wall clock does.
        self.engine.clock().map_or(now, |c| c.max(now))
    }
}
