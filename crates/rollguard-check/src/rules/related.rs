//! The objects workloads are related to, indexed by what selects them.

use std::collections::HashMap;

use crate::model::{Object, Workload};
use crate::yaml::Node;

/// The objects workloads are related to, indexed so that relating every workload costs
/// about one lookup per pod label rather than a scan of every object.
pub(super) struct Related<'a> {
    /// Services, by the first label of their selector (a Service selects a pod only if
    /// the pod has every label of it, so the first one in particular).
    services: HashMap<(&'a str, String), Vec<Object<'a>>>,
    /// Every PodDisruptionBudget.
    pub(super) pdbs: Vec<Object<'a>>,
    /// Indexes into `pdbs`, by the first `matchLabels` entry of their selector.
    pdbs_by_label: HashMap<(&'a str, String), Vec<usize>>,
    /// Indexes into `pdbs` of those without `matchLabels`, checked against every workload.
    pdbs_unindexed: Vec<usize>,
    /// HorizontalPodAutoscalers, by the kind and name of their target.
    hpas: HashMap<(&'a str, &'a str), Vec<Object<'a>>>,
}

impl<'a> Related<'a> {
    pub(super) fn new(objects: &[Object<'a>]) -> Self {
        let first_label = |selector: Option<&'a Node>| {
            let (k, v) = selector?.entries().first()?;
            Some((k.as_str()?, v.scalar_text()?))
        };
        let mut related = Related {
            services: HashMap::new(),
            pdbs: Vec::new(),
            pdbs_by_label: HashMap::new(),
            pdbs_unindexed: Vec::new(),
            hpas: HashMap::new(),
        };
        for o in objects {
            match o.kind {
                "Service" => {
                    if let Some(key) = first_label(o.spec().and_then(|s| s.get("selector"))) {
                        related.services.entry(key).or_default().push(*o);
                    }
                }
                "PodDisruptionBudget" => {
                    let index = related.pdbs.len();
                    related.pdbs.push(*o);
                    let labels = o.spec().and_then(|s| s.at(&["selector", "matchLabels"]));
                    match first_label(labels) {
                        Some(key) => related.pdbs_by_label.entry(key).or_default().push(index),
                        None => related.pdbs_unindexed.push(index),
                    }
                }
                "HorizontalPodAutoscaler" => {
                    let target = o.spec().and_then(|s| s.get("scaleTargetRef"));
                    let field = |f| target.and_then(|t| t.get(f)).and_then(Node::as_str);
                    if let (Some(kind), Some(name)) = (field("kind"), field("name")) {
                        related.hpas.entry((kind, name)).or_default().push(*o);
                    }
                }
                _ => {}
            }
        }
        related
    }

    /// The workload's pod labels as index keys.
    fn label_keys(w: &Workload<'a>) -> impl Iterator<Item = (&'a str, String)> {
        w.labels()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?, v.scalar_text()?)))
    }

    /// The Services that select the workload's pods.
    pub(super) fn services_selecting(&self, w: &Workload<'a>) -> Vec<&Object<'a>> {
        Self::label_keys(w)
            .filter_map(|key| self.services.get(&key))
            .flatten()
            .filter(|s| w.selected_by_service(s))
            .collect()
    }

    /// Indexes into `pdbs` of the budgets that select the workload's pods.
    pub(super) fn pdbs_selecting(&self, w: &Workload<'a>) -> Vec<usize> {
        let mut found: Vec<usize> = Self::label_keys(w)
            .filter_map(|key| self.pdbs_by_label.get(&key))
            .flatten()
            .chain(&self.pdbs_unindexed)
            .copied()
            .filter(|&i| {
                let pdb = &self.pdbs[i];
                pdb.same_namespace(&w.object)
                    && pdb
                        .spec()
                        .and_then(|s| s.get("selector"))
                        .is_some_and(|s| w.selected_by(s))
            })
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    }

    /// `minReplicas` of the HorizontalPodAutoscaler that scales the workload.
    pub(super) fn hpa_min_replicas(&self, w: &Workload<'_>) -> Option<i64> {
        self.hpas
            .get(&(w.object.kind, w.object.name))?
            .iter()
            .find(|o| o.same_namespace(&w.object))
            .map(|o| {
                o.spec()
                    .and_then(|s| s.get("minReplicas"))
                    .and_then(Node::as_i64)
                    .unwrap_or(1)
            })
    }

    /// The replicas a workload keeps: its HPA's minReplicas, else `spec.replicas`, else 1.
    pub(super) fn replicas(&self, w: &Workload<'_>) -> i64 {
        self.hpa_min_replicas(w)
            .or(w.replicas().map(|(r, _)| r))
            .unwrap_or(1)
    }
}
