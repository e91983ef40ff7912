//! Flows served by a worker against the real server binary: the order example end to end,
//! retries, timeouts, a killed worker, the concurrency strategies, and chaining on run
//! outcomes.

#![allow(clippy::disallowed_methods)] // tests wait on the wall clock

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use tripwire::client::{Client, ClientError, NewEvent, RunQuery};
use tripwire::flow::{Flow, FlowContext, Worker, WorkerHandle};
use tripwire::model::{
    Concurrency, ConcurrencyStrategy, EventTrigger, Resource, ResourceSpec, RunState, StateReason, TriggerDefinition,
};
use uuid::Uuid;

use common::{temp_dir, wait_for_run, Server};

/// A worker running in this process until stopped.
struct Running(WorkerHandle);

impl Running {
    async fn stop(self) {
        self.0.stop().await.unwrap();
    }
}

/// Starts the worker: its flows are registered when this returns, so that runs can be
/// created at once.
async fn start(worker: Worker) -> Running {
    Running(worker.start().await.unwrap())
}

async fn run_events(client: &Client, id: Uuid) -> Vec<String> {
    let resource = format!("tripwire.run.{id}");
    let http = common::Http::new(&client.base_url());
    let (status, body) = http
        .post("/events/filter", json!({"filter": {"resource": {"id": [resource]}, "order": "ASC"}, "limit": 100}))
        .await;
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap().to_owned()).collect()
}

#[derive(Deserialize)]
struct OrderParams {
    user_id: String,
}

fn order_trigger() -> TriggerDefinition {
    TriggerDefinition::new(
        "order-complete",
        EventTrigger::new()
            .after("order.created")
            .expect("order.complete")
            .for_each("prefect.resource.id")
            .within(Duration::from_secs(60)),
    )
    .parameters(json!({"user_id": "{{ event.resource.id }}"}))
}

fn order_flow(seen: Arc<Mutex<Vec<String>>>) -> Flow {
    Flow::new("post-order-complete", move |ctx: FlowContext, params: OrderParams| {
        let seen = seen.clone();
        async move {
            let line = format!("User {} has completed an order -- doing stuff now", params.user_id);
            ctx.log().info(line.clone());
            seen.lock().unwrap().push(format!("{line} [{}]", ctx.event().map_or("-", |e| e.event.as_str())));
            Ok(json!({"handled": params.user_id}))
        }
    })
}

#[tokio::test]
async fn the_order_example_runs_once_for_123_and_never_for_456() {
    let data = temp_dir("flow-order");
    let server = Server::start(&data);
    let client = Client::new(&server.api).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let worker = start(Worker::new(client.clone()).flow(order_flow(seen.clone()), [order_trigger()])).await;
    for (name, user) in [("order.created", "123"), ("order.created", "456"), ("order.complete", "123")] {
        client.emit(NewEvent::new(name, Resource::new(user))).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let run = loop {
        let runs = client.runs(RunQuery::new().deployment("post-order-complete")).await.unwrap();
        if let Some(run) = runs.iter().find(|r| r.state == RunState::Completed) {
            assert_eq!(runs.len(), 1, "one run only: {runs:#?}");
            break run.clone();
        }
        assert!(Instant::now() < deadline, "no completed run: {runs:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(Value::Object(run.parameters.clone()), json!({"user_id": "123"}));
    assert_eq!(run.output, Some(json!({"handled": "123"})));
    assert_eq!(run.attempt, 1);
    assert_eq!(
        *seen.lock().unwrap(),
        ["User 123 has completed an order -- doing stuff now [order.complete]"],
        "the flow ran once and saw the triggering event"
    );
    let logs = client.run_logs(run.id, 0).await.unwrap();
    assert_eq!(logs.lines.len(), 1);
    assert_eq!(logs.lines[0].message, "User 123 has completed an order -- doing stuff now");
    assert_eq!(
        run_events(&client, run.id).await,
        ["tripwire.run.scheduled", "tripwire.run.running", "tripwire.run.completed"]
    );
    worker.stop().await;

    // Serving again changes nothing; serving without the trigger removes it.
    let again = Worker::new(client.clone()).flow(order_flow(seen.clone()), [order_trigger()]);
    again.register().await.unwrap();
    let records = client.deployment_triggers("post-order-complete").await.unwrap();
    assert_eq!(records.len(), 1);
    let sync = client
        .sync_triggers(
            "post-order-complete",
            &[{
                let mut t = order_trigger();
                t.deployment = Some("post-order-complete".into());
                t
            }],
        )
        .await
        .unwrap();
    assert_eq!(sync.unchanged, ["order-complete"], "{sync:?}");
    Worker::new(client.clone()).flow(order_flow(seen), []).register().await.unwrap();
    assert!(client.deployment_triggers("post-order-complete").await.unwrap().is_empty());
    assert!(matches!(client.trigger("order-complete").await, Err(ClientError::Api { status: 404, .. })));
}

#[tokio::test]
async fn a_flow_that_fails_twice_completes_on_attempt_3() {
    let data = temp_dir("flow-retries");
    let server = Server::start(&data);
    let client = Client::new(&server.api).unwrap();
    let flow = Flow::new("flaky", |ctx: FlowContext, _: Value| async move {
        if ctx.attempt() < 3 {
            return Err(format!("attempt {} failed", ctx.attempt()).into());
        }
        Ok(json!({"attempt": ctx.attempt()}))
    })
    .retries(3, Duration::from_millis(100));
    let worker = start(Worker::new(client.clone()).flow(flow, [])).await;
    let run = client.create_run("flaky", None).await.unwrap();
    let run = wait_for_run(&client, run.id, "completion", |r| r.is_final()).await;
    assert_eq!((run.state, run.attempt), (RunState::Completed, 3), "{run:#?}");
    assert_eq!(run.output, Some(json!({"attempt": 3})));
    let events = run_events(&client, run.id).await;
    assert_eq!(events.iter().filter(|e| *e == "tripwire.run.running").count(), 3, "{events:?}");
    assert_eq!(events.last().unwrap(), "tripwire.run.completed");

    // Out of retries: Failed, with the last error.
    let never = Flow::new("never", |_: FlowContext, _: Value| async move { Err::<(), _>("no luck".into()) })
        .retries(1, Duration::from_millis(50));
    let other = start(Worker::new(client.clone()).flow(never, [])).await;
    let run = client.create_run("never", None).await.unwrap();
    let run = wait_for_run(&client, run.id, "failure", |r| r.is_final()).await;
    assert_eq!((run.state, run.attempt, run.error.as_deref()), (RunState::Failed, 2, Some("no luck")));
    other.stop().await;
    worker.stop().await;
}

#[tokio::test]
async fn timeouts_and_bad_parameters_fail_the_run_with_a_reason() {
    let data = temp_dir("flow-timeout");
    let server = Server::start(&data);
    let client = Client::new(&server.api).unwrap();
    let finished = Arc::new(Mutex::new(false));
    let slow = {
        let finished = finished.clone();
        Flow::new("slow", move |_: FlowContext, _: Value| {
            let finished = finished.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(20)).await;
                *finished.lock().unwrap() = true;
                Ok(())
            }
        })
        .timeout(Duration::from_millis(700))
    };
    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Strict {
        user_id: u64,
    }
    let strict = Flow::new("strict", |_: FlowContext, p: Strict| async move { Ok(p.user_id) })
        .retries(5, Duration::from_millis(10));
    let worker = start(Worker::new(client.clone()).lease(Duration::from_secs(3)).flow(slow, []).flow(strict, [])).await;
    let started = Instant::now();
    let run = client.create_run("slow", None).await.unwrap();
    let run = wait_for_run(&client, run.id, "the timeout", |r| r.is_final()).await;
    assert_eq!(run.state, RunState::Failed);
    assert!(run.error.as_deref().unwrap().contains("timed out"), "{run:#?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!*finished.lock().unwrap(), "the timed-out flow was stopped");

    let run = client.create_run("strict", Some(json!({"user_id": "abc"}).as_object().unwrap().clone())).await.unwrap();
    let run = wait_for_run(&client, run.id, "the failure", |r| r.is_final()).await;
    assert_eq!((run.state, run.attempt, run.reason), (RunState::Failed, 1, Some(StateReason::InvalidParameters)));
    let error = run.error.unwrap();
    assert!(error.contains("flow `strict`") && error.contains("invalid type: string \"abc\", expected u64"), "{error}");
    worker.stop().await;
}

/// The worker process that `a_killed_workers_run_is_completed_once_by_another` kills.
#[tokio::test]
#[ignore = "a worker process that another test starts and kills"]
async fn killed_worker_process() {
    let api = std::env::var("TRIPWIRE_TEST_WORKER_API").expect("started by the killed-worker test");
    let client = Client::new(&api).unwrap();
    let flow = Flow::new("job", |_: FlowContext, _: Value| async move {
        tokio::time::sleep(Duration::from_secs(600)).await;
        Ok("the killed worker")
    });
    Worker::new(client).name("doomed").lease(Duration::from_secs(2)).flow(flow, []).run().await.unwrap();
}

#[tokio::test]
async fn a_killed_workers_run_is_completed_once_by_another() {
    let data = temp_dir("flow-killed");
    let server = Server::start(&data);
    let client = Client::new(&server.api).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "killed_worker_process", "--nocapture"])
        .env("TRIPWIRE_TEST_WORKER_API", &server.api)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.deployment("job").await.is_err() {
        assert!(Instant::now() < deadline, "the worker process registered no deployment");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run = client.create_run("job", None).await.unwrap();
    wait_for_run(&client, run.id, "the doomed worker to claim it", |r| r.worker.as_deref() == Some("doomed")).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let flow = Flow::new("job", |_: FlowContext, _: Value| async move { Ok("the survivor") });
    let worker = start(Worker::new(client.clone()).name("survivor").flow(flow, [])).await;
    let done = wait_for_run(&client, run.id, "the survivor to complete it", |r| r.is_final()).await;
    assert_eq!(done.state, RunState::Completed);
    assert_eq!(done.output, Some(json!("the survivor")));
    assert_eq!(done.attempt, 1, "a lapsed lease does not use up a retry");
    let events = run_events(&client, run.id).await;
    assert_eq!(
        events,
        [
            "tripwire.run.scheduled",
            "tripwire.run.running",
            "tripwire.run.scheduled",
            "tripwire.run.running",
            "tripwire.run.completed"
        ]
    );
    // The dead worker's result would be refused now.
    let late = client
        .complete(run.id, &tripwire::model::Completion { worker: "doomed".into(), output: json!(1) })
        .await
        .unwrap_err();
    assert!(matches!(&late, ClientError::Api { status: 409, code, .. } if code == "run_finished"), "{late}");
    worker.stop().await;
}

/// A flow that records when each key's runs start and end.
fn recording(name: &str, spans: Arc<Mutex<Vec<(String, Instant, Instant)>>>, hold: Duration) -> Flow {
    Flow::new(name, move |ctx: FlowContext, p: Value| {
        let spans = spans.clone();
        async move {
            let start = Instant::now();
            tokio::time::sleep(hold).await;
            spans.lock().unwrap().push((p["user"].as_str().unwrap_or("").to_owned(), start, Instant::now()));
            Ok(ctx.run_id())
        }
    })
}

fn params(user: &str) -> Option<serde_json::Map<String, Value>> {
    Some(json!({"user": user}).as_object().unwrap().clone())
}

#[tokio::test]
async fn concurrency_strategies_do_what_hatchet_documents() {
    let data = temp_dir("flow-concurrency");
    let server = Server::start(&data);
    let client = Client::new(&server.api).unwrap();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let key = "{{ params.user }}";
    let round_robin =
        recording("round-robin", spans.clone(), Duration::from_millis(400)).concurrency(Concurrency::new(key, 1));
    let in_progress = recording("in-progress", spans.clone(), Duration::from_millis(3000))
        .concurrency(Concurrency::new(key, 1).strategy(ConcurrencyStrategy::CancelInProgress));
    let newest = recording("newest", spans.clone(), Duration::from_millis(800))
        .concurrency(Concurrency::new(key, 1).strategy(ConcurrencyStrategy::CancelNewest));
    let worker = start(
        Worker::new(client.clone())
            .slots(8)
            .lease(Duration::from_secs(3))
            .flow(round_robin, [])
            .flow(in_progress, [])
            .flow(newest, []),
    )
    .await;

    // GROUP_ROUND_ROBIN: runs of one key wait their turn; other keys go ahead.
    let a1 = client.create_run("round-robin", params("a")).await.unwrap();
    let a2 = client.create_run("round-robin", params("a")).await.unwrap();
    let b1 = client.create_run("round-robin", params("b")).await.unwrap();
    for id in [a1.id, a2.id, b1.id] {
        assert_eq!(wait_for_run(&client, id, "completion", |r| r.is_final()).await.state, RunState::Completed);
    }
    {
        let spans = spans.lock().unwrap();
        let a: Vec<_> = spans.iter().filter(|s| s.0 == "a").collect();
        let b: Vec<_> = spans.iter().filter(|s| s.0 == "b").collect();
        assert_eq!((a.len(), b.len()), (2, 1));
        assert!(a[0].2 <= a[1].1, "key a ran one at a time");
        assert!(b[0].1 < a[0].2, "key b did not wait for key a");
    }

    // CANCEL_IN_PROGRESS: a new run cancels the running one of its key and runs.
    let old = client.create_run("in-progress", params("c")).await.unwrap();
    wait_for_run(&client, old.id, "it to run", |r| r.state == RunState::Running).await;
    let new = client.create_run("in-progress", params("c")).await.unwrap();
    let old = client.run(old.id).await.unwrap();
    assert_eq!((old.state, old.reason), (RunState::Cancelled, Some(StateReason::ConcurrencyCancelInProgress)));
    let new = wait_for_run(&client, new.id, "completion", |r| r.is_final()).await;
    assert_eq!(new.state, RunState::Completed);
    assert_eq!(client.run(old.id).await.unwrap().state, RunState::Cancelled, "the worker's late result is refused");

    // CANCEL_NEWEST: a new run that finds its key busy is cancelled; the running one goes on.
    let first = client.create_run("newest", params("d")).await.unwrap();
    let second = client.create_run("newest", params("d")).await.unwrap();
    assert_eq!((second.state, second.reason), (RunState::Cancelled, Some(StateReason::ConcurrencyCancelNewest)));
    let other_key = client.create_run("newest", params("e")).await.unwrap();
    assert_eq!(other_key.state, RunState::Scheduled);
    for id in [first.id, other_key.id] {
        assert_eq!(wait_for_run(&client, id, "completion", |r| r.is_final()).await.state, RunState::Completed);
    }
    // The cancelled run's flow was stopped at its next heartbeat (1 s): had it gone on, it
    // would have finished before the newer run, which started later and has completed.
    assert_eq!(spans.lock().unwrap().iter().filter(|s| s.0 == "c").count(), 1, "only the new run of key c finished");
    worker.stop().await;
}

#[tokio::test]
async fn a_trigger_chains_on_tripwire_run_completed() {
    let data = temp_dir("flow-chain");
    let server = Server::start(&data);
    let client = Client::new(&server.api).unwrap();
    let first =
        Flow::new(
            "first",
            |_: FlowContext, p: Value| async move { Ok(json!({"total": p["n"].as_i64().unwrap_or(0) * 2})) },
        );
    let got = Arc::new(Mutex::new(Vec::new()));
    let second = {
        let got = got.clone();
        Flow::new("second", move |ctx: FlowContext, p: Value| {
            let got = got.clone();
            async move {
                got.lock().unwrap().push((p, ctx.event().map(|e| e.event.clone())));
                Ok(())
            }
        })
    };
    let related = ResourceSpec::new().label("prefect.resource.id", "tripwire.deployment.first");
    let chain = TriggerDefinition::new(
        "after-first",
        EventTrigger::new().expect("tripwire.run.completed").match_related(related),
    )
    .parameters(
        json!({"total": "{{ event.payload.output.total }}", "from": "{{ event.resource['tripwire.deployment'] }}"}),
    );
    let worker = start(Worker::new(client.clone()).flow(first, []).flow(second, [chain])).await;
    let run = client.create_run("first", Some(json!({"n": 21}).as_object().unwrap().clone())).await.unwrap();
    wait_for_run(&client, run.id, "completion", |r| r.is_final()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the chained flow never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got, [(json!({"total": 42, "from": "first"}), Some("tripwire.run.completed".to_owned()))]);
    let runs = client.runs(RunQuery::new().deployment("second")).await.unwrap();
    assert_eq!(runs.len(), 1, "the second flow's own completion does not chain again");
    worker.stop().await;
}

#[tokio::test]
async fn the_worker_protocol_rejects_bad_input_with_what_to_fix() {
    let data = temp_dir("flow-protocol");
    let server = Server::start(&data);
    let http = common::Http::new(&server.api);
    let (status, body) = http.post("/runs/claim", json!({"worker": "w", "deployments": [], "limit": 0})).await;
    assert_eq!(status, 400, "{body}");
    let problems = body["error"]["problems"].to_string();
    assert!(problems.contains("$.deployments") && problems.contains("$.limit"), "{body}");
    let (status, body) = http.post("/runs/claim", json!({"worker": "w", "deployments": ["d"], "lease": 5})).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("unknown field `lease`"), "{body}");
    let (status, body) = http.post("/runs/not-a-uuid/heartbeat", json!({"worker": "w"})).await;
    assert_eq!((status, body["error"]["problems"][0]["path"].as_str()), (400, Some("$.id")));
    let missing = Uuid::from_u128(9);
    let (status, body) = http.post(&format!("/runs/{missing}/complete"), json!({"worker": "w"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));

    // A run held by one worker: another worker's heartbeat is told to cancel, its result is
    // refused, and the holder's goes through.
    http.post("/deployments", json!({"name": "d", "concurrency": {"key": "{{ params.", "max_runs": 1}})).await;
    let (status, body) =
        http.post("/deployments", json!({"name": "d", "concurrency": {"key": "{{ params.", "max_runs": 1}})).await;
    assert_eq!(status, 422, "a template that does not parse: the shape is right");
    assert!(body["error"]["problems"][0]["path"] == "$.concurrency.key", "{body}");
    assert_eq!(http.post("/deployments", json!({"name": "d"})).await.0, 201);
    let (_, run) = http.post("/deployments/d/runs", json!({"priority": 2})).await;
    assert_eq!(run["priority"], 2);
    let (status, claimed) = http.post("/runs/claim", json!({"worker": "a", "deployments": ["d"], "limit": 5})).await;
    assert_eq!((status, claimed.as_array().unwrap().len()), (200, 1));
    let id = claimed[0]["run"]["id"].as_str().unwrap().to_owned();
    let (_, reply) = http.post(&format!("/runs/{id}/heartbeat"), json!({"worker": "b"})).await;
    assert_eq!(reply["cancel"], true);
    let (_, reply) = http.post(&format!("/runs/{id}/heartbeat"), json!({"worker": "a", "lease_seconds": 60})).await;
    assert_eq!(reply["cancel"], false);
    let (status, body) = http.post(&format!("/runs/{id}/complete"), json!({"worker": "b", "output": 1})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("run_not_held")), "{body}");
    let (status, _) =
        http.post(&format!("/runs/{id}/logs"), json!({"lines": [{"message": "hi", "level": "warning"}]})).await;
    assert_eq!(status, 200);
    let (status, body) =
        http.post(&format!("/runs/{id}/complete"), json!({"worker": "a", "output": {"ok": true}})).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("Completed")));
    let (_, logs) = http.get(&format!("/runs/{id}/logs")).await;
    assert_eq!(
        (logs["lines"][0]["message"].as_str(), logs["lines"][0]["level"].as_str()),
        (Some("hi"), Some("warning"))
    );
    let (status, body) = http.post(&format!("/runs/{id}/cancel"), json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("run_finished")));
    // A run nobody claims within the schedule timeout is cancelled, saying why.
    assert_eq!(http.put("/deployments/late", json!({"schedule_timeout_seconds": 0.3})).await.0, 201);
    let (_, late) = http.post("/deployments/late/runs", json!({})).await;
    let client = Client::new(&server.api).unwrap();
    let late =
        wait_for_run(&client, late["id"].as_str().unwrap().parse().unwrap(), "the schedule timeout", |r| r.is_final())
            .await;
    assert_eq!((late.state, late.reason), (RunState::Cancelled, Some(StateReason::ScheduleTimeout)));
    // A long-poll with nothing to claim waits, then answers an empty list.
    let (status, body) =
        http.post("/runs/claim", json!({"worker": "a", "deployments": ["d"], "wait_seconds": 0.5})).await;
    assert_eq!((status, body), (200, json!([])));
}

#[tokio::test]
async fn the_workers_view_shows_what_each_worker_serves_and_holds() {
    let data = temp_dir("flow-workers");
    let server = Server::start(&data);
    let http = common::Http::new(&server.api);
    let (status, body) = http.get("/workers").await;
    assert_eq!((status, body), (200, json!([])), "no worker yet");
    for (slots, why) in
        [(json!(0), "from 1 to 10000"), (json!(10_001), "from 1 to 10000"), (json!(2.5), "whole number")]
    {
        let (status, body) =
            http.post("/runs/claim", json!({"worker": "a", "deployments": ["w"], "slots": slots})).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].to_string().contains(why) && body["error"].to_string().contains("slots"), "{body}");
    }
    assert_eq!(http.post("/deployments", json!({"name": "w"})).await.0, 201);
    let (_, run) = http.post("/deployments/w/runs", json!({})).await;
    let claim = json!({"worker": "a", "deployments": ["w", "other"], "slots": 4.0, "lease_seconds": 60});
    let (status, claimed) = http.post("/runs/claim", claim).await;
    assert_eq!((status, claimed[0]["run"]["id"].clone()), (200, run["id"].clone()));
    let (_, workers) = http.get("/workers").await;
    let a = &workers[0];
    assert_eq!(workers.as_array().unwrap().len(), 1, "{workers}");
    assert_eq!(
        (&a["name"], &a["state"], &a["deployments"], &a["slots"], &a["running"], &a["lease_seconds"]),
        (&json!("a"), &json!("online"), &json!(["other", "w"]), &json!(4), &json!([run["id"]]), &json!(60.0)),
        "{workers}"
    );
    // Another worker's heartbeat on a run it does not hold does not list it; the holder's
    // completion releases the run.
    let id = run["id"].as_str().unwrap();
    let (_, reply) = http.post(&format!("/runs/{id}/heartbeat"), json!({"worker": "b"})).await;
    assert_eq!(reply["cancel"], true);
    assert_eq!(http.post(&format!("/runs/{id}/complete"), json!({"worker": "a"})).await.0, 200);
    let (_, workers) = http.get("/workers").await;
    assert_eq!((workers.as_array().unwrap().len(), &workers[0]["running"]), (1, &json!([])), "{workers}");
}

#[tokio::test]
async fn a_stopping_worker_finishes_its_runs_in_flight_first() {
    let data = temp_dir("flow-graceful");
    let server = Server::start(&data);
    let client = Client::new(&server.api).unwrap();
    let flow = Flow::new("steady", |_: FlowContext, _: Value| async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        Ok("finished")
    });
    let worker = start(Worker::new(client.clone()).flow(flow, [])).await;
    let run = client.create_run("steady", None).await.unwrap();
    wait_for_run(&client, run.id, "it to run", |r| r.state == RunState::Running).await;
    worker.stop().await; // returns only once the run in flight is done
    let run = client.run(run.id).await.unwrap();
    assert_eq!((run.state, run.output), (RunState::Completed, Some(json!("finished"))));
}
