//! The one sandboxed minijinja environment every template runs in (chainable undefined values,
//! fuel, no auto-escaping, Python's `str()` output), the Python-compatible filters it adds
//! (`truncate`, `tojson`, `string`), and the two ways a source is compiled in it: an expression
//! ([`compile_expression`]) and a text template parsed once ([`TextTemplate`]).

use std::fmt;
use std::sync::{Arc, LazyLock};

use minijinja::value::{from_args, Kwargs, Rest, Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Expression, Output, State, UndefinedBehavior};
use serde_json::Value as Json;

use super::convert::to_json;
use super::{budget, checked, rewrite, TEMPLATE_MAX_VALUE_BYTES};

/// Fuel per rendering (minijinja `set_fuel`), a documented limit: roughly the number of
/// instructions one template or filter may execute before it fails with "ran out of fuel".
pub const TEMPLATE_FUEL: u64 = 100_000;

/// Nesting depth of macros, loops and conditionals a template may reach at run time.
const RECURSION_LIMIT: usize = 100;

/// The widest indentation `tojson(indent=n)` accepts.
const MAX_JSON_INDENT: usize = 64;

pub(super) static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_formatter(python_formatter);
    env.set_unknown_method_callback(checked::method_callback);
    // pluralize, filesizeformat, striptags, cycler, joiner (no randomness: the contrib `rand`
    // feature is off, so rendering stays deterministic).
    minijinja_contrib::add_to_environment(&mut env);
    // Checked operators, functions, filters, tests (after the builtins they replace).
    checked::install(&mut env);
    env.add_filter("truncate", truncate_filter);
    env.add_filter("tojson", tojson_filter);
    env.add_filter("string", string_filter);
    // A template bug on demand, for the tests of what a panic while rendering does.
    #[cfg(test)]
    env.add_filter("test_panic", |message: String| -> Result<Value, Error> { panic!("{message}") });
    env
});

/// Text output as Python's `str()` prints these: `None`, `True`, `False`. Every emission
/// (also inside captures, filter blocks and macros) is charged to the rendering's budget.
fn python_formatter(out: &mut Output, state: &State, value: &Value) -> Result<(), Error> {
    let text = match value.kind() {
        ValueKind::None => "None",
        ValueKind::Bool if value.is_true() => "True",
        ValueKind::Bool => "False",
        _ => {
            budget::charge(&"output", budget::display_len(&"output", value)?)?;
            return minijinja::escape_formatter(out, state, value);
        }
    };
    out.write_str(text).map_err(Error::from)
}

/// `string`: like the builtin, but none and booleans read as Python prints them.
fn string_filter(value: &Value) -> Result<Value, Error> {
    Ok(match value.kind() {
        ValueKind::String => value.clone(),
        ValueKind::None => Value::from("None"),
        ValueKind::Bool if value.is_true() => Value::from("True"),
        ValueKind::Bool => Value::from("False"),
        _ => {
            let mut out = budget::Capped::string(TEMPLATE_MAX_VALUE_BYTES);
            let result = fmt::write(&mut out, format_args!("{value}"));
            Value::from(out.finish(&"`string`", result)?)
        }
    })
}

/// Jinja2's `truncate(s, length=255, killwords=False, end='...', leeway=5)`, exactly.
fn truncate_filter(value: &Value, args: Rest<Value>) -> Result<Value, Error> {
    type Args = (Option<i64>, Option<bool>, Option<String>, Option<i64>, Kwargs);
    let (length, killwords, end, leeway, kwargs): Args = from_args(&args)?;
    let length = match length {
        Some(n) => n,
        None => kwargs.get::<Option<i64>>("length")?.unwrap_or(255),
    };
    let killwords = match killwords {
        Some(k) => k,
        None => kwargs.get::<Option<bool>>("killwords")?.unwrap_or(false),
    };
    let end = match end {
        Some(e) => e,
        None => kwargs.get::<Option<String>>("end")?.unwrap_or_else(|| "...".to_owned()),
    };
    let leeway = match leeway {
        Some(n) => n,
        None => kwargs.get::<Option<i64>>("leeway")?.unwrap_or(5),
    };
    kwargs.assert_all_used()?;
    let end_len = end.chars().count() as i64;
    if length < end_len {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("truncate: expected length >= {end_len}, got {length}"),
        ));
    }
    if leeway < 0 {
        return Err(Error::new(ErrorKind::InvalidOperation, format!("truncate: expected leeway >= 0, got {leeway}")));
    }
    let value = budget::stringify(&"`truncate`", value)?;
    let s = match value.as_str() {
        Some(s) => s.to_owned(),
        None => value.to_string(),
    };
    budget::charge(&"`truncate`", (s.len() as u128).saturating_add(end.len() as u128))?;
    if (s.chars().count() as i64) <= length.saturating_add(leeway) {
        return Ok(Value::from(s));
    }
    let keep = usize::try_from(length - end_len).unwrap_or(0);
    let head: String = s.chars().take(keep).collect();
    let head = if killwords {
        head
    } else {
        match head.rsplit_once(' ') {
            Some((before, _)) => before.to_owned(),
            None => head,
        }
    };
    Ok(Value::from(head + &end))
}

/// `tojson(indent=None)` as Jinja2 writes it (sorted keys, `", "` and `": "` separators,
/// ASCII only, and `<`, `>`, `&`, `'` escaped), over tripwire's JSON view of the value (an
/// event is its JSON, a datetime its ISO 8601 string).
fn tojson_filter(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match indent {
        Some(indent) => Some(indent),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) if v.kind() == ValueKind::Bool => v.is_true().then(|| "  ".to_owned()),
        Some(v) if v.kind() == ValueKind::String => {
            Some(v.as_str().unwrap_or("").chars().take(MAX_JSON_INDENT).collect())
        }
        Some(v) => {
            let n = i64::try_from(v)
                .map_err(|_| Error::new(ErrorKind::InvalidOperation, "tojson: indent must be a number"))?;
            Some(" ".repeat(n.clamp(0, MAX_JSON_INDENT as i64) as usize))
        }
    };
    let json = to_json(value, 0).map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    // Indentation can make the text much longer than the value: written within the limits.
    let mut out = budget::Capped::plain_string(TEMPLATE_MAX_VALUE_BYTES);
    let result = write_python_json(&json, indent.as_deref(), 0, &mut out);
    Ok(Value::from_safe_string(out.finish(&"`tojson`", result)?))
}

fn write_python_json(value: &Json, indent: Option<&str>, level: usize, out: &mut impl fmt::Write) -> fmt::Result {
    let newline = |out: &mut dyn fmt::Write, level: usize| -> fmt::Result {
        if let Some(indent) = indent {
            out.write_char('\n')?;
            for _ in 0..level {
                out.write_str(indent)?;
            }
        }
        Ok(())
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match value {
        Json::Null => out.write_str("null"),
        Json::Bool(b) => out.write_str(if *b { "true" } else { "false" }),
        Json::Number(n) => write!(out, "{n}"),
        Json::String(s) => write_python_json_string(s, out),
        Json::Array(items) if items.is_empty() => out.write_str("[]"),
        Json::Array(items) => {
            out.write_char('[')?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_str(item_sep)?;
                }
                newline(out, level + 1)?;
                write_python_json(item, indent, level + 1, out)?;
            }
            newline(out, level)?;
            out.write_char(']')
        }
        Json::Object(map) if map.is_empty() => out.write_str("{}"),
        Json::Object(map) => {
            let mut entries: Vec<(&String, &Json)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.write_char('{')?;
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.write_str(item_sep)?;
                }
                newline(out, level + 1)?;
                write_python_json_string(key, out)?;
                out.write_str(": ")?;
                write_python_json(item, indent, level + 1, out)?;
            }
            newline(out, level)?;
            out.write_char('}')
        }
    }
}

fn write_python_json_string(s: &str, out: &mut impl fmt::Write) -> fmt::Result {
    out.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            '\u{08}' => out.write_str("\\b")?,
            '\u{0c}' => out.write_str("\\f")?,
            '<' | '>' | '&' | '\'' => write!(out, "\\u{:04x}", c as u32)?,
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(out, "\\u{:04x}", unit)?;
                }
            }
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

/// True when `expr`, lexed as minijinja lexes an expression, has a variable end (`}}`, `-}}`
/// or `+}}`) outside brackets and strings. Such an expression is never valid, and minijinja
/// 2.24's expression lexer panics ("empty lexer stack") on any input after one, so it must not
/// be handed to `compile_expression`.
pub(super) fn has_top_level_variable_end(expr: &str) -> bool {
    let bytes = expr.as_bytes();
    let mut balance: isize = 0;
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        if balance == 0 {
            let rest = &bytes[i..];
            if rest.starts_with(b"}}") || rest.starts_with(b"-}}") || rest.starts_with(b"+}}") {
                return true;
            }
        }
        match c {
            b'(' | b'[' | b'{' => balance += 1,
            b')' | b']' | b'}' => balance -= 1,
            b'\'' | b'"' => {
                // Skip the string literal, escapes included, as the lexer does.
                i += 1;
                while let Some(&d) = bytes.get(i) {
                    if d == b'\\' {
                        i += 1;
                    } else if d == c {
                        break;
                    }
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

/// Compiles a standalone expression (see [`has_top_level_variable_end`]), with its operators
/// rewritten into checked calls (see `rewrite.rs`).
pub(super) fn compile_expression(source: &str) -> Result<Expression<'static, 'static>, Error> {
    if has_top_level_variable_end(source) {
        return Err(Error::new(ErrorKind::SyntaxError, "unexpected `}}` in an expression"));
    }
    let rewritten = rewrite::expression(source)?;
    if has_top_level_variable_end(&rewritten) {
        return Err(Error::new(ErrorKind::SyntaxError, "unexpected `}}` in an expression"));
    }
    ENV.compile_expression_owned(rewritten)
}

/// A text template parsed once, at compile time: rendering runs its compiled instructions and
/// never parses. (The shared environment can only hold `'static` sources, so each template
/// lives in a copy of it: the copy shares its filters, tests and globals, and holds only this
/// template.)
#[derive(Clone)]
pub(super) struct TextTemplate(Arc<Environment<'static>>);

impl TextTemplate {
    /// The name of the one template in the copy (minijinja's name for a template from a string).
    const NAME: &'static str = "<string>";

    /// Rewrites `source` (see `rewrite.rs`) and parses the result. Returns the template and the
    /// names it reads.
    pub(super) fn compile(source: &str) -> Result<(TextTemplate, std::collections::HashSet<String>), Error> {
        let rewritten = rewrite::template(source)?;
        let mut env = ENV.clone();
        env.add_template_owned(Self::NAME, rewritten)?;
        let names = env.get_template(Self::NAME)?.undeclared_variables(true);
        Ok((TextTemplate(Arc::new(env)), names))
    }

    /// Renders with this context.
    pub(super) fn render<S: serde::Serialize>(&self, ctx: S) -> Result<String, Error> {
        self.0.get_template(Self::NAME)?.render(ctx)
    }
}
