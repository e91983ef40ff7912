//! Streaming, as Hatchet's `put_stream`: a flow pushes its output chunk by chunk while it
//! runs, and a client prints it as it comes (as `tripwire runs stream ID` does).
//!
//! ```sh
//! tripwire serve                      # in one terminal
//! cargo run --example streaming       # serves `write-haiku`, runs it, follows its stream
//! ```
//!
//! It both serves the flow and reads the stream: with auth on, it needs an admin key.

use std::io::Write;
use std::time::Duration;

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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let client = Client::from_env()?;
    let haiku = Flow::new("write-haiku", |ctx: FlowContext, _: serde_json::Value| async move {
        let lines = ["an old silent pond\n", "a frog jumps into the pond\n", "splash! silence again\n"];
        for line in lines {
            for word in line.split_inclusive(' ') {
                ctx.stream(word).await?;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
        Ok(json!({"lines": lines.len()}))
    });
    let worker = Worker::new(client.clone()).flow(haiku, []).start().await?;
    let run = client.create_run("write-haiku", None).await?;
    let mut stream = client.stream(run.id).await?;
    while let Some(chunk) = stream.next().await {
        print!("{}", chunk?.data);
        std::io::stdout().flush()?;
    }
    eprintln!("run {} ended: {:?}", run.id, stream.ended());
    worker.stop().await?;
    Ok(())
}
