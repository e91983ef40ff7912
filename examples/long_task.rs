//! A long task that manages its own attempt, as Hatchet's context lets it: the deployment
//! allows 2 s, the flow knows it needs about 4, so it refreshes its timeout first; between
//! steps it checks whether it was cancelled (by hand, or by a concurrency strategy) and
//! stops cleanly if so.
//!
//! ```sh
//! tripwire serve                     # in one terminal
//! cargo run --example long_task      # serves `crunch`, emits `data.arrived`, exits when done
//! ```
//!
//! While it runs, `tripwire runs cancel ID` (with an admin key) makes it print that it
//! stopped early.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tripwire::prelude::*;

#[derive(Deserialize)]
struct Batch {
    batch: String,
}

const STEPS: u32 = 4;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    exit_code(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let client = Client::from_env()?;
    let (done_tx, mut done) = mpsc::unbounded_channel::<String>();

    let crunch = Flow::new("crunch", move |ctx: FlowContext, b: Batch| {
        let done_tx = done_tx.clone();
        async move {
            // The deployment's 2 s are not enough: ask for 10 from now.
            ctx.refresh_timeout(Duration::from_secs(10)).await?;
            println!("crunch: {} refreshed its deadline to 10 s", b.batch);
            for step in 1..=STEPS {
                tokio::select! {
                    _ = ctx.cancelled() => {
                        let line = format!("crunch: {} stopped cleanly after {} steps", b.batch, step - 1);
                        println!("{line}");
                        let _ = done_tx.send(line);
                        return Ok(json!({"steps": step - 1}));
                    }
                    _ = tokio::time::sleep(Duration::from_secs(1)) => println!("crunch: {} step {step}", b.batch),
                }
            }
            let line = format!("crunch: {} done after {STEPS} steps", b.batch);
            println!("{line}");
            let _ = done_tx.send(line);
            Ok(json!({"steps": STEPS}))
        }
    })
    .timeout(Duration::from_secs(2));
    let on_data = TriggerDefinition::new("crunch-on-data", EventTrigger::new().expect("data.arrived"))
        .parameters(json!({"batch": "{{ event.resource.id }}"}));
    let worker = Worker::new(client.clone()).flow(crunch, [on_data]).start().await?;
    client.emit(NewEvent::new("data.arrived", Resource::new("batch-7"))).await?;
    eprintln!("emitted data.arrived for batch-7");
    let finished = tokio::time::timeout(Duration::from_secs(60), done.recv()).await;
    worker.stop().await?;
    match finished {
        Ok(Some(_)) => Ok(()),
        _ => Err("the run did not finish within a minute".into()),
    }
}
