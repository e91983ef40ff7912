//! Embedded mode: the same flows served in-process against the engine and redb, no HTTP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::oneshot;
use tripwire::client::NewEvent;
use tripwire::flow::{Flow, FlowContext, Worker};
use tripwire::model::{ClaimRequest, EventTrigger, Resource, RunState, TriggerDefinition};
use tripwire::Embedded;

fn temp(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tripwire-embedded-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn final_runs(tripwire: &Embedded, deployment: &str, n: usize) -> Vec<tripwire::model::Run> {
    for _ in 0..400 {
        let store = tripwire.service().store();
        let d = deployment.to_owned();
        let runs = tokio::task::spawn_blocking(move || store.runs(100, |r| r.deployment == d && r.is_final()))
            .await
            .unwrap()
            .unwrap();
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
                Ok::<_, String>(json!({"greeted": p["user"]}))
            }
        })
    };
    let trigger = TriggerDefinition::new("greet-on-signup", EventTrigger::new().expect("user:signup"))
        .parameters(json!({"user": "{{ event.resource.id }}"}));
    let worker = Worker::new(tripwire.clone()).flow(flow.clone(), [trigger.clone()]);
    worker.register().await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    tripwire.emit(NewEvent::new("user:signup", Resource::new("ada"))).await.unwrap();
    let runs = final_runs(&tripwire, "greet", 1).await;
    assert_eq!((runs[0].state, runs[0].output.clone()), (RunState::Completed, Some(json!({"greeted": "ada"}))));
    let logs = tripwire.service().store().run_logs(&runs[0].id, 0, 10).unwrap();
    assert_eq!(logs[0].1.message, "greeting");
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();

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
