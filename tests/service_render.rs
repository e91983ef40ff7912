//! The service's rendering hop: the engine decides, the service fetches the past events a
//! firing's parameters read through its open write transaction, and the engine renders. An
//! event accepted earlier in the same command (not yet committed) renders, the event being
//! processed needs no read, and a restart (recovery decides and renders again) leaves the
//! stored firings as they were.

mod common;

use std::sync::Arc;

use serde_json::json;
use tripwire::model::{Event, JsonPath, Resource, Timestamp, TriggerDefinition};
use tripwire::service::clock::ManualClock;
use tripwire::service::{Service, ServiceConfig};
use uuid::Uuid;

fn ev(n: u128, at: Timestamp, name: &str) -> Event {
    Event::new(Uuid::from_u128(n), at, name, Resource::new("order-1"))
}

/// A dropped service lets go of its database when its core notices.
async fn start_again(config: &ServiceConfig) -> Service {
    for _ in 0..100 {
        match Service::start(config.clone()).await {
            Ok(s) => return s,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    panic!("the data does not open again");
}

#[tokio::test]
async fn parameters_read_past_events_through_the_write_transaction_and_survive_a_restart() {
    let data = common::temp_dir("service-render");
    let t0 = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
    let clock = ManualClock::new(t0);
    let mut config = ServiceConfig::new(&data);
    config.clock = Arc::new(clock.clone());
    let service = Service::start(config.clone()).await.unwrap();
    let definition = TriggerDefinition::from_json(
        &json!({"id": "seq", "trigger": {"type": "sequence", "within": 60,
                                         "triggers": [{"expect": ["a"]}, {"expect": ["b"]}]},
                "parameters": {"names": "{{ events | map(attribute='event') | join(',') }}",
                               "last": "{{ event.event }}"}}),
        &JsonPath::root(),
    )
    .unwrap();
    service.put_trigger(definition, false).await.unwrap();
    // One command: `a` is only in the write transaction when `b` fires.
    service.ingest(vec![ev(1, t0, "a"), ev(2, t0, "b")]).await.unwrap();
    // Across commands: `c` is read back from the store.
    service.ingest(vec![ev(3, t0, "a")]).await.unwrap();
    service.ingest(vec![ev(4, t0, "b")]).await.unwrap();
    async fn firings(service: &Service) -> Vec<(uuid::Uuid, Option<serde_json::Value>, Option<String>)> {
        let mut f = service.recent_firings(100).await.unwrap();
        f.sort_by_key(|f| f.triggering_event);
        f.into_iter().map(|f| (f.id, f.parameters, f.error)).collect()
    }
    let before = firings(&service).await;
    let parameters: Vec<_> = before.iter().map(|(_, p, e)| (p.clone(), e.clone())).collect();
    assert_eq!(
        parameters,
        [(Some(json!({"names": "a,b", "last": "b"})), None), (Some(json!({"names": "a,b", "last": "b"})), None)]
    );
    // As after kill -9: recovery reads the stored state back. Nothing fires
    // twice, nothing is disabled, and a new pair renders as before.
    drop(service);
    let service = start_again(&config).await;
    assert_eq!(firings(&service).await, before);
    service.ingest(vec![ev(5, t0, "a"), ev(6, t0, "b")]).await.unwrap();
    let after = firings(&service).await;
    assert_eq!(after.len(), 3);
    assert_eq!(after[2].1, Some(json!({"names": "a,b", "last": "b"})));
    assert!(service.triggers().await.unwrap().iter().all(|t| t.definition.enabled && t.error.is_none()));
    service.shutdown().await;
    let _ = std::fs::remove_dir_all(&data);
}
