//! What a worker does with the server's answer to registering its triggers: each warning
//! (e.g. "removed triggers it did not create") is logged with `tracing::warn!`, and
//! registering still succeeds. A fake backend stands in for the server.

use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tripwire::flow::{BoxFuture, WorkerProtocol};
use tripwire::model::{
    ClaimRequest, ClaimedRun, Completion, Deployment, FailureReport, Heartbeat, HeartbeatReply, LogBatch,
    TriggerRecord, TriggerSync,
};
use tripwire::prelude::*;
use uuid::Uuid;

/// Answers registration with `sync`; every other call is refused.
#[derive(Clone)]
struct Fake {
    sync: TriggerSync,
}

fn refused<T>() -> Result<T, ClientError> {
    Err(ClientError::Invalid("not in this test".into()))
}

impl WorkerProtocol for Fake {
    fn put_deployment<'a>(&'a self, _: &'a Deployment) -> BoxFuture<'a, Result<(), ClientError>> {
        Box::pin(async { Ok(()) })
    }
    fn sync_triggers<'a>(
        &'a self,
        _: &'a str,
        _: &'a [TriggerDefinition],
    ) -> BoxFuture<'a, Result<TriggerSync, ClientError>> {
        Box::pin(async move { Ok(self.sync.clone()) })
    }
    fn claim<'a>(&'a self, _: &'a ClaimRequest) -> BoxFuture<'a, Result<Vec<ClaimedRun>, ClientError>> {
        Box::pin(async { refused() })
    }
    fn heartbeat<'a>(&'a self, _: Uuid, _: &'a Heartbeat) -> BoxFuture<'a, Result<HeartbeatReply, ClientError>> {
        Box::pin(async { refused() })
    }
    fn complete<'a>(&'a self, _: Uuid, _: &'a Completion) -> BoxFuture<'a, Result<Run, ClientError>> {
        Box::pin(async { refused() })
    }
    fn fail<'a>(&'a self, _: Uuid, _: &'a FailureReport) -> BoxFuture<'a, Result<Run, ClientError>> {
        Box::pin(async { refused() })
    }
    fn append_logs<'a>(&'a self, _: Uuid, _: &'a LogBatch) -> BoxFuture<'a, Result<(), ClientError>> {
        Box::pin(async { refused() })
    }
    fn send_events(&self, _: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<Uuid>, ClientError>> {
        Box::pin(async { refused() })
    }
}

impl Tripwire for Fake {
    // An `async fn` would hold its argument, which need not be `Send`, in its future.
    #[allow(clippy::manual_async_fn)]
    fn emit(&self, _: impl Into<NewEvent>) -> impl Future<Output = Result<Uuid, ClientError>> + Send {
        async { refused() }
    }
    #[allow(clippy::manual_async_fn)]
    fn emit_many<E: Into<NewEvent>>(
        &self,
        _: impl IntoIterator<Item = E>,
    ) -> impl Future<Output = Result<Vec<Uuid>, ClientError>> + Send {
        async { refused() }
    }
    async fn runs(&self, _: RunQuery) -> Result<Vec<Run>, ClientError> {
        refused()
    }
    async fn run(&self, _: Uuid) -> Result<Run, ClientError> {
        refused()
    }
    async fn triggers(&self) -> Result<Vec<TriggerRecord>, ClientError> {
        refused()
    }
    async fn deployments(&self) -> Result<Vec<Deployment>, ClientError> {
        refused()
    }
    #[allow(clippy::manual_async_fn)]
    fn enqueue(
        &self,
        _: &(impl tripwire::flow::RunTarget + ?Sized),
        _: impl serde::Serialize + Send,
    ) -> impl Future<Output = Result<Run, ClientError>> + Send {
        async { refused() }
    }
}

/// Log output, collected.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn registering_logs_each_warning_of_the_trigger_sync() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let removed = "removed trigger `applied-by-cli`, which this deployment's worker did not create";
    let sync =
        TriggerSync { deleted: vec!["applied-by-cli".into()], warnings: vec![removed.into()], ..Default::default() };
    let flow = Flow::new("report", |_: FlowContext, _: Value| async move { Ok(()) });
    let trigger = TriggerDefinition::new("report-on-ping", EventTrigger::new().expect("ping"));
    Worker::new(Fake { sync }).flow(flow.clone(), [trigger.clone()]).register().await.unwrap();
    let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("WARN") && logged.contains(removed) && logged.contains("report"), "{logged}");

    // Without warnings, registering logs none.
    captured.0.lock().unwrap().clear();
    Worker::new(Fake { sync: TriggerSync::default() }).flow(flow, [trigger]).register().await.unwrap();
    assert_eq!(String::from_utf8(captured.0.lock().unwrap().clone()).unwrap(), "");
}

/// Run as its own process by the test below: registers with a warning and no `tracing`
/// subscriber installed.
#[tokio::test(flavor = "current_thread")]
#[ignore = "run by warnings_are_printed_without_a_tracing_subscriber in a process of its own"]
async fn register_with_a_warning_and_no_subscriber() {
    let sync = TriggerSync { warnings: vec!["removed trigger `applied-by-cli`".into()], ..Default::default() };
    let flow = Flow::new("report", |_: FlowContext, _: Value| async move { Ok(()) });
    let trigger = TriggerDefinition::new("report-on-ping", EventTrigger::new().expect("ping"));
    Worker::new(Fake { sync }).flow(flow, [trigger]).register().await.unwrap();
}

/// An application that installed no subscriber still sees the worker's warnings, on stderr.
#[test]
fn warnings_are_printed_without_a_tracing_subscriber() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "register_with_a_warning_and_no_subscriber", "--ignored", "--nocapture", "--test-threads=1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tripwire: warning: flow `report`: removed trigger `applied-by-cli`"), "stderr: {stderr}");
}
