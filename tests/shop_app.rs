//! The shop example (`examples/shop.rs`) in embedded mode on a virtual clock: its events are
//! emitted right after `Worker::start` and none is lost; the proactive cart trigger fires once
//! its window has passed, for the abandoned cart only; the payment trigger fires for the
//! large failed payment only.

#[allow(dead_code)]
#[path = "../examples/shop.rs"]
mod shop;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tripwire::model::Timestamp;
use tripwire::prelude::*;
use tripwire::service::clock::ManualClock;
use tripwire::ServiceConfig;

const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn the_shop_reminds_the_abandoned_cart_and_alerts_the_large_payment() {
    let dir = std::env::temp_dir().join(format!("tripwire-shop-app-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let clock = ManualClock::new(Timestamp::parse("2026-03-01T12:00:00Z").unwrap());
    let tripwire =
        Embedded::start(ServiceConfig { clock: Arc::new(clock.clone()), ..ServiceConfig::new(&dir) }).await.unwrap();
    let window = shop::MIN_WINDOW;
    let worker = shop::start(&tripwire, window).await.unwrap();
    // Emitted at once: the triggers are in place when `start` returns.
    let sent = shop::shop(&tripwire).await.unwrap();

    // The payment trigger fires on the event itself, for payment 7 only.
    let alert = shop::run_caused_by(&tripwire, "alert-finance", sent.large_payment, PATIENCE).await.unwrap();
    assert_eq!(alert.state, RunState::Completed);
    assert_eq!(Value::Object(alert.parameters.clone()), json!({"payment": "payment.7", "amount": 250}));
    assert_eq!(alert.output, Some(json!({"alerted": "payment.7", "amount": 250.0})));

    // Nothing is reminded before the window ends...
    clock.advance(tripwire::model::Span::seconds(window.as_secs() as i64 - 1));
    tripwire.service().tick().await.unwrap();
    assert_eq!(tripwire.runs(RunQuery::new().deployment("remind-cart")).await.unwrap(), []);
    // ...and once it has, cart 1 (updated, never ordered) is, and cart 2 (ordered) is not.
    clock.advance(tripwire::model::Span::seconds(2));
    tripwire.service().tick().await.unwrap();
    let reminder = shop::run_caused_by(&tripwire, "remind-cart", sent.abandoned_cart, PATIENCE).await.unwrap();
    assert_eq!(reminder.state, RunState::Completed);
    assert_eq!(Value::Object(reminder.parameters.clone()), json!({"cart": "cart.1"}));
    assert_eq!(reminder.output, Some(json!({"reminded": "cart.1"})));

    worker.wait_idle().await;
    let runs = tripwire.runs(RunQuery::new()).await.unwrap();
    let mut ran: Vec<(&str, Value)> =
        runs.iter().map(|r| (r.deployment.as_str(), Value::Object(r.parameters.clone()))).collect();
    ran.sort_by_key(|(d, _)| d.to_owned());
    assert_eq!(
        ran,
        [("alert-finance", json!({"payment": "payment.7", "amount": 250})), ("remind-cart", json!({"cart": "cart.1"}))],
        "one run each: not for cart 2 nor for payment 8"
    );
    worker.stop().await.unwrap();
    tripwire.shutdown().await;
    drop(tripwire);
    let _ = std::fs::remove_dir_all(&dir);
}
