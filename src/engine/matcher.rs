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
///
/// Matching takes `O(len(value) * (ceil(len(pattern) / 64) + log len(pattern)) + len(pattern))`
/// time at worst, and allocates nothing unless a segment between two `*` holds more than 256
/// tokens. The pattern is cut at its `*`s into segments of one character per token; the first
/// segment is anchored at the start of the value, the last at its end, and each middle segment
/// is taken at its leftmost occurrence after the previous one (which is optimal for globs: it
/// leaves the most room for the rest). A segment of literals is searched with `str::find`
/// (two-way, linear); one with `?` or classes with a bit-parallel Shift-And over the value's
/// characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    source: String,
    shape: Option<Shape>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyOne,
    AnyRun,
    Class { negated: bool, ranges: Vec<(char, char)> },
}

/// A compiled glob with at least one wildcard token.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Shape {
    /// No `*`: the value has exactly one character per token.
    Exact(Anchored),
    /// `first*middle[0]*...*last`; `last` is empty when the pattern ends in `*`.
    Stars { first: Anchored, middle: Vec<Floating>, last: Anchored },
}

/// A segment matched at a fixed place (the start or the end of the value).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Anchored {
    Literal(String),
    Tokens(Vec<Token>),
}

/// A segment searched for (between two `*`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Floating {
    Literal(String),
    Wild(ShiftAnd),
}

impl Glob {
    /// Compiles `pattern`; a pattern without wildcards is matched by plain comparison.
    pub fn new(pattern: &str) -> Glob {
        let wild = pattern.contains(['*', '?', '[']);
        Glob { source: pattern.to_owned(), shape: wild.then(|| Shape::new(tokenize(pattern))) }
    }

    /// The pattern as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True when the pattern has no wildcard (so it equals exactly one value).
    pub fn is_literal(&self) -> bool {
        self.shape.is_none()
    }

    /// `fnmatch.fnmatchcase(value, pattern)`.
    pub fn matches(&self, value: &str) -> bool {
        match &self.shape {
            None => self.source == value,
            Some(shape) => shape.matches(value),
        }
    }
}

impl Shape {
    fn new(tokens: Vec<Token>) -> Shape {
        let mut segments: Vec<Vec<Token>> =
            tokens.split(|t| *t == Token::AnyRun).filter(|s| !s.is_empty()).map(<[Token]>::to_vec).collect();
        let starts_with_star = tokens.first() == Some(&Token::AnyRun);
        let ends_with_star = tokens.last() == Some(&Token::AnyRun);
        if !tokens.contains(&Token::AnyRun) {
            return Shape::Exact(Anchored::new(segments.pop().unwrap_or_default()));
        }
        let first = if starts_with_star || segments.is_empty() { Vec::new() } else { segments.remove(0) };
        let last = if ends_with_star { Vec::new() } else { segments.pop().unwrap_or_default() };
        Shape::Stars {
            first: Anchored::new(first),
            middle: segments.into_iter().map(Floating::new).collect(),
            last: Anchored::new(last),
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Shape::Exact(segment) => segment.matches_whole(value),
            Shape::Stars { first, middle, last } => {
                let (Some(mut from), Some(to)) = (first.match_start(value), last.match_end(value)) else {
                    return false;
                };
                if from > to {
                    // The prefix and the suffix would overlap.
                    return false;
                }
                for segment in middle {
                    match segment.find_end(&value[from..to]) {
                        Some(end) => from += end,
                        None => return false,
                    }
                }
                true
            }
        }
    }
}

fn literal_text(tokens: &[Token]) -> Option<String> {
    tokens.iter().map(|t| if let Token::Literal(c) = t { Some(*c) } else { None }).collect()
}

impl Anchored {
    fn new(tokens: Vec<Token>) -> Anchored {
        match literal_text(&tokens) {
            Some(text) => Anchored::Literal(text),
            None => Anchored::Tokens(tokens),
        }
    }

    /// The whole value matches (one character per token).
    fn matches_whole(&self, value: &str) -> bool {
        match self {
            Anchored::Literal(text) => text == value,
            Anchored::Tokens(tokens) => {
                let mut chars = value.chars();
                tokens.iter().all(|t| chars.next().is_some_and(|c| token_accepts(t, c))) && chars.next().is_none()
            }
        }
    }

    /// The byte offset where a match at the start of `value` ends.
    fn match_start(&self, value: &str) -> Option<usize> {
        match self {
            Anchored::Literal(text) => value.starts_with(text.as_str()).then_some(text.len()),
            Anchored::Tokens(tokens) => {
                let mut end = 0;
                let mut chars = value.chars();
                for t in tokens {
                    let c = chars.next().filter(|c| token_accepts(t, *c))?;
                    end += c.len_utf8();
                }
                Some(end)
            }
        }
    }

    /// The byte offset where a match at the end of `value` starts.
    fn match_end(&self, value: &str) -> Option<usize> {
        match self {
            Anchored::Literal(text) => value.ends_with(text.as_str()).then(|| value.len() - text.len()),
            Anchored::Tokens(tokens) => {
                let mut start = value.len();
                let mut chars = value.chars().rev();
                for t in tokens.iter().rev() {
                    let c = chars.next().filter(|c| token_accepts(t, *c))?;
                    start -= c.len_utf8();
                }
                Some(start)
            }
        }
    }
}

impl Floating {
    fn new(tokens: Vec<Token>) -> Floating {
        match literal_text(&tokens) {
            Some(text) => Floating::Literal(text),
            None => Floating::Wild(ShiftAnd::new(&tokens)),
        }
    }

    /// The byte offset where the leftmost match in `hay` ends.
    fn find_end(&self, hay: &str) -> Option<usize> {
        match self {
            Floating::Literal(text) => hay.find(text.as_str()).map(|at| at + text.len()),
            Floating::Wild(search) => search.find_end(hay),
        }
    }
}

/// The largest code point, as `u32`.
const MAX_CHAR: u32 = char::MAX as u32;

/// Bit-parallel Shift-And (bitap) search for a segment of `?`, classes and literals: one bit
/// per token, `words = ceil(tokens / 64)` machine words per value character.
///
/// The set of tokens that accept a character `c` is the XOR of "flips" at the boundaries of
/// the (disjoint) code point intervals each token accepts, over the boundaries `<= c`. Flips
/// are sorted by boundary and their running XOR is stored every `words` flips, so the mask of
/// any character costs one binary search, one copy of `words` words and fewer than `words`
/// flips; the table holds about one word per flip (two flips per interval of the pattern).
#[derive(Clone, Debug, PartialEq, Eq)]
struct ShiftAnd {
    /// Tokens in the segment (at least one).
    len: usize,
    /// `ceil(len / 64)`.
    words: usize,
    /// Flip boundaries (code points), sorted.
    bounds: Vec<u32>,
    /// The token each flip toggles, in the order of `bounds`.
    flips: Vec<u32>,
    /// `checkpoints[i * words..(i + 1) * words]`: the XOR of flips `0..i * words`.
    checkpoints: Vec<u64>,
}

/// The code point intervals a token accepts: sorted, disjoint and not adjacent.
fn accepted_intervals(token: &Token) -> Vec<(u32, u32)> {
    match token {
        Token::Literal(c) => vec![(*c as u32, *c as u32)],
        Token::AnyOne | Token::AnyRun => vec![(0, MAX_CHAR)],
        Token::Class { negated, ranges } => {
            let mut sorted: Vec<(u32, u32)> = ranges.iter().map(|(lo, hi)| (*lo as u32, *hi as u32)).collect();
            sorted.sort_unstable();
            let mut merged: Vec<(u32, u32)> = Vec::with_capacity(sorted.len());
            for (lo, hi) in sorted {
                match merged.last_mut() {
                    Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                    _ => merged.push((lo, hi)),
                }
            }
            if !*negated {
                return merged;
            }
            let mut complement = Vec::with_capacity(merged.len() + 1);
            let mut next = 0u32;
            for (lo, hi) in merged {
                if lo > next {
                    complement.push((next, lo - 1));
                }
                next = hi.saturating_add(1);
            }
            if next <= MAX_CHAR {
                complement.push((next, MAX_CHAR));
            }
            complement
        }
    }
}

impl ShiftAnd {
    fn new(tokens: &[Token]) -> ShiftAnd {
        let len = tokens.len().max(1);
        let words = len.div_ceil(64);
        let mut events: Vec<(u32, u32)> = Vec::new();
        for (position, token) in tokens.iter().enumerate() {
            let position = position as u32;
            for (lo, hi) in accepted_intervals(token) {
                events.push((lo, position));
                if hi < MAX_CHAR {
                    events.push((hi + 1, position));
                }
            }
        }
        events.sort_unstable();
        let (bounds, flips): (Vec<u32>, Vec<u32>) = events.into_iter().unzip();
        let mut checkpoints = Vec::with_capacity((flips.len() / words + 1) * words);
        let mut running = vec![0u64; words];
        for (i, &position) in flips.iter().enumerate() {
            if i % words == 0 {
                checkpoints.extend_from_slice(&running);
            }
            toggle(&mut running, position);
        }
        if flips.len() % words == 0 {
            checkpoints.extend_from_slice(&running);
        }
        ShiftAnd { len, words, bounds, flips, checkpoints }
    }

    /// Writes into `mask` the set of tokens that accept `c`.
    fn mask_into(&self, c: char, mask: &mut [u64]) {
        let upto = self.bounds.partition_point(|b| *b <= c as u32);
        let checkpoint = upto / self.words;
        let base = checkpoint * self.words;
        mask.copy_from_slice(&self.checkpoints[base..base + self.words]);
        for &position in &self.flips[base..upto] {
            toggle(mask, position);
        }
    }

    /// The byte offset where the leftmost match in `hay` ends.
    fn find_end(&self, hay: &str) -> Option<usize> {
        let words = self.words;
        let mut small = [0u64; 8];
        let mut large = Vec::new();
        let (state, mask) = if words <= 4 {
            let (a, b) = small.split_at_mut(4);
            (&mut a[..words], &mut b[..words])
        } else {
            large.resize(2 * words, 0u64);
            large.split_at_mut(words)
        };
        let (top_word, top_bit) = ((self.len - 1) / 64, 1u64 << ((self.len - 1) % 64));
        for (at, c) in hay.char_indices() {
            self.mask_into(c, mask);
            let mut carry = 1u64;
            for (s, m) in state.iter_mut().zip(mask.iter()) {
                let shifted = (*s << 1) | carry;
                carry = *s >> 63;
                *s = shifted & m;
            }
            if state[top_word] & top_bit != 0 {
                return Some(at + c.len_utf8());
            }
        }
        None
    }
}

fn toggle(bits: &mut [u64], position: u32) {
    bits[position as usize / 64] ^= 1u64 << (position % 64);
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

/// The former matcher, single-star backtracking (`O(len(value) * len(pattern))` at worst),
/// kept as the oracle of the property test.
#[cfg(test)]
fn backtracking_match(tokens: &[Token], value: &str) -> bool {
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

    /// The former matcher's answer, the oracle.
    fn oracle(p: &str, v: &str) -> bool {
        let wild = p.contains(['*', '?', '[']);
        if wild {
            backtracking_match(&tokenize(p), v)
        } else {
            p == v
        }
    }

    #[test]
    fn segments_anchor_and_search_exactly() {
        assert!(g("*", "é"));
        assert!(!g("a*a", "a"), "the prefix and the suffix may not overlap");
        assert!(g("a*a", "aa"));
        assert!(!g("?*?", "é"));
        assert!(g("?*?", "éé"));
        assert!(g("*[!a]b*", "aaéb"));
        assert!(!g("*[!a]b*", "aaab"));
        assert!(g("*?b?*?", "xbyz"));
        assert!(g("*a?c*a?c", "abcxadc"));
        assert!(!g("*a?c*a?c", "abcxac"));
        assert!(!g("*[z-a]*", "z"), "a class of only a reversed range matches nothing");
        assert!(g("*[!z-a]*", "z"), "its negation matches anything");
        assert!(g("*[\u{10FFFF}]", "x\u{10FFFF}"));
        assert!(g("*[!\u{0}-\u{10FFFE}]", "x\u{10FFFF}"));
        assert!(!g("*[!\u{0}-\u{10FFFE}]", "xy"));
        // A middle segment longer than one machine word, with classes and `?`.
        let long = format!("x*{}*y", "a?[ab][!c]".repeat(30));
        let hit = format!("xcc{}cy", "azbb".repeat(30));
        assert!(g(&long, &hit));
        assert!(!g(&long, &hit.replacen('b', "c", 1)), "one token short of a match");
        assert!(!g(&long, &hit[..hit.len() - 1]));
    }

    #[test]
    fn huge_patterns_and_values_take_linear_time() {
        // Each of these takes the former backtracking matcher minutes or hours.
        let value = format!("{}b", "a".repeat(800_000));
        assert!(!g(&"*a".repeat(50_000), &value), "the last segment must end the value");
        assert!(g(&format!("{}*", "*a".repeat(50_000)), &value));
        // Leftmost search of a 50,000-literal segment that never occurs: two-way, linear.
        let literal = format!("{}*{}c*", "*a".repeat(25_000), "a".repeat(50_000));
        assert!(!g(&literal, &value));
        // A 2,000-token segment with `?`: Shift-And over 32 words per character.
        let wild = format!("*{}c*", "a?".repeat(1_000));
        assert!(!g(&wild, &value));
        assert!(g(&wild, &format!("{}c", "a".repeat(800_000))));
        // The event-name regex: one `find` per segment, each past the previous match.
        let p = NamePrefixPattern::new(&[format!("a{}", "*a".repeat(50_000))], &[]);
        assert!(p.matches(&value));
        let p = NamePrefixPattern::new(&[format!("a{}*c", "*a".repeat(50_000))], &[]);
        assert!(!p.matches(&value));
        // Ordinary patterns still work afterwards.
        assert!(g("order.*", "order.created"));
    }

    /// A pattern over an alphabet that exercises every token kind and tokenizer quirk.
    fn small_pattern() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(vec!['a', 'b', 'é', '*', '?', '[', ']', '!', '-']), 0..12)
            .prop_map(|cs| cs.into_iter().collect())
    }

    fn small_value() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(vec!['a', 'b', 'é', '[', ']', '!', '-', '*']), 0..12)
            .prop_map(|cs| cs.into_iter().collect())
    }

    /// A value and a pattern derived from it, so that segments longer than a machine word are
    /// common and about half the pairs match: each character is kept, turned into `?`, a class
    /// that accepts it or a `*` (1%), or changed (0.3%).
    fn derived_pair() -> impl proptest::strategy::Strategy<Value = (String, String)> {
        let chars = proptest::collection::vec(proptest::sample::select(vec!['a', 'b', 'é']), 0..300);
        (chars, proptest::collection::vec(0u16..1000, 300), proptest::bool::ANY, proptest::bool::ANY).prop_map(
            |(value, choices, lead, trail)| {
                let mut pattern = String::new();
                if lead {
                    pattern.push('*');
                }
                for (c, choice) in value.iter().zip(choices) {
                    match choice {
                        0..=486 => pattern.push(*c),
                        487..=786 => pattern.push('?'),
                        787..=886 => pattern.push_str("[a-bé]"),
                        887..=986 => pattern.push_str(if *c == 'a' { "[!b]" } else { "[!a]" }),
                        987..=996 => pattern.push('*'),
                        _ => pattern.push(if *c == 'a' { 'b' } else { 'a' }),
                    }
                }
                if trail {
                    pattern.push('*');
                }
                (value.into_iter().collect(), pattern)
            },
        )
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        #[test]
        fn matches_like_the_backtracking_matcher(p in small_pattern(), v in small_value()) {
            proptest::prop_assert_eq!(g(&p, &v), oracle(&p, &v), "pattern {:?} value {:?}", p, v);
        }

        #[test]
        fn long_segments_match_like_the_backtracking_matcher((v, p) in derived_pair()) {
            proptest::prop_assert_eq!(g(&p, &v), oracle(&p, &v), "pattern {:?} value {:?}", p, v);
        }
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
