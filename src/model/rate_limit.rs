//! Rate limits, as Hatchet has them: how many units the runs of a deployment may take from a
//! key within a fixed window (a second, a minute, an hour, a day). A *static* key is created
//! beforehand with its quota (`PUT /api/rate-limits/{key}`); a *dynamic* key is rendered from
//! each run (`{{ params.user_id }}`) and carries its quota in the deployment. A run takes its
//! units when a worker claims it; a run whose units do not fit waits in the queue until the
//! window resets (it does not fail).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::Fields;
use super::problems::{JsonPath, Problems};
use super::time::{Span, Timestamp};

/// The largest quota of a key, and the most units a run may take.
pub const MAX_RATE_LIMIT: u64 = 1_000_000_000;
/// The most rate limits one deployment may consume.
pub const MAX_RATE_LIMITS_PER_DEPLOYMENT: usize = 16;
/// The longest key name or rendered dynamic key, in bytes.
pub const MAX_RATE_LIMIT_KEY_BYTES: usize = 256;

/// The window a quota is counted over. The window starts when a run first takes units from
/// the key and lasts this long; the next claim after its end starts a new one (Hatchet's
/// fixed windows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RateDuration {
    /// One second.
    #[serde(alias = "SECOND")]
    Second,
    /// One minute.
    #[serde(alias = "MINUTE")]
    Minute,
    /// One hour.
    #[serde(alias = "HOUR")]
    Hour,
    /// One day.
    #[serde(alias = "DAY")]
    Day,
}

impl RateDuration {
    const ALL: [(&'static str, RateDuration); 4] = [
        ("second", RateDuration::Second),
        ("minute", RateDuration::Minute),
        ("hour", RateDuration::Hour),
        ("day", RateDuration::Day),
    ];

    /// The window's length.
    pub fn span(self) -> Span {
        match self {
            RateDuration::Second => Span::seconds(1),
            RateDuration::Minute => Span::minutes(1),
            RateDuration::Hour => Span::minutes(60),
            RateDuration::Day => Span::minutes(24 * 60),
        }
    }

    /// Its name, as written in requests (`second`, `minute`, `hour`, `day`).
    pub fn name(self) -> &'static str {
        RateDuration::ALL.iter().find(|(_, d)| *d == self).map_or("second", |(n, _)| n)
    }

    /// Reads a name, in any case (Hatchet's `SECOND` too); the error lists the names.
    pub fn parse(text: &str) -> Result<RateDuration, String> {
        RateDuration::ALL
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(text.trim()))
            .map(|(_, d)| *d)
            .ok_or_else(|| format!("unknown duration `{text}`; use second, minute, hour or day"))
    }
}

/// A static rate limit: a named key and its quota.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// The key deployments name in `rate_limits[].static_key`.
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9_.:-]+$"))]
    pub key: String,
    /// Units that may be taken per window (1 to 1,000,000,000).
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub limit: u64,
    /// The window.
    pub duration: RateDuration,
    /// When it was first created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("readOnly" = true))]
    pub created: Option<Timestamp>,
    /// When its quota was last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("readOnly" = true))]
    pub updated: Option<Timestamp>,
}

/// The body of `PUT /api/rate-limits/{key}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitQuota {
    /// Units that may be taken per window (1 to 1,000,000,000; `5` and `5.0` alike).
    #[serde(deserialize_with = "whole_u64")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub limit: u64,
    /// The window: `second`, `minute`, `hour` or `day`.
    pub duration: RateDuration,
}

/// A whole number: `17` and `17.0` alike, as JSON Schema's `integer` (and the rest of the API)
/// read them.
fn whole_u64<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(deserializer)?;
    super::integral(&n)
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| serde::de::Error::custom(format!("expected a whole number, got {n}")))
}

impl RateLimitQuota {
    /// Parses `5000/hour` (the CLI's form).
    pub fn parse(text: &str) -> Result<RateLimitQuota, String> {
        let (limit, duration) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}`: write the quota as LIMIT/DURATION, e.g. 5000/hour"))?;
        let limit: u64 = limit.trim().parse().map_err(|_| format!("`{limit}` is not a whole number"))?;
        let quota = RateLimitQuota { limit, duration: RateDuration::parse(duration)? };
        quota.validate().map_err(|p| p.to_string())?;
        Ok(quota)
    }

    /// The limit is within 1 and [`MAX_RATE_LIMIT`].
    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::default();
        if self.limit == 0 || self.limit > MAX_RATE_LIMIT {
            problems.add(&JsonPath::root().key("limit"), format!("must be 1 to {MAX_RATE_LIMIT}, got {}", self.limit));
        }
        problems.into_result(())
    }
}

/// Checks a static key's name (from the URL): the characters a deployment can name.
pub fn check_key(key: &str) -> Result<(), Problems> {
    let mut problems = Problems::default();
    let path = JsonPath::root().key("key");
    if key.is_empty() || key.len() > MAX_RATE_LIMIT_KEY_BYTES {
        problems.add(&path, format!("must be 1 to {MAX_RATE_LIMIT_KEY_BYTES} bytes long"));
    } else if !key.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
        problems.add(&path, format!("`{key}`: may only contain letters, digits, `-`, `_`, `.` and `:`"));
    }
    problems.into_result(())
}

/// A rate limit a deployment consumes: a static key, or a dynamic key template with its own
/// quota; `units` per run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RateLimitUse {
    /// The name of a static limit (`PUT /api/rate-limits/{key}`); it must exist when the
    /// deployment is registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9_.:-]+$"))]
    pub static_key: Option<String>,
    /// A template over the run's parameters (`params`) and its cause (`metadata`: the
    /// trigger, the bucket's labels, the triggering event's id), e.g. `{{ params.user_id }}`;
    /// each rendered key has its own window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub dynamic_key: Option<String>,
    /// Units each run takes (default 1; at most the quota).
    #[serde(default = "one")]
    #[schemars(with = "Option<u64>", range(min = 1, max = 1_000_000_000))]
    pub units: u64,
    /// A dynamic key's quota per window (required with `dynamic_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub limit: Option<u64>,
    /// A dynamic key's window (required with `dynamic_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<RateDuration>,
}

fn one() -> u64 {
    1
}

impl RateLimitUse {
    /// Takes `units` of the static limit `key` per run.
    pub fn static_key(key: impl Into<String>, units: u64) -> RateLimitUse {
        RateLimitUse { static_key: Some(key.into()), dynamic_key: None, units, limit: None, duration: None }
    }

    /// Takes `units` per run from the key `template` renders, `limit` per `duration`.
    pub fn dynamic_key(template: impl Into<String>, units: u64, limit: u64, duration: RateDuration) -> RateLimitUse {
        RateLimitUse {
            static_key: None,
            dynamic_key: Some(template.into()),
            units,
            limit: Some(limit),
            duration: Some(duration),
        }
    }

    /// Reads one entry of a deployment's `rate_limits`.
    pub(super) fn from_json(value: &Value, path: &JsonPath, problems: &mut Problems) -> Option<RateLimitUse> {
        let mut fields = Fields::open(
            value,
            path,
            problems,
            "expected an object such as {\"static_key\": \"github-api\", \"units\": 1}",
        )?;
        fields.only(
            &["static_key", "dynamic_key", "units", "limit", "duration"],
            "unknown field; use `static_key` or `dynamic_key`, `units`, and `limit` and `duration` with a dynamic key",
        );
        let static_key = fields.opt_string("static_key");
        let dynamic_key = fields.opt_string("dynamic_key");
        let units = fields.whole("units", 1, MAX_RATE_LIMIT).unwrap_or(1);
        let limit = fields.whole("limit", 1, MAX_RATE_LIMIT);
        let duration = match fields.take_set("duration") {
            None => None,
            Some(Value::String(s)) => match RateDuration::parse(s) {
                Ok(d) => Some(d),
                Err(message) => {
                    fields.problem("duration", message);
                    None
                }
            },
            Some(other) => {
                fields.expected("duration", "one of \"second\", \"minute\", \"hour\", \"day\"", other);
                None
            }
        };
        match (&static_key, &dynamic_key) {
            (None, None) => {
                let here = fields.path.clone();
                fields.problems.add_rule(
                    &here,
                    "give `static_key` (a limit made with PUT /api/rate-limits/{key}) or `dynamic_key` (a template)",
                );
            }
            (Some(_), Some(_)) => fields.rule("dynamic_key", "give `static_key` or `dynamic_key`, not both"),
            (Some(key), None) => {
                if let Err(p) = check_key(key) {
                    let message = p.0.first().map(|p| p.message.clone()).unwrap_or_default();
                    fields.problem("static_key", message);
                }
                for (name, set) in [("limit", limit.is_some()), ("duration", duration.is_some())] {
                    if set {
                        fields.rule(
                            name,
                            "a static key's quota is its own (PUT /api/rate-limits/{key}); leave it out here",
                        );
                    }
                }
            }
            (None, Some(template)) => {
                if template.trim().is_empty() {
                    fields.rule("dynamic_key", "must not be blank; e.g. \"{{ params.user_id }}\"");
                }
                if limit.is_none() {
                    fields.rule("limit", "a dynamic key needs its quota: `limit` (units per window)");
                }
                if duration.is_none() {
                    fields.rule("duration", "a dynamic key needs its window: `duration` (second, minute, hour or day)");
                }
                if let Some(limit) = limit.filter(|l| units > *l) {
                    fields.rule("units", format!("{units} units per run can never fit a quota of {limit}"));
                }
            }
        }
        Some(RateLimitUse { static_key, dynamic_key, units, limit, duration })
    }
}

/// A rate limit as a run takes it: the key (rendered, for a dynamic one), the units, and a
/// dynamic key's quota (a static key's is looked up when the run is claimed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RunRateLimit {
    /// The key.
    pub key: String,
    /// Units the run takes when it is claimed.
    pub units: u64,
    /// A dynamic key's quota per window; absent for a static key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// A dynamic key's window; absent for a static key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<RateDuration>,
}

/// A key's current window, as stored: what has been taken since it started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RateLimitWindow {
    /// The key.
    pub key: String,
    /// The quota it was counted against (the static limit's, or the dynamic key's).
    pub limit: u64,
    /// The window's length.
    pub duration: RateDuration,
    /// When the window started (the first claim that took units from it).
    pub start: Timestamp,
    /// Units taken in it.
    pub used: u64,
    /// Whether the key was rendered from a dynamic key template.
    pub dynamic: bool,
}

impl RateLimitWindow {
    /// When the window ends and the quota is whole again.
    pub fn resets(&self) -> Timestamp {
        self.start.plus(self.duration.span())
    }

    /// Units taken at `now` (none once the window has ended).
    pub fn used_at(&self, now: Timestamp) -> u64 {
        if now >= self.resets() {
            0
        } else {
            self.used
        }
    }
}

/// One key as `GET /api/rate-limits` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RateLimitStatus {
    /// The key.
    pub key: String,
    /// `static` (made with the API) or `dynamic` (rendered from a deployment's template).
    pub kind: RateLimitKind,
    /// Units per window.
    pub limit: u64,
    /// The window.
    pub duration: RateDuration,
    /// Units taken in the current window.
    pub used: u64,
    /// Units left in it.
    pub remaining: u64,
    /// When the current window ends (absent when no window is open: the quota is whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets: Option<Timestamp>,
}

/// Where a key comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitKind {
    /// Made with `PUT /api/rate-limits/{key}`.
    Static,
    /// Rendered from a deployment's `dynamic_key`.
    Dynamic,
}

impl RateLimitStatus {
    /// A static key with its window, if one is open.
    pub fn of_static(limit: &RateLimit, window: Option<&RateLimitWindow>, now: Timestamp) -> RateLimitStatus {
        let open = window.filter(|w| now < w.resets());
        let used = open.map_or(0, |w| w.used);
        RateLimitStatus {
            key: limit.key.clone(),
            kind: RateLimitKind::Static,
            limit: limit.limit,
            duration: limit.duration,
            used,
            remaining: limit.limit.saturating_sub(used),
            resets: open.map(RateLimitWindow::resets),
        }
    }

    /// A dynamic key's open window (None once it has ended: the key is forgotten).
    pub fn of_dynamic(window: &RateLimitWindow, now: Timestamp) -> Option<RateLimitStatus> {
        (now < window.resets()).then(|| RateLimitStatus {
            key: window.key.clone(),
            kind: RateLimitKind::Dynamic,
            limit: window.limit,
            duration: window.duration,
            used: window.used,
            remaining: window.limit.saturating_sub(window.used),
            resets: Some(window.resets()),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn quotas_read_as_the_cli_writes_them() {
        assert_eq!(
            RateLimitQuota::parse("5000/hour"),
            Ok(RateLimitQuota { limit: 5000, duration: RateDuration::Hour })
        );
        assert_eq!(RateLimitQuota::parse("3/SECOND").map(|q| q.duration), Ok(RateDuration::Second));
        assert!(RateLimitQuota::parse("5000").unwrap_err().contains("LIMIT/DURATION"));
        assert!(RateLimitQuota::parse("0/day").unwrap_err().contains("$.limit"));
        assert!(RateLimitQuota::parse("5/fortnight").unwrap_err().contains("use second, minute, hour or day"));
        assert!(check_key("github api").is_err() && check_key("github-api").is_ok() && check_key("").is_err());
    }

    #[test]
    fn a_deployments_rate_limits_are_checked_with_their_paths() {
        let mut problems = Problems::default();
        let path = JsonPath::root().key("rate_limits").index(0);
        let read = |v: Value, problems: &mut Problems| RateLimitUse::from_json(&v, &path, problems);
        let ok = read(
            json!({"dynamic_key": "{{ params.user }}", "limit": 10, "duration": "minute", "units": 2}),
            &mut problems,
        );
        assert_eq!(ok, Some(RateLimitUse::dynamic_key("{{ params.user }}", 2, 10, RateDuration::Minute)));
        assert!(problems.is_empty(), "{problems}");
        for (bad, expected) in [
            (json!({}), "$.rate_limits[0]: give `static_key`"),
            (json!({"static_key": "a", "dynamic_key": "b"}), "$.rate_limits[0].dynamic_key: give `static_key` or"),
            (json!({"static_key": "a", "limit": 3}), "$.rate_limits[0].limit: a static key's quota is its own"),
            (json!({"dynamic_key": "{{ params.u }}"}), "$.rate_limits[0].limit: a dynamic key needs its quota"),
            (json!({"dynamic_key": "x", "limit": 2, "duration": "week"}), "unknown duration `week`"),
            (
                json!({"dynamic_key": "x", "limit": 2, "duration": "second", "units": 3}),
                "$.rate_limits[0].units: 3 units",
            ),
            (json!({"static_key": "a", "units": 0}), "$.rate_limits[0].units"),
            (json!({"static_key": "a b"}), "$.rate_limits[0].static_key"),
            (json!({"static_key": "a", "unit": 1}), "$.rate_limits[0].unit: unknown field"),
        ] {
            let mut problems = Problems::default();
            read(bad.clone(), &mut problems);
            assert!(problems.to_string().contains(expected), "{bad}: {problems}");
        }
    }

    #[test]
    fn a_window_counts_until_it_ends() {
        let at = |s: &str| Timestamp::parse(s).unwrap();
        let window = RateLimitWindow {
            key: "k".into(),
            limit: 3,
            duration: RateDuration::Second,
            start: at("2026-01-01T00:00:00Z"),
            used: 2,
            dynamic: true,
        };
        assert_eq!(window.used_at(at("2026-01-01T00:00:00.999Z")), 2);
        assert_eq!(window.used_at(at("2026-01-01T00:00:01Z")), 0);
        let status = RateLimitStatus::of_dynamic(&window, at("2026-01-01T00:00:00.5Z")).unwrap();
        assert_eq!((status.used, status.remaining, status.resets), (2, 1, Some(at("2026-01-01T00:00:01Z"))));
        assert_eq!(RateLimitStatus::of_dynamic(&window, at("2026-01-01T00:00:02Z")), None);
    }
}
