//! Crash test: the server is killed with SIGKILL (by a `kill` child process) in the middle of
//! a stream of events from several concurrent clients, then restarted on the same data dir.
//! Every acknowledged event must be there, and every firing must have produced exactly one
//! run: none lost, none repeated.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use common::{temp_dir, Http, Server};
use serde_json::{json, Value};

async fn all_events(http: &Http) -> Vec<Value> {
    let mut out = Vec::new();
    let mut page: Option<u64> = None;
    loop {
        let path = match page {
            Some(p) => format!("/events?limit=1000&page={p}"),
            None => "/events?limit=1000".to_owned(),
        };
        let (status, body) = http.get(&path).await;
        assert_eq!(status, 200, "{body}");
        out.extend(body["events"].as_array().unwrap().iter().cloned());
        match body["next_page"].as_u64() {
            Some(p) => page = Some(p),
            None => return out,
        }
    }
}

async fn all_runs(http: &Http) -> Vec<Value> {
    let (status, body) = http.get("/runs?limit=1000").await;
    assert_eq!(status, 200);
    body.as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acknowledged_event_and_repeats_no_firing() {
    let data = temp_dir("crash");
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    assert_eq!(http.post("/deployments", json!({"name": "on-tick"})).await.0, 201);
    assert_eq!(http.post("/deployments", json!({"name": "pairs"})).await.0, 201);
    // Every `tick` fires (one run each); `b` after `a` per key fires once per pair.
    let every = json!({"id": "every-tick", "trigger": {"expect": ["tick"]}, "deployment": "on-tick",
                       "parameters": {"event_id": "{{ event.id }}"}});
    let pairs = json!({"id": "pairs", "trigger": {"after": ["a"], "expect": ["b"], "for_each": ["prefect.resource.id"], "within": 3600},
                       "deployment": "pairs", "parameters": {"key": "{{ event.resource.id }}"}});
    assert_eq!(http.post("/triggers", every).await.0, 201);
    assert_eq!(http.post("/triggers", pairs).await.0, 201);

    let acked: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let api = server.api.clone();
    let mut clients = Vec::new();
    for client in 0..4 {
        let acked = acked.clone();
        let api = api.clone();
        clients.push(tokio::spawn(async move {
            let http = Http::new(&api);
            for i in 0..10_000 {
                let key = format!("k{client}-{}", i / 2);
                let batch = json!([
                    {"event": "tick", "resource": {"prefect.resource.id": format!("c{client}")}, "payload": {"i": i}},
                    {"event": if i % 2 == 0 { "a" } else { "b" }, "resource": {"prefect.resource.id": key}}
                ]);
                let resp = reqwest::Client::new().post(format!("{api}/events")).json(&batch).send().await;
                match resp {
                    Ok(r) if r.status().is_success() => {
                        let body: Value = r.json().await.unwrap();
                        let mut a = acked.lock().unwrap();
                        for id in body["ids"].as_array().unwrap() {
                            a.push(id.as_str().unwrap().to_owned());
                        }
                    }
                    Ok(r) if r.status().as_u16() == 503 => continue, // pushed back: not acknowledged
                    _ => return,                                     // the server is gone
                }
                let _ = &http;
            }
        }));
    }
    // Let the stream run, then kill the server from a child process mid-stream.
    for _ in 0..1200 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if acked.lock().unwrap().len() >= 600 {
            break;
        }
    }
    let pid = server.child.id().to_string();
    let status = std::process::Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    assert!(status.success());
    for c in clients {
        let _ = c.await;
    }
    drop(server);
    let acked: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(acked.len() >= 600, "only {} events acknowledged within 60 s", acked.len());
    eprintln!("{} events acknowledged before the kill", acked.len());

    let server = Server::start(&data);
    let http = Http::new(&server.api);
    let events = all_events(&http).await;
    let stored: BTreeSet<String> = events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    let lost: Vec<&String> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "{} acknowledged events lost, e.g. {:?}", lost.len(), &lost[..lost.len().min(3)]);

    // One run per stored tick, each for a different tick, and none for anything else.
    let ticks: BTreeSet<String> =
        events.iter().filter(|e| e["event"] == "tick").map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    let runs = all_runs(&http).await;
    assert!(runs.len() < 1000, "more runs than one page holds; lower the kill threshold");
    let mut per_tick: BTreeMap<String, usize> = BTreeMap::new();
    let mut pair_runs = 0;
    for r in &runs {
        match r["deployment"].as_str().unwrap() {
            "on-tick" => *per_tick.entry(r["parameters"]["event_id"].as_str().unwrap().to_owned()).or_default() += 1,
            _ => pair_runs += 1,
        }
    }
    assert!(per_tick.values().all(|n| *n == 1), "a firing produced more than one run");
    assert_eq!(per_tick.keys().cloned().collect::<BTreeSet<_>>(), ticks, "every tick fired exactly once");
    // Each complete pair (a then b for one key, both stored) fired once.
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events.iter().rev() {
        if e["event"] != "tick" {
            by_key
                .entry(e["resource"]["prefect.resource.id"].as_str().unwrap().to_owned())
                .or_default()
                .push(e["event"].as_str().unwrap().to_owned());
        }
    }
    let complete_pairs = by_key.values().filter(|names| names.len() == 2).count();
    assert_eq!(pair_runs, complete_pairs);

    // And the restarted server keeps working from the recovered state.
    let (status, _) =
        http.post("/events", json!({"event": "tick", "resource": {"prefect.resource.id": "after"}})).await;
    assert_eq!(status, 200);
    assert_eq!(all_runs(&http).await.len(), runs.len() + 1);
    let _ = std::fs::remove_dir_all(&data);
}
