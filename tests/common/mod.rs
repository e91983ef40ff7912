//! Shared by the server tests: start the real `tripwire serve` binary on a free port with a
//! fresh data directory, and talk to it over HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// A fresh, empty directory for one test, removed (with everything in it) when dropped. Keep it
/// alive for as long as anything uses the directory: a test that restarts a server on the same
/// data holds it across the restart.
pub fn temp_dir(tag: &str) -> TempDir {
    // The process id and a count: `cargo test` runs a harness's tests as threads of one
    // process, and two of them may use the same tag.
    static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tripwire-test-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// A directory made by [`temp_dir`], removed when dropped; reads as a `Path`.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server process; killed when dropped.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT/api`
    pub api: String,
    pub data: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
}

/// Log lines of a server that a test keeps.
pub const MAX_KEPT_LOG_LINES: usize = 100_000;

impl Server {
    /// Starts `tripwire serve` on a free port over `data` and waits until it listens.
    pub fn start(data: &Path) -> Server {
        Server::start_on(data, "127.0.0.1:0")
    }

    /// Starts it on a given address (to restart on the same port).
    pub fn start_on(data: &Path, addr: &str) -> Server {
        Server::launch_on(data, addr, &[])
    }

    /// Starts it on a free port with extra `serve` settings.
    pub fn start_with(data: &Path, settings: &[&str]) -> Server {
        Server::launch_on(data, "127.0.0.1:0", settings)
    }

    pub fn launch_on(data: &Path, addr: &str, settings: &[&str]) -> Server {
        Server::launch_on_with_env(data, addr, settings, &[])
    }

    /// Starts it with extra environment variables (`RUST_LOG` is `info` unless given).
    pub fn launch_on_with_env(data: &Path, addr: &str, settings: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tripwire"))
            .args(["serve", "--addr", addr, "--data"])
            .arg(data)
            .args(settings)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the tripwire binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let kept = logs.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let addr = rest.split('/').next().unwrap_or_default().to_owned();
                        let _ = tx.send(addr);
                        sent = true;
                    }
                }
                let mut kept = kept.lock().unwrap();
                if kept.len() < MAX_KEPT_LOG_LINES {
                    kept.push(line);
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(120)).expect("the server reports where it listens");
        Server { child, api: format!("http://{addr}/api"), data: data.to_path_buf(), logs }
    }

    /// The lines it has logged so far (the first [`MAX_KEPT_LOG_LINES`]).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The `host:port` it listens on.
    pub fn addr(&self) -> String {
        self.api.trim_start_matches("http://").trim_end_matches("/api").to_owned()
    }

    /// SIGKILL: no chance to flush or snapshot.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited successfully.
    pub fn terminate(mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..100 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small HTTP helper returning (status, JSON body).
pub struct Http {
    client: reqwest::Client,
    pub api: String,
}

impl Http {
    pub fn new(api: &str) -> Http {
        Http { client: reqwest::Client::new(), api: api.to_owned() }
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<String>) -> (u16, serde_json::Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.api));
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.expect("the server answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::POST, path, Some(body.to_string())).await
    }

    pub async fn put(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::PUT, path, Some(body.to_string())).await
    }

    pub async fn patch(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::PATCH, path, Some(body.to_string())).await
    }

    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// A POST with raw bytes, on a connection of its own: a server that refuses a body before
    /// reading all of it closes that connection, which must not be reused for later requests.
    pub async fn raw_post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, serde_json::Value) {
        let once = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        let resp = once
            .post(format!("{}{path}", self.api))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }
}

/// The seed's order trigger: `order.complete` after `order.created` for each user.
pub fn order_trigger() -> serde_json::Value {
    serde_json::json!({
        "id": "post-order",
        "trigger": {"type": "event", "match": {}, "match_related": {}, "after": ["order.created"],
                    "expect": ["order.complete"], "for_each": ["prefect.resource.id"],
                    "posture": "Reactive", "threshold": 1, "within": 0},
        "deployment": "post-order-complete",
        "parameters": {"user_id": "{{ event.resource.id }}"}
    })
}

/// Resident memory the server may reach while attacked, in MiB.
pub const MAX_PEAK_RSS_MIB: u64 = 600;

/// The most resident memory the process has had (VmHWM), in MiB: "throughout", not now.
pub fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server runs");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb / 1024
}

/// Installs an ordinary trigger (`canary.ping` runs deployment `canary`), to show afterwards
/// that the server still serves. Idempotent.
pub async fn install_canary(http: &Http) {
    let (status, body) = http.put("/deployments/canary", serde_json::json!({})).await;
    assert!(status == 200 || status == 201, "{body}");
    let canary = serde_json::json!({"id": "canary", "trigger": {"expect": ["canary.ping"]}, "deployment": "canary",
                                    "parameters": {"n": "{{ event.resource.id }}"}});
    let (status, body) = http.put("/triggers/canary", canary).await;
    assert!(status == 200 || status == 201, "{body}");
}

/// An ordinary event fires the canary's run within a second, health is good, and the server's
/// peak memory stayed under [`MAX_PEAK_RSS_MIB`].
pub async fn canary_fires(http: &Http, pid: u32, id: &str) {
    let ping = serde_json::json!({"event": "canary.ping", "resource": {"prefect.resource.id": id}});
    let (status, body) = http.post("/events", ping).await;
    assert_eq!(status, 200, "an ordinary event is accepted: {body}");
    #[allow(clippy::disallowed_methods)] // tests wait on the wall clock
    let sent = std::time::Instant::now();
    loop {
        let (_, runs) = http.get("/runs?deployment=canary&limit=1000").await;
        if runs.as_array().is_some_and(|r| r.iter().any(|r| r["parameters"]["n"] == id)) {
            break;
        }
        assert!(sent.elapsed() < Duration::from_secs(1), "the canary's run for {id} did not appear within 1 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, health) = http.get("/health").await;
    assert_eq!((status, health), (200, serde_json::json!(true)));
    let peak = peak_rss_mib(pid);
    assert!(peak < MAX_PEAK_RSS_MIB, "the server's memory peaked at {peak} MiB");
}

/// After an attack: an ordinary event still fires its run within a second with memory in
/// bounds, and after `kill -9` the server comes back on the same data and fires again.
pub async fn survives(server: Server, settings: &[&str]) {
    let http = Http::new(&server.api);
    install_canary(&http).await;
    canary_fires(&http, server.child.id(), "after-attack").await;
    let data = server.data.clone();
    server.kill();
    let server = Server::start_with(&data, settings);
    let http = Http::new(&server.api);
    let (status, _) = http.get("/events?limit=10").await;
    assert_eq!(status, 200, "stored events read back after the restart");
    canary_fires(&http, server.child.id(), "after-restart").await;
}

/// Polls a run until `done` holds (at most 30 s, then fails saying what it waited for and
/// how the run stands).
pub async fn wait_for_run(
    client: &tripwire::client::Client,
    id: uuid::Uuid,
    what: &str,
    done: impl Fn(&tripwire::model::Run) -> bool,
) -> tripwire::model::Run {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let run = client.run(id).await.unwrap();
        if done(&run) {
            return run;
        }
        assert!(tokio::time::Instant::now() < deadline, "waited 30 s for {what}; the run is {run:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `target/<profile>/examples/NAME`, built by `cargo test` (which builds the examples).
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let path = deps.parent().unwrap().join("examples").join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --examples` (cargo test builds them)", path.display());
    path
}
