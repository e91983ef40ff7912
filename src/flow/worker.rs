//! The worker loop: register the flows' deployments and triggers, claim runs, run them with
//! heartbeats, report their outcome, and stop gracefully; [`Worker::start`] runs it in the
//! background behind a [`WorkerHandle`].

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

use crate::client::ClientError;
use crate::model::{
    ClaimRequest, ClaimedRun, Completion, FailureReport, Heartbeat, LabelValue, LogBatch, Run, TriggerDefinition,
    DEFAULT_LEASE_SECONDS,
};

use super::context::{Control, FlowContext, Logger};
use super::notice::unheard;
use super::protocol::WorkerProtocol;
use super::{Failure, Flow, Tripwire, CANCEL_GRACE};

/// How long one claim waits for runs before the worker asks again.
const CLAIM_WAIT: Duration = Duration::from_secs(2);
/// Pause after the server could not be reached.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Attempts to deliver a run's result before giving up (the lease then lapses and another
/// worker runs it again).
const REPORT_ATTEMPTS: u32 = 10;

static WORKERS: AtomicU64 = AtomicU64::new(0);

/// A worker: serves flows until stopped. Several flows can share one worker.
///
/// [`Worker::start`] registers the flows' deployments and triggers and returns once they are
/// in place, with the worker serving in the background: events emitted after it returns are
/// seen by the triggers. [`Worker::run`] serves in the foreground until Ctrl-C.
///
/// ```
/// use std::time::Duration;
/// use tripwire::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("tripwire-doc-worker-{}", std::process::id()));
/// let tripwire = Embedded::open(&dir).await?;
/// let greet = Flow::new("greet", |_: FlowContext, p: serde_json::Value| async move {
///     Ok(format!("hello {}", p["user"].as_str().unwrap_or("stranger")))
/// });
/// let on_signup = TriggerDefinition::new("greet-on-signup", EventTrigger::new().expect("user.signup"))
///     .parameters(serde_json::json!({"user": "{{ event.resource.id }}"}));
///
/// let worker = Worker::new(tripwire.clone()).slots(4).flow(greet, [on_signup]).start().await?;
/// tripwire.emit(NewEvent::new("user.signup", Resource::new("ada"))).await?; // not lost
/// worker.wait_idle().await; // the run it caused has finished
/// let runs = tripwire.runs(RunQuery::new().deployment("greet")).await?;
/// assert_eq!(runs[0].output, Some(serde_json::json!("hello ada")));
/// worker.stop().await?;
/// # tripwire.shutdown().await;
/// # drop(tripwire);
/// # let _ = std::fs::remove_dir_all(&dir);
/// # Ok(())
/// # }
/// ```
pub struct Worker {
    backend: Arc<dyn WorkerProtocol>,
    /// Each flow with the triggers it owns (`None`: its triggers are managed elsewhere, e.g.
    /// applied from JSON with the CLI, and left alone).
    flows: Vec<(Flow, Option<Vec<TriggerDefinition>>)>,
    name: String,
    slots: usize,
    lease: Duration,
    labels: BTreeMap<String, LabelValue>,
    cancel_grace: Duration,
    /// What is wrong with the workflows added (reported by `register`).
    invalid: Vec<String>,
}

/// Serves several flows, each with its triggers, in one worker until Ctrl-C.
pub async fn serve_many<T: Tripwire>(
    backend: &T,
    flows: impl IntoIterator<Item = (Flow, Vec<TriggerDefinition>)>,
) -> Result<(), ClientError> {
    let mut worker = Worker::new(backend.clone());
    for (flow, triggers) in flows {
        worker = worker.flow(flow, triggers);
    }
    worker.run().await
}

impl Worker {
    /// A worker of `tripwire` (a [`Client`](crate::client::Client) or an
    /// [`Embedded`](crate::Embedded)) with 8 slots (runs at once) and a 30 s lease, named
    /// after the host and process.
    pub fn new(tripwire: impl Tripwire) -> Worker {
        Worker::with_protocol(Arc::new(tripwire))
    }

    fn with_protocol(backend: Arc<dyn WorkerProtocol>) -> Worker {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
        let n = WORKERS.fetch_add(1, Ordering::Relaxed);
        Worker {
            backend,
            flows: Vec::new(),
            name: format!("{host}-{}-{n}", std::process::id()),
            slots: 8,
            lease: Duration::from_secs_f64(DEFAULT_LEASE_SECONDS),
            labels: BTreeMap::new(),
            cancel_grace: CANCEL_GRACE,
            invalid: Vec::new(),
        }
    }

    /// Adds a flow and exactly the triggers that should run it.
    pub fn flow(mut self, flow: Flow, triggers: impl IntoIterator<Item = TriggerDefinition>) -> Worker {
        self.flows.push((flow, Some(triggers.into_iter().collect())));
        self
    }

    /// Adds a DAG [`Workflow`](super::Workflow) with exactly the triggers that should run it:
    /// its own deployment (the run that drives the DAG) and each task's (without triggers of
    /// their own: the workflow runs them). A workflow run holds a slot while its tasks run in
    /// others.
    pub fn workflow(
        mut self,
        workflow: super::Workflow,
        triggers: impl IntoIterator<Item = TriggerDefinition>,
    ) -> Worker {
        if let Err(e) = workflow.problems() {
            self.invalid.push(e.to_string());
        }
        let (runner, tasks) = workflow.flows();
        self.flows.push((runner, Some(triggers.into_iter().collect())));
        for task in tasks {
            self.flows.push((task, Some(Vec::new())));
        }
        self
    }

    /// Adds a flow whose triggers are managed elsewhere (applied as JSON with
    /// `tripwire triggers apply`, or through the API): registering leaves them alone.
    pub fn flow_without_triggers(mut self, flow: Flow) -> Worker {
        self.flows.push((flow, None));
        self
    }

    /// Its name, as runs record it.
    pub fn name(mut self, name: impl Into<String>) -> Worker {
        self.name = name.into();
        self
    }

    /// Runs at once (1 to 10,000); shown in `GET /api/workers`.
    pub fn slots(mut self, slots: usize) -> Worker {
        self.slots = slots.clamp(1, crate::model::run::MAX_WORKER_SLOTS as usize);
        self
    }

    /// A label saying what this worker is (`.label("region", "eu").label("memory", 64)`),
    /// matched against deployments' desired labels (Hatchet's worker affinity): runs that
    /// require a label this worker lacks are left to others.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<LabelValue>) -> Worker {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// How long a flow told to stop (`ctx.cancelled()` resolved) has to return before it is
    /// dropped (default [`CANCEL_GRACE`](super::CANCEL_GRACE), 1 s). A flow that does not
    /// watch `cancelled()` runs on for this long.
    pub fn cancel_grace(mut self, grace: Duration) -> Worker {
        self.cancel_grace = grace;
        self
    }

    /// How long a claimed run stays leased without a heartbeat (heartbeats go out three times
    /// per lease). A killed worker's runs go back to the queue after this.
    pub fn lease(mut self, lease: Duration) -> Worker {
        self.lease = lease.max(Duration::from_secs(1));
        self
    }

    /// Creates or updates each flow's deployment and makes its triggers exactly the given ones
    /// (unchanged ones keep their state; ones no longer given are removed). Idempotent. What
    /// the server warns about (e.g. removing triggers that were applied some other way) is
    /// logged with `tracing::warn!` (and printed to stderr when no `tracing` subscriber is
    /// installed). [`Worker::start`], [`Worker::run`] and
    /// [`Worker::run_until`] call it first.
    pub async fn register(&self) -> Result<(), ClientError> {
        if !self.invalid.is_empty() {
            return Err(ClientError::Invalid(self.invalid.join("; ")));
        }
        for (flow, triggers) in &self.flows {
            self.backend.put_deployment(flow.deployment()).await?;
            let Some(triggers) = triggers else {
                tracing::info!(flow = flow.name(), "flow registered; its triggers are managed elsewhere");
                continue;
            };
            let definitions: Vec<TriggerDefinition> = triggers
                .iter()
                .cloned()
                .map(|mut d| {
                    d.deployment = Some(flow.name().to_owned());
                    d
                })
                .collect();
            let sync = self.backend.sync_triggers(flow.name(), &definitions).await?;
            tracing::info!(
                flow = flow.name(),
                created = ?sync.created,
                updated = ?sync.updated,
                unchanged = ?sync.unchanged,
                deleted = ?sync.deleted,
                "flow registered"
            );
            for warning in &sync.warnings {
                tracing::warn!(flow = flow.name(), "{warning}");
                unheard(format_args!("flow `{}`: {warning}", flow.name()));
            }
        }
        Ok(())
    }

    /// Registers (see [`Worker::register`]), then serves in the background; returns once the
    /// deployments and triggers are in place, so that every event emitted afterwards is seen
    /// by them. Stop it with [`WorkerHandle::stop`]; a dropped handle leaves the worker
    /// serving until the runtime shuts down.
    pub async fn start(self) -> Result<WorkerHandle, ClientError> {
        self.register().await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let (status, watching) = watch::channel(Status::default());
        let task = tokio::spawn(self.serve(
            async move {
                let _ = stopped.await;
            },
            status,
        ));
        Ok(WorkerHandle { stop: Some(stop), task, status: watching })
    }

    /// Registers, then serves until Ctrl-C; in-flight runs finish before it returns.
    pub async fn run(self) -> Result<(), ClientError> {
        self.run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
    }

    /// Registers, then serves until `stop` completes; in-flight runs finish before it returns.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> Result<(), ClientError> {
        self.register().await?;
        self.serve(stop, watch::channel(Status::default()).0).await;
        Ok(())
    }

    /// Serves (registered already) until `stop` completes, telling `status` what it does.
    async fn serve(self, stop: impl Future<Output = ()>, status: watch::Sender<Status>) {
        let flows: Arc<HashMap<String, Flow>> =
            Arc::new(self.flows.iter().map(|(f, _)| (f.name().to_owned(), f.clone())).collect());
        let mut names: Vec<String> = flows.keys().cloned().collect();
        names.sort();
        tracing::info!(worker = %self.name, flows = ?names, "worker started");
        let mut in_flight = JoinSet::new();
        let mut stop = std::pin::pin!(stop);
        let mut stopping = false;
        while !stopping {
            let free = self.slots.saturating_sub(in_flight.len());
            if free == 0 {
                tokio::select! {
                    _ = &mut stop => stopping = true,
                    _ = in_flight.join_next() => {}
                }
                continue;
            }
            let mut claim_number = 0;
            status.send_modify(|s| {
                s.claims_started += 1;
                claim_number = s.claims_started;
            });
            let mut request = ClaimRequest::new(self.name.clone(), names.clone());
            request.limit = free.min(crate::model::run::MAX_CLAIM as usize) as u32;
            request.lease_seconds = self.lease.as_secs_f64();
            request.wait_seconds = CLAIM_WAIT.as_secs_f64();
            request.slots = Some(self.slots.min(crate::model::run::MAX_WORKER_SLOTS as usize) as u32);
            request.labels = self.labels.clone();
            let claim = self.backend.claim(&request);
            tokio::pin!(claim);
            // A claim in flight is finished even when asked to stop: the runs it takes are
            // ours, and they are run, not left to lapse.
            let claimed = loop {
                tokio::select! {
                    result = &mut claim => break result,
                    _ = &mut stop, if !stopping => stopping = true,
                    Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                }
            };
            match claimed {
                Ok(runs) => {
                    // Idle: nothing was ready at the claim's last look, and nothing runs. (A run
                    // that finished during the claim was reported before its task ended, and
                    // the claim looked again after that report changed the runs.)
                    while in_flight.try_join_next().is_some() {}
                    if runs.is_empty() && in_flight.is_empty() {
                        status.send_modify(|s| s.idle_claim = claim_number);
                    }
                    for claimed in runs {
                        let Some(flow) = flows.get(&claimed.run.deployment).cloned() else { continue };
                        let backend = self.backend.clone();
                        let worker = self.name.clone();
                        let timing = Timing { lease: self.lease, grace: self.cancel_grace };
                        in_flight.spawn(run_one(backend, flow, claimed, worker, timing));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming runs failed; trying again");
                    unheard(format_args!("claiming runs failed; trying again: {e}"));
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_PAUSE) => {}
                        _ = &mut stop, if !stopping => stopping = true,
                    }
                }
            }
        }
        if !in_flight.is_empty() {
            tracing::info!(runs = in_flight.len(), "stopping: finishing the runs in flight");
        }
        while in_flight.join_next().await.is_some() {}
        tracing::info!(worker = %self.name, "worker stopped");
    }
}

/// What a serving worker tells its [`WorkerHandle`].
#[derive(Clone, Copy, Debug, Default)]
struct Status {
    /// Claims asked for so far (the number of the latest).
    claims_started: u64,
    /// The number of the latest claim that came back empty with no run left in flight.
    idle_claim: u64,
}

/// A worker serving in the background, from [`Worker::start`].
#[derive(Debug)]
pub struct WorkerHandle {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    status: watch::Receiver<Status>,
}

impl WorkerHandle {
    /// Waits until the worker is idle: a claim it asked for after this call found no run ready
    /// for its deployments, and no run of its own was left in flight. So every run that was ready
    /// when this was called (e.g. caused by an event whose `emit` had returned) has been run
    /// and reported (or handed back). Runs that are not ready (waiting for a retry's backoff,
    /// held by a concurrency limit, or claimed by another worker) do not count, nor do runs
    /// that proactive triggers create later. It can take up to one claim's long-poll (2 s)
    /// after the last run finishes; it returns at once if the worker has stopped. Wrap it in
    /// `tokio::time::timeout` to bound it.
    pub async fn wait_idle(&self) {
        let mut status = self.status.clone();
        let after = status.borrow_and_update().claims_started;
        // An error means the worker stopped: nothing more will run.
        let _ = status.wait_for(|s| s.idle_claim > after).await;
    }

    /// Stops gracefully: no new runs are claimed (a claim already asked for is taken and
    /// run), the runs in flight finish and are reported, then it returns.
    pub async fn stop(mut self) -> Result<(), ClientError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(ClientError::Invalid(format!("the worker task ended abnormally: {e}"))),
        }
    }

    /// True once the worker has stopped.
    pub fn is_stopped(&self) -> bool {
        self.task.is_finished()
    }
}

/// Runs one claimed run: the flow, heartbeats, log shipping, the local timeout, and the
/// report of its outcome.
/// A worker's lease and cancellation grace, as each run uses them.
#[derive(Clone, Copy)]
struct Timing {
    lease: Duration,
    grace: Duration,
}

async fn run_one(backend: Arc<dyn WorkerProtocol>, flow: Flow, claimed: ClaimedRun, worker: String, timing: Timing) {
    let Timing { lease, grace } = timing;
    let ClaimedRun { run, events } = claimed;
    let id = run.id;
    let logger = Logger::new(id);
    let parameters = Value::Object(run.parameters.clone());
    // Validated by the server (at most a year); a value no timer can hold means no timeout.
    let timeout = flow.deployment().timeout_seconds.and_then(|s| Duration::try_from_secs_f64(s).ok());
    let control = Control::new(worker.clone(), lease.as_secs_f64(), timeout);
    let ctx = FlowContext::new(run.clone(), events, logger.clone(), backend.clone(), control.clone());
    tracing::info!(run = %id, flow = flow.name(), attempt = run.attempt, "run started");
    let work = AssertUnwindSafe(flow.call(ctx, parameters)).catch_unwind();
    tokio::pin!(work);
    // The execution deadline, as the flow refreshes it.
    let mut deadline = control.deadline();
    let mut until = *deadline.borrow_and_update();
    let mut beat = tokio::time::interval(lease / 3);
    beat.tick().await;
    let heartbeat = Heartbeat::new(worker.clone(), lease.as_secs_f64());
    // Why the attempt stops early: None when the server took it away (nothing to report),
    // Some(error) when it ran out of time (reported as a failure).
    let outcome: Result<Result<Value, Failure>, Option<String>> = loop {
        let expires = async {
            match until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = &mut work => break Ok(match result {
                Ok(outcome) => outcome,
                Err(panic) => Err(Failure::Error(format!("the flow panicked: {}", panic_message(&panic)))),
            }),
            _ = expires => {
                let error = match (timeout, control.refreshed()) {
                    (_, true) => "timed out: the attempt ran past its refreshed deadline".to_owned(),
                    (Some(t), false) => format!("timed out: the attempt ran longer than {} s", t.as_secs_f64()),
                    (None, false) => "timed out".to_owned(),
                };
                break Err(Some(error));
            }
            Ok(()) = deadline.changed() => until = *deadline.borrow_and_update(),
            _ = beat.tick() => {
                ship_logs(&*backend, id, &logger).await;
                match backend.heartbeat(id, &heartbeat).await {
                    Ok(reply) if reply.cancel => {
                        tracing::warn!(run = %id, state = ?reply.run.state, reason = ?reply.run.reason, "told to stop the run");
                        unheard(format_args!("run {id}: told to stop ({:?}, {:?})", reply.run.state, reply.run.reason));
                        break Err(None);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(run = %id, error = %e, "heartbeat failed");
                        unheard(format_args!("run {id}: heartbeat failed: {e}"));
                    }
                }
            }
            _ = logger.written() => ship_logs(&*backend, id, &logger).await,
        }
    };
    let outcome = match outcome {
        Ok(outcome) => Some(outcome),
        Err(why) => {
            // `ctx.cancelled()` resolves; the flow has a moment to stop cleanly, then is dropped.
            control.cancel();
            if tokio::time::timeout(grace, &mut work).await.is_err() {
                tracing::warn!(run = %id, ?grace, "the flow did not stop within its grace; dropped");
                unheard(format_args!("run {id}: the flow did not stop within its grace ({grace:?}); dropped"));
            }
            why.map(|error| Err(Failure::Error(error)))
        }
    };
    ship_logs(&*backend, id, &logger).await;
    let Some(outcome) = outcome else { return };
    report(&*backend, &run, &worker, outcome).await;
}

async fn ship_logs(backend: &dyn WorkerProtocol, id: Uuid, logger: &Logger) {
    let lines = logger.take();
    if lines.is_empty() {
        return;
    }
    for chunk in lines.chunks(crate::model::run::MAX_LOG_LINES_PER_REQUEST) {
        if let Err(e) = backend.append_logs(id, &LogBatch { lines: chunk.to_vec() }).await {
            tracing::warn!(run = %id, error = %e, "could not store log lines");
            unheard(format_args!("run {id}: could not store log lines: {e}"));
        }
    }
}

/// Delivers the outcome, retrying while the server cannot be reached; a refusal (the run was
/// cancelled, timed out or taken over meanwhile) is logged, not retried.
async fn report(backend: &dyn WorkerProtocol, run: &Run, worker: &str, outcome: Result<Value, Failure>) {
    let id = run.id;
    for attempt in 1..=REPORT_ATTEMPTS {
        let result = match &outcome {
            Ok(output) => backend.complete(id, &Completion { worker: worker.to_owned(), output: output.clone() }).await,
            Err(failure) => {
                let (error, retry) = match failure {
                    Failure::Parameters(e) => (e.clone(), false),
                    Failure::Error(e) => (e.clone(), true),
                };
                backend.fail(id, &FailureReport { worker: worker.to_owned(), error, retry }).await
            }
        };
        match result {
            Ok(run) => {
                tracing::info!(run = %id, state = ?run.state, attempt = run.attempt, "run reported");
                return;
            }
            Err(ClientError::Api { status, message, .. }) if status < 500 => {
                tracing::warn!(run = %id, %message, "the server refused the run's result");
                unheard(format_args!("run {id}: the server refused the run's result: {message}"));
                return;
            }
            Err(e) => {
                tracing::warn!(run = %id, error = %e, attempt, "reporting the run's result failed; retrying");
                unheard(format_args!("run {id}: reporting the run's result failed (attempt {attempt}); retrying: {e}"));
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".into())
}
