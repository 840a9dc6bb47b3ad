//! Per-node placeholders in node-pool label and taint values.
//!
//! A pool of 16,000 nodes is written once; its labels say how each node
//! differs from the next: `"zone-{index%8}"` puts node 17 in `zone-1`,
//! `"sn-{index/64}"` puts 64 consecutive nodes in one super-node, and
//! `"{index/8%8}"` numbers the server inside its cabinet. A pattern is parsed
//! once when the scenario is read (so a typo is an error with a line number)
//! and rendered per node without re-parsing.
//!
//! Grammar: literal text, `{{` and `}}` for literal braces, and placeholders
//! `{index}` (0-based position in the pool) followed by any chain of `/N`
//! (integer division) and `%N` (remainder), applied left to right, `{name}`
//! (the node's name) and `{pool}` (the pool's name).

use serde::de::{self, Deserialize, Deserializer};
use std::fmt::{self, Write as _};

/// One arithmetic step applied to the node index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Div(u64),
    Rem(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Index(Vec<Step>),
    Name,
    Pool,
}

/// A parsed label/taint value pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    pieces: Vec<Piece>,
}

/// Where a node stands, for rendering a [`Pattern`].
#[derive(Clone, Copy, Debug)]
pub struct NodeSlot<'a> {
    /// 0-based position of the node in its pool.
    pub index: u64,
    /// The node's name.
    pub name: &'a str,
    /// The pool's name.
    pub pool: &'a str,
}

impl Pattern {
    /// Parses `text`; the error says what is wrong in words.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((pos, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '}' => {
                    return Err(format!(
                        "unmatched `}}` at byte {pos} of {text:?} (write `}}}}` for a literal brace)"
                    ));
                }
                '{' => {
                    let rest = &text[pos + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(format!("unclosed `{{` at byte {pos} of {text:?}"));
                    };
                    let inner = &rest[..end];
                    // Skip the placeholder's characters and its closing brace.
                    for _ in 0..inner.chars().count() + 1 {
                        chars.next();
                    }
                    if !lit.is_empty() {
                        pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                    }
                    pieces.push(parse_placeholder(inner)?);
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Pattern {
            source: text.to_owned(),
            pieces,
        })
    }

    /// The text the pattern was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the pattern has no placeholder (renders the same everywhere).
    pub fn is_constant(&self) -> bool {
        self.pieces.iter().all(|p| matches!(p, Piece::Lit(_)))
    }

    /// Appends the value for `slot` to `out`.
    pub fn render_into(&self, slot: NodeSlot<'_>, out: &mut String) {
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Name => out.push_str(slot.name),
                Piece::Pool => out.push_str(slot.pool),
                Piece::Index(steps) => {
                    let v = steps.iter().fold(slot.index, |v, s| match *s {
                        Step::Div(n) => v / n,
                        Step::Rem(n) => v % n,
                    });
                    // Writing to a String cannot fail.
                    let _ = write!(out, "{v}");
                }
            }
        }
    }

    /// The value for `slot`.
    pub fn render(&self, slot: NodeSlot<'_>) -> String {
        let mut s = String::with_capacity(self.source.len() + 8);
        self.render_into(slot, &mut s);
        s
    }
}

fn parse_placeholder(inner: &str) -> Result<Piece, String> {
    let expected =
        "expected {index}, {index/N}, {index%N} (chained, e.g. {index/64%8}), {name} or {pool}";
    let s: String = inner.chars().filter(|c| !c.is_whitespace()).collect();
    match s.as_str() {
        "name" => return Ok(Piece::Name),
        "pool" => return Ok(Piece::Pool),
        _ => {}
    }
    let Some(mut rest) = s.strip_prefix("index") else {
        return Err(format!("unknown placeholder `{{{inner}}}`: {expected}"));
    };
    let mut steps = Vec::new();
    while !rest.is_empty() {
        let op = rest.as_bytes()[0];
        let tail = &rest[1..];
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        if !(op == b'/' || op == b'%') || digits == 0 {
            return Err(format!("bad placeholder `{{{inner}}}`: {expected}"));
        }
        let n: u64 = tail[..digits]
            .parse()
            .map_err(|_| format!("bad number in placeholder `{{{inner}}}`"))?;
        if n == 0 {
            return Err(format!("placeholder `{{{inner}}}` divides by zero"));
        }
        steps.push(if op == b'/' {
            Step::Div(n)
        } else {
            Step::Rem(n)
        });
        rest = &tail[digits..];
    }
    Ok(Piece::Index(steps))
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Accept numbers and booleans too: `rack: 3` is a fine label value.
        struct V;
        impl de::Visitor<'_> for V {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, optionally with {index...}, {name} or {pool} placeholders")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
                Ok(v.to_string())
            }
        }
        let text = d.deserialize_any(V)?;
        Pattern::parse(&text).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(p: &str, index: u64) -> String {
        Pattern::parse(p).unwrap().render(NodeSlot {
            index,
            name: "gpu-17",
            pool: "gpu",
        })
    }

    #[test]
    fn renders_placeholders() {
        let cases = [
            ("zone-{index%8}", 17, "zone-1"),
            ("sn-{index/64}", 130, "sn-2"),
            ("cab-{index/8%8}", 130, "cab-0"),
            ("cab-{ index / 8 % 8 }", 75, "cab-1"),
            ("{index}", 5, "5"),
            ("{name}.{pool}", 0, "gpu-17.gpu"),
            ("plain", 9, "plain"),
            ("{{literal}}", 0, "{literal}"),
            ("", 3, ""),
        ];
        for (p, i, want) in cases {
            assert_eq!(at(p, i), want, "pattern {p:?} at {i}");
        }
    }

    #[test]
    fn constant_patterns_are_detected() {
        assert!(Pattern::parse("a{{b}}").unwrap().is_constant());
        assert!(!Pattern::parse("a{index}").unwrap().is_constant());
    }

    #[test]
    fn rejects_malformed_placeholders() {
        for (p, needle) in [
            ("zone-{idx%8}", "unknown placeholder"),
            ("zone-{index%0}", "divides by zero"),
            ("zone-{index*2}", "bad placeholder"),
            ("zone-{index%}", "bad placeholder"),
            ("zone-{index", "unclosed"),
            ("zone-}", "unmatched"),
        ] {
            let err = Pattern::parse(p).unwrap_err();
            assert!(err.contains(needle), "{p:?}: {err}");
        }
    }

    proptest::proptest! {
        #[test]
        fn index_arithmetic_matches_integer_arithmetic(index in 0u64..1_000_000, a in 1u64..500, b in 1u64..500) {
            let p = Pattern::parse(&format!("sn-{{index/{a}%{b}}}-{{index%{b}}}")).unwrap();
            let got = p.render(NodeSlot { index, name: "n", pool: "p" });
            proptest::prop_assert_eq!(got, format!("sn-{}-{}", index / a % b, index % b));
        }

        #[test]
        fn text_without_braces_renders_unchanged(text in "[^{}]{0,40}") {
            let p = Pattern::parse(&text).unwrap();
            proptest::prop_assert!(p.is_constant());
            proptest::prop_assert_eq!(p.render(NodeSlot { index: 3, name: "n", pool: "p" }), text);
        }
    }

    #[test]
    fn multibyte_text_around_placeholders() {
        assert_eq!(at("zöne-{index%3}-ü", 4), "zöne-1-ü");
    }
}
