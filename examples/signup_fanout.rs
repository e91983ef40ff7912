//! Hatchet's seed: one `user:signup` event runs three flows. `send_welcome_email` and
//! `grant_new_user_credits` run for every signup; `reward_referral` only when the payload
//! names a referrer (a filter over the payload, as in Hatchet's run-on-event filters).
//!
//! ```sh
//! tripwire serve                          # in one terminal
//! cargo run --example signup_fanout       # serves the three flows, then signs up two users
//! ```
//!
//! It signs up alice (referred by bob) and carol (no referrer), so the reward runs once, for
//! bob. Emit more with `tripwire emit user:signup --resource prefect.resource.id=user-dave
//! --payload '{"email": "dave@example.com"}'`. Ctrl-C stops it.

use serde::Deserialize;
use serde_json::json;
use tripwire::prelude::*;

#[derive(Deserialize)]
struct Signup {
    user: String,
    email: String,
}

#[derive(Deserialize)]
struct Referral {
    user: String,
    referrer: String,
}

/// A trigger that runs its flow on every `user:signup` (a simple single-key trigger).
fn on_signup() -> EventTrigger {
    EventTrigger::new().expect("user:signup")
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    exit_code(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    // Warnings to stderr, coloured only on a terminal.
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let client = Client::from_env()?;

    let welcome = Flow::new("send_welcome_email", |_: FlowContext, s: Signup| async move {
        println!("send_welcome_email: welcome mail sent to {} <{}>", s.user, s.email);
        Ok(json!({"sent_to": s.email}))
    });
    let credits = Flow::new("grant_new_user_credits", |_: FlowContext, s: Signup| async move {
        println!("grant_new_user_credits: 100 credits granted to {}", s.user);
        Ok(json!({"credits": 100}))
    });
    let referral = Flow::new("reward_referral", |_: FlowContext, r: Referral| async move {
        println!("reward_referral: {} rewarded for referring {}", r.referrer, r.user);
        Ok(())
    });

    let signup_params = json!({"user": "{{ event.resource.id }}", "email": "{{ event.payload.email }}"});
    let worker = Worker::new(client.clone())
        .flow(welcome, [TriggerDefinition::new("welcome-on-signup", on_signup()).parameters(signup_params.clone())])
        .flow(credits, [TriggerDefinition::new("credits-on-signup", on_signup()).parameters(signup_params)])
        .flow(
            referral,
            [TriggerDefinition::new(
                "referral-on-signup",
                on_signup().filter("payload.referred_by is defined and payload.referred_by"),
            )
            .parameters(json!({"user": "{{ event.resource.id }}", "referrer": "{{ event.payload.referred_by }}"}))],
        );
    // Registered when `start` returns: the signups below are not lost.
    let worker = worker.start().await?;

    let signups = [
        NewEvent::new("user:signup", Resource::new("alice"))
            .payload(json!({"email": "alice@example.com", "referred_by": "bob"})),
        NewEvent::new("user:signup", Resource::new("carol")).payload(json!({"email": "carol@example.com"})),
    ];
    client.emit_many(signups).await?;
    eprintln!("signed up alice (referred by bob) and carol; serving until Ctrl-C");
    tokio::signal::ctrl_c().await?;
    worker.stop().await?;
    Ok(())
}
