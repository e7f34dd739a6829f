//! The report formats: human diagnostics with source snippets, JSON, SARIF 2.1.0 and
//! GitHub Actions workflow commands. `docs/check.md` documents the machine formats.

use std::fmt::Write as _;

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
use serde::Serialize;
use serde_json::{Value, json};

use crate::catalogue::{RULES, Severity};
use crate::source::Source;
use crate::yaml::scalar_extent;
use crate::{Finding, Report};

/// Version of the JSON format; it changes only when a field changes meaning or goes away.
pub const JSON_VERSION: u32 = 1;

/// Human diagnostics: `error[RG004]: message`, `--> file:line:col`, the line with the field
/// marked, the fix, then the summary line. `color` adds ANSI styles.
pub fn human(report: &Report, sources: &[Source], color: bool) -> String {
    let renderer = if color {
        Renderer::styled()
    } else {
        Renderer::plain()
    };
    let mut out = String::new();
    for f in &report.findings {
        let source = &sources[f.source];
        let line = source.line_range(f.at);
        let mark = mark(source, f.at, line.end);
        let level = level(f.severity);
        let mut subject = f.object.clone();
        if let Some(c) = &f.container {
            let _ = write!(subject, ", container {c}");
        }
        let message = [
            level
                .clone()
                .primary_title(f.message.as_str())
                .id(f.rule.id)
                .element(
                    Snippet::source(&source.text[line.clone()])
                        .line_start(f.line)
                        .path(source.name.as_str())
                        .annotation(
                            AnnotationKind::Primary
                                .span(mark.start - line.start..mark.end - line.start)
                                .label(subject),
                        ),
                ),
            Group::with_title(Level::HELP.secondary_title(f.fix.as_str())),
        ];
        out.push_str(&renderer.render(&message));
        out.push_str("\n\n");
    }
    out.push_str(&summary_line(report));
    out.push('\n');
    out
}

/// The span a finding marks: the scalar or key at `at`, at least one character, within the
/// line.
fn mark(source: &Source, at: usize, line_end: usize) -> std::ops::Range<usize> {
    if let Some(end) = flow_end(&source.text[at..line_end]) {
        return at..at + end;
    }
    let extent = scalar_extent(&source.text, at);
    let text = &source.text[extent.clone()];
    // A key: mark the key alone, not `key: value`.
    let end = match text.find(": ") {
        Some(i) if !text.starts_with(['"', '\'', '{', '[']) => extent.start + i,
        _ => extent.end,
    };
    let end = end.min(line_end);
    let end = if end > at {
        end
    } else {
        source.text[at..]
            .char_indices()
            .nth(1)
            .map_or(source.text.len(), |(i, _)| at + i)
            .min(line_end.max(at))
    };
    at..end
}

/// The length of a flow collection (`[...]`, `{...}`) that starts `line` and closes on it.
fn flow_end(line: &str) -> Option<usize> {
    if !line.starts_with(['[', '{']) {
        return None;
    }
    let mut depth = 0;
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// The message, followed by the object when the message does not name it.
fn with_object(f: &Finding) -> String {
    if f.message.contains(&f.object) {
        f.message.clone()
    } else {
        format!("{} ({})", f.message, f.object)
    }
}

fn level(severity: Severity) -> Level<'static> {
    match severity {
        Severity::Error => Level::ERROR,
        Severity::Warning => Level::WARNING,
        Severity::Info => Level::INFO,
    }
}

/// One line: what was found and what was read.
pub fn summary_line(report: &Report) -> String {
    let n = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let s = &report.summary;
    let mut line = format!(
        "{}, {}, {} in {} ({}, {})",
        n(report.count(Severity::Error), "error"),
        n(report.count(Severity::Warning), "warning"),
        n(report.count(Severity::Info), "info"),
        n(s.objects, "object"),
        n(s.documents, "document"),
        n(s.files, "file"),
    );
    let skipped: usize = s.skipped.values().sum();
    if skipped > 0 {
        let kinds: Vec<String> = s.skipped.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = write!(line, "; skipped {skipped}: {}", kinds.join(", "));
    }
    line
}

/// The JSON report (documented in docs/check.md); fields in the documented order.
#[derive(Serialize)]
struct JsonReport<'a> {
    version: u32,
    findings: Vec<JsonFinding<'a>>,
    summary: JsonSummary<'a>,
}

#[derive(Serialize)]
struct JsonFinding<'a> {
    rule: &'static str,
    severity: Severity,
    file: &'a str,
    line: usize,
    column: usize,
    object: &'a str,
    container: Option<&'a str>,
    message: &'a str,
    fix: &'a str,
    fixable: bool,
}

#[derive(Serialize)]
struct JsonSummary<'a> {
    files: usize,
    documents: usize,
    objects: usize,
    skipped: usize,
    skipped_kinds: &'a std::collections::BTreeMap<String, usize>,
    errors: usize,
    warnings: usize,
    infos: usize,
}

/// The JSON report, pretty-printed with a final newline (documented in docs/check.md).
pub fn json(report: &Report, sources: &[Source]) -> serde_json::Result<String> {
    let s = &report.summary;
    let doc = JsonReport {
        version: JSON_VERSION,
        findings: report
            .findings
            .iter()
            .map(|f| JsonFinding {
                rule: f.rule.id,
                severity: f.severity,
                file: &sources[f.source].name,
                line: f.line,
                column: f.column,
                object: &f.object,
                container: f.container.as_deref(),
                message: &f.message,
                fix: &f.fix,
                fixable: f.edit.is_some(),
            })
            .collect(),
        summary: JsonSummary {
            files: s.files,
            documents: s.documents,
            objects: s.objects,
            skipped: s.skipped.values().sum(),
            skipped_kinds: &s.skipped,
            errors: report.count(Severity::Error),
            warnings: report.count(Severity::Warning),
            infos: report.count(Severity::Info),
        },
    };
    serde_json::to_string_pretty(&doc).map(|text| text + "\n")
}

/// A SARIF 2.1.0 log with one run: every rule in `tool.driver.rules`, every finding a
/// result with its rule, level and physical location.
pub fn sarif(report: &Report, sources: &[Source]) -> Value {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.name,
                "shortDescription": {"text": r.title},
                "fullDescription": {"text": r.why},
                "help": {"text": r.fix},
                "defaultConfiguration": {"level": sarif_level(r.severity)},
                "properties": {"failureMode": r.failure},
            })
        })
        .collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            let source = &sources[f.source];
            let rule_index = RULES.iter().position(|r| r.id == f.rule.id);
            let end = mark(source, f.at, source.line_range(f.at).end).end;
            let (_, end_column) = source.line_col(end);
            json!({
                "ruleId": f.rule.id,
                "ruleIndex": rule_index,
                "level": sarif_level(f.severity),
                "message": {"text": with_object(f)},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": uri(&source.name)},
                        "region": {
                            "startLine": f.line,
                            "startColumn": f.column,
                            "endLine": f.line,
                            "endColumn": end_column.max(f.column + 1),
                        },
                    },
                    "logicalLocations": [{"fullyQualifiedName": f.object, "kind": "object"}],
                }],
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "rollguard",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/rollguard/rollguard",
                "rules": rules,
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    })
}

fn sarif_level(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    }
}

/// A relative URI reference for a path: forward slashes, no leading `./`, and every byte
/// but unreserved characters and `/` percent-encoded (`<stdin>` is `%3Cstdin%3E`).
fn uri(name: &str) -> String {
    let name = name.strip_prefix("./").unwrap_or(name).replace('\\', "/");
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// GitHub Actions workflow commands, one per finding, then the summary as a notice.
pub fn github(report: &Report, sources: &[Source]) -> String {
    let mut out = String::new();
    for f in &report.findings {
        let command = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "notice",
        };
        let _ = writeln!(
            out,
            "::{command} file={},line={},col={},title={}::{}",
            escape_property(&sources[f.source].name),
            f.line,
            f.column,
            f.rule.id,
            escape_data(&format!("{}. Fix: {}", with_object(f), f.fix)),
        );
    }
    let _ = writeln!(out, "{}", summary_line(report));
    out
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}
