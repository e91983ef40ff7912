//! Rate limits against the real server binary with a worker: a static limit of 3 per second
//! starts 12 queued runs at 3 per second; a dynamic per-user limit throttles one user and not
//! another, and what was taken survives a restart; registering, changing and removing limits
//! is refused with what to fix where it would strand runs.

#![allow(clippy::disallowed_methods)] // tests wait on the wall clock

mod common;

use std::process::Command;

use serde_json::{json, Value};
use tripwire::client::{Client, ClientError};
use tripwire::flow::{Flow, FlowContext, Worker};
use tripwire::model::{RateDuration, RateLimitKind, RateLimitUse, RunState, StateReason};
use uuid::Uuid;

use common::{temp_dir, wait_for_run, Http, Server};

const BIN: &str = env!("CARGO_BIN_EXE_tripwire");

fn quick(name: &str) -> Flow {
    Flow::new(name, |ctx: FlowContext, _: Value| async move { Ok(ctx.run_id()) })
}

fn params(user: &str) -> Option<serde_json::Map<String, Value>> {
    Some(json!({"user": user}).as_object().unwrap().clone())
}

#[tokio::test]
async fn a_static_limit_of_3_per_second_starts_12_runs_at_3_per_second() {
    let data = temp_dir("rate-static");
    let server = Server::start(&data);
    let client = Client::new(&server.api).unwrap();
    let made = client.put_rate_limit("three-per-second", 3, RateDuration::Second).await.unwrap();
    assert!(made.created);
    let flow = quick("throttled").rate_limit(RateLimitUse::static_key("three-per-second", 1));
    let worker = Worker::new(client.clone()).slots(12).flow(flow, []).start().await.unwrap();

    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(client.create_run("throttled", None).await.unwrap().id);
    }
    // While they go, the waiting ones say why, and the key shows what is taken.
    // The last run waits at least 3 s: it is seen waiting, saying why.
    let waiting =
        wait_for_run(&client, ids[11], "it to wait on the limit", |r| r.reason == Some(StateReason::RateLimited)).await;
    assert_eq!(waiting.state, RunState::Scheduled);
    let why = waiting.waiting.clone().unwrap_or_default();
    assert!(why.contains("rate limit `three-per-second` is used up (3 of 3 per second taken"), "{waiting:#?}");
    assert!(waiting.not_before.is_some(), "{waiting:#?}");
    let limits = client.rate_limits().await.unwrap();
    assert_eq!(limits.len(), 1);
    assert!(limits[0].used <= 3 && limits[0].remaining == 3 - limits[0].used, "{limits:?}");

    let mut started = Vec::new();
    for id in &ids {
        let run = wait_for_run(&client, *id, "completion", |r| r.is_final()).await;
        assert_eq!(run.state, RunState::Completed, "{run:#?}");
        assert!(run.waiting.is_none() && run.reason.is_none(), "{run:#?}");
        started.push(run.started.unwrap());
    }
    started.sort();
    // The first wait on the limit is announced as an event (later re-checks are not).
    let http = Http::new(&server.api);
    let filter =
        json!({"filter": {"resource": {"id": [format!("tripwire.run.{}", ids[11])]}, "order": "ASC"}, "limit": 100});
    let (_, events) = http.post("/events/filter", filter).await;
    let events = events["events"].as_array().unwrap();
    let names: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["tripwire.run.scheduled", "tripwire.run.scheduled", "tripwire.run.running", "tripwire.run.completed"]
    );
    assert_eq!(events[1]["payload"]["reason"], "rate_limited", "{events:?}");
    assert!(events[1]["payload"]["waiting"].as_str().unwrap().contains("three-per-second"));
    // Never a fourth start within a second of the first of three.
    for i in 0..started.len() - 3 {
        let gap = started[i + 3].since(started[i]).as_secs_f64();
        assert!(gap >= 0.95, "runs {i} and {} started {gap:.3} s apart: {started:?}", i + 3);
    }
    let span = started[11].since(started[0]).as_secs_f64();
    assert!((2.95..8.0).contains(&span), "12 runs at 3 per second take 3 s or a little more, not {span:.3} s");
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_dynamic_per_user_limit_throttles_one_user_and_survives_a_restart() {
    let data = temp_dir("rate-dynamic");
    let server = Server::start(&data);
    let client = Client::new(&server.api).unwrap();
    let per_user = RateLimitUse::dynamic_key("{{ params.user }}", 1, 2, RateDuration::Minute);
    let flow = quick("per-user").rate_limit(per_user.clone());
    let worker = Worker::new(client.clone()).slots(8).flow(flow.clone(), []).start().await.unwrap();

    let alice: Vec<Uuid> = {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(client.create_run("per-user", params("alice")).await.unwrap().id);
        }
        ids
    };
    let bob = [
        client.create_run("per-user", params("bob")).await.unwrap().id,
        client.create_run("per-user", params("bob")).await.unwrap().id,
    ];
    for id in alice[..2].iter().chain(&bob) {
        assert_eq!(wait_for_run(&client, *id, "completion", |r| r.is_final()).await.state, RunState::Completed);
    }
    let third = wait_for_run(&client, alice[2], "it to wait", |r| r.reason == Some(StateReason::RateLimited)).await;
    assert_eq!(third.state, RunState::Scheduled);
    let why = third.waiting.clone().unwrap();
    assert!(why.contains("rate limit `alice` is used up (2 of 2 per minute taken"), "{why}");
    let limits = client.rate_limits().await.unwrap();
    let by_key = |k: &str| limits.iter().find(|l| l.key == k).unwrap_or_else(|| panic!("{k} in {limits:?}")).clone();
    let a = by_key("alice");
    assert_eq!((a.kind, a.used, a.remaining, a.limit), (RateLimitKind::Dynamic, 2, 0, 2));
    assert_eq!(by_key("bob").remaining, 0);
    worker.stop().await.unwrap();

    // What was taken is stored with the claims: a restart does not give the window back.
    assert!(server.terminate());
    let server = Server::start(&data);
    let client = Client::new(&server.api).unwrap();
    let worker = Worker::new(client.clone()).slots(8).flow(flow, []).start().await.unwrap();
    let carol = client.create_run("per-user", params("carol")).await.unwrap().id;
    assert_eq!(wait_for_run(&client, carol, "completion", |r| r.is_final()).await.state, RunState::Completed);
    let still = client.run(alice[2]).await.unwrap();
    assert_eq!((still.state, still.reason), (RunState::Scheduled, Some(StateReason::RateLimited)), "{still:#?}");
    let limits = client.rate_limits().await.unwrap();
    assert!(limits.iter().any(|l| l.key == "alice" && l.remaining == 0), "{limits:?}");
    // A key that does not render fails the run, saying why.
    let mut no_user = serde_json::Map::new();
    no_user.insert("other".into(), json!(1));
    let failed = client.create_run("per-user", Some(no_user)).await.unwrap();
    assert_eq!((failed.state, failed.reason), (RunState::Failed, Some(StateReason::RateLimitKeyError)));
    assert!(failed.error.unwrap().contains("the rate limit key did not render"));
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn limits_that_would_strand_runs_are_refused_with_what_to_fix() {
    let data = temp_dir("rate-refusals");
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    let client = Client::new(&server.api).unwrap();

    // A deployment naming a static key that does not exist: 422 saying how to make it.
    let (status, body) =
        http.put("/deployments/sync", json!({"rate_limits": [{"static_key": "github-api", "units": 2}]})).await;
    assert_eq!(status, 422, "{body}");
    let text = body["error"].to_string();
    assert!(
        text.contains("$.rate_limits[0].static_key") && text.contains("there is no rate limit `github-api`"),
        "{text}"
    );

    let cli = |args: &[&str]| {
        let out =
            Command::new(BIN).args(args).args(["--api", &server.api]).env_remove("TRIPWIRE_API_KEY").output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    assert_eq!(
        cli(&["rate-limits", "put", "github-api", "5000/hour"]),
        (true, "created github-api: 5000 per hour\n".into())
    );
    let (ok, text) = cli(&["rate-limits", "put", "github-api", "5000 per hour"]);
    assert!(!ok && text.contains("LIMIT/DURATION"), "{text}");
    let (status, body) =
        http.put("/deployments/sync", json!({"rate_limits": [{"static_key": "github-api", "units": 2}]})).await;
    assert_eq!(status, 201, "{body}");

    // Units that can never fit: at registration, and when the quota is lowered under them.
    let (status, body) =
        http.put("/deployments/greedy", json!({"rate_limits": [{"static_key": "github-api", "units": 6000}]})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]
        .to_string()
        .contains("6000 units per run can never fit `github-api`'s quota of 5000 per hour"));
    let (status, body) = http.put("/rate-limits/github-api", json!({"limit": 1, "duration": "hour"})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].to_string().contains("`sync` takes 2"), "{body}");
    let (status, body) = http.put("/rate-limits/github-api", json!({"limit": 4000, "duration": "MINUTE"})).await;
    assert_eq!((status, &body["limit"], &body["duration"]), (200, &json!(4000), &json!("minute")), "{body}");

    // Removing a key a deployment takes from: 409 naming it; then allowed.
    let (status, body) = http.delete("/rate-limits/github-api").await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("in_use")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("`sync`"), "{body}");
    assert_eq!(http.delete("/deployments/sync").await.0, 204);
    let (ok, text) = cli(&["rate-limits", "list"]);
    assert!(ok && text.contains("github-api") && text.contains("4000/minute"), "{text}");
    assert_eq!(cli(&["rate-limits", "delete", "github-api"]), (true, "deleted github-api\n".into()));
    assert!(matches!(client.delete_rate_limit("github-api").await, Err(ClientError::Api { status: 404, .. })));

    // Bad quotas and keys name the field.
    for (path, body, field) in [
        ("/rate-limits/k", json!({"limit": 0, "duration": "second"}), "$.limit"),
        ("/rate-limits/k", json!({"limit": 5, "duration": "fortnight"}), "$.duration"),
        ("/rate-limits/k", json!({"limit": 5}), "$"),
        ("/rate-limits/k", json!({"limit": 5, "duration": "day", "burst": 1}), "burst"),
        ("/rate-limits/a%20b", json!({"limit": 5, "duration": "day"}), "$.key"),
        ("/rate-limits/k", json!({"limit": 1_000_000_001u64, "duration": "day"}), "$.limit"),
    ] {
        let (status, answer) = http.put(path, body.clone()).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert!(answer["error"].to_string().contains(field), "{path} {body}: {answer}");
    }
    let (status, body) =
        http.put("/deployments/d", json!({"rate_limits": [{"dynamic_key": "{{ params.user }}", "limit": 2}]})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].to_string().contains("$.rate_limits[0].duration"), "{body}");
    let (status, body) = http
        .put(
            "/deployments/d",
            json!({"rate_limits": [{"dynamic_key": "{{ parms.user }}", "limit": 2, "duration": "day"}]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].to_string().contains("$.rate_limits[0].dynamic_key"), "{body}");
    let many: Vec<Value> =
        (0..17).map(|i| json!({"dynamic_key": format!("k{i}"), "limit": 1, "duration": "day"})).collect();
    let (status, body) = http.put("/deployments/d", json!({"rate_limits": many})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].to_string().contains("at most 16"), "{body}");
}
