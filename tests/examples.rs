//! Every example in `examples/`, run as its own process against the real server, as the
//! README tells users to run them: with auth on, each with a key of the least role it needs
//! (`TRIPWIRE_API_KEY`).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{temp_dir, Server, TempDir};

/// A server with auth on and one key per role, made with `tripwire keys create --data`.
struct Served {
    server: Option<Server>,
    keys: std::collections::HashMap<&'static str, String>,
    _data: TempDir,
}

impl Served {
    fn start(tag: &str) -> Served {
        let data = temp_dir(tag);
        let mut keys = std::collections::HashMap::new();
        for role in ["emit", "worker", "read", "admin"] {
            let out = Command::new(env!("CARGO_BIN_EXE_tripwire"))
                .args(["keys", "create", "--role", role, "--name", role, "--data"])
                .arg(&*data)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            keys.insert(role, String::from_utf8(out.stdout).unwrap().trim().to_owned());
        }
        Served { server: Some(Server::start(&data)), keys, _data: data }
    }

    fn api(&self) -> &str {
        &self.server.as_ref().expect("the server runs").api
    }

    /// Stops the server (SIGTERM) and starts it again on the same address and data.
    fn restart(&mut self) {
        let server = self.server.take().expect("the server runs");
        let addr = server.addr();
        assert!(server.terminate(), "the server stops cleanly");
        self.server = Some(Server::start_on(&self._data, &addr));
    }

    fn key(&self, role: &str) -> &str {
        &self.keys[role]
    }
}

/// A running example whose stdout lines arrive on a channel.
struct Example {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Example {
    /// Starts it against `served` with the key of `role`.
    fn start(name: &str, served: &Served, role: &str) -> Example {
        Example::start_with(name, served, role, &[])
    }

    /// Starts it with command-line arguments.
    fn start_with(name: &str, served: &Served, role: &str, args: &[&str]) -> Example {
        let mut child = Command::new(common::example_binary(name))
            .args(args)
            .env("TRIPWIRE_API", served.api())
            .env("TRIPWIRE_API_KEY", served.key(role))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Example { child, lines, seen: Vec::new() }
    }

    /// Waits for a line containing `text`; returns every line so far.
    fn expect(&mut self, text: &str) -> &[String] {
        while !self.seen.iter().any(|l| l.contains(text)) {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no line with `{text}` within 30 s; printed so far: {:#?}", self.seen),
            }
        }
        &self.seen
    }

    /// Collects what else it prints for `quiet`, then stops it with Ctrl-C (SIGINT) and
    /// checks that it exits cleanly. Returns every line.
    fn stop(mut self, quiet: Duration) -> Vec<String> {
        while let Ok(line) = self.lines.recv_timeout(quiet) {
            self.seen.push(line);
        }
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "Ctrl-C must stop it cleanly, got {status}");
        self.lines.try_iter().for_each(|l| self.seen.push(l));
        self.seen
    }

    /// Waits for it to exit by itself, successfully.
    fn finish(mut self) -> Vec<String> {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit status {status}");
        self.lines.iter().for_each(|l| self.seen.push(l));
        self.seen
    }
}

fn count(lines: &[String], text: &str) -> usize {
    lines.iter().filter(|l| l.contains(text)).count()
}

/// Waits until `deployment` exists (the worker registered it).
fn wait_registered(served: &Served, deployment: &str) {
    let client = tripwire::client::Client::new(served.api()).unwrap().with_api_key(served.key("read"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for _ in 0..300 {
        if runtime.block_on(client.deployment(deployment)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{deployment} was never registered");
}

#[test]
fn post_order_complete_prints_the_line_once_for_123_and_never_for_456() {
    let served = Served::start("example-order");
    let worker = Example::start("post_order_complete", &served, "worker");
    wait_registered(&served, "post-order-complete");
    let simulate = Example::start("simulate_events", &served, "emit").finish();
    assert_eq!(count(&simulate, "emitted"), 3, "{simulate:?}");
    let mut worker = worker;
    worker.expect("User 123 has completed an order -- doing stuff now");
    let lines = worker.stop(Duration::from_secs(2));
    assert_eq!(lines, ["User 123 has completed an order -- doing stuff now"]);
}

#[test]
fn json_triggers_are_applied_with_the_cli_and_run_the_same_flow() {
    let served = Served::start("example-json");
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/json_triggers.json");
    let applied = Command::new(env!("CARGO_BIN_EXE_tripwire"))
        .args(["triggers", "apply", file, "--api", served.api()])
        .env("TRIPWIRE_API_KEY", served.key("admin"))
        .output()
        .unwrap();
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let mut worker = Example::start("json_triggers", &served, "worker");
    wait_registered(&served, "post-order-complete");
    Example::start("simulate_events", &served, "emit").finish();
    worker.expect("User 123 has completed an order");
    let lines = worker.stop(Duration::from_secs(2));
    assert_eq!(lines, ["User 123 has completed an order -- doing stuff now"]);
}

#[test]
fn signup_fanout_runs_three_flows_and_the_referral_only_when_the_filter_matches() {
    let served = Served::start("example-signup");
    let mut worker = Example::start("signup_fanout", &served, "worker");
    worker.expect("reward_referral");
    for user in ["alice", "carol"] {
        worker.expect(&format!("welcome mail sent to {user}"));
        worker.expect(&format!("100 credits granted to {user}"));
    }
    let lines = worker.stop(Duration::from_secs(2));
    assert_eq!(count(&lines, "send_welcome_email"), 2, "{lines:#?}");
    assert_eq!(count(&lines, "grant_new_user_credits"), 2, "{lines:#?}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("reward_referral")).collect::<Vec<_>>(),
        ["reward_referral: bob rewarded for referring alice"]
    );
}

#[test]
fn rate_limits_start_the_six_runs_two_per_second() {
    let served = Served::start("example-rate-limits");
    // Making the static limit takes an administrator.
    let lines = Example::start("rate_limits", &served, "admin").finish();
    let starts: Vec<f64> = lines
        .iter()
        .filter(|l| l.starts_with("sync-repo: "))
        .map(|l| l.rsplit(" at ").next().unwrap().trim_end_matches(" s").parse().unwrap())
        .collect();
    assert_eq!(starts.len(), 6, "{lines:#?}");
    let mut sorted = starts.clone();
    sorted.sort_by(f64::total_cmp);
    for i in 0..4 {
        assert!(sorted[i + 2] - sorted[i] >= 0.9, "a third run within a second of two others: {lines:#?}");
    }
    assert!(lines.iter().any(|l| l == "rate limit alice: 3 of 10 per minute used"), "{lines:#?}");
    assert!(lines.iter().any(|l| l.starts_with("rate limit github-api: ") && l.ends_with(" of 2 per second used")));
}

#[test]
fn long_task_refreshes_its_timeout_and_outlives_the_deployments_deadline() {
    let served = Served::start("example-long-task");
    let lines = Example::start("long_task", &served, "worker").finish();
    assert_eq!(
        lines,
        [
            "crunch: batch-7 refreshed its deadline to 10 s",
            "crunch: batch-7 step 1",
            "crunch: batch-7 step 2",
            "crunch: batch-7 step 3",
            "crunch: batch-7 step 4",
            "crunch: batch-7 done after 4 steps",
        ]
    );
}

#[test]
fn child_runs_sums_squares_through_three_children_and_run_flow_returns_outputs_and_failures() {
    let served = Served::start("example-child-runs");
    let lines = Example::start("child_runs", &served, "admin").finish();
    let expected = [
        "serving square and sum-of-squares",
        "square: 1 squared",
        "sum-of-squares: attempt 1 has 1² = 1",
        "square: 2 squared",
        "sum-of-squares: attempt 1 has 2² = 4",
        "square: 3 squared",
        "sum-of-squares: attempt 1 has 3² = 9",
        "sum of squares of 1, 2, 3: 14",
        "children: 3",
    ];
    assert_eq!(lines[..expected.len()], expected, "{lines:#?}");
    assert_eq!(lines.len(), expected.len() + 1, "{lines:#?}");
    assert!(lines[expected.len()].starts_with("square of text: Failed: the parameters do not fit flow `square`"));
}

#[test]
fn workflow_runs_the_etl_diamond_and_a_failure_skips_report_and_runs_alert() {
    let served = Served::start("example-workflow");
    let lines = Example::start("workflow", &served, "admin").finish();
    assert_eq!(
        lines,
        [
            r#"etl: "2 rows: [\"alice\",\"bob\"]""#,
            r#"alert: {"clean": "an empty row"}"#,
            "etl failed: task `clean` failed (Failed: an empty row); task `report` was skipped; on-failure task `alert` ran",
        ]
    );
}

#[test]
fn listener_follows_orders_across_a_server_restart_without_a_gap_or_a_duplicate() {
    let mut served = Served::start("example-listener");
    let mut listener = Example::start_with("listener", &served, "read", &["--count", "6"]);
    listener.expect("listening for order.* events");
    let emit = |served: &Served, ids: std::ops::RangeInclusive<u32>| {
        let client = tripwire::client::Client::new(served.api()).unwrap().with_api_key(served.key("emit"));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        for n in ids {
            let event =
                tripwire::model::NewEvent::new("order.created", tripwire::model::Resource::new(format!("order-{n}")));
            runtime.block_on(client.emit(event)).unwrap();
        }
    };
    emit(&served, 1..=3);
    listener.expect("order.created order-3");
    served.restart();
    emit(&served, 4..=6);
    let lines = listener.finish();
    let expected: Vec<String> = std::iter::once("listening for order.* events".to_owned())
        .chain((1..=6).map(|n| format!("order.created order-{n}")))
        .collect();
    assert_eq!(lines, expected);
}

#[test]
fn worker_affinity_sends_transcoding_to_the_gpu_worker_and_thumbnails_to_the_us_one() {
    let served = Served::start("example-affinity");
    let lines = Example::start("worker_affinity", &served, "worker").finish();
    let mut lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "thumbnail: intro.mp4 on plain-us",
            "thumbnail: outro.mp4 on plain-us",
            "thumbnail: talk.mp4 on plain-us",
            "transcode: intro.mp4 on gpu-eu",
            "transcode: outro.mp4 on gpu-eu",
            "transcode: talk.mp4 on gpu-eu",
        ]
    );
}

#[test]
fn streaming_prints_the_haiku_as_the_flow_pushes_it() {
    let served = Served::start("example-streaming");
    let lines = Example::start("streaming", &served, "admin").finish();
    assert_eq!(lines, ["an old silent pond", "a frog jumps into the pond", "splash! silence again"]);
}

#[test]
fn task_events_start_a_flow_from_an_event_sent_inside_another() {
    let served = Served::start("example-tasks");
    // It starts the first run by hand, which takes an administrator.
    let mut worker = Example::start("task_events", &served, "admin");
    worker.expect("extract: task 2 done");
    let lines = worker.expect("transform: started on `key`").to_vec();
    let sent = lines.iter().position(|l| l.contains("sent `key`")).unwrap();
    let started = lines.iter().position(|l| l.contains("transform: started")).unwrap();
    assert!(started > sent, "{lines:#?}");
    assert!(lines[started].contains("with 42 rows"), "{lines:#?}");
    let lines = worker.stop(Duration::from_secs(1));
    assert_eq!(count(&lines, "transform: started"), 1);
}

#[test]
fn shop_runs_against_the_server_reminding_cart_1_and_alerting_payment_7() {
    let served = Served::start("example-shop");
    // It emits right after starting its worker and exits once both runs are done (it reads
    // runs too, so it needs more than a worker).
    let lines = Example::start_with("shop", &served, "admin", &["--server", served.api()]).finish();
    assert_eq!(lines, ["alert-finance: payment.7 failed (250)", "remind-cart: cart.1 was left behind"]);
}

#[test]
fn the_readme_sdk_code_is_copied_from_the_compiled_shop_and_workflow_examples() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let shop = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/shop.rs")).unwrap();
    let workflow = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/workflow.rs")).unwrap();
    let shop_lines: Vec<&str> = shop.lines().chain(workflow.lines()).map(str::trim).collect();
    let section = readme.split("## Flows, workers and runs").nth(1).unwrap().split("\n## ").next().unwrap();
    let code: Vec<&str> = section
        .split("```rust\n")
        .skip(1)
        .flat_map(|block| block.split("\n```").next().unwrap().lines())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert!(code.len() > 40, "the SDK section shows the shop's code: {code:#?}");
    let missing: Vec<&&str> = code.iter().filter(|l| !shop_lines.contains(l)).collect();
    assert!(missing.is_empty(), "README lines not in examples/shop.rs or examples/workflow.rs: {missing:#?}");
}
