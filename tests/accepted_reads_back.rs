//! A property of the whole server: whatever the API answers 2xx for can be read back, survives
//! a restart without a clean stop (as after `kill -9`) and after one, and reads back to the
//! same state. The requests are random, and many are hostile: far-future and
//! out-of-range times, `within` up to 1e300, JSON nested past the limits, oversized values.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{json, Value};
use tower::ServiceExt;
use tripwire::model::{Span, Timestamp};
use tripwire::service::clock::ManualClock;
use tripwire::service::{Service, ServiceConfig};

#[derive(Clone, Debug)]
enum Req {
    Event { occurred: &'static str, name: &'static str, rid: &'static str, depth: usize, follows: Option<u8>, id: u8 },
    Trigger { id: &'static str, within: f64, kind: u8, depth: usize },
    Deployment { depth: usize, big: usize },
    Run { depth: usize, big: usize },
    Advance { seconds: i64 },
}

const TIMES: &[&str] = &[
    "2026-01-01T00:00:00Z",
    "2026-01-01T00:00:30.5+05:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:00:00Z",
    "9800-12-31T23:59:59.999999Z",
    "+10000-01-01T00:00:00Z",
    "0000-06-01T00:00:00Z",
];

fn req() -> impl Strategy<Value = Req> {
    prop_oneof![
        4 => (
            prop::sample::select(TIMES),
            prop::sample::select(&["a", "b", "c"][..]),
            prop::sample::select(&["x", "y"][..]),
            0usize..80,
            prop::option::of(0u8..4),
            0u8..8
        )
            .prop_map(|(occurred, name, rid, depth, follows, id)| Req::Event { occurred, name, rid, depth, follows, id }),
        2 => (
            prop::sample::select(&["t1", "t2", "t3"][..]),
            prop::sample::select(&[0.0, 20.0, 3600.0, 3.1e9, 3.2e9, 3e11, 1e300][..]),
            0u8..4,
            0usize..80
        )
            .prop_map(|(id, within, kind, depth)| Req::Trigger { id, within, kind, depth }),
        1 => (0usize..80, prop::sample::select(&[10usize, 200_000, 300_000][..]))
            .prop_map(|(depth, big)| Req::Deployment { depth, big }),
        1 => (0usize..80, prop::sample::select(&[10usize, 100_000, 300_000][..])).prop_map(|(depth, big)| Req::Run { depth, big }),
        1 => prop::sample::select(&[1i64, 30, 3600, 86_400][..]).prop_map(|seconds| Req::Advance { seconds }),
    ]
}

fn nested(levels: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..levels {
        v = json!([v]);
    }
    v
}

fn id(n: u8) -> String {
    format!("00000000-0000-4000-8000-0000000000{n:02}")
}

/// The method, path and body of a request.
fn http(r: &Req) -> (Method, String, Value) {
    match r {
        Req::Event { occurred, name, rid, depth, follows, id: n } => {
            let mut e = json!({"id": id(*n), "event": name, "occurred": occurred,
                               "resource": {"prefect.resource.id": rid}, "payload": {"p": nested(*depth)}});
            if let Some(f) = follows {
                e["follows"] = json!(id(*f));
            }
            (Method::POST, "/api/events".into(), e)
        }
        Req::Trigger { id, within, kind, depth } => {
            let trigger = match kind {
                0 => json!({"after": ["a"], "expect": ["b"], "for_each": ["prefect.resource.id"], "within": within}),
                1 => {
                    json!({"expect": ["a", "c"], "for_each": ["prefect.resource.id"], "threshold": 2, "within": within})
                }
                2 => {
                    json!({"posture": "Proactive", "expect": ["c"], "for_each": ["prefect.resource.id"], "within": within})
                }
                _ => json!({"type": "sequence", "within": within, "triggers": [{"expect": ["a"]}, {"expect": ["b"]}]}),
            };
            let body = json!({"id": id, "trigger": trigger, "deployment": "d",
                              "parameters": {"rid": "{{ event.resource.id }}", "deep": nested(*depth)}});
            (Method::PUT, format!("/api/triggers/{id}"), body)
        }
        Req::Deployment { depth, big } => (
            Method::PUT,
            "/api/deployments/d".into(),
            json!({"parameters": {"deep": nested(*depth), "big": "x".repeat(*big)}}),
        ),
        Req::Run { depth, big } => (
            Method::POST,
            "/api/deployments/d/runs".into(),
            json!({"parameters": {"deep": nested(*depth), "big": "y".repeat(*big)}}),
        ),
        Req::Advance { .. } => (Method::POST, String::new(), Value::Null),
    }
}

async fn call(service: &Service, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
        .unwrap();
    let response = tripwire::http::router(service.clone()).oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Everything the API shows of the state, each read answering 200.
async fn read_all(service: &Service) -> Value {
    let mut all = serde_json::Map::new();
    for path in ["/api/events?limit=1000", "/api/runs?limit=1000", "/api/triggers", "/api/deployments"] {
        let (status, body) = call(service, Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        all.insert(path.into(), body);
    }
    for t in ["t1", "t2", "t3"] {
        for what in ["buckets?limit=1000", "firings?limit=1000"] {
            let path = format!("/api/triggers/{t}/{what}");
            let (status, body) = call(service, Method::GET, &path, None).await;
            assert!(status == 200 || status == 404, "{path}: {status} {body}");
            all.insert(path, body);
        }
    }
    Value::Object(all)
}

async fn start(data: &std::path::Path, clock: &ManualClock) -> Service {
    let mut config = ServiceConfig::new(data);
    config.clock = Arc::new(clock.clone());
    // A service dropped without a clean stop lets go of the database when its core notices.
    for _ in 0..100 {
        match Service::start(config.clone()).await {
            Ok(s) => return s,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("the data does not open again");
}

async fn check(requests: Vec<Req>, case: usize) {
    let data = std::env::temp_dir().join(format!("tripwire-readback-{}-{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let clock = ManualClock::new(Timestamp::parse("2026-01-01T00:00:00Z").unwrap());
    let service = start(&data, &clock).await;
    assert_eq!(call(&service, Method::PUT, "/api/deployments/d", Some(&json!({}))).await.0, 201);
    let mut accepted = 0;
    for r in &requests {
        if let Req::Advance { seconds } = r {
            clock.advance(Span::seconds(*seconds));
            service.tick().await.unwrap();
            continue;
        }
        let (method, path, body) = http(r);
        let (status, answer) = call(&service, method, &path, Some(&body)).await;
        assert!(status < 500, "{r:?}: {status} {answer}");
        accepted += usize::from(status < 300);
    }
    // Compare states after a tick at the same instant.
    service.tick().await.unwrap();
    let before = read_all(&service).await;
    // As after kill -9: the state the last batch stored is read back.
    drop(service);
    let service = start(&data, &clock).await;
    service.tick().await.unwrap();
    assert_eq!(read_all(&service).await, before, "after a restart without a clean stop ({accepted} requests accepted)");
    // After a clean stop too.
    service.shutdown().await;
    drop(service);
    let service = start(&data, &clock).await;
    service.tick().await.unwrap();
    assert_eq!(read_all(&service).await, before, "after a clean stop and a start");
    service.shutdown().await;
    drop(service);
    let _ = std::fs::remove_dir_all(&data);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn whatever_is_accepted_reads_back_and_survives_restarts(requests in prop::collection::vec(req(), 1..25)) {
        static CASE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let case = CASE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(check(requests, case));
    }
}
