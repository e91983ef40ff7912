//! Rate limits, as in Hatchet: a `repo.pushed` event runs `sync-repo`, which calls an API
//! allowed 2 calls a second (a static limit, `github-api`) and gives each owner 10 syncs a
//! minute (a dynamic limit keyed by `{{ params.owner }}`). Six pushes arrive at once; the
//! runs start two per second, the rest waiting in the queue, none failing.
//!
//! ```sh
//! tripwire serve                       # in one terminal
//! cargo run --example rate_limits      # makes the limit, serves the flow, pushes six repos
//! ```
//!
//! Making a static limit takes an admin key when auth is on (`TRIPWIRE_API_KEY`). It exits
//! once the six runs are done; `tripwire rate-limits list` then shows both keys.

#![allow(clippy::disallowed_methods)] // it shows when each run started, on the wall clock

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use tripwire::prelude::*;

#[derive(Deserialize)]
struct Push {
    repo: String,
    owner: String,
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
    // A static limit exists before a deployment names it (registering one that names a
    // missing key is refused, saying so).
    client.put_rate_limit("github-api", 2, RateDuration::Second).await?;

    let began = Instant::now();
    let synced = Arc::new(AtomicUsize::new(0));
    let done = synced.clone();
    let sync = Flow::new("sync-repo", move |_: FlowContext, push: Push| {
        let done = done.clone();
        async move {
            let at = began.elapsed().as_secs_f64();
            println!("sync-repo: {} of {} synced at {at:.1} s", push.repo, push.owner);
            done.fetch_add(1, Ordering::SeqCst);
            Ok(json!({"synced": push.repo}))
        }
    })
    .rate_limit(RateLimitUse::static_key("github-api", 1))
    .rate_limit(RateLimitUse::dynamic_key("{{ params.owner }}", 1, 10, RateDuration::Minute));
    let on_push = TriggerDefinition::new("sync-on-push", EventTrigger::new().expect("repo.pushed"))
        .parameters(json!({"repo": "{{ event.resource.id }}", "owner": "{{ event.payload.owner }}"}));
    let worker = Worker::new(client.clone()).slots(6).flow(sync, [on_push]).start().await?;

    let pushes =
        [("api", "alice"), ("web", "alice"), ("cli", "alice"), ("docs", "bob"), ("infra", "bob"), ("blog", "carol")]
            .map(|(repo, owner)| NewEvent::new("repo.pushed", Resource::new(repo)).payload(json!({"owner": owner})));
    client.emit_many(pushes).await?;
    eprintln!("pushed six repos; github-api allows 2 calls a second");

    let deadline = Instant::now() + Duration::from_secs(60);
    while synced.load(Ordering::SeqCst) < 6 {
        if Instant::now() > deadline {
            return Err("the six runs did not finish within a minute".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("all six synced in {:.1} s", began.elapsed().as_secs_f64());
    for key in client.rate_limits().await? {
        println!("rate limit {}: {} of {} per {} used", key.key, key.used, key.limit, key.duration.name());
    }
    worker.stop().await?;
    Ok(())
}
