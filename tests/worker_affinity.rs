//! Worker labels and affinity against the real server binary, with two workers claiming in
//! parallel: a required label keeps runs off the worker without it; preferred labels with
//! weights send runs to the better-fitting worker while it has a free slot, and to the other
//! when it has none; a run no live worker can take says why.

#![allow(clippy::disallowed_methods)] // tests wait on the wall clock

mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tripwire::client::Client;
use tripwire::flow::{Flow, FlowContext, Worker, WorkerHandle};
use tripwire::model::{DesiredLabel, RunState, StateReason};
use uuid::Uuid;

use common::{temp_dir, wait_for_run, Http, Server};

fn holding(name: &str, hold: Duration) -> Flow {
    Flow::new(name, move |ctx: FlowContext, _: Value| async move {
        tokio::time::sleep(hold).await;
        Ok(ctx.run_id())
    })
}

async fn worker(client: &Client, name: &str, labels: &[(&str, Value)], slots: usize, flows: &[Flow]) -> WorkerHandle {
    let mut worker = Worker::new(client.clone()).name(name).slots(slots).lease(Duration::from_secs(3));
    for (key, value) in labels {
        worker = match value {
            Value::Number(n) => worker.label(*key, n.as_i64().unwrap()),
            other => worker.label(*key, other.as_str().unwrap()),
        };
    }
    for flow in flows {
        worker = worker.flow(flow.clone(), []);
    }
    worker.start().await.unwrap()
}

async fn ran_on(client: &Client, ids: &[Uuid]) -> Vec<String> {
    let mut workers = Vec::new();
    for id in ids {
        let run = wait_for_run(client, *id, "completion", |r| r.is_final()).await;
        assert_eq!(run.state, RunState::Completed, "{run:#?}");
        workers.push(run.worker.unwrap());
    }
    workers
}

#[tokio::test]
async fn a_required_label_keeps_runs_on_the_workers_that_have_it() {
    let data = temp_dir("affinity-required");
    let server = Server::start(&data);
    let client = Client::new(&server.api).unwrap();
    let eu_only = holding("eu-only", Duration::from_millis(100)).desired_label("region", DesiredLabel::required("eu"));
    let apac_only = holding("apac-only", Duration::ZERO).desired_label("region", DesiredLabel::required("apac"));
    let flows = [eu_only, apac_only];
    let eu = worker(&client, "w-eu", &[("region", json!("eu"))], 4, &flows).await;
    let us = worker(&client, "w-us", &[("region", json!("us")), ("memory", json!(64))], 4, &flows).await;

    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(client.create_run("eu-only", None).await.unwrap().id);
    }
    assert_eq!(ran_on(&client, &ids).await, vec!["w-eu"; 8], "only the eu worker runs them");

    // No online worker has region=apac: the run waits, and says why.
    let stuck = client.create_run("apac-only", None).await.unwrap();
    let run = wait_for_run(&client, stuck.id, "the reason", |r| r.reason == Some(StateReason::NoMatchingWorker)).await;
    assert_eq!(run.state, RunState::Scheduled);
    let why = run.waiting.unwrap();
    assert!(why.contains("no live worker serving `apac-only` has the labels it requires (region = apac)"), "{why}");
    assert!(why.contains("w-eu") && why.contains("w-us"), "{why}");

    // The workers view shows each worker's labels.
    let http = Http::new(&server.api);
    let (_, workers) = http.get("/workers").await;
    let us_view = workers.as_array().unwrap().iter().find(|w| w["name"] == "w-us").unwrap().clone();
    assert_eq!(us_view["labels"], json!({"memory": 64, "region": "us"}), "{workers}");

    // Bad labels are refused naming the field.
    for (labels, field) in [
        (json!({"region": [1]}), "$.labels"),
        (json!({"": "x"}), "$.labels"),
        (json!({"r": "x".repeat(1025)}), "$.labels.r"),
    ] {
        let claim = json!({"worker": "w", "deployments": ["eu-only"], "labels": labels});
        let (status, body) = http.post("/runs/claim", claim).await;
        assert_eq!(status, 400, "{labels}: {body}");
        assert!(body["error"].to_string().contains(field), "{labels}: {body}");
    }
    let (status, body) = http
        .put("/deployments/d", json!({"desired_labels": {"memory": {"value": "big", "comparator": "GREATER_THAN"}}}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].to_string().contains("$.desired_labels.memory.comparator"), "{body}");
    eu.stop().await.unwrap();
    us.stop().await.unwrap();
}

#[tokio::test]
async fn preferred_labels_pick_the_better_worker_while_it_has_a_free_slot() {
    let data = temp_dir("affinity-preferred");
    let server = Server::start(&data);
    let client = Client::new(&server.api).unwrap();
    // gpu is worth 10, region=us 5, memory >= 32 is worth 3: the gpu worker scores 13, the
    // us worker 8.
    let prefers = |name: &str, hold: Duration| {
        holding(name, hold)
            .desired_label("gpu", DesiredLabel::preferred(1, 10))
            .desired_label("region", DesiredLabel::preferred("us", 5))
            .desired_label(
                "memory",
                DesiredLabel::preferred(32, 3).comparator(tripwire::model::Comparator::GreaterThanOrEqual),
            )
    };
    let quick = prefers("quick", Duration::from_millis(50));
    let slow = prefers("slow", Duration::from_millis(1500));
    let flows = [quick, slow];
    let gpu =
        worker(&client, "w-gpu", &[("gpu", json!(1)), ("region", json!("eu")), ("memory", json!(32))], 1, &flows).await;
    let us = worker(&client, "w-us", &[("region", json!("us")), ("memory", json!(64))], 4, &flows).await;

    // One at a time, the gpu worker (free each time) takes every run.
    let mut on = Vec::new();
    for _ in 0..4 {
        let id = client.create_run("quick", None).await.unwrap().id;
        on.extend(ran_on(&client, &[id]).await);
    }
    assert_eq!(on, vec!["w-gpu"; 4]);

    // Three at once: the gpu worker has one slot; the other runs go to the us worker rather
    // than waiting for it.
    let began = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(client.create_run("slow", None).await.unwrap().id);
    }
    let on = ran_on(&client, &ids).await;
    assert_eq!(on[0], "w-gpu", "the oldest run goes to the better worker: {on:?}");
    assert!(on[1..].iter().all(|w| w == "w-us"), "the gpu worker was busy: {on:?}");
    assert!(began.elapsed() < Duration::from_secs(4), "nobody waited for the busy worker: {:?}", began.elapsed());
    gpu.stop().await.unwrap();
    us.stop().await.unwrap();
}
