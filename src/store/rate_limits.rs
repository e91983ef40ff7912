//! Rate limits: the static limits made through the API, and each key's open window (what
//! runs took from it since it started), written in the same commit as the claims that took
//! the units.
//!
//! Layout: `rate_limits`: key → [`RateLimit`], JSON; `rate_windows`: key → [`RateLimitWindow`],
//! JSON (a window is deleted once it has ended).

use redb::TableDefinition;

use crate::model::{RateLimit, RateLimitWindow};

use super::{all_values, by_name, encode, Store, StoreError, Tx};

pub(super) const RATE_LIMITS: TableDefinition<&str, &[u8]> = TableDefinition::new("rate_limits");
pub(super) const RATE_WINDOWS: TableDefinition<&str, &[u8]> = TableDefinition::new("rate_windows");

impl Store {
    /// Every static limit, by key.
    pub fn rate_limits(&self) -> Result<Vec<RateLimit>, StoreError> {
        all_values(&self.read()?.open_table(RATE_LIMITS)?, "rate limit")
    }

    /// Every stored window, by key (some may have ended since).
    pub fn rate_windows(&self) -> Result<Vec<RateLimitWindow>, StoreError> {
        all_values(&self.read()?.open_table(RATE_WINDOWS)?, "rate limit window")
    }
}

impl Tx {
    /// Stores a static limit.
    pub fn put_rate_limit(&self, limit: &RateLimit) -> Result<(), StoreError> {
        self.writable(RATE_LIMITS)?.insert(limit.key.as_str(), encode(limit).as_slice())?;
        Ok(())
    }

    /// One static limit.
    pub fn rate_limit(&self, key: &str) -> Result<Option<RateLimit>, StoreError> {
        by_name(&self.tx.open_table(RATE_LIMITS)?, key, "rate limit")
    }

    /// Removes a static limit; false when there was none.
    pub fn delete_rate_limit(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.writable(RATE_LIMITS)?.remove(key)?.is_some())
    }

    /// Stores a key's window.
    pub fn put_rate_window(&self, window: &RateLimitWindow) -> Result<(), StoreError> {
        self.writable(RATE_WINDOWS)?.insert(window.key.as_str(), encode(window).as_slice())?;
        Ok(())
    }

    /// Removes a key's window (it ended).
    pub fn delete_rate_window(&self, key: &str) -> Result<(), StoreError> {
        self.writable(RATE_WINDOWS)?.remove(key)?;
        Ok(())
    }
}
