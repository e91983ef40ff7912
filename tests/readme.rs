//! The README's commands, run as written: the curl session against the real binary with auth
//! on (beside the quickstart's worker trigger, which it must not disturb), and the replay
//! command over the files it names, whose output the README shows.

mod common;

use std::process::Command;

use common::{temp_dir, Server};
use serde_json::{json, Value};

const README: &str = include_str!("../README.md");
const BIN: &str = env!("CARGO_BIN_EXE_tripwire");

/// The first ```sh block after `heading`.
fn block_after(heading: &str) -> &'static str {
    let start = README.find(heading).unwrap_or_else(|| panic!("the README has no `{heading}`"));
    README[start..].split("```sh\n").nth(1).unwrap().split("\n```").next().unwrap()
}

/// Runs the README's curl session as written against a server beside the quickstart's
/// trigger, with `TRIPWIRE_API_KEY` set to an admin key (auth on) or unset (auth off).
async fn curl_session(auth: bool) {
    let data = temp_dir(if auth { "readme-curl-auth" } else { "readme-curl-open" });
    let key = if auth {
        let out = Command::new(BIN)
            .args(["keys", "create", "--role", "admin", "--name", "me", "--data"])
            .arg(&*data)
            .output();
        String::from_utf8(out.unwrap().stdout).unwrap().trim().to_owned()
    } else {
        String::new()
    };
    let server = Server::start(&data);
    // The quickstart's trigger, as its worker registers it: the session must not fire it.
    let quickstart = json!({"id": "order-complete", "trigger": {"after": ["order.created"],
        "expect": ["order.complete"], "for_each": ["prefect.resource.id"]}, "deployment": "post-order-complete"});
    let admin = reqwest::Client::new();
    let put = admin.put(format!("{}/triggers/order-complete", server.api)).bearer_auth(&key).json(&quickstart);
    assert_eq!(put.send().await.unwrap().status(), 201);

    let session = block_after("A session with curl").replace("http://127.0.0.1:4200/api", &server.api);
    let script = format!("shopt -s expand_aliases\nset -e\n{session}\n");
    let mut bash = Command::new("bash");
    bash.arg("-c").arg(&script);
    if auth {
        bash.env("TRIPWIRE_API_KEY", &key);
    } else {
        bash.env_remove("TRIPWIRE_API_KEY");
    }
    let out = bash.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the session failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("\"error\""), "a command of the session was refused:\n{stdout}");
    // Its last command shows inv-2's window, still open.
    let last = stdout.rfind("{\"trigger\":\"invoice-paid\"").expect("the buckets answer");
    let buckets: Value = serde_json::from_str(stdout[last..].trim()).unwrap();
    let b = &buckets["buckets"][0];
    assert_eq!((&b["labels"]["prefect.resource.id"], &b["phase"]), (&json!("inv-2"), &json!("open")), "{buckets}");

    let runs: Value =
        admin.get(format!("{}/runs", server.api)).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1, "one run, of the session's own deployment: {runs:?}");
    assert_eq!(runs[0]["deployment"], "thank-payer");
    assert_eq!(runs[0]["parameters"]["invoice"], "inv-1");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_curl_session_runs_as_written_with_auth_on_beside_the_quickstart() {
    curl_session(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_curl_session_runs_as_written_with_auth_off_and_no_key_set() {
    curl_session(false).await;
}

#[test]
fn the_replay_command_prints_what_the_readme_shows() {
    let block = block_after("To replay past events through triggers instead");
    let command = block.lines().take_while(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n").replace("\\\n", " ");
    let args: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(args[0], "tripwire", "{command}");
    let out = Command::new(BIN).args(&args[1..]).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let shown: Vec<&str> = block.lines().filter_map(|l| l.strip_prefix("# ")).collect();
    assert_eq!(printed.len(), shown.len(), "{printed:?}");
    for (firing, line) in printed.iter().zip(shown) {
        for field in ["trigger", "bucket", "at", "parameters"] {
            let text = format!("\"{field}\":{}", firing[field]);
            assert!(line.contains(&text), "the README shows `{line}`, the command printed {text}");
        }
    }
}
