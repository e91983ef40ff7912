//! Durable ingestion through the service (`cargo bench --bench ingest`): events/s accepted
//! and committed to redb, with one trigger installed, for several concurrent producers and
//! batch sizes. Every acknowledged event is committed (fsync) before its answer; concurrent
//! requests share commits. `INGEST_CASE=16x100,1x1` picks producer x batch-size cases.
#![allow(missing_docs)]
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time

use std::time::{Duration, Instant};

use serde_json::json;
use tripwire::model::{Event, JsonPath, Resource, Timestamp, TriggerDefinition};
use tripwire::service::{Service, ServiceConfig};
use uuid::Uuid;

const TOTAL: usize = 100_000;

async fn run(producers: usize, batch: usize) -> (f64, Duration) {
    let dir = std::env::temp_dir().join(format!("tripwire-bench-ingest-{}-{producers}-{batch}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let service = Service::start(ServiceConfig::new(&dir)).await.unwrap();
    let def = TriggerDefinition::from_json(
        &json!({"id": "pairs", "trigger": {"after": ["order.created"], "expect": ["order.complete"], "for_each": ["prefect.resource.id"], "within": 3600}}),
        &JsonPath::root(),
    )
    .unwrap();
    service.put_trigger(def, true).await.unwrap();
    let per_producer = TOTAL / producers;
    let t0 = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let service = service.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            while sent < per_producer {
                let events: Vec<Event> = (sent..(sent + batch).min(per_producer))
                    .map(|i| {
                        let n = (p * per_producer + i) as u128;
                        let name = if i % 2 == 0 { "order.created" } else { "order.complete" };
                        Event::new(Uuid::from_u128(n + 1), t0, name, Resource::new(format!("cust-{:011}", n / 2)))
                    })
                    .collect();
                let len = events.len();
                loop {
                    match service.ingest(events.clone()).await {
                        Ok(_) => break,
                        Err(tripwire::service::ServiceError::Overloaded { .. }) => tokio::task::yield_now().await,
                        Err(e) => panic!("{e}"),
                    }
                }
                sent += len;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    service.shutdown().await;
    drop(service);
    let _ = std::fs::remove_dir_all(&dir);
    ((producers * per_producer) as f64 / elapsed.as_secs_f64(), elapsed)
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("ingest: {TOTAL} events through Service::ingest, committed to redb, one after/expect trigger");
    let cases: Vec<(usize, usize)> = match std::env::var("INGEST_CASE") {
        Ok(c) => c
            .split(',')
            .map(|p| {
                let (a, b) = p.split_once('x').unwrap();
                (a.parse().unwrap(), b.parse().unwrap())
            })
            .collect(),
        Err(_) => vec![(1, 1), (64, 1), (1, 100), (16, 100)],
    };
    for (producers, batch) in cases {
        let (rate, elapsed) = rt.block_on(run(producers, batch));
        println!(
            "ingest/producers={producers:<3} batch={batch:<4} {rate:>10.0} events/s ({:.2} s)",
            elapsed.as_secs_f64()
        );
    }
}
