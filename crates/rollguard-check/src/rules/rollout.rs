//! RG007, RG008 and RG011: the update strategy and PodDisruptionBudgets.

use rollguard_core::rollout::{IntOrPercent, RollingUpdate, RollingUpdateError};

use crate::fix::{Edit, Fragment, insert_entries, set_entry};
use crate::model::{Object, Workload};
use crate::source::Source;
use crate::yaml::{Node, Value};

use super::{Cx, Place, ignore_list, plural};

impl<'a> Cx<'_, 'a> {
    /// RG007 and RG008.
    pub(super) fn rollout(&mut self, w: &Workload<'a>, replicas: i64, p: &Place<'_>) {
        if w.object.kind != "Deployment" {
            return;
        }
        let Some(strategy) = w.object.spec().and_then(|s| s.get("strategy")) else {
            return;
        };
        let kind = strategy.get("type");
        if let Some(t) = kind.filter(|t| t.as_str() == Some("Recreate")) {
            self.report(
                "RG007",
                p,
                t.start,
                format!(
                    "{} uses the Recreate strategy: every rollout stops all pods before starting new ones",
                    w.object.id()
                ),
            );
            return;
        }
        let Some(rolling) = strategy.get("rollingUpdate") else {
            return;
        };
        let surge_node = rolling.get("maxSurge");
        let unavailable_node = rolling.get("maxUnavailable");
        // A field absent or left empty gets Kubernetes' default, as in the API server.
        let defaults = RollingUpdate::default();
        let parse = |n: Option<&Node>, default: IntOrPercent| match n {
            Some(n) if !matches!(n.value, Value::Null) => n.scalar_text()?.parse().ok(),
            _ => Some(default),
        };
        let (Some(max_surge), Some(max_unavailable)) = (
            parse(surge_node, defaults.max_surge),
            parse(unavailable_node, defaults.max_unavailable),
        ) else {
            return;
        };
        let update = RollingUpdate {
            max_surge,
            max_unavailable,
        };
        let count = replica_count(replicas);
        let problem = match update.resolve(count) {
            Err(RollingUpdateError::BothZero) => {
                Some("maxSurge and maxUnavailable are both 0 (the API server rejects that)".into())
            }
            Err(_) => None,
            Ok(f) if count > 0 && f.min_available() == 0 => Some(format!(
                "with {count} replica{} maxUnavailable resolves to {} and maxSurge to {}: the rollout may take every replica down at once",
                if count == 1 { "" } else { "s" },
                f.max_unavailable,
                f.max_surge
            )),
            Ok(_) => None,
        };
        let Some(problem) = problem else { return };
        let source = self.source(&w.object);
        let edit = safe_rolling_update(source, rolling);
        let at = unavailable_node.or(surge_node).unwrap_or(rolling).start;
        self.report_with("RG008", p, at, problem, edit);
    }

    /// RG011: a budget that allows no disruption, or every one.
    pub(super) fn pdb(&mut self, pdb: &Object<'a>, selected: &[(&Workload<'a>, i64)]) {
        let Some(spec) = pdb.spec() else { return };
        let place = Place {
            object: *pdb,
            ignored: ignore_list(pdb.annotation("rollguard/ignore")),
            container: None,
        };
        for field in ["minAvailable", "maxUnavailable"] {
            let Some(node) = spec.get(field) else {
                continue;
            };
            let Some(value) = node
                .scalar_text()
                .and_then(|t| t.parse::<IntOrPercent>().ok())
            else {
                continue;
            };
            let allowed = |replicas: i64| -> i64 {
                let r = replica_count(replicas);
                let n = i64::from(value.scaled(r, true));
                if field == "minAvailable" {
                    replicas - n
                } else {
                    n
                }
            };
            let verdict = if selected.is_empty() {
                match (field, value) {
                    ("minAvailable", IntOrPercent::Percent(100))
                    | ("maxUnavailable", IntOrPercent::Int(0) | IntOrPercent::Percent(0)) => {
                        Some((false, "its pods".to_owned()))
                    }
                    ("minAvailable", IntOrPercent::Int(0) | IntOrPercent::Percent(0))
                    | ("maxUnavailable", IntOrPercent::Percent(100)) => {
                        Some((true, "its pods".to_owned()))
                    }
                    _ => None,
                }
            } else {
                selected.iter().find_map(|(w, r)| {
                    let a = allowed(*r);
                    let what = format!("{} ({r} replica{})", w.object.id(), plural(*r));
                    if a <= 0 {
                        Some((false, what))
                    } else if a >= *r {
                        Some((true, what))
                    } else {
                        None
                    }
                })
            };
            if let Some((all, what)) = verdict {
                let written = node.scalar_text().unwrap_or_default();
                let message = if all {
                    format!("{field}: {written} lets every pod of {what} be evicted at once")
                } else {
                    format!(
                        "{field}: {written} allows no voluntary disruption of {what}: node drains block"
                    )
                };
                self.report("RG011", &place, node.start, message);
            }
        }
    }
}

/// The edit that sets `maxSurge: 1` and `maxUnavailable: 0` in `rolling`: existing
/// values replaced, missing keys inserted, as one edit.
fn safe_rolling_update(source: &Source, rolling: &Node) -> Option<Edit> {
    let mut edits = Vec::new();
    let mut missing = Vec::new();
    for (key, value) in [("maxSurge", "1"), ("maxUnavailable", "0")] {
        match rolling.get(key) {
            Some(_) => edits.push(set_entry(source, rolling, key, value)?),
            None => missing.push((key, Fragment::Scalar(value.into()))),
        }
    }
    if !missing.is_empty() {
        edits.push(insert_entries(source, rolling, &missing)?);
    }
    edits.sort_by_key(|e| e.range.start);
    let first = edits.first()?.range.start;
    let last = edits.iter().map(|e| e.range.end).max()?;
    // One edit covering all: the text between the pieces is kept as it is.
    let mut text = String::new();
    let mut at = first;
    for e in &edits {
        if e.range.start < at {
            return None;
        }
        text.push_str(&source.text[at..e.range.start]);
        text.push_str(&e.text);
        at = e.range.end;
    }
    Some(Edit {
        range: first..last,
        text,
    })
}

/// A replica count as the rollout math takes it (negative counts as 0).
fn replica_count(replicas: i64) -> u32 {
    u32::try_from(replicas.max(0)).unwrap_or(u32::MAX)
}
