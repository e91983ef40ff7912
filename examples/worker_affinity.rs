//! Worker affinity, as in Hatchet: two workers, one with a GPU in the EU, one without in the
//! US. `transcode` requires `gpu >= 1`, so every upload is transcoded on the GPU worker;
//! `thumbnail` merely prefers the US (weight 10), so it runs there while that worker has a
//! free slot.
//!
//! ```sh
//! tripwire serve                          # in one terminal
//! cargo run --example worker_affinity     # two workers, three uploads, exits when done
//! ```

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tripwire::prelude::*;

#[derive(Deserialize)]
struct Upload {
    video: String,
}

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

    let job = |name: &'static str| {
        let done_tx = done_tx.clone();
        Flow::new(name, move |ctx: FlowContext, u: Upload| {
            let done_tx = done_tx.clone();
            async move {
                let worker = ctx.run().worker.clone().unwrap_or_default();
                let line = format!("{name}: {} on {worker}", u.video);
                println!("{line}");
                let _ = done_tx.send(line);
                Ok(json!({"worker": worker}))
            }
        })
    };
    let transcode =
        job("transcode").desired_label("gpu", DesiredLabel::required(1).comparator(Comparator::GreaterThanOrEqual));
    let thumbnail = job("thumbnail").desired_label("region", DesiredLabel::preferred("us", 10));
    let on_upload = |id: &str| {
        TriggerDefinition::new(id, EventTrigger::new().expect("video.uploaded"))
            .parameters(json!({"video": "{{ event.resource.id }}"}))
    };
    // Both workers serve both flows; only their labels differ.
    let gpu = Worker::new(client.clone())
        .name("gpu-eu")
        .label("gpu", 1)
        .label("region", "eu")
        .flow(transcode.clone(), [on_upload("transcode-on-upload")])
        .flow(thumbnail.clone(), [on_upload("thumbnail-on-upload")])
        .start()
        .await?;
    let plain = Worker::new(client.clone())
        .name("plain-us")
        .label("region", "us")
        .flow(transcode, [on_upload("transcode-on-upload")])
        .flow(thumbnail, [on_upload("thumbnail-on-upload")])
        .start()
        .await?;

    let uploads = ["intro.mp4", "talk.mp4", "outro.mp4"].map(|v| NewEvent::new("video.uploaded", Resource::new(v)));
    client.emit_many(uploads).await?;
    eprintln!("uploaded three videos");
    for _ in 0..6 {
        tokio::time::timeout(Duration::from_secs(60), done.recv()).await?.ok_or("a worker stopped")?;
    }
    gpu.stop().await?;
    plain.stop().await?;
    Ok(())
}
