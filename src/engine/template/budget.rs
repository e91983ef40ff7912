//! The memory budget of one rendering.
//!
//! Fuel ([`super::TEMPLATE_FUEL`]) bounds how many instructions a template executes, not how
//! much memory each one builds: `'a' | indent(10**12)` is one instruction. So every built-in
//! that can build more than a constant amount (filters, functions, Python methods, and the
//! operators `+`, `*`, `~`, `in` and slicing, which the compiler rewrites into checked calls,
//! see `rewrite.rs`) computes the size of its result first, with checked arithmetic, and
//! [`charge`]s it here before allocating:
//!
//! - one value may hold at most [`TEMPLATE_MAX_VALUE_BYTES`] (a list or map counts
//!   [`VALUE_COST`] bytes per item);
//! - everything one rendering builds (every charged result, and every `{{ }}` emission, also
//!   inside `{% set %}` captures, `{% filter %}` blocks and macros) adds up to at most
//!   [`TEMPLATE_MAX_ALLOC_BYTES`];
//! - template text inside loops, macros, captures and filter blocks is rewritten into
//!   emissions, so it is counted too; other template text is emitted once and is bounded by
//!   [`TEMPLATE_MAX_SOURCE_BYTES`].
//!
//! The worst case one rendering of one template string can hold is therefore about
//! `TEMPLATE_MAX_ALLOC_BYTES` (4 MiB) of charged results, plus one value being checked
//! (`TEMPLATE_MAX_VALUE_BYTES`, 1 MiB), plus the uncharged O(1)-per-instruction values
//! (`TEMPLATE_FUEL` x a few dozen bytes, about 5 MiB), plus the source text (16 KiB): well
//! under 16 MiB, against the 64 MiB the engine allows itself per rendering.

use std::cell::Cell;
use std::fmt;

use minijinja::value::Value;
use minijinja::{Error, ErrorKind};

/// The most bytes one value built by a template may hold (a string's bytes; a list or map
/// counts [`VALUE_COST`] bytes per item). Default 1 MiB. An operation that would build more
/// fails the rendering with "invalid operation: ... would be at least N bytes; templates may
/// build at most 1048576 bytes per value (TEMPLATE_MAX_VALUE_BYTES)", before allocating.
pub const TEMPLATE_MAX_VALUE_BYTES: usize = 1 << 20;

/// The most bytes one rendering (all templates of one `parameters` value, one concurrency
/// key, one trigger filter) may build in total, counting every checked operation and every
/// `{{ }}` emission. Default 4 MiB. Past it the rendering fails with "invalid operation: ...
/// would bring this rendering to N bytes; templates may build at most 4194304 bytes per
/// rendering (TEMPLATE_MAX_ALLOC_BYTES)".
pub const TEMPLATE_MAX_ALLOC_BYTES: usize = 4 << 20;

/// The longest template string (or filter expression) a definition may hold, in bytes.
/// Default 16 KiB. A longer one is a compile-time problem at its path ("template is N bytes;
/// templates may be at most 16384 bytes (TEMPLATE_MAX_SOURCE_BYTES)").
pub const TEMPLATE_MAX_SOURCE_BYTES: usize = 16 << 10;

/// The bytes a list or map item is charged (a minijinja `Value` plus its share of the
/// container's bookkeeping).
pub const VALUE_COST: u128 = 32;

/// The most items a list or map built by a template may hold
/// (`TEMPLATE_MAX_VALUE_BYTES / VALUE_COST`).
pub const TEMPLATE_MAX_ITEMS: u128 = TEMPLATE_MAX_VALUE_BYTES as u128 / VALUE_COST;

/// How deep a value may nest when printed (a namespace holding itself nests forever).
pub(super) const MAX_PRINT_DEPTH: usize = 128;

thread_local! {
    static USED: Cell<u128> = const { Cell::new(0) };
}

/// Starts the budget of a new rendering on this thread.
pub(super) fn start() {
    USED.with(|used| used.set(0));
}

/// What the current rendering has built so far (for tests).
#[cfg(test)]
pub(super) fn used() -> u128 {
    USED.with(Cell::get)
}

fn too_large(what: &dyn fmt::Display, bytes: u128) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "{what} would be at least {bytes} bytes; templates may build at most {TEMPLATE_MAX_VALUE_BYTES} \
             bytes per value (TEMPLATE_MAX_VALUE_BYTES)"
        ),
    )
}

/// Charges `bytes` (a result about to be built by `what`) to the value cap and the
/// rendering's budget; an error (and nothing charged) when either would be crossed.
pub(super) fn charge(what: &dyn fmt::Display, bytes: u128) -> Result<(), Error> {
    if bytes > TEMPLATE_MAX_VALUE_BYTES as u128 {
        return Err(too_large(what, bytes));
    }
    USED.with(|used| {
        let total = used.get().saturating_add(bytes);
        if total > TEMPLATE_MAX_ALLOC_BYTES as u128 {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "{what} would bring this rendering to {total} bytes; templates may build at most \
                     {TEMPLATE_MAX_ALLOC_BYTES} bytes per rendering (TEMPLATE_MAX_ALLOC_BYTES)"
                ),
            ));
        }
        used.set(total);
        Ok(())
    })
}

/// Charges `items` list or map items.
pub(super) fn charge_items(what: &dyn fmt::Display, items: u128) -> Result<(), Error> {
    charge(what, items.saturating_mul(VALUE_COST))
}

/// A `fmt::Write` that stops (with an error) past `limit` bytes or [`MAX_PRINT_DEPTH`]
/// brackets deep, optionally keeping what it was given.
pub(super) struct Capped {
    out: Option<String>,
    len: usize,
    limit: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    track_depth: bool,
    too_deep: bool,
}

impl Capped {
    /// Counts only.
    pub(super) fn meter(limit: usize) -> Capped {
        Capped {
            out: None,
            len: 0,
            limit,
            depth: 0,
            in_string: false,
            escaped: false,
            track_depth: true,
            too_deep: false,
        }
    }

    /// Keeps the text.
    pub(super) fn string(limit: usize) -> Capped {
        Capped { out: Some(String::new()), ..Capped::meter(limit) }
    }

    /// Keeps the text and does not read brackets as nesting (for text that is not a printed
    /// value, e.g. JSON written by tripwire itself).
    pub(super) fn plain_string(limit: usize) -> Capped {
        Capped { track_depth: false, ..Capped::string(limit) }
    }

    /// Bytes written so far (past the limit: the count when it stopped).
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Turns a formatting result into the text, or the error naming the limit crossed.
    pub(super) fn finish(self, what: &dyn fmt::Display, result: fmt::Result) -> Result<String, Error> {
        self.check(what, result)?;
        let len = self.len;
        charge(what, len as u128)?;
        Ok(self.out.unwrap_or_default())
    }

    /// The error for a stopped formatting, if any.
    pub(super) fn check(&self, what: &dyn fmt::Display, result: fmt::Result) -> Result<(), Error> {
        if self.too_deep {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "{what}: the value nests more than {MAX_PRINT_DEPTH} levels deep (a namespace that \
                     holds itself?) and cannot be printed"
                ),
            ));
        }
        if self.len > self.limit {
            return Err(too_large(what, self.len as u128));
        }
        result.map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("{what}: the value cannot be printed")))
    }
}

impl fmt::Write for Capped {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.len = self.len.saturating_add(s.len());
        if self.len > self.limit {
            return Err(fmt::Error);
        }
        if self.track_depth {
            for b in s.bytes() {
                if self.in_string {
                    if self.escaped {
                        self.escaped = false;
                    } else if b == b'\\' {
                        self.escaped = true;
                    } else if b == b'"' {
                        self.in_string = false;
                    }
                    continue;
                }
                match b {
                    b'"' => self.in_string = true,
                    b'[' | b'{' | b'(' => {
                        self.depth += 1;
                        if self.depth > MAX_PRINT_DEPTH {
                            self.too_deep = true;
                            return Err(fmt::Error);
                        }
                    }
                    b']' | b'}' | b')' => self.depth = self.depth.saturating_sub(1),
                    _ => {}
                }
            }
        }
        if let Some(out) = &mut self.out {
            out.push_str(s);
        }
        Ok(())
    }
}

/// The length of `value` printed (`{{ value }}`), counted without building it; stops just
/// past [`TEMPLATE_MAX_VALUE_BYTES`]. An error for a value nested too deep to print.
pub(super) fn display_len(what: &dyn fmt::Display, value: &Value) -> Result<u128, Error> {
    if let Some(s) = value.as_str() {
        return Ok(s.len() as u128);
    }
    let mut meter = Capped::meter(TEMPLATE_MAX_VALUE_BYTES);
    let result = fmt::write(&mut meter, format_args!("{value}"));
    if meter.len() > TEMPLATE_MAX_VALUE_BYTES {
        return Ok(meter.len() as u128);
    }
    meter.check(what, result)?;
    Ok(meter.len() as u128)
}

/// `value` printed as a string (what minijinja's string arguments would make of an object),
/// built within the limits and charged; other values are returned as they are.
pub(super) fn stringify(what: &dyn fmt::Display, value: &Value) -> Result<Value, Error> {
    // Strings are already paid for; numbers, booleans and none print short (and minijinja's
    // own conversion prints booleans as `True`/`False`: leave them to it).
    if value.as_object().is_none() {
        return Ok(value.clone());
    }
    let mut out = Capped::string(TEMPLATE_MAX_VALUE_BYTES);
    let result = fmt::write(&mut out, format_args!("{value}"));
    out.finish(what, result).map(Value::from)
}
