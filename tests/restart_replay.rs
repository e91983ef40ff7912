//! Every conformance case through the service with a crash midway: the case's triggers and
//! events go over HTTP as in `server_replay.rs`, but at a seeded random point between two events
//! the service is dropped without a shutdown (as after `kill -9`) and started again on the same
//! data, so that recovery reads the engine state the last committed batch stored. The stored firings (trigger, bucket, at, triggering event,
//! parameters, error) equal those of the uninterrupted run, which `server_replay.rs` shows is
//! `replay`'s. `TRIPWIRE_RESTART_SEED=<seed printed>` reproduces the restart points.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use tripwire::engine::compile_document;
use tripwire::engine::replay::replay;
use tripwire::model::{Event, Firing, JsonPath, Timestamp};
use tripwire::service::clock::{Clock, ManualClock, SystemClock};
use tripwire::service::{Service, ServiceConfig};

async fn call(app: &axum::Router, method: &str, uri: &str, body: Value) -> (u16, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// What is compared: everything a user sees of a firing.
fn key(f: &Firing) -> String {
    json!([f.trigger, f.bucket, f.at, f.triggering_event, f.parameters, f.error]).to_string()
}

/// A dropped service lets go of its database when its core notices.
async fn start_again(config: &ServiceConfig) -> Service {
    for _ in 0..100 {
        match Service::start(config.clone()).await {
            Ok(s) => return s,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    panic!("the data does not open again");
}

/// splitmix64.
fn mix(seed: u64, salt: u64) -> u64 {
    let mut z = seed.wrapping_add(salt.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

async fn run_case(path: &std::path::Path, index: u64, seed: u64) -> Result<(), String> {
    let case: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let events: Vec<Event> = case["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| Event::from_json(e, &JsonPath::root(), None).unwrap())
        .collect();
    let until = case["until"].as_str().map(|u| Timestamp::parse(u).unwrap());
    let mut expected: Vec<String> =
        replay(compile_document(&case["triggers"]).unwrap(), events.clone(), until).iter().map(key).collect();

    // The restart comes before event `crash_at` (at `events.len()`: before the clock runs to `until`).
    let crash_at = 1 + (mix(seed, 2 * index) % events.len() as u64) as usize;
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let data = common::temp_dir(&format!("restart-{name}"));
    let clock = ManualClock::new(events[0].occurred);
    let mut config = ServiceConfig::new(&*data);
    config.clock = Arc::new(clock.clone());
    let mut service = Service::start(config.clone()).await.map_err(|e| e.to_string())?;
    let mut app = tripwire::http::router(service.clone());
    for def in case["triggers"].as_array().unwrap() {
        let id = def["id"].as_str().unwrap();
        let (status, body) = call(&app, "PUT", &format!("/api/triggers/{id}"), def.clone()).await;
        if status >= 300 {
            return Err(format!("PUT trigger {id}: {status} {body}"));
        }
    }
    let mut now = events[0].occurred;
    for (i, e) in case["events"].as_array().unwrap().iter().enumerate() {
        if i == crash_at {
            drop(app);
            drop(service);
            service = start_again(&config).await;
            app = tripwire::http::router(service.clone());
        }
        let occurred = Timestamp::parse(e["occurred"].as_str().unwrap()).unwrap();
        now = now.max(occurred);
        clock.set(now);
        let (status, body) = call(&app, "POST", "/api/events", e.clone()).await;
        if status != 200 {
            return Err(format!("POST event: {status} {body}"));
        }
    }
    if crash_at == events.len() {
        drop(app);
        drop(service);
        service = start_again(&config).await;
    }
    if let Some(until) = until {
        clock.set(until.max(now));
        service.tick().await.map_err(|e| e.to_string())?;
    }
    let mut got: Vec<String> = service.recent_firings(100_000).await.unwrap().iter().map(key).collect();
    service.shutdown().await;
    expected.sort();
    got.sort();
    if expected == got {
        Ok(())
    } else {
        Err(format!(
            "restarted before event {crash_at} of {}:\nuninterrupted {expected:?}\nrestarted {got:?}",
            events.len()
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_conformance_case_fires_the_same_with_a_crash_and_restart_midway() {
    let seed = std::env::var("TRIPWIRE_RESTART_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemClock.now().as_micros() as u64);
    eprintln!("restart seed: {seed} (TRIPWIRE_RESTART_SEED={seed} reproduces the restart points)");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let mut cases: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    // Four cases at a time, each on its own data: one case's commits wait on the disk while
    // another's run.
    let mut running = tokio::task::JoinSet::new();
    let mut failures = Vec::new();
    for (i, path) in cases.iter().cloned().enumerate() {
        if running.len() == 4 {
            failures.extend(running.join_next().await.unwrap().unwrap());
        }
        running.spawn(async move {
            let result = run_case(&path, i as u64, seed).await;
            result.err().map(|e| format!("{}: {e}", path.file_name().unwrap().to_string_lossy()))
        });
    }
    while let Some(done) = running.join_next().await {
        failures.extend(done.unwrap());
    }
    failures.sort();
    assert!(
        failures.is_empty(),
        "seed {seed}: {} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
