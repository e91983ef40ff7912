//! Checked versions of every built-in that can build more than its input: each computes the
//! size of its result first (checked arithmetic, see `budget.rs`) and only then calls the
//! builtin, or builds the result itself within the limits.

use std::fmt::{self, Write as _};
use std::sync::LazyLock;

use minijinja::value::{Kwargs, Rest, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Expression, State, UndefinedBehavior};

use super::budget::{
    self, charge, charge_items, charge_scan, charge_walk, charge_work, display_len, stringify, Capped,
    TEMPLATE_MAX_ITEMS, VALUE_COST,
};

/// The most items `range()` may produce (minijinja's own limit, reported with tripwire's
/// wording).
pub const TEMPLATE_MAX_RANGE: u128 = 100_000;

/// The functions the rewritten operators call (see `rewrite.rs`).
pub(super) const ADD: &str = "__tw_add";
pub(super) const MUL: &str = "__tw_mul";
pub(super) const CONCAT: &str = "__tw_concat";
pub(super) const IN: &str = "__tw_in";
pub(super) const SLICE: &str = "__tw_slice";
/// Charges walking its argument to the work budget, and returns it (see `rewrite.rs`).
pub(super) const WALK: &str = "__tw_w";
/// Guards `{% set ns.attr = value %}` (see [`no_namespace`]).
pub(super) const PLAIN: &str = "__tw_plain";
/// The prefix of those names; a template may not use it.
pub(super) const RESERVED_PREFIX: &str = "__tw_";

/// Registers the checked operators, functions, filters, tests and Python methods.
pub(super) fn install(env: &mut Environment<'static>) {
    env.add_function(ADD, op_add);
    env.add_function(MUL, op_mul);
    env.add_function(CONCAT, op_concat);
    env.add_function(IN, op_in);
    env.add_function(SLICE, op_slice);
    env.add_function(PLAIN, no_namespace);
    env.add_function(WALK, op_walk);
    env.add_function("range", range);
    env.add_function("dict", dict);
    env.add_function("namespace", namespace);
    env.add_function("debug", debug);

    // String filters: the input (an object is printed first) times how much the filter can
    // grow it.
    for (name, grow) in [("upper", 4), ("lower", 4), ("title", 4), ("capitalize", 4)] {
        add_guarded(env, name, grow);
    }
    for (name, grow) in [("trim", 2), ("safe", 2), ("striptags", 2), ("escape", 7), ("e", 7), ("urlencode", 4)] {
        add_guarded(env, name, grow);
    }
    env.add_filter("replace", replace_filter);
    env.add_filter("indent", indent_filter);
    env.add_filter("format", format_filter);
    env.add_filter("join", join_filter);
    env.add_filter("pprint", pprint_filter);
    env.add_filter("split", split_filter);
    env.add_filter("lines", lines_filter);
    env.add_filter("slice", slice_filter);
    env.add_filter("batch", batch_filter);
    env.add_filter("reverse", reverse_filter);
    env.add_filter("length", length_filter);
    env.add_filter("count", length_filter);
    env.add_filter("first", first_filter);
    env.add_filter("last", last_filter);
    env.add_filter("items", items_filter);
    // Filters that compare every item or scan a string: their inputs are walked first.
    for name in ["max", "min", "sum", "int", "float"] {
        add_walked(env, name);
    }
    // List builders: one item per input item (dictsort: a pair per entry).
    for (name, per_item) in [
        ("list", 1),
        ("sort", 1),
        ("unique", 2),
        ("select", 1),
        ("reject", 1),
        ("selectattr", 1),
        ("rejectattr", 1),
        ("map", 1),
        ("groupby", 3),
        ("dictsort", 3),
        ("chain", 1),
        ("zip", 1),
    ] {
        add_items_guarded(env, name, per_item);
    }
    env.add_test("startingwith", |state: &State, args: Rest<Value>| string_test(state, "startingwith", &args));
    env.add_test("endingwith", |state: &State, args: Rest<Value>| string_test(state, "endingwith", &args));
    env.add_test("in", |state: &State, args: Rest<Value>| string_test(state, "in", &args));
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// minijinja's own filter, test or function `name`, as a callable value.
fn builtin(name: &str) -> Value {
    use minijinja::{filters as f, functions as g, tests as t};
    match name {
        "upper" => Value::from_function(f::upper),
        "lower" => Value::from_function(f::lower),
        "title" => Value::from_function(f::title),
        "capitalize" => Value::from_function(f::capitalize),
        "trim" => Value::from_function(f::trim),
        "safe" => Value::from_function(f::safe),
        "escape" | "e" => Value::from_function(f::escape),
        "urlencode" => Value::from_function(f::urlencode),
        "striptags" => Value::from_function(minijinja_contrib::filters::striptags),
        "replace" => Value::from_function(f::replace),
        "indent" => Value::from_function(f::indent),
        "format" => Value::from_function(f::format),
        "split" => Value::from_function(f::split),
        "lines" => Value::from_function(f::lines),
        "slice" => Value::from_function(f::slice),
        "batch" => Value::from_function(f::batch),
        "reverse" => Value::from_function(f::reverse),
        "length" => Value::from_function(f::length),
        "first" => Value::from_function(f::first),
        "last" => Value::from_function(f::last),
        "items" => Value::from_function(f::items),
        "max" => Value::from_function(f::max),
        "min" => Value::from_function(f::min),
        "sum" => Value::from_function(f::sum),
        "int" => Value::from_function(f::int),
        "float" => Value::from_function(f::float),
        "list" => Value::from_function(f::list),
        "sort" => Value::from_function(f::sort),
        "unique" => Value::from_function(f::unique),
        "select" => Value::from_function(f::select),
        "reject" => Value::from_function(f::reject),
        "selectattr" => Value::from_function(f::selectattr),
        "rejectattr" => Value::from_function(f::rejectattr),
        "map" => Value::from_function(f::map),
        "groupby" => Value::from_function(f::groupby),
        "dictsort" => Value::from_function(f::dictsort),
        "chain" => Value::from_function(f::chain),
        "zip" => Value::from_function(f::zip),
        "startingwith" => Value::from_function(t::is_startingwith),
        "endingwith" => Value::from_function(t::is_endingwith),
        "in" => Value::from_function(t::is_in),
        "range" => Value::from_function(g::range),
        "dict" => Value::from_function(g::dict),
        "namespace" => Value::from_function(g::namespace),
        _ => Value::UNDEFINED,
    }
}

/// Calls minijinja's own `name` (never a checked replacement) with `args`.
fn call_builtin(state: &State, name: &str, args: &[Value]) -> Result<Value, Error> {
    static BUILTINS: LazyLock<Vec<(&'static str, Value)>> = LazyLock::new(|| {
        [
            "upper",
            "lower",
            "title",
            "capitalize",
            "trim",
            "safe",
            "escape",
            "e",
            "urlencode",
            "striptags",
            "replace",
            "indent",
            "format",
            "split",
            "lines",
            "slice",
            "batch",
            "reverse",
            "length",
            "first",
            "last",
            "items",
            "max",
            "min",
            "sum",
            "int",
            "float",
            "list",
            "sort",
            "unique",
            "select",
            "reject",
            "selectattr",
            "rejectattr",
            "map",
            "groupby",
            "dictsort",
            "chain",
            "zip",
            "startingwith",
            "endingwith",
            "in",
            "range",
            "dict",
            "namespace",
        ]
        .into_iter()
        .map(|name| (name, builtin(name)))
        .collect()
    });
    match BUILTINS.iter().find(|(n, _)| *n == name) {
        Some((_, f)) => f.call(state, args),
        None => Err(Error::new(ErrorKind::InvalidOperation, format!("no builtin `{name}`"))),
    }
}

/// An error from a nested evaluation, without the nested expression's location.
fn relocate(err: Error) -> Error {
    Error::new(err.kind(), err.detail().unwrap_or_default().to_owned())
}

fn split_kwargs(args: &[Value]) -> (&[Value], Option<Kwargs>) {
    match args.split_last() {
        Some((last, rest)) if last.is_kwargs() => (rest, Kwargs::try_from(last.clone()).ok()),
        _ => (args, None),
    }
}

/// Positional argument `pos` (after the filtered value) or keyword argument `name`.
fn arg(args: &[Value], pos: usize, name: &str) -> Option<Value> {
    let (positional, kwargs) = split_kwargs(args);
    match positional.get(pos) {
        Some(v) => Some(v.clone()),
        None => kwargs.and_then(|k| k.peek::<Option<Value>>(name).ok().flatten()),
    }
}

/// A numeric size argument as a non-negative count (negative: 0; not a number: None).
fn size_arg(v: &Value) -> Option<u128> {
    if let Ok(i) = i128::try_from(v.clone()) {
        return Some(u128::try_from(i).unwrap_or(0));
    }
    f64::try_from(v.clone()).ok().map(|f| if f > 0.0 { f as u128 } else { 0 })
}

/// The number of items iterating `value` yields, counted without collecting (stops just past
/// [`TEMPLATE_MAX_ITEMS`]).
fn item_count(value: &Value) -> u128 {
    if value.is_undefined() || value.is_none() {
        return 0;
    }
    if let Some(s) = value.as_str() {
        return s.chars().count() as u128;
    }
    if let Some(n) = value.len() {
        return n as u128;
    }
    match value.try_iter() {
        Ok(iter) => iter.take(TEMPLATE_MAX_ITEMS as usize + 1).count() as u128,
        Err(_) => 0,
    }
}

fn input(args: &[Value]) -> Value {
    args.first().cloned().unwrap_or(Value::UNDEFINED)
}

/// Replaces the filtered value by its printed form when it is an object (so that minijinja
/// does not print it unchecked); returns the new arguments.
fn stringified(what: &dyn fmt::Display, args: &[Value]) -> Result<Vec<Value>, Error> {
    let mut args = args.to_vec();
    if let Some(first) = args.first_mut() {
        *first = stringify(what, first)?;
    }
    Ok(args)
}

fn add_guarded(env: &mut Environment<'static>, name: &'static str, grow: u128) {
    env.add_filter(name, move |state: &State, args: Rest<Value>| -> Result<Value, Error> {
        let what = format!("`{name}`");
        let args = stringified(&what, &args)?;
        let len = display_len(&what, &input(&args))?;
        charge(&what, len.saturating_mul(grow))?;
        charge_scan(&what, usize::try_from(len).unwrap_or(usize::MAX))?;
        call_builtin(state, name, &args)
    });
}

fn add_items_guarded(env: &mut Environment<'static>, name: &'static str, per_item: u128) {
    env.add_filter(name, move |state: &State, args: Rest<Value>| -> Result<Value, Error> {
        let what = format!("`{name}`");
        let mut items = item_count(&input(&args));
        if matches!(name, "chain" | "zip") {
            for other in args.iter().skip(1).filter(|v| !v.is_kwargs()) {
                items = items.saturating_add(item_count(other));
            }
        }
        if items > TEMPLATE_MAX_ITEMS {
            return Err(too_many(&what, items));
        }
        charge_items(&what, items.saturating_mul(per_item))?;
        charge_comparisons(&what, name, &args, items)?;
        call_builtin(state, name, &args)
    });
}

/// Charges what the list filter `name` compares over `items` items: a sort (or the ordered set
/// of `unique`, the sort of `groupby` and `dictsort`) compares each item about log2(n) times;
/// `select` and the like test each item against the test's arguments.
fn charge_comparisons(what: &dyn fmt::Display, name: &str, args: &[Value], items: u128) -> Result<(), Error> {
    match name {
        "sort" | "unique" | "groupby" | "dictsort" => {
            let units = charge_walk(what, &input(args))?;
            let rounds = u128::from(items.max(2).next_power_of_two().trailing_zeros());
            charge_work(what, units.saturating_mul(rounds.saturating_sub(1)))
        }
        "select" | "reject" | "selectattr" | "rejectattr" => {
            charge_walk(what, &input(args))?;
            let mut per_item: u128 = 0;
            for a in args.iter().skip(1) {
                per_item = per_item.saturating_add(charge_walk(what, a)?);
            }
            charge_work(what, per_item.saturating_mul(items))
        }
        _ => Ok(()),
    }
}

/// Registers `name` so that its input and arguments are walked (charged) first.
fn add_walked(env: &mut Environment<'static>, name: &'static str) {
    env.add_filter(name, move |state: &State, args: Rest<Value>| -> Result<Value, Error> {
        let what = format!("`{name}`");
        for a in args.iter() {
            charge_walk(&what, a)?;
        }
        call_builtin(state, name, &args)
    });
}

fn too_many(what: &dyn fmt::Display, items: u128) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "{what} would be at least {} bytes ({items} items); templates may build at most {} bytes per value \
             (TEMPLATE_MAX_VALUE_BYTES)",
            items.saturating_mul(VALUE_COST),
            budget::TEMPLATE_MAX_VALUE_BYTES
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Operators
// ---------------------------------------------------------------------------------------------

static OPS: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env
});

/// minijinja's own operators, as expressions over variables (never constant).
static OP_EXPRS: LazyLock<Vec<(&'static str, Result<Expression<'static, 'static>, Error>)>> = LazyLock::new(|| {
    ["a + b", "a * b", "item in container", "v[a:b:c]"]
        .into_iter()
        .map(|source| (source, OPS.compile_expression(source)))
        .collect()
});

fn eval_op(source: &str, vars: &[(&str, Value)]) -> Result<Value, Error> {
    let expr = match OP_EXPRS.iter().find(|(s, _)| *s == source) {
        Some((_, Ok(expr))) => expr,
        Some((_, Err(e))) => return Err(Error::new(e.kind(), e.to_string())),
        None => return Err(Error::new(ErrorKind::InvalidOperation, format!("no operator `{source}`"))),
    };
    expr.eval(Value::from_iter(vars.iter().cloned())).map_err(relocate)
}

fn is_seq(v: &Value) -> bool {
    matches!(v.kind(), ValueKind::Seq | ValueKind::Iterable)
}

/// `a + b`.
fn op_add(a: Value, b: Value) -> Result<Value, Error> {
    if is_seq(&a) && is_seq(&b) {
        let items = item_count(&a).saturating_add(item_count(&b));
        if items > TEMPLATE_MAX_ITEMS {
            return Err(too_many(&"`+`", items));
        }
        // Concatenation stays lazy (two items) and is copied once every 32 concatenations.
        charge_items(&"`+`", 2 + items / 32)?;
    } else if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        charge(&"`+`", x.len() as u128 + y.len() as u128)?;
    }
    eval_op("a + b", &[("a", a), ("b", b)])
}

/// `a * b`.
fn op_mul(a: Value, b: Value) -> Result<Value, Error> {
    if let Some((s, n)) = a.as_str().map(|s| (s, &b)).or_else(|| b.as_str().map(|s| (s, &a))) {
        if let Some(n) = n.as_usize() {
            charge(&"`*`", (s.len() as u128).saturating_mul(n as u128))?;
        }
    } else if let Some((seq, n)) = [(&a, &b), (&b, &a)].into_iter().find(|(x, _)| is_seq(x)) {
        if let Some(n) = n.as_usize() {
            let items = item_count(seq).saturating_mul(n as u128);
            if items > TEMPLATE_MAX_ITEMS {
                return Err(too_many(&"`*`", items));
            }
            // The repetition stays lazy.
            charge_items(&"`*`", 1)?;
        }
    }
    eval_op("a * b", &[("a", a), ("b", b)])
}

/// `a ~ b`: both printed, built within the limits.
fn op_concat(a: Value, b: Value) -> Result<Value, Error> {
    let size = display_len(&"`~`", &a)?.saturating_add(display_len(&"`~`", &b)?);
    charge(&"`~`", size)?;
    let mut out = String::with_capacity(usize::try_from(size).unwrap_or(0));
    write!(out, "{a}{b}").map_err(|_| Error::new(ErrorKind::InvalidOperation, "`~`: a value cannot be printed"))?;
    Ok(Value::from(out))
}

/// An operand of a comparison, a comparing test, a subscript or a computed map key: its walk
/// is charged to the work budget (what comparing or hashing it can cost at most).
fn op_walk(value: Value) -> Result<Value, Error> {
    charge_walk(&"comparing", &value)?;
    Ok(value)
}

/// `item in container`.
fn op_in(item: Value, container: Value) -> Result<Value, Error> {
    // Looking for `item` compares it with the container's items (or scans the string).
    charge_walk(&"`in`", &item)?;
    charge_walk(&"`in`", &container)?;
    if container.as_str().is_some() && item.as_str().is_none() {
        charge(&"`in`", display_len(&"`in`", &item)?)?;
    }
    eval_op("item in container", &[("item", item), ("container", container)])
}

/// `value[start:stop:step]`.
fn op_slice(value: Value, start: Value, stop: Value, step: Value) -> Result<Value, Error> {
    if let Some(s) = value.as_str() {
        charge(&"slicing", s.len() as u128)?;
    } else if is_seq(&value) {
        charge_items(&"slicing", item_count(&value))?;
    }
    eval_op("v[a:b:c]", &[("v", value), ("a", start), ("b", stop), ("c", step)])
}

// ---------------------------------------------------------------------------------------------
// Functions
// ---------------------------------------------------------------------------------------------

fn range(state: &State, args: Rest<Value>) -> Result<Value, Error> {
    let n = |i: usize| args.get(i).and_then(|v| i128::try_from(v.clone()).ok());
    let (lower, upper, step) = match args.len() {
        1 => (Some(0), n(0), Some(1)),
        2 => (n(0), n(1), Some(1)),
        _ => (n(0), n(1), n(2)),
    };
    if let (Some(lower), Some(upper), Some(step)) = (lower, upper, step) {
        let len = if step > 0 && upper > lower {
            (upper - lower).saturating_add(step - 1) / step
        } else if step < 0 && lower > upper {
            (lower - upper).saturating_add(-step - 1) / -step
        } else {
            0
        };
        let len = u128::try_from(len).unwrap_or(0);
        if len > TEMPLATE_MAX_RANGE {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "range() would have {len} items; templates may iterate at most {TEMPLATE_MAX_RANGE} \
                     (TEMPLATE_MAX_RANGE)"
                ),
            ));
        }
    }
    call_builtin(state, "range", &args)
}

fn dict(state: &State, args: Rest<Value>) -> Result<Value, Error> {
    let mut items: u128 = 0;
    for v in args.iter() {
        items = items.saturating_add(v.len().unwrap_or(0) as u128);
    }
    charge_items(&"dict()", items)?;
    call_builtin(state, "dict", &args)
}

fn namespace(state: &State, args: Rest<Value>) -> Result<Value, Error> {
    let items: u128 = args.iter().map(|v| v.len().unwrap_or(0) as u128).sum();
    charge_items(&"namespace()", items.saturating_add(1))?;
    call_builtin(state, "namespace", &args)
}

/// Items `no_namespace` looks through in one value.
pub const TEMPLATE_MAX_NAMESPACE_WALK: usize = 100_000;

/// What `{% set ns.attr = value %}` may store: anything but a namespace, at any depth. A
/// namespace inside a namespace can hold itself, and comparing two such values recurses
/// until the stack overflows, which no error can catch. Values of tripwire's own types
/// (events, resources, datetimes) hold no namespace and are not looked into.
fn no_namespace(value: Value) -> Result<Value, Error> {
    let refuse = |why: String| Err(Error::new(ErrorKind::InvalidOperation, why));
    let mut stack = vec![value.clone()];
    let mut seen = 0usize;
    while let Some(v) = stack.pop() {
        seen += 1;
        if seen > TEMPLATE_MAX_NAMESPACE_WALK {
            return refuse(format!(
                "a value stored in a namespace may hold at most {TEMPLATE_MAX_NAMESPACE_WALK} items, nested ones \
                 included (TEMPLATE_MAX_NAMESPACE_WALK, part of TEMPLATE_MAX_VALUE_BYTES)"
            ));
        }
        let Some(object) = v.as_object() else { continue };
        let name = object.type_name();
        if name.ends_with("::Namespace") {
            return refuse("a namespace cannot be stored in a namespace (it could hold itself)".to_owned());
        }
        if name.starts_with("tripwire::") {
            continue;
        }
        match v.kind() {
            ValueKind::Seq | ValueKind::Iterable => {
                stack.extend(v.try_iter().into_iter().flatten().take(TEMPLATE_MAX_NAMESPACE_WALK))
            }
            ValueKind::Map => {
                for key in v.try_iter().into_iter().flatten() {
                    if let Ok(item) = v.get_item(&key) {
                        stack.push(item);
                    }
                    stack.push(key);
                }
            }
            _ => {}
        }
    }
    Ok(value)
}

fn debug(_args: Rest<Value>) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, "debug() is not available in tripwire templates"))
}

// ---------------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------------

/// Occurrences of `from` that `replace` substitutes (an empty `from` matches between every
/// character).
fn occurrences(s: &str, from: &str, count: Option<i64>) -> u128 {
    let all = if from.is_empty() { s.chars().count() as u128 + 1 } else { s.matches(from).count() as u128 };
    match count {
        Some(c) if c >= 0 => all.min(c as u128),
        _ => all,
    }
}

fn replace_size(s: &str, from: &str, to: &str, count: Option<i64>) -> u128 {
    let n = occurrences(s, from, count);
    (s.len() as u128).saturating_add(n.saturating_mul(to.len() as u128))
}

fn replace_filter(state: &State, args: Rest<Value>) -> Result<Value, Error> {
    let what = "`replace`";
    let mut args: Vec<Value> = args.0;
    for v in args.iter_mut().take(3) {
        *v = stringify(&what, v)?;
    }
    let text = |i: usize| args.get(i).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
    if let (Some(s), Some(from), Some(to)) = (text(0), text(1), text(2)) {
        charge_scan(&what, s.len())?;
        charge(&what, replace_size(&s, &from, &to, None))?;
    }
    call_builtin(state, "replace", &args)
}

fn indent_filter(state: &State, args: Rest<Value>) -> Result<Value, Error> {
    let what = "`indent`";
    let args = stringified(&what, &args)?;
    let len = display_len(&what, &input(&args))?;
    let lines = input(&args).as_str().map_or(1, |s| s.matches('\n').count() as u128 + 1);
    if let Some(width) = arg(&args, 1, "width").as_ref().and_then(size_arg) {
        charge(&what, len.saturating_add(lines.saturating_add(1).saturating_mul(width)))?;
    }
    call_builtin(state, "indent", &args)
}

/// An upper bound of what formatting `format` with `args` writes: the format, and for each
/// replacement field its width, precision and the longest argument printed, plus room for a
/// number (an f64 has up to 309 digits, grouped).
fn format_size(printf: bool, format: &str, args: &[Value]) -> Result<u128, Error> {
    let what = if printf { "`format`" } else { "`str.format`" };
    let mut longest: u128 = 0;
    for a in args {
        longest = longest.max(display_len(&what, a)?);
    }
    let per_field = |numbers: u128| numbers.saturating_add(512).saturating_add(longest);
    let bytes = format.as_bytes();
    let mut total = bytes.len() as u128;
    let mut i = 0;
    while i < bytes.len() {
        let open = if printf { b'%' } else { b'{' };
        if bytes[i] != open {
            i += 1;
            continue;
        }
        if bytes.get(i + 1) == Some(&open) {
            i += 2;
            continue;
        }
        // The numbers of this field: printf up to its conversion letter, str.format up to `}`.
        let mut numbers: u128 = 0;
        let mut current: u128 = 0;
        let mut j = i + 1;
        while let Some(&c) = bytes.get(j) {
            if c.is_ascii_digit() {
                current = current.saturating_mul(10).saturating_add(u128::from(c - b'0'));
            } else {
                numbers = numbers.saturating_add(current);
                current = 0;
                let end = if printf { c.is_ascii_alphabetic() && !matches!(c, b'h' | b'l' | b'L') } else { c == b'}' };
                if end {
                    break;
                }
            }
            j += 1;
        }
        numbers = numbers.saturating_add(current);
        total = total.saturating_add(per_field(numbers));
        i = j + 1;
    }
    Ok(total)
}

fn format_filter(state: &State, args: Rest<Value>) -> Result<Value, Error> {
    if let Some(format) = args.first().and_then(Value::as_str) {
        charge(&"`format`", format_size(true, format, args.get(1..).unwrap_or_default())?)?;
    }
    call_builtin(state, "format", &args)
}

/// Joins the items printed, within the limits (minijinja's `join` without auto-escaping).
fn join_values(what: &str, value: &Value, joiner: &str) -> Result<Value, Error> {
    let iter = value.try_iter().map_err(|err| {
        Error::new(ErrorKind::InvalidOperation, format!("cannot join value of type {}", value.kind())).with_source(err)
    })?;
    let mut out = Capped::plain_string(budget::TEMPLATE_MAX_VALUE_BYTES);
    let mut result = Ok(());
    for (i, item) in iter.enumerate() {
        if i > 0 {
            result = out.write_str(joiner);
        }
        if result.is_ok() {
            result = match item.as_str() {
                Some(s) => out.write_str(s),
                None => {
                    // An item printed is checked for nesting like any printed value.
                    display_len(&what, &item)?;
                    write!(out, "{item}")
                }
            };
        }
        if result.is_err() {
            break;
        }
    }
    out.finish(&what, result).map(Value::from)
}

fn join_filter(_state: &State, value: &Value, joiner: Option<Value>) -> Result<Value, Error> {
    let what = "`join`";
    let joiner = match joiner {
        None => String::new(),
        Some(j) if j.kind() == ValueKind::Bool => (if j.is_true() { "True" } else { "False" }).to_owned(),
        Some(j) => {
            let j = stringify(&what, &j)?;
            j.as_str().map_or_else(|| j.to_string(), str::to_owned)
        }
    };
    join_values(what, value, &joiner)
}

fn pprint_filter(value: &Value) -> Result<Value, Error> {
    let mut out = Capped::string(budget::TEMPLATE_MAX_VALUE_BYTES);
    let result = write!(out, "{value:#?}");
    out.finish(&"`pprint`", result).map(Value::from)
}

fn split_filter(state: &State, args: Rest<Value>) -> Result<Value, Error> {
    if let Some(s) = input(&args).as_str() {
        charge_scan(&"`split`", s.len())?;
        let sep = arg(&args, 1, "split").filter(|v| !v.is_none());
        let max = arg(&args, 2, "maxsplits").and_then(|v| i64::try_from(v).ok()).filter(|m| *m >= 0);
        let pieces = match sep.as_ref().and_then(Value::as_str) {
            Some(sep) => s.split(sep).count() as u128,
            None => s.split_whitespace().count() as u128,
        };
        let pieces = match max {
            Some(m) => pieces.min(m as u128 + 1),
            None => pieces,
        };
        charge(&"`split`", pieces.saturating_mul(VALUE_COST).saturating_add(s.len() as u128))?;
    }
    call_builtin(state, "split", &args)
}

fn lines_filter(state: &State, args: Rest<Value>) -> Result<Value, Error> {
    if let Some(s) = input(&args).as_str() {
        charge_scan(&"`lines`", s.len())?;
        charge(&"`lines`", (s.lines().count() as u128).saturating_mul(VALUE_COST).saturating_add(s.len() as u128))?;
    }
    call_builtin(state, "lines", &args)
}

fn slice_filter(state: &State, args: Rest<Value>) -> Result<Value, Error> {
    let items = item_count(&input(&args));
    if let Some(count) = arg(&args, 1, "slices").as_ref().and_then(size_arg) {
        let total = items.saturating_add(count).saturating_mul(2);
        if total > TEMPLATE_MAX_ITEMS {
            return Err(too_many(&"`slice`", total));
        }
        charge_items(&"`slice`", total)?;
    }
    call_builtin(state, "slice", &args)
}

fn batch_filter(state: &State, args: Rest<Value>) -> Result<Value, Error> {
    let items = item_count(&input(&args));
    if let Some(count) = arg(&args, 1, "linecount").as_ref().and_then(size_arg) {
        // Every batch is allocated with room for `count` items, and one more up front.
        let batches = if count == 0 { 0 } else { items.div_ceil(count) };
        let total = items.saturating_add(batches.saturating_add(1).saturating_mul(count));
        if total > TEMPLATE_MAX_ITEMS {
            return Err(too_many(&"`batch`", total));
        }
        charge_items(&"`batch`", total)?;
    }
    call_builtin(state, "batch", &args)
}

fn reverse_filter(state: &State, args: Rest<Value>) -> Result<Value, Error> {
    let value = input(&args);
    match value.as_str() {
        Some(s) => charge(&"`reverse`", s.len() as u128)?,
        None => charge_items(&"`reverse`", item_count(&value))?,
    }
    call_builtin(state, "reverse", &args)
}

/// `length`: as in Jinja, an undefined value has length 0.
fn length_filter(state: &State, args: Rest<Value>) -> Result<Value, Error> {
    let value = input(&args);
    if value.is_undefined() {
        return Ok(Value::from(0));
    }
    // A string's length counts its characters.
    if let Some(s) = value.as_str() {
        charge_scan(&"`length`", s.len())?;
    }
    call_builtin(state, "length", &args)
}

/// `first`: as in Jinja, the first item of an undefined value is undefined.
fn first_filter(state: &State, args: Rest<Value>) -> Result<Value, Error> {
    if input(&args).is_undefined() {
        return Ok(Value::UNDEFINED);
    }
    call_builtin(state, "first", &args)
}

/// `last`: as in Jinja, the last item of an undefined value is undefined.
fn last_filter(state: &State, args: Rest<Value>) -> Result<Value, Error> {
    let value = input(&args);
    if value.is_undefined() {
        return Ok(Value::UNDEFINED);
    }
    if value.as_str().is_none() {
        charge_items(&"`last`", item_count(&value))?;
    }
    call_builtin(state, "last", &args)
}

/// `items`: as in Jinja, an undefined value has no items.
fn items_filter(state: &State, args: Rest<Value>) -> Result<Value, Error> {
    let value = input(&args);
    if value.is_undefined() {
        return Ok(Value::from(Vec::<Value>::new()));
    }
    charge_items(&"`items`", item_count(&value).saturating_mul(2))?;
    call_builtin(state, "items", &args)
}

fn string_test(state: &State, name: &str, args: &[Value]) -> Result<bool, Error> {
    let what = format!("`is {name}`");
    for a in args.iter().take(2) {
        charge_walk(&what, a)?;
    }
    let mut args = args.to_vec();
    for v in args.iter_mut().take(2) {
        if name != "in" || v.as_str().is_none() {
            *v = stringify(&what, v)?;
        }
    }
    if name == "in" {
        // `x is in s` prints `x` when `s` is a string.
        if let (Some(item), Some(container)) = (args.first(), args.get(1)) {
            if container.as_str().is_some() && item.as_str().is_none() {
                charge(&what, display_len(&what, item)?)?;
            }
        }
    }
    Ok(call_builtin(state, name, &args)?.is_true())
}

// ---------------------------------------------------------------------------------------------
// Python methods
// ---------------------------------------------------------------------------------------------

/// minijinja-contrib's Python methods, each checked first.
pub(super) fn method_callback(state: &State, value: &Value, method: &str, args: &[Value]) -> Result<Value, Error> {
    let what = format!("`.{method}()`");
    // Arguments are compared with, searched for, or hashed (`dict.get(key)`).
    for a in args {
        charge_walk(&what, a)?;
    }
    if value.kind() == ValueKind::Seq && method == "count" {
        // `list.count(x)` compares `x` with every item.
        charge_walk(&what, value)?;
    }
    if let Some(s) = value.as_str() {
        let what = format!("`str.{method}()`");
        let len = s.len() as u128;
        // Every string method but these two looks at the whole string.
        if !matches!(method, "startswith" | "endswith") {
            charge_scan(&what, s.len())?;
        }
        match method {
            "upper" | "lower" | "title" | "capitalize" => charge(&what, len.saturating_mul(4))?,
            "strip" | "lstrip" | "rstrip" => charge(&what, len)?,
            "replace" => {
                if let (Some(from), Some(to)) =
                    (args.first().and_then(Value::as_str), args.get(1).and_then(Value::as_str))
                {
                    let count = args.get(2).and_then(|v| i64::try_from(v.clone()).ok());
                    charge(&what, replace_size(s, from, to, count))?;
                }
            }
            "format" => charge(&what, format_size(false, s, args)?)?,
            "join" => {
                let (values, kwargs) = split_kwargs(args);
                if kwargs.is_none() && values.len() == 1 {
                    return join_values(&what, &values[0], s);
                }
            }
            "split" => {
                let sep = args.first().and_then(Value::as_str);
                let pieces = match sep {
                    Some(sep) => s.split(sep).count() as u128,
                    None => s.split_whitespace().count() as u128,
                };
                charge(&what, pieces.saturating_mul(VALUE_COST).saturating_add(len))?;
            }
            // minijinja-contrib loops forever on an empty needle; Python counts the positions
            // between characters.
            "count" if args.len() == 1 && args[0].as_str() == Some("") => {
                return Ok(Value::from(s.chars().count() as u128 + 1));
            }
            "splitlines" => {
                charge(&what, (s.lines().count() as u128).saturating_mul(VALUE_COST).saturating_add(len))?;
            }
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}
