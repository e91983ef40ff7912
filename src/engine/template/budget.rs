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
//!
//! Fuel does not bound time either: one comparison of two shared lists (`[a, a]` forty times
//! over is 2**40 nodes in 2 KB of source) or one `in` over a 1 MiB string is one instruction.
//! So every operation whose cost in Rust grows with its operands (comparisons, `in`, tests,
//! sorts, string scans, see `checked.rs` and `rewrite.rs`) first charges that cost to the
//! rendering's work budget, [`TEMPLATE_MAX_WORK`]: [`WORK_PER_NODE`] units per value visited
//! and one unit per [`WORK_BYTES_PER_UNIT`] bytes of string. Values are walked by
//! [`charge_walk`], which stops as soon as the budget is gone, so walking costs at most the
//! budget, never the value's size.

use std::cell::Cell;
use std::fmt;

use minijinja::value::{ObjectRepr, Value};
use minijinja::{Error, ErrorKind};

/// The most bytes one value built by a template may hold (a string's bytes; a list or map
/// counts `VALUE_COST` bytes per item). Default 1 MiB. An operation that would build more
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

/// The most work one rendering (all templates of one `parameters` value, one concurrency key,
/// one trigger filter) may do in Rust beyond its fuel, in units: `WORK_PER_NODE` per value
/// visited (a comparison, `in`, a test, a sort ... visits its operands) and one per
/// `WORK_BYTES_PER_UNIT` bytes of string scanned. Default 50 million (at most ~3 million
/// values or ~400 MB of string scans: well under a second of one core). Past it the rendering
/// fails with "invalid operation: ...: this rendering would do more than 50000000 units of
/// work (TEMPLATE_MAX_WORK)", before the operation runs.
pub const TEMPLATE_MAX_WORK: u128 = 50_000_000;

/// The work units one value visited costs (a list, a map, a string, a number ...; a map entry
/// is two values). Comparing two values node by node costs about as much as scanning this
/// many times [`WORK_BYTES_PER_UNIT`] bytes.
pub const WORK_PER_NODE: u128 = 16;

/// The bytes of string one work unit pays for.
pub const WORK_BYTES_PER_UNIT: u128 = 8;

thread_local! {
    static USED: Cell<u128> = const { Cell::new(0) };
    static WORK: Cell<u128> = const { Cell::new(0) };
}

/// Starts the budget of a new rendering on this thread (memory and work).
pub(super) fn start() {
    USED.with(|used| used.set(0));
    WORK.with(|work| work.set(0));
}

/// The work the current rendering has done so far (for tests).
#[cfg(test)]
pub(super) fn work() -> u128 {
    WORK.with(Cell::get)
}

fn too_much_work(what: &dyn fmt::Display) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "{what}: this rendering would do more than {TEMPLATE_MAX_WORK} units of work (TEMPLATE_MAX_WORK); \
             compare, search and sort smaller values"
        ),
    )
}

/// Charges `units` of work (about to be done by `what`) to the rendering's work budget; an
/// error when it would be crossed (and then the budget counts as spent).
pub(super) fn charge_work(what: &dyn fmt::Display, units: u128) -> Result<(), Error> {
    WORK.with(|work| {
        let total = work.get().saturating_add(units);
        if total > TEMPLATE_MAX_WORK {
            work.set(TEMPLATE_MAX_WORK);
            return Err(too_much_work(what));
        }
        work.set(total);
        Ok(())
    })
}

/// The work units of scanning `bytes` bytes of string.
pub(super) fn scan_units(bytes: usize) -> u128 {
    (bytes as u128).div_ceil(WORK_BYTES_PER_UNIT)
}

/// Charges scanning `bytes` bytes of string.
pub(super) fn charge_scan(what: &dyn fmt::Display, bytes: usize) -> Result<(), Error> {
    charge_work(what, scan_units(bytes))
}

/// A walk over a value's nodes that stops once it has spent `left` units.
struct Walk {
    left: u128,
    spent: u128,
    stack: Vec<Value>,
}

impl Walk {
    /// Pays for `v` (false once the budget is gone) and remembers it for its children.
    fn see(&mut self, v: Value) -> bool {
        let mut units = WORK_PER_NODE;
        if let Some(s) = v.as_str() {
            units += scan_units(s.len());
        } else if let Some(b) = v.as_bytes() {
            units += scan_units(b.len());
        } else if v.as_object().is_some() {
            self.stack.push(v);
        }
        self.spent = self.spent.saturating_add(units);
        self.spent <= self.left
    }

    /// Visits the children of one object; false once the budget is gone.
    fn children(&mut self, v: &Value) -> bool {
        let Some(object) = v.as_object() else { return true };
        match object.repr() {
            ObjectRepr::Seq | ObjectRepr::Iterable => {
                if let Some(items) = object.downcast_ref::<Vec<Value>>() {
                    return items.iter().all(|item| self.see(item.clone()));
                }
                match object.try_iter() {
                    Some(mut iter) => iter.all(|item| self.see(item)),
                    None => true,
                }
            }
            ObjectRepr::Map => {
                // tripwire's label trees find a key by looking through all of them.
                let lookup = if object.type_name().ends_with("::LabelTree") {
                    object.enumerator_len().unwrap_or(0) as u128
                } else {
                    0
                };
                match object.try_iter_pairs() {
                    Some(mut pairs) => pairs.all(|(key, value)| {
                        self.spent = self.spent.saturating_add(lookup);
                        self.see(key) && self.see(value)
                    }),
                    None => true,
                }
            }
            // Plain objects (datetimes, functions, macros ...) compare by their short printed
            // form.
            _ => true,
        }
    }
}

/// Walks every node of `value` (lists, maps, iterables, and tripwire's own objects, events
/// included, whose walk costs what comparing them costs), charging the rendering's work budget
/// as it goes and stopping with the `TEMPLATE_MAX_WORK` error as soon as the budget is gone:
/// a value shared 2**40 times over costs at most the budget. Returns the units charged.
pub(super) fn charge_walk(what: &dyn fmt::Display, value: &Value) -> Result<u128, Error> {
    let left = TEMPLATE_MAX_WORK.saturating_sub(WORK.with(Cell::get));
    let mut walk = Walk { left, spent: 0, stack: Vec::new() };
    let mut ok = walk.see(value.clone());
    while ok {
        match walk.stack.pop() {
            Some(v) => ok = walk.children(&v),
            None => break,
        }
    }
    if !ok {
        WORK.with(|work| work.set(TEMPLATE_MAX_WORK));
        return Err(too_much_work(what));
    }
    charge_work(what, walk.spent)?;
    Ok(walk.spent)
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
