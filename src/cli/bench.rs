//! `tripwire bench`: the durable path's figures (issue 10's table) measured over real HTTP,
//! each beside the machine's limit measured in the same run, printed as a table and written as
//! JSON. Each scenario runs once: run the command three times and take the medians.
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time

mod bare_axum;
mod driver;
mod redb_limit;
mod server;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use clap::Args;
use serde_json::{json, Map, Value};

use driver::{Body, Outcome, Progress, Stop};
use server::Spawned;

use super::remote::{self, Failure};

/// Arguments of `tripwire bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Drive this running server instead of starting one (memory and restart are then
    /// skipped: they need the process). Its data gets the bench's events, a trigger and a
    /// deployment named `tripwire-bench-*`.
    #[arg(long, value_name = "URL")]
    api: Option<String>,
    /// Small sizes and short scenarios: under a minute.
    #[arg(long)]
    quick: bool,
    /// Also write every figure to this file as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Where the temporary data (the server's database, the redb limit's file) goes; removed
    /// at the end.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
}

/// The scenarios' sizes.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// How long the batched and the one-event scenarios, and the bare endpoint, run.
    pub closed: Duration,
    /// after→expect pairs for the firings scenario.
    pub pairs: u64,
    /// Events per second of the paced scenario.
    pub paced_rate: u64,
    /// How long the paced scenario runs.
    pub paced: Duration,
    /// Live buckets for the memory and restart scenarios.
    pub buckets: u64,
    /// Records for the redb limit.
    pub redb_records: u64,
    /// Stored events a backtest reads.
    pub backtest_events: u64,
}

/// Full sizes (issue 10's table): a few minutes.
pub const FULL: Sizes = Sizes {
    closed: Duration::from_secs(20),
    pairs: 100_000,
    paced_rate: 10_000,
    paced: Duration::from_secs(20),
    buckets: 1_000_000,
    redb_records: 300_000,
    backtest_events: 1_000_000,
};

/// `--quick` sizes: under a minute.
pub const QUICK: Sizes = Sizes {
    closed: Duration::from_secs(4),
    pairs: 5_000,
    paced_rate: 2_000,
    paced: Duration::from_secs(4),
    buckets: 20_000,
    redb_records: 20_000,
    backtest_events: 20_000,
};

/// Events per request in the batched, firings and buckets scenarios.
pub const BATCH: u64 = 100;
/// Connections of the batched, firings and buckets scenarios.
pub const BATCH_CONNECTIONS: usize = 8;
/// Connections of the one-event-per-request scenario (and the bare endpoint).
pub const SINGLE_CONNECTIONS: usize = 64;
/// Requests per second of the paced scenario (each carries rate / this many events).
pub const PACED_REQUESTS_PER_SEC: u64 = 100;
/// How long the backtest scenario waits after its bulk load before measuring paced ingest
/// (the load's writes reach the disk meanwhile).
pub const SETTLE: Duration = Duration::from_secs(5);

/// Runs `tripwire bench`.
pub fn run(args: BenchArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Refuse an unwritable --json before minutes of measuring, not after.
    if let Some(path) = &args.json {
        if let Err(e) = std::fs::File::create(path) {
            return remote::report(Failure::usage(format!("--json: cannot write {}: {e}", path.display())));
        }
    }
    let work =
        args.data.clone().unwrap_or_else(std::env::temp_dir).join(format!("tripwire-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&work) {
        return remote::report(Failure::usage(format!("--data: cannot create {}: {e}", work.display())));
    }
    let result = runtime.block_on(bench(&args, &work));
    let _ = std::fs::remove_dir_all(&work);
    match result {
        Ok(report) => {
            if let Err(failure) = print(&report) {
                return remote::report(failure);
            }
            if let Some(path) = &args.json {
                let text = serde_json::to_string_pretty(&report.json).unwrap_or_default();
                if let Err(e) = std::fs::write(path, text + "\n") {
                    return remote::report(Failure::usage(format!("--json: cannot write {}: {e}", path.display())));
                }
            }
            if report.lost {
                eprintln!("error: firings were lost (see the firings row)");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// What the run found: the table's rows, every figure, and whether firings were lost.
struct Report {
    rows: Vec<Vec<String>>,
    json: Value,
    lost: bool,
}

fn print(report: &Report) -> Result<(), Failure> {
    remote::table(&["figure", "ours", "limit here (same run)", "goal (issue 10)"], &report.rows)
}

/// A bench run's names: unique, so that runs against one server (`--api`) do not meet.
struct Names {
    deployment: String,
    pairs: String,
    buckets: String,
    tag: String,
}

impl Names {
    fn new() -> Names {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let tag = format!("{:x}", (nanos as u64) ^ u64::from(std::process::id()));
        Names {
            deployment: format!("tripwire-bench-{tag}"),
            pairs: format!("tripwire-bench-pairs-{tag}"),
            buckets: format!("tripwire-bench-buckets-{tag}"),
            tag,
        }
    }
}

/// The setup client (not the load generator's).
struct Api {
    http: reqwest::Client,
    api: String,
}

impl Api {
    fn new(api: &str) -> Result<Api, String> {
        let http = reqwest::Client::builder()
            .timeout(driver::REQUEST_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Api { http, api: api.trim_end_matches('/').to_owned() })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.api);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.map_err(|e| format!("{method} {url}: {e}"))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| format!("{method} {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{method} {url}: {status}: {text}"));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn healthy(&self) -> bool {
        matches!(self.call(reqwest::Method::GET, "/health", None).await, Ok(Value::Bool(true)))
    }

    /// The deployment and the two triggers of a bench run.
    async fn install(&self, names: &Names) -> Result<(), String> {
        self.call(reqwest::Method::PUT, &format!("/deployments/{}", names.deployment), Some(json!({}))).await?;
        for (id, after, expect, within) in [
            (&names.pairs, "bench.order.created", "bench.order.complete", 3600),
            (&names.buckets, "bench.bucket.open", "bench.bucket.close", 86_400),
        ] {
            let trigger = json!({
                "id": id,
                "trigger": {"after": [after], "expect": [expect], "for_each": ["prefect.resource.id"],
                            "posture": "Reactive", "threshold": 1, "within": within},
                "deployment": names.deployment,
                "parameters": {"key": "{{ event.resource.id }}"}
            });
            self.call(reqwest::Method::PUT, &format!("/triggers/{id}"), Some(trigger)).await?;
        }
        Ok(())
    }

    /// Removes what [`Api::install`] installed (the events stay: they age out).
    async fn uninstall(&self, names: &Names) {
        for id in [&names.pairs, &names.buckets] {
            let _ = self.call(reqwest::Method::DELETE, &format!("/triggers/{id}"), None).await;
        }
        let _ = self.call(reqwest::Method::DELETE, &format!("/deployments/{}", names.deployment), None).await;
    }

    /// Runs the pairs trigger created: its `tripwire.run.scheduled` events, counted page by
    /// page.
    async fn runs_scheduled(&self, names: &Names) -> Result<u64, String> {
        let mut count = 0;
        let mut page: Option<Value> = None;
        loop {
            let mut path =
                format!("/events?name=tripwire.run.scheduled&related=tripwire.trigger.{}&limit=1000", names.pairs);
            if let Some(p) = &page {
                path.push_str(&format!("&page={}", p.as_str().map(str::to_owned).unwrap_or_else(|| p.to_string())));
            }
            let answer = self.call(reqwest::Method::GET, &path, None).await?;
            count += answer["events"].as_array().map_or(0, |e| e.len() as u64);
            match answer.get("next_page") {
                Some(next) if !next.is_null() => page = Some(next.clone()),
                _ => return Ok(count),
            }
        }
    }
}

/// One event's JSON: about 900 bytes stored, with a related resource and a payload, as a
/// realistic event is (issue 10 measured ~0.9 KB of data per event).
fn event(name: &str, key: &str, n: u64) -> Value {
    json!({
        "event": name,
        "resource": {"prefect.resource.id": key, "prefect.resource.name": "bench", "team": "data"},
        "related": [{"prefect.resource.id": format!("bench.customer.{key}"), "prefect.resource.role": "customer",
                     "tier": "gold"}],
        "payload": {"n": n, "amount": 1234.5, "currency": "EUR", "note": "x".repeat(560)}
    })
}

/// A small event (no payload): the buckets scenario measures memory, not bytes stored.
fn small_event(name: &str, key: &str) -> Value {
    json!({"event": name, "resource": {"prefect.resource.id": key}})
}

/// Events `0..total` (the `k`th made by `make`), split into [`BATCH_CONNECTIONS`] equal
/// ranges, each connection sending its range in requests of [`BATCH`] events.
fn split_over_connections(
    total: u64,
    make: impl Fn(u64) -> Value + Send + Sync + 'static,
) -> Arc<impl Fn(usize, u64) -> Option<Body> + Send + Sync + 'static> {
    let per_connection = total.div_ceil(BATCH_CONNECTIONS as u64);
    Arc::new(move |connection: usize, n: u64| {
        let first = connection as u64 * per_connection + n * BATCH;
        let end = ((connection as u64 + 1) * per_connection).min(total);
        (first < end).then(|| body_of((first..(first + BATCH).min(end)).map(&make).collect()))
    })
}

fn body_of(events: Vec<Value>) -> Body {
    let n = events.len() as u64;
    (Bytes::from(Value::Array(events).to_string()), n)
}

/// Every figure (name → value), and the table's rows.
#[derive(Default)]
struct Figures {
    values: Map<String, Value>,
    errors: Map<String, Value>,
    rows: Vec<Vec<String>>,
}

impl Figures {
    fn set(&mut self, name: &str, value: f64) {
        self.values.insert(name.to_owned(), json!(value));
    }

    /// Records a load outcome's figures under `prefix` and its failures, warning about them.
    fn outcome(&mut self, prefix: &str, outcome: &Outcome) {
        self.set(&format!("{prefix}_events_per_s"), outcome.events_per_sec());
        self.set(&format!("{prefix}_p50_ms"), outcome.ms(0.5));
        self.set(&format!("{prefix}_p99_ms"), outcome.ms(0.99));
        self.set(&format!("{prefix}_max_ms"), outcome.max_ms());
        self.errors.insert(prefix.to_owned(), json!(outcome.errors));
        if outcome.errors > 0 {
            eprintln!(
                "warning: {prefix}: {} requests failed; the first: {}",
                outcome.errors,
                outcome.first_error.as_deref().unwrap_or("?")
            );
        }
    }
}

fn rate(x: f64) -> String {
    let n = x.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in MiB.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn latencies(o: &Outcome) -> String {
    format!("p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", o.ms(0.5), o.ms(0.99), o.max_ms())
}

async fn bench(args: &BenchArgs, work: &Path) -> Result<Report, String> {
    let sizes = if args.quick { QUICK } else { FULL };
    let names = Names::new();
    let mut figures = Figures::default();

    // A server named with --api must answer before anything is measured.
    if let Some(url) = &args.api {
        let api = Api::new(url)?;
        if !api.healthy().await {
            return Err(format!("--api: the server at {url} does not answer GET /health with true"));
        }
    }

    // The machine's limits, in this run.
    eprintln!(
        "limit: {}, {} records of {} bytes, {} per transaction",
        redb_limit::LABEL,
        sizes.redb_records,
        redb_limit::RECORD_BYTES,
        redb_limit::RECORDS_PER_TRANSACTION
    );
    let storage_dir = work.join("storage-limit");
    let records = sizes.redb_records;
    let storage = tokio::task::spawn_blocking(move || redb_limit::inserts_per_sec(&storage_dir, records))
        .await
        .map_err(|e| format!("the storage limit failed: {e}"))??;
    figures.set("limit_redb_inserts_per_s", storage);
    eprintln!("limit: a bare axum JSON endpoint, {SINGLE_CONNECTIONS} connections, {} s", sizes.closed.as_secs());
    let bare = {
        let endpoint = bare_axum::Bare::start()?;
        let body: Body = body_of(vec![event("bench.ingest", "bare", 0)]);
        let progress = Progress::start("bare axum");
        let body = Arc::new(move |_: usize, _: u64| Some(body.clone()));
        driver::closed_loop(&endpoint.url, SINGLE_CONNECTIONS, Stop::After(sizes.closed), &progress, body).await?
    };
    figures.outcome("limit_axum", &bare);
    figures.set("limit_axum_requests_per_s", bare.requests_per_sec());

    // Our server: started here unless --api.
    let mut spawned = None;
    let api_url = match &args.api {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let server = Spawned::start(&work.join("server"), "127.0.0.1:0")?;
            let url = server.api.clone();
            spawned = Some(server);
            url
        }
    };
    let api = Api::new(&api_url)?;
    if !api.healthy().await {
        return Err(format!("the server at {api_url} is not healthy (GET /health)"));
    }
    api.install(&names).await?;
    let events_url = format!("{api_url}/events");

    // Batched ingest.
    eprintln!("batched ingest: {BATCH} events/request, {BATCH_CONNECTIONS} connections, {} s", sizes.closed.as_secs());
    let batched = {
        let body = body_of((0..BATCH).map(|n| event("bench.ingest", &format!("ingest-{n}"), n)).collect());
        let progress = Progress::start("batched ingest");
        let body = Arc::new(move |_: usize, _: u64| Some(body.clone()));
        driver::closed_loop(&events_url, BATCH_CONNECTIONS, Stop::After(sizes.closed), &progress, body).await?
    };
    figures.outcome("batched", &batched);
    figures.rows.push(vec![
        format!("batched ingest, {BATCH} events/request, {BATCH_CONNECTIONS} connections"),
        format!("{} events/s, {}", rate(batched.events_per_sec()), latencies(&batched)),
        format!("{}: {}/s", redb_limit::LABEL, rate(storage)),
        format!("≥150,000 events/s and ≥0.55 of the {} figure", redb_limit::ENGINE),
    ]);

    // One event per request.
    eprintln!("one event per request, {SINGLE_CONNECTIONS} connections, {} s", sizes.closed.as_secs());
    let single = {
        let body = body_of(vec![event("bench.ingest", "single", 0)]);
        let progress = Progress::start("one event per request");
        let body = Arc::new(move |_: usize, _: u64| Some(body.clone()));
        driver::closed_loop(&events_url, SINGLE_CONNECTIONS, Stop::After(sizes.closed), &progress, body).await?
    };
    figures.outcome("single", &single);
    figures.rows.push(vec![
        format!("one event per request, {SINGLE_CONNECTIONS} connections"),
        format!("{} events/s, {}", rate(single.events_per_sec()), latencies(&single)),
        format!("bare axum JSON endpoint: {} req/s, {}", rate(bare.requests_per_sec()), latencies(&bare)),
        "≥40,000 events/s, p99 ≤10 ms".into(),
    ]);

    // Firings: after→expect pairs for distinct keys. Each connection owns a range of keys and
    // sends a request of `after` events, then the request of their `expect` events.
    let pairs = sizes.pairs;
    eprintln!("firings: {pairs} after→expect pairs, {BATCH} events/request, {BATCH_CONNECTIONS} connections");
    let firings = {
        let per_connection = pairs.div_ceil(BATCH_CONNECTIONS as u64);
        let tag = names.tag.clone();
        let body = Arc::new(move |connection: usize, n: u64| {
            let first = connection as u64 * per_connection + (n / 2) * BATCH;
            let end = ((connection as u64 + 1) * per_connection).min(pairs);
            if first >= end {
                return None;
            }
            let name = if n % 2 == 0 { "bench.order.created" } else { "bench.order.complete" };
            Some(body_of((first..(first + BATCH).min(end)).map(|k| event(name, &format!("{tag}-{k}"), k)).collect()))
        });
        let progress = Progress::start("firings");
        driver::closed_loop(&events_url, BATCH_CONNECTIONS, Stop::Exhausted, &progress, body).await?
    };
    figures.outcome("firings_ingest", &firings);
    // Runs are created in the commit that acknowledges the `expect` event; wait a little for
    // stragglers all the same, then count.
    let mut found = api.runs_scheduled(&names).await?;
    let waited = Instant::now();
    while found < pairs && waited.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        found = api.runs_scheduled(&names).await?;
    }
    let lost = found != pairs;
    let firings_per_s = found as f64 / firings.elapsed.as_secs_f64().max(1e-9);
    figures.set("firings_per_s", firings_per_s);
    figures.rows.push(vec![
        format!("firings/s, {pairs} after→expect pairs"),
        format!(
            "{} firings/s ({} events/s, {}), {}",
            rate(firings_per_s),
            rate(firings.events_per_sec()),
            latencies(&firings),
            if lost { format!("LOST: {found} runs for {pairs} pairs") } else { format!("none lost ({found} runs)") }
        ),
        "Prefect 3.8.8 here: 62/s on PostgreSQL (issue 10)".into(),
        "≥62,000/s (1,000x), none lost".into(),
    ]);

    // Paced: open loop.
    let per_request = (sizes.paced_rate / PACED_REQUESTS_PER_SEC).max(1);
    eprintln!(
        "paced: {} events/s for {} s, open loop ({PACED_REQUESTS_PER_SEC} requests/s of {per_request} events)",
        sizes.paced_rate,
        sizes.paced.as_secs()
    );
    let paced = {
        let body = body_of((0..per_request).map(|n| event("bench.ingest", &format!("paced-{n}"), n)).collect());
        let progress = Progress::start("paced");
        let interval = Duration::from_secs(1) / PACED_REQUESTS_PER_SEC as u32;
        driver::open_loop(&events_url, interval, sizes.paced, None, &progress, body).await?
    };
    figures.outcome("paced", &paced);
    let stall_ms = paced.longest_gap.as_secs_f64() * 1000.0;
    figures.set("paced_longest_stall_ms", stall_ms);
    figures.rows.push(vec![
        format!("paced {} events/s, {} s", rate(sizes.paced_rate as f64), sizes.paced.as_secs()),
        format!("ack {}, longest stall {stall_ms:.1} ms", latencies(&paced)),
        "—".into(),
        "ack p99 ≤10 ms, no stall over 50 ms".into(),
    ]);

    // Buckets and restart: on a fresh server of our own, so that memory is the buckets'.
    if let Some(first) = spawned.take() {
        api.uninstall(&names).await;
        first.stop()?;
        let _ = std::fs::remove_dir_all(work.join("server"));
        buckets(&mut figures, &names, sizes, work).await?;
        let _ = std::fs::remove_dir_all(work.join("buckets"));
        backtest(&mut figures, &names, sizes, work).await?;
    } else {
        api.uninstall(&names).await;
        eprintln!("memory, restart and backtest: skipped (they need the server's process; run without --api)");
    }

    let json = json!({
        "quick": args.quick,
        "api": args.api,
        "started_server": args.api.is_none(),
        "sizes": {
            "closed_s": sizes.closed.as_secs(), "pairs": sizes.pairs, "paced_rate": sizes.paced_rate,
            "paced_s": sizes.paced.as_secs(), "buckets": sizes.buckets, "redb_records": sizes.redb_records,
            "backtest_events": sizes.backtest_events,
            "batch": BATCH, "batch_connections": BATCH_CONNECTIONS, "single_connections": SINGLE_CONNECTIONS,
        },
        "figures": figures.values,
        "failed_requests": figures.errors,
        "checks": {"firings_expected": pairs, "firings_found": found, "firings_none_lost": !lost},
    });
    Ok(Report { rows: figures.rows, json, lost })
}

/// Live buckets' memory on a fresh server, then the time to restart with them.
async fn buckets(figures: &mut Figures, names: &Names, sizes: Sizes, work: &Path) -> Result<(), String> {
    let data = work.join("buckets");
    let server = Spawned::start(&data, "127.0.0.1:0")?;
    let api = Api::new(&server.api)?;
    api.install(names).await?;
    let total = sizes.buckets;
    eprintln!("buckets: {total} live buckets, {BATCH} events/request, {BATCH_CONNECTIONS} connections");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (before, _) = server.memory()?;
    let opened = {
        let body = split_over_connections(total, |k| small_event("bench.bucket.open", &format!("b{k:010}")));
        let progress = Progress::start("buckets");
        driver::closed_loop(&format!("{}/events", server.api), BATCH_CONNECTIONS, Stop::Exhausted, &progress, body)
            .await?
    };
    figures.outcome("buckets_ingest", &opened);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after, peak) = server.memory()?;
    let per_bucket = after.saturating_sub(before) as f64 / total as f64;
    let data_bytes = server::dir_bytes(&data);
    figures.set("bucket_resident_bytes", per_bucket);
    figures.set("buckets_rss_bytes", after as f64);
    figures.set("buckets_peak_bytes", peak as f64);
    figures.set("buckets_data_bytes", data_bytes as f64);
    figures.rows.push(vec![
        format!("{} live buckets", rate(total as f64)),
        format!(
            "{per_bucket:.0} B/bucket resident (RSS {:.0} → {:.0} MiB); peak {:.0} MiB; data {:.0} MiB",
            mib(before),
            mib(after),
            mib(peak),
            mib(data_bytes)
        ),
        "—".into(),
        "≤256 B/bucket, peak ≤1.5x steady".into(),
    ]);

    // Restart: SIGTERM, then from spawn to `/api/health` true on the same data and port.
    eprintln!("restart with {total} buckets");
    let addr = server.addr();
    let stopped = server.stop()?;
    let spawned_at = Instant::now();
    let again = Spawned::start(&data, &addr)?;
    let api = Api::new(&again.api)?;
    while !api.healthy().await {
        if spawned_at.elapsed() > server::START_TIMEOUT {
            return Err(format!("the restarted server was not healthy within {} s", server::START_TIMEOUT.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let restart = spawned_at.elapsed().as_secs_f64();
    figures.set("restart_s", restart);
    figures.set("shutdown_s", stopped.as_secs_f64());
    figures.rows.push(vec![
        format!("restart with {} buckets", rate(total as f64)),
        format!("{restart:.2} s (spawn to /api/health true; the shutdown before took {:.2} s)", stopped.as_secs_f64()),
        "—".into(),
        "≤1 s".into(),
    ]);
    again.stop()?;
    Ok(())
}

/// A backtest over stored events on a fresh server: how long it takes and the memory it adds,
/// and paced ingest's latency while it runs beside that of the same load before and after.
async fn backtest(figures: &mut Figures, names: &Names, sizes: Sizes, work: &Path) -> Result<(), String> {
    let data = work.join("backtest");
    let server = Spawned::start(&data, "127.0.0.1:0")?;
    let api = Api::new(&server.api)?;
    let total = sizes.backtest_events;
    eprintln!("backtest: storing {total} events (order created, then completed, per key)");
    let stored = {
        let tag = names.tag.clone();
        // Keys pair up: an even event creates the order, the next one completes it.
        let body = split_over_connections(total, move |k| {
            let name = if k % 2 == 0 { "bench.order.created" } else { "bench.order.complete" };
            event(name, &format!("{tag}-bt-{}", k / 2), k)
        });
        let progress = Progress::start("backtest events");
        driver::closed_loop(&format!("{}/events", server.api), BATCH_CONNECTIONS, Stop::Exhausted, &progress, body)
            .await?
    };
    figures.outcome("backtest_store", &stored);

    // Paced ingest alone (once the bulk load's writes have settled), beside the backtest
    // (until it ends), and alone again after it: the fair comparison is with the same
    // storage, before and after.
    tokio::time::sleep(SETTLE).await;
    let per_request = (sizes.paced_rate / PACED_REQUESTS_PER_SEC).max(1);
    let interval = Duration::from_secs(1) / PACED_REQUESTS_PER_SEC as u32;
    let paced_body = || body_of((0..per_request).map(|n| event("bench.ingest", &format!("beside-{n}"), n)).collect());
    let events_url = format!("{}/events", server.api);
    let paced = |label: &'static str| {
        let (url, body) = (events_url.clone(), paced_body());
        async move { driver::open_loop(&url, interval, sizes.paced, None, &Progress::start(label), body).await }
    };
    let alone = paced("paced, alone before").await?;
    figures.outcome("backtest_paced_alone", &alone);

    let (before, _) = server.memory()?;
    let definition = json!({
        "id": format!("{}-backtest", names.pairs),
        "trigger": {"after": ["bench.order.created"], "expect": ["bench.order.complete"],
                    "for_each": ["prefect.resource.id"], "posture": "Reactive", "threshold": 1, "within": 3600},
        "parameters": {"key": "{{ event.resource.id }}"}
    });
    eprintln!("backtest: reading {total} stored events, beside paced ingest of {} events/s", sizes.paced_rate);
    let started = Instant::now();
    let record = api.call(reqwest::Method::POST, "/backtest", Some(json!({"definitions": [definition]}))).await?;
    let id = record["id"].as_str().ok_or("the backtest answer has no id")?.to_owned();
    let follow = async {
        let mut most = before;
        loop {
            let record = api.call(reqwest::Method::GET, &format!("/backtest/{id}"), None).await?;
            most = most.max(server.memory()?.0);
            if record["state"] != "running" {
                return Ok::<_, String>((record, started.elapsed(), most));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // Beside it for as long as it runs (at most 10 times the paced scenario's length).
    let ended = AtomicBool::new(false);
    let beside = async {
        let progress = Progress::start("paced, beside");
        driver::open_loop(&events_url, interval, sizes.paced * 10, Some(&ended), &progress, paced_body()).await
    };
    let follow = async {
        let followed = follow.await;
        ended.store(true, Ordering::Release);
        followed
    };
    let (followed, beside) = tokio::join!(follow, beside);
    let (record, took, most) = followed?;
    let beside = beside?;
    let after = paced("paced, alone after").await?;
    figures.outcome("backtest_paced_after", &after);
    figures.outcome("backtest_paced_beside", &beside);
    if record["state"] != "completed" {
        return Err(format!("the backtest did not complete: {record}"));
    }
    let read = record["events_read"].as_u64().unwrap_or(0);
    let fired: u64 = record["summary"]["firings"].as_object().map_or(0, |f| f.values().filter_map(Value::as_u64).sum());
    let took = took.as_secs_f64();
    let added = most.saturating_sub(before);
    figures.set("backtest_s", took);
    figures.set("backtest_events_per_s", read as f64 / took.max(1e-9));
    figures.set("backtest_events_read", read as f64);
    figures.set("backtest_firings", fired as f64);
    figures.set("backtest_added_rss_bytes", added as f64);
    figures.set("backtest_rss_bytes", most as f64);
    figures.rows.push(vec![
        format!("backtest of {} stored events", rate(read as f64)),
        format!(
            "{took:.1} s ({} events/s), {} firings; RSS +{:.0} MiB while it ran ({:.0} → {:.0} MiB)",
            rate(read as f64 / took.max(1e-9)),
            rate(fired as f64),
            mib(added),
            mib(before),
            mib(most)
        ),
        "—".into(),
        "finishes, memory bounded (issue 13)".into(),
    ]);
    figures.rows.push(vec![
        format!("paced {} events/s beside the backtest", rate(sizes.paced_rate as f64)),
        format!("ack {}", latencies(&beside)),
        format!("alone, before: ack {}; after: ack {}", latencies(&alone), latencies(&after)),
        "not hurt (issue 13)".into(),
    ]);
    server.stop()?;
    Ok(())
}
