//! The service: wires the engine, the store, runs and timers together. It is the one place
//! that owns concurrency: a single core thread owns the engine and the write transaction;
//! requests reach it through a bounded channel, and it commits many of them at once.

pub(crate) mod access;
pub(crate) mod backtest;
pub mod clock;
mod core;
pub(crate) mod metrics;
mod rate_limits;
mod read;
mod runs;
pub(crate) mod workers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use uuid::Uuid;

use crate::engine::{BucketPage, BucketQuery};
use crate::model::time::Span;
use crate::model::{
    ApiKey, ChildRequest, ClaimRequest, ClaimedRun, Completion, CreatedApiKey, Deployment, Event, EventDefaults,
    FailureReport, Heartbeat, HeartbeatReply, JsonPath, LogBatch, NewApiKey, Problems, Run, ScopeFilter, Timestamp,
    TriggerDefinition, TriggerSync,
};
pub use crate::store::StoreError;
use crate::store::{PreparedEvent, Store, TriggerRecord};

use self::access::Access;
use self::backtest::Backtests;
use self::clock::{Clock, IdSource};
use self::core::{Command, Core};
use self::metrics::Metrics;
pub use self::read::{BucketsPage, BucketsRequest, EventPage, LogPage, Order, EVENT_SCAN_LIMIT};
use self::workers::Workers;

/// Service settings.
#[derive(Clone)]
pub struct ServiceConfig {
    /// The data directory (holds `tripwire.redb`).
    pub data_dir: PathBuf,
    /// The clock; the wall clock in production.
    pub clock: Arc<dyn Clock>,
    /// Where fresh ids come from; random UUIDv7s ([`clock::RandomIds`]) in production.
    pub ids: Arc<dyn IdSource>,
    /// Events received longer ago than this are pruned.
    pub retention: Span,
    /// Commands waiting for the core before ingestion pushes back.
    pub queue_capacity: usize,
    /// Prefect's auth string (`user:pass`): `Authorization: Basic` with it admits an
    /// administrator, and turns auth on.
    pub auth_string: Option<String>,
}

impl ServiceConfig {
    /// Defaults for `dir`: wall clock, 7 days of retention.
    pub fn new(data_dir: impl Into<PathBuf>) -> ServiceConfig {
        ServiceConfig {
            data_dir: data_dir.into(),
            clock: Arc::new(clock::SystemClock),
            ids: Arc::new(clock::RandomIds),
            retention: Span::minutes(7 * 24 * 60),
            queue_capacity: 1024,
            auth_string: None,
        }
    }
}

/// What went wrong, for the edge to translate.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The input is invalid; every problem is listed.
    #[error("{0}")]
    Invalid(Problems),
    /// No such thing.
    #[error("{what} `{id}` does not exist")]
    NotFound {
        /// The kind of thing.
        what: &'static str,
        /// Its id or name.
        id: String,
    },
    /// It exists already.
    #[error("{what} `{id}` already exists")]
    Conflict {
        /// The kind of thing.
        what: &'static str,
        /// Its id or name.
        id: String,
    },
    /// It exists, but cannot answer that yet (a backtest still running).
    #[error("{0}")]
    NotReady(String),
    /// It cannot be removed while something uses it (a rate limit a deployment takes).
    #[error("{message}")]
    InUse {
        /// What uses it.
        message: String,
    },
    /// Too much work queued: retry later.
    #[error("tripwire is busy; retry after {retry_after_secs} s")]
    Overloaded {
        /// Suggested wait.
        retry_after_secs: u64,
    },
    /// A worker's request about a run was refused: the run is final, or another worker
    /// holds it.
    #[error("{message}")]
    RunRefused {
        /// `run_finished` or `run_not_held`.
        code: &'static str,
        /// What happened to the run.
        message: String,
    },
    /// The service is stopping.
    #[error("tripwire is shutting down")]
    ShuttingDown,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServiceError {
    /// A stable code for the error, as both the HTTP API and the embedded client report it:
    /// `invalid`, `not_found`, `conflict`, `not_ready`, `in_use`, `run_finished`, `run_not_held`,
    /// `overloaded`, `shutting_down` or `storage`.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Invalid(_) => "invalid",
            ServiceError::NotFound { .. } => "not_found",
            ServiceError::Conflict { .. } => "conflict",
            ServiceError::NotReady(_) => "not_ready",
            ServiceError::InUse { .. } => "in_use",
            ServiceError::RunRefused { code, .. } => code,
            ServiceError::Overloaded { .. } => "overloaded",
            ServiceError::ShuttingDown => "shutting_down",
            ServiceError::Store(_) => "storage",
        }
    }

    /// The HTTP status the API answers this error with (the embedded client reports the same,
    /// so that code written for one mode works in the other).
    pub fn status(&self) -> u16 {
        match self {
            ServiceError::Invalid(_) => 400,
            ServiceError::NotFound { .. } => 404,
            ServiceError::Conflict { .. }
            | ServiceError::NotReady(_)
            | ServiceError::InUse { .. }
            | ServiceError::RunRefused { .. } => 409,
            ServiceError::Overloaded { .. } | ServiceError::ShuttingDown => 503,
            ServiceError::Store(_) => 500,
        }
    }

    /// What to tell the client: the error itself, except for storage failures, which are
    /// logged and described generically.
    pub fn public_message(&self) -> String {
        match self {
            ServiceError::Store(inner) => {
                tracing::error!(error = %inner, "storage error");
                "tripwire could not read or write its data; see the server log".to_owned()
            }
            ServiceError::Invalid(problems) => format!("invalid input: {problems}"),
            other => other.to_string(),
        }
    }
}

/// The answer to an ingest: every id in the request, in order, and those seen before.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IngestReport {
    /// The ids acknowledged (all of them: duplicates are acknowledged too).
    pub ids: Vec<Uuid>,
    /// Ids that had been accepted before and were not processed again.
    pub duplicates: Vec<Uuid>,
}

/// Ticks the core every 250 ms. It holds the service weakly, so that dropping the last handle
/// closes the database even while the timer sleeps.
async fn run_timer(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(inner) = inner.upgrade() else { return };
        let (reply, answer) = oneshot::channel();
        if inner.commands.send(Command::Tick { reply: Some(reply) }).await.is_err() {
            return;
        }
        drop(inner);
        if answer.await.is_err() {
            return;
        }
    }
}

/// Writes API keys' last uses every [`access::LAST_USED_FLUSH`] (and `shutdown` writes the
/// rest), holding the service weakly like the timer.
async fn write_key_uses(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(access::LAST_USED_FLUSH).await;
        let Some(inner) = inner.upgrade() else { return };
        let service = Service { inner };
        if service.write_key_uses().await.is_err() {
            return;
        }
    }
}

/// Reads events as clients send them (Prefect's JSON), filling in what a client may leave
/// out: a missing `id` from the service's id source, a missing `occurred` from its clock, one
/// instant for a whole batch. The one place where incoming events are stamped; the edges hand
/// it what the client sent. (`received` is set when the event is accepted.)
pub struct Stamper {
    now: Timestamp,
    ids: Arc<dyn IdSource>,
}

impl Stamper {
    /// Reads one event, reporting every problem with its path under `path`.
    pub fn read(&self, value: &Value, path: &JsonPath) -> Result<Event, Problems> {
        let mut ids = || self.ids.new_id();
        Event::from_json(value, path, Some(EventDefaults { occurred: self.now, new_id: &mut ids }))
    }
}

/// A handle to the running service; cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::Sender<Command>,
    store: Arc<Store>,
    events: broadcast::Sender<Arc<Event>>,
    runs_changed: Arc<watch::Sender<u64>>,
    config: ServiceConfig,
    core: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Why the core stopped, once it has failed.
    core_failure: watch::Receiver<Option<String>>,
    access: Access,
    metrics: Arc<Metrics>,
    workers: Workers,
    backtests: Backtests,
    /// Set when the server begins to stop: readers that follow (a run's stream) end.
    draining: watch::Sender<bool>,
}

/// Encodes events for storage here, on the request's thread, so that the single writer only
/// stamps and inserts them.
fn prepare(events: Vec<Event>) -> Vec<PreparedEvent> {
    events.into_iter().map(PreparedEvent::new).collect()
}

impl Service {
    /// Opens the data directory, reads the engine's stored state back, and starts the
    /// core thread (and, on the wall clock, the timer).
    pub async fn start(config: ServiceConfig) -> Result<Service, ServiceError> {
        let store = {
            let dir = config.data_dir.clone();
            tokio::task::spawn_blocking(move || Store::open(&dir)).await.map_err(|_| ServiceError::ShuttingDown)??
        };
        let store = Arc::new(store);
        let access = {
            let store = store.clone();
            let (auth_string, clock) = (config.auth_string.clone(), config.clock.clone());
            tokio::task::spawn_blocking(move || Access::load(&store, auth_string.as_deref(), clock))
                .await
                .map_err(|_| ServiceError::ShuttingDown)??
        };
        // Events not yet taken by every subscriber: at most 1,024 (each at most 1.5 MB), enough
        // for a burst of Prefect's 1,000-event batches; subscribers take them at once into
        // their own byte-bounded queues (http::SubscriberLimits).
        let (events, _) = broadcast::channel(1024);
        let runs_changed = Arc::new(watch::channel(0u64).0);
        let metrics = Metrics::new();
        let core = {
            let store = store.clone();
            let config = config.clone();
            let events = events.clone();
            let runs_changed = runs_changed.clone();
            let metrics = metrics.clone();
            tokio::task::spawn_blocking(move || Core::recover(store, config, events, runs_changed, metrics))
                .await
                .map_err(|_| ServiceError::ShuttingDown)??
        };
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let (failure, core_failure) = watch::channel(None);
        let handle = std::thread::Builder::new()
            .name("tripwire-core".into())
            .spawn(move || core.run(rx, failure))
            .map_err(|e| ServiceError::Store(StoreError::Database(format!("cannot start the core thread: {e}"))))?;
        let service = Service {
            inner: Arc::new(Inner {
                commands: tx,
                store,
                events,
                runs_changed,
                config,
                core: std::sync::Mutex::new(Some(handle)),
                core_failure,
                access,
                metrics,
                workers: Workers::default(),
                backtests: Backtests::default(),
                draining: watch::Sender::new(false),
            }),
        };
        if service.inner.config.clock.is_wall_clock() {
            tokio::spawn(run_timer(Arc::downgrade(&service.inner)));
            tokio::spawn(write_key_uses(Arc::downgrade(&service.inner)));
        }
        Ok(service)
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ServiceError>>) -> Command,
    ) -> Result<T, ServiceError> {
        let (reply, answer) = oneshot::channel();
        self.inner.commands.send(make(reply)).await.map_err(|_| ServiceError::ShuttingDown)?;
        answer.await.map_err(|_| ServiceError::ShuttingDown)?
    }

    /// Makes the events durable and evaluates them, in order. Returns once they are
    /// committed. Pushes back with [`ServiceError::Overloaded`] when the queue is full.
    pub async fn ingest(&self, events: Vec<Event>) -> Result<IngestReport, ServiceError> {
        let events = prepare(events);
        let (reply, answer) = oneshot::channel();
        match self.inner.commands.try_send(Command::Ingest { events, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(ServiceError::Overloaded { retry_after_secs: 1 }),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(ServiceError::ShuttingDown),
        }
        let report = answer.await.map_err(|_| ServiceError::ShuttingDown)??;
        self.count_ingest(&report);
        Ok(report)
    }

    fn count_ingest(&self, report: &IngestReport) {
        let duplicates = report.duplicates.len() as u64;
        self.inner.metrics.events_accepted.inc_by(report.ids.len() as u64 - duplicates);
        self.inner.metrics.events_duplicate.inc_by(duplicates);
    }

    /// Like [`Service::ingest`], but waits for room in the queue instead of pushing back (for
    /// streams, whose reader simply reads more slowly).
    pub async fn ingest_waiting(&self, events: Vec<Event>) -> Result<IngestReport, ServiceError> {
        let events = prepare(events);
        let report = self.call(|reply| Command::Ingest { events, reply }).await?;
        self.count_ingest(&report);
        Ok(report)
    }

    /// Runs the periodic work due by the clock's "now" (the timer does this on the wall clock).
    pub async fn tick(&self) -> Result<(), ServiceError> {
        let (reply, answer) = oneshot::channel();
        self.inner.commands.send(Command::Tick { reply: Some(reply) }).await.map_err(|_| ServiceError::ShuttingDown)?;
        answer.await.map_err(|_| ServiceError::ShuttingDown)
    }

    /// Installs or replaces a definition (`create_only`: fail if it exists).
    pub async fn put_trigger(
        &self,
        definition: TriggerDefinition,
        create_only: bool,
    ) -> Result<(TriggerRecord, bool), ServiceError> {
        // One built in Rust is held to the JSON rules here, so that it reads back from the log.
        let definition = definition.checked(&JsonPath::root()).map_err(ServiceError::Invalid)?;
        self.call(|reply| Command::PutTrigger { definition: Box::new(definition), create_only, reply }).await
    }

    /// Removes a definition.
    pub async fn delete_trigger(&self, id: String) -> Result<(), ServiceError> {
        self.call(|reply| Command::DeleteTrigger { id, reply }).await
    }

    /// Enables or disables a definition.
    pub async fn set_trigger_enabled(&self, id: String, enabled: bool) -> Result<TriggerRecord, ServiceError> {
        self.call(|reply| Command::SetEnabled { id, enabled, reply }).await
    }

    /// A page of a definition's live buckets (see [`crate::engine::Engine::bucket_page`]);
    /// `None` when the definition is stored but not installed (it does not compile).
    pub async fn bucket_page(&self, id: String, query: BucketQuery) -> Result<Option<BucketPage>, ServiceError> {
        self.call(|reply| Command::Buckets { id, query, reply }).await
    }

    /// Creates or replaces a deployment.
    pub async fn put_deployment(
        &self,
        deployment: Deployment,
        create_only: bool,
    ) -> Result<(Deployment, bool), ServiceError> {
        self.call(|reply| Command::PutDeployment { deployment, create_only, reply }).await
    }

    /// Removes a deployment.
    pub async fn delete_deployment(&self, name: String) -> Result<(), ServiceError> {
        self.call(|reply| Command::DeleteDeployment { name, reply }).await
    }

    /// Creates a run by hand, with `parameters` merged over the deployment's defaults and
    /// `priority` (default: the deployment's).
    pub async fn create_run(
        &self,
        deployment: String,
        parameters: Option<Value>,
        priority: Option<i32>,
    ) -> Result<Run, ServiceError> {
        self.call(|reply| Command::CreateRun { deployment, parameters, priority, reply }).await
    }

    /// A child run of `parent`, asked for by the worker running it (`ctx.spawn`): the child
    /// `request.key` names, made now (`true`) or before (`false`, whatever the attempt).
    pub async fn spawn_child(&self, parent: Uuid, request: ChildRequest) -> Result<(Run, bool), ServiceError> {
        request.validate().map_err(ServiceError::Invalid)?;
        self.call(|reply| Command::SpawnChild { parent, request, reply }).await
    }

    /// Makes `definitions` exactly the triggers of `deployment` (see [`TriggerSync`]):
    /// unchanged ones keep their state, the deployment's others are removed. All or nothing.
    pub async fn sync_triggers(
        &self,
        deployment: String,
        definitions: Vec<TriggerDefinition>,
    ) -> Result<TriggerSync, ServiceError> {
        let mut problems = Problems::default();
        let mut checked = Vec::with_capacity(definitions.len());
        for (i, definition) in definitions.iter().enumerate() {
            match definition.checked(&JsonPath::root().index(i)) {
                Ok(d) => checked.push(d),
                Err(p) => problems.extend(p.about(&format!("trigger `{}`", definition.id))),
            }
        }
        if !problems.is_empty() {
            return Err(ServiceError::Invalid(problems));
        }
        self.call(|reply| Command::SyncTriggers { deployment, definitions: checked, reply }).await
    }

    /// Claims up to `request.limit` ready runs for a worker, waiting up to
    /// `request.wait_seconds` for one when none is ready (long-poll). Each is leased to the
    /// worker for `lease_seconds`.
    pub async fn claim(&self, request: ClaimRequest) -> Result<Vec<ClaimedRun>, ServiceError> {
        request.validate().map_err(ServiceError::Invalid)?;
        self.inner.workers.claiming(&request, self.now());
        let wait = Duration::from_secs_f64(request.wait_seconds);
        let deadline = tokio::time::Instant::now() + wait;
        let mut changed = self.inner.runs_changed.subscribe();
        loop {
            changed.mark_unchanged();
            let asked = request.clone();
            let peers = self.inner.workers.peers(&request.deployments, &request.worker, self.now());
            let claimed = self.call(|reply| Command::Claim { request: asked, peers, reply }).await?;
            let now = tokio::time::Instant::now();
            if !claimed.is_empty() || now >= deadline {
                let outcome = if claimed.is_empty() { "empty" } else { "runs" };
                self.inner.metrics.claims.get_or_create(&vec![("outcome", outcome.to_owned())]).inc();
                self.inner.metrics.claimed_runs.inc_by(claimed.len() as u64);
                let now = self.now();
                self.inner.workers.claiming(&request, now);
                for c in &claimed {
                    self.inner.workers.holds(&request.worker, c.run.id, c.run.lease_expires, now);
                }
                return Ok(claimed);
            }
            // Wake on any run change; look again at least every 250 ms for retries whose
            // backoff ends.
            let nap = (deadline - now).min(Duration::from_millis(250));
            let _ = tokio::time::timeout(nap, changed.changed()).await;
        }
    }

    /// Extends a run's lease; the answer says whether the worker must cancel the run.
    pub async fn heartbeat(&self, id: Uuid, heartbeat: Heartbeat) -> Result<HeartbeatReply, ServiceError> {
        heartbeat.validate().map_err(ServiceError::Invalid)?;
        let worker = heartbeat.worker.clone();
        let reply = self.call(|reply| Command::Heartbeat { id, heartbeat, reply }).await;
        match &reply {
            Ok(r) if !r.cancel => self.inner.workers.holds(&worker, id, r.run.lease_expires, self.now()),
            _ => self.inner.workers.released(&worker, id, self.now()),
        }
        reply
    }

    /// The run's worker reports its output: the run is Completed.
    pub async fn complete(&self, id: Uuid, completion: Completion) -> Result<Run, ServiceError> {
        completion.validate().map_err(ServiceError::Invalid)?;
        self.inner.workers.released(&completion.worker, id, self.now());
        self.call(|reply| Command::Complete { id, completion, reply }).await
    }

    /// The run's worker reports a failed attempt: the run is retried after its backoff while
    /// retries remain, otherwise Failed.
    pub async fn fail(&self, id: Uuid, mut failure: FailureReport) -> Result<Run, ServiceError> {
        failure.error = crate::model::limits::clip_error(failure.error);
        self.inner.workers.released(&failure.worker, id, self.now());
        self.call(|reply| Command::Fail { id, failure, reply }).await
    }

    /// Cancels a waiting or running run (its worker is told at its next heartbeat).
    pub async fn cancel_run(&self, id: Uuid) -> Result<Run, ServiceError> {
        self.call(|reply| Command::Cancel { id, reply }).await
    }

    /// Appends lines to a run's log; returns how many.
    pub async fn append_logs(&self, id: Uuid, batch: LogBatch) -> Result<usize, ServiceError> {
        batch.validate().map_err(ServiceError::Invalid)?;
        self.call(|reply| Command::AppendLogs { id, batch, reply }).await
    }

    /// Appends chunks to a running run's stream (`ctx.stream`); answers how many.
    pub async fn append_stream(&self, id: Uuid, batch: crate::model::StreamBatch) -> Result<usize, ServiceError> {
        batch.validate().map_err(ServiceError::Invalid)?;
        self.call(|reply| Command::AppendStream { id, batch, reply }).await
    }

    /// Says the server is stopping: followers (a run's stream) end, so that their connections
    /// close and the shutdown does not wait on them.
    pub fn begin_shutdown(&self) {
        self.inner.draining.send_replace(true);
    }

    /// Resolves once [`Service::begin_shutdown`] was called.
    pub async fn draining(&self) {
        let mut draining = self.inner.draining.subscribe();
        let _ = draining.wait_for(|d| *d).await;
    }

    /// A watch that changes whenever a commit changed runs or their streams: what readers
    /// following a run wait on.
    pub fn run_changes(&self) -> watch::Receiver<u64> {
        self.inner.runs_changed.subscribe()
    }

    /// The workers heard from in the last hour: what each serves, its slots, the runs it holds,
    /// whether it is online (see `service/workers.rs`).
    pub fn workers(&self) -> Vec<crate::model::WorkerStatus> {
        self.inner.workers.list(self.now())
    }

    /// The service clock's "now".
    pub fn now(&self) -> Timestamp {
        self.inner.config.clock.now()
    }

    /// A [`Stamper`] for a batch of incoming events, at the clock's "now".
    pub fn stamper(&self) -> Stamper {
        Stamper { now: self.now(), ids: self.inner.config.ids.clone() }
    }

    /// A fresh id from the service's id source (for a new scope filter).
    pub fn new_id(&self) -> Uuid {
        self.inner.config.ids.new_id()
    }

    /// Installs a Hatchet-style scope filter for an existing deployment.
    pub async fn put_filter(&self, filter: ScopeFilter) -> Result<ScopeFilter, ServiceError> {
        self.call(|reply| Command::PutFilter { filter, reply }).await
    }

    /// Removes a scope filter.
    pub async fn delete_filter(&self, id: Uuid) -> Result<(), ServiceError> {
        self.call(|reply| Command::DeleteFilter { id, reply }).await
    }

    /// Accepted events, as they are committed.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.events.subscribe()
    }

    /// `Err(why)` once the core has stopped on a failure it could not recover from: every
    /// write would fail, so health checks must fail too.
    pub fn health(&self) -> Result<(), String> {
        match self.inner.core_failure.borrow().as_ref() {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }

    /// Resolves when the core has stopped on such a failure, with the reason (never, while it
    /// serves). `tripwire serve` exits non-zero then, so that its supervisor restarts it.
    pub async fn core_failed(&self) -> String {
        let mut failure = self.inner.core_failure.clone();
        loop {
            if let Some(why) = failure.borrow_and_update().clone() {
                return why;
            }
            if failure.changed().await.is_err() {
                // The core ended without a failure (shutdown): nothing to report, ever.
                std::future::pending::<()>().await;
            }
        }
    }

    /// How many runs or firings, since the service started, were to be created under an id
    /// already stored: each is an internal error (say, a trigger firing again after recovery),
    /// logged at ERROR with the id when it happens; the first run or firing was kept and the
    /// repeat dropped. 0 in a healthy service.
    pub fn duplicate_ids(&self) -> u64 {
        self.inner.store.duplicate_ids()
    }

    /// The settings it runs with.
    pub fn config(&self) -> &ServiceConfig {
        &self.inner.config
    }

    /// What the service counts; `Metrics::encode` for `GET /metrics`.
    pub fn metrics(&self) -> &Metrics {
        let depth = self.inner.commands.max_capacity() - self.inner.commands.capacity();
        self.inner.metrics.queue_depth.set(depth as i64);
        &self.inner.metrics
    }

    /// Who may do what: the API keys and the auth string.
    pub fn access(&self) -> &Access {
        &self.inner.access
    }

    /// Makes an API key; the answer holds its token, which is shown this once (only its
    /// digest is stored). Refused with `Conflict` when a key not revoked has the name.
    pub async fn create_key(&self, new: NewApiKey) -> Result<CreatedApiKey, ServiceError> {
        // The first key turns auth on: any other role would leave nobody able to manage keys
        // (and would cut off every client that has none, without a way back short of a
        // restart with `keys create --data`).
        let turns_auth_on = !self.inner.access.is_on();
        if turns_auth_on && new.role != crate::model::Role::Admin {
            let mut problems = Problems::default();
            problems.add_rule(
                &JsonPath::root().key("role"),
                format!(
                    "the first key must be an `admin` key: it turns auth on, and with only a key of role `{}` nobody \
                     could make or revoke keys; make an admin key first",
                    new.role
                ),
            );
            return Err(ServiceError::Invalid(problems));
        }
        let (key, token) = self.inner.access.mint(&new, self.now())?;
        let stored = self.call(|reply| Command::PutKey { key, reply }).await?;
        self.inner.access.record(stored.clone())?;
        if turns_auth_on {
            tracing::warn!(key = %stored.key.name, "auth is on from now: the first API key was made; every request needs a key");
        }
        Ok(CreatedApiKey { key: stored.key, token })
    }

    /// Revokes the API key named `which` (or with that id): from the next request on it
    /// admits nothing, and its open WebSocket connections are closed.
    pub async fn revoke_key(&self, which: String) -> Result<ApiKey, ServiceError> {
        let stored = self.call(|reply| Command::RevokeKey { which, reply }).await?;
        self.inner.access.record(stored.clone())?;
        Ok(stored.key)
    }

    /// Every API key (revoked ones last), with its last use.
    pub fn keys(&self) -> Vec<ApiKey> {
        self.inner.access.list()
    }

    async fn write_key_uses(&self) -> Result<(), ServiceError> {
        let uses = self.inner.access.unwritten_uses();
        if uses.is_empty() {
            return Ok(());
        }
        let written = uses.clone();
        self.call(|reply| Command::WriteKeyUses { uses, reply }).await?;
        self.inner.access.uses_written(&written);
        Ok(())
    }

    /// Stops the core after the work queued so far (each batch's state is stored with it;
    /// API keys' last uses are written on the way out).
    /// The database is closed when the last handle to the service is dropped.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        // Backtests stop at their next chunk of events: they hold the store open.
        self.inner.backtests.cancel_all();
        let _ = self.write_key_uses().await;
        let (reply, answer) = oneshot::channel();
        if self.inner.commands.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = answer.await;
        }
        let handle = self.inner.core.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resource;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tripwire-service-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn event(n: u128) -> Event {
        Event::new(Uuid::from_u128(n), Timestamp::from_micros(0), "x", Resource::new("r"))
    }

    #[tokio::test]
    async fn a_panicking_batch_fails_alone_and_three_in_a_row_stop_the_core_with_a_reason() {
        let dir = temp("explode");
        let service = Service::start(ServiceConfig::new(&dir)).await.unwrap();
        // One batch panics: its request fails, the next one is served.
        assert!(service.call(|reply| Command::Explode { reply }).await.is_err());
        assert_eq!(service.ingest(vec![event(1)]).await.unwrap().ids.len(), 1);
        assert_eq!(service.health(), Ok(()));
        // Three in a row: the core gives up, health says why, writes are refused.
        for _ in 0..3 {
            assert!(service.call(|reply| Command::Explode { reply }).await.is_err());
        }
        let why = tokio::time::timeout(Duration::from_secs(10), service.core_failed()).await.expect("the core stops");
        assert!(why.contains("3 batches in a row failed") && why.contains("a command exploded"), "{why}");
        assert_eq!(service.health(), Err(why));
        assert!(matches!(service.ingest(vec![event(2)]).await, Err(ServiceError::ShuttingDown)));
        service.shutdown().await; // joins the stopped core thread, which holds the database
        drop(service);
        // What was committed before is intact: a new service on the same data starts and serves.
        let service = Service::start(ServiceConfig::new(&dir)).await.unwrap();
        let report = service.ingest(vec![event(1), event(3)]).await.unwrap();
        assert_eq!(report.duplicates, [Uuid::from_u128(1)]);
        service.shutdown().await;
        drop(service);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
