//! What a new user meets first, with the real binary: a misspelt event field is refused, not
//! dropped; `--addr localhost:PORT` works; a second server on the same data says who holds it;
//! `tripwire schemas | head` neither panics nor skips a file; a template typo is refused with
//! the definition.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};

use common::{temp_dir, Http, Server};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_tripwire");

#[tokio::test(flavor = "multi_thread")]
async fn a_misspelt_event_field_is_refused_naming_it() {
    let data = temp_dir("first-run-occured");
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    let typo = json!({"event": "order.created", "resource": {"prefect.resource.id": "1"},
                      "occured": "2020-01-01T00:00:00Z"});
    let (status, body) = http.post("/events", typo).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("$.occured: unknown field") && message.contains("`occurred`"), "{message}");
    let (_, events) = http.get("/events").await;
    assert_eq!(events["events"].as_array().map(Vec::len), Some(0), "nothing was stored: {events}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_typo_is_refused_when_the_trigger_is_defined_naming_the_string() {
    let data = temp_dir("first-run-template-typo");
    let server = Server::start(&data);
    let http = Http::new(&server.api);
    let definition = |parameters: serde_json::Value| json!({"id": "thank-payer", "trigger": {"expect": ["invoice.paid"]}, "parameters": parameters});
    for (parameters, path, says) in [
        (
            json!({"user": "{{ evnt.id }}"}),
            "$.parameters.user",
            "`evnt` is not a name run parameters can read (did you mean `event`?)",
        ),
        (
            json!({"n": ["x", "total {{ event.payloadd.total }}"]}),
            "$.parameters.n[1]",
            "an event has no field `payloadd` (did you mean `payload`?)",
        ),
        (json!({"run": "{{ flow_run.name }}"}), "$.parameters.run", "Prefect loads from its own API"),
    ] {
        let (status, body) = http.post("/triggers", definition(parameters)).await;
        assert_eq!(status, 422, "{body}");
        let problems = body["error"]["problems"].as_array().expect("problems");
        assert!(problems.iter().any(|p| p["path"] == path && p["message"].as_str().unwrap().contains(says)), "{body}");
    }
    // Labels and payload keys are free-form: any may exist on some event.
    let fine = definition(
        json!({"a": "{{ event.resource.idd }}", "b": "{{ event.payload.anything }}", "c": "{{ labels.x }}"}),
    );
    let (status, body) = http.post("/triggers", fine).await;
    assert_eq!(status, 201, "{body}");
    let (_, triggers) = http.get("/triggers").await;
    assert_eq!(triggers.as_array().map(Vec::len), Some(1), "only the good definition was stored: {triggers}");
}

#[tokio::test(flavor = "multi_thread")]
async fn localhost_is_an_address_and_a_second_server_says_who_holds_the_data() {
    let data = temp_dir("first-run-addr");
    let server = Server::launch_on(&data, "localhost:0", &[]);
    let (status, health) = Http::new(&server.api).get("/health").await;
    assert_eq!((status, health), (200, json!(true)));
    let second = Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0", "--data"])
        .arg(&*data)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another tripwire holds"), "{stderr}");
    let bad = Command::new(BIN).args(["serve", "--addr", "no-such-host.invalid:4200", "--data"]).arg(&*data).output();
    let bad = bad.unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && stderr.contains("--addr `no-such-host.invalid:4200`"), "{stderr}");
}

#[test]
fn schemas_into_a_closed_pipe_write_every_file_and_exit_quietly() {
    let out = temp_dir("first-run-schemas");
    let mut child = Command::new(BIN)
        .args(["schemas", "--out"])
        .arg(&*out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -0`: the reader goes away before the first line.
    drop(child.stdout.take());
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let files = std::fs::read_dir(&*out).unwrap().count();
    assert_eq!(files, tripwire::model::schema::all().len(), "every schema is written");
}

#[test]
fn an_example_without_a_server_says_so_readably() {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let example = deps.parent().unwrap().join("examples").join("simulate_events");
    assert!(example.exists(), "run `cargo build --examples` (cargo test builds them)");
    let out = Command::new(example).env("TRIPWIRE_API", "http://127.0.0.1:9/api").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: no tripwire server at http://127.0.0.1:9/api"), "{stderr}");
    assert!(!stderr.contains("Unreachable {"), "Rust debug output: {stderr}");
}
