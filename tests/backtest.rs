//! Backtests against the real binary: definitions tried over the stored events give exactly
//! what `tripwire replay` gives over the same events exported to a file, with late and
//! duplicate deliveries among them; bad requests are refused naming the field; a backtest can
//! be cancelled.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::{temp_dir, Http, Server};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_tripwire");

/// The seed's two order triggers, and a variant of the reactive one with `within: 30`.
fn definitions() -> Vec<Value> {
    let seed: Vec<Value> = serde_json::from_str(include_str!("../examples/replay/triggers.json")).unwrap();
    let mut variant = seed[0].clone();
    variant["id"] = json!("post-order-30");
    variant["trigger"]["within"] = json!(30);
    seed.into_iter().chain([variant]).collect()
}

/// The seed's events, then a few thousand more: orders created one a second, most completed
/// 5 to 60 s later (some after the 30 s window), a tenth delivered late (occurred before
/// events already sent), and every fiftieth sent twice (the second is acknowledged, not
/// stored again).
fn events() -> Vec<Value> {
    let seed = include_str!("../examples/replay/events.jsonl");
    let mut events: Vec<Value> = seed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let base = chrono::DateTime::parse_from_rfc3339("2026-01-01T01:00:00Z").unwrap();
    let at = |s: i64| (base + chrono::Duration::seconds(s)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut later = Vec::new();
    for i in 0..1500i64 {
        let user = format!("u{i}");
        let created = json!({"id": uuid(i, 1), "occurred": at(i), "event": "order.created",
                             "resource": {"prefect.resource.id": user}, "payload": {"n": i}});
        events.push(created.clone());
        if i % 50 == 0 {
            events.push(created);
        }
        if i % 4 != 3 {
            let delay = 5 + (i * 7) % 56;
            later.push((
                i + delay,
                json!({"id": uuid(i, 2), "occurred": at(i + delay), "event": "order.complete",
                                          "resource": {"prefect.resource.id": user}}),
            ));
        }
        // Completions are sent once their time has come, a tenth of them late.
        later.sort_by_key(|(t, _)| *t);
        while later.first().is_some_and(|(t, _)| *t <= i) {
            let (t, event) = later.remove(0);
            if t % 10 == 0 {
                later.push((i + 20, event));
            } else {
                events.push(event);
            }
        }
    }
    events.extend(later.into_iter().map(|(_, e)| e));
    events
}

fn uuid(i: i64, kind: u128) -> String {
    uuid::Uuid::from_u128((kind << 64) | i as u128).to_string()
}

/// Every stored event, oldest first, through the events API.
async fn export(http: &Http) -> Vec<Value> {
    let mut all = Vec::new();
    let mut page: Option<Value> = None;
    loop {
        let path = match &page {
            Some(p) => format!("/events?limit=1000&page={p}"),
            None => "/events?limit=1000".to_owned(),
        };
        let (status, answer) = http.get(&path).await;
        assert_eq!(status, 200, "{answer}");
        all.extend(answer["events"].as_array().unwrap().iter().cloned());
        match &answer["next_page"] {
            Value::Null => break,
            next => page = Some(next.clone()),
        }
    }
    all.reverse();
    all
}

/// Waits for a backtest to end; returns its record.
async fn finished(http: &Http, id: &str) -> Value {
    for _ in 0..600 {
        let (status, record) = http.get(&format!("/backtest/{id}")).await;
        assert_eq!(status, 200, "{record}");
        if record["state"] != "running" {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("backtest {id} did not end");
}

/// Every firing of a backtest, page by page.
async fn backtest_firings(http: &Http, id: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut from = 0;
    loop {
        let (status, page) = http.get(&format!("/backtest/{id}/firings?from={from}&limit=1000")).await;
        assert_eq!(status, 200, "{page}");
        all.extend(page["firings"].as_array().unwrap().iter().cloned());
        match page["next"].as_u64() {
            Some(next) => from = next as usize,
            None => return all,
        }
    }
}

/// The fields `tripwire replay` prints of a firing.
fn line(firing: &Value) -> Value {
    let mut line = json!({"trigger": firing["trigger"], "bucket": firing["bucket"], "at": firing["at"],
                          "triggering_event": firing["triggering_event"]});
    for optional in ["parameters", "error"] {
        if !firing[optional].is_null() {
            line[optional] = firing[optional].clone();
        }
    }
    line
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backtest_fires_exactly_as_replay_over_the_same_events() {
    let data = temp_dir("backtest");
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    let sent = events();
    for batch in sent.chunks(500) {
        let (status, answer) = http.post("/events", json!(batch)).await;
        assert_eq!(status, 200, "{answer}");
    }
    let stored = export(&http).await;
    let ids: BTreeSet<&str> = stored.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), stored.len(), "each event stored once");
    assert!(stored.len() > 2500 && stored.len() < sent.len(), "duplicates acknowledged, not stored again");

    // Every event stored so far (`until` defaults to the start), the clock then run on to it.
    let (status, started) = http.post("/backtest", json!({"definitions": definitions()})).await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["state"], "running", "{started}");
    let until = started["until"].as_str().unwrap().to_owned();
    let id = started["id"].as_str().unwrap().to_owned();
    // Live ingest goes on while it runs (events after `until` are not the backtest's).
    let live = {
        let http = Http::new(&server.api);
        tokio::spawn(async move {
            let mut acknowledged = 0;
            for batch in 0..20 {
                let events: Vec<Value> = (0..100)
                    .map(|i| json!({"event": "order.created", "resource": {"prefect.resource.id": format!("live-{batch}-{i}")}}))
                    .collect();
                let (status, answer) = http.post("/events", json!(events)).await;
                assert_eq!(status, 200, "{answer}");
                acknowledged += answer["ids"].as_array().unwrap().len();
            }
            acknowledged
        })
    };
    let record = finished(&http, &id).await;
    assert_eq!(live.await.unwrap(), 2000, "live ingest was answered throughout");
    assert_eq!(record["state"], "completed", "{record}");
    assert_eq!(record["events_read"].as_u64(), Some(stored.len() as u64), "{record}");
    let tested: Vec<Value> = backtest_firings(&http, &id).await.iter().map(line).collect();

    // The same definitions and events through `tripwire replay`.
    let dir = temp_dir("backtest-replay");
    let triggers = dir.join("triggers.json");
    std::fs::write(&triggers, serde_json::to_string(&definitions()).unwrap()).unwrap();
    let file = dir.join("events.jsonl");
    std::fs::write(&file, stored.iter().map(|e| e.to_string() + "\n").collect::<String>()).unwrap();
    let out = Command::new(BIN)
        .args(["replay", "--triggers"])
        .arg(&triggers)
        .arg("--events")
        .arg(&file)
        .args(["--until", &until])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let replayed: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();

    assert_eq!(tested.len(), replayed.len(), "as many firings");
    assert_eq!(tested, replayed);
    let fired = &record["summary"]["firings"];
    for trigger in ["post-order", "post-order-30", "abandoned-order"] {
        let n = replayed.iter().filter(|f| f["trigger"] == trigger).count() as u64;
        assert!(n > 0, "{trigger} fires");
        assert_eq!(fired[trigger].as_u64(), Some(n), "{record}");
    }
    assert!(
        fired["post-order-30"].as_u64() < fired["post-order"].as_u64(),
        "the 30 s window misses the slow completions: {record}"
    );

    // The CLI gives the same lines (`--json`), or readable ones and a summary.
    let cli = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["triggers", "test"])
            .arg(&triggers)
            .args(["--api", &server.api, "--until", &until])
            .args(extra)
            .env_remove("TRIPWIRE_API_KEY")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let lines: Vec<Value> = cli(&["--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines, replayed, "triggers test --json prints what replay prints");
    let readable = cli(&[]);
    assert!(readable.contains("  post-order  prefect.resource.id=123  {\"user_id\":\"123\"}"), "{readable}");
    let total = replayed.len();
    assert!(readable.contains(&format!("{total} firings over {} events", stored.len())), "{readable}");
    assert!(readable.contains("  post-order-30: ") && readable.contains(" buckets opened, "), "{readable}");

    // Why the rest did not fire: the buckets at the end, as the live view shows them.
    let (status, page) = http.get(&format!("/backtest/{id}/buckets?trigger=post-order&limit=5")).await;
    assert_eq!(status, 200, "{page}");
    let open = record["summary"]["open_buckets"]["post-order"].as_u64().unwrap_or(0);
    assert_eq!(page["buckets"].as_array().unwrap().len() as u64, open.min(5), "{page}");
    let (status, _) = http.get(&format!("/backtest/{id}/buckets?trigger=not-tried")).await;
    assert_eq!(status, 404);
    let out = Command::new(BIN)
        .args(["triggers", "buckets", "post-order", "--backtest", &id, "--api", &server.api])
        .env_remove("TRIPWIRE_API_KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["buckets"].as_array().unwrap().len() as u64, open.min(100), "{shown}");

    // Nothing was installed or run.
    let (_, triggers) = http.get("/triggers").await;
    assert_eq!(triggers, json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_installed_trigger_is_tried_with_changes_and_bad_requests_name_the_field() {
    let data = temp_dir("backtest-changes");
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    assert_eq!(http.put("/triggers/post-order", definitions()[0].clone()).await.0, 201);
    let created = |id: &str| json!({"event": "order.created", "resource": {"prefect.resource.id": id}});
    let complete = |id: &str| json!({"event": "order.complete", "resource": {"prefect.resource.id": id}});
    assert_eq!(http.post("/events", json!([created("1"), complete("1"), created("2")])).await.0, 200);

    // The installed definition with its parameters changed: the firing shows the change.
    let changes = json!({"parameters": {"who": "{{ event.resource.id }}", "user_id": null}});
    let (status, started) = http.post("/backtest", json!({"trigger": "post-order", "changes": changes})).await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap();
    let record = finished(&http, id).await;
    assert_eq!((&record["state"], &record["triggers"]), (&json!("completed"), &json!(["post-order"])), "{record}");
    let firings = backtest_firings(&http, id).await;
    let params: Vec<&Value> =
        firings.iter().filter(|f| f["trigger"] == "post-order").map(|f| &f["parameters"]).collect();
    assert!(params.contains(&&json!({"who": "1"})), "{firings:?}");
    let (_, listed) = http.get("/backtest").await;
    assert_eq!(listed[0]["id"], record["id"]);
    // User 1's bucket opened and fired, user 2's opened and waits: the summary and the
    // buckets say so.
    let summary = &record["summary"];
    assert_eq!(summary["buckets_opened"]["post-order"], 2, "{record}");
    assert_eq!(summary["open_buckets"]["post-order"], 1, "{record}");
    let (_, page) = http.get(&format!("/backtest/{id}/buckets?trigger=post-order")).await;
    assert_eq!(page["buckets"][0]["labels"]["prefect.resource.id"], "2", "{page}");

    // Refusals that say what to fix.
    let cases = [
        (json!({}), 422, "$"),
        (json!({"definitions": [], "trigger": null}), 422, "give `definitions`"),
        (json!({"trigger": "nope"}), 404, ""),
        (json!({"definitions": [{"id": "x"}]}), 400, "$.definitions[0]"),
        (
            json!({"definitions": [{"id": "x", "trigger": {"expect": ["a"]}, "parameters": {"p": "{{ evnt.id }}"}}]}),
            422,
            "$.definitions[0].parameters.p",
        ),
        (json!({"definitions": [{"id": "x", "trigger": {}}, {"id": "x", "trigger": {}}]}), 422, "$.definitions[1].id"),
        (json!({"trigger": "post-order", "changes": {"trigger": {"within": -1}}}), 400, "$.changes.trigger.within"),
        (
            json!({"trigger": "post-order", "from": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}),
            422,
            "$.from",
        ),
        (json!({"trigger": "post-order", "bogus": 1}), 400, "$"),
        (json!({"definitions": vec![definitions()[0].clone(); 101]}), 400, "at most 100"),
    ];
    for (body, status, path) in cases {
        let (got, answer) = http.post("/backtest", body.clone()).await;
        assert_eq!(got, status, "{body}: {answer}");
        if !path.is_empty() {
            assert!(answer["error"].to_string().contains(path), "{body}: {answer}");
        }
    }
    let (status, answer) = http.get(&format!("/backtest/{}", uuid::Uuid::nil())).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("not_found")));
    assert_eq!(http.get("/backtest/not-a-uuid").await.0, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backtest_can_be_cancelled_and_keeps_what_it_found() {
    let data = temp_dir("backtest-cancel");
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    let batch: Vec<Value> = (0..5000)
        .map(|i| json!({"event": "tick", "resource": {"prefect.resource.id": format!("r{}", i % 100)}}))
        .collect();
    for _ in 0..4 {
        assert_eq!(http.post("/events", json!(batch)).await.0, 200);
    }
    let every = json!({"id": "every-tick", "trigger": {"expect": ["tick"], "for_each": ["prefect.resource.id"]}});
    let (status, started) = http.post("/backtest", json!({"definitions": [every]})).await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap();
    let (status, cancelled) = http.delete(&format!("/backtest/{id}")).await;
    assert_eq!(status, 200, "{cancelled}");
    let record = finished(&http, id).await;
    assert!(["cancelled", "completed"].contains(&record["state"].as_str().unwrap()), "{record}");
    if record["state"] == "cancelled" {
        assert!(record["events_read"].as_u64().unwrap() < 20_000, "{record}");
    }
    let kept = record["summary"]["firings_kept"].as_u64().unwrap();
    assert_eq!(kept, record["summary"]["firings"]["every-tick"].as_u64().unwrap_or(0).min(10_000), "{record}");

    // A server stopped while a backtest runs stops at once (the backtest is cancelled) and
    // starts again with every event; backtests are not kept across a restart.
    let (status, _) = http.post("/backtest", json!({"definitions": [every]})).await;
    assert_eq!(status, 202);
    assert!(server.terminate(), "a clean exit while a backtest runs");
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    assert_eq!(http.get("/backtest").await, (200, json!([])));
    let (_, page) = http.post("/events/filter", json!({"limit": 1})).await;
    assert_eq!(page["total"], 20_000, "{page}");
}
