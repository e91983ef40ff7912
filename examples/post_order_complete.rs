//! Prefect's seed, in Rust: a flow that runs when a customer completes an order after
//! creating one, served with its trigger (`post_order_complete.serve(triggers=[...])`).
//!
//! ```sh
//! tripwire serve                               # in one terminal
//! cargo run --example post_order_complete      # in another: serves the flow until Ctrl-C
//! cargo run --example simulate_events          # in a third
//! ```
//!
//! It prints `User 123 has completed an order -- doing stuff now` once, and nothing for 456,
//! who never completed an order. The server is found through `TRIPWIRE_API` (default
//! `http://127.0.0.1:4200/api`).

use serde::Deserialize;
use serde_json::json;
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

    let post_order_complete = Flow::new("post-order-complete", |ctx: FlowContext, params: OrderParams| async move {
        let line = format!("User {} has completed an order -- doing stuff now", params.user_id);
        println!("{line}");
        ctx.log().info(line);
        Ok(())
    });

    // `order.complete` after `order.created`, for each customer (Prefect's defaults otherwise).
    let order_complete = TriggerDefinition::new(
        "order-complete",
        EventTrigger::new().after("order.created").expect("order.complete").for_each("prefect.resource.id"),
    )
    .parameters(json!({"user_id": "{{ event.resource.id }}"}));

    let client = Client::from_env()?;
    eprintln!("serving post-order-complete against {}; Ctrl-C to stop", client.base_url());
    post_order_complete.serve(&client, [order_complete]).await?;
    Ok(())
}
