//! A DAG workflow (Hatchet's): `extract` runs first, `clean` and `count` run after it side by
//! side, `report` runs after both, reading its parents' outputs with `ctx.parent_output`. A
//! second run whose input makes `clean` fail shows the failure skipping `report` and the
//! on-failure task running.
//!
//! ```sh
//! tripwire serve                    # in one terminal
//! cargo run --example workflow      # serves the workflow, runs it twice, prints the outcomes
//! ```
//!
//! Creating a run by hand takes an admin key once auth is on (`TRIPWIRE_API_KEY`).

use serde::Deserialize;
use serde_json::{json, Value};
use tripwire::prelude::*;

#[derive(Deserialize)]
struct Input {
    rows: Vec<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    exit_code(run().await)
}

/// extract → clean, count → report; on failure, `alert`.
fn etl() -> Workflow {
    let extract = Flow::new("extract", |_: FlowContext, input: Input| async move { Ok(input.rows) });
    let clean = Flow::new("clean", |ctx: FlowContext, _: Value| async move {
        let rows: Vec<String> = serde_json::from_value(ctx.parent_output("extract").await?)?;
        if rows.iter().any(|r| r.is_empty()) {
            return Err("an empty row".into());
        }
        Ok(rows.iter().map(|r| r.trim().to_lowercase()).collect::<Vec<_>>())
    });
    let count = Flow::new("count", |ctx: FlowContext, _: Value| async move {
        let rows = ctx.parent_output("extract").await?;
        Ok(json!(rows.as_array().map_or(0, Vec::len)))
    });
    let report = Flow::new("report", |ctx: FlowContext, _: Value| async move {
        let clean = ctx.parent_output("clean").await?;
        let count = ctx.parent_output("count").await?;
        Ok(format!("{count} rows: {clean}"))
    });
    let alert = Flow::new("alert", |ctx: FlowContext, _: Value| async move {
        let failed = ctx.failed_tasks().await?;
        println!("alert: {failed:?}");
        Ok(failed)
    });
    Workflow::new("etl")
        .task(extract.clone())
        .task(clean.clone().after(&[&extract]))
        .task(count.clone().after(&[&extract]))
        .task(report.after(&[&clean, &count]))
        .on_failure(alert)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let client = Client::from_env()?;
    let worker = Worker::new(client.clone()).workflow(etl(), []).start().await?;

    let output = client.run_flow(&etl(), json!({"rows": [" Alice", "BOB "]})).await?;
    println!("etl: {}", output["report"]);

    match client.run_flow(&etl(), json!({"rows": ["Carol", ""]})).await {
        Err(ClientError::RunFailed { error, .. }) => println!("etl failed: {error}"),
        other => println!("etl: unexpected {other:?}"),
    }
    worker.stop().await?;
    Ok(())
}
