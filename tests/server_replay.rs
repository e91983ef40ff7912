//! The server's engine is the one `replay` uses: every conformance case is sent over HTTP (the
//! events with their `occurred` times, on a manual clock this test controls), and the firings
//! the server stores equal the firings of `replay`.

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
use tripwire::service::clock::ManualClock;
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

async fn run_case(path: &std::path::Path) -> Result<(), String> {
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

    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let data = common::temp_dir(&format!("replay-{name}"));
    let clock = ManualClock::new(events[0].occurred);
    let mut config = ServiceConfig::new(&data);
    config.clock = Arc::new(clock.clone());
    let service = Service::start(config).await.map_err(|e| e.to_string())?;
    let app = tripwire::http::router(service.clone());
    for def in case["triggers"].as_array().unwrap() {
        let id = def["id"].as_str().unwrap();
        let (status, body) = call(&app, "PUT", &format!("/api/triggers/{id}"), def.clone()).await;
        if status >= 300 {
            return Err(format!("PUT trigger {id}: {status} {body}"));
        }
    }
    let mut now = events[0].occurred;
    for e in case["events"].as_array().unwrap() {
        let occurred = Timestamp::parse(e["occurred"].as_str().unwrap()).unwrap();
        now = now.max(occurred);
        clock.set(now);
        let (status, body) = call(&app, "POST", "/api/events", e.clone()).await;
        if status != 200 {
            return Err(format!("POST event: {status} {body}"));
        }
    }
    if let Some(until) = until {
        clock.set(until.max(now));
        service.tick().await.map_err(|e| e.to_string())?;
    }
    let mut got: Vec<String> = service.recent_firings(100_000).await.unwrap().iter().map(key).collect();
    service.shutdown().await;
    let _ = std::fs::remove_dir_all(&data);
    expected.sort();
    got.sort();
    if expected == got {
        Ok(())
    } else {
        Err(format!("replay fired {expected:?}\nthe server fired {got:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_conformance_case_fires_the_same_through_the_server_as_through_replay() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let mut cases: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    let mut failures = Vec::new();
    for path in &cases {
        if let Err(e) = run_case(path).await {
            failures.push(format!("{}: {e}", path.file_name().unwrap().to_string_lossy()));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n\n"));
}
