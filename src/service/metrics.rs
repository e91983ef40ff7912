//! What the service counts, for `GET /metrics` (Prometheus' text format, by the Prometheus
//! project's own client). Counters move only after the commit that made what they count
//! durable; gauges are read as they are.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A metric's labels.
type Labels = Vec<(&'static str, String)>;

/// Every metric of one service; cheap to share (`Arc`).
pub struct Metrics {
    registry: Registry,
    /// Events accepted and stored (duplicates not included).
    pub events_accepted: Counter,
    /// Events acknowledged that had been accepted before (a client's resend).
    pub events_duplicate: Counter,
    /// Requests of events refused, by `reason` (the error code the client got).
    pub events_rejected: Family<Labels, Counter>,
    /// Firings, by `trigger` and `outcome` (`run`, `no_run`: no deployment set, `error`: no
    /// run could be created).
    pub firings: Family<Labels, Counter>,
    /// Runs entering a state, by `deployment` and `state`.
    pub runs: Family<Labels, Counter>,
    /// Live buckets, by `trigger`.
    pub live_buckets: Family<Labels, Gauge>,
    /// Commands committed together.
    pub batch_commands: Histogram,
    /// Time to apply and commit one batch, in seconds.
    pub batch_seconds: Histogram,
    /// Commands waiting for the core.
    pub queue_depth: Gauge,
    /// Open `/api/events/out` subscribers.
    pub subscribers: Gauge,
    /// Open `/api/events/in` streams.
    pub event_streams: Gauge,
    /// Worker claims answered, by `outcome` (`runs` or `empty`).
    pub claims: Family<Labels, Counter>,
    /// Runs handed to workers by claims.
    pub claimed_runs: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tripwire");
        let metrics = Metrics {
            events_accepted: Counter::default(),
            events_duplicate: Counter::default(),
            events_rejected: Family::default(),
            firings: Family::default(),
            runs: Family::default(),
            live_buckets: Family::default(),
            // 1 to 256 commands.
            batch_commands: Histogram::new(exponential_buckets(1.0, 2.0, 9)),
            // 50 µs to about 1.6 s.
            batch_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            queue_depth: Gauge::default(),
            subscribers: Gauge::default(),
            event_streams: Gauge::default(),
            claims: Family::default(),
            claimed_runs: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("events_accepted", "Events accepted and stored", metrics.events_accepted.clone());
        r.register("events_duplicate", "Events acknowledged again (accepted before)", metrics.events_duplicate.clone());
        r.register("events_rejected", "Requests of events refused, by reason", metrics.events_rejected.clone());
        r.register("firings", "Trigger firings, by trigger and outcome", metrics.firings.clone());
        r.register("runs", "Runs entering a state, by deployment and state", metrics.runs.clone());
        r.register("live_buckets", "Live buckets, by trigger", metrics.live_buckets.clone());
        r.register("batch_commands", "Commands committed in one transaction", metrics.batch_commands.clone());
        r.register("batch_seconds", "Time to apply and commit a batch", metrics.batch_seconds.clone());
        r.register("queue_depth", "Commands waiting for the core", metrics.queue_depth.clone());
        r.register("subscribers", "Open /api/events/out subscribers", metrics.subscribers.clone());
        r.register("event_streams", "Open /api/events/in streams", metrics.event_streams.clone());
        r.register("claims", "Worker claims answered, by outcome", metrics.claims.clone());
        r.register("claimed_runs", "Runs handed to workers by claims", metrics.claimed_runs.clone());
        Metrics { registry, ..metrics }
    }
}

impl Metrics {
    /// A fresh set, shared.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// Every metric in Prometheus' (OpenMetrics) text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// A trigger's live buckets as last counted (0 before the first count).
    pub fn live_buckets_of(&self, trigger: &str) -> u64 {
        let labels = vec![("trigger", trigger.to_owned())];
        self.live_buckets.get(&labels).map_or(0, |g| g.get().max(0) as u64)
    }

    /// One request of events refused with `reason`.
    pub fn reject(&self, reason: &str) {
        self.events_rejected.get_or_create(&vec![("reason", reason.to_owned())]).inc();
    }
}

/// Keeps a gauge raised while it lives (an open connection).
pub struct Raised(Gauge);

impl Raised {
    /// Raises `gauge` by one until dropped.
    pub fn new(gauge: &Gauge) -> Raised {
        gauge.inc();
        Raised(gauge.clone())
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_names_every_metric_with_its_labels() {
        let metrics = Metrics::new();
        metrics.events_accepted.inc_by(3);
        metrics.reject("invalid");
        metrics.firings.get_or_create(&vec![("trigger", "t".into()), ("outcome", "run".into())]).inc();
        {
            let _open = Raised::new(&metrics.subscribers);
            assert!(metrics.encode().contains("tripwire_subscribers 1\n"));
        }
        let text = metrics.encode();
        for line in [
            "tripwire_events_accepted_total 3",
            "tripwire_events_rejected_total{reason=\"invalid\"} 1",
            "tripwire_firings_total{trigger=\"t\",outcome=\"run\"} 1",
            "tripwire_subscribers 0",
            "# TYPE tripwire_batch_seconds histogram",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
    }
}
