//! A small shop, written from the prelude alone: a proactive cart trigger (a cart updated and
//! not ordered within the window gets a reminder) and a filtered payment trigger (a failed
//! payment over 100 alerts finance). The same code runs embedded and against a server.
//!
//! ```sh
//! cargo run --example shop                                   # embedded, in a temp directory
//! tripwire serve &                                           # or against a server:
//! cargo run --example shop -- --server http://127.0.0.1:4200/api
//! ```
//!
//! Right after the worker starts it updates carts 1 and 2 (only cart 2 is ordered) and fails
//! payments 7 (250) and 8 (20). It prints `alert-finance: payment.7 failed (250)` at once and,
//! once the window (10 s; `--window SECONDS` for more) has passed,
//! `remind-cart: cart.1 was left behind`, then stops. `tests/shop_app.rs` runs it on a
//! virtual clock.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tripwire::prelude::*;
use uuid::Uuid;

/// The shortest window a proactive trigger takes.
pub const MIN_WINDOW: Duration = Duration::from_secs(10);

/// The parameters of `remind-cart`.
#[derive(Deserialize)]
pub struct Cart {
    /// The cart's resource id, e.g. `cart.1`.
    pub cart: String,
}

/// The parameters of `alert-finance`.
#[derive(Deserialize)]
pub struct Payment {
    /// The payment's resource id, e.g. `payment.7`.
    pub payment: String,
    /// Its amount.
    pub amount: f64,
}

/// Reminds the customer of a cart they left behind.
pub fn remind_cart() -> Flow {
    Flow::new("remind-cart", |ctx: FlowContext, p: Cart| async move {
        let line = format!("remind-cart: {} was left behind", p.cart);
        println!("{line}");
        ctx.log().info(line);
        Ok(json!({"reminded": p.cart}))
    })
}

/// Tells finance about a large failed payment.
pub fn alert_finance() -> Flow {
    Flow::new("alert-finance", |ctx: FlowContext, p: Payment| async move {
        let line = format!("alert-finance: {} failed ({})", p.payment, p.amount);
        println!("{line}");
        ctx.log().warning(line);
        Ok(json!({"alerted": p.payment, "amount": p.amount}))
    })
}

/// A `cart.updated` not followed by an `order.placed` for the same cart within `window`.
pub fn abandoned_cart(window: Duration) -> TriggerDefinition {
    TriggerDefinition::new(
        "abandoned-cart",
        EventTrigger::new()
            .after("cart.updated")
            .expect("order.placed")
            .for_each("prefect.resource.id")
            .proactive()
            .within(window.max(MIN_WINDOW)),
    )
    .parameters(json!({"cart": "{{ event.resource.id }}"}))
}

/// A `payment.failed` whose payload's amount is over 100.
pub fn large_failed_payment() -> TriggerDefinition {
    TriggerDefinition::new(
        "large-failed-payment",
        EventTrigger::new().expect("payment.failed").filter("payload.amount > 100"),
    )
    .parameters(json!({"payment": "{{ event.resource.id }}", "amount": "{{ event.payload.amount }}"}))
}

/// Starts the shop's worker: both flows with their triggers, registered when this returns.
pub async fn start(tripwire: &impl Tripwire, window: Duration) -> Result<WorkerHandle, ClientError> {
    Worker::new(tripwire.clone())
        .flow(remind_cart(), [abandoned_cart(window)])
        .flow(alert_finance(), [large_failed_payment()])
        .start()
        .await
}

/// The events the example sends, and the ids of those that should cause runs.
pub struct Sent {
    /// The `cart.updated` of cart 1, which is never ordered.
    pub abandoned_cart: Uuid,
    /// The `payment.failed` of payment 7 (250).
    pub large_payment: Uuid,
}

/// Carts 1 and 2 are updated, only cart 2 is ordered; payments 7 (250) and 8 (20) fail.
pub async fn shop(tripwire: &impl Tripwire) -> Result<Sent, ClientError> {
    let abandoned_cart = tripwire.emit(NewEvent::new("cart.updated", Resource::new("cart.1"))).await?;
    tripwire.emit(NewEvent::new("cart.updated", Resource::new("cart.2"))).await?;
    tripwire.emit(NewEvent::new("order.placed", Resource::new("cart.2"))).await?;
    let failed = |id: &str, amount: u32| {
        NewEvent::new("payment.failed", Resource::new(id)).payload(json!({"amount": amount, "currency": "EUR"}))
    };
    let large_payment = tripwire.emit(failed("payment.7", 250)).await?;
    tripwire.emit(failed("payment.8", 20)).await?;
    Ok(Sent { abandoned_cart, large_payment })
}

/// Waits for the run of `deployment` that `event` caused, until it is final.
pub async fn run_caused_by(
    tripwire: &impl Tripwire,
    deployment: &str,
    event: Uuid,
    timeout: Duration,
) -> Result<Run, ClientError> {
    let found = tokio::time::timeout(timeout, async {
        loop {
            let runs = tripwire.runs(RunQuery::new().deployment(deployment)).await?;
            if let Some(run) =
                runs.into_iter().find(|r| r.cause.as_ref().and_then(|c| c.triggering_event) == Some(event))
            {
                return Ok::<Run, ClientError>(run);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let run = found
        .await
        .map_err(|_| ClientError::Timeout(format!("no run of {deployment} for event {event} within {timeout:?}")))??;
    tripwire.wait_for_run(run.id, timeout).await
}

async fn serve(tripwire: impl Tripwire, window: Duration) -> Result<(), Box<dyn std::error::Error>> {
    let worker = start(&tripwire, window).await?;
    let sent = shop(&tripwire).await?; // right after `start`: nothing is lost
    let patience = window.max(MIN_WINDOW) + Duration::from_secs(30);
    let alert = run_caused_by(&tripwire, "alert-finance", sent.large_payment, patience).await?;
    let reminder = run_caused_by(&tripwire, "remind-cart", sent.abandoned_cart, patience).await?;
    eprintln!("runs: {:?} {:?}, {:?} {:?}", alert.state, alert.output, reminder.state, reminder.output);
    worker.stop().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    exit_code(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut server = None;
    let mut window = MIN_WINDOW;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--server", Some(url)) => server = Some(url),
            ("--window", Some(s)) => window = Duration::from_secs(s.parse().map_err(|e| format!("--window {s}: {e}"))?),
            _ => return Err(format!("usage: shop [--server URL] [--window SECONDS]; got `{arg}`").into()),
        }
    }
    match server {
        Some(url) => serve(Client::new(&url)?.with_env_api_key(), window).await,
        None => {
            let dir = std::env::temp_dir().join(format!("tripwire-shop-{}", std::process::id()));
            let tripwire = Embedded::open(&dir).await?;
            let served = serve(tripwire.clone(), window).await;
            tripwire.shutdown().await;
            drop(tripwire);
            let _ = std::fs::remove_dir_all(&dir);
            served
        }
    }
}
