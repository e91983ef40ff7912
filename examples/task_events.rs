//! AIFlow's seed: a running flow sends an event between its tasks (`send_event("key", ...)`),
//! and another flow starts on it.
//!
//! ```sh
//! tripwire serve                        # in one terminal
//! cargo run --example task_events       # serves both flows and starts the first one
//! ```
//!
//! `extract` runs two tasks; after the first it emits `key` with what it produced, and
//! `transform`, triggered by `key`, starts while `extract` is still busy. Ctrl-C stops it.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tripwire::prelude::*;

#[derive(Deserialize)]
struct Batch {
    rows: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    exit_code(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    // Warnings to stderr, coloured only on a terminal.
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let client = Client::from_env()?;

    let extract = Flow::new("extract", |ctx: FlowContext, _: serde_json::Value| async move {
        println!("extract: task 1 read 42 rows");
        let event = NewEvent::new("key", Resource::new(format!("batch.{}", ctx.run_id()))).payload(json!({"rows": 42}));
        ctx.emit(event).await?;
        println!("extract: sent `key`; task 2 goes on");
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!("extract: task 2 done");
        Ok(json!({"rows": 42}))
    });
    let transform = Flow::new("transform", |ctx: FlowContext, batch: Batch| async move {
        let from = ctx.event().map_or("?".to_owned(), |e| e.resource.id().to_owned());
        println!("transform: started on `key` from {from} with {} rows", batch.rows);
        Ok(())
    });
    let on_key = TriggerDefinition::new("transform-on-key", EventTrigger::new().expect("key"))
        .parameters(json!({"rows": "{{ event.payload.rows }}"}));

    let worker = Worker::new(client.clone()).flow(extract, []).flow(transform, [on_key]).start().await?;
    let run = client.create_run("extract", None).await?;
    eprintln!("started extract (run {}); serving until Ctrl-C", run.id);
    tokio::signal::ctrl_c().await?;
    worker.stop().await?;
    Ok(())
}
