//! The service in-process on a manual clock: restarts (proactive windows that closed while
//! the server was down fire once on start, and never again), retention, and push-back.

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

async fn firings(service: &Service) -> Vec<(String, Timestamp)> {
    let mut all: Vec<(String, Timestamp)> =
        service.recent_firings(1000).await.unwrap().into_iter().map(|f| (f.trigger, f.at)).collect();
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
    assert!(firings(&service).await.is_empty());
    service.shutdown().await;
    drop(service);

    // Down for 100 s: the windows [0, 30), [30, 60) and [60, 90) closed meanwhile.
    clock.advance(Span::seconds(100));
    let service = start(&data, &clock).await;
    service.tick().await.unwrap();
    let fired = firings(&service).await;
    let ends: Vec<i64> = fired.iter().map(|(_, at)| (at.as_micros() - t0.as_micros()) / 1_000_000).collect();
    assert_eq!(ends, [30, 60, 90]);
    service.shutdown().await;
    drop(service);

    let service = start(&data, &clock).await;
    service.tick().await.unwrap();
    assert_eq!(firings(&service).await.len(), 3, "nothing fires twice after another restart");
    clock.advance(Span::seconds(30));
    service.tick().await.unwrap();
    assert_eq!(firings(&service).await.len(), 4, "and the schedule goes on");
    service.shutdown().await;
    drop(service);
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_older_than_the_retention_are_pruned() {
    let data = common::temp_dir("retention");
    let t0 = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
    let clock = ManualClock::new(t0);
    let mut config = ServiceConfig::new(&data);
    config.clock = Arc::new(clock.clone());
    config.retention = Span::seconds(3600);
    let service = Service::start(config).await.unwrap();
    let event =
        |n: u128| tripwire::model::Event::new(uuid::Uuid::from_u128(n), t0, "e", tripwire::model::Resource::new("r"));
    service.ingest(vec![event(1)]).await.unwrap();
    clock.advance(Span::seconds(1800));
    service.ingest(vec![event(2)]).await.unwrap();
    clock.advance(Span::seconds(1900));
    service.tick().await.unwrap();
    assert!(service.event(uuid::Uuid::from_u128(1)).await.unwrap().is_none(), "received 3700 s ago: pruned");
    assert!(service.event(uuid::Uuid::from_u128(2)).await.unwrap().is_some(), "received 1900 s ago: kept");
    service.shutdown().await;
    drop(service);
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_pushes_back_instead_of_dropping() {
    let data = common::temp_dir("overload");
    let mut config = ServiceConfig::new(&data);
    config.queue_capacity = 1;
    let service = Service::start(config).await.unwrap();
    let t0 = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
    let mut tasks = Vec::new();
    for p in 0..32u128 {
        let service = service.clone();
        tasks.push(tokio::spawn(async move {
            let events: Vec<_> = (0..50u128)
                .map(|i| {
                    tripwire::model::Event::new(
                        uuid::Uuid::from_u128(p * 1000 + i + 1),
                        t0,
                        "e",
                        tripwire::model::Resource::new("r"),
                    )
                })
                .collect();
            service.ingest(events).await
        }));
    }
    let mut accepted = 0u64;
    let mut pushed_back = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(report) => accepted += report.ids.len() as u64,
            Err(tripwire::service::ServiceError::Overloaded { retry_after_secs }) => {
                assert!(retry_after_secs >= 1);
                pushed_back += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(pushed_back > 0, "32 concurrent requests on a queue of one: some must be pushed back");
    assert_eq!(service.event_count().await.unwrap(), accepted, "everything acknowledged is stored, nothing else");
    service.shutdown().await;
    drop(service);
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_errors_name_the_trigger_not_only_its_index() {
    let dir = common::temp_dir("service-sync-names");
    let clock = ManualClock::new(Timestamp::parse("2026-01-01T00:00:00Z").unwrap());
    let service = start(&dir, &clock).await;
    service.put_deployment(tripwire::model::Deployment::new("ship"), false).await.unwrap();
    let good = TriggerDefinition::from_json(
        &json!({"id": "fine", "deployment": "ship", "trigger": {"expect": ["a"]}}),
        &tripwire::model::JsonPath::root(),
    )
    .unwrap();
    let broken = TriggerDefinition::from_json(
        &json!({"id": "order-paid", "deployment": "ship", "trigger": {"expect": ["b"]},
                "parameters": {"id": "{{ event.resource.id "}}),
        &tripwire::model::JsonPath::root(),
    )
    .unwrap();
    let mut elsewhere = good.clone();
    elsewhere.id = "wrong-home".into();
    elsewhere.deployment = Some("other".into());
    let err = service.sync_triggers("ship".into(), vec![good, broken, elsewhere]).await.unwrap_err().to_string();
    assert!(err.contains("$[1].parameters") && err.contains("trigger `order-paid`: "), "{err}");
    assert!(err.contains("$[2].deployment: trigger `wrong-home`: must be `ship`"), "{err}");
    // All or nothing: the good one was not installed either.
    assert!(service.deployment_triggers("ship".into()).await.unwrap().is_empty());
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_says_when_it_deletes_a_trigger_installed_with_the_api() {
    let dir = common::temp_dir("service-sync-origin");
    let clock = ManualClock::new(Timestamp::parse("2026-01-01T00:00:00Z").unwrap());
    let service = start(&dir, &clock).await;
    service.put_deployment(tripwire::model::Deployment::new("ship"), false).await.unwrap();
    let definition = |id: &str| {
        TriggerDefinition::from_json(
            &json!({"id": id, "deployment": "ship", "trigger": {"expect": ["a"]}}),
            &tripwire::model::JsonPath::root(),
        )
        .unwrap()
    };
    let (by_hand, _) = service.put_trigger(definition("by-hand"), false).await.unwrap();
    assert_eq!(by_hand.origin, Some(tripwire::model::TriggerOrigin::Api));
    let sync = service.sync_triggers("ship".into(), vec![definition("served")]).await.unwrap();
    assert_eq!(sync.deleted, ["by-hand"]);
    assert_eq!(sync.warnings.len(), 1, "{sync:?}");
    assert!(sync.warnings[0].contains("`by-hand`") && sync.warnings[0].contains("triggers API or the CLI"), "{sync:?}");
    // A trigger the workers installed goes without a word.
    let sync = service.sync_triggers("ship".into(), vec![]).await.unwrap();
    assert_eq!((sync.deleted, sync.warnings), (vec!["served".to_owned()], vec![]));
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_built_in_rust_are_held_to_the_json_rules_and_read_back() {
    use std::time::Duration;
    use tripwire::model::{EventTrigger, Trigger};
    let dir = common::temp_dir("service-rust-definitions");
    let clock = ManualClock::new(Timestamp::parse("2026-01-01T00:00:00Z").unwrap());
    let service = start(&dir, &clock).await;
    service.put_deployment(tripwire::model::Deployment::new("ship"), false).await.unwrap();
    let built = |id: &str, trigger: EventTrigger| TriggerDefinition::new(id, trigger).deployment("ship");
    // Past the JSON format's bounds: refused with the JSON path, before anything is logged.
    for (trigger, words) in [
        (EventTrigger::new().expect("a").within(Duration::MAX), "at most"),
        (EventTrigger::new().expect("a").within(Duration::from_secs(10u64.pow(12))), "at most"),
        (EventTrigger::new().expect("a").proactive().within(Duration::from_secs(5)), "at least 10 seconds"),
    ] {
        let err = service.put_trigger(built("far", trigger.clone()), false).await.unwrap_err().to_string();
        assert!(err.contains("$.trigger.within") && err.contains(words), "{err}");
        let err = service.sync_triggers("ship".into(), vec![built("far", trigger)]).await.unwrap_err().to_string();
        assert!(err.contains("$[0].trigger.within") && err.contains("trigger `far`: "), "{err}");
    }
    // Proactive with no window: stored as the JSON reading gives it, 10 seconds.
    let (record, _) =
        service.put_trigger(built("cart", EventTrigger::new().expect("a").proactive()), false).await.unwrap();
    let Trigger::Event(e) = &record.definition.trigger else { panic!("an event trigger") };
    assert_eq!(e.within, Span::seconds(10));
    // And it reads back after a restart, with an ordinary trigger beside it.
    service.put_trigger(built("fine", EventTrigger::new().expect("b")), false).await.unwrap();
    service.shutdown().await;
    drop(service);
    let service = start(&dir, &clock).await;
    let ids: Vec<String> = service.triggers().await.unwrap().into_iter().map(|r| r.definition.id).collect();
    assert_eq!(ids, ["cart", "fine"]);
    service.shutdown().await;
}

/// The id source is handed in with the clock: events without an id, runs made by hand and
/// the run-state events all draw from it, so the same inputs give the same ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_ids_come_from_the_injected_id_source() {
    use tripwire::service::clock::SequentialIds;
    let data = common::temp_dir("injected-ids");
    let clock = ManualClock::new(Timestamp::parse("2026-01-01T00:00:00Z").unwrap());
    let mut config = ServiceConfig::new(&data);
    config.clock = Arc::new(clock.clone());
    config.ids = Arc::new(SequentialIds::from(1));
    let service = Service::start(config).await.unwrap();
    let root = tripwire::model::JsonPath::root();
    let event = service.stamper().read(&json!({"event": "hello", "resource": {"prefect.resource.id": "a"}}), &root);
    let event = event.unwrap();
    assert_eq!(event.id, uuid::Uuid::from_u128(1));
    assert_eq!(event.occurred, tripwire::service::clock::Clock::now(&clock));
    service.ingest(vec![event]).await.unwrap();
    service.put_deployment(tripwire::model::Deployment::new("greet"), true).await.unwrap();
    let run = service.create_run("greet".into(), None, None).await.unwrap();
    assert_eq!(run.id, uuid::Uuid::from_u128(2));
    let (status, scheduled) = (run.state, service.event(uuid::Uuid::from_u128(3)).await.unwrap());
    assert_eq!(status, tripwire::model::RunState::Scheduled);
    assert_eq!(scheduled.map(|e| e.event), Some("tripwire.run.scheduled".to_owned()), "the run's event took id 3");
    service.shutdown().await;
}
