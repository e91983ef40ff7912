//! Composition against the real server binary: `run_flow` returns a flow's output (or why it
//! has none), a parent's children are durable (a parent whose worker is SIGKILLed mid-way
//! completes on another worker with exactly the children it asked for), cancelling a parent
//! cancels its children, and every limit of `POST /api/runs/{id}/children` is crossed.

#![allow(clippy::disallowed_methods)] // tests wait on the wall clock

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tripwire::client::{Client, ClientError};
use tripwire::flow::{Flow, FlowContext, Tripwire, Worker};
use tripwire::model::{RunState, StateReason};

use common::{example_binary, temp_dir, wait_for_run, Http, Server};

/// The `child_runs` example serving its flows (`--serve`) against `api`.
fn serving_worker(api: &str) -> Child {
    Command::new(example_binary("child_runs"))
        .arg("--serve")
        .env("TRIPWIRE_API", api)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn a_parent_killed_mid_way_completes_on_retry_with_exactly_three_children() {
    let data = temp_dir("children-kill");
    let server = Server::start(&data);
    let client = Client::new(&server.api).unwrap();
    let mut first = serving_worker(&server.api);
    for _ in 0..300 {
        if client.deployment("sum-of-squares").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each child takes 1.5 s: kill the worker while the second one runs.
    let parent = client
        .create_run("sum-of-squares", json!({"numbers": [1, 2, 3], "delay_ms": 1500}).as_object().cloned())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let children = client.children(parent.id).await.unwrap();
        if children.len() == 2 {
            assert_eq!(children[0].state, RunState::Completed, "{children:#?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the second child never started: {children:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let held = client.run(parent.id).await.unwrap();
    assert_eq!(held.state, RunState::Running, "the dead worker still holds it until its lease lapses: {held:#?}");

    // Another worker takes the parent over once the lease lapses (2 s); it runs its code
    // again, finds children 0 and 1, and makes only child 2.
    let mut second = serving_worker(&server.api);
    let done = wait_for_run(&client, parent.id, "the parent to end on the second worker", |r| r.is_final()).await;
    second.kill().unwrap();
    second.wait().unwrap();
    assert_eq!((done.state, done.output.clone()), (RunState::Completed, Some(json!({"sum": 14}))), "{done:#?}");
    assert_ne!(done.worker, held.worker, "another worker finished it: {done:#?}");
    let children = client.children(parent.id).await.unwrap();
    let keys: Vec<&str> = children.iter().map(|c| c.parent.as_ref().unwrap().key.as_str()).collect();
    assert_eq!(keys, ["0", "1", "2"], "exactly three children: {children:#?}");
    assert!(children.iter().all(|c| c.state == RunState::Completed), "{children:#?}");
    let outputs: Vec<Value> = children.iter().map(|c| c.output.clone().unwrap()).collect();
    assert_eq!(outputs, [json!(1), json!(4), json!(9)]);
    let all = client.runs(tripwire::client::RunQuery::new().deployment("square")).await.unwrap();
    assert_eq!(all.len(), 3, "no other square runs were made: {all:#?}");
    // The child's state events name their parent, so that triggers can follow a family.
    let (status, page) = Http::new(&server.api).get("/events?name=tripwire.run.completed&limit=100").await;
    assert_eq!(status, 200);
    let parented = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["related"].as_array().unwrap().iter().any(|r| {
                r["prefect.resource.role"] == "parent"
                    && r["prefect.resource.id"] == format!("tripwire.run.{}", parent.id)
            })
        })
        .count();
    assert_eq!(parented, 3, "{page:#}");
}

#[tokio::test]
async fn run_flow_returns_the_output_and_cancelling_a_parent_cancels_its_children() {
    let data = temp_dir("children-cancel");
    let server = Server::start(&data);
    let client = Client::new(&server.api).unwrap();
    let double = Flow::new("double", |_: FlowContext, p: Value| async move {
        let n = p["n"].as_i64().ok_or("n must be a number")?;
        Ok(json!(n * 2))
    });
    let forever = Flow::new("forever", |ctx: FlowContext, _: Value| async move {
        ctx.cancelled().await;
        Ok(())
    });
    let family = Flow::new("family", |ctx: FlowContext, _: Value| async move {
        let forever = "forever".to_owned();
        // Two children at once: their keys follow the order of the calls.
        let (a, b) = tokio::join!(ctx.spawn(&forever, ()), ctx.spawn_keyed(&forever, "second", ()));
        Ok(json!([a.is_ok(), b.is_ok()]))
    });
    let worker = Worker::new(client.clone())
        .slots(8)
        .flow(double.clone(), [])
        .flow(forever, [])
        .flow(family, [])
        .start()
        .await
        .unwrap();

    assert_eq!(client.run_flow(&double, json!({"n": 21})).await.unwrap(), json!(42));
    match client.run_flow(&double, json!({"n": "x"})).await {
        Err(ClientError::RunFailed { state: RunState::Failed, error, .. }) => {
            assert!(error.contains("n must be a number"), "{error}")
        }
        other => panic!("expected RunFailed, got {other:?}"),
    }
    let queued = client.enqueue("double", json!({"n": 1})).await.unwrap();
    assert_eq!(queued.state, RunState::Scheduled, "enqueue returns at once: {queued:#?}");
    match client.run_flow("no-such-flow", ()).await {
        Err(ClientError::Api { status: 404, .. }) => {}
        other => panic!("expected 404, got {other:?}"),
    }

    let parent = client.create_run("family", None).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let children = client.children(parent.id).await.unwrap();
        if children.len() == 2 && children.iter().all(|c| c.state == RunState::Running) {
            let keys: Vec<&str> = children.iter().map(|c| c.parent.as_ref().unwrap().key.as_str()).collect();
            assert_eq!(keys, ["0", "second"]);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the children never ran: {children:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancelled = client.cancel_run(parent.id).await.unwrap();
    assert_eq!(cancelled.state, RunState::Cancelled);
    let children = client.children(parent.id).await.unwrap();
    for child in &children {
        assert_eq!(
            (child.state, child.reason),
            (RunState::Cancelled, Some(StateReason::ParentCancelled)),
            "{child:#?}"
        );
        assert!(child.error.as_deref().unwrap().contains(&parent.id.to_string()), "{child:#?}");
    }
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn child_requests_are_checked_and_limited() {
    let data = temp_dir("children-limits");
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    for name in ["parent", "child", "other"] {
        assert_eq!(http.post("/deployments", json!({"name": name})).await.0, 201);
    }
    let (_, parent) = http.post("/deployments/parent/runs", json!({})).await;
    let id = parent["id"].as_str().unwrap().to_owned();
    let path = format!("/runs/{id}/children");
    let spawn =
        |worker: &str, deployment: &str, key: &str| json!({"worker": worker, "deployment": deployment, "key": key});

    // Only the attempt running the parent may spawn.
    let (status, body) = http.post(&path, spawn("w", "child", "0")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("run_not_held")), "{body}");
    let (status, claimed) = http.post("/runs/claim", json!({"worker": "w", "deployments": ["parent"]})).await;
    assert_eq!((status, claimed.as_array().unwrap().len()), (200, 1), "{claimed}");
    let (status, body) = http.post(&path, spawn("intruder", "child", "0")).await;
    assert_eq!(status, 409, "{body}");

    // The same key answers the same child; another deployment under it is refused.
    let (status, first) = http.post(&path, spawn("w", "child", "0")).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["parent"], json!({"run": id, "key": "0"}));
    let (status, again) = http.post(&path, spawn("w", "child", "0")).await;
    assert_eq!((status, &again["id"]), (200, &first["id"]), "{again}");
    let (status, body) = http.post(&path, spawn("w", "other", "0")).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("is a run of `child`, not `other`"), "{body}");

    // Bad fields are named.
    let (status, body) = http.post(&path, spawn("w", "child", &"k".repeat(257))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("$.key: is 257 characters; at most 256"), "{body}");
    let (status, body) = http.post(&path, json!({"worker": "w", "deployment": "nope", "key": "x"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    let (status, body) =
        http.post(&path, json!({"worker": "w", "deployment": "child", "key": "p", "parameters": 3})).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = http.post("/runs/00000000-0000-0000-0000-000000000000/children", spawn("w", "child", "0")).await;
    assert_eq!(status, 404);
    assert_eq!(http.get("/runs/00000000-0000-0000-0000-000000000000/children").await.0, 404);

    // At most 1,000 children per run: the 1,001st is refused, naming the limit.
    for n in 1..1000 {
        let (status, body) = http.post(&path, spawn("w", "child", &n.to_string())).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = http.post(&path, spawn("w", "child", "one-too-many")).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("at most 1000"), "{body}");
    let (status, listed) = http.get(&path).await;
    assert_eq!((status, listed.as_array().unwrap().len()), (200, 1000));

    // A final parent spawns nothing.
    let (status, _) = http.post(&format!("/runs/{id}/complete"), json!({"worker": "w", "output": null})).await;
    assert_eq!(status, 200);
    let (status, body) = http.post(&path, spawn("w", "child", "late")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("run_finished")), "{body}");

    // Something absurd: a key of 100 KB is refused naming the field; a megabyte, by the body
    // limit.
    let (status, body) = http.post(&path, spawn("w", "child", &"k".repeat(100_000))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("$.key: is 100000 characters"), "{body}");
    let (status, body) = http.post(&path, spawn("w", "child", &"k".repeat(1 << 20))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("body_too_large")), "{body}");
    // After all that, an ordinary event still fires its run, and after `kill -9` the server
    // comes back on its data and fires again.
    common::survives(server, &[]).await;
}
