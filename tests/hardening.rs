//! Hostile and careless input against the real server, one test per class of attack. Each
//! crosses a limit (just past it, and absurdly), checks the documented answer (a 4xx naming
//! the field, or a firing recorded with its error), then shows that the server still serves:
//! an ordinary event fires its run within a second, resident memory stays under 600 MiB, and
//! a restart on the same data directory comes back and fires again.

#![allow(clippy::disallowed_methods)] // tests wait on the wall clock and make fresh ids

mod common;

use std::time::{Duration, Instant};

use common::{temp_dir, Http, Server};
use serde_json::{json, Value};

/// A server with an ordinary canary trigger, to show it still works.
struct Target {
    server: Option<Server>,
    http: Http,
    data: common::TempDir,
    pings: u32,
}

impl Target {
    async fn start(tag: &str) -> Target {
        let data = temp_dir(tag);
        let server = Server::start(&data);
        let http = Http::new(&server.api);
        common::install_canary(&http).await;
        Target { server: Some(server), http, data, pings: 0 }
    }

    fn pid(&self) -> u32 {
        self.server.as_ref().expect("running").child.id()
    }

    /// An ordinary event fires its run within a second, and memory stayed in bounds.
    async fn still_serves(&mut self) {
        self.pings += 1;
        common::canary_fires(&self.http, self.pid(), &format!("ping-{}", self.pings)).await;
    }

    /// SIGTERM (a clean stop), then start again on the same data.
    async fn clean_restart(&mut self) {
        assert!(self.server.take().expect("running").terminate(), "a clean stop");
        let server = Server::start(&self.data);
        self.http = Http::new(&server.api);
        self.server = Some(server);
    }

    /// SIGKILL, then start again on the same data: it comes back, and still serves.
    async fn restart(&mut self) {
        self.server.take().expect("running").kill();
        let server = Server::start(&self.data);
        self.http = Http::new(&server.api);
        self.server = Some(server);
        let (status, _) = self.http.get("/events?limit=10").await;
        assert_eq!(status, 200, "stored events read back after the restart");
        self.still_serves().await;
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.server.take();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// The problem list of a 4xx answer, as one string.
fn problems(body: &Value) -> String {
    body.to_string()
}

fn nested(levels: usize) -> Value {
    let mut v = json!("bottom");
    for _ in 0..levels {
        v = json!({"d": v});
    }
    v
}

#[tokio::test]
async fn times_outside_the_representable_range_are_refused_and_far_future_windows_read_back() {
    let mut target = Target::start("hard-time").await;
    let http = &target.http;
    let pair = |within: Value| json!({"id": "late", "trigger": {"after": ["late.a"], "expect": ["late.b"], "for_each": ["prefect.resource.id"], "within": within}});
    // `within` past 100 years, and absurd: refused naming the field.
    for within in [json!(3e11), json!(1e300), json!("1e19"), json!(-1)] {
        let (status, body) = http.put("/triggers/late", pair(within.clone())).await;
        assert_eq!(status, 400, "within {within}: {body}");
        assert!(problems(&body).contains("within"), "{body}");
    }
    assert_eq!(http.put("/triggers/late", pair(json!(3600))).await.0, 201);
    // Instants outside years 1..=9999: refused naming `occurred`.
    for occurred in [
        "+10000-01-01T00:00:00Z",
        "0000-12-31T00:00:00Z",
        "0001-01-01T00:30:00+01:00",
        "99999-01-01T00:00:00Z",
        "9999-12-31T23:30:00Z",
        "9801-01-01T00:00:00Z",
    ] {
        let (status, body) = http
            .post("/events", json!({"event": "late.a", "occurred": occurred, "resource": {"prefect.resource.id": "x"}}))
            .await;
        assert_eq!(status, 400, "{occurred}: {body}");
        assert!(problems(&body).contains("occurred"), "{body}");
    }
    // The latest an event may occur, with a one-hour window after it.
    let (status, body) = http
        .post(
            "/events",
            json!({"event": "late.a", "occurred": "9800-12-31T23:30:00Z", "resource": {"prefect.resource.id": "x"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, page) = http.get("/triggers/late/buckets").await;
    assert_eq!(page["buckets"][0]["end"], "9801-01-01T00:30:00Z", "{page}");
    target.still_serves().await;
    // The stored state holds that window, through a clean stop and a kill.
    target.clean_restart().await;
    let (_, page) = target.http.get("/triggers/late/buckets").await;
    assert_eq!(page["buckets"][0]["end"], "9801-01-01T00:30:00Z", "{page}");
    target.still_serves().await;
    target.restart().await;
}

#[tokio::test]
async fn json_too_deep_or_too_big_is_refused_where_it_is_accepted() {
    let mut target = Target::start("hard-json").await;
    let http = &target.http;
    assert_eq!(http.put("/deployments/d", json!({})).await.0, 201);
    // Parameters nested 125 levels deep once made a run-state event the store could not read.
    for levels in [65, 125] {
        let (status, body) = http.post("/deployments/d/runs", json!({"parameters": {"p": nested(levels)}})).await;
        assert_eq!(status, 422, "a depth no schema states: {body}");
        assert!(problems(&body).contains("$.parameters") && problems(&body).contains("deep"), "{body}");
        let (status, body) = http
            .post(
                "/events",
                json!({"event": "deep", "resource": {"prefect.resource.id": "x"}, "payload": nested(levels)}),
            )
            .await;
        assert_eq!(status, 422, "a size or depth no schema states: {body}");
        let (status, body) = http.put("/deployments/deep", json!({"parameters": {"p": nested(levels)}})).await;
        assert_eq!(status, 422, "a size or depth no schema states: {body}");
        let (status, body) = http
            .put(
                "/triggers/deep",
                json!({"id": "deep", "trigger": {"expect": ["x"]}, "parameters": {"p": nested(levels)}}),
            )
            .await;
        assert_eq!(status, 422, "a size or depth no schema states: {body}");
    }
    // A sequence of sequences nested 62 deep once left stored state the server could not read.
    for levels in [33, 62] {
        let mut trigger = json!({"expect": ["x"]});
        for _ in 0..levels {
            trigger = json!({"type": "sequence", "triggers": [trigger]});
        }
        let (status, body) = http.put("/triggers/nested", json!({"id": "nested", "trigger": trigger})).await;
        assert_eq!(status, 422, "a size or depth no schema states: {body}");
        assert!(problems(&body).contains("deep"), "{body}");
    }
    let mut trigger = json!({"expect": ["x"]});
    for _ in 0..25 {
        trigger = json!({"type": "sequence", "triggers": [trigger]});
    }
    assert_eq!(http.put("/triggers/nested", json!({"id": "nested", "trigger": trigger})).await.0, 201);
    // Depth 60 is fine, and its run-state event reads back.
    let (status, body) = http.post("/deployments/d/runs", json!({"parameters": {"p": nested(60)}})).await;
    assert_eq!(status, 201, "{body}");
    // Parameters past 256 KiB are refused too.
    let (status, body) = http.post("/deployments/d/runs", json!({"parameters": {"p": "x".repeat(300_000)}})).await;
    assert_eq!(status, 422, "a size or depth no schema states: {body}");
    assert!(problems(&body).contains("bytes"), "{body}");
    // Defaults and a run's own parameters are each under the limit, but not together.
    assert_eq!(http.put("/deployments/big", json!({"parameters": {"a": "x".repeat(200_000)}})).await.0, 201);
    let (status, body) = http.post("/deployments/big/runs", json!({"parameters": {"b": "y".repeat(200_000)}})).await;
    assert_eq!(status, 422, "a size or depth no schema states: {body}");
    // Absurd query values get the JSON error body naming the parameter.
    for path in ["/events?limit=99999999999999999999", "/events?limit=-1", "/triggers/nested/firings?limit=1e999"] {
        let (status, body) = http.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "bad_query", "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap_or_default().contains("limit"), "{path}: {body}");
    }
    // Everything stored reads back: events, runs (with their run-state events).
    let (status, events) = http.get("/events?limit=100").await;
    assert_eq!(status, 200, "{events}");
    let (status, _) = http.get("/runs?limit=100").await;
    assert_eq!(status, 200);
    target.still_serves().await;
    // The stored state holds all of it; it must read back after a clean stop.
    target.clean_restart().await;
    target.still_serves().await;
    target.restart().await;
}

#[tokio::test]
async fn a_definition_needs_a_trigger_and_one_without_its_deployment_says_so() {
    let mut target = Target::start("hard-def").await;
    let http = &target.http;
    let (status, body) = http.put("/triggers/oops", json!({"id": "oops", "deployment": "canary"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(problems(&body).contains("`trigger` field is required"), "{body}");
    let (status, body) = http.post("/triggers", json!({"id": "oops", "deployment": "canary"})).await;
    assert_eq!(status, 400, "{body}");
    // One event does not cascade into runs.
    target.still_serves().await;
    let (_, runs) = target.http.get("/runs?limit=1000").await;
    assert_eq!(runs.as_array().unwrap().len(), 1, "only the canary's run");
    // A deployment that does not exist yet is allowed, and the answers say so.
    let later = json!({"id": "later", "trigger": {"expect": ["later.x"]}, "deployment": "not-yet"});
    let (status, record) = target.http.put("/triggers/later", later).await;
    assert_eq!(status, 201);
    assert!(record["warning"].as_str().is_some_and(|w| w.contains("not-yet")), "{record}");
    let (_, shown) = target.http.get("/triggers/later").await;
    assert!(shown["warning"].as_str().is_some(), "{shown}");
    target.http.post("/events", json!({"event": "later.x", "resource": {"prefect.resource.id": "1"}})).await;
    let (status, firings) = target.http.get("/triggers/later/firings").await;
    assert_eq!(status, 200);
    assert_eq!(firings.as_array().unwrap().len(), 1, "{firings}");
    assert!(firings[0]["error"].as_str().is_some_and(|e| e.contains("not-yet")), "{firings}");
    // Once the deployment exists the warning is gone.
    assert_eq!(target.http.put("/deployments/not-yet", json!({})).await.0, 201);
    let (_, shown) = target.http.get("/triggers/later").await;
    assert!(shown.get("warning").is_none(), "{shown}");
    target.restart().await;
}

#[tokio::test]
async fn huge_globs_and_labels_match_in_linear_time() {
    let mut target = Target::start("hard-glob").await;
    let http = &target.http;
    // A 100 KB pattern that backtracks on every character, against an 800 KB label.
    let pattern = "*a".repeat(50_000);
    let glob = json!({"id": "glob", "trigger": {"expect": ["glob.*"], "match": {"big": pattern}}});
    assert_eq!(http.put("/triggers/glob", glob).await.0, 201);
    let label = format!("{}b", "a".repeat(800_000));
    let started = Instant::now();
    let (status, body) = http
        .raw_post(
            "/events",
            json!({"event": "glob.x", "resource": {"prefect.resource.id": "g", "big": label}}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    target.still_serves().await;
    assert!(started.elapsed() < Duration::from_secs(30), "the core was held {:?}", started.elapsed());
    target.restart().await;
}

#[tokio::test]
async fn followers_of_a_leader_that_never_comes_are_capped_and_released_in_linear_time() {
    let mut target = Target::start("hard-follows").await;
    let http = &target.http;
    let follow = json!({"id": "follow", "trigger": {"expect": ["f.*"]}});
    assert_eq!(http.put("/triggers/follow", follow).await.0, 201);
    let leader = uuid::Uuid::new_v4();
    for batch in 0..12 {
        let events: Vec<Value> = (0..1000)
            .map(|i| {
                json!({"event": "f.follower", "follows": leader, "resource": {"prefect.resource.id": format!("{batch}-{i}")},
                       "occurred": "2026-01-01T00:00:00Z"})
            })
            .collect();
        let (status, body) = http.post("/events", Value::Array(events)).await;
        assert_eq!(status, 200, "{body}");
    }
    target.still_serves().await;
    // The leader arrives: the 10,000 still parked are released at once.
    let (status, _) = target
        .http
        .post("/events", json!({"id": leader, "event": "f.leader", "resource": {"prefect.resource.id": "L"}}))
        .await;
    assert_eq!(status, 200);
    target.still_serves().await;
    target.restart().await;
}

#[tokio::test]
async fn bucket_keys_are_capped_and_the_bucket_view_pages() {
    let mut target = Target::start("hard-buckets").await;
    let http = &target.http;
    let keyed = json!({"id": "keyed", "trigger": {"expect": ["k.*"], "for_each": ["prefect.resource.id"], "threshold": 3, "within": 3600}});
    assert_eq!(http.put("/triggers/keyed", keyed).await.0, 201);
    // 2,000 buckets with 100 KB keys once held 333 MB: now none is stored.
    for batch in 0..40 {
        let events: Vec<Value> = (0..5)
            .map(|i| json!({"event": "k.big", "resource": {"prefect.resource.id": format!("{batch}-{i}-{}", "x".repeat(100_000))}}))
            .collect();
        let (status, body) = http.raw_post("/events", Value::Array(events).to_string()).await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, page) = http.get("/triggers/keyed/buckets").await;
    assert_eq!(page["buckets"].as_array().unwrap().len(), 0, "keys over 1 KiB are not stored");
    // 10,000 ordinary buckets: the view answers a page at a time, with a cursor.
    for batch in 0..10 {
        let events: Vec<Value> = (0..1000)
            .map(|i| json!({"event": "k.small", "resource": {"prefect.resource.id": format!("key-{batch}-{i:04}")}}))
            .collect();
        assert_eq!(http.post("/events", Value::Array(events)).await.0, 200);
    }
    let started = Instant::now();
    let (status, page) = http.get("/triggers/keyed/buckets?limit=1000").await;
    assert_eq!(status, 200);
    assert_eq!(page["buckets"].as_array().unwrap().len(), 1000);
    let next = page["next"].as_str().expect("a next page").to_owned();
    let (_, second) = http.get(&format!("/triggers/keyed/buckets?limit=1000&after={}", urlencode(&next))).await;
    assert_eq!(second["buckets"].as_array().unwrap().len(), 1000);
    assert_ne!(second["buckets"][0]["labels"], page["buckets"][0]["labels"]);
    let (_, one) = http.get("/triggers/keyed/buckets?key=key-3-0042").await;
    assert_eq!(one["buckets"].as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one["buckets"][0]["events"][0]["event"], "k.small", "the evidence the window keeps");
    assert!(started.elapsed() < Duration::from_secs(5), "explain took {:?}", started.elapsed());
    for bad in ["limit=0", "limit=1001", "after=nope", "bogus=1"] {
        let (status, body) = http.get(&format!("/triggers/keyed/buckets?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    target.still_serves().await;
    target.restart().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn templates_that_would_allocate_without_bound_fail_their_firing_only() {
    let mut target = Target::start("hard-templates").await;
    let http = &target.http;
    assert_eq!(http.put("/deployments/t", json!({})).await.0, 201);
    let attacks = [
        "{{ 'a' | indent(10**12) }}",
        "{{ 'a' | indent(2**63) }}",
        "{{ '{:>1000000000000}'.format(1) }}",
        "{{ [1] | slice(10**12) }}",
        "{{ 'x' * 100000000 }}",
        "{{ 'x' * event.payload.n }}",
        "{{ range(10**12) | list }}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s | replace('x', 'xx') %}{% endfor %}",
        "{% set ns = namespace(a=1) %}{% set ms = namespace(b=1) %}{% set ns.a = ms %}{% set ms.b = ns %}{{ ns == ms }}",
    ];
    for (i, template) in attacks.iter().enumerate() {
        let definition = json!({"id": format!("t{i}"), "trigger": {"expect": ["attack"]}, "deployment": "t",
                                "parameters": {"p": template}});
        let (status, body) = http.put(&format!("/triggers/t{i}"), definition).await;
        assert_eq!(status, 201, "{template}: {body}");
    }
    // Constant expressions are not folded when a definition is saved: five of these would
    // hold ~500 MB if they were.
    for i in 0..5 {
        let definition = json!({"id": format!("fold{i}"), "trigger": {"expect": ["never"]},
                                "parameters": {"p": "{{ ('x' * 100000000) ~ 'y' }}"}});
        assert_eq!(http.put(&format!("/triggers/fold{i}"), definition).await.0, 201);
    }
    let (status, _) = http
        .post("/events", json!({"event": "attack", "resource": {"prefect.resource.id": "a"}, "payload": {"n": 1e15}}))
        .await;
    assert_eq!(status, 200);
    target.still_serves().await;
    for (i, template) in attacks.iter().enumerate() {
        let (status, firings) = target.http.get(&format!("/triggers/t{i}/firings")).await;
        assert_eq!(status, 200);
        let error = firings[0]["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty(), "{template}: the firing records why it made no run: {firings}");
        assert!(firings[0]["parameters"].is_null(), "{firings}");
    }
    let (_, runs) = target.http.get("/runs?deployment=t").await;
    assert_eq!(runs.as_array().unwrap().len(), 0, "no firing of an attack made a run");
    // One firing of `'x' * 100000000` once grew the database by 540 MB.
    let size: u64 = std::fs::read_dir(&target.data).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(size < 64 * 1024 * 1024, "the data directory holds {size} bytes");
    target.restart().await;
    let peak = common::peak_rss_mib(target.pid());
    assert!(peak < 200, "recovery compiles the definitions without folding them: {peak} MiB");
}
