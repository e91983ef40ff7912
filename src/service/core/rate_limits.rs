//! Static rate limits: made, changed and removed through the core, so that the queue's view
//! and the store change in one commit.

use crate::model::time::Timestamp;
use crate::model::{JsonPath, Problems, RateLimit, RateLimitQuota};
use crate::service::ServiceError;
use crate::store::Tx;

use super::{Core, Outcome};

impl Core {
    /// Creates or changes a static limit. A lower quota than the units a deployment takes
    /// per run is refused (those runs could never start). Answers it as stored and whether
    /// it was created.
    pub(super) fn put_rate_limit(
        &mut self,
        tx: &Tx,
        key: String,
        quota: RateLimitQuota,
        now: Timestamp,
    ) -> Outcome<(RateLimit, bool)> {
        let too_big: Vec<String> = self
            .runs
            .users_of(&key)
            .into_iter()
            .filter(|(_, units)| *units > quota.limit)
            .map(|(d, units)| format!("`{d}` takes {units}"))
            .collect();
        if !too_big.is_empty() {
            let mut problems = Problems::default();
            problems.add_rule(
                &JsonPath::root().key("limit"),
                format!("{} is less than a run takes: {}", quota.limit, too_big.join(", ")),
            );
            return Ok(Err(ServiceError::Invalid(problems)));
        }
        let existing = tx.rate_limit(&key)?;
        let limit = RateLimit {
            key,
            limit: quota.limit,
            duration: quota.duration,
            created: Some(existing.as_ref().and_then(|l| l.created).unwrap_or(now)),
            updated: Some(now),
        };
        tx.put_rate_limit(&limit)?;
        self.runs.limiter().set_static(limit.clone());
        self.store_windows(tx)?;
        Ok(Ok((limit, existing.is_none())))
    }

    /// Removes a static limit, unless a deployment takes units from it (409 naming them).
    pub(super) fn delete_rate_limit(&mut self, tx: &Tx, key: String) -> Outcome<()> {
        let users = self.runs.users_of(&key);
        if !users.is_empty() {
            let names: Vec<String> = users.iter().map(|(d, _)| format!("`{d}`")).collect();
            return Ok(Err(ServiceError::InUse {
                message: format!(
                    "rate limit `{key}` is taken by {}; remove it from their `rate_limits` first",
                    names.join(", ")
                ),
            }));
        }
        if !tx.delete_rate_limit(&key)? {
            return Ok(Err(ServiceError::NotFound { what: "rate limit", id: key }));
        }
        self.runs.limiter().remove_static(&key);
        self.store_windows(tx)?;
        Ok(Ok(()))
    }
}
