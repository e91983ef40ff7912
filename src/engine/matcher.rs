//! Prefect's matching rules: `fnmatch` globs for labels and event names, the anchored-prefix
//! event regex of `EventTrigger.event_pattern`, and resource specifications.
//!
//! Three checks decide whether an event name reaches a trigger (SEMANTICS.md, "Event names"):
//! the name index (`fnmatch` against `expect ∪ after`), the regex (`*` becomes `.+`, matched at
//! the start only), and the role checks (`expects` / `starts_after`, `fnmatch` with `!`
//! negation). Each is reproduced here exactly, quirks included.

use crate::model::trigger::{RelatedSpec, ResourceSpec};
use crate::model::Resource;

/// A compiled `fnmatch.fnmatchcase` pattern: `*`, `?` and `[...]` classes, case-sensitive,
/// matching the whole value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    source: String,
    tokens: Option<Vec<Token>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyOne,
    AnyRun,
    Class { negated: bool, ranges: Vec<(char, char)> },
}

impl Glob {
    /// Compiles `pattern`; a pattern without wildcards is matched by plain comparison.
    pub fn new(pattern: &str) -> Glob {
        let wild = pattern.contains(['*', '?', '[']);
        Glob { source: pattern.to_owned(), tokens: wild.then(|| tokenize(pattern)) }
    }

    /// The pattern as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True when the pattern has no wildcard (so it equals exactly one value).
    pub fn is_literal(&self) -> bool {
        self.tokens.is_none()
    }

    /// `fnmatch.fnmatchcase(value, pattern)`.
    pub fn matches(&self, value: &str) -> bool {
        match &self.tokens {
            None => self.source == value,
            Some(tokens) => glob_match(tokens, value),
        }
    }
}

/// Python's `fnmatch.translate`, as tokens: a `[` without a closing `]` is a literal.
fn tokenize(pattern: &str) -> Vec<Token> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => {
                if out.last() != Some(&Token::AnyRun) {
                    out.push(Token::AnyRun);
                }
            }
            '?' => out.push(Token::AnyOne),
            '[' => {
                let mut j = i;
                if j < chars.len() && chars[j] == '!' {
                    j += 1;
                }
                if j < chars.len() && chars[j] == ']' {
                    j += 1;
                }
                while j < chars.len() && chars[j] != ']' {
                    j += 1;
                }
                if j >= chars.len() {
                    out.push(Token::Literal('['));
                    continue;
                }
                let mut body = &chars[i..j];
                i = j + 1;
                let negated = body.first() == Some(&'!');
                if negated {
                    body = &body[1..];
                }
                let mut ranges = Vec::new();
                let mut k = 0;
                while k < body.len() {
                    if k + 2 < body.len() && body[k + 1] == '-' {
                        // Python drops reversed ranges such as `z-a`.
                        if body[k] <= body[k + 2] {
                            ranges.push((body[k], body[k + 2]));
                        }
                        k += 3;
                    } else {
                        ranges.push((body[k], body[k]));
                        k += 1;
                    }
                }
                out.push(Token::Class { negated, ranges });
            }
            c => out.push(Token::Literal(c)),
        }
    }
    out
}

fn token_accepts(token: &Token, c: char) -> bool {
    match token {
        Token::Literal(l) => *l == c,
        Token::AnyOne => true,
        Token::AnyRun => true,
        Token::Class { negated, ranges } => ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi) != *negated,
    }
}

/// Whole-value glob matching with single-star backtracking (linear in practice).
fn glob_match(tokens: &[Token], value: &str) -> bool {
    let chars: Vec<char> = value.chars().collect();
    let (mut t, mut v) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while v < chars.len() {
        if t < tokens.len() && tokens[t] == Token::AnyRun {
            star = Some((t, v));
            t += 1;
        } else if t < tokens.len() && token_accepts(&tokens[t], chars[v]) {
            t += 1;
            v += 1;
        } else if let Some((st, sv)) = star {
            t = st + 1;
            v = sv + 1;
            star = Some((st, sv + 1));
        } else {
            return false;
        }
    }
    tokens[t..].iter().all(|tok| *tok == Token::AnyRun)
}

/// `fnmatch` with Prefect's `!` negation of a single value (`schemas/events.py::matches`):
/// a missing value never matches, not even a negation.
pub fn label_matches(pattern: &Glob, negated: bool, value: Option<&str>) -> bool {
    match value {
        None => false,
        Some(v) => pattern.matches(v) != negated,
    }
}

/// One label value pattern, possibly negated with a leading `!`.
#[derive(Clone, Debug)]
pub struct ValuePattern {
    glob: Glob,
    negated: bool,
}

impl ValuePattern {
    /// Compiles `!`-prefixed or plain glob text.
    pub fn new(text: &str) -> ValuePattern {
        match text.strip_prefix('!') {
            Some(rest) => ValuePattern { glob: Glob::new(rest), negated: true },
            None => ValuePattern { glob: Glob::new(text), negated: false },
        }
    }

    /// Prefect's `matches(expected, value)`.
    pub fn matches(&self, value: Option<&str>) -> bool {
        label_matches(&self.glob, self.negated, value)
    }
}

/// A compiled `ResourceSpecification`: every label must match one of its values.
#[derive(Clone, Debug, Default)]
pub struct ResourceMatcher {
    labels: Vec<(String, Vec<ValuePattern>)>,
}

impl ResourceMatcher {
    /// Compiles a spec.
    pub fn new(spec: &ResourceSpec) -> ResourceMatcher {
        ResourceMatcher {
            labels: spec
                .0
                .iter()
                .map(|(label, values)| {
                    (label.clone(), values.patterns().iter().map(|p| ValuePattern::new(p)).collect())
                })
                .collect(),
        }
    }

    /// True for `{}`, which matches everything (even an event without related resources).
    pub fn matches_everything(&self) -> bool {
        self.labels.is_empty()
    }

    /// `ResourceSpecification.matches(resource)`.
    pub fn matches(&self, resource: &Resource) -> bool {
        self.labels.iter().all(|(label, patterns)| {
            let value = resource.get(label);
            patterns.iter().any(|p| p.matches(value))
        })
    }

    /// `ResourceSpecification.includes(candidates)`: some candidate matches.
    pub fn includes<'a>(&self, mut candidates: impl Iterator<Item = &'a Resource>) -> bool {
        self.matches_everything() || candidates.any(|r| self.matches(r))
    }
}

/// A trigger's `match` and `match_related`, compiled.
#[derive(Clone, Debug, Default)]
pub struct ResourceFilter {
    primary: ResourceMatcher,
    related: Vec<ResourceMatcher>,
}

impl ResourceFilter {
    /// Compiles `match` and `match_related`.
    pub fn new(primary: &ResourceSpec, related: &RelatedSpec) -> ResourceFilter {
        ResourceFilter {
            primary: ResourceMatcher::new(primary),
            related: related.specs().iter().map(ResourceMatcher::new).filter(|m| !m.matches_everything()).collect(),
        }
    }

    /// True when no label is constrained at all (the cheap path).
    pub fn is_trivial(&self) -> bool {
        self.primary.matches_everything() && self.related.is_empty()
    }

    /// `ResourceTrigger.covers_resources`.
    pub fn covers(&self, resource: &Resource, related: &[Resource]) -> bool {
        self.primary.includes(std::iter::once(resource)) && self.related.iter().all(|m| m.includes(related.iter()))
    }
}

/// The anchored-at-start regex of `EventTrigger.event_pattern`: each pattern `re.escape`d with
/// `*` turned into `.+` (one or more characters other than a newline), OR-ed, and matched with
/// `re.match`, so a pattern matches any name it is a prefix-match of.
#[derive(Clone, Debug)]
pub struct NamePrefixPattern {
    /// `None` when `expect` is empty: Prefect's `.+`.
    alternatives: Option<Vec<Vec<String>>>,
}

impl NamePrefixPattern {
    /// Builds the pattern from `expect` and `after` as Prefect does.
    pub fn new(expect: &[String], after: &[String]) -> NamePrefixPattern {
        if expect.is_empty() {
            return NamePrefixPattern { alternatives: None };
        }
        let alternatives = expect.iter().chain(after).map(|p| p.split('*').map(str::to_owned).collect()).collect();
        NamePrefixPattern { alternatives: Some(alternatives) }
    }

    /// `event_pattern.match(name) is not None`.
    pub fn matches(&self, name: &str) -> bool {
        match &self.alternatives {
            None => name.chars().next().is_some_and(|c| c != '\n'),
            Some(alts) => alts.iter().any(|segments| prefix_match(segments, name)),
        }
    }
}

/// Does some prefix of `name` match `seg0 .+ seg1 .+ ... segN`? Choosing the earliest
/// occurrence of each literal segment is optimal: it leaves the most room for the rest, and
/// the gaps before it are as short as possible (so the least likely to hold a newline).
fn prefix_match(segments: &[String], name: &str) -> bool {
    let Some((first, rest)) = segments.split_first() else { return true };
    let Some(mut pos) = name.strip_prefix(first.as_str()).map(|_| first.len()) else { return false };
    for seg in rest {
        // `.+`: at least one character that is not a newline, then `seg`.
        let mut chars = name[pos..].char_indices();
        let Some((_, c)) = chars.next() else { return false };
        if c == '\n' {
            return false;
        }
        let from = pos + c.len_utf8();
        let tail = &name[from..];
        let found = if seg.is_empty() { Some(0) } else { tail.find(seg.as_str()) };
        match found {
            Some(offset) if !tail[..offset].contains('\n') => pos = from + offset + seg.len(),
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str, v: &str) -> bool {
        Glob::new(p).matches(v)
    }

    #[test]
    fn fnmatch_wildcards() {
        assert!(g("order.*", "order.created"));
        assert!(g("order.*", "order."), "fnmatch's * matches the empty string");
        assert!(g("*", ""));
        assert!(g("a*b*c", "axxbyyc"));
        assert!(!g("a*b*c", "axxbyy"));
        assert!(g("prefect.flow-run.*", "prefect.flow-run.Failed"));
        assert!(g("*.Failed", "prefect.flow-run.Failed"));
        assert!(g("us-?", "us-1"));
        assert!(!g("us-?", "us-12"));
        assert!(g("[ab]x", "bx"));
        assert!(!g("[!ab]x", "bx"));
        assert!(g("[a-c]", "b"));
        assert!(g("[]]", "]"));
        assert!(g("[", "["), "an unclosed class is a literal");
        assert!(!g("Order", "order"), "case-sensitive");
        assert!(g("a*", "a\nb"), "fnmatch's * crosses newlines");
    }

    #[test]
    fn negation_and_missing_labels() {
        let neg = ValuePattern::new("!prod");
        assert!(neg.matches(Some("dev")));
        assert!(!neg.matches(Some("prod")));
        assert!(!neg.matches(None), "a missing label never matches, not even a negation");
        assert!(ValuePattern::new("*").matches(Some("")));
        assert!(!ValuePattern::new("*").matches(None));
    }

    #[test]
    fn prefix_regex_quirks() {
        let p = NamePrefixPattern::new(&["order.*".into()], &[]);
        assert!(p.matches("order.created"));
        assert!(!p.matches("order."), "`.+` needs at least one character");
        let p = NamePrefixPattern::new(&["order.created".into()], &[]);
        assert!(p.matches("order.created.v2"), "re.match is anchored at the start only");
        let p = NamePrefixPattern::new(&["a?b".into()], &[]);
        assert!(p.matches("a?b"));
        assert!(!p.matches("axb"), "`?` is escaped in the regex");
        let p = NamePrefixPattern::new(&[], &["x".into()]);
        assert!(p.matches("anything"));
        assert!(!p.matches(""));
        let p = NamePrefixPattern::new(&["a*c".into()], &[]);
        assert!(p.matches("abc"));
        assert!(!p.matches("ac"));
        assert!(!p.matches("a\nc"));
    }

    #[test]
    fn resource_specs() {
        use crate::model::trigger::LabelValues;
        let mut spec = ResourceSpec::default();
        spec.0.insert("env".into(), LabelValues::Many(vec!["!prod".into(), "!stage".into()]));
        let m = ResourceMatcher::new(&spec);
        assert!(m.matches(&Resource::new("x").with("env", "prod")), "an OR of negations matches prod via !stage");
        assert!(!m.matches(&Resource::new("x")));
        let mut empty = ResourceSpec::default();
        empty.0.insert("env".into(), LabelValues::Many(vec![]));
        assert!(!ResourceMatcher::new(&empty).matches(&Resource::new("x").with("env", "prod")));
    }
}
