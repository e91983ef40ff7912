//! The load generator: closed-loop connections (each sends its next request when the previous
//! one is answered) and an open-loop pacer (sends on schedule, whatever the answers), both over
//! HTTP/1.1 with reqwest, each request's latency recorded in an HDR histogram.
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use hdrhistogram::Histogram;
use tokio::time::Instant;

/// How long one request may take before it counts as failed: 30 s, so that stalls are
/// measured rather than cut short (as with `wrk --timeout 30s`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest latency the histograms hold, in microseconds (longer ones are recorded as this):
/// twice [`REQUEST_TIMEOUT`].
const MAX_LATENCY_US: u64 = 60_000_000;

/// A request body and how many events it carries.
pub type Body = (Bytes, u64);

/// What one scenario's requests did.
#[derive(Debug)]
pub struct Outcome {
    /// Requests answered with a success status.
    pub requests: u64,
    /// Events in those requests.
    pub events: u64,
    /// Requests that failed (an error status, a timeout, a broken connection).
    pub errors: u64,
    /// The first failure, to show the user.
    pub first_error: Option<String>,
    /// From the first request sent to the last answer.
    pub elapsed: Duration,
    /// Latency of every answered request, in microseconds.
    pub latency: Histogram<u64>,
    /// Open loop only: the longest time between two consecutive answers (or from the start to
    /// the first one): how long the server stopped answering.
    pub longest_gap: Duration,
}

impl Outcome {
    fn new() -> Outcome {
        Outcome {
            requests: 0,
            events: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            latency: histogram(),
            longest_gap: Duration::ZERO,
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.requests += other.requests;
        self.events += other.events;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
    }

    fn failed(&mut self, why: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(why);
        }
    }

    /// Acknowledged events per second.
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Answered requests per second.
    pub fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency at quantile `q` (0.5, 0.99), in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    /// The longest latency, in milliseconds.
    pub fn max_ms(&self) -> f64 {
        self.latency.max() as f64 / 1000.0
    }
}

fn histogram() -> Histogram<u64> {
    // Fixed, valid bounds: construction cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

fn client(pool: usize) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(pool)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Sends one request; `Ok` when the server answered with a success status.
async fn post(client: &reqwest::Client, url: &str, body: Bytes) -> Result<(), String> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = response.status();
    // Read the whole answer, so that the connection is reused.
    let text = response.bytes().await.map_err(|e| format!("POST {url}: reading the answer: {e}"))?;
    if status.is_success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&text);
        Err(format!("POST {url}: {status}: {}", text.chars().take(300).collect::<String>()))
    }
}

/// Prints what a scenario has done so far to stderr, once a second.
pub struct Progress {
    events: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
}

impl Progress {
    /// Starts printing `label: Ns, N events (N/s)` lines.
    pub fn start(label: &str) -> Progress {
        let events = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (counter, stop, label) = (events.clone(), done.clone(), label.to_owned());
        tokio::spawn(async move {
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let n = counter.load(Ordering::Relaxed);
                let secs = start.elapsed().as_secs_f64();
                eprintln!("  {label}: {secs:>4.0} s, {n} events ({:.0}/s)", n as f64 / secs);
            }
        });
        Progress { events, done }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// When a closed loop stops.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// After this long (each connection finishes the request it is in).
    After(Duration),
    /// When every connection's bodies run out.
    Exhausted,
}

/// `connections` connections, each sending `body(connection, n)` for n = 0, 1, ... one after
/// the other (the next when the previous is answered), until `stop` or until `body` answers
/// `None`. A failed request is counted and not retried.
pub async fn closed_loop(
    url: &str,
    connections: usize,
    stop: Stop,
    progress: &Progress,
    body: Arc<dyn Fn(usize, u64) -> Option<Body> + Send + Sync>,
) -> Result<Outcome, String> {
    let start = Instant::now();
    let deadline = match stop {
        Stop::After(d) => Some(start + d),
        Stop::Exhausted => None,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for connection in 0..connections {
        // One client per connection: exactly `connections` connections, each reused.
        let client = client(1)?;
        let (url, body, events) = (url.to_owned(), body.clone(), progress.events.clone());
        tasks.spawn(async move {
            let mut outcome = Outcome::new();
            let mut n = 0u64;
            while deadline.is_none_or(|d| Instant::now() < d) {
                let Some((bytes, count)) = body(connection, n) else { break };
                n += 1;
                let sent = Instant::now();
                match post(&client, &url, bytes).await {
                    Ok(()) => {
                        let us = sent.elapsed().as_micros().min(u128::from(MAX_LATENCY_US)) as u64;
                        outcome.latency.saturating_record(us.max(1));
                        outcome.requests += 1;
                        outcome.events += count;
                        events.fetch_add(count, Ordering::Relaxed);
                    }
                    Err(why) => outcome.failed(why),
                }
            }
            outcome
        });
    }
    let mut all = Outcome::new();
    while let Some(joined) = tasks.join_next().await {
        all.merge(joined.map_err(|e| format!("a load connection failed: {e}"))?);
    }
    all.elapsed = start.elapsed();
    Ok(all)
}

/// Open loop: request n is sent at `start + n * interval` whether or not the earlier ones were
/// answered (each on a connection of the pool, new ones opened as needed), for `duration`.
/// Latency counts from when a request was due, so a stalled server is not excused by the
/// requests it kept from being sent. With `ended`, no request is sent once it is set (the
/// load runs beside something that ends first).
pub async fn open_loop(
    url: &str,
    interval: Duration,
    duration: Duration,
    ended: Option<&AtomicBool>,
    progress: &Progress,
    body: Body,
) -> Result<Outcome, String> {
    let client = client(usize::MAX)?;
    let total = (duration.as_nanos() / interval.as_nanos().max(1)) as u64;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Instant, Result<(), String>)>();
    let start = Instant::now();
    for n in 0..total {
        let due = start + Duration::from_nanos((interval.as_nanos() as u64).saturating_mul(n));
        tokio::time::sleep_until(due).await;
        if ended.is_some_and(|e| e.load(Ordering::Acquire)) {
            break;
        }
        let (client, url, bytes, tx) = (client.clone(), url.to_owned(), body.0.clone(), tx.clone());
        let (events, count) = (progress.events.clone(), body.1);
        tokio::spawn(async move {
            let result = post(&client, &url, bytes).await;
            if result.is_ok() {
                events.fetch_add(count, Ordering::Relaxed);
            }
            let _ = tx.send((due, Instant::now(), result));
        });
    }
    drop(tx);
    let mut outcome = Outcome::new();
    let mut acks = Vec::with_capacity(total as usize);
    while let Some((due, answered, result)) = rx.recv().await {
        match result {
            Ok(()) => {
                let us = answered.duration_since(due).as_micros().min(u128::from(MAX_LATENCY_US)) as u64;
                outcome.latency.saturating_record(us.max(1));
                outcome.requests += 1;
                outcome.events += body.1;
                acks.push(answered);
            }
            Err(why) => outcome.failed(why),
        }
    }
    acks.sort_unstable();
    let mut previous = start;
    for ack in &acks {
        outcome.longest_gap = outcome.longest_gap.max(ack.duration_since(previous));
        previous = *ack;
    }
    outcome.elapsed = previous.duration_since(start);
    Ok(outcome)
}
