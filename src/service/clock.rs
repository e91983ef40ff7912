//! The outside world's two inputs besides requests: the time and fresh ids. This is the only
//! place that reads the wall clock or draws random ids.

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

/// A fresh random id (for events without one and runs created by hand).
#[allow(clippy::disallowed_methods)] // the one place that draws random ids
pub fn new_id() -> Uuid {
    Uuid::new_v4()
}
