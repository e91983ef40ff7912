//! Embedded mode: the same flows served in-process against the engine and redb, no HTTP,
//! through the same `Tripwire` calls as a client.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::oneshot;
use tripwire::client::MAX_RUNS_PAGE;
use tripwire::model::ClaimRequest;
use tripwire::prelude::*;

fn temp(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tripwire-embedded-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn final_runs(tripwire: &Embedded, deployment: &str, n: usize) -> Vec<Run> {
    for _ in 0..400 {
        let runs = tripwire.runs(RunQuery::new().deployment(deployment)).await.unwrap();
        let runs: Vec<Run> = runs.into_iter().filter(|r| r.is_final()).collect();
        if runs.len() >= n {
            return runs;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{deployment} did not finish {n} run(s)");
}

#[tokio::test]
async fn flows_run_on_events_in_process_and_runs_survive_a_restart() {
    let dir = temp("flows");
    let tripwire = Embedded::open(&dir).await.unwrap();
    let greeted = Arc::new(Mutex::new(Vec::new()));
    let flow = {
        let greeted = greeted.clone();
        Flow::new("greet", move |ctx: FlowContext, p: Value| {
            let greeted = greeted.clone();
            async move {
                ctx.log().info("greeting");
                greeted.lock().unwrap().push(p["user"].as_str().unwrap_or("?").to_owned());
                Ok(json!({"greeted": p["user"]}))
            }
        })
    };
    let trigger = TriggerDefinition::new("greet-on-signup", EventTrigger::new().expect("user:signup"))
        .parameters(json!({"user": "{{ event.resource.id }}"}));
    let worker = Worker::new(tripwire.clone()).flow(flow.clone(), [trigger.clone()]).start().await.unwrap();
    let id = tripwire.emit(NewEvent::new("user:signup", Resource::new("ada"))).await.unwrap();
    let runs = final_runs(&tripwire, "greet", 1).await;
    assert_eq!((runs[0].state, runs[0].output.clone()), (RunState::Completed, Some(json!({"greeted": "ada"}))));
    assert_eq!(runs[0].cause.as_ref().and_then(|c| c.triggering_event), Some(id));
    let logs = tripwire.service().logs(runs[0].id, 0, 10).await.unwrap();
    assert_eq!(logs.lines[0].message, "greeting");
    worker.stop().await.unwrap();

    // A run created while no worker serves the flow waits in the store across a restart.
    let waiting = tripwire.service().create_run("greet".into(), Some(json!({"user": "grace"})), None).await.unwrap();
    tripwire.shutdown().await;
    drop(tripwire);
    let tripwire = Embedded::open(&dir).await.unwrap();
    let worker = Worker::new(tripwire.clone()).flow(flow, [trigger]);
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    let runs = final_runs(&tripwire, "greet", 2).await;
    let resumed = runs.iter().find(|r| r.id == waiting.id).unwrap();
    assert_eq!(resumed.state, RunState::Completed);
    assert_eq!(*greeted.lock().unwrap(), ["ada", "grace"]);
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();

    // The worker protocol's checks hold in-process too.
    let bad = tripwire.service().claim(ClaimRequest::new("", vec![])).await.unwrap_err().to_string();
    assert!(bad.contains("$.worker") && bad.contains("$.deployments"), "{bad}");
    tripwire.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs of a deployment nobody serves: they stay `Scheduled`.
async fn waiting_runs(tripwire: &Embedded, n: usize) -> Vec<Run> {
    let mut runs = Vec::new();
    for i in 0..n {
        runs.push(tripwire.service().create_run("idle".into(), Some(json!({"i": i})), None).await.unwrap());
    }
    runs
}

#[tokio::test]
async fn run_queries_cross_the_page_limit_with_an_error_naming_limit() {
    let dir = temp("run-query");
    let tripwire = Embedded::open(&dir).await.unwrap();
    let idle = Flow::new("idle", |_: FlowContext, _: Value| async move { Ok(()) });
    // Registers the deployment only; nothing serves it afterwards.
    Worker::new(tripwire.clone()).flow(idle, []).register().await.unwrap();
    let made = waiting_runs(&tripwire, 7).await;

    for limit in [0, MAX_RUNS_PAGE + 1, 1_000_000_000_000, usize::MAX] {
        let e = tripwire.runs(RunQuery::new().limit(limit)).await.unwrap_err();
        let ClientError::Api { status, code, message } = &e else { panic!("{e:?}") };
        assert_eq!((*status, code.as_str()), (400, "invalid"), "{e}");
        assert!(message.contains("$.limit") && message.contains(&limit.to_string()), "{message}");
    }
    // Ordinary queries still work: the limit, the deployment and the state narrow the list.
    assert_eq!(tripwire.runs(RunQuery::new().limit(MAX_RUNS_PAGE)).await.unwrap().len(), 7);
    let newest = tripwire.runs(RunQuery::new().deployment("idle").limit(5)).await.unwrap();
    assert_eq!(
        newest.iter().map(|r| r.id).collect::<Vec<_>>(),
        made.iter().rev().take(5).map(|r| r.id).collect::<Vec<_>>()
    );
    assert_eq!(tripwire.runs(RunQuery::new().state(RunState::Completed)).await.unwrap(), []);
    assert_eq!(tripwire.runs(RunQuery::new().deployment("other")).await.unwrap(), []);
    assert_eq!(tripwire.run(made[0].id).await.unwrap(), made[0]);
    let missing = tripwire.run(uuid::Uuid::from_u128(1)).await.unwrap_err();
    assert!(matches!(missing, ClientError::Api { status: 404, .. }), "{missing:?}");

    // A run that nobody runs is not final: waiting for it ends with a timeout naming its state.
    let e = tripwire.wait_for_run(made[0].id, Duration::from_millis(30)).await.unwrap_err();
    assert!(matches!(&e, ClientError::Timeout(m) if m.contains("Scheduled")), "{e:?}");
    assert_eq!(tripwire.deployments().await.unwrap().len(), 1);
    assert_eq!(tripwire.triggers().await.unwrap(), []);
    tripwire.shutdown().await;
    drop(tripwire);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_event_whose_payload_is_not_an_object_is_refused_naming_the_field() {
    let dir = temp("payload");
    let tripwire = Embedded::open(&dir).await.unwrap();
    let e = tripwire.emit(NewEvent::new("a", Resource::new("r")).payload(vec![1, 2, 3])).await.unwrap_err();
    assert!(matches!(&e, ClientError::Invalid(m) if m.contains("`payload`") && m.contains("an array")), "{e:?}");
    // In a batch, the event is named by its position, and none of the batch is accepted.
    let batch = [NewEvent::new("b", Resource::new("r")), NewEvent::new("b", Resource::new("r")).metadata(5)];
    let e = tripwire.emit_many(batch).await.unwrap_err();
    assert!(matches!(&e, ClientError::Invalid(m) if m.starts_with("event 1:") && m.contains("`additional_metadata`")));
    // What the server would refuse is refused alike, with its path.
    let e = tripwire.emit(NewEvent::new("c", Resource::new("r")).scope("")).await.unwrap_err();
    assert!(matches!(&e, ClientError::Api { status: 400, message, .. } if message.contains("$[0].scope")), "{e:?}");
    // Ordinary events still go in.
    let id = tripwire.emit(NewEvent::new("c", Resource::new("r")).payload(json!({"n": 1})).scope("eu")).await.unwrap();
    let ids = tripwire.emit_many([NewEvent::new("d", Resource::new("r")).id(id)]).await.unwrap();
    assert_eq!(ids, [id], "a resent id is acknowledged");
    tripwire.shutdown().await;
    drop(tripwire);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_started_worker_sees_the_first_event_and_wait_idle_waits_for_its_run() {
    let dir = temp("start");
    let tripwire = Embedded::open(&dir).await.unwrap();
    let (release, released) = oneshot::channel::<()>();
    let released = Arc::new(tokio::sync::Mutex::new(Some(released)));
    let flow = Flow::new("held", move |_: FlowContext, _: Value| {
        let released = released.clone();
        async move {
            // The first run waits until the test lets it go.
            if let Some(rx) = released.lock().await.take() {
                rx.await?;
            }
            Ok("done")
        }
    });
    let trigger = TriggerDefinition::new("held-on-ping", EventTrigger::new().expect("ping"));
    let worker = Worker::new(tripwire.clone()).flow(flow, [trigger]).start().await.unwrap();
    tripwire.emit(NewEvent::new("ping", Resource::new("first"))).await.unwrap();
    let run = tripwire.runs(RunQuery::new().deployment("held")).await.unwrap().remove(0);

    {
        let idle = worker.wait_idle();
        tokio::pin!(idle);
        // Not idle while the run is held: let it go only once the worker is running it.
        loop {
            tokio::select! {
                _ = &mut idle => panic!("idle while its run is not finished"),
                found = tripwire.run(run.id) => if found.unwrap().state == RunState::Running { break },
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        release.send(()).unwrap();
        idle.await;
    }
    let done = tripwire.run(run.id).await.unwrap();
    assert_eq!((done.state, done.output), (RunState::Completed, Some(json!("done"))));
    assert_eq!(tripwire.wait_for_run(run.id, Duration::from_secs(5)).await.unwrap().id, run.id);
    worker.stop().await.unwrap();
    tripwire.shutdown().await;
    drop(tripwire);
    let _ = std::fs::remove_dir_all(&dir);
}
