//! dso.yaml parsed once, from yaml-rust2's marked events: the document (as JSON, scalars
//! resolved as YAML 1.2's core schema does), the line of every instance path, and what a schema
//! cannot see (duplicate and merge keys, the source text of plain scalars).

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::{Pos, Problem};
use crate::config::reference::plain;

/// Deepest nesting taken (as serde_yaml's limit): deeper YAML would overflow the stack later.
const MAX_DEPTH: usize = 128;
/// Nodes that aliases may add, per event of the text: a few `*a` must not expand a billionfold.
const ALIAS_NODES_PER_EVENT: usize = 100;

/// A parsed dso.yaml: the document, and by instance path the line of a mapping key (for the
/// value under it) or of a list item. Also duplicate and merge keys, and the source text of
/// numbers not written in decimal digits (YAML reads `0o400` as the integer 256).
#[derive(Default)]
pub struct Document {
    /// The document as JSON; empty text, or comments only, is an empty mapping.
    pub value: Value,
    lines: HashMap<Vec<String>, Pos>,
    pub(super) non_decimal: HashMap<Vec<String>, String>,
    duplicates: Vec<(Vec<String>, Pos, usize)>,
    merge_keys: Vec<(Vec<String>, Pos)>,
}

/// YAML that does not parse, or that dso.yaml cannot hold (several documents, tags, keys that
/// are not scalars): where (line from 1) and why.
pub struct YamlError {
    pub line: usize,
    pub message: String,
}

impl Document {
    /// The document with the line of every key, for messages ([`Document::pos_of`]).
    pub fn parse(text: &str) -> Result<Document, YamlError> {
        Self::build(text, true)
    }

    /// The document alone: no lines, duplicate or merge keys are recorded (for text that
    /// passed [`Document::parse`] and validation before; several times faster).
    pub fn parse_values(text: &str) -> Result<Value, YamlError> {
        Self::build(text, false).map(|d| d.value)
    }

    fn build(text: &str, track: bool) -> Result<Document, YamlError> {
        let mut b = Builder {
            track,
            ..Builder::default()
        };
        // As libyaml (dso's former parser) would: control characters are not YAML text.
        let bad = |c: char| c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\u{85}');
        if let Some(i) = text.find(bad) {
            let line = text[..i].matches('\n').count() + 1;
            let col = text[..i]
                .rsplit('\n')
                .next()
                .map_or(0, |l| l.chars().count());
            b.fail((line, col), "control characters are not allowed");
        }
        if let Err(e) = Parser::new_from_str(text).load(&mut b, true) {
            b.fail((e.marker().line(), e.marker().col()), e.info());
        }
        if let Some(e) = b.error {
            return Err(e);
        }
        b.doc.value = match b.root.take() {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v) => v,
        };
        Ok(b.doc)
    }

    /// Where `path` is, else its nearest ancestor in the source, else line 1.
    pub(super) fn pos_of(&self, path: &[String]) -> Pos {
        (0..=path.len())
            .rev()
            .find_map(|n| self.lines.get(&path[..n]).copied())
            .unwrap_or((1, 0))
    }

    pub(super) fn structural_problems(&self) -> Vec<Problem> {
        let dups = self.duplicates.iter().map(|(path, pos, first)| Problem {
            path: path.clone(),
            pos: Some(*pos),
            message: format!("duplicate key (first given at line {first})"),
        });
        let merges = self.merge_keys.iter().map(|(path, pos)| Problem {
            path: path.clone(),
            pos: Some(*pos),
            message: "YAML merge keys (<<) are not supported; write the keys out".into(),
        });
        dups.chain(merges).collect()
    }
}

/// A collection being read: its instance path, anchor, what it holds so far (a mapping or a
/// list) and, in a mapping, the key read that waits for its value.
struct Frame {
    path: Vec<String>,
    anchor: usize,
    node: Value,
    key: Option<String>,
}

#[derive(Default)]
struct Builder {
    /// Whether to record lines, duplicate and merge keys and non-decimal numbers.
    track: bool,
    stack: Vec<Frame>,
    root: Option<Value>,
    anchors: HashMap<usize, Value>,
    documents: usize,
    events: usize,
    alias_nodes: usize,
    doc: Document,
    error: Option<YamlError>,
}

impl Builder {
    fn fail(&mut self, pos: Pos, message: impl Into<String>) {
        self.error.get_or_insert(YamlError {
            line: pos.0,
            message: format!("{} at line {} column {}", message.into(), pos.0, pos.1 + 1),
        });
    }

    /// Whether the next node is a mapping key.
    fn is_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame {
                node: Value::Object(_),
                key: None,
                ..
            })
        )
    }

    /// Where a node starting at `pos` goes: its instance path (empty when not tracking), or
    /// None if it is a mapping key.
    fn place(&mut self, pos: Pos) -> Option<Vec<String>> {
        if !self.track {
            return (!self.is_key()).then(Vec::new);
        }
        let path = match self.stack.last() {
            None => Vec::new(),
            Some(Frame {
                path, node, key, ..
            }) => {
                let mut p = path.clone();
                match node {
                    Value::Array(items) => p.push(items.len().to_string()),
                    _ => return key.clone().map(|k| [p, vec![k]].concat()),
                }
                p
            }
        };
        self.doc.lines.entry(path.clone()).or_insert(pos);
        Some(path)
    }

    /// A finished node: a key of the mapping being read, or a value where it belongs.
    fn complete(&mut self, value: Value, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, value.clone());
        }
        let Some(Frame { node, key, .. }) = self.stack.last_mut() else {
            return self.root = Some(value);
        };
        match (node, key.take()) {
            (Value::Array(items), _) => items.push(value),
            (Value::Object(map), Some(k)) => drop(map.insert(k, value)),
            (_, None) => {
                *key = Some(match value {
                    Value::String(s) => s,
                    other => plain(&other),
                })
            }
            _ => {}
        }
    }

    /// A mapping key at `pos`: its line, and whether it repeats or merges.
    fn key(&mut self, text: &str, pos: Pos) {
        let Some(Frame { path, .. }) = self.stack.last().filter(|_| self.track) else {
            return;
        };
        let mut p = path.clone();
        p.push(text.to_string());
        if text == "<<" {
            self.doc.merge_keys.push((p.clone(), pos));
        }
        if let Some((first, _)) = self.doc.lines.insert(p.clone(), pos) {
            // The last occurrence is the one in the document: forget the lines under the first.
            let lines = &mut self.doc.lines;
            lines.retain(|k, _| k.len() == p.len() || !k.starts_with(&p));
            self.doc.duplicates.push((p, pos, first));
        }
    }

    fn open(&mut self, pos: Pos, anchor: usize, tag: Option<Tag>, map: bool) {
        let Some(path) = self.place(pos) else {
            return self.fail(pos, "a mapping key must be a plain value, not a collection");
        };
        if tag.is_some_and(|t| !is_core(&t, if map { "map" } else { "seq" })) {
            return self.fail(pos, "YAML tags are not supported");
        }
        if self.stack.len() >= MAX_DEPTH {
            return self.fail(pos, "recursion limit exceeded");
        }
        let node = match map {
            true => Value::Object(Map::new()),
            false => Value::Array(Vec::new()),
        };
        let key = None;
        self.stack.push(Frame {
            path,
            anchor,
            node,
            key,
        });
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        self.events += 1;
        let pos = (mark.line(), mark.col());
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.fail(pos, "more than one YAML document");
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let Some(path) = self.place(pos) else {
                    self.key(&text, pos);
                    return self.complete(Value::String(text), anchor);
                };
                let is_str = match (&tag, style) {
                    (Some(t), _) => is_core(t, "str"),
                    (None, style) => style != TScalarStyle::Plain,
                };
                let value = match is_str {
                    true => Value::String(text),
                    false => match resolve(&text) {
                        Some(v) if tag.as_ref().is_some_and(|t| !tag_matches(t, &v)) => {
                            let message = format!("the tagged value {text:?} is not supported");
                            return self.fail(pos, message);
                        }
                        None => return self.fail(pos, "an integer too large for 64 bits"),
                        // A plain string is moved, not copied.
                        Some(Value::String(_)) => Value::String(text),
                        Some(n) => {
                            if self.track && matches!(&n, Value::Number(d) if d.to_string() != text)
                            {
                                self.doc.non_decimal.insert(path, text);
                            }
                            n
                        }
                    },
                };
                self.complete(value, anchor);
            }
            Event::Alias(id) => {
                let Some(value) = self.anchors.get(&id).cloned() else {
                    return self.fail(pos, "unknown anchor");
                };
                self.alias_nodes += nodes(&value);
                if self.alias_nodes > self.events.saturating_mul(ALIAS_NODES_PER_EVENT) {
                    return self.fail(pos, "repetition limit exceeded");
                }
                if self.place(pos).is_none() {
                    self.key(&plain(&value), pos);
                }
                self.complete(value, 0);
            }
            Event::MappingStart(anchor, tag) => self.open(pos, anchor, tag, true),
            Event::SequenceStart(anchor, tag) => self.open(pos, anchor, tag, false),
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some(f) = self.stack.pop() {
                    self.complete(f.node, f.anchor);
                }
            }
            _ => {}
        }
    }
}

fn is_core(tag: &Tag, name: &str) -> bool {
    tag.handle == "tag:yaml.org,2002:" && tag.suffix == name
}

fn tag_matches(tag: &Tag, v: &Value) -> bool {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        _ => return false,
    };
    is_core(tag, kind)
}

/// Nodes in `v`, for the alias budget.
fn nodes(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(nodes).sum::<usize>(),
        Value::Array(a) => 1 + a.iter().map(nodes).sum::<usize>(),
        _ => 1,
    }
}

/// A plain scalar as YAML 1.2's core schema reads it (as serde_yaml does): null, true/false,
/// integers (also 0x, 0o, 0b), floats; the rest is a string. Infinities and NaN, which JSON
/// cannot hold, are null. None only for integers too large for 64 bits.
pub(crate) fn resolve(s: &str) -> Option<Value> {
    if matches!(s, "" | "~" | "null" | "Null" | "NULL") {
        return Some(Value::Null);
    }
    if let Some(b) = match s {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    } {
        return Some(Value::Bool(b));
    }
    let (negative, unsigned) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    // Leading zeros followed by digits are a string in YAML 1.2 (not octal, not a number).
    let zero_padded = unsigned.len() > 1
        && unsigned.starts_with('0')
        && unsigned[1..].bytes().all(|b| b.is_ascii_digit());
    if unsigned.starts_with(['+', '-']) || zero_padded {
        return Some(Value::String(s.to_string()));
    }
    let (radix, digits) = [("0x", 16), ("0o", 8), ("0b", 2)]
        .iter()
        .find_map(|(p, r)| unsigned.strip_prefix(p).map(|d| (*r, d)))
        .unwrap_or((10, unsigned));
    if !digits.starts_with(['+', '-'])
        && let Ok(n) = u128::from_str_radix(digits, radix)
    {
        return if negative {
            0i64.checked_sub_unsigned(u64::try_from(n).ok()?)
                .or_else(|| (n == 1 << 63).then_some(i64::MIN))
                .map(Value::from)
        } else {
            u64::try_from(n).ok().map(Value::from)
        };
    }
    let float = match unsigned {
        ".inf" | ".Inf" | ".INF" => return Some(Value::Null),
        _ if matches!(s, ".nan" | ".NaN" | ".NAN") => return Some(Value::Null),
        _ => unsigned.parse::<f64>().ok().filter(|f| f.is_finite()),
    };
    Some(match float.and_then(Number::from_f64) {
        Some(n) if negative => Value::from(-n.as_f64().unwrap_or_default()),
        Some(n) => Value::Number(n),
        None => Value::String(s.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain scalars read as serde_yaml (dso's former parser) read them.
    #[test]
    fn scalars_resolve_as_before() {
        let cases: &[(&str, Value)] = &[
            ("~", Value::Null),
            ("", Value::Null),
            ("NULL", Value::Null),
            ("True", Value::Bool(true)),
            ("FALSE", Value::Bool(false)),
            ("yes", "yes".into()),
            ("400", 400.into()),
            ("+400", 400.into()),
            ("-0", 0.into()),
            ("0400", "0400".into()),
            ("0o400", 256.into()),
            ("0x1ff", 511.into()),
            ("-0x10", (-16).into()),
            ("0b101", 5.into()),
            ("+-5", "+-5".into()),
            ("1_000", "1_000".into()),
            ("1000.0", 1000.0.into()),
            ("-1e3", (-1000.0).into()),
            (".inf", Value::Null),
            (".nan", Value::Null),
            ("inf", "inf".into()),
            ("0x", "0x".into()),
            ("30s", "30s".into()),
        ];
        for (text, want) in cases {
            assert_eq!(resolve(text).as_ref(), Some(want), "{text:?}");
        }
        assert_eq!(resolve("99999999999999999999"), None);
    }

    #[test]
    fn documents_the_yaml_cannot_hold() {
        for bad in [
            "a: 1\n---\nb: 2\n",
            "? [a]\n: 1\n",
            "a: !custom x\n",
            "a: !!int x\n",
            "a: *nowhere\n",
            "\t\0",
            "a: b\u{7f}\n",
            "a: 1\n\0",
            &"[".repeat(200),
        ] {
            assert!(Document::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Document::parse("a: 1\n\0").err().map(|e| e.line), Some(2));
        let doc = Document::parse("a: &x {b: !!str 5}\nc: *x\n").map_err(|e| e.message);
        let doc = doc.expect("anchors and core tags");
        assert_eq!(
            doc.value,
            serde_json::json!({"a": {"b": "5"}, "c": {"b": "5"}})
        );
        assert_eq!(doc.pos_of(&["c".into(), "b".into()]), (2, 0));
    }
}
