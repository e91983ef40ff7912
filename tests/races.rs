//! The run controls under real races, against the server binary: several workers claiming in
//! parallel with a per-key limit above one, a required label and a rate limit; a server
//! restarted (SIGKILL) with runs in flight; leases lapsing while completions arrive. Each run
//! ends exactly once, and no limit is ever exceeded, as the server's own timestamps show.

#![allow(clippy::disallowed_methods)] // tests wait on the wall clock

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tripwire::client::{Client, RunQuery};
use tripwire::flow::{Flow, FlowContext, Worker};
use tripwire::model::{Concurrency, DesiredLabel, RateDuration, RateLimitUse, Run, RunState, Timestamp};
use uuid::Uuid;

use common::{temp_dir, Http, Server};

/// How many times each run's flow was executed.
type Executions = Arc<Mutex<HashMap<Uuid, u32>>>;

/// A flow that counts its executions and takes `work`.
fn counted(name: &str, executions: &Executions, work: Duration) -> Flow {
    let executions = executions.clone();
    Flow::new(name, move |ctx: FlowContext, _: Value| {
        *executions.lock().unwrap().entry(ctx.run_id()).or_default() += 1;
        async move {
            tokio::time::sleep(work).await;
            Ok(())
        }
    })
}

/// Waits until every run of `deployment` is final (at most 60 s); answers them.
async fn all_final(client: &Client, deployment: &str, n: usize) -> Vec<Run> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let runs = client.runs(RunQuery::new().deployment(deployment).limit(1000)).await.unwrap();
        if runs.len() == n && runs.iter().all(Run::is_final) {
            return runs;
        }
        let states: Vec<RunState> = runs.iter().map(|r| r.state).collect();
        assert!(tokio::time::Instant::now() < deadline, "runs of {deployment} not final after 60 s: {states:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The most runs of `runs` that ran at the same instant (by the server's started/finished).
fn most_at_once<'a>(runs: impl IntoIterator<Item = &'a Run>) -> usize {
    let mut edges: Vec<(Timestamp, i32)> = Vec::new();
    for run in runs {
        edges.push((run.started.unwrap(), 1));
        edges.push((run.finished.unwrap(), -1));
    }
    // An end at the same instant as a start frees the slot first.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

fn exactly_once(executions: &Executions, runs: &[Run]) {
    let executions = executions.lock().unwrap();
    for run in runs {
        assert_eq!((run.state, run.attempt), (RunState::Completed, 1), "{run:#?}");
        assert_eq!(executions.get(&run.id), Some(&1), "run {} executed {:?} times", run.id, executions.get(&run.id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_workers_keep_the_per_key_limit_the_required_label_and_the_rate_limit() {
    let data = temp_dir("race-parallel");
    let server = Server::start(&data);
    let client = Client::new(&server.api).unwrap();
    client.put_rate_limit("race-api", 5, RateDuration::Second).await.unwrap();
    let executions: Executions = Arc::default();
    let flow = counted("race", &executions, Duration::from_millis(150))
        .concurrency(Concurrency::new("{{ params.user }}", 2))
        .desired_label("region", DesiredLabel::required("eu"))
        .rate_limit(RateLimitUse::static_key("race-api", 1));
    // Three workers claim in parallel; only the two in the EU may take these runs.
    let mut workers = Vec::new();
    for (name, region) in [("eu-1", "eu"), ("eu-2", "eu"), ("us-1", "us")] {
        let worker = Worker::new(client.clone()).name(name).slots(4).label("region", region).flow(flow.clone(), []);
        workers.push(worker.start().await.unwrap());
    }
    for n in 0..24 {
        let user = ["ann", "bob", "cy"][n % 3];
        client.create_run("race", json!({"user": user}).as_object().cloned()).await.unwrap();
    }
    let runs = all_final(&client, "race", 24).await;
    for worker in workers {
        worker.stop().await.unwrap();
    }
    exactly_once(&executions, &runs);
    assert!(runs.iter().all(|r| r.worker.as_deref() != Some("us-1")), "a required label is never violated");
    for user in ["ann", "bob", "cy"] {
        let theirs: Vec<&Run> = runs.iter().filter(|r| r.parameters["user"] == user).collect();
        assert!(most_at_once(theirs.iter().copied()) <= 2, "at most 2 runs of {user} at once");
    }
    assert!(most_at_once(&runs) >= 3, "the users' runs did run side by side");
    // The rate limit's windows open at their first claim and last a second: grouping the
    // claims (started) that way, no window holds more than 5.
    let mut starts: Vec<Timestamp> = runs.iter().map(|r| r.started.unwrap()).collect();
    starts.sort();
    let mut window = (starts[0], 0);
    for start in starts {
        if start.since(window.0).as_secs_f64() >= 1.0 {
            window = (start, 0);
        }
        window.1 += 1;
        assert!(window.1 <= 5, "more than 5 claims in the window from {}", window.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_with_runs_in_flight_completes_each_once_within_its_limit() {
    let data = temp_dir("race-restart");
    let server = Server::start(&data);
    let addr = server.addr();
    let client = Client::new(&server.api).unwrap();
    let executions: Executions = Arc::default();
    let flow = counted("in-flight", &executions, Duration::from_millis(1500)).concurrency_limit(2);
    let worker = Worker::new(client.clone()).slots(4).flow(flow, []).start().await.unwrap();
    for _ in 0..6 {
        client.create_run("in-flight", None).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let running = client.runs(RunQuery::new().deployment("in-flight").state(RunState::Running)).await.unwrap();
        if running.len() == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "two runs never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SIGKILL mid-run; the worker's heartbeats and results fail until it is back.
    server.kill();
    let server = Server::start_on(&data, &addr);
    let client = Client::new(&server.api).unwrap();
    let runs = all_final(&client, "in-flight", 6).await;
    worker.stop().await.unwrap();
    exactly_once(&executions, &runs);
    assert!(most_at_once(&runs) <= 2, "the limit held across the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_completion_arriving_as_the_lease_lapses_counts_once_or_not_at_all() {
    let data = temp_dir("race-lease");
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    assert_eq!(http.post("/deployments", json!({"name": "lapsing"})).await.0, 201);
    let runs = 20;
    for _ in 0..runs {
        assert_eq!(http.post("/deployments/lapsing/runs", json!({})).await.0, 201);
    }
    // The first worker holds every run for a 1 s lease and never heartbeats; it reports each
    // result around the moment its lease lapses (the server checks leases every 250 ms).
    let claim = json!({"worker": "slow", "deployments": ["lapsing"], "limit": runs, "lease_seconds": 1});
    let (status, claimed) = http.post("/runs/claim", claim).await;
    assert_eq!((status, claimed.as_array().unwrap().len()), (200, runs), "{claimed}");
    let ids: Vec<String> =
        claimed.as_array().unwrap().iter().map(|c| c["run"]["id"].as_str().unwrap().to_owned()).collect();
    let mut reports = tokio::task::JoinSet::new();
    for (n, id) in ids.iter().enumerate() {
        let (http, id) = (Http::new(&server.api), id.clone());
        // From 0.8 s to 1.4 s after the claim, 30 ms apart.
        let at = Duration::from_millis(800 + 30 * n as u64);
        reports.spawn(async move {
            tokio::time::sleep(at).await;
            let (status, body) =
                http.post(&format!("/runs/{id}/complete"), json!({"worker": "slow", "output": "slow"})).await;
            (id, status, body)
        });
    }
    let mut accepted = HashMap::new();
    while let Some(report) = reports.join_next().await {
        let (id, status, body) = report.unwrap();
        assert!(status == 200 || (status == 409 && body["error"]["code"] == "run_not_held"), "{status} {body}");
        accepted.insert(id, status == 200);
    }
    // A second worker takes whatever went back to the queue, and completes it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut taken = 0;
    while taken < accepted.values().filter(|a| !**a).count() {
        let claim = json!({"worker": "fast", "deployments": ["lapsing"], "limit": runs, "wait_seconds": 1});
        let (_, claimed) = http.post("/runs/claim", claim).await;
        for c in claimed.as_array().unwrap() {
            let id = c["run"]["id"].as_str().unwrap();
            assert_eq!(accepted.get(id), Some(&false), "a completed run was handed out again: {c}");
            let (status, body) =
                http.post(&format!("/runs/{id}/complete"), json!({"worker": "fast", "output": "fast"})).await;
            assert_eq!(status, 200, "{body}");
            taken += 1;
        }
        assert!(tokio::time::Instant::now() < deadline, "the lapsed runs were not handed out again");
    }
    let (_, all) = http.get("/runs?deployment=lapsing&limit=1000").await;
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), runs);
    for run in all {
        let id = run["id"].as_str().unwrap();
        let expected = if accepted[id] { "slow" } else { "fast" };
        assert_eq!((run["state"].as_str(), run["output"].as_str()), (Some("Completed"), Some(expected)), "{run}");
    }
    // Both outcomes happened: some completions beat the lapse, some came too late.
    let beat = accepted.values().filter(|a| **a).count();
    assert!(beat > 0 && beat < runs, "{beat} of {runs} completions beat the lapse");
    // A late result changes nothing: the run completed once, with the second worker's output.
    let (status, _) =
        http.post(&format!("/runs/{}/complete", ids[runs - 1]), json!({"worker": "slow", "output": "x"})).await;
    assert_eq!(status, 409);
}
