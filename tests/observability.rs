//! What an operator sees of the real binary: `/metrics` parsed as Prometheus text with its
//! counters moving as events arrive, fire and run, and logs that tell the story (a line per
//! firing and run change with its fields; JSON lines with `--log-format json`).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{order_trigger, temp_dir, Http, Server};
use serde_json::{json, Value};

/// One sample of the exposition: its labels, rendered `k="v",...` in order, and its value.
type Samples = BTreeMap<(String, String), f64>;

/// Parses Prometheus' text format (OpenMetrics): `name{labels} value` lines; `#` lines are
/// metadata. Fails on anything else, so that a malformed exposition fails the test.
fn parse(text: &str) -> Samples {
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with `# EOF`: {text}");
    let mut samples = Samples::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"))),
            None => (series, ""),
        };
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad name: {line}");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        samples.insert((name.to_owned(), labels.to_owned()), value);
    }
    samples
}

async fn scrape(http: &Http) -> Samples {
    let response = reqwest::get(format!("{}/metrics", http.api.trim_end_matches("/api"))).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    parse(&response.text().await.unwrap())
}

fn value(samples: &Samples, name: &str, labels: &str) -> f64 {
    samples.get(&(name.to_owned(), labels.to_owned())).copied().unwrap_or(0.0)
}

/// Waits until `check` holds for a scrape (metrics of a commit move right after it).
async fn until(http: &Http, what: &str, check: impl Fn(&Samples) -> bool) -> Samples {
    for _ in 0..100 {
        let samples = scrape(http).await;
        if check(&samples) {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} never held: {:#?}", scrape(http).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_move_as_events_arrive_fire_and_run() {
    let data = temp_dir("metrics");
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    let before = scrape(&http).await;
    assert_eq!(value(&before, "tripwire_events_accepted_total", ""), 0.0);
    for name in ["tripwire_batch_seconds_count", "tripwire_queue_depth", "tripwire_subscribers"] {
        assert!(before.keys().any(|(n, _)| n == name), "{name} is exposed: {before:#?}");
    }

    assert_eq!(http.post("/deployments", json!({"name": "post-order-complete"})).await.0, 201);
    assert_eq!(http.put("/triggers/post-order", order_trigger()).await.0, 201);
    let created = |id: &str| json!({"event": "order.created", "resource": {"prefect.resource.id": id}});
    let (status, body) = http.post("/events", json!([created("123"), created("456")])).await;
    assert_eq!(status, 200, "{body}");
    let open =
        until(&http, "two open buckets", |s| value(s, "tripwire_live_buckets", "trigger=\"post-order\"") == 2.0).await;
    assert_eq!(value(&open, "tripwire_events_accepted_total", ""), 2.0);

    let complete = json!({"event": "order.complete", "resource": {"prefect.resource.id": "123"}});
    assert_eq!(http.post("/events", complete).await.0, 200);
    let fired = until(&http, "the firing and its run", |s| {
        value(s, "tripwire_firings_total", "trigger=\"post-order\",outcome=\"run\"") == 1.0
            && value(s, "tripwire_runs_total", "deployment=\"post-order-complete\",state=\"scheduled\"") == 1.0
    })
    .await;
    assert_eq!(value(&fired, "tripwire_events_accepted_total", ""), 3.0);
    assert!(value(&fired, "tripwire_batch_commands_count", "") >= 3.0);

    // The triggers list with stats says the same: one bucket left (456's), one firing this hour.
    let mut stats = Value::Null;
    for _ in 0..100 {
        let (status, records) = http.get("/triggers?stats=true").await;
        assert_eq!(status, 200, "{records}");
        stats = records[0]["stats"].clone();
        if stats["live_buckets"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((&stats["live_buckets"], &stats["firings_last_hour"]), (&json!(1), &json!(1)), "{stats}");
    assert!(stats["last_firing"].is_string() && stats.get("firings_partial").is_none(), "{stats}");
    let (_, plain) = http.get("/triggers").await;
    assert!(plain[0].get("stats").is_none(), "only when asked for: {plain}");
    let (status, body) = http.get("/triggers?stats=maybe").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_query")), "{body}");

    // A resend is a duplicate; an invalid event a rejection with its reason.
    let (_, report) = http.get("/events?limit=1").await;
    let id = report["events"][0]["id"].clone();
    let resend = json!({"id": id, "event": "order.complete", "resource": {"prefect.resource.id": "123"}});
    assert_eq!(http.post("/events", resend).await.0, 200);
    assert_eq!(http.post("/events", json!({"event": "x"})).await.0, 400);
    let counted = until(&http, "the duplicate and the rejection", |s| {
        value(s, "tripwire_events_duplicate_total", "") == 1.0
            && value(s, "tripwire_events_rejected_total", "reason=\"invalid\"") == 1.0
    })
    .await;
    assert_eq!(value(&counted, "tripwire_events_accepted_total", ""), 3.0);

    // A worker claims the run; a subscriber is counted while it is open.
    let claim = json!({"worker": "w", "deployments": ["post-order-complete"], "wait_seconds": 0});
    let (status, claimed) = http.post("/runs/claim", claim).await;
    assert_eq!((status, claimed.as_array().map(Vec::len)), (200, Some(1)), "{claimed}");
    let subscription = tripwire::client::Client::new(&server.api).unwrap().subscribe(&json!({}), false).await.unwrap();
    let running = until(&http, "the claim and the subscriber", |s| {
        value(s, "tripwire_claims_total", "outcome=\"runs\"") == 1.0
            && value(s, "tripwire_runs_total", "deployment=\"post-order-complete\",state=\"running\"") == 1.0
            && value(s, "tripwire_subscribers", "") == 1.0
    })
    .await;
    assert_eq!(value(&running, "tripwire_claimed_runs_total", ""), 1.0);
    drop(subscription);
    until(&http, "the subscriber gone", |s| value(s, "tripwire_subscribers", "") == 0.0).await;

    // The trigger deleted: its gauge goes.
    assert_eq!(http.delete("/triggers/post-order").await.0, 204);
    until(&http, "the gauge of a deleted trigger gone", |s| {
        !s.keys().any(|(n, l)| n == "tripwire_live_buckets" && l.contains("post-order"))
    })
    .await;

    // The story in the log: a line per firing and per run change, with their fields.
    let logs = server.logs();
    let fired_line =
        logs.iter().find(|l| l.contains(" fired")).unwrap_or_else(|| panic!("no firing logged: {logs:#?}"));
    for field in ["trigger=post-order", "bucket=prefect.resource.id=123", "deployment=post-order-complete", "run="] {
        assert!(fired_line.contains(field), "{field} not in {fired_line}");
    }
    let changed = |from: &str, to: &str| {
        logs.iter().any(|l| {
            l.contains("run state") && l.contains(&format!("from=\"{from}\"")) && l.contains(&format!("to=\"{to}\""))
        })
    };
    assert!(changed("new", "scheduled") && changed("scheduled", "running"), "{logs:#?}");
    assert!(!logs.iter().any(|l| l.contains('\u{1b}')), "no colour when stderr is not a terminal");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line_with_a_line_per_request_at_debug() {
    let data = temp_dir("json-logs");
    let server = Server::launch_on(&data, "127.0.0.1:0", &["--log-format", "json"]);
    let http = Http::new(&server.api);
    assert_eq!(http.get("/triggers").await.0, 200);
    // The default level is info: no request lines.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = server.logs();
    assert!(!logs.is_empty());
    for line in &logs {
        let object: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(object["level"].is_string() && object["fields"]["message"].is_string(), "{line}");
    }
    assert!(!logs.iter().any(|l| l.contains("\"request\"")), "{logs:#?}");
    drop(server);

    let data = temp_dir("json-logs-debug");
    let server =
        Server::launch_on_with_env(&data, "127.0.0.1:0", &["--log-format", "json"], &[("RUST_LOG", "tripwire=debug")]);
    let http = Http::new(&server.api);
    assert_eq!(http.get("/triggers").await.0, 200);
    let mut request = None;
    for _ in 0..50 {
        request = server.logs().into_iter().find(|l| l.contains("\"message\":\"request\""));
        if request.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let request: Value = serde_json::from_str(&request.expect("a line per request at debug")).unwrap();
    assert_eq!(request["fields"]["method"], "GET");
    assert_eq!(request["fields"]["path"], "/api/triggers");
    assert_eq!(request["fields"]["status"], 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn firings_are_listed_newest_first_by_trigger_and_time_in_pages() {
    let data = temp_dir("firings-api");
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    assert_eq!(http.put("/deployments/d", json!({})).await.0, 201);
    for (id, expect) in [("on-a", "a.*"), ("on-b", "b")] {
        let trigger = json!({"id": id, "trigger": {"expect": [expect]}, "deployment": "d",
                             "parameters": {"who": "{{ event.resource.id }}"}});
        assert_eq!(http.put(&format!("/triggers/{id}"), trigger).await.0, 201);
    }
    let event = |name: &str, who: &str| json!({"event": name, "resource": {"prefect.resource.id": who}});
    let events = json!([event("a.1", "x1"), event("a.2", "x2"), event("b", "y"), event("a.3", "x3")]);
    assert_eq!(http.post("/events", events).await.0, 200);

    let (status, first) = http.get("/firings?limit=2").await;
    assert_eq!(status, 200, "{first}");
    let who = |page: &Value| -> Vec<String> {
        page["firings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["parameters"]["who"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(who(&first), ["x3", "y"]);
    let next = first["next_page"].as_u64().expect("a next page");
    let (_, second) = http.get(&format!("/firings?limit=2&page={next}")).await;
    assert_eq!(who(&second), ["x2", "x1"]);
    assert!(second["next_page"].is_null(), "the oldest firing was reached: {second}");

    let (_, of_b) = http.get("/firings?trigger=on-b").await;
    assert_eq!(who(&of_b), ["y"]);
    assert_eq!(of_b["firings"][0]["deployment"], "d");
    let at = of_b["firings"][0]["at"].as_str().unwrap().to_owned();
    let (_, since) = http.get(&format!("/firings?since={at}")).await;
    assert_eq!(since["firings"].as_array().unwrap().len(), 4, "all four fired in one batch, at one instant");
    let (_, none) = http.get("/firings?since=2999-01-01T00:00:00Z").await;
    assert_eq!(none["firings"], json!([]));
    let (_, until) = http.get("/firings?until=2000-01-01T00:00:00Z").await;
    assert_eq!(until["firings"], json!([]));

    for bad in ["limit=0", "limit=1001", "since=yesterday", "page=-1", "bogus=1"] {
        let (status, body) = http.get(&format!("/firings?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}
