//! A running flow's control over its attempt, against the real server binary with a worker:
//! `ctx.refresh_timeout` outlives the deployment's deadline (on the server too), and
//! `ctx.cancelled()` resolves when the run is cancelled, times out or is pre-empted by a
//! concurrency strategy, so the flow stops cleanly.

#![allow(clippy::disallowed_methods)] // tests wait on the wall clock

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tripwire::client::Client;
use tripwire::flow::{Flow, FlowContext, Worker};
use tripwire::model::{RunState, StateReason};
use uuid::Uuid;

use common::{temp_dir, wait_for_run, Http, Server};

#[tokio::test]
async fn a_flow_that_refreshes_its_timeout_outlives_the_original_deadline() {
    let data = temp_dir("ctx-refresh");
    let server = Server::start(&data);
    let client = Client::new(&server.api).unwrap();
    // The deployment allows 1.5 s; the flow needs 3 s, and says so at once.
    let patient = Flow::new("patient", |ctx: FlowContext, _: Value| async move {
        ctx.refresh_timeout(Duration::from_secs(6)).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok(json!({"cancelled": ctx.is_cancelled()}))
    })
    .timeout(Duration::from_millis(1500));
    let hasty = Flow::new("hasty", |_: FlowContext, _: Value| async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok(())
    })
    .timeout(Duration::from_millis(1500));
    let worker = Worker::new(client.clone())
        .lease(Duration::from_secs(3))
        .flow(patient, [])
        .flow(hasty, [])
        .start()
        .await
        .unwrap();

    let run = client.create_run("patient", None).await.unwrap();
    let running = wait_for_run(&client, run.id, "the refreshed deadline", |r| r.timeout_at.is_some()).await;
    let deadline = running.timeout_at.unwrap();
    let started = running.started.unwrap();
    assert!(deadline.since(started).as_secs_f64() > 5.0, "refreshed to 6 s from the refresh: {running:#?}");
    let done = wait_for_run(&client, run.id, "completion", |r| r.is_final()).await;
    assert_eq!(
        (done.state, done.output.clone()),
        (RunState::Completed, Some(json!({"cancelled": false}))),
        "{done:#?}"
    );
    assert!(done.timeout_at.is_none(), "the deadline belongs to the attempt: {done:#?}");

    // The same work without the refresh times out at the deployment's deadline.
    let run = client.create_run("hasty", None).await.unwrap();
    let failed = wait_for_run(&client, run.id, "the timeout", |r| r.is_final()).await;
    assert_eq!((failed.state, failed.reason), (RunState::Failed, Some(StateReason::TimedOut)), "{failed:#?}");

    // A refresh the server cannot hold is refused naming the field.
    let http = Http::new(&server.api);
    let bad = json!({"worker": "w", "timeout_seconds": 0});
    let (status, body) = http.post(&format!("/runs/{}/heartbeat", run.id), bad).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].to_string().contains("$.timeout_seconds"), "{body}");
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_cancelled_or_timed_out_flow_sees_cancelled_resolve_and_stops_cleanly() {
    let data = temp_dir("ctx-cancelled");
    let server = Server::start(&data);
    let client = Client::new(&server.api).unwrap();
    let seen: Arc<Mutex<Vec<(Uuid, bool, f64)>>> = Arc::default();
    // Long work that stops when told, saying so.
    let careful = |name: &str, seen: Arc<Mutex<Vec<(Uuid, bool, f64)>>>| {
        Flow::new(name, move |ctx: FlowContext, _: Value| {
            let seen = seen.clone();
            async move {
                let began = Instant::now();
                tokio::select! {
                    _ = ctx.cancelled() => {
                        seen.lock().unwrap().push((ctx.run_id(), ctx.is_cancelled(), began.elapsed().as_secs_f64()));
                        Ok("stopped cleanly")
                    }
                    _ = tokio::time::sleep(Duration::from_secs(60)) => Ok("finished"),
                }
            }
        })
    };
    let cancellable = careful("cancellable", seen.clone());
    let limited = careful("limited", seen.clone()).timeout(Duration::from_secs(1));
    let preempted = careful("preempted", seen.clone()).concurrency(
        tripwire::model::Concurrency::new("{{ params.key }}", 1)
            .strategy(tripwire::model::ConcurrencyStrategy::CancelInProgress),
    );
    let worker = Worker::new(client.clone())
        .lease(Duration::from_secs(3))
        .flow(cancellable, [])
        .flow(limited, [])
        .flow(preempted, [])
        .start()
        .await
        .unwrap();

    // Cancelled by hand: the worker learns it at its next heartbeat (a second here).
    let run = client.create_run("cancellable", None).await.unwrap();
    wait_for_run(&client, run.id, "it to run", |r| r.state == RunState::Running).await;
    let asked = Instant::now();
    let cancelled = client.cancel_run(run.id).await.unwrap();
    assert_eq!(cancelled.state, RunState::Cancelled);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.lock().unwrap().iter().any(|s| s.0 == run.id) {
        assert!(Instant::now() < deadline, "the flow never saw the cancellation");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(asked.elapsed() < Duration::from_secs(3), "seen within a heartbeat: {:?}", asked.elapsed());
    let (_, flag, _) = seen.lock().unwrap().iter().find(|s| s.0 == run.id).copied().unwrap();
    assert!(flag, "is_cancelled() agrees");
    // Its result is not reported: the run stays cancelled, by the user.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = client.run(run.id).await.unwrap();
    assert_eq!((after.state, after.reason), (RunState::Cancelled, Some(StateReason::CancelledByUser)));

    // Timed out: the flow is told at the deadline and the attempt fails as timed out.
    let run = client.create_run("limited", None).await.unwrap();
    let failed = wait_for_run(&client, run.id, "the timeout", |r| r.is_final()).await;
    assert_eq!((failed.state, failed.reason), (RunState::Failed, Some(StateReason::TimedOut)), "{failed:#?}");
    let (_, flag, after) = seen.lock().unwrap().iter().find(|s| s.0 == run.id).copied().expect("it saw the timeout");
    assert!(flag && (0.9..5.0).contains(&after), "told at the 1 s deadline, after {after:.2} s");

    // Pre-empted by CANCEL_IN_PROGRESS: a newer run of the same key takes the slot, and the
    // running flow is told to stop.
    let key = serde_json::json!({"key": "k"}).as_object().cloned();
    let older = client.create_run("preempted", key.clone()).await.unwrap();
    wait_for_run(&client, older.id, "it to run", |r| r.state == RunState::Running).await;
    let newer = client.create_run("preempted", key).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.lock().unwrap().iter().any(|s| s.0 == older.id) {
        assert!(Instant::now() < deadline, "the pre-empted flow never saw cancelled() resolve");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let older = client.run(older.id).await.unwrap();
    assert_eq!((older.state, older.reason), (RunState::Cancelled, Some(StateReason::ConcurrencyCancelInProgress)));
    wait_for_run(&client, newer.id, "the newer run to take the slot", |r| r.state == RunState::Running).await;
    client.cancel_run(newer.id).await.unwrap();
    worker.stop().await.unwrap();
}
