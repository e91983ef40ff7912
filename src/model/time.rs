//! Instants on the engine's clock: microseconds since the Unix epoch, UTC.
//!
//! Prefect stores times with microsecond precision; so do we. A plain `i64` keeps bucket state
//! small and comparisons cheap, and the same value sorts identically in memory and on disk.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant in UTC, with microsecond precision.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

/// A span of time in microseconds (`within`, look-back windows, retention).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug, Serialize, Deserialize)]
pub struct Span(i64);

impl Span {
    /// No time at all.
    pub const ZERO: Span = Span(0);

    /// A span of whole seconds.
    pub const fn seconds(s: i64) -> Span {
        Span(s * 1_000_000)
    }

    /// A span of whole minutes.
    pub const fn minutes(m: i64) -> Span {
        Span(m * 60_000_000)
    }

    /// A span of microseconds.
    pub const fn micros(us: i64) -> Span {
        Span(us)
    }

    /// A span from fractional seconds, rounded to the microsecond; `None` when not finite or
    /// out of range.
    pub fn from_secs_f64(s: f64) -> Option<Span> {
        let us = (s * 1_000_000.0).round();
        (us.is_finite() && us.abs() < 9.0e18).then_some(Span(us as i64))
    }

    /// The span in microseconds.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// The span in fractional seconds.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1_000_000.0
    }
}

impl Timestamp {
    /// The instant `us` microseconds after the Unix epoch.
    pub const fn from_micros(us: i64) -> Timestamp {
        Timestamp(us)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 (`2026-01-01T00:00:00Z`, any offset; a missing offset means UTC).
    pub fn parse(text: &str) -> Result<Timestamp, String> {
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Ok(Timestamp::from(t.with_timezone(&Utc)));
        }
        // Python's isoformat() without an offset, which Prefect treats as UTC.
        for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
            if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(text, fmt) {
                return Ok(Timestamp::from(Utc.from_utc_datetime(&naive)));
            }
        }
        Err(format!("`{text}` is not an RFC 3339 date-time (e.g. 2026-01-01T00:00:00Z)"))
    }

    /// This instant as a chrono date-time.
    pub fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0).unwrap_or_default()
    }

    /// RFC 3339 with `Z`, and fractional seconds only when there are any.
    pub fn to_rfc3339(self) -> String {
        self.to_datetime().to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    /// `self + span`, saturating at the ends of time.
    pub fn plus(self, span: Span) -> Timestamp {
        Timestamp(self.0.saturating_add(span.0))
    }

    /// `self - span`, saturating at the ends of time.
    pub fn minus(self, span: Span) -> Timestamp {
        Timestamp(self.0.saturating_sub(span.0))
    }

    /// The span from `earlier` to `self` (negative when `earlier` is later).
    pub fn since(self, earlier: Timestamp) -> Span {
        Span(self.0.saturating_sub(earlier.0))
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(t: DateTime<Utc>) -> Self {
        Timestamp(t.timestamp_micros())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Timestamp {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }

    fn schema_id() -> Cow<'static, str> {
        concat!(module_path!(), "::Timestamp").into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An RFC 3339 date-time, e.g. `2026-01-01T00:00:00Z` (any offset; without one, UTC), kept to the microsecond.",
            "type": "string",
            "format": "date-time"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_and_prints_utc() {
        let t = Timestamp::parse("2026-01-01T01:00:00+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-01T00:00:00Z");
        let t = Timestamp::parse("2026-01-01T00:00:00.250Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-01T00:00:00.250Z");
        assert_eq!(Timestamp::parse("2026-01-01T00:00:00").unwrap().as_micros(), 1_767_225_600_000_000);
        assert!(Timestamp::parse("yesterday").is_err());
    }

    #[test]
    fn spans_round_to_microseconds() {
        assert_eq!(Span::from_secs_f64(1.5), Some(Span::micros(1_500_000)));
        assert_eq!(Span::from_secs_f64(f64::NAN), None);
        assert_eq!(Timestamp::from_micros(10).plus(Span::micros(5)).as_micros(), 15);
    }
}
