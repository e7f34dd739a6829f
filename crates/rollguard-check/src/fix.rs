//! Text edits that fix findings, keeping every other byte of the file as it was.
//!
//! A fix either replaces one scalar (`terminationGracePeriodSeconds: 10` becomes `25`) or
//! inserts new keys into a block mapping, indented like its siblings. Flow mappings
//! (`{a: 1}`) and JSON files only get scalar replacements: inserting into them would mean
//! re-flowing text the user wrote.

use std::ops::Range;

use crate::source::Source;
use crate::yaml::{Node, Value, scalar_extent};

/// One edit of a source's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The bytes replaced (empty for an insertion).
    pub range: Range<usize>,
    /// What replaces them.
    pub text: String,
}

/// A YAML fragment to insert: a scalar written as is, or nested keys.
#[derive(Debug, Clone)]
pub enum Fragment {
    /// A scalar, written verbatim (`5`, `100%`).
    Scalar(String),
    /// Keys and their values, in order.
    Map(Vec<(&'static str, Fragment)>),
}

/// Replaces the scalar `node` with the plain scalar `text` (a number: quotes go, so that
/// `"100%"` can become `0`).
pub fn replace_scalar(source: &Source, node: &Node, text: impl Into<String>) -> Edit {
    Edit {
        range: scalar_extent(&source.text, node.start),
        text: text.into(),
    }
}

/// Sets the value of `key` in `map` to the plain scalar `text`: a scalar value is
/// replaced where it is written; an empty one (`key:`) has its line rewritten as
/// `key: text`. `None` when the value is a collection, an empty value in a flow mapping, or
/// a value written on a later line than its key.
pub fn set_entry(source: &Source, map: &Node, key: &str, text: &str) -> Option<Edit> {
    let (k, v) = map.entry(key)?;
    if matches!(v.value, Value::Map(_) | Value::Seq(_)) {
        return None;
    }
    if !v.empty {
        return Some(replace_scalar(source, v, text));
    }
    if map.flow {
        return None;
    }
    let line_end = source.text[k.start..]
        .find('\n')
        .map_or(source.text.len(), |i| k.start + i);
    let line = source.text[k.start..line_end].trim_end_matches('\r');
    // What follows the key on its line is a colon, spaces and maybe a comment.
    let kept = line.find(" #").unwrap_or(line.len());
    let end = k.start + line[..kept].trim_end().len();
    Some(Edit {
        range: k.start..end,
        text: format!("{}: {text}", &line[..line.find(':')?]),
    })
}

/// Replaces the string scalar `node` with `text`, keeping its quotes if it had any: an
/// exec argument must stay a string.
pub fn replace_string(source: &Source, node: &Node, text: &str) -> Edit {
    let range = scalar_extent(&source.text, node.start);
    let text = match source.text.as_bytes().get(range.start) {
        Some(&q @ (b'"' | b'\'')) => format!("{q}{text}{q}", q = q as char),
        _ => text.to_owned(),
    };
    Edit { range, text }
}

/// Inserts `entries` into the block mapping `map`, indented like its keys; `None` for a
/// flow mapping, a JSON file or a mapping whose layout gives no safe place.
pub fn insert_entries(
    source: &Source,
    map: &Node,
    entries: &[(&'static str, Fragment)],
) -> Option<Edit> {
    if map.flow || source.is_json() || !map.is_map() {
        return None;
    }
    let text = &source.text;
    let line_start = |at: usize| source.line_range(at).start;
    // Before the first key that starts its own line: the new keys become its siblings.
    let newline = source.newline();
    let step = indent_step(source, map);
    let first_on_its_line = map
        .entries()
        .iter()
        .find(|(k, _)| source.starts_line(k.start));
    if let Some((key, _)) = first_on_its_line {
        let indent = source.column(key.start);
        let mut at = line_start(key.start);
        // Above the comment lines that introduce the key, so that they stay with it.
        while at > 0 {
            let above = line_start(at - 1);
            let line = &text[above..at];
            let line_indent = line.len() - line.trim_start_matches(' ').len();
            if !line.trim_start().starts_with('#') || line_indent != indent {
                break;
            }
            at = above;
        }
        return Some(Edit {
            range: at..at,
            text: render(entries, indent, step, newline),
        });
    }
    // A mapping whose keys all follow a `- ` on their line: after the first entry, when its
    // value is a one-line scalar.
    let (key, value) = map.entries().first()?;
    let scalar = !matches!(value.value, Value::Seq(_) | Value::Map(_));
    let block_scalar = matches!(text.as_bytes().get(value.start), Some(b'|' | b'>'));
    let same_line = !text[key.start..value.start.max(key.start)].contains('\n');
    if !scalar || block_scalar || !same_line {
        return None;
    }
    let end = scalar_extent(text, value.start).end;
    let (at, lead) = match text[end..].find('\n') {
        Some(i) => (end + i + 1, ""),
        None => (text.len(), newline),
    };
    Some(Edit {
        range: at..at,
        text: format!(
            "{lead}{}",
            render(entries, source.column(key.start), step, newline)
        ),
    })
}

/// The indentation step the file uses: how much deeper the keys of a nested block mapping
/// sit than their parent key, in `map` or else anywhere in the text (2 when nothing shows
/// it).
fn indent_step(source: &Source, map: &Node) -> usize {
    map.entries()
        .iter()
        .find_map(|(k, v)| {
            let (first, _) = v.entries().first()?;
            let (outer, inner) = (source.column(k.start), source.column(first.start));
            (!v.flow && source.starts_line(first.start) && inner > outer).then(|| inner - outer)
        })
        .or_else(|| text_indent_step(&source.text))
        .unwrap_or(2)
}

/// The indentation step of the first `key:` line followed by a deeper key line.
fn text_indent_step(text: &str) -> Option<usize> {
    let indent = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect();
    lines.windows(2).find_map(|w| {
        let (parent, child) = (w[0].trim_end(), w[1]);
        let opens = parent.ends_with(':') && !parent.trim_start().starts_with('-');
        let deeper = indent(child) > indent(parent) && !child.trim_start().starts_with('-');
        (opens && deeper).then(|| indent(child) - indent(parent))
    })
}

fn render(
    entries: &[(&'static str, Fragment)],
    indent: usize,
    step: usize,
    newline: &str,
) -> String {
    let mut out = String::new();
    for (key, value) in entries {
        out.push_str(&" ".repeat(indent));
        out.push_str(key);
        out.push(':');
        match value {
            Fragment::Scalar(s) => {
                out.push(' ');
                out.push_str(s);
                out.push_str(newline);
            }
            Fragment::Map(inner) => {
                out.push_str(newline);
                out.push_str(&render(inner, indent + step, step, newline));
            }
        }
    }
    out
}

/// Applies `edits` to `text`. Edits that overlap an earlier one (by start) are left out;
/// insertions at the same place all go in, in order.
pub fn apply(text: &str, edits: &[&Edit]) -> String {
    let mut sorted: Vec<&Edit> = edits.to_vec();
    sorted.sort_by_key(|e| (e.range.start, e.range.end));
    let mut out = String::with_capacity(text.len() + 256);
    let mut at = 0;
    for edit in sorted {
        if edit.range.start < at || edit.range.end > text.len() {
            continue;
        }
        out.push_str(&text[at..edit.range.start]);
        out.push_str(&edit.text);
        at = edit.range.end;
    }
    out.push_str(&text[at..]);
    out
}

/// A unified diff of one file, with `a/` and `b/` headers as `git diff` writes them.
pub fn unified_diff(name: &str, old: &str, new: &str) -> String {
    let name = name.strip_prefix("./").unwrap_or(name);
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{name}"), &format!("b/{name}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse;

    fn source(text: &str) -> Source {
        Source::new("t.yaml", None, text.into())
    }

    fn sleep(seconds: &str) -> Vec<(&'static str, Fragment)> {
        vec![(
            "lifecycle",
            Fragment::Map(vec![(
                "preStop",
                Fragment::Map(vec![(
                    "sleep",
                    Fragment::Map(vec![("seconds", Fragment::Scalar(seconds.into()))]),
                )]),
            )]),
        )]
    }

    #[test]
    fn insertion_goes_before_the_first_key_on_its_own_line() {
        let s = source("containers:\n  - name: web # main\n    image: web:1\n");
        let doc = &parse(&s).expect("yaml")[0];
        let container = &doc.get("containers").expect("list").items()[0];
        let edit = insert_entries(&s, container, &sleep("5")).expect("an edit");
        assert_eq!(
            apply(&s.text, &[&edit]),
            "containers:\n  - name: web # main\n    lifecycle:\n      preStop:\n        sleep:\n          seconds: 5\n    image: web:1\n"
        );
    }

    #[test]
    fn insertion_after_a_lone_item_line_and_at_the_end_of_text() {
        let s = source("containers:\n  - name: web");
        let doc = &parse(&s).expect("yaml")[0];
        let container = &doc.get("containers").expect("list").items()[0];
        let edit = insert_entries(&s, container, &sleep("5")).expect("an edit");
        let fixed = apply(&s.text, &[&edit]);
        assert!(
            fixed.starts_with("containers:\n  - name: web\n    lifecycle:\n"),
            "{fixed}"
        );
        let reparsed = &parse(&source(&fixed)).expect("still YAML")[0];
        let seconds = reparsed.get("containers").expect("list").items()[0]
            .at(&["lifecycle", "preStop", "sleep", "seconds"])
            .and_then(Node::as_i64);
        assert_eq!(seconds, Some(5));
    }

    #[test]
    fn flow_mappings_and_json_get_no_insertion() {
        let s = source("spec: {replicas: 1}\n");
        let doc = &parse(&s).expect("yaml")[0];
        assert!(insert_entries(&s, doc.get("spec").expect("spec"), &sleep("5")).is_none());
        let json = Source::new(
            "t.json",
            Some("t.json".into()),
            "{\"spec\": {\"replicas\": 1}}".into(),
        );
        let doc = &parse(&json).expect("json")[0];
        assert!(insert_entries(&json, doc, &sleep("5")).is_none());
    }

    #[test]
    fn scalar_replacement_keeps_comments_and_overlaps_are_dropped() {
        let s = source("grace: 10   # seconds\n");
        let doc = &parse(&s).expect("yaml")[0];
        let a = replace_scalar(&s, doc.get("grace").expect("grace"), "25");
        let b = Edit {
            range: 7..9,
            text: "99".into(),
        };
        assert_eq!(apply(&s.text, &[&a, &b]), "grace: 25   # seconds\n");
        let diff = unified_diff("t.yaml", &s.text, "grace: 25   # seconds\n");
        assert!(
            diff.contains("-grace: 10") && diff.contains("+grace: 25"),
            "{diff}"
        );
    }
}
