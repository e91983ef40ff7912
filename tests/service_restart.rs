//! In-process restarts on a manual clock: proactive windows that closed while the server was
//! down fire once on start, and never again on the next start.

mod common;

use std::sync::Arc;

use serde_json::json;
use tripwire::model::{Span, Timestamp, TriggerDefinition};
use tripwire::service::clock::ManualClock;
use tripwire::service::{Service, ServiceConfig};

async fn start(data: &std::path::Path, clock: &ManualClock) -> Service {
    let mut config = ServiceConfig::new(data);
    config.clock = Arc::new(clock.clone());
    Service::start(config).await.unwrap()
}

fn firings(service: &Service) -> Vec<(String, Timestamp)> {
    let mut all: Vec<(String, Timestamp)> =
        service.store().firings(1000, |_| true).unwrap().into_iter().map(|f| (f.trigger, f.at)).collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_that_closed_while_down_fire_once_on_start() {
    let data = common::temp_dir("proactive-restart");
    let t0 = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
    let clock = ManualClock::new(t0);
    let service = start(&data, &clock).await;
    let def = TriggerDefinition::from_json(
        &json!({"id": "heartbeat-missing", "trigger": {"posture": "Proactive", "expect": ["heartbeat"], "within": 30}}),
        &tripwire::model::JsonPath::root(),
    )
    .unwrap();
    service.put_trigger(def, true).await.unwrap();
    clock.advance(Span::seconds(10));
    service.tick().await.unwrap();
    assert!(firings(&service).is_empty());
    service.shutdown().await;
    drop(service);

    // Down for 100 s: the windows [0, 30), [30, 60) and [60, 90) closed meanwhile.
    clock.advance(Span::seconds(100));
    let service = start(&data, &clock).await;
    service.tick().await.unwrap();
    let fired = firings(&service);
    let ends: Vec<i64> = fired.iter().map(|(_, at)| (at.as_micros() - t0.as_micros()) / 1_000_000).collect();
    assert_eq!(ends, [30, 60, 90]);
    service.shutdown().await;
    drop(service);

    let service = start(&data, &clock).await;
    service.tick().await.unwrap();
    assert_eq!(firings(&service).len(), 3, "nothing fires twice after another restart");
    clock.advance(Span::seconds(30));
    service.tick().await.unwrap();
    assert_eq!(firings(&service).len(), 4, "and the schedule goes on");
    service.shutdown().await;
    drop(service);
    let _ = std::fs::remove_dir_all(&data);
}
