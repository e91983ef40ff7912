//! The client and the server commands of the CLI against a real `tripwire serve`: the order
//! example end to end, trigger management, input errors (exit 2) and a missing server (exit 1).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::{json, Value};
use tripwire::client::{Client, ClientError, EventQuery, NewEvent};
use tripwire::model::{Deployment, Resource};

const BIN: &str = env!("CARGO_BIN_EXE_tripwire");

/// A running server, killed (and its data removed) when dropped, even on panic.
struct Server {
    child: Child,
    api: String,
    dir: PathBuf,
}

impl Server {
    fn start(tag: &str) -> Server {
        let dir = std::env::temp_dir().join(format!("tripwire-cli-client-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--addr", "127.0.0.1:0", "--data"])
            .arg(dir.join("data"))
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        // The guard exists before the wait, so a server that never says where it listens is
        // still killed.
        let mut server = Server { child, api: String::new(), dir };
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.split("tripwire listening on ").nth(1) {
                let end = rest.find("/api").expect("the address ends in /api") + "/api".len();
                server.api = rest[..end].to_owned();
                break;
            }
            seen.push(line);
        }
        assert!(!server.api.is_empty(), "the server did not start:\n{}", seen.join("\n"));
        // Keep reading its log so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        server
    }

    fn client(&self) -> Client {
        Client::new(&self.api).unwrap()
    }

    fn cli(&self, args: &[&str]) -> Output {
        cli(&self.api, args)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cli(api: &str, args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("TRIPWIRE_API", api).env("NO_COLOR", "1").output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn ok(out: Output) -> String {
    assert!(out.status.success(), "exit {:?}\nstdout: {}\nstderr: {}", out.status, stdout(&out), stderr(&out));
    stdout(&out)
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn order_trigger() -> Value {
    json!({
        "id": "post-order",
        "trigger": {"type": "event", "after": ["order.created"], "expect": ["order.complete"],
                    "for_each": ["prefect.resource.id"], "posture": "Reactive", "threshold": 1, "within": 0},
        "deployment": "post-order-complete",
        "parameters": {"user_id": "{{ event.resource.id }}"}
    })
}

/// A port with nothing listening on it.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn the_order_example_runs_once_for_user_123() {
    let server = Server::start("order");
    let client = server.client();
    let rt = runtime();
    let saved = rt.block_on(client.put_deployment(&Deployment::new("post-order-complete"))).unwrap();
    assert!(saved.created);
    assert_eq!(rt.block_on(client.deployment("post-order-complete")).unwrap().name, "post-order-complete");

    let file = write(&server.dir, "triggers.json", &json!([order_trigger()]).to_string());
    assert_eq!(ok(server.cli(&["triggers", "apply", &file])), "created post-order\n");
    // Applying again replaces it; a single definition (not in an array) is accepted too.
    let single = write(&server.dir, "one.json", &order_trigger().to_string());
    assert_eq!(ok(server.cli(&["triggers", "apply", &single])), "updated post-order\n");

    let mut ids = Vec::new();
    for (name, id) in [("order.created", "123"), ("order.created", "456"), ("order.complete", "123")] {
        let resource = format!("prefect.resource.id={id}");
        let report: Value = serde_json::from_str(&ok(server.cli(&["emit", name, "--resource", &resource]))).unwrap();
        assert_eq!(report["ids"].as_array().unwrap().len(), 1, "{report}");
        assert_eq!(report["duplicates"], json!([]));
        ids.push(report["ids"][0].as_str().unwrap().to_owned());
    }

    let runs = json_lines(&ok(server.cli(&["runs", "list", "--json"])));
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["parameters"]["user_id"], "123");
    assert_eq!(runs[0]["deployment"], "post-order-complete");
    assert_eq!(runs[0]["cause"]["trigger"], "post-order");
    let run_id = runs[0]["id"].as_str().unwrap();
    let filtered = json_lines(&ok(server.cli(&[
        "runs",
        "list",
        "--json",
        "--deployment",
        "post-order-complete",
        "--state",
        "scheduled",
    ])));
    assert_eq!(filtered.len(), 1);
    assert!(json_lines(&ok(server.cli(&["runs", "list", "--json", "--deployment", "other"]))).is_empty());
    let table = ok(server.cli(&["runs", "list"]));
    assert!(table.starts_with("ID") && table.contains(run_id) && table.contains("\"user_id\":\"123\""), "{table}");
    let shown: Value = serde_json::from_str(&ok(server.cli(&["runs", "show", run_id]))).unwrap();
    assert_eq!(shown["parameters"], json!({"user_id": "123"}));

    // The client sees the same run and the events, newest first.
    let run = rt.block_on(client.run(run_id.parse().unwrap())).unwrap();
    assert_eq!(run.parameters["user_id"], "123");
    let page = rt.block_on(client.events(&EventQuery { resource: Some("123".into()), ..Default::default() })).unwrap();
    let names: Vec<&str> = page.events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["order.complete", "order.created"]);

    // `events tail --json` prints them oldest first, filtered, as JSON lines.
    let tailed = json_lines(&ok(server.cli(&["events", "tail", "--json", "--name", "order.created"])));
    let tailed_ids: Vec<&str> = tailed.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(tailed_ids, [ids[0].as_str(), ids[1].as_str()]);
    let all = json_lines(&ok(server.cli(&["events", "tail", "--prefix", "order.", "--json"])));
    assert_eq!(all.iter().map(|e| e["id"].as_str().unwrap()).collect::<Vec<_>>(), ids);

    // A worker's log lines show with `runs logs`; `runs cancel` cancels the waiting run once.
    let line =
        tripwire::model::NewLogLine { at: None, level: tripwire::model::LogLevel::Warning, message: "careful".into() };
    rt.block_on(client.append_logs(run.id, &tripwire::model::LogBatch { lines: vec![line] })).unwrap();
    let logs = ok(server.cli(&["runs", "logs", run_id]));
    assert!(logs.contains("WARNING") && logs.contains("[attempt 1] careful"), "{logs}");
    let cancelled: Value = serde_json::from_str(&ok(server.cli(&["runs", "cancel", run_id]))).unwrap();
    assert_eq!(
        (cancelled["state"].as_str(), cancelled["reason"].as_str()),
        (Some("Cancelled"), Some("cancelled_by_user"))
    );
    let again = server.cli(&["runs", "cancel", run_id]);
    assert!(!again.status.success() && stderr(&again).contains("already Cancelled"), "{}", stderr(&again));
}

#[test]
fn triggers_are_listed_shown_disabled_and_deleted() {
    let server = Server::start("manage");
    let file = write(&server.dir, "triggers.json", &json!([order_trigger()]).to_string());
    ok(server.cli(&["triggers", "apply", &file]));

    let listed = json_lines(&ok(server.cli(&["triggers", "list", "--json"])));
    assert_eq!(
        listed,
        [json!({"id": "post-order", "enabled": true, "type": "event", "deployment": "post-order-complete",
                "live_buckets": 0, "firings_last_hour": 0})]
    );
    let table = ok(server.cli(&["triggers", "list"]));
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        [
            vec!["ID", "ENABLED", "TYPE", "DEPLOYMENT", "BUCKETS", "FIRINGS/1H"],
            vec!["post-order", "true", "event", "post-order-complete", "0", "0"]
        ]
    );

    let shown: Value = serde_json::from_str(&ok(server.cli(&["triggers", "show", "post-order"]))).unwrap();
    assert_eq!(shown["id"], "post-order");
    assert_eq!(shown["trigger"]["after"], json!(["order.created"]));
    assert!(shown["created"].is_string() && shown["updated"].is_string(), "{shown}");

    // The API addresses may also come from the flag, before or after the subcommand.
    let by_flag = Command::new(BIN).args(["triggers", "--api", &server.api, "show", "post-order"]).output().unwrap();
    ok(by_flag);
    let by_flag = Command::new(BIN).args(["triggers", "show", "post-order", "--api", &server.api]).output().unwrap();
    ok(by_flag);

    ok(server.cli(&["emit", "order.created", "-r", "prefect.resource.id=123"]));
    ok(server.cli(&["emit", "order.created", "-r", "prefect.resource.id=456"]));
    let buckets: Value = serde_json::from_str(&ok(server.cli(&["triggers", "buckets", "post-order"]))).unwrap();
    assert_eq!(buckets["trigger"], "post-order");
    assert_eq!(buckets["buckets"].as_array().unwrap().len(), 2, "{buckets}");
    let one: Value =
        serde_json::from_str(&ok(server.cli(&["triggers", "buckets", "post-order", "--key", "456"]))).unwrap();
    let only = one["buckets"].as_array().unwrap();
    assert_eq!(only.len(), 1, "{one}");
    assert_eq!(only[0]["labels"], json!({"prefect.resource.id": "456"}));
    // As the API shows it: phase, threshold, window, sweep and the evidence.
    assert_eq!(only[0]["threshold"], 1, "{one}");
    assert!(only[0]["phase"].is_string() && only[0]["sweep_at"].is_string(), "{one}");
    assert_eq!(only[0]["events"][0]["event"], "order.created", "{one}");
    assert_eq!(only[0]["events"][0]["opens"], true, "{one}");

    assert_eq!(ok(server.cli(&["triggers", "disable", "post-order"])), "disabled post-order\n");
    let listed = json_lines(&ok(server.cli(&["triggers", "list", "--json"])));
    assert_eq!(listed[0]["enabled"], false);
    assert_eq!(ok(server.cli(&["triggers", "enable", "post-order"])), "enabled post-order\n");
    let rt = runtime();
    assert!(rt.block_on(server.client().trigger("post-order")).unwrap().definition.enabled);

    assert_eq!(ok(server.cli(&["triggers", "delete", "post-order"])), "deleted post-order\n");
    assert!(json_lines(&ok(server.cli(&["triggers", "list", "--json"]))).is_empty());
    let missing = server.cli(&["triggers", "show", "post-order"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("trigger `post-order` does not exist"), "{}", stderr(&missing));
    assert_eq!(server.cli(&["triggers", "delete", "post-order"]).status.code(), Some(1));
}

#[test]
fn bad_input_exits_2_naming_the_file_and_path() {
    let server = Server::start("bad");
    let bad = json!([
        order_trigger(),
        {"id": "p", "trigger": {"type": "event", "posture": "Proactive", "expect": ["x"], "within": 5}},
        {"id": "q", "trigger": {"type": "event", "bogus": 1}, "parameters": {"a": "{{ oops"}}
    ]);
    let file = write(&server.dir, "bad-triggers.json", &bad.to_string());
    let out = server.cli(&["triggers", "apply", &file]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    for needle in [
        format!("error: {file}: $[1].trigger.within"),
        format!("error: {file}: $[2].trigger.bogus: unknown field"),
        format!("error: {file}: $[2].parameters.a"),
    ] {
        assert!(err.contains(&needle), "{needle} not in {err}");
    }
    assert!(stdout(&out).is_empty());
    // Nothing was applied, not even the good definition.
    assert!(runtime().block_on(server.client().triggers()).unwrap().is_empty());

    let not_json = write(&server.dir, "broken.json", "[{\"id\": ");
    let out = server.cli(&["triggers", "apply", &not_json]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(&format!("{not_json}:1:")), "{}", stderr(&out));

    let out = server.cli(&["emit", "a", "-r", "team=x", "--payload", "[]"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--payload") && stderr(&out).contains("prefect.resource.id"), "{}", stderr(&out));
    assert_eq!(server.cli(&["runs", "show", "not-a-uuid"]).status.code(), Some(2));
    assert_eq!(server.cli(&["runs", "list", "--state", "Sleeping"]).status.code(), Some(2));
    assert_eq!(server.cli(&["emit", "a"]).status.code(), Some(2), "--resource is required");
}

#[test]
fn every_command_without_a_server_exits_1_and_says_so() {
    let api = format!("http://127.0.0.1:{}/api", free_port());
    let dir = std::env::temp_dir().join(format!("tripwire-cli-client-down-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = write(&dir, "triggers.json", &json!([order_trigger()]).to_string());
    let commands: &[&[&str]] = &[
        &["emit", "order.created", "--resource", "prefect.resource.id=123"],
        &["triggers", "apply", &file],
        &["triggers", "list"],
        &["triggers", "show", "x"],
        &["triggers", "buckets", "x", "--key", "k"],
        &["triggers", "delete", "x"],
        &["triggers", "enable", "x"],
        &["triggers", "disable", "x"],
        &["runs", "list"],
        &["runs", "show", "00000000-0000-0000-0000-000000000001"],
        &["events", "tail"],
        &["events", "tail", "--follow"],
    ];
    for args in commands {
        let out = cli(&api, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let expected =
            format!("error: no tripwire server at {api} (connection refused); start one with `tripwire serve`");
        assert!(stderr(&out).contains(&expected), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_client_maps_errors_and_round_trips() {
    let server = Server::start("client");
    let client = server.client();
    let rt = runtime();
    rt.block_on(async {
        assert!(client.health().await.unwrap());
        match client.trigger("nope").await {
            Err(ClientError::Api { status: 404, code, message }) => {
                assert_eq!(code, "not_found");
                assert!(message.contains("nope"), "{message}");
            }
            other => panic!("expected a 404, got {other:?}"),
        }
        assert!(matches!(client.deployment("nope").await, Err(ClientError::Api { status: 404, .. })));
        assert!(matches!(client.delete_trigger("nope").await, Err(ClientError::Api { status: 404, .. })));

        // A definition the server refuses (a template that does not parse: the shape is right,
        // so 422) `invalid`, with the path in the message.
        let mut bad: tripwire::model::TriggerDefinition = serde_json::from_value(order_trigger()).unwrap();
        bad.parameters = Some(json!({"a": "{{ oops"}));
        match client.put_trigger(&bad).await {
            Err(ClientError::Api { status: 422, code, message }) => {
                assert_eq!(code, "invalid");
                assert!(message.contains("$.parameters.a"), "{message}");
            }
            other => panic!("expected a 422, got {other:?}"),
        }

        // Create, conflict, upsert, enable, buckets, delete.
        let def: tripwire::model::TriggerDefinition = serde_json::from_value(order_trigger()).unwrap();
        let created = client.create_trigger(&def).await.unwrap();
        assert_eq!(created.definition, def);
        assert!(matches!(client.create_trigger(&def).await, Err(ClientError::Api { status: 409, .. })));
        let replaced = client.put_trigger(&def).await.unwrap();
        assert!(!replaced.created);
        assert_eq!(client.triggers().await.unwrap().len(), 1);
        assert!(!client.set_trigger_enabled("post-order", false).await.unwrap().definition.enabled);
        assert!(client.buckets("post-order", None).await.unwrap().buckets.is_empty());

        // Events: one with id and time kept, a batch with both left to the server, duplicates.
        let id = uuid::Uuid::from_u128(7);
        let at = tripwire::model::Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
        let first = client.emit(NewEvent::new("a.b", Resource::new("r1")).id(id).occurred(at)).await.unwrap();
        assert_eq!(first, id);
        let again = client.ingest(vec![NewEvent::new("a.b", Resource::new("r1")).id(id)]).await.unwrap();
        assert_eq!((again.ids, again.duplicates), (vec![id], vec![id]));
        let batch = client
            .emit_many([NewEvent::new("a.c", Resource::new("r2")), NewEvent::new("a.c", Resource::new("r3"))])
            .await
            .unwrap();
        assert_eq!(batch.len(), 2);
        let page = client
            .events(&EventQuery { prefix: Some("a.".into()), limit: Some(2), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(page.events.len(), 2);
        assert!(page.next_page.is_some());
        let older = client
            .events(&EventQuery {
                prefix: Some("a.".into()),
                limit: Some(2),
                page: page.next_page,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(older.events.len(), 1);
        assert_eq!(older.events[0].id, id);
        assert_eq!(older.events[0].occurred, at);

        // Deployments and runs by hand.
        let mut d = Deployment::new("flow-a");
        d.parameters.insert("x".into(), json!(1));
        assert!(client.put_deployment(&d).await.unwrap().created);
        assert!(!client.put_deployment(&d).await.unwrap().created);
        assert_eq!(client.deployments().await.unwrap().len(), 1);
        let params = json!({"y": 2}).as_object().unwrap().clone();
        let run = client.create_run("flow-a", Some(params)).await.unwrap();
        assert_eq!(serde_json::Value::Object(run.parameters.clone()), json!({"x": 1, "y": 2}));
        assert_eq!(client.run(run.id).await.unwrap(), run);
        assert_eq!(client.runs(tripwire::client::RunQuery::new().deployment("flow-a").limit(10)).await.unwrap(), [run]);
        assert!(matches!(client.create_run("nope", None).await, Err(ClientError::Api { status: 404, .. })));
        client.delete_deployment("flow-a").await.unwrap();
        client.delete_trigger("post-order").await.unwrap();
        assert!(client.triggers().await.unwrap().is_empty());
    });
}

#[test]
fn the_client_reports_a_missing_server() {
    let api = format!("http://127.0.0.1:{}/api/", free_port());
    let client = Client::new(&api).unwrap();
    match runtime().block_on(client.health()) {
        Err(e @ ClientError::Unreachable { .. }) => {
            let text = e.to_string();
            assert!(text.contains("no tripwire server at http://127.0.0.1:"), "{text}");
            assert!(text.contains("tripwire serve"), "{text}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[test]
fn events_tail_follow_prints_new_events_once() {
    let server = Server::start("follow");
    ok(server.cli(&["emit", "old.one", "-r", "x"]));
    let mut follow = Command::new(BIN)
        .args(["events", "tail", "--follow", "--json", "--interval", "0.2", "--api", &server.api])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // Lines arrive through a channel so that a missing line fails the test instead of hanging.
    let (tx, rx) = std::sync::mpsc::channel();
    let out = follow.stdout.take().unwrap();
    let guard = Kill(follow);
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || -> Value {
        let line = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("a line from events tail --follow");
        serde_json::from_str(&line).unwrap()
    };
    assert_eq!(next()["event"], "old.one");
    for n in 0..3 {
        ok(server.cli(&["emit", &format!("new.{n}"), "-r", "x"]));
    }
    let names: Vec<Value> = (0..3).map(|_| next()["event"].clone()).collect();
    assert_eq!(names, ["new.0", "new.1", "new.2"]);
    // Nothing is printed twice.
    assert!(rx.recv_timeout(std::time::Duration::from_millis(800)).is_err());
    drop(guard);
}

#[test]
fn events_tail_prints_a_readable_line_per_event_by_default() {
    let server = Server::start("readable");
    let client = server.client();
    let at = tripwire::model::Timestamp::parse("2026-11-30T12:00:00.123Z").unwrap();
    let order = NewEvent::new("order.created", Resource::new("123"))
        .occurred(at)
        .related(Resource::new("c-9").with("prefect.resource.role", "customer"))
        .payload(json!({"amount": 5}));
    let plain = NewEvent::new("order.complete", Resource::new("123")).occurred(at);
    runtime().block_on(client.emit_many([order, plain])).unwrap();

    let text = ok(server.cli(&["events", "tail"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            r#"2026-11-30T12:00:00.123Z  order.created  resource=123  related=customer:c-9  {"amount":5}"#,
            "2026-11-30T12:00:00.123Z  order.complete  resource=123",
        ],
        "{text}"
    );
    assert!(lines.iter().all(|l| serde_json::from_str::<Value>(l).is_err()), "not JSON: {text}");
    // The same events as JSON with --json.
    let raw = json_lines(&ok(server.cli(&["events", "tail", "--json"])));
    assert_eq!(
        raw.iter().map(|e| e["event"].as_str().unwrap()).collect::<Vec<_>>(),
        ["order.created", "order.complete"]
    );
    assert_eq!(raw[0]["payload"], json!({"amount": 5}));
}

#[test]
fn the_client_subscribes_to_events_and_manages_scope_filters() {
    let server = Server::start("subscribe");
    let client = server.client();
    let rt = runtime();
    rt.block_on(async {
        client.emit(NewEvent::new("ping", Resource::new("old"))).await.unwrap();
        client.emit(NewEvent::new("other", Resource::new("old"))).await.unwrap();
        let mut subscription = client.subscribe(&json!({"event": {"name": ["ping"]}}), true).await.unwrap();
        let backfilled = subscription.next().await.unwrap().unwrap();
        assert_eq!((backfilled.event.as_str(), backfilled.resource.id()), ("ping", "old"));
        client.emit(NewEvent::new("other", Resource::new("new"))).await.unwrap();
        client.emit(NewEvent::new("ping", Resource::new("new"))).await.unwrap();
        let live = subscription.next().await.unwrap().unwrap();
        assert_eq!((live.event.as_str(), live.resource.id()), ("ping", "new"), "filtered, in order");
        subscription.close().await;

        // Prefect's event filter, page by page.
        let first = client.events_filter(&json!({"event": {"name": ["ping"]}, "order": "ASC"}), Some(1)).await.unwrap();
        assert_eq!((first.total, first.events[0].resource.id()), (2, "old"));
        let second = client.events_filter_next(first.next_page.as_deref().unwrap()).await.unwrap();
        assert_eq!(second.events[0].resource.id(), "new");
        assert!(second.next_page.is_none());

        // A filter the server cannot read closes the subscription with the reason.
        let bad = client.subscribe(&json!({"event": {"nmae": ["x"]}}), false).await.unwrap();
        let mut bad = std::pin::pin!(bad.into_stream());
        let err = futures_util::StreamExt::next(&mut bad).await.unwrap().unwrap_err();
        assert!(err.to_string().contains("nmae"), "{err}");

        // Scope filters round-trip.
        client.put_deployment(&Deployment::new("reward")).await.unwrap();
        let draft = tripwire::model::ScopeFilter {
            id: uuid::Uuid::nil(),
            deployment: "reward".into(),
            scope: "referrals".into(),
            expression: "input.amount > payload.min".into(),
            payload: json!({"min": 10}).as_object().unwrap().clone(),
            created: None,
        };
        let created = client.create_filter(&draft).await.unwrap();
        assert_ne!(created.id, uuid::Uuid::nil());
        assert_eq!(client.filter(created.id).await.unwrap().expression, draft.expression);
        assert_eq!(client.filters(Some("reward"), Some("referrals")).await.unwrap().len(), 1);
        assert!(client.filters(Some("reward"), Some("other")).await.unwrap().is_empty());
        client.delete_filter(created.id).await.unwrap();
        let gone = client.filter(created.id).await.unwrap_err();
        assert!(matches!(gone, ClientError::Api { status: 404, .. }), "{gone}");
        let mut broken = draft.clone();
        broken.expression = "input.amount >".into();
        let err = client.create_filter(&broken).await.unwrap_err();
        assert!(
            matches!(&err, ClientError::Api { status: 422, .. }) && err.to_string().contains("$.expression"),
            "{err}"
        );
    });
}
