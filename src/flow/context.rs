//! What a running flow sees: its run, the events that caused it, a logger whose lines are
//! stored with the run, and `emit` to send events (which other triggers may watch).

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::client::ClientError;
use crate::model::{Event, LogLevel, NewEvent, NewLogLine, Resource, Run};

use super::protocol::WorkerProtocol;

/// The context of one attempt of a run.
#[derive(Clone)]
pub struct FlowContext {
    run: Arc<Run>,
    events: Arc<Vec<Event>>,
    logger: Logger,
    backend: Arc<dyn WorkerProtocol>,
}

impl FlowContext {
    pub(crate) fn new(run: Run, events: Vec<Event>, logger: Logger, backend: Arc<dyn WorkerProtocol>) -> FlowContext {
        FlowContext { run: Arc::new(run), events: Arc::new(events), logger, backend }
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
