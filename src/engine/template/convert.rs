//! Template values to JSON: what a single-expression template means as a parameter value (a
//! datetime its ISO 8601 string, an event its JSON), within the rendering's budget.

use minijinja::value::{Value, ValueKind};
use minijinja::Error;
use serde_json::Value as Json;

use super::budget;
use super::objects::{DateTimeObject, EventObject, PayloadObject};

/// Nesting depth of a value converted to JSON.
const JSON_DEPTH_LIMIT: usize = 128;

/// The JSON a single-expression template means: undefined and none are null, a datetime its
/// ISO 8601 string, an event its JSON; a function or other opaque object is an error.
pub(super) fn to_json(value: &Value, depth: usize) -> Result<Json, String> {
    if depth > JSON_DEPTH_LIMIT {
        return Err(format!("a value nested more than {JSON_DEPTH_LIMIT} levels deep cannot be converted to JSON"));
    }
    // Every node is charged (a value can share one list many times over, and its JSON would
    // copy it each time).
    let charge = |bytes: u128| budget::charge(&"converting to JSON", bytes).map_err(|e| plain_error(&e));
    charge(budget::VALUE_COST + value.as_str().map_or(0, |s| s.len() as u128))?;
    if let Some(obj) = value.as_object() {
        if let Some(e) = obj.downcast_ref::<EventObject>() {
            charge(json_len(&*e.0).saturating_mul(2))?;
            return serde_json::to_value(&*e.0).map_err(|e| e.to_string());
        }
        if let Some(p) = obj.downcast_ref::<PayloadObject>() {
            charge(json_len(&p.0.payload).saturating_mul(2))?;
            return Ok(Json::Object(p.0.payload.clone()));
        }
        if let Some(t) = obj.downcast_ref::<DateTimeObject>() {
            return t.isoformat("T", "auto").map(Json::String).map_err(|e| e.to_string());
        }
    }
    Ok(match value.kind() {
        ValueKind::Undefined | ValueKind::None => Json::Null,
        ValueKind::Bool => Json::Bool(value.is_true()),
        ValueKind::String => Json::String(value.as_str().unwrap_or_default().to_owned()),
        ValueKind::Number => number_to_json(value)?,
        ValueKind::Seq | ValueKind::Iterable => {
            let items = value.try_iter().map_err(|e| e.to_string())?;
            Json::Array(items.map(|item| to_json(&item, depth + 1)).collect::<Result<_, _>>()?)
        }
        ValueKind::Map => {
            let mut map = serde_json::Map::new();
            if let Some(pairs) = value.as_object().and_then(|o| o.try_iter_pairs()) {
                for (k, v) in pairs {
                    let key = match k.as_str() {
                        Some(s) => s.to_owned(),
                        None => k.to_string(),
                    };
                    map.insert(key, to_json(&v, depth + 1)?);
                }
            }
            Json::Object(map)
        }
        ValueKind::Bytes => return Err("bytes cannot be converted to JSON".to_owned()),
        ValueKind::Plain => {
            return Err("a function (or another object without a JSON form) cannot be converted to JSON".to_owned())
        }
        ValueKind::Invalid => return Err(value.to_string()),
        other => return Err(format!("a value of type {other} cannot be converted to JSON")),
    })
}

/// The length of `value` as JSON, counted without writing it.
pub(super) fn json_len<T: serde::Serialize + ?Sized>(value: &T) -> u128 {
    struct Count(u128);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len() as u128);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        // Not serializable: nothing will be built from it.
        Err(_) => 0,
    }
}

/// A minijinja error as "kind: detail", without location.
fn plain_error(err: &Error) -> String {
    match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    }
}

fn number_to_json(value: &Value) -> Result<Json, String> {
    if value.is_integer() {
        if let Ok(i) = i64::try_from(value.clone()) {
            return Ok(Json::from(i));
        }
        if let Ok(u) = u64::try_from(value.clone()) {
            return Ok(Json::from(u));
        }
    }
    let f = f64::try_from(value.clone()).map_err(|e| e.to_string())?;
    serde_json::Number::from_f64(f)
        .map(Json::Number)
        .ok_or_else(|| format!("{f} is not a finite number and cannot be converted to JSON"))
}
