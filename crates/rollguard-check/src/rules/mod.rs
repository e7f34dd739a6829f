//! The rules: each reads the model and reports findings, with an edit when the fix is safe.
//!
//! This module relates each workload to the Services, budgets and autoscaler around it
//! (`related`) and holds the rules about containers, probes and replicas (RG001-RG003,
//! RG009, RG010, RG013-RG015); `timing` has RG004-RG006, `shell` RG012, and `rollout`
//! RG007, RG008 and RG011.

mod related;
mod rollout;
mod shell;
mod timing;

use std::collections::BTreeSet;

use crate::catalogue::{Rule, Severity, rule};
use crate::config::Config;
use crate::fix::Edit;
use crate::model::{Container, Object, Workload};
use crate::source::Source;
use crate::yaml::Node;

use related::Related;
use timing::{Delay, delay};

/// One problem found in a manifest.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The rule.
    pub rule: &'static Rule,
    /// Its severity, after the configuration.
    pub severity: Severity,
    /// Index of the source it is in.
    pub source: usize,
    /// Byte offset the finding points at.
    pub at: usize,
    /// 1-based line of `at`.
    pub line: usize,
    /// 1-based column of `at`.
    pub column: usize,
    /// `Kind/namespace/name`.
    pub object: String,
    /// The container, when the finding is about one.
    pub container: Option<String>,
    /// What is wrong, with the values involved.
    pub message: String,
    /// What to do about it.
    pub fix: String,
    /// The edit `--fix` makes, when it can.
    pub edit: Option<Edit>,
}

/// Runs every rule over `objects` and returns the findings sorted by place.
pub fn run(sources: &[Source], objects: &[Object<'_>], config: &Config) -> Vec<Finding> {
    let related = Related::new(objects);
    let mut cx = Cx {
        sources,
        config,
        related: &related,
        findings: Vec::new(),
    };
    let workloads: Vec<Workload<'_>> = objects.iter().copied().filter_map(Workload::new).collect();
    // For RG011: the replicated workloads each budget selects, with their replica counts.
    let mut budgets: Vec<Vec<(&Workload<'_>, i64)>> = vec![Vec::new(); related.pdbs.len()];
    for w in &workloads {
        let pdbs = related.pdbs_selecting(w);
        let replicas = related.replicas(w);
        if w.is_replicated() {
            for &i in &pdbs {
                budgets[i].push((w, replicas));
            }
        }
        cx.workload(w, replicas, !pdbs.is_empty());
    }
    for (pdb, selected) in related.pdbs.iter().zip(&budgets) {
        cx.pdb(pdb, selected);
    }
    let mut findings = cx.findings;
    findings.sort_by(|a, b| (a.source, a.at, a.rule.id).cmp(&(b.source, b.at, b.rule.id)));
    findings
}

struct Cx<'s, 'a> {
    sources: &'s [Source],
    config: &'s Config,
    related: &'s Related<'a>,
    findings: Vec<Finding>,
}

/// Where a finding is and what it is about.
struct Place<'n> {
    object: Object<'n>,
    ignored: BTreeSet<String>,
    container: Option<String>,
}

impl<'s, 'a> Cx<'s, 'a> {
    fn report(&mut self, id: &str, place: &Place<'_>, at: usize, message: String) {
        self.report_with(id, place, at, message, None);
    }

    fn report_with(
        &mut self,
        id: &str,
        place: &Place<'_>,
        at: usize,
        message: String,
        edit: Option<Edit>,
    ) {
        let Some(rule) = rule(id) else { return };
        let Some(severity) = self.config.severity(rule.id) else {
            return;
        };
        if place.ignored.contains(rule.id) || place.ignored.contains("ALL") {
            return;
        }
        let source = place.object.source;
        let (line, column) = self.sources[source].line_col(at);
        self.findings.push(Finding {
            rule,
            severity,
            source,
            at,
            line,
            column,
            object: place.object.id(),
            container: place.container.clone(),
            message,
            fix: rule.fix.to_owned(),
            edit,
        });
    }

    fn source(&self, object: &Object<'_>) -> &'s Source {
        &self.sources[object.source]
    }

    fn workload(&mut self, w: &Workload<'a>, replicas: i64, has_pdb: bool) {
        let mut ignored = ignore_list(w.object.annotation("rollguard/ignore"));
        ignored.extend(ignore_list(w.pod_annotation("rollguard/ignore")));
        let place = |container: Option<&Container<'_>>| Place {
            object: w.object,
            ignored: ignored.clone(),
            container: container.map(|c| c.name.to_owned()),
        };
        let containers = w.containers();
        let services = self.related.services_selecting(w);
        let serving = serving_containers(&containers, &services);
        let serves = serving.iter().any(|s| *s);
        let hpa_min = self.related.hpa_min_replicas(w);
        // The delay before SIGTERM of each serving container (none for the others), which
        // RG004, RG005 and RG006 all judge.
        let delays: Vec<Option<Delay<'a>>> = containers
            .iter()
            .zip(&serving)
            .map(|(c, &s)| s.then(|| delay(c, &containers)))
            .collect();

        for ((c, &is_serving), d) in containers.iter().zip(&serving).zip(&delays) {
            let p = place(Some(c));
            if is_serving && c.probe("readinessProbe").is_none() {
                self.report(
                    "RG001",
                    &p,
                    c.node.start,
                    format!(
                        "container '{}' serves traffic but has no readinessProbe: it gets requests as soon as it starts",
                        c.name
                    ),
                );
            }
            self.probes(c, &p);
            self.shell_form(c, &p);
            if let Some(d) = d {
                self.delay_before_sigterm(w, c, d, &containers, &p);
            }
        }
        self.grace_period(w, &containers, &delays, &place);
        self.sidecar_order(w, &containers, &place);
        if !serves {
            return;
        }
        let p = place(None);
        self.rollout(w, replicas, &p);
        if w.is_replicated() {
            let anchor = w.replicas().map_or(w.object.anchor(), |(_, n)| n.start);
            if (0..2).contains(&replicas) && w.replicas().is_none_or(|(r, _)| r != 0) {
                let hpa = match hpa_min {
                    Some(min) => format!(" (its HorizontalPodAutoscaler's minReplicas is {min})"),
                    None => String::new(),
                };
                self.report(
                    "RG009",
                    &p,
                    anchor,
                    format!(
                        "{} runs {replicas} replica{hpa}: one eviction or crash leaves no pod to serve",
                        w.object.id()
                    ),
                );
            }
            if replicas >= 2 && !has_pdb {
                self.report(
                    "RG010",
                    &p,
                    w.object.anchor(),
                    format!(
                        "no PodDisruptionBudget selects the pods of {}: a node drain may evict all {replicas} replicas at once",
                        w.object.id()
                    ),
                );
            }
        }
        if w.object.kind != "Pod" {
            let spec = w.object.spec();
            let node = spec.and_then(|s| s.get("minReadySeconds"));
            if node.and_then(Node::as_i64).unwrap_or(0) == 0 {
                let at = node.map_or(w.object.anchor(), |n| n.start);
                self.report(
                    "RG015",
                    &p,
                    at,
                    "minReadySeconds is 0: a new pod counts as available the moment it is first ready".into(),
                );
            }
        }
    }

    /// RG002, RG003, RG006 and RG014 on one container's probes.
    fn probes(&mut self, c: &Container<'a>, p: &Place<'_>) {
        let readiness = c.node.entry("readinessProbe");
        let liveness = c.node.entry("livenessProbe");
        if let (Some((_, r)), Some((lk, l))) = (readiness, liveness)
            && r.same_as(l)
        {
            self.report(
                "RG002",
                p,
                lk.start,
                format!(
                    "container '{}': livenessProbe is identical to readinessProbe: a busy or draining container gets restarted",
                    c.name
                ),
            );
        }
        let startup = c.probe("startupProbe").is_some();
        for kind in ["readinessProbe", "livenessProbe", "startupProbe"] {
            let Some(probe) = c.probe(kind) else { continue };
            for handler in ["httpGet", "tcpSocket", "grpc"] {
                let Some(port) = probe.at(&[handler, "port"]) else {
                    continue;
                };
                let shim_health = c.shim.as_ref().and_then(|s| s.health_port);
                let declared_any = c.ports().iter().any(|pt| pt.number.is_some());
                let wrong = match (port.as_i64(), port.as_str()) {
                    (Some(n), _) => declared_any && !c.declares(port) && shim_health != Some(n),
                    (None, Some(_)) => !c.declares(port),
                    _ => false,
                };
                if wrong {
                    let written = port.scalar_text().unwrap_or_default();
                    self.report(
                        "RG003",
                        p,
                        port.start,
                        format!(
                            "container '{}': {kind} checks port {written}, which the container does not declare",
                            c.name
                        ),
                    );
                }
            }
            if !startup && kind != "startupProbe" {
                let delay = probe.get("initialDelaySeconds");
                if let Some(d) = delay.and_then(Node::as_i64).filter(|d| *d >= 30) {
                    self.report(
                        "RG014",
                        p,
                        delay.map_or(probe.start, |n| n.start),
                        format!(
                            "container '{}': {kind} waits initialDelaySeconds {d} with no startupProbe",
                            c.name
                        ),
                    );
                }
            }
        }
    }

    /// RG013: a proxy sidecar among the app containers.
    fn sidecar_order(
        &mut self,
        w: &Workload<'a>,
        containers: &[Container<'a>],
        place: &dyn Fn(Option<&Container<'_>>) -> Place<'a>,
    ) {
        let app: Vec<&Container<'a>> = containers.iter().filter(|c| !c.native_sidecar).collect();
        if app.len() < 2 {
            return;
        }
        let held = w.pod_annotation("proxy.istio.io/config").is_some_and(|v| {
            let v = v.replace([' ', '"'], "");
            v.contains("holdApplicationUntilProxyStarts:true")
        }) || w.pod_annotation("config.linkerd.io/proxy-await") == Some("enabled");
        if held {
            return;
        }
        for c in app.iter().filter(|c| is_proxy(c)) {
            self.report(
                "RG013",
                &place(Some(c)),
                c.node.start,
                format!(
                    "proxy sidecar '{}' is an ordinary container: it starts and gets SIGTERM together with the app",
                    c.name
                ),
            );
        }
    }
}

/// Which containers serve traffic. When a Service selects the pod: the containers its
/// targetPorts name (the first app container when none declares one). Otherwise: the app
/// containers that declare ports (a native sidecar with ports is usually a proxy's admin or
/// health port, and gets SIGTERM only after the app has exited).
fn serving_containers(containers: &[Container<'_>], services: &[&Object<'_>]) -> Vec<bool> {
    if services.is_empty() {
        return containers
            .iter()
            .map(|c| !c.native_sidecar && !c.ports().is_empty())
            .collect();
    }
    let mut serving = vec![false; containers.len()];
    for service in services {
        let ports = service
            .spec()
            .and_then(|s| s.get("ports"))
            .map_or(&[][..], Node::items);
        for port in ports {
            let Some(target) = port.get("targetPort").or(port.get("port")) else {
                continue;
            };
            match containers.iter().position(|c| c.declares(target)) {
                Some(i) => serving[i] = true,
                None => {
                    if let Some(i) = containers.iter().position(|c| !c.native_sidecar) {
                        serving[i] = true;
                    }
                }
            }
        }
    }
    serving
}

fn is_proxy(c: &Container<'_>) -> bool {
    const NAMES: [&str; 6] = [
        "istio-proxy",
        "linkerd-proxy",
        "envoy",
        "cloud-sql-proxy",
        "cloudsql-proxy",
        "oauth2-proxy",
    ];
    const IMAGES: [&str; 7] = [
        "envoy",
        "proxyv2",
        "istio-proxy",
        "linkerd2-proxy",
        "cloud-sql-proxy",
        "gce-proxy",
        "oauth2-proxy",
    ];
    let image = c.node.get("image").and_then(Node::as_str).unwrap_or("");
    let repo = image.split('@').next().unwrap_or(image);
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let base = last.split(':').next().unwrap_or(last);
    NAMES.contains(&c.name)
        || IMAGES.contains(&base)
        || (base == "proxy" && repo.contains("linkerd"))
        || c.shim.as_ref().is_some_and(|s| s.sidecar)
}

fn ignore_list(value: Option<&str>) -> BTreeSet<String> {
    value
        .unwrap_or("")
        .split([',', ' '])
        .map(|s| s.trim().to_ascii_uppercase())
        .filter(|s| !s.is_empty())
        .collect()
}

fn secs(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{s:.1}s")
    }
}

fn plural(n: i64) -> &'static str {
    if n == 1 { "" } else { "s" }
}
