//! A YAML node tree with byte spans, built from `saphyr`'s marked nodes.
//!
//! Rules need to say where a field is (`file:line:col`) and fixes need to edit the text
//! around it, so every node keeps the byte offset where it starts and whether a mapping is
//! written in flow style (`{a: 1}`), which fixes leave alone.

use std::panic::{AssertUnwindSafe, catch_unwind};

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

use crate::source::Source;

/// A YAML node: its value and where it starts in the text.
#[derive(Debug, Clone)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Byte offset of the node's first character (a flow collection's bracket, a quoted
    /// scalar's quote, a block mapping's first key).
    pub start: usize,
    /// Whether the node is a flow collection (`{...}` or `[...]`).
    pub flow: bool,
    /// Whether the node is a null written as nothing at all (`key:` with no value), which
    /// has no text of its own to replace.
    pub empty: bool,
}

/// The value of a [`Node`].
#[derive(Debug, Clone)]
pub enum Value {
    /// `~`, `null`, or an empty value.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order.
    Map(Vec<(Node, Node)>),
}

/// A document that is not valid YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What the parser said.
    pub message: String,
}

/// Parses every document of `source`.
pub fn parse(source: &Source) -> Result<Vec<Node>, SyntaxError> {
    check_depth(&source.text)?;
    // The parser should never panic; if a malformed input finds a bug in it, report the
    // input as invalid rather than taking the whole run down.
    let loaded = catch_unwind(AssertUnwindSafe(|| MarkedYaml::load_from_str(&source.text)));
    match loaded {
        Ok(Ok(docs)) => Ok(docs
            .iter()
            .map(|d| convert(d, source))
            .filter(|d| !matches!(d.value, Value::Null))
            .collect()),
        Ok(Err(e)) => {
            let m = e.marker();
            Err(SyntaxError {
                line: m.line().max(1),
                column: m.col() + 1,
                message: e.info().to_string(),
            })
        }
        Err(_) => Err(SyntaxError {
            line: 1,
            column: 1,
            message: "the YAML parser failed on this input".into(),
        }),
    }
}

fn convert(node: &MarkedYaml<'_>, source: &Source) -> Node {
    let start = source.offset(node.span.start.line(), node.span.start.col());
    let flow = matches!(source.text.as_bytes().get(start), Some(b'{' | b'['));
    // An empty value's position is where the parser noticed it: the `:` before it, or the
    // next token; a written null starts with `~`, `n` or `N`.
    let empty = matches!(node.data, YamlData::Value(Scalar::Null))
        && !matches!(source.text.as_bytes().get(start), Some(b'~' | b'n' | b'N'));
    let value = match &node.data {
        YamlData::Value(scalar) => match scalar {
            Scalar::Null => Value::Null,
            Scalar::Boolean(b) => Value::Bool(*b),
            Scalar::Integer(i) => Value::Int(*i),
            Scalar::FloatingPoint(f) => Value::Float(f.into_inner()),
            Scalar::String(s) => Value::Str(s.to_string()),
        },
        YamlData::Sequence(items) => Value::Seq(items.iter().map(|i| convert(i, source)).collect()),
        YamlData::Mapping(map) => Value::Map(
            map.iter()
                .map(|(k, v)| (convert(k, source), convert(v, source)))
                .collect(),
        ),
        YamlData::Tagged(_, inner) => return convert(inner, source),
        YamlData::Representation(text, _, _) => Value::Str(text.to_string()),
        YamlData::Alias(_) | YamlData::BadValue => Value::Null,
    };
    Node {
        value,
        start,
        flow,
        empty,
    }
}

/// The deepest nesting [`parse`] accepts. The parser recurses once per level, so a
/// pathological input (`- - - - ...` ten thousand times) would overflow the stack.
pub const MAX_DEPTH: usize = 500;

/// Rejects text that may nest deeper than [`MAX_DEPTH`]: in block style a level needs at
/// least one column of indentation or a `- `, in flow style a bracket.
fn check_depth(text: &str) -> Result<(), SyntaxError> {
    let mut flow = 0usize;
    for (index, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches([' ', '-', '?', ':']).len();
        let mut quote = None;
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') => break,
                (None, '[' | '{') => flow += 1,
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
        }
        if indent + flow > MAX_DEPTH {
            return Err(SyntaxError {
                line: index + 1,
                column: 1,
                message: format!("nesting deeper than {MAX_DEPTH} levels"),
            });
        }
    }
    Ok(())
}

impl Node {
    /// The value under `key`, when this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node and the value under `key`.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// Follows a path of mapping keys.
    pub fn at(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |node, key| node.get(key))
    }

    /// The string, when this is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, when this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self.value {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The items, when this is a sequence (an empty slice otherwise).
    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }

    /// The entries, when this is a mapping (an empty slice otherwise).
    pub fn entries(&self) -> &[(Node, Node)] {
        match &self.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    /// Whether this is a mapping.
    pub fn is_map(&self) -> bool {
        matches!(self.value, Value::Map(_))
    }

    /// A scalar as text: strings as they are, numbers and booleans as YAML writes them.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// Structural equality: same values, wherever they are written.
    pub fn same_as(&self, other: &Node) -> bool {
        match (&self.value, &other.value) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Seq(a), Value::Seq(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_as(y))
            }
            (Value::Map(a), Value::Map(b)) => {
                a.len() == b.len()
                    && a.iter().all(|(k, v)| {
                        k.as_str()
                            .and_then(|k| other.get(k))
                            .is_some_and(|w| v.same_as(w))
                    })
            }
            _ => false,
        }
    }
}

/// The byte range of the scalar that starts at `start` in `text`: a quoted scalar up to its
/// closing quote, a plain one up to a comment, the end of the line or (in flow context) a
/// flow indicator, with trailing spaces left out.
pub fn scalar_extent(text: &str, start: usize) -> std::ops::Range<usize> {
    let rest = &text[start..];
    let bytes = rest.as_bytes();
    let end = match bytes.first() {
        Some(&q @ (b'"' | b'\'')) => {
            let mut i = 1;
            while i < bytes.len() {
                if bytes[i] == b'\\' && q == b'"' {
                    i += 2;
                    continue;
                }
                if bytes[i] == q {
                    if q == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            (i + 1).min(bytes.len())
        }
        _ => {
            let mut end = 0;
            for (i, &b) in bytes.iter().enumerate() {
                match b {
                    b'\n' | b'\r' | b',' | b']' | b'}' => break,
                    b'#' if i > 0 && bytes[i - 1] == b' ' => break,
                    b' ' | b'\t' => {}
                    _ => end = i + 1,
                }
            }
            end
        }
    };
    start..start + end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(text: &str) -> Vec<Node> {
        parse(&Source::new("t", None, text.into())).expect("valid YAML")
    }

    #[test]
    fn nodes_know_where_they_start_and_their_style() {
        let text = "# c\na: 1\nb:\n  - name: \"x\"   # note\n    p: {d: 2}\n";
        let d = &docs(text)[0];
        let b = d.get("b").expect("b");
        let item = &b.items()[0];
        assert_eq!(&text[item.start..item.start + 4], "name");
        let name = item.get("name").expect("name");
        assert_eq!(&text[scalar_extent(text, name.start)], "\"x\"");
        let p = item.get("p").expect("p");
        assert!(p.flow && !item.flow);
        let d2 = p.get("d").expect("d");
        assert_eq!(&text[scalar_extent(text, d2.start)], "2");
    }

    #[test]
    fn plain_scalars_end_before_comments_and_spaces() {
        let text = "k: 30   # grace\n";
        assert_eq!(&text[scalar_extent(text, 3)], "30");
        let text = "k: 'it''s'  \n";
        assert_eq!(&text[scalar_extent(text, 3)], "'it''s'");
        let text = "k: a#b c\n";
        assert_eq!(&text[scalar_extent(text, 3)], "a#b c");
    }

    #[test]
    fn multiple_documents_and_empty_ones() {
        let d = docs("---\na: 1\n---\n---\nb: 2\n");
        assert_eq!(d.len(), 2);
        assert!(d[0].same_as(&docs("{a: 1}")[0]));
        assert!(!d[0].same_as(&d[1]));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = parse(&Source::new("t", None, "a: [1, 2\nb: 3\n".into())).unwrap_err();
        assert!(e.line >= 1 && !e.message.is_empty());
    }
}
