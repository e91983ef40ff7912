//! The dashboard in a real headless browser (Chromium, driven over the DevTools protocol): the
//! order example against a server with auth on. The page asks for a key; then it shows the
//! trigger, the open bucket for 456 saying why it has not fired, the run for 123 with its log,
//! the worker serving the deployment, a compound trigger's progress, and the live tail
//! receiving a new event. Screenshots of each page are written to `target/tmp/dashboard-*.png`.
//!
//! It needs Chromium: `TRIPWIRE_CHROMIUM`, or `chromium` on the PATH (Debian's package;
//! `.ci/run` installs it when it is missing). It fails, saying so, without one.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{temp_dir, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless Chromium and a DevTools connection to its page; killed when dropped.
struct Browser {
    child: Child,
    page: Socket,
    next_id: u64,
    _profile: common::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("TRIPWIRE_CHROMIUM") {
        return PathBuf::from(path);
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return PathBuf::from(name);
        }
    }
    panic!("this test needs Chromium: install it (Debian: `apt-get install chromium`) or set TRIPWIRE_CHROMIUM");
}

impl Browser {
    async fn start() -> Browser {
        let profile = temp_dir("dashboard-chromium");
        let mut child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("Chromium starts");
        // It says where its DevTools listen: `DevTools listening on ws://127.0.0.1:PORT/...`.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let browser_url = rx.recv_timeout(Duration::from_secs(60)).expect("Chromium's DevTools address");
        let port = browser_url.trim_start_matches("ws://127.0.0.1:").split('/').next().unwrap().to_owned();
        let targets: Vec<Value> =
            reqwest::get(format!("http://127.0.0.1:{port}/json")).await.unwrap().json().await.unwrap();
        let page = targets.iter().find(|t| t["type"] == "page").expect("a page").clone();
        let (page, _) = tokio_tungstenite::connect_async(page["webSocketDebuggerUrl"].as_str().unwrap()).await.unwrap();
        let mut browser = Browser { child, page, next_id: 0, _profile: profile };
        browser.call("Page.enable", json!({})).await;
        browser.call("Runtime.enable", json!({})).await;
        browser
    }

    /// Sends a DevTools command and returns its result (events in between are skipped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.page.send(Message::text(json!({"id": id, "method": method, "params": params}).to_string())).await.unwrap();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), self.page.next()).await.unwrap();
            let Some(Ok(Message::Text(text))) = message else { continue };
            let reply: Value = serde_json::from_str(text.as_str()).unwrap();
            if reply["method"] == "Runtime.exceptionThrown" {
                panic!("the page threw: {}", reply["params"]["exceptionDetails"]);
            }
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
    }

    /// The value of a JavaScript expression in the page.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true, "awaitPromise": true}))
            .await;
        result["result"]["value"].clone()
    }

    /// The page's visible text.
    async fn text(&mut self) -> String {
        self.eval("document.body.innerText").await.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the page's text holds every one of `needles`; returns it.
    async fn wait_for_text(&mut self, needles: &[&str]) -> String {
        let mut text = String::new();
        for _ in 0..150 {
            text = self.text().await;
            if needles.iter().all(|n| text.contains(n)) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page never showed {needles:?}; it shows:\n{text}");
    }

    /// Saves a screenshot of the page, `height` pixels tall.
    async fn screenshot(&mut self, name: &str, height: u32) {
        let metrics = json!({"width": 1400, "height": height, "deviceScaleFactor": 1, "mobile": false});
        self.call("Emulation.setDeviceMetricsOverride", metrics).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"})).await;
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dashboard-{name}.png"));
        std::fs::write(&path, png).unwrap();
    }
}

/// Makes a key on a data directory no server has open.
fn make_key(data: &Path, role: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tripwire"))
        .args(["keys", "create", "--role", role, "--name", role, "--data"])
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs an example against the server with a key; killed when dropped.
struct Example(Child);

impl Example {
    fn start(name: &str, api: &str, key: &str) -> Example {
        let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
        let path = deps.parent().unwrap().join("examples").join(name);
        assert!(path.exists(), "{} is missing: run `cargo build --examples` (cargo test builds them)", path.display());
        let child = Command::new(path)
            .env("TRIPWIRE_API", api)
            .env("TRIPWIRE_API_KEY", key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Example(child)
    }

    fn finish(mut self) {
        assert!(self.0.wait().unwrap().success());
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_explains_the_order_example_and_tails_events_live() {
    let data = temp_dir("dashboard");
    let (read, worker, emit) = (make_key(&data, "read"), make_key(&data, "worker"), make_key(&data, "emit"));
    let admin = make_key(&data, "admin");
    let server = Server::start(&data);
    let _worker = Example::start("post_order_complete", &server.api, &worker);
    let http = reqwest::Client::new();
    for _ in 0..300 {
        let ready = http.get(format!("{}/deployments/post-order-complete/triggers", server.api)).bearer_auth(&read);
        let triggers: Value = ready.send().await.unwrap().json().await.unwrap();
        if triggers.as_array().is_some_and(|t| !t.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Example::start("simulate_events", &server.api, &emit).finish();

    let origin = format!("http://{}", server.addr());
    let mut browser = Browser::start().await;

    // Auth is on: the page asks for a key, and a read key is enough to look.
    browser.goto(&format!("{origin}/#/triggers")).await;
    browser.wait_for_text(&["API key"]).await;
    browser.screenshot("key", 500).await;
    let typed = format!(
        "(() => {{ const i = document.querySelector('form.login input'); i.value = {}; \
         i.dispatchEvent(new Event('input', {{bubbles: true}})); document.querySelector('form.login button').click(); return true }})()",
        json!(read)
    );
    assert_eq!(browser.eval(&typed).await, json!(true));

    // The trigger, with its deployment.
    browser.wait_for_text(&["order-complete", "post-order-complete"]).await;
    browser.screenshot("triggers", 500).await;

    // Why 456 has not fired: its bucket waits for order.complete, opened by order.created.
    browser.goto(&format!("{origin}/#/triggers/order-complete")).await;
    let text = browser.wait_for_text(&["prefect.resource.id=456", "waiting for order.complete"]).await;
    let line = text.lines().find(|l| l.contains("waiting for order.complete")).unwrap();
    assert!(line.contains("(0 of 1)") && line.contains("opened by order.created"), "{line}");
    assert!(!text.contains("prefect.resource.id=123\n"), "123 fired: its bucket is gone\n{text}");
    browser.screenshot("trigger", 900).await;

    // Tested against the events the server holds: 123 would have fired; 456's bucket says why
    // it would not have.
    let clicked = "(() => { document.querySelector('[data-key=backtest-run]').click(); return true })()";
    assert_eq!(browser.eval(clicked).await, json!(true));
    browser
        .wait_for_text(&["1 firing over", "order-complete: 1 firings, 2 buckets opened, 1 still open at the end"])
        .await;
    let lookup = "(() => { const i = document.querySelector('[data-key=backtest-key]'); i.value = '456'; \
                  i.form.querySelector('button').click(); return true })()";
    assert_eq!(browser.eval(lookup).await, json!(true));
    // The live view above has 456's bucket too, over two lines; the backtest's says it in one.
    let mut text = String::new();
    for _ in 0..150 {
        text = browser.text().await;
        if text.lines().any(|l| l.contains("prefect.resource.id=456") && l.contains("waiting for order.complete")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        text.lines().any(|l| l.contains("prefect.resource.id=456") && l.contains("waiting for order.complete")),
        "{text}"
    );
    browser.screenshot("backtest", 1300).await;

    // The run for 123, completed, with the flow's log line.
    browser.goto(&format!("{origin}/#/runs")).await;
    browser.wait_for_text(&["post-order-complete", "Completed"]).await;
    browser.screenshot("runs", 500).await;
    let runs: Value =
        http.get(format!("{}/runs", server.api)).bearer_auth(&read).send().await.unwrap().json().await.unwrap();
    let run = runs.as_array().unwrap().iter().find(|r| r["parameters"]["user_id"] == "123").expect("the run for 123");
    browser.goto(&format!("{origin}/#/runs/{}", run["id"].as_str().unwrap())).await;
    browser.wait_for_text(&["User 123 has completed an order -- doing stuff now", "Completed", "order-complete"]).await;
    browser.screenshot("run", 900).await;

    // A compound trigger's progress: one child fired and counts, the other not yet.
    let both = json!({"trigger": {"type": "compound", "require": "all", "within": 600,
        "triggers": [{"expect": ["payment.received"]}, {"expect": ["invoice.sent"]}]}});
    let put = http.put(format!("{}/triggers/paid-and-invoiced", server.api)).bearer_auth(&admin).json(&both);
    assert_eq!(put.send().await.unwrap().status(), 201);
    let paid = json!({"event": "payment.received", "resource": {"prefect.resource.id": "inv-9"}});
    let sent = http.post(format!("{}/events", server.api)).bearer_auth(&emit).json(&paid).send().await.unwrap();
    assert_eq!(sent.status(), 200);
    browser.goto(&format!("{origin}/#/triggers/paid-and-invoiced")).await;
    let text = browser.wait_for_text(&["Progress", "1 of 2 needed", "counting", "not yet"]).await;
    assert!(text.contains("within 10 min"), "{text}");
    browser.screenshot("compound", 700).await;

    // The worker serving the deployment: online, with its slots, holding nothing now.
    let workers: Value =
        http.get(format!("{}/workers", server.api)).bearer_auth(&read).send().await.unwrap().json().await.unwrap();
    let w = &workers[0];
    assert_eq!(
        (&w["state"], &w["deployments"], &w["slots"], &w["running"]),
        (&json!("online"), &json!(["post-order-complete"]), &json!(8), &json!([])),
        "{workers}"
    );
    browser.goto(&format!("{origin}/#/deployments")).await;
    browser.wait_for_text(&[w["name"].as_str().unwrap(), "online", "0 / 8", "post-order-complete"]).await;
    browser.screenshot("deployments", 800).await;

    // The live tail receives an event sent now.
    browser.goto(&format!("{origin}/#/events")).await;
    browser.wait_for_text(&["Events"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = json!({"event": "dashboard.checked", "resource": {"prefect.resource.id": "live-789"}});
    let response = http.post(format!("{}/events", server.api)).bearer_auth(&emit).json(&sent).send().await.unwrap();
    assert_eq!(response.status(), 200);
    browser.wait_for_text(&["dashboard.checked", "live-789"]).await;
    browser.screenshot("events", 700).await;
}
