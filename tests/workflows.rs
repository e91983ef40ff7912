//! DAG workflows against the real server binary with a worker: a diamond (a → b, c → d)
//! passes outputs along; a failure in b skips d, runs the on-failure task, and fails the
//! workflow run, with every task run visible as a child of the workflow's run.

#![allow(clippy::disallowed_methods)] // tests wait on the wall clock

mod common;

use serde_json::{json, Value};
use tripwire::client::{Client, ClientError};
use tripwire::flow::{Flow, FlowContext, Tripwire, Worker, Workflow};
use tripwire::model::RunState;

use common::{temp_dir, Server};

fn number(v: &Value) -> Result<i64, tripwire::flow::Error> {
    v.as_i64().ok_or_else(|| format!("{v} is not a number").into())
}

/// a → b, c → d, with flows named `{prefix}a` and so on; `b` fails when `fail_b`.
fn diamond(prefix: &str, fail_b: bool) -> (Workflow, [Flow; 4]) {
    let a =
        Flow::new(
            format!("{prefix}a"),
            |_: FlowContext, input: Value| async move { Ok(json!(number(&input["n"])? + 1)) },
        );
    let name_a = a.name().to_owned();
    let b = Flow::new(format!("{prefix}b"), move |ctx: FlowContext, _: Value| {
        let name_a = name_a.clone();
        async move {
            if fail_b {
                return Err("b cannot go on".into());
            }
            Ok(json!(number(&ctx.parent_output(&name_a).await?)? * 2))
        }
    });
    let name_a = a.name().to_owned();
    let c = Flow::new(format!("{prefix}c"), move |ctx: FlowContext, _: Value| {
        let name_a = name_a.clone();
        async move { Ok(json!(number(&ctx.parent_output(&name_a).await?)? * 3)) }
    });
    let (name_b, name_c) = (b.name().to_owned(), c.name().to_owned());
    let d = Flow::new(format!("{prefix}d"), move |ctx: FlowContext, _: Value| {
        let (name_b, name_c) = (name_b.clone(), name_c.clone());
        async move {
            let b = number(&ctx.parent_output(&name_b).await?)?;
            let c = number(&ctx.parent_output(&name_c).await?)?;
            Ok(json!(b + c))
        }
    });
    let workflow = Workflow::new(format!("{prefix}diamond"))
        .task(a.clone())
        .task(b.clone().after(&[&a]))
        .task(c.clone().after(&[&a]))
        .task(d.clone().after(&[&b, &c]));
    (workflow, [a, b, c, d])
}

#[tokio::test]
async fn a_diamond_passes_outputs_along_and_a_failure_skips_descendants_and_runs_on_failure() {
    let data = temp_dir("workflows");
    let server = Server::start(&data);
    let client = Client::new(&server.api).unwrap();

    let (good, _) = diamond("", false);
    let (bad, _) = diamond("f-", true);
    let cleanup = Flow::new("cleanup", |ctx: FlowContext, input: Value| async move {
        Ok(json!({"input": input, "failed": ctx.failed_tasks().await?}))
    });
    let bad = bad.on_failure(cleanup);
    let worker = Worker::new(client.clone())
        .slots(8)
        .workflow(good.clone(), [])
        .workflow(bad.clone(), [])
        .start()
        .await
        .unwrap();

    // (1 + 1) → b = 4, c = 6 → d = 10.
    let output = client.run_flow(&good, json!({"n": 1})).await.unwrap();
    assert_eq!(output, json!({"a": 2, "b": 4, "c": 6, "d": 10}));
    let run = &client.runs(tripwire::client::RunQuery::new().deployment("diamond")).await.unwrap()[0];
    let tasks = client.children(run.id).await.unwrap();
    let seen: Vec<(String, RunState)> =
        tasks.iter().map(|t| (t.parent.as_ref().unwrap().key.clone(), t.state)).collect();
    let completed = |names: &[&str]| -> Vec<(String, RunState)> {
        names.iter().map(|n| (n.to_string(), RunState::Completed)).collect()
    };
    assert_eq!(seen, completed(&["a", "b", "c", "d"]), "every task a child of the workflow run");
    // d started only after both b and c ended.
    let at = |key: &str| tasks.iter().find(|t| t.parent.as_ref().unwrap().key == key).unwrap();
    assert!(at("d").started.unwrap() >= at("b").finished.unwrap().max(at("c").finished.unwrap()));

    // b fails: d is skipped (never run), c still runs, the on-failure task runs, the workflow fails.
    let failed = client.run_flow(&bad, json!({"n": 1})).await;
    let Err(ClientError::RunFailed { id, state: RunState::Failed, error, .. }) = failed else {
        panic!("expected the workflow run to fail, got {failed:?}")
    };
    for part in ["task `f-b` failed", "b cannot go on", "task `f-d` was skipped", "on-failure task `cleanup` ran"] {
        assert!(error.contains(part), "`{part}` missing from: {error}");
    }
    let tasks = client.children(id).await.unwrap();
    let states: Vec<(String, RunState)> =
        tasks.iter().map(|t| (t.parent.as_ref().unwrap().key.clone(), t.state)).collect();
    assert_eq!(
        states,
        [
            ("f-a".to_owned(), RunState::Completed),
            ("f-b".to_owned(), RunState::Failed),
            ("f-c".to_owned(), RunState::Completed),
            ("on-failure".to_owned(), RunState::Completed),
        ]
    );
    let handler = tasks.iter().find(|t| t.deployment == "cleanup").unwrap();
    let output = handler.output.clone().unwrap();
    assert_eq!(output["input"], json!({"n": 1}));
    assert!(output["failed"]["f-b"].as_str().unwrap().contains("b cannot go on"), "{output}");
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_workflow_naming_a_parent_it_does_not_have_is_refused_when_served() {
    let data = temp_dir("workflows-invalid");
    let server = Server::start(&data);
    let client = Client::new(&server.api).unwrap();
    let a = Flow::new("lonely-a", |_: FlowContext, _: Value| async move { Ok(()) });
    let b = Flow::new("lonely-b", |_: FlowContext, _: Value| async move { Ok(()) });
    // b runs after a, but a was never added; and b is added twice.
    let workflow = Workflow::new("broken").task(b.clone().after(&[&a])).task(b);
    let started = Worker::new(client.clone()).workflow(workflow, []).start().await;
    let Err(ClientError::Invalid(message)) = started else { panic!("expected Invalid") };
    assert!(message.contains("runs after `lonely-a`, which is not a task of workflow `broken` yet"), "{message}");
    assert!(message.contains("task `lonely-b` is named twice"), "{message}");
    assert!(client.deployment("broken").await.is_err(), "nothing was registered");
}
