//! `Client::subscribe` against the real server binary: when the server restarts (and when it
//! kills the process outright), the subscription reconnects on its own and resumes without a
//! gap or a duplicate; a subscription begun without backfill never gets older events.

#![allow(clippy::disallowed_methods)] // tests wait on the wall clock

mod common;

use std::time::Duration;

use serde_json::json;
use tripwire::client::{Client, Subscription};
use tripwire::model::{NewEvent, Resource};

use common::{temp_dir, Server};

async fn emit(client: &Client, names: impl IntoIterator<Item = String>) {
    for name in names {
        client.emit(NewEvent::new(name, Resource::new("subscriber-test"))).await.unwrap();
    }
}

fn names(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|n| format!("sub.{n}")).collect()
}

/// The next `n` events' names (at most 30 s).
async fn read(subscription: &mut Subscription, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(30), subscription.next()).await;
        let event = next.unwrap_or_else(|_| panic!("no event within 30 s after {got:?}"));
        got.push(event.expect("the subscription goes on").unwrap().event);
    }
    got
}

#[tokio::test]
async fn a_subscription_resumes_after_restarts_without_a_gap_or_a_duplicate() {
    let data = temp_dir("subscribe-reconnect");
    let server = Server::start(&data);
    let addr = server.addr();
    let client = Client::new(&server.api).unwrap();
    emit(&client, ["sub.before".to_owned()]).await;
    let mut subscription = client.subscribe(&json!({"event": {"prefix": ["sub."]}}), false).await.unwrap();
    emit(&client, names(1..=5)).await;
    assert_eq!(read(&mut subscription, 5).await, names(1..=5));

    // A clean restart: events accepted before the subscriber is back come from the backfill.
    assert!(server.terminate());
    let server = Server::start_on(&data, &addr);
    // A new client: the old one's pooled connection went with the server.
    let client = Client::new(&server.api).unwrap();
    emit(&client, names(6..=10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    emit(&client, names(11..=15)).await;
    assert_eq!(read(&mut subscription, 10).await, names(6..=15), "no gap, no duplicate, nothing from before");

    // SIGKILL: the connection just drops.
    server.kill();
    let server = Server::start_on(&data, &addr);
    let client = Client::new(&server.api).unwrap();
    emit(&client, names(16..=20)).await;
    assert_eq!(read(&mut subscription, 5).await, names(16..=20));
    assert!(subscription.reconnects() >= 2, "reconnected {} times", subscription.reconnects());

    // Nothing else is pending: the next event is the next one sent.
    emit(&client, ["sub.last".to_owned()]).await;
    assert_eq!(read(&mut subscription, 1).await, ["sub.last"]);
    drop(server);
}

#[tokio::test]
async fn a_refused_subscription_is_not_retried() {
    let data = temp_dir("subscribe-refused");
    let server = Server::start(&data);
    let client = Client::new(&server.api).unwrap();
    let mut bad = client.subscribe(&json!({"event": {"nmae": ["x"]}}), false).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), bad.next()).await.unwrap().unwrap().unwrap_err();
    assert!(err.to_string().contains("nmae"), "{err}");
    assert_eq!(bad.reconnects(), 0);
}
