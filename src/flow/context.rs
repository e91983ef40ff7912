//! What a running flow sees: its run, the events that caused it, a logger whose lines are
//! stored with the run, `emit` to send events (which other triggers may watch), and the
//! attempt's control: whether it must stop (`cancelled`), and `refresh_timeout`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use uuid::Uuid;

use crate::client::ClientError;
use crate::model::{
    ChildRequest, Event, Heartbeat, LogLevel, NewEvent, NewLogLine, Resource, Run, RunState, StreamBatch,
};

use super::api::{parameters_of, until_final, RunTarget};
use super::protocol::WorkerProtocol;

/// What the worker and a running attempt share: whether it must stop, and its execution
/// deadline (moved by `refresh_timeout`).
pub(crate) struct Control {
    cancelled: watch::Sender<bool>,
    deadline: watch::Sender<Option<Instant>>,
    refreshed: std::sync::atomic::AtomicBool,
    worker: String,
    lease_seconds: f64,
}

impl Control {
    /// An attempt of `worker`'s, its deadline `timeout` from now (none without one).
    pub(crate) fn new(worker: String, lease_seconds: f64, timeout: Option<Duration>) -> Arc<Control> {
        let deadline = timeout.map(|t| Instant::now() + t);
        Arc::new(Control {
            cancelled: watch::Sender::new(false),
            deadline: watch::Sender::new(deadline),
            refreshed: std::sync::atomic::AtomicBool::new(false),
            worker,
            lease_seconds,
        })
    }

    /// Tells the flow to stop (`ctx.cancelled()` resolves).
    pub(crate) fn cancel(&self) {
        self.cancelled.send_replace(true);
    }

    /// Whether the flow refreshed its deadline.
    pub(crate) fn refreshed(&self) -> bool {
        self.refreshed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Follows the deadline as the flow refreshes it.
    pub(crate) fn deadline(&self) -> watch::Receiver<Option<Instant>> {
        self.deadline.subscribe()
    }
}

/// The context of one attempt of a run.
#[derive(Clone)]
pub struct FlowContext {
    run: Arc<Run>,
    events: Arc<Vec<Event>>,
    logger: Logger,
    backend: Arc<dyn WorkerProtocol>,
    control: Arc<Control>,
    /// How many children this attempt has asked for: the next one's position (its key).
    spawned: Arc<std::sync::atomic::AtomicU64>,
}

impl FlowContext {
    pub(crate) fn new(
        run: Run,
        events: Vec<Event>,
        logger: Logger,
        backend: Arc<dyn WorkerProtocol>,
        control: Arc<Control>,
    ) -> FlowContext {
        FlowContext { run: Arc::new(run), events: Arc::new(events), logger, backend, control, spawned: Arc::default() }
    }

    /// Whether the attempt must stop: the run was cancelled (by hand, or by a concurrency
    /// strategy), timed out, or is no longer this worker's. Its result will be discarded.
    pub fn is_cancelled(&self) -> bool {
        *self.control.cancelled.borrow()
    }

    /// Resolves when the attempt must stop (see [`FlowContext::is_cancelled`]), so that long
    /// work can stop cleanly: `tokio::select! { _ = ctx.cancelled() => ..., r = work => ... }`.
    /// The worker learns it at its next heartbeat (a third of the lease) or at the deadline,
    /// then gives the flow its grace ([`Worker::cancel_grace`](super::Worker::cancel_grace), 1 s
    /// by default) to return before dropping it.
    pub async fn cancelled(&self) {
        let mut cancelled = self.control.cancelled.subscribe();
        // The sender lives as long as this context, so this only ends when it is set.
        let _ = cancelled.wait_for(|c| *c).await;
    }

    /// Moves the attempt's execution deadline to `timeout` from now, on the server and in
    /// the worker (Hatchet's `refresh_timeout`): a flow that knows it needs longer than the
    /// deployment's `timeout_seconds` says so before that runs out. At most a year.
    pub async fn refresh_timeout(&self, timeout: Duration) -> Result<(), ClientError> {
        let heartbeat = Heartbeat {
            worker: self.control.worker.clone(),
            lease_seconds: self.control.lease_seconds,
            timeout_seconds: Some(timeout.as_secs_f64()),
        };
        let reply = self.backend.heartbeat(self.run.id, &heartbeat).await?;
        if reply.cancel {
            self.control.cancel();
            return Err(ClientError::Api {
                status: 409,
                code: "run_not_held".into(),
                message: format!(
                    "run {} is no longer this attempt's ({:?}): its deadline was not refreshed",
                    self.run.id, reply.run.state
                ),
            });
        }
        self.control.refreshed.store(true, std::sync::atomic::Ordering::Release);
        self.control.deadline.send_replace(Some(Instant::now() + timeout));
        Ok(())
    }

    /// The backend this attempt talks to.
    pub(super) fn backend(&self) -> &Arc<dyn WorkerProtocol> {
        &self.backend
    }

    /// The run's id.
    pub fn run_id(&self) -> Uuid {
        self.run.id
    }

    /// The deployment (flow) name.
    pub fn deployment(&self) -> &str {
        &self.run.deployment
    }

    /// The attempt, from 1.
    pub fn attempt(&self) -> u32 {
        self.run.attempt
    }

    /// The run as claimed (parameters, cause, priority, ...).
    pub fn run(&self) -> &Run {
        &self.run
    }

    /// The run's parameters as JSON.
    pub fn parameters(&self) -> &Map<String, Value> {
        &self.run.parameters
    }

    /// The event that fired the trigger, if a trigger created the run (and the event is
    /// still stored).
    pub fn event(&self) -> Option<&Event> {
        let id = self.run.cause.as_ref()?.triggering_event?;
        self.events.iter().find(|e| e.id == id).or_else(|| self.events.last())
    }

    /// Every event behind the firing, oldest first.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The run's logger.
    pub fn log(&self) -> &Logger {
        &self.logger
    }

    /// Pushes a chunk of output while the run goes on (Hatchet's `put_stream`): clients
    /// following the run read it live (`Client::stream`, `GET /api/runs/{id}/stream`,
    /// `tripwire runs stream ID`), and it is kept with the run for later readers. Chunks keep
    /// their order; each is at most 64 KiB. Fails once the run is no longer running.
    pub async fn stream(&self, chunk: impl Into<String>) -> Result<(), ClientError> {
        let batch = StreamBatch { chunks: vec![chunk.into()] };
        self.backend.append_stream(self.run.id, &batch).await
    }

    /// Runs `child` (a [`super::Flow`] or a deployment's name) as a child of this run, with
    /// `parameters`, and waits for its output (Hatchet's `spawn`): `Ok(output)` when it
    /// completed, [`ClientError::RunFailed`] when it failed or was cancelled.
    ///
    /// Children are durable. Each is keyed by this run and its position among the attempt's
    /// spawns (`0`, `1`, ...; the order of the calls, not of their completion): when the run
    /// is retried, or its worker dies and another takes it over, the flow's code runs again
    /// and each spawn finds the child made before (still running, or with its output)
    /// instead of making a new one. A flow that spawns in an order that changes between
    /// attempts gives each child its own key with [`FlowContext::spawn_keyed`].
    ///
    /// Cancelling this run cancels its children. The child runs on a worker serving its
    /// deployment, while this run holds its own slot: a worker serving both needs a slot for
    /// each level.
    pub fn spawn(
        &self,
        child: &(impl RunTarget + ?Sized),
        parameters: impl serde::Serialize,
    ) -> impl std::future::Future<Output = Result<Value, ClientError>> + Send + 'static {
        // The position is taken now, in call order, so that spawns awaited together keep it.
        let position = self.spawned.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.spawn_keyed(child, position.to_string(), parameters)
    }

    /// [`FlowContext::spawn`] with the child's key given: the same key finds the same child
    /// in every attempt (1 to 256 characters; a run has at most 1,000 children).
    pub fn spawn_keyed(
        &self,
        child: &(impl RunTarget + ?Sized),
        key: impl Into<String>,
        parameters: impl serde::Serialize,
    ) -> impl std::future::Future<Output = Result<Value, ClientError>> + Send + 'static {
        let request = parameters_of(parameters).map(|parameters| ChildRequest {
            worker: self.control.worker.clone(),
            deployment: child.deployment_name().to_owned(),
            key: key.into(),
            parameters,
        });
        let (backend, parent, control) = (self.backend.clone(), self.run.id, self.control.clone());
        async move {
            let request = request?;
            let child = backend.spawn_child(parent, &request).await?;
            let mut cancelled = control.cancelled.subscribe();
            tokio::select! {
                run = until_final(backend.as_ref(), child.id, None) => ClientError::output_of(run?),
                // The server cancels the children of a cancelled run; this attempt stops waiting.
                _ = cancelled.wait_for(|c| *c) => Err(ClientError::RunFailed {
                    id: child.id,
                    deployment: child.deployment,
                    state: RunState::Cancelled,
                    error: format!("run {parent} was cancelled while it waited for its child `{}`", request.key),
                }),
            }
        }
    }

    /// Sends an event from inside the flow. The run is added to its related resources (role
    /// `run`), so the event can be traced back to it. Returns the event's id.
    pub async fn emit(&self, event: impl Into<NewEvent>) -> Result<Uuid, ClientError> {
        let event = event.into().related(
            Resource::new(format!("tripwire.run.{}", self.run.id))
                .with("prefect.resource.role", "run")
                .with("prefect.resource.name", self.run.deployment.clone()),
        );
        let ids = self.backend.send_events(vec![event]).await?;
        ids.into_iter().next().ok_or_else(|| ClientError::Decode("the server acknowledged no event".into()))
    }
}

/// A run's logger: lines are buffered, sent with the run (`GET /api/runs/{id}/logs`) within
/// moments, and echoed to the worker's own log through `tracing`.
#[derive(Clone)]
pub struct Logger {
    run: Uuid,
    pending: Arc<Mutex<Vec<NewLogLine>>>,
    wake: Arc<Notify>,
}

impl Logger {
    pub(crate) fn new(run: Uuid) -> Logger {
        Logger { run, pending: Arc::default(), wake: Arc::new(Notify::new()) }
    }

    /// Logs at `level`.
    pub fn write(&self, level: LogLevel, message: impl Into<String>) {
        let message = message.into();
        match level {
            LogLevel::Debug => tracing::debug!(run = %self.run, "{message}"),
            LogLevel::Info => tracing::info!(run = %self.run, "{message}"),
            LogLevel::Warning => tracing::warn!(run = %self.run, "{message}"),
            LogLevel::Error => tracing::error!(run = %self.run, "{message}"),
        }
        if let Ok(mut pending) = self.pending.lock() {
            pending.push(NewLogLine { at: None, level, message });
        }
        self.wake.notify_one();
    }

    /// Logs at `debug`.
    pub fn debug(&self, message: impl Into<String>) {
        self.write(LogLevel::Debug, message);
    }

    /// Logs at `info`.
    pub fn info(&self, message: impl Into<String>) {
        self.write(LogLevel::Info, message);
    }

    /// Logs at `warning`.
    pub fn warning(&self, message: impl Into<String>) {
        self.write(LogLevel::Warning, message);
    }

    /// Logs at `error`.
    pub fn error(&self, message: impl Into<String>) {
        self.write(LogLevel::Error, message);
    }

    /// Waits until a line is logged.
    pub(crate) async fn written(&self) {
        self.wake.notified().await;
    }

    /// The lines logged since the last call.
    pub(crate) fn take(&self) -> Vec<NewLogLine> {
        self.pending.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default()
    }
}
