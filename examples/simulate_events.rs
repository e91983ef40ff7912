//! Prefect's seed events: customer 123 creates an order, 456 creates one, then 123 completes
//! theirs, one second apart. Run it while `post_order_complete` is served.
//!
//! ```sh
//! cargo run --example simulate_events
//! ```

use std::time::Duration;

use tripwire::prelude::*;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    exit_code(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?;
    let events = [("order.created", "123"), ("order.created", "456"), ("order.complete", "123")];
    for (i, (name, user)) in events.into_iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let id = client.emit(NewEvent::new(name, Resource::new(user))).await?;
        println!("emitted {name} for {user} ({id})");
    }
    Ok(())
}
