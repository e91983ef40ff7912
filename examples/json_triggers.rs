//! The order example with its trigger defined only in JSON (`examples/json_triggers.json`)
//! and applied with the CLI; the Rust code serves the flow and leaves its triggers alone.
//!
//! ```sh
//! tripwire serve                                           # in one terminal
//! tripwire triggers apply examples/json_triggers.json      # the trigger, from JSON
//! cargo run --example json_triggers                        # serves the flow until Ctrl-C
//! cargo run --example simulate_events                      # prints the line once
//! ```

use serde::Deserialize;
use tripwire::prelude::*;

#[derive(Deserialize)]
struct OrderParams {
    user_id: String,
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
    let flow = Flow::new("post-order-complete", |_: FlowContext, params: OrderParams| async move {
        println!("User {} has completed an order -- doing stuff now", params.user_id);
        Ok(())
    });
    let client = Client::from_env()?;
    match client.deployment_triggers("post-order-complete").await {
        Ok(triggers) if triggers.is_empty() => {
            eprintln!("no trigger runs post-order-complete yet: apply one with `tripwire triggers apply examples/json_triggers.json`")
        }
        Ok(_) => {}
        // A `worker` key may serve but not read: the check is only a hint.
        Err(e) => eprintln!("cannot look for the triggers of post-order-complete ({e}); serving anyway"),
    }
    eprintln!("serving post-order-complete against {}; Ctrl-C to stop", client.base_url());
    Worker::new(client).flow_without_triggers(flow).run().await?;
    Ok(())
}
