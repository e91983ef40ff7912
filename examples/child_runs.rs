//! Composition: a flow that runs other flows as its children and waits for their outputs
//! (Hatchet's child spawning), and `run_flow`, which runs a flow and returns its output.
//!
//! `sum-of-squares` spawns one `square` child per number, one after the other. Children are
//! durable: each is keyed by its parent and its position, so if the parent's worker dies
//! mid-way, the retried parent finds the children it made before (finished or still running)
//! and makes only the missing ones.
//!
//! ```sh
//! tripwire serve                       # in one terminal
//! cargo run --example child_runs       # serves both flows, runs sum-of-squares of 1, 2, 3
//! cargo run --example child_runs -- --serve   # only serves them, until Ctrl-C
//! ```
//!
//! Creating a run by hand takes an admin key once auth is on (`TRIPWIRE_API_KEY`).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tripwire::prelude::*;

#[derive(Deserialize)]
struct Square {
    n: i64,
    /// How long the child takes, to watch it happen (or to kill a worker mid-way).
    #[serde(default)]
    delay_ms: u64,
}

#[derive(Deserialize)]
struct Numbers {
    numbers: Vec<i64>,
    #[serde(default)]
    delay_ms: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    exit_code(run().await)
}

/// The child: squares a number.
fn square() -> Flow {
    Flow::new("square", |_: FlowContext, p: Square| async move {
        tokio::time::sleep(Duration::from_millis(p.delay_ms)).await;
        println!("square: {} squared", p.n);
        Ok(json!(p.n * p.n))
    })
}

/// The parent: one child per number, in order, then their sum.
fn sum_of_squares() -> Flow {
    Flow::new("sum-of-squares", |ctx: FlowContext, p: Numbers| async move {
        let square = square();
        let mut sum = 0;
        for n in p.numbers {
            // The child's key is its position (0, 1, 2, ...): the same in every attempt.
            let output = ctx.spawn(&square, json!({"n": n, "delay_ms": p.delay_ms})).await?;
            sum += output.as_i64().ok_or("square returned no number")?;
            println!("sum-of-squares: attempt {} has {n}² = {output}", ctx.attempt());
        }
        Ok(json!({"sum": sum}))
    })
    .retries(2, Duration::from_millis(100))
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let client = Client::from_env()?;
    // The parent waits in a slot while its children run in others.
    let worker = Worker::new(client.clone())
        .name(format!("child-runs-{}", std::process::id()))
        .slots(4)
        // A short lease, so that the runs of a worker that dies are taken over within seconds.
        .lease(Duration::from_secs(2))
        .flow(square(), [])
        .flow(sum_of_squares(), [])
        .start()
        .await?;
    println!("serving square and sum-of-squares");

    if std::env::args().any(|a| a == "--serve") {
        tokio::signal::ctrl_c().await?;
        worker.stop().await?;
        return Ok(());
    }

    // Run and wait: the parent's output, as Hatchet's `aio_run` returns it.
    let output = client.run_flow(&sum_of_squares(), json!({"numbers": [1, 2, 3]})).await?;
    println!("sum of squares of 1, 2, 3: {}", output["sum"]);

    let parent = client.runs(RunQuery::new().deployment("sum-of-squares").limit(1)).await?;
    let children = client.children(parent[0].id).await?;
    println!("children: {}", children.len());

    // A failing flow's error comes back as `RunFailed`.
    match client.run_flow(&square(), json!({"n": "not a number"})).await {
        Err(ClientError::RunFailed { state, error, .. }) => println!("square of text: {state:?}: {error}"),
        other => println!("square of text: unexpected {other:?}"),
    }
    worker.stop().await?;
    Ok(())
}
