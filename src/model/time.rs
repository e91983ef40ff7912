//! Instants on the engine's clock: microseconds since the Unix epoch, UTC.
//!
//! Prefect stores times with microsecond precision; so do we. A plain `i64` keeps bucket state
//! small and comparisons cheap, and the same value sorts identically in memory and on disk.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant in UTC, with microsecond precision, always within [`Timestamp::MIN`] ..=
/// [`Timestamp::MAX`] (years 0001 to 9999, what RFC 3339 can write and read back).
///
/// This is the one rule for time: parsing refuses instants outside the range (naming the
/// field), and arithmetic saturates at its ends, so that a far-future event with a long
/// `within` gives a window that ends at [`Timestamp::MAX`] instead of a value that cannot be
/// written, stored and read again.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

/// A span of time in microseconds (`within`, look-back windows, retention), never negative
/// beyond [`Span::MAX`] in either direction.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug, Serialize, Deserialize)]
pub struct Span(i64);

impl Span {
    /// No time at all.
    pub const ZERO: Span = Span(0);

    /// The longest span: from [`Timestamp::MIN`] to [`Timestamp::MAX`].
    pub const MAX: Span = Span(Timestamp::MAX.0 - Timestamp::MIN.0);

    /// The longest `within` a trigger may have: 100 years (of 365.25 days). Longer values are
    /// refused with a problem naming the field.
    pub const MAX_WITHIN: Span = Span::seconds(100 * 31_557_600);

    /// A span of whole seconds (saturating at [`Span::MAX`]).
    pub const fn seconds(s: i64) -> Span {
        Span::micros(s.saturating_mul(1_000_000))
    }

    /// A span of whole minutes (saturating at [`Span::MAX`]).
    pub const fn minutes(m: i64) -> Span {
        Span::micros(m.saturating_mul(60_000_000))
    }

    /// A span of microseconds (saturating at [`Span::MAX`]).
    pub const fn micros(us: i64) -> Span {
        if us > Span::MAX.0 {
            Span::MAX
        } else if us < -Span::MAX.0 {
            Span(-Span::MAX.0)
        } else {
            Span(us)
        }
    }

    /// A span from fractional seconds, rounded to the microsecond; `None` when not finite or
    /// longer than [`Span::MAX`].
    pub fn from_secs_f64(s: f64) -> Option<Span> {
        let us = (s * 1_000_000.0).round();
        (us.is_finite() && us.abs() <= Span::MAX.0 as f64).then(|| Span::micros(us as i64))
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

impl From<std::time::Duration> for Span {
    /// A span from a [`std::time::Duration`], truncated to the microsecond and saturating at
    /// [`Span::MAX`].
    fn from(duration: std::time::Duration) -> Span {
        Span::micros(i64::try_from(duration.as_micros()).unwrap_or(i64::MAX))
    }
}

impl Timestamp {
    /// The earliest instant: `0001-01-01T00:00:00Z`.
    pub const MIN: Timestamp = Timestamp(-62_135_596_800_000_000);
    /// The latest instant: `9999-12-31T23:59:59.999999Z`.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999_999);

    /// The latest `occurred` an event may have: `9800-12-31T23:59:59.999999Z`. A window of
    /// up to [`Span::MAX_WITHIN`] after it still ends before [`Timestamp::MAX`], so no window
    /// is ever cut short by the end of time.
    pub const LATEST_OCCURRED: Timestamp = Timestamp(247_122_489_599_999_999);

    /// The instant `us` microseconds after the Unix epoch, clamped to [`Timestamp::MIN`] ..=
    /// [`Timestamp::MAX`].
    pub const fn from_micros(us: i64) -> Timestamp {
        if us < Timestamp::MIN.0 {
            Timestamp::MIN
        } else if us > Timestamp::MAX.0 {
            Timestamp::MAX
        } else {
            Timestamp(us)
        }
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 (`2026-01-01T00:00:00Z`, any offset; a missing offset means UTC).
    /// Refuses instants outside [`Timestamp::MIN`] ..= [`Timestamp::MAX`] (after conversion to
    /// UTC: `0001-01-01T00:00:00+01:00` is in year 0).
    pub fn parse(text: &str) -> Result<Timestamp, String> {
        let parsed = DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc)).or_else(|| {
            // Python's isoformat() without an offset, which Prefect treats as UTC.
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .into_iter()
                .find_map(|fmt| chrono::NaiveDateTime::parse_from_str(text, fmt).ok())
                .map(|naive| Utc.from_utc_datetime(&naive))
        });
        let Some(t) = parsed else {
            let shown: String = text.chars().take(64).collect();
            return Err(format!("`{shown}` is not an RFC 3339 date-time (e.g. 2026-01-01T00:00:00Z)"));
        };
        let us = t.timestamp_micros();
        if !(Timestamp::MIN.0..=Timestamp::MAX.0).contains(&us) {
            return Err(format!(
                "`{text}` is out of range: date-times run from {} to {}",
                Timestamp::MIN,
                Timestamp::MAX
            ));
        }
        Ok(Timestamp(us))
    }

    /// This instant as a chrono date-time.
    pub fn to_datetime(self) -> DateTime<Utc> {
        // Every Timestamp is in chrono's range (years 0001 to 9999).
        DateTime::from_timestamp_micros(self.0).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// RFC 3339 with `Z`, and fractional seconds only when there are any.
    pub fn to_rfc3339(self) -> String {
        self.to_datetime().to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    /// `self + span`, saturating at [`Timestamp::MIN`] and [`Timestamp::MAX`].
    pub fn plus(self, span: Span) -> Timestamp {
        Timestamp::from_micros(self.0.saturating_add(span.0))
    }

    /// `self - span`, saturating at [`Timestamp::MIN`] and [`Timestamp::MAX`].
    pub fn minus(self, span: Span) -> Timestamp {
        Timestamp::from_micros(self.0.saturating_sub(span.0))
    }

    /// The span from `earlier` to `self` (negative when `earlier` is later).
    pub fn since(self, earlier: Timestamp) -> Span {
        Span(self.0.saturating_sub(earlier.0))
    }
}

impl From<DateTime<Utc>> for Timestamp {
    /// Clamped to [`Timestamp::MIN`] ..= [`Timestamp::MAX`].
    fn from(t: DateTime<Utc>) -> Self {
        Timestamp::from_micros(t.timestamp_micros())
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
    fn every_instant_writes_and_reads_back() {
        for t in [Timestamp::MIN, Timestamp::MAX, Timestamp::default(), Timestamp::from_micros(i64::MAX)] {
            assert_eq!(Timestamp::parse(&t.to_rfc3339()), Ok(t), "{t}");
        }
        assert_eq!(Timestamp::MIN.to_rfc3339(), "0001-01-01T00:00:00Z");
        assert_eq!(Timestamp::MAX.to_rfc3339(), "9999-12-31T23:59:59.999999Z");
        // Far-future arithmetic saturates at the end of time instead of leaving the range.
        let late = Timestamp::parse("9999-12-31T00:00:00Z").unwrap();
        assert_eq!(late.plus(Span::seconds(3600 * 48)), Timestamp::MAX);
        assert_eq!(Timestamp::MIN.minus(Span::MAX), Timestamp::MIN);
        assert_eq!(Timestamp::from_micros(i64::MIN), Timestamp::MIN);
        assert_eq!(Span::seconds(i64::MAX), Span::MAX);
    }

    #[test]
    fn the_latest_event_leaves_room_for_the_longest_window() {
        assert_eq!(Timestamp::LATEST_OCCURRED.to_rfc3339(), "9800-12-31T23:59:59.999999Z");
        let end = Timestamp::LATEST_OCCURRED.plus(Span::MAX_WITHIN).plus(Span::minutes(15));
        assert!(end < Timestamp::MAX, "{end}");
    }

    #[test]
    fn out_of_range_instants_are_refused_by_name() {
        for text in ["0000-12-31T23:00:00Z", "0001-01-01T00:30:00+01:00", "+10000-01-01T00:00:00Z"] {
            assert!(Timestamp::parse(text).is_err(), "{text}");
        }
        assert!(Timestamp::parse("0000-12-31T23:00:00Z").unwrap_err().contains("out of range"));
        assert!(Timestamp::parse("9999-12-31T23:59:59.999999Z").is_ok());
    }

    #[test]
    fn durations_become_spans_truncated_and_saturated() {
        use std::time::Duration;
        assert_eq!(Span::from(Duration::from_secs(60)), Span::seconds(60));
        assert_eq!(Span::from(Duration::from_nanos(1_999)), Span::micros(1));
        assert_eq!(Span::from(Duration::MAX), Span::MAX);
        assert_eq!(Span::from(Duration::from_secs(10u64.pow(12))), Span::MAX);
    }

    #[test]
    fn spans_round_to_microseconds() {
        assert_eq!(Span::from_secs_f64(1.5), Some(Span::micros(1_500_000)));
        assert_eq!(Span::from_secs_f64(f64::NAN), None);
        assert_eq!(Timestamp::from_micros(10).plus(Span::micros(5)).as_micros(), 15);
    }
}
