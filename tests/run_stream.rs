//! A run's stream against the real server binary with a worker: a flow's `ctx.stream` chunks
//! reach a client in order while the run goes on, a client that connects after the end reads
//! them all, the CLI prints them, and pushes that cannot be kept are refused naming why.

#![allow(clippy::disallowed_methods)] // tests wait on the wall clock

mod common;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tripwire::client::Client;
use tripwire::flow::{Flow, FlowContext, Worker};
use tripwire::model::RunState;

use common::{temp_dir, Http, Server};

const BIN: &str = env!("CARGO_BIN_EXE_tripwire");

#[tokio::test]
async fn a_flows_chunks_arrive_live_in_order_and_late_readers_read_them_all() {
    let data = temp_dir("run-stream");
    let server = Server::start(&data);
    let client = Client::new(&server.api).unwrap();
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    // It streams three chunks, waits for the test to say go, then streams two more.
    let storyteller = Flow::new("storyteller", move |ctx: FlowContext, _: Value| {
        let mut go = go_rx.clone();
        async move {
            for word in ["once ", "upon ", "a "] {
                ctx.stream(word).await?;
            }
            let _ = go.wait_for(|g| *g).await;
            for word in ["time", "\n"] {
                ctx.stream(word).await?;
            }
            Ok(json!({"words": 4}))
        }
    });
    let worker = Worker::new(client.clone()).flow(storyteller, []).start().await.unwrap();
    let run = client.create_run("storyteller", None).await.unwrap();

    // Live: the first three arrive while the run is still running.
    let mut live = client.stream(run.id).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), live.next()).await.unwrap().unwrap().unwrap();
        seen.push(chunk.data);
    }
    assert_eq!(seen, ["once ", "upon ", "a "]);
    assert_eq!(client.run(run.id).await.unwrap().state, RunState::Running, "read while it runs");
    go_tx.send_replace(true);
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), live.next()).await.unwrap() {
        let chunk = chunk.unwrap();
        assert_eq!(chunk.seq as usize, seen.len(), "in order, none skipped");
        seen.push(chunk.data);
    }
    assert_eq!(seen.concat(), "once upon a time\n");
    assert_eq!(live.ended(), Some(RunState::Completed));

    // Late: after the end, everything, then the end.
    let mut late = client.stream(run.id).await.unwrap();
    let mut all = String::new();
    while let Some(chunk) = late.next().await {
        all.push_str(&chunk.unwrap().data);
    }
    assert_eq!((all.as_str(), late.ended()), ("once upon a time\n", Some(RunState::Completed)));
    // Resumed from a position.
    let mut rest = client.stream_from(run.id, 3).await.unwrap();
    let first = rest.next().await.unwrap().unwrap();
    assert_eq!((first.seq, first.data.as_str(), first.attempt), (3, "time", 1));

    // The CLI prints the chunks as they are, and how the run ended on stderr.
    let out = Command::new(BIN).args(["runs", "stream", &run.id.to_string(), "--api", &server.api]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "once upon a time\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ended: Completed"));

    // The server-sent events themselves: ids are positions, so `Last-Event-ID` resumes.
    let sse = reqwest::Client::new()
        .get(format!("{}/runs/{}/stream", server.api, run.id))
        .header("Last-Event-ID", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let text = sse.text().await.unwrap();
    assert!(text.starts_with("id: 4\nevent: chunk\ndata: {"), "{text}");
    assert!(text.contains("event: end\ndata: {\"state\":\"Completed\",\"next\":5}"), "{text}");

    // A finished run's stream is closed; a chunk too big is refused naming it.
    let http = Http::new(&server.api);
    let (status, body) = http.post(&format!("/runs/{}/stream", run.id), json!({"chunks": ["late"]})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("run_finished")), "{body}");
    let big = "x".repeat(64 * 1024 + 1);
    let (status, body) = http.post(&format!("/runs/{}/stream", run.id), json!({"chunks": ["ok", big]})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].to_string().contains("$.chunks[1]"), "{body}");
    let (status, _) = http.get(&format!("/runs/{}/stream", uuid::Uuid::nil())).await;
    assert_eq!(status, 404);
    worker.stop().await.unwrap();
}
