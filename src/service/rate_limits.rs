//! The rate limiter the run queue asks before it hands a run to a worker: the static limits
//! and each key's current window. Pure (the time is given); the core stores the windows it
//! changed in the same commit as the claim, so a restart neither forgets what was taken nor
//! gives a window back.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::rate_limit::check_key;
use crate::model::{RateLimit, RateLimitQuota, RateLimitStatus, RateLimitWindow, RunRateLimit, Timestamp};

use super::core::Command;
use super::{Service, ServiceError};

impl Service {
    /// Creates or changes the static limit `key`; answers it and whether it was created.
    pub async fn put_rate_limit(&self, key: String, quota: RateLimitQuota) -> Result<(RateLimit, bool), ServiceError> {
        check_key(&key).map_err(ServiceError::Invalid)?;
        quota.validate().map_err(ServiceError::Invalid)?;
        self.call(|reply| Command::PutRateLimit { key, quota, reply }).await
    }

    /// Removes the static limit `key` (409 while a deployment takes units from it).
    pub async fn delete_rate_limit(&self, key: String) -> Result<(), ServiceError> {
        self.call(|reply| Command::DeleteRateLimit { key, reply }).await
    }

    /// Every static limit, and every dynamic key with an open window: its quota, what is
    /// used and left, and when the window resets.
    pub async fn rate_limits(&self) -> Result<Vec<RateLimitStatus>, ServiceError> {
        let now = self.now();
        let (statics, windows) = self.read(|store| Ok((store.rate_limits()?, store.rate_windows()?))).await?;
        let by_key: HashMap<&str, &RateLimitWindow> = windows.iter().map(|w| (w.key.as_str(), w)).collect();
        let mut all: Vec<RateLimitStatus> =
            statics.iter().map(|l| RateLimitStatus::of_static(l, by_key.get(l.key.as_str()).copied(), now)).collect();
        all.extend(windows.iter().filter(|w| w.dynamic).filter_map(|w| RateLimitStatus::of_dynamic(w, now)));
        all.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(all)
    }
}

/// Why a run cannot take its units now.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Blocked {
    /// When the fullest window it needs resets.
    pub until: Timestamp,
    /// In words, for the run's `waiting`.
    pub message: String,
}

/// Static limits and open windows, by key.
#[derive(Debug, Default)]
pub(super) struct RateLimiter {
    statics: HashMap<String, RateLimit>,
    windows: HashMap<String, RateLimitWindow>,
    /// Keys whose window changed since [`RateLimiter::take_changes`].
    changed: BTreeSet<String>,
}

/// What to store: windows to write, keys whose window to delete.
#[derive(Debug, Default, PartialEq)]
pub(super) struct WindowChanges {
    pub put: Vec<RateLimitWindow>,
    pub deleted: Vec<String>,
}

impl RateLimiter {
    /// The limiter as stored.
    pub fn new(statics: Vec<RateLimit>, windows: Vec<RateLimitWindow>) -> RateLimiter {
        RateLimiter {
            statics: statics.into_iter().map(|l| (l.key.clone(), l)).collect(),
            windows: windows.into_iter().map(|w| (w.key.clone(), w)).collect(),
            changed: BTreeSet::new(),
        }
    }

    /// Installs or changes a static limit; an open window keeps what it counted, against the
    /// new quota from now on.
    pub fn set_static(&mut self, limit: RateLimit) {
        if let Some(window) = self.windows.get_mut(&limit.key).filter(|w| !w.dynamic) {
            window.limit = limit.limit;
            window.duration = limit.duration;
            self.changed.insert(limit.key.clone());
        }
        self.statics.insert(limit.key.clone(), limit);
    }

    /// Removes a static limit and its window.
    pub fn remove_static(&mut self, key: &str) {
        self.statics.remove(key);
        if self.windows.remove(key).is_some() {
            self.changed.insert(key.to_owned());
        }
    }

    /// A static limit.
    pub fn static_limit(&self, key: &str) -> Option<&RateLimit> {
        self.statics.get(key)
    }

    /// The quota and window length a need is counted against: the static limit's, or the
    /// dynamic key's own. None for a static key that no longer exists.
    fn quota(&self, need: &RunRateLimit) -> Option<(u64, crate::model::RateDuration, bool)> {
        match (need.limit, need.duration) {
            (Some(limit), Some(duration)) => Some((limit, duration, true)),
            _ => self.statics.get(&need.key).map(|s| (s.limit, s.duration, false)),
        }
    }

    /// The units of `needs` by key (a key named twice counts twice).
    fn by_key(needs: &[RunRateLimit]) -> BTreeMap<&str, (u64, &RunRateLimit)> {
        let mut keys: BTreeMap<&str, (u64, &RunRateLimit)> = BTreeMap::new();
        for need in needs {
            keys.entry(&need.key).or_insert((0, need)).0 += need.units;
        }
        keys
    }

    /// Whether every key of `needs` has room for its units at `now`; otherwise when the
    /// last of the full windows resets, and why.
    pub fn check(&self, needs: &[RunRateLimit], now: Timestamp) -> Result<(), Blocked> {
        let mut blocked: Option<Blocked> = None;
        for (key, (units, need)) in Self::by_key(needs) {
            let Some((limit, duration, _)) = self.quota(need) else {
                // A static key deleted under a waiting run: it waits for the key to exist.
                let until = now.plus(crate::model::Span::seconds(60));
                blocked = Some(Blocked {
                    until,
                    message: format!("rate limit `{key}` does not exist (PUT /api/rate-limits/{key} makes it)"),
                });
                continue;
            };
            let window = self.windows.get(key).filter(|w| now < w.resets());
            let used = window.map_or(0, |w| w.used);
            if used.saturating_add(units) <= limit {
                continue;
            }
            // A window that is not open has room for any units within the quota, so a full
            // one is open here.
            let until = window.map_or(now, RateLimitWindow::resets);
            if blocked.as_ref().is_none_or(|b| until > b.until) {
                blocked = Some(Blocked {
                    until,
                    message: format!(
                        "rate limit `{key}` is used up ({used} of {limit} per {} taken; this run needs {units}) until {until}",
                        duration.name()
                    ),
                });
            }
        }
        blocked.map_or(Ok(()), Err)
    }

    /// Takes the units of `needs` at `now` (after [`RateLimiter::check`] said they fit): a
    /// window that has ended starts again at `now`.
    pub fn take(&mut self, needs: &[RunRateLimit], now: Timestamp) {
        for (key, (units, need)) in Self::by_key(needs) {
            let Some((limit, duration, dynamic)) = self.quota(need) else { continue };
            let window = self.windows.entry(key.to_owned()).or_insert_with(|| RateLimitWindow {
                key: key.to_owned(),
                limit,
                duration,
                start: now,
                used: 0,
                dynamic,
            });
            if now >= window.resets() || now < window.start {
                window.start = now;
                window.used = 0;
            }
            window.limit = limit;
            window.duration = duration;
            window.used = window.used.saturating_add(units);
            self.changed.insert(key.to_owned());
        }
    }

    /// Forgets the windows that ended by `now` (their quota is whole again; a dynamic key
    /// with no open window is not kept at all).
    pub fn prune(&mut self, now: Timestamp) {
        let ended: Vec<String> = self.windows.values().filter(|w| now >= w.resets()).map(|w| w.key.clone()).collect();
        for key in ended {
            self.windows.remove(&key);
            self.changed.insert(key);
        }
    }

    /// The windows changed since the last call, to store.
    pub fn take_changes(&mut self) -> WindowChanges {
        let mut changes = WindowChanges::default();
        for key in std::mem::take(&mut self.changed) {
            match self.windows.get(&key) {
                Some(window) => changes.put.push(window.clone()),
                None => changes.deleted.push(key),
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RateDuration;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_micros((1_767_225_600_000 + ms) * 1000)
    }

    fn need(key: &str, units: u64) -> RunRateLimit {
        RunRateLimit { key: key.into(), units, limit: None, duration: None }
    }

    #[test]
    fn a_static_limit_lets_its_quota_through_per_window_then_waits_for_the_reset() {
        let github =
            RateLimit { key: "gh".into(), limit: 3, duration: RateDuration::Second, created: None, updated: None };
        let mut limiter = RateLimiter::new(vec![github], Vec::new());
        for ms in [0, 100, 200] {
            limiter.check(&[need("gh", 1)], at(ms)).unwrap();
            limiter.take(&[need("gh", 1)], at(ms));
        }
        let blocked = limiter.check(&[need("gh", 1)], at(300)).unwrap_err();
        assert_eq!(blocked.until, at(1000));
        assert!(blocked.message.contains("`gh` is used up (3 of 3 per second taken"), "{}", blocked.message);
        // The window resets a second after its first claim.
        limiter.check(&[need("gh", 1)], at(1000)).unwrap();
        limiter.take(&[need("gh", 1)], at(1000));
        let changes = limiter.take_changes();
        assert_eq!(changes.put.len(), 1);
        assert_eq!((changes.put[0].start, changes.put[0].used), (at(1000), 1));
        // Two units do not fit where one is left.
        limiter.take(&[need("gh", 1)], at(1100));
        assert!(limiter.check(&[need("gh", 2)], at(1200)).is_err());
        assert!(limiter.check(&[need("gh", 1)], at(1200)).is_ok());
        limiter.prune(at(2000));
        assert_eq!(limiter.take_changes(), WindowChanges { put: vec![], deleted: vec!["gh".into()] });
    }

    #[test]
    fn dynamic_keys_count_apart_and_carry_their_own_quota() {
        let mut limiter = RateLimiter::default();
        let user =
            |u: &str| RunRateLimit { key: u.into(), units: 1, limit: Some(2), duration: Some(RateDuration::Minute) };
        for _ in 0..2 {
            limiter.take(&[user("alice")], at(0));
        }
        assert!(limiter.check(&[user("alice")], at(10)).is_err());
        assert!(limiter.check(&[user("bob")], at(10)).is_ok());
        assert_eq!(limiter.check(&[user("alice")], at(10)).unwrap_err().until, at(60_000));
        // A run needing both waits for the later reset.
        limiter.take(&[user("bob"), user("bob")], at(30_000));
        let both = limiter.check(&[user("alice"), user("bob")], at(30_001)).unwrap_err();
        assert_eq!(both.until, at(90_000));
        // A deleted static key holds its runs back, saying so.
        let gone = limiter.check(&[need("gone", 1)], at(0)).unwrap_err();
        assert!(gone.message.contains("`gone` does not exist"), "{}", gone.message);
    }
}
