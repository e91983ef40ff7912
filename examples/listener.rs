//! AIFlow's listener: a process that follows events as they happen (`Client::subscribe`, the
//! `/api/events/out` WebSocket) and keeps following them when the server restarts or the
//! connection drops: it reconnects on its own and resumes without a gap or a duplicate.
//!
//! ```sh
//! tripwire serve                              # in one terminal
//! cargo run --example listener                # prints every order.* event as it comes
//! cargo run --example listener -- --count 6   # ... and exits after six
//! ```
//!
//! Restart the server while it runs: the events sent meanwhile are printed once it is back,
//! each once. Reading events takes a key of the read role once auth is on.

use serde_json::json;
use tripwire::prelude::*;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    exit_code(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let count = match args.iter().position(|a| a == "--count") {
        Some(i) => Some(args.get(i + 1).and_then(|n| n.parse::<usize>().ok()).ok_or("--count takes a number")?),
        None => None,
    };
    let client = Client::from_env()?;
    // No backfill: only what happens from now on (reconnections fill their own gaps).
    let mut events = client.subscribe(&json!({"event": {"prefix": ["order."]}}), false).await?;
    println!("listening for order.* events");
    let mut seen = 0;
    while let Some(event) = events.next().await {
        let event = event?;
        println!("{} {}", event.event, event.resource.id());
        seen += 1;
        if count == Some(seen) {
            break;
        }
    }
    if events.reconnects() > 0 {
        eprintln!("reconnected {} times", events.reconnects());
    }
    Ok(())
}
