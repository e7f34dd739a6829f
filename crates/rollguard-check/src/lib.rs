//! Static analysis of Kubernetes manifests for zero-downtime rollout mistakes.
//!
//! `rollguard check` reads manifests (files, directories, stdin; multi-document YAML or
//! JSON), relates workloads to the Services, PodDisruptionBudgets and
//! HorizontalPodAutoscalers around them, and runs the rules of the [`catalogue`]: missing
//! readiness, no delay before SIGTERM, a grace period the drain does not fit in, rollout
//! parameters that can take every replica down, and the rest. Every finding points at the
//! field (`file:line:col`), and the safe ones come with an edit that [`fix()`] applies
//! without touching any other byte.
//!
//! ```
//! use rollguard_check::{Config, Source, check};
//!
//! let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  \
//!             strategy: {type: Recreate}\n  template:\n    spec:\n      containers:\n      \
//!             - name: web\n        ports: [{containerPort: 8080}]\n";
//! let sources = [Source::new("web.yaml", None, yaml.to_owned())];
//! let report = check(&sources, &Config::default()).unwrap();
//! let rules: Vec<&str> = report.findings.iter().map(|f| f.rule.id).collect();
//! assert!(rules.contains(&"RG001") && rules.contains(&"RG007"));
//! assert_eq!(report.findings[0].line, 3);
//! ```

#![warn(missing_docs)]

pub mod catalogue;
pub mod config;
pub mod fix;
pub mod model;
pub mod output;
mod rules;
pub mod source;
pub mod yaml;

use std::collections::BTreeMap;

pub use catalogue::{RULES, Rule, Severity};
pub use config::{Config, ConfigError};
pub use rules::Finding;
pub use source::{ReadError, Source, read_inputs};

use model::{Object, WORKLOAD_KINDS};
use yaml::{Node, SyntaxError};

/// What a check found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The findings, by source and place.
    pub findings: Vec<Finding>,
    /// What was read.
    pub summary: Summary,
}

impl Report {
    /// How many findings have `severity`.
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }
}

/// Counts of what a check read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Sources read.
    pub files: usize,
    /// YAML documents (a `kind: List` counts once).
    pub documents: usize,
    /// Objects of the kinds the rules look at.
    pub objects: usize,
    /// Objects of other kinds, and documents with no `kind`, by kind (`(none)`).
    pub skipped: BTreeMap<String, usize>,
}

/// A source that is not valid YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSource {
    /// The source's name.
    pub name: String,
    /// Where and why.
    pub error: SyntaxError,
}

impl std::fmt::Display for InvalidSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: invalid YAML: {}",
            self.name, self.error.line, self.error.column, self.error.message
        )
    }
}

impl std::error::Error for InvalidSource {}

/// Kinds the rules relate workloads to.
const RELATED_KINDS: [&str; 3] = ["Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"];

/// Checks `sources` with `config`. Every source that is not valid YAML is reported, and no
/// finding then.
pub fn check(sources: &[Source], config: &Config) -> Result<Report, Vec<InvalidSource>> {
    let mut docs = Vec::with_capacity(sources.len());
    let mut invalid = Vec::new();
    for source in sources {
        match yaml::parse(source) {
            Ok(d) => docs.push(d),
            Err(error) => {
                invalid.push(InvalidSource {
                    name: source.name.clone(),
                    error,
                });
                docs.push(Vec::new());
            }
        }
    }
    if !invalid.is_empty() {
        return Err(invalid);
    }
    let mut summary = Summary {
        files: sources.len(),
        ..Summary::default()
    };
    let mut objects = Vec::new();
    for (index, source_docs) in docs.iter().enumerate() {
        summary.documents += source_docs.len();
        for doc in source_docs {
            collect(index, doc, &mut objects, &mut summary);
        }
    }
    summary.objects = objects.len();
    let findings = rules::run(sources, &objects, config);
    Ok(Report { findings, summary })
}

fn collect<'a>(source: usize, doc: &'a Node, objects: &mut Vec<Object<'a>>, summary: &mut Summary) {
    let Some(object) = Object::new(source, doc) else {
        *summary.skipped.entry("(none)".into()).or_default() += 1;
        return;
    };
    if object.kind.ends_with("List") {
        for item in doc.get("items").map_or(&[][..], Node::items) {
            collect(source, item, objects, summary);
        }
        return;
    }
    if WORKLOAD_KINDS.contains(&object.kind) || RELATED_KINDS.contains(&object.kind) {
        objects.push(object);
    } else {
        *summary.skipped.entry(object.kind.to_owned()).or_default() += 1;
    }
}

/// The outcome of [`fix()`].
#[derive(Debug, Clone)]
pub struct Fixed {
    /// Every source, with the fixed text where something changed.
    pub sources: Vec<Source>,
    /// Indexes of the sources that changed.
    pub changed: Vec<usize>,
    /// How many edits were made.
    pub edits: usize,
    /// The check of the fixed sources.
    pub report: Report,
}

/// Applies every available fix, then checks again, until nothing more can be fixed (a fix
/// can reveal another: a new preStop delay may no longer fit the grace period). Sources
/// are changed in memory only; JSON sources only get scalar replacements.
pub fn fix(sources: &[Source], config: &Config) -> Result<Fixed, Vec<InvalidSource>> {
    let mut current: Vec<Source> = sources.to_vec();
    let mut changed = std::collections::BTreeSet::new();
    let mut edits = 0;
    let mut report = check(&current, config)?;
    // A fix can reveal one more (a new delay, then the grace period it needs); four rounds
    // are more than any chain of the rules' fixes.
    for _ in 0..4 {
        let mut replaced = Vec::new();
        for (index, source) in current.iter().enumerate() {
            let found: Vec<&fix::Edit> = report
                .findings
                .iter()
                .filter(|f| f.source == index)
                .filter_map(|f| f.edit.as_ref())
                .collect();
            if found.is_empty() {
                continue;
            }
            let text = fix::apply(&source.text, &found);
            let candidate = Source::new(source.name.clone(), source.path.clone(), text);
            // A fix must never make a file unreadable; should one do so (a layout the edits
            // did not foresee), the file is left as it was.
            if candidate.text != source.text && yaml::parse(&candidate).is_ok() {
                edits += found.len();
                replaced.push((index, candidate));
            }
        }
        if replaced.is_empty() {
            break;
        }
        for (index, source) in replaced {
            current[index] = source;
            changed.insert(index);
        }
        report = check(&current, config)?;
    }
    Ok(Fixed {
        sources: current,
        changed: changed.into_iter().collect(),
        edits,
        report,
    })
}
