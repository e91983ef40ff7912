//! `tripwire replay` as users run it: files in, one JSON line per firing out, and errors that
//! name the file, line and field.

use std::process::Command;

use serde_json::{json, Value};

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tripwire-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_order_example_fires_once_for_user_123() {
    let dir = tempdir("order");
    let triggers = write(
        &dir,
        "triggers.json",
        &json!([{
            "id": "post-order-complete",
            "trigger": {"type": "event", "after": ["order.created"], "expect": ["order.complete"],
                        "for_each": ["prefect.resource.id"], "posture": "Reactive", "threshold": 1, "within": 0},
            "parameters": {"user_id": "{{ event.resource.id }}"}
        }])
        .to_string(),
    );
    let events = write(
        &dir,
        "events.jsonl",
        concat!(
            r#"{"id": "00000000-0000-0000-0000-000000000001", "occurred": "2026-01-01T00:00:00Z", "event": "order.created", "resource": {"prefect.resource.id": "123"}}"#,
            "\n",
            r#"{"id": "00000000-0000-0000-0000-000000000002", "occurred": "2026-01-01T00:00:01Z", "event": "order.created", "resource": {"prefect.resource.id": "456"}}"#,
            "\n",
            r#"{"occurred": "2026-01-01T00:00:02Z", "event": "order.complete", "resource": {"prefect.resource.id": "123"}}"#,
            "\n",
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tripwire"))
        .args(["replay", "--triggers"])
        .arg(&triggers)
        .arg("--events")
        .arg(&events)
        .args(["--until", "2026-01-01T01:00:00Z"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["trigger"], "post-order-complete");
    assert_eq!(lines[0]["bucket"], json!({"prefect.resource.id": "123"}));
    assert_eq!(lines[0]["at"], "2026-01-01T00:00:02Z");
    assert_eq!(lines[0]["parameters"], json!({"user_id": "123"}));
    assert!(lines[0]["triggering_event"].is_string(), "an id is derived for an event without one");
}

#[test]
fn every_input_problem_is_reported_with_file_line_and_field() {
    let dir = tempdir("errors");
    let triggers = write(
        &dir,
        "triggers.json",
        &json!([
            {"id": "a", "trigger": {"posture": "Proactive", "within": 5, "bogus": 1}},
            {"id": "b", "trigger": {"expect": ["x"]}, "parameters": {"x": "{{ event.id "}}
        ])
        .to_string(),
    );
    let events = write(
        &dir,
        "events.jsonl",
        "{\"event\": \"x\", \"occurred\": \"2026-01-01T00:00:00Z\", \"resource\": {}}\nnot json\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tripwire"))
        .args(["replay", "--triggers"])
        .arg(&triggers)
        .arg("--events")
        .arg(&events)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let t = triggers.display().to_string();
    let e = events.display().to_string();
    for want in [
        format!("{t}: $[0].trigger.within: proactive triggers need `within` of at least 10 seconds"),
        format!("{t}: $[0].trigger.bogus: unknown field"),
        format!("{t}: $[1].parameters.x: invalid template"),
        format!("{e}:1: $.resource: the `prefect.resource.id` label is required"),
        format!("{e}:2:2: not valid JSON"),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
}
