//! Compile-time rewriting of template sources, so that minijinja's operators go through the
//! checked functions of `checked.rs`.
//!
//! minijinja has no hook for its operators, and its code generator folds constant operands at
//! compile time (`{{ 'x' * 100000000 }}` would be built while a definition is saved). So each
//! template is parsed once with minijinja's parser (the `unstable_machinery` feature, which is
//! why Cargo.toml pins minijinja to one version) and its source is rewritten by spans:
//!
//! - `a + b`, `a * b`, `a ~ b`, `a in b` become `__tw_add(a, b)` ... (`a not in b` becomes
//!   `not __tw_in(a, b)`): `fn(` goes where the left operand's text starts (its opening
//!   parentheses included), the operator token (found after the left operand's end, past its
//!   closing parentheses) becomes `, `, and `)` goes after the right operand;
//! - `x[a:b:c]` becomes `__tw_slice(x, a, b, c)` (a missing part is `none`);
//! - every operand of a comparison (`a == b < c`), the subject and arguments of the tests
//!   that compare or search (`is eq(x)`, `is in(x)`, `is startingwith(x)` ...), subscripts
//!   (`d[k]` hashes `k`), computed map keys and the arguments of `loop.changed(...)` become
//!   `__tw_w(operand)`, which charges walking the value to the work budget (see `budget.rs`)
//!   and returns it unchanged; constants that cost O(1) to compare (numbers, booleans, none,
//!   strings of at most [`SMALL_CONST_BYTES`] bytes) are left as they are;
//! - template text inside loops, macros, call blocks, `{% set %}` captures and `{% filter %}`
//!   blocks becomes `{{ '...' }}`, so that the formatter counts it (see `budget.rs`).
//!
//! The rewritten source is what is compiled, so nothing unbounded is ever constant folded. A
//! template may not use names starting with `__tw_` (it could shadow the checked functions),
//! chain comparisons with `in` (`a < b in c`), load other templates (there is no loader), or
//! use `{% raw %}` inside the blocks above.

use minijinja::machinery::{ast, parse, parse_expr};
use minijinja::{Error, ErrorKind};

use super::budget::TEMPLATE_MAX_SOURCE_BYTES;
use super::checked::{ADD, CONCAT, IN, MUL, PLAIN, RESERVED_PREFIX, SLICE, WALK};

/// The longest string constant a comparison, test or subscript uses without charging its walk.
const SMALL_CONST_BYTES: usize = 256;

/// Tests that compare or search their subject and arguments (their operands are walked).
const COMPARING_TESTS: &[&str] = &[
    "eq",
    "equalto",
    "==",
    "ne",
    "!=",
    "lt",
    "lessthan",
    "<",
    "le",
    "<=",
    "gt",
    "greaterthan",
    ">",
    "ge",
    ">=",
    "in",
    "sameas",
    "startingwith",
    "endingwith",
];

/// Rewrites a template (see the module documentation).
pub(super) fn template(source: &str) -> Result<String, Error> {
    precheck(source)?;
    let stmt = parse(source, "<template>", Default::default(), Default::default())?;
    let mut r = Rewriter { src: source, edits: Vec::new(), problem: None };
    r.stmt(&stmt, false);
    r.finish()
}

/// Rewrites a standalone expression (see the module documentation).
pub(super) fn expression(source: &str) -> Result<String, Error> {
    precheck(source)?;
    let expr = parse_expr(source)?;
    let mut r = Rewriter { src: source, edits: Vec::new(), problem: None };
    r.expr(&expr);
    r.finish()
}

fn precheck(source: &str) -> Result<(), Error> {
    if source.len() > TEMPLATE_MAX_SOURCE_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "the template is {} bytes; templates may be at most {TEMPLATE_MAX_SOURCE_BYTES} bytes \
                 (TEMPLATE_MAX_SOURCE_BYTES)",
                source.len()
            ),
        ));
    }
    if source.contains(RESERVED_PREFIX) {
        return Err(unsupported(format!("names starting with `{RESERVED_PREFIX}` are reserved")));
    }
    Ok(())
}

fn unsupported(message: String) -> Error {
    Error::new(ErrorKind::SyntaxError, message)
}

/// One splice: at byte `at`, drop `remove` bytes and insert `text`.
struct Edit {
    at: usize,
    remove: usize,
    text: String,
}

struct Rewriter<'s> {
    src: &'s str,
    edits: Vec<Edit>,
    problem: Option<String>,
}

/// A constant that costs O(1) to compare or hash.
fn small_const(e: &ast::Expr<'_>) -> bool {
    match e {
        ast::Expr::Const(c) => match c.value.as_str() {
            Some(s) => s.len() <= SMALL_CONST_BYTES,
            None => c.value.as_object().is_none(),
        },
        _ => false,
    }
}

fn end(e: &ast::Expr<'_>) -> usize {
    e.span().end_offset as usize
}

impl Rewriter<'_> {
    fn fail(&mut self, message: impl Into<String>) {
        if self.problem.is_none() {
            self.problem = Some(message.into());
        }
    }

    fn insert(&mut self, at: usize, text: &str) {
        self.edits.push(Edit { at, remove: 0, text: text.to_owned() });
    }

    fn replace(&mut self, at: usize, remove: usize, text: &str) {
        self.edits.push(Edit { at, remove, text: text.to_owned() });
    }

    fn finish(mut self) -> Result<String, Error> {
        if let Some(problem) = self.problem {
            return Err(unsupported(problem));
        }
        self.edits.sort_by_key(|e| e.at);
        let mut out = String::with_capacity(self.src.len() + self.edits.len() * 12);
        let mut cursor = 0;
        for edit in &self.edits {
            let Some(between) = self.src.get(cursor..edit.at) else {
                return Err(unsupported("the template could not be prepared for checked rendering".to_owned()));
            };
            out.push_str(between);
            out.push_str(&edit.text);
            cursor = edit.at + edit.remove;
        }
        match self.src.get(cursor..) {
            Some(rest) => out.push_str(rest),
            None => return Err(unsupported("the template could not be prepared for checked rendering".to_owned())),
        }
        Ok(out)
    }

    /// The first byte at or after `at` that is not whitespace (nor, with `parens`, `)`).
    fn skip(&self, mut at: usize, parens: bool) -> usize {
        let bytes = self.src.as_bytes();
        while let Some(&c) = bytes.get(at) {
            if c.is_ascii_whitespace() || (parens && c == b')') {
                at += 1;
            } else {
                break;
            }
        }
        at
    }

    /// `start` moved back over the opening parentheses matching the closing ones right after
    /// `end` (the parentheses around an operand belong to its text).
    fn ext(&self, start: usize, end: usize) -> usize {
        let bytes = self.src.as_bytes();
        let mut closing = 0;
        let mut at = end;
        while let Some(&c) = bytes.get(at) {
            if c == b')' {
                closing += 1;
            } else if !c.is_ascii_whitespace() {
                break;
            }
            at += 1;
        }
        let mut start = start;
        let mut back = start;
        while closing > 0 && back > 0 {
            back -= 1;
            match bytes.get(back) {
                Some(c) if c.is_ascii_whitespace() => {}
                Some(b'(') => {
                    closing -= 1;
                    start = back;
                }
                _ => break,
            }
        }
        start
    }

    fn is_keyword_at(&self, at: usize, word: &str) -> bool {
        let rest = self.src.get(at..).unwrap_or("");
        rest.starts_with(word) && !rest[word.len()..].chars().next().is_some_and(|c| c.is_alphanumeric() || c == '_')
    }

    /// Where the text of `e` starts (minijinja's spans of postfix, filter, comparison and
    /// conditional expressions do not always start there).
    fn start(&self, e: &ast::Expr<'_>) -> usize {
        match e {
            ast::Expr::Var(_) | ast::Expr::Const(_) | ast::Expr::List(_) | ast::Expr::Map(_) => {
                e.span().start_offset as usize
            }
            ast::Expr::UnaryOp(u) => {
                let at = e.span().start_offset as usize;
                let prefix = match u.op {
                    ast::UnaryOpKind::Neg => self.src.as_bytes().get(at) == Some(&b'-'),
                    ast::UnaryOpKind::Not => self.is_keyword_at(at, "not"),
                };
                if prefix {
                    at
                } else {
                    self.start(&u.expr)
                }
            }
            ast::Expr::BinOp(b) => self.ext(self.start(&b.left), end(&b.left)),
            ast::Expr::Compare(c) => self.ext(self.start(&c.expr), end(&c.expr)),
            ast::Expr::IfExpr(i) => self.ext(self.start(&i.true_expr), end(&i.true_expr)),
            ast::Expr::Slice(s) => self.ext(self.start(&s.expr), end(&s.expr)),
            ast::Expr::GetAttr(g) => self.ext(self.start(&g.expr), end(&g.expr)),
            ast::Expr::GetItem(g) => self.ext(self.start(&g.expr), end(&g.expr)),
            ast::Expr::Call(c) => self.ext(self.start(&c.expr), end(&c.expr)),
            ast::Expr::Test(t) => self.ext(self.start(&t.expr), end(&t.expr)),
            ast::Expr::Filter(f) => match &f.expr {
                Some(inner) => self.ext(self.start(inner), end(inner)),
                None => e.span().start_offset as usize,
            },
        }
    }

    fn stmts(&mut self, body: &[ast::Stmt<'_>], repeated: bool) {
        for s in body {
            self.stmt(s, repeated);
        }
    }

    fn stmt(&mut self, s: &ast::Stmt<'_>, repeated: bool) {
        match s {
            ast::Stmt::Template(t) => self.stmts(&t.children, repeated),
            ast::Stmt::EmitExpr(e) => self.expr(&e.expr),
            ast::Stmt::EmitRaw(r) => {
                if repeated {
                    self.raw(r.raw);
                }
            }
            ast::Stmt::ForLoop(f) => {
                self.expr(&f.iter);
                if let Some(e) = &f.filter_expr {
                    self.expr(e);
                }
                self.stmts(&f.body, true);
                self.stmts(&f.else_body, repeated);
            }
            ast::Stmt::IfCond(i) => {
                self.expr(&i.expr);
                self.stmts(&i.true_body, repeated);
                self.stmts(&i.false_body, repeated);
            }
            ast::Stmt::WithBlock(w) => {
                for (_, e) in &w.assignments {
                    self.expr(e);
                }
                self.stmts(&w.body, repeated);
            }
            ast::Stmt::Set(set) => {
                // `{% set ns.attr = value %}` stores into a namespace: guarded, so that no
                // namespace ends up inside one.
                let guarded = matches!(set.target, ast::Expr::GetAttr(_));
                let close = guarded.then(|| self.wrap_open(&set.expr, PLAIN));
                self.expr(&set.expr);
                if let Some(at) = close {
                    self.insert(at, ")");
                }
            }
            ast::Stmt::SetBlock(set) => {
                if let Some(f) = &set.filter {
                    self.expr(f);
                }
                self.stmts(&set.body, true);
            }
            ast::Stmt::AutoEscape(a) => {
                self.expr(&a.enabled);
                self.stmts(&a.body, repeated);
            }
            ast::Stmt::FilterBlock(f) => {
                self.expr(&f.filter);
                self.stmts(&f.body, true);
            }
            ast::Stmt::Block(b) => self.stmts(&b.body, repeated),
            ast::Stmt::Import(_) | ast::Stmt::FromImport(_) | ast::Stmt::Extends(_) | ast::Stmt::Include(_) => {
                self.fail("templates cannot load other templates (`import`, `from`, `extends`, `include`)");
            }
            ast::Stmt::Macro(m) => {
                for e in &m.defaults {
                    self.expr(e);
                }
                self.stmts(&m.body, true);
            }
            ast::Stmt::CallBlock(c) => {
                self.expr(&c.call.expr);
                self.args(&c.call.args);
                for e in &c.macro_decl.defaults {
                    self.expr(e);
                }
                self.stmts(&c.macro_decl.body, true);
            }
            ast::Stmt::Continue(_) | ast::Stmt::Break(_) => {}
            ast::Stmt::Do(d) => {
                self.expr(&d.call.expr);
                self.args(&d.call.args);
            }
        }
    }

    /// Template text that may be emitted many times: `{{ '...' }}`, so the formatter counts it
    /// (newlines stay as they are, so error lines still match the source).
    fn raw(&mut self, raw: &str) {
        let at = (raw.as_ptr() as usize).wrapping_sub(self.src.as_ptr() as usize);
        if self.src.get(at..at + raw.len()) != Some(raw) {
            self.fail("the template could not be prepared for checked rendering");
            return;
        }
        // Text of a `{% raw %}` block: the tag before it would not be replaced.
        let before = self.src[..at].trim_end();
        if let Some(tag) = before.strip_suffix("%}").and_then(|b| b.rfind("{%").map(|i| &b[i + 2..])) {
            let tag = tag.trim_start_matches(['-', '+']).trim_end_matches(['-', '+']).trim();
            if tag == "raw" {
                self.fail(
                    "`{% raw %}` is not supported inside loops, macros, `{% set %}` captures and `{% filter %}` blocks",
                );
                return;
            }
        }
        let mut text = String::with_capacity(raw.len() + 8);
        text.push_str("{{ '");
        for c in raw.chars() {
            match c {
                '\\' => text.push_str("\\\\"),
                '\'' => text.push_str("\\'"),
                c => text.push(c),
            }
        }
        text.push_str("' }}");
        self.replace(at, raw.len(), &text);
    }

    fn args(&mut self, args: &[ast::CallArg<'_>]) {
        for a in args {
            match a {
                ast::CallArg::Pos(e)
                | ast::CallArg::Kwarg(_, e)
                | ast::CallArg::PosSplat(e)
                | ast::CallArg::KwargSplat(e) => self.expr(e),
            }
        }
    }

    fn expr(&mut self, e: &ast::Expr<'_>) {
        match e {
            ast::Expr::Var(_) | ast::Expr::Const(_) => {}
            ast::Expr::Slice(s) => {
                self.slice(s);
                self.expr(&s.expr);
                for part in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                    self.expr(part);
                }
            }
            ast::Expr::UnaryOp(u) => self.expr(&u.expr),
            ast::Expr::BinOp(b) => {
                let func = match b.op {
                    ast::BinOpKind::Add => Some(ADD),
                    ast::BinOpKind::Mul => Some(MUL),
                    ast::BinOpKind::Concat => Some(CONCAT),
                    ast::BinOpKind::In => Some(IN),
                    _ => None,
                };
                if let Some(func) = func {
                    self.binop(b, e.span().end_offset as usize, func);
                }
                // A single comparison is a binary operator (a chained one is `Compare`).
                let compares = matches!(
                    b.op,
                    ast::BinOpKind::Eq
                        | ast::BinOpKind::Ne
                        | ast::BinOpKind::Lt
                        | ast::BinOpKind::Lte
                        | ast::BinOpKind::Gt
                        | ast::BinOpKind::Gte
                );
                if compares {
                    self.walked(&b.left);
                    self.walked(&b.right);
                } else {
                    self.expr(&b.left);
                    self.expr(&b.right);
                }
            }
            ast::Expr::Compare(c) => {
                if c.ops.iter().any(|op| matches!(op.op, ast::CompareOpKind::In | ast::CompareOpKind::NotIn)) {
                    self.fail("chained comparisons with `in` are not supported: use `and`");
                }
                self.walked(&c.expr);
                for op in &c.ops {
                    self.walked(&op.expr);
                }
            }
            ast::Expr::IfExpr(i) => {
                self.expr(&i.test_expr);
                self.expr(&i.true_expr);
                if let Some(f) = &i.false_expr {
                    self.expr(f);
                }
            }
            ast::Expr::Filter(f) => {
                if let Some(inner) = &f.expr {
                    self.expr(inner);
                }
                self.args(&f.args);
            }
            ast::Expr::Test(t) => {
                if COMPARING_TESTS.contains(&t.name) {
                    self.walked(&t.expr);
                    self.walked_args(&t.args);
                } else {
                    self.expr(&t.expr);
                    self.args(&t.args);
                }
            }
            ast::Expr::GetAttr(g) => self.expr(&g.expr),
            ast::Expr::GetItem(g) => {
                self.expr(&g.expr);
                self.walked(&g.subscript_expr);
            }
            ast::Expr::Call(c) => {
                self.expr(&c.expr);
                if matches!(&c.expr, ast::Expr::GetAttr(g) if g.name == "changed") {
                    self.walked_args(&c.args);
                } else {
                    self.args(&c.args);
                }
            }
            ast::Expr::List(l) => {
                for item in &l.items {
                    self.expr(item);
                }
            }
            ast::Expr::Map(m) => {
                for key in &m.keys {
                    self.walked(key);
                }
                for value in &m.values {
                    self.expr(value);
                }
            }
        }
    }

    /// Rewrites `e` wrapped in `__tw_w(...)` (unless it is a small constant).
    fn walked(&mut self, e: &ast::Expr<'_>) {
        if small_const(e) {
            return;
        }
        // Around the operand's own text (an argument's parentheses are the call's).
        self.insert(self.start(e), &format!("{WALK}("));
        self.expr(e);
        self.insert(end(e), ")");
    }

    fn walked_args(&mut self, args: &[ast::CallArg<'_>]) {
        for a in args {
            match a {
                ast::CallArg::Pos(e)
                | ast::CallArg::Kwarg(_, e)
                | ast::CallArg::PosSplat(e)
                | ast::CallArg::KwargSplat(e) => self.walked(e),
            }
        }
    }

    /// Opens `func(` before `e` (its parentheses included) and returns where the closing `)`
    /// goes: insert it after the edits inside `e`, so that it closes last.
    fn wrap_open(&mut self, e: &ast::Expr<'_>, func: &str) -> usize {
        let (inner, stop) = (self.start(e), end(e));
        let start = self.ext(inner, stop);
        let parens = self.src.get(start..inner).map_or(0, |t| t.matches('(').count());
        let mut at = stop;
        let bytes = self.src.as_bytes();
        let mut closed = 0;
        while closed < parens {
            match bytes.get(at) {
                Some(b')') => {
                    closed += 1;
                    at += 1;
                }
                Some(c) if c.is_ascii_whitespace() => at += 1,
                _ => break,
            }
        }
        self.insert(start, &format!("{func}("));
        at
    }

    fn binop(&mut self, b: &ast::BinOp<'_>, end_at: usize, func: &str) {
        let start = self.ext(self.start(&b.left), end(&b.left));
        let op_at = self.skip(end(&b.left), true);
        let rest = self.src.get(op_at..).unwrap_or("");
        let (opener, op_len) = match b.op {
            ast::BinOpKind::Add if rest.starts_with('+') => (format!("{func}("), 1),
            ast::BinOpKind::Mul if rest.starts_with('*') && !rest.starts_with("**") => (format!("{func}("), 1),
            ast::BinOpKind::Concat if rest.starts_with('~') => (format!("{func}("), 1),
            ast::BinOpKind::In if self.is_keyword_at(op_at, "in") => (format!("{func}("), 2),
            ast::BinOpKind::In if self.is_keyword_at(op_at, "not") => {
                let in_at = self.skip(op_at + 3, false);
                if !self.is_keyword_at(in_at, "in") {
                    self.fail("the template could not be prepared for checked rendering");
                    return;
                }
                (format!("not {func}("), in_at + 2 - op_at)
            }
            _ => {
                self.fail("the template could not be prepared for checked rendering");
                return;
            }
        };
        self.insert(start, &opener);
        self.replace(op_at, op_len, ",");
        self.insert(end_at, ")");
    }

    fn slice(&mut self, s: &ast::Slice<'_>) {
        let bytes = self.src.as_bytes();
        let start = self.ext(self.start(&s.expr), end(&s.expr));
        let bracket = self.skip(end(&s.expr), true);
        if bytes.get(bracket) != Some(&b'[') {
            self.fail("the template could not be prepared for checked rendering");
            return;
        }
        self.insert(start, &format!("{SLICE}("));
        self.replace(bracket, 1, ", ");
        let mut at = bracket + 1;
        match &s.start {
            Some(e) => at = end(e),
            None => self.insert(at, "none"),
        }
        let colon = self.skip(at, true);
        if bytes.get(colon) != Some(&b':') {
            self.fail("the template could not be prepared for checked rendering");
            return;
        }
        self.replace(colon, 1, ", ");
        at = colon + 1;
        match &s.stop {
            Some(e) => at = end(e),
            None => self.insert(at, "none"),
        }
        let next = self.skip(at, true);
        let close = match bytes.get(next) {
            Some(b':') => {
                self.replace(next, 1, ", ");
                at = next + 1;
                match &s.step {
                    Some(e) => at = end(e),
                    None => self.insert(at, "none"),
                }
                self.skip(at, true)
            }
            Some(b']') => {
                self.insert(next, ", none");
                next
            }
            _ => {
                self.fail("the template could not be prepared for checked rendering");
                return;
            }
        };
        if bytes.get(close) != Some(&b']') {
            self.fail("the template could not be prepared for checked rendering");
            return;
        }
        self.replace(close, 1, ")");
    }
}
