//! The outside world's inputs besides requests: the time, fresh ids and secrets. This is the
//! only place that reads the wall clock or draws fresh ids and random bytes.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use uuid::Uuid;

use crate::model::time::{Span, Timestamp};

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Timestamp;
    /// True for the wall clock: the service then runs its own timer; a manual clock is
    /// advanced by whoever owns it, who calls `Service::tick`.
    fn is_wall_clock(&self) -> bool;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that reads the wall clock
    fn now(&self) -> Timestamp {
        Timestamp::from(chrono::Utc::now())
    }

    fn is_wall_clock(&self) -> bool {
        true
    }
}

/// A clock that moves only when told to (tests, replays through the server).
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock stopped at `at`.
    pub fn new(at: Timestamp) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(at.as_micros())))
    }

    /// Moves the clock to `at`.
    pub fn set(&self, at: Timestamp) {
        self.0.store(at.as_micros(), Ordering::SeqCst);
    }

    /// Moves the clock forward by `span`.
    pub fn advance(&self, span: Span) {
        self.0.fetch_add(span.as_micros(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.0.load(Ordering::SeqCst))
    }

    fn is_wall_clock(&self) -> bool {
        false
    }
}

/// A fresh id (for events without one, run-state events and runs created by hand): a
/// UUIDv7, as Prefect's own client sends, so ids made one after another sort in time order and
/// the indexes keyed by id grow at their end instead of touching a random page per insert.
/// Unique and increasing within the process (a counter breaks ties within a millisecond);
/// its random part comes from a user-space generator seeded once, not a system call per id.
#[allow(clippy::disallowed_methods)] // the one place that draws fresh ids
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

/// Where the service's fresh ids come from (missing event ids, runs created by hand or as
/// children, run-state events, scope filters, backtests), handed in with the clock
/// ([`super::ServiceConfig::ids`]) so that a test or a replay can make them predictable.
pub trait IdSource: Send + Sync + 'static {
    /// A new id, never given before by this source.
    fn new_id(&self) -> Uuid;
}

/// Fresh random UUIDv7s ([`new_id`]): the default.
#[derive(Clone, Copy, Debug, Default)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn new_id(&self) -> Uuid {
        new_id()
    }
}

/// Ids counted up from a start (`SequentialIds::from(1)` gives `…0001`, `…0002`, ...): the
/// same inputs give the same ids, for tests.
#[derive(Debug)]
pub struct SequentialIds(std::sync::atomic::AtomicU64);

impl SequentialIds {
    /// Counts from `first`.
    pub fn from(first: u64) -> SequentialIds {
        SequentialIds(std::sync::atomic::AtomicU64::new(first))
    }
}

impl IdSource for SequentialIds {
    fn new_id(&self) -> Uuid {
        Uuid::from_u128(u128::from(self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed)))
    }
}

/// Measures how long something took (the metrics' latencies), on the monotonic clock.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch(std::time::Instant);

impl Stopwatch {
    /// Starts now.
    #[allow(clippy::disallowed_methods)] // the one place that reads the wall clock
    pub fn start() -> Stopwatch {
        Stopwatch(std::time::Instant::now())
    }

    /// The time since it started.
    pub fn elapsed(&self) -> std::time::Duration {
        self.0.elapsed()
    }
}

/// `N` random bytes from the operating system's generator, for secrets (API keys and the salt
/// of their digests): never derived, never replayed.
pub fn secret_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}

#[cfg(test)]
mod id_tests {
    use super::new_id;

    #[test]
    fn fresh_ids_are_version_7_and_increase_one_after_another() {
        let ids: Vec<uuid::Uuid> = (0..10_000).map(|_| new_id()).collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 7), "{}", ids[0]);
        // Many fall in the same millisecond: the counter still orders them, and none repeats.
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids out of order");
    }
}
