//! The real Prefect client against the real binary with auth on: `emit_event` with
//! `PREFECT_API_AUTH_STRING` (tests/prefect/emit.py) streams to a server started with
//! `--auth-string`, and every event is stored once; with a wrong string the client is refused
//! and nothing is stored.
//!
//! It needs Python with `prefect==3.8.8`: the interpreter named by `TRIPWIRE_PREFECT_PYTHON`,
//! or a virtual environment this test makes under `target/tmp` on its first run (with `python3
//! -m venv` and pip, from PyPI; about a minute). It fails, saying so, when neither can be had.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use common::{temp_dir, Server};
use serde_json::Value;

const PREFECT_VERSION: &str = "3.8.8";
const AUTH_STRING: &str = "alice:s3cret:with:colons";

/// A Python interpreter that imports `prefect` at [`PREFECT_VERSION`].
fn prefect_python() -> PathBuf {
    if let Some(python) = std::env::var_os("TRIPWIRE_PREFECT_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("prefect-{PREFECT_VERSION}"));
    let python = venv.join("bin/python");
    let has_prefect = |python: &Path| {
        Command::new(python)
            .args(["-c", "import prefect, sys; sys.exit(prefect.__version__ != sys.argv[1])", PREFECT_VERSION])
            .status()
            .is_ok_and(|s| s.success())
    };
    if has_prefect(&python) {
        return python;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).output();
    check(made, "python3 -m venv (this test needs Python 3 with venv, or TRIPWIRE_PREFECT_PYTHON)");
    let installed = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("prefect=={PREFECT_VERSION}"))
        .output();
    check(installed, &format!("pip install prefect=={PREFECT_VERSION} (from PyPI)"));
    assert!(has_prefect(&python), "prefect {PREFECT_VERSION} was installed in {} but does not import", venv.display());
    python
}

fn check(output: std::io::Result<Output>, what: &str) {
    let output = output.unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(output.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&output.stderr));
}

/// Runs tests/prefect/emit.py: `count` events tagged `tag`, with `auth_string`. Returns the ids
/// the client emitted and what it printed to stderr.
fn emit(python: &Path, api: &str, home: &Path, auth_string: &str, count: usize, tag: &str) -> (Vec<String>, String) {
    let output = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/prefect/emit.py"))
        .args([&count.to_string(), tag])
        .env("PREFECT_API_URL", api)
        .env("PREFECT_API_AUTH_STRING", auth_string)
        .env("PREFECT_HOME", home)
        .env("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "false")
        .output()
        .expect("the Prefect script runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "the Prefect script failed:\n{stderr}");
    let ids = String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect();
    (ids, stderr)
}

/// Every stored event, read with the auth string.
async fn stored_events(api: &str) -> Vec<Value> {
    let basic = base64::engine::general_purpose::STANDARD.encode(AUTH_STRING);
    let response = reqwest::Client::new()
        .get(format!("{api}/events?limit=1000"))
        .header("Authorization", format!("Basic {basic}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["events"].as_array().cloned().unwrap_or_else(|| panic!("no events in {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn prefects_own_client_emits_with_the_auth_string_and_is_refused_without_it() {
    let python = prefect_python();
    let data = temp_dir("prefect-client");
    let home = temp_dir("prefect-client-home");
    let server = Server::start_with(&data, &["--auth-string", AUTH_STRING]);

    // Refused first, so that nothing stored can come from this run.
    let (wrong_ids, stderr) = emit(&python, &server.api, &home, "alice:wrong", 5, "wrong");
    assert_eq!(wrong_ids.len(), 5);
    assert!(stderr.contains("HTTP 401"), "the client is told it was refused:\n{stderr}");
    assert!(stored_events(&server.api).await.is_empty(), "nothing is stored for a wrong auth string");

    let (ids, stderr) = emit(&python, &server.api, &home, AUTH_STRING, 50, "right");
    assert!(stderr.contains(&format!("prefect {PREFECT_VERSION}")), "{stderr}");
    assert_eq!(ids.len(), 50);
    let events = stored_events(&server.api).await;
    let stored: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(stored.len(), 50, "every event is stored once");
    assert_eq!(stored.iter().copied().collect::<HashSet<_>>(), ids.iter().map(String::as_str).collect::<HashSet<_>>());
    for event in &events {
        assert_eq!(event["event"], "prefect.client.test");
        assert!(event["resource"]["prefect.resource.id"].as_str().unwrap().starts_with("right."), "{event}");
    }
}
