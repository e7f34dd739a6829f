//! The rules: each reads the model and reports findings, with an edit when the fix is safe.

use std::collections::BTreeSet;

use rollguard_core::rollout::{IntOrPercent, RollingUpdate, RollingUpdateError};

use crate::catalogue::{Rule, Severity, rule};
use crate::config::Config;
use crate::fix::{Edit, Fragment, insert_entries, replace_scalar, replace_string};
use crate::model::{Container, Object, Workload, sleep_seconds};
use crate::source::Source;
use crate::yaml::{Node, Value};

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
    let mut cx = Cx {
        sources,
        config,
        objects,
        findings: Vec::new(),
    };
    let workloads: Vec<Workload<'_>> = objects.iter().copied().filter_map(Workload::new).collect();
    for w in &workloads {
        cx.workload(w);
    }
    for pdb in objects.iter().filter(|o| o.kind == "PodDisruptionBudget") {
        cx.pdb(pdb, &workloads);
    }
    let mut findings = cx.findings;
    findings.sort_by(|a, b| (a.source, a.at, a.rule.id).cmp(&(b.source, b.at, b.rule.id)));
    findings
}

struct Cx<'s, 'a> {
    sources: &'s [Source],
    config: &'s Config,
    objects: &'s [Object<'a>],
    findings: Vec<Finding>,
}

/// Where a finding is and what it is about.
struct Place<'n> {
    object: Object<'n>,
    ignored: BTreeSet<String>,
    container: Option<String>,
}

/// A delay before SIGTERM reaches a serving container's process.
enum Delay<'a> {
    /// None at all.
    None,
    /// Seconds (shortest and longest), how it is made, and the scalar `--fix` may raise.
    Known {
        min: f64,
        max: f64,
        how: String,
        at: &'a Node,
        editable: Option<&'a Node>,
        /// The drain time after the delay, when the shim sets it.
        drain: Option<f64>,
    },
    /// A preStop hook whose length can't be known.
    Unknown,
}

impl<'s, 'a> Cx<'s, 'a> {
    fn report(&mut self, id: &str, place: &Place<'_>, at: usize, message: String) -> Option<()> {
        self.report_with(id, place, at, message, None)
    }

    fn report_with(
        &mut self,
        id: &str,
        place: &Place<'_>,
        at: usize,
        message: String,
        edit: Option<Edit>,
    ) -> Option<()> {
        let rule = rule(id)?;
        let severity = self.config.severity(rule.id)?;
        if place.ignored.contains(rule.id) || place.ignored.contains("ALL") {
            return None;
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
        Some(())
    }

    fn source(&self, object: &Object<'_>) -> &'s Source {
        &self.sources[object.source]
    }

    fn workload(&mut self, w: &Workload<'a>) {
        let mut ignored = ignore_list(w.object.annotation("rollguard/ignore"));
        ignored.extend(ignore_list(w.pod_annotation("rollguard/ignore")));
        let place = |container: Option<&Container<'_>>| Place {
            object: w.object,
            ignored: ignored.clone(),
            container: container.map(|c| c.name.to_owned()),
        };
        let containers = w.containers();
        let services: Vec<&Object<'a>> = self
            .objects
            .iter()
            .filter(|o| o.kind == "Service" && w.selected_by_service(o))
            .collect();
        let serving = serving_containers(&containers, &services);
        let serves = serving.iter().any(|s| *s);
        let hpa_min = self.hpa_min_replicas(w);
        let replicas = hpa_min.or(w.replicas().map(|(r, _)| r)).unwrap_or(1);

        for (c, &is_serving) in containers.iter().zip(&serving) {
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
            if is_serving {
                self.delay_before_sigterm(w, c, &containers, &p);
            }
        }
        self.grace_period(w, &containers, &serving, &place(None));
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
                        "{} runs {replicas} replica{hpa}: one eviction or crash leaves its Service with no endpoint",
                        w.object.id()
                    ),
                );
            }
            if replicas >= 2 && !self.has_pdb(w) {
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

    /// RG012: a shell that won't pass SIGTERM on.
    fn shell_form(&mut self, c: &Container<'a>, p: &Place<'_>) {
        if c.shim.is_some() {
            return;
        }
        let Some((script, node)) = shell_script(c) else {
            return;
        };
        if script.contains("trap ") {
            return;
        }
        let commands = split_commands(&script);
        let Some(last) = commands.last() else { return };
        if commands.len() < 2 || last.starts_with("exec ") {
            return;
        }
        self.report(
            "RG012",
            p,
            node.start,
            format!(
                "container '{}' runs its app from a shell script that does not `exec` it ('{last}'): SIGTERM stops at the shell",
                c.name
            ),
        );
    }

    /// RG004 and RG006 for one serving container.
    fn delay_before_sigterm(
        &mut self,
        w: &Workload<'a>,
        c: &Container<'a>,
        containers: &[Container<'a>],
        p: &Place<'_>,
    ) {
        let budget = self.config.propagation.as_secs_f64();
        let budget_secs = budget.ceil() as i64;
        match delay(c, containers) {
            Delay::None => {
                if let Some(shim) = c.shim.as_ref().filter(|s| s.sidecar && c.native_sidecar) {
                    let port = shim
                        .health_port
                        .map_or("its health port".into(), |p| p.to_string());
                    self.report(
                        "RG004",
                        p,
                        c.node.start,
                        format!(
                            "the shim in native sidecar '{}' is stopped only after the app: no container's preStop calls GET /prestop on {port}, so the app gets SIGTERM at once",
                            c.name
                        ),
                    );
                    return;
                }
                let edit = Self::add_pre_stop_sleep(self.source(&w.object), c, budget_secs);
                self.report_with(
                    "RG004",
                    p,
                    c.node.start,
                    format!(
                        "container '{}' gets SIGTERM while endpoints still point at it: no preStop delay and no rollguard shim (propagation budget {})",
                        c.name,
                        secs(budget)
                    ),
                    edit,
                );
            }
            Delay::Known {
                min,
                how,
                at,
                editable,
                ..
            } if min < budget => {
                let source = self.source(&w.object);
                let edit = editable.map(|n| match n.as_str() {
                    Some(_) => replace_string(source, n, &budget_secs.to_string()),
                    None => replace_scalar(source, n, budget_secs.to_string()),
                });
                self.report_with(
                    "RG004",
                    p,
                    at.start,
                    format!(
                        "container '{}': {how} delays SIGTERM by {}, less than the {} endpoints take to propagate",
                        c.name,
                        secs(min),
                        secs(budget)
                    ),
                    edit,
                );
            }
            Delay::Known { .. } | Delay::Unknown => {}
        }
        // RG006: readiness that fails on shutdown (the shim's /ready) must be seen before
        // the drain delay ends.
        let Some(probe) = c.probe("readinessProbe") else {
            return;
        };
        let Some(port) = probe.at(&["httpGet", "port"]) else {
            return;
        };
        let path = probe.at(&["httpGet", "path"]).and_then(Node::as_str);
        let number = c.port_number(port);
        let shim = containers.iter().find_map(|other| {
            other
                .shim
                .as_ref()
                .filter(|s| s.health_port.is_some() && s.health_port == number)
        });
        let (Some(shim), Some("/ready")) = (shim, path) else {
            return;
        };
        let period = probe
            .get("periodSeconds")
            .and_then(Node::as_i64)
            .unwrap_or(10);
        let threshold = probe
            .get("failureThreshold")
            .and_then(Node::as_i64)
            .unwrap_or(3);
        let detect = period.max(0) as f64 * threshold.max(0) as f64;
        let drain_delay = shim.drain_delay.0.as_secs_f64();
        if detect > drain_delay {
            let at = probe
                .get("periodSeconds")
                .or(probe.get("failureThreshold"))
                .map_or(probe.start, |n| n.start);
            self.report(
                "RG006",
                p,
                at,
                format!(
                    "container '{}': the shim's /ready turns unready on SIGTERM, but failureThreshold {threshold} x periodSeconds {period} = {} is longer than its drain delay {}",
                    c.name,
                    secs(detect),
                    secs(drain_delay)
                ),
            );
        }
    }

    fn add_pre_stop_sleep(source: &Source, c: &Container<'a>, seconds: i64) -> Option<Edit> {
        let sleep = Fragment::Map(vec![(
            "sleep",
            Fragment::Map(vec![("seconds", Fragment::Scalar(seconds.to_string()))]),
        )]);
        match c.node.get("lifecycle") {
            None => insert_entries(
                source,
                c.node,
                &[("lifecycle", Fragment::Map(vec![("preStop", sleep)]))],
            ),
            Some(lifecycle) if lifecycle.get("preStop").is_none() => {
                insert_entries(source, lifecycle, &[("preStop", sleep)])
            }
            Some(_) => None,
        }
    }

    /// RG005: the delay and the drain must fit in the grace period.
    fn grace_period(
        &mut self,
        w: &Workload<'a>,
        containers: &[Container<'a>],
        serving: &[bool],
        p: &Place<'_>,
    ) {
        let drain_budget = self.config.drain.as_secs_f64();
        let mut worst: Option<(f64, String, &'a Node)> = None;
        for (c, _) in containers.iter().zip(serving).filter(|(_, s)| **s) {
            if let Delay::Known {
                max,
                how,
                at,
                drain,
                ..
            } = delay(c, containers)
            {
                let (drain, what) = match drain {
                    Some(d) => (d, "the shim's drain and stop timeouts"),
                    None => (drain_budget, "the drain budget"),
                };
                let need = max + drain;
                if worst.as_ref().is_none_or(|(n, _, _)| need > *n) {
                    let why = format!("{how} ({}) plus {what} ({})", secs(max), secs(drain));
                    worst = Some((need, why, at));
                }
            }
        }
        let Some((need, why, delay_at)) = worst else {
            return;
        };
        let (grace, grace_node) = match w.grace_period() {
            Some((g, n)) => (g, Some(n)),
            None => (30, None),
        };
        // Written but not an integer (a null Helm rendered, a string): the API server
        // defaults or rejects it; the fix writes the value over it.
        let unreadable =
            grace_node.is_none() && w.pod.get("terminationGracePeriodSeconds").is_some();
        if need <= grace as f64 {
            return;
        }
        let fixed = need.ceil() as i64;
        let source = self.source(&w.object);
        let edit = match grace_node {
            Some(n) => Some(replace_scalar(source, n, fixed.to_string())),
            None if unreadable => w
                .pod
                .entry("terminationGracePeriodSeconds")
                .and_then(|(k, v)| replace_entry_line(source, k, v, &fixed.to_string())),
            None => insert_entries(
                source,
                w.pod,
                &[(
                    "terminationGracePeriodSeconds",
                    Fragment::Scalar(fixed.to_string()),
                )],
            ),
        };
        let written = match (grace_node, unreadable) {
            (Some(_), _) => "",
            (None, true) => " (the default: the value written is not an integer)",
            (None, false) => " (the default)",
        };
        self.report_with(
            "RG005",
            p,
            grace_node.map_or(delay_at.start, |n| n.start),
            format!(
                "{why} need {}, but terminationGracePeriodSeconds is {grace}{written}: the app is SIGKILLed with requests in flight",
                secs(need)
            ),
            edit,
        );
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

    /// RG007 and RG008.
    fn rollout(&mut self, w: &Workload<'a>, replicas: i64, p: &Place<'_>) {
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
        let parse = |n: Option<&Node>, default: u32| -> Option<IntOrPercent> {
            match n {
                None => Some(IntOrPercent::Percent(default)),
                // A null (`maxSurge:` left empty) gets the default, as in the API server.
                Some(n) if matches!(n.value, Value::Null) => Some(IntOrPercent::Percent(default)),
                Some(n) => n.scalar_text()?.parse().ok(),
            }
        };
        let (Some(max_surge), Some(max_unavailable)) =
            (parse(surge_node, 25), parse(unavailable_node, 25))
        else {
            return;
        };
        let update = RollingUpdate {
            max_surge,
            max_unavailable,
        };
        let count = u32::try_from(replicas.max(0)).unwrap_or(u32::MAX);
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
    fn pdb(&mut self, pdb: &Object<'a>, workloads: &[Workload<'a>]) {
        let Some(spec) = pdb.spec() else { return };
        let place = Place {
            object: *pdb,
            ignored: ignore_list(pdb.annotation("rollguard/ignore")),
            container: None,
        };
        let selector = spec.get("selector");
        let selected: Vec<(&Workload<'a>, i64)> = workloads
            .iter()
            .filter(|w| w.is_replicated() && w.object.same_namespace(pdb))
            .filter(|w| selector.is_some_and(|s| w.selected_by(s)))
            .map(|w| {
                let r = self
                    .hpa_min_replicas(w)
                    .or(w.replicas().map(|(r, _)| r))
                    .unwrap_or(1);
                (w, r)
            })
            .collect();
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
                let r = u32::try_from(replicas.max(0)).unwrap_or(u32::MAX);
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

    fn hpa_min_replicas(&self, w: &Workload<'_>) -> Option<i64> {
        self.objects
            .iter()
            .filter(|o| o.kind == "HorizontalPodAutoscaler" && o.same_namespace(&w.object))
            .find(|o| {
                let target = o.spec().and_then(|s| s.get("scaleTargetRef"));
                target.and_then(|t| t.get("kind")).and_then(Node::as_str) == Some(w.object.kind)
                    && target.and_then(|t| t.get("name")).and_then(Node::as_str)
                        == Some(w.object.name)
            })
            .map(|o| {
                o.spec()
                    .and_then(|s| s.get("minReplicas"))
                    .and_then(Node::as_i64)
                    .unwrap_or(1)
            })
    }

    fn has_pdb(&self, w: &Workload<'_>) -> bool {
        self.objects.iter().any(|o| {
            o.kind == "PodDisruptionBudget"
                && o.same_namespace(&w.object)
                && o.spec()
                    .and_then(|s| s.get("selector"))
                    .is_some_and(|s| w.selected_by(s))
        })
    }
}

/// The edit that sets `maxSurge: 1` and `maxUnavailable: 0` in `rolling`: existing
/// values replaced, missing keys inserted, as one edit.
fn safe_rolling_update(source: &Source, rolling: &Node) -> Option<Edit> {
    let mut edits = Vec::new();
    let mut missing = Vec::new();
    for (key, value) in [("maxSurge", "1"), ("maxUnavailable", "0")] {
        match rolling.get(key) {
            Some(node) => edits.push(replace_scalar(source, node, value)),
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

/// Rewrites a one-line `key: value` entry whose value is null or not a number as
/// `key: text`, keeping what precedes the key and any comment after the value.
fn replace_entry_line(source: &Source, key: &Node, value: &Node, text: &str) -> Option<Edit> {
    if matches!(value.value, Value::Map(_) | Value::Seq(_)) {
        return None;
    }
    let line_end = source.text[key.start..]
        .find('\n')
        .map_or(source.text.len(), |i| key.start + i);
    // A value that starts on a later line (a multi-line scalar) is left alone.
    if !matches!(value.value, Value::Null) && value.start > line_end {
        return None;
    }
    let line = &source.text[key.start..line_end];
    let kept = line.find(" #").unwrap_or(line.len());
    let end = key.start + line[..kept].trim_end().len();
    let name = key.as_str()?;
    Some(Edit {
        range: key.start..end,
        text: format!("{name}: {text}"),
    })
}

/// Which containers serve traffic: those that declare ports, and the one a selecting
/// Service's targetPort names (the first app container when none declares it).
fn serving_containers(containers: &[Container<'_>], services: &[&Object<'_>]) -> Vec<bool> {
    let mut serving: Vec<bool> = containers.iter().map(|c| !c.ports().is_empty()).collect();
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

/// The delay before SIGTERM reaches container `c`.
fn delay<'a>(c: &Container<'a>, containers: &[Container<'a>]) -> Delay<'a> {
    let known = |min: f64, max: f64, how: String, at: &'a Node| Delay::Known {
        min,
        max,
        how,
        at,
        editable: None,
        drain: None,
    };
    if let Some(shim) = &c.shim {
        let (lo, hi) = (
            shim.drain_delay.0.as_secs_f64(),
            shim.drain_delay.1.as_secs_f64(),
        );
        let drain = Some((shim.drain_timeout + shim.stop_timeout).as_secs_f64());
        if !shim.sidecar || !c.native_sidecar {
            return Delay::Known {
                min: lo,
                max: hi,
                how: "the shim's --drain-delay".into(),
                at: c.node,
                editable: None,
                drain,
            };
        }
        // A native sidecar drains when an app container's preStop calls its /prestop.
        let hooked = containers.iter().find_map(|other| {
            let hook = other.pre_stop()?.get("httpGet")?;
            let path = hook.get("path").and_then(Node::as_str)?;
            (path == "/prestop" && c.port_number(hook.get("port")?) == shim.health_port)
                .then_some(hook)
        });
        return match hooked {
            Some(hook) => Delay::Known {
                min: lo,
                max: hi,
                how: "the shim's /prestop hook".into(),
                at: hook,
                editable: None,
                drain,
            },
            None => Delay::None,
        };
    }
    let Some(pre_stop) = c.pre_stop() else {
        return Delay::None;
    };
    if let Some(seconds) = pre_stop.at(&["sleep", "seconds"]) {
        let s = seconds.as_i64().unwrap_or(0) as f64;
        return Delay::Known {
            min: s,
            max: s,
            how: "preStop sleep".into(),
            at: seconds,
            editable: Some(seconds),
            drain: None,
        };
    }
    if let Some(command) = pre_stop.at(&["exec", "command"]) {
        let argv: Vec<String> = command
            .items()
            .iter()
            .filter_map(Node::scalar_text)
            .collect();
        let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_owned();
        match argv.first().map(|a| base(a)).as_deref() {
            Some("sleep") if argv.len() == 2 => {
                if let Some(s) = sleep_seconds(&argv[1]) {
                    let operand = &command.items()[1];
                    let plain = operand.as_i64().is_some() || argv[1].parse::<u64>().is_ok();
                    return Delay::Known {
                        min: s,
                        max: s,
                        how: "preStop `sleep`".into(),
                        at: operand,
                        editable: plain.then_some(operand),
                        drain: None,
                    };
                }
            }
            Some("rollguard") if argv.get(1).map(String::as_str) == Some("sleep") => {
                let d = argv.get(2).and_then(|a| {
                    rollguard_core::duration::parse_duration(a)
                        .ok()
                        .map(|d| d.as_secs_f64())
                        .or_else(|| sleep_seconds(a))
                });
                if let Some(s) = d {
                    return known(s, s, "preStop `rollguard sleep`".into(), command);
                }
            }
            _ => {}
        }
        if let Some(script) = shell_argv_script(&argv) {
            let total = split_commands(&script)
                .iter()
                .filter_map(|cmd| {
                    let mut words = cmd.split_whitespace();
                    (words.next().map(base).as_deref() == Some("sleep"))
                        .then(|| words.next().and_then(sleep_seconds))
                        .flatten()
                })
                .sum::<f64>();
            if total > 0.0 {
                return known(total, total, "preStop shell `sleep`".into(), command);
            }
        }
        return Delay::Unknown;
    }
    if let Some(hook) = pre_stop.get("httpGet") {
        let port = hook.get("port");
        let path = hook.get("path").and_then(Node::as_str);
        let shim = containers.iter().find_map(|other| {
            let shim = other.shim.as_ref()?;
            let n = port.and_then(|p| other.port_number(p))?;
            (shim.health_port == Some(n) && path == Some("/prestop")).then_some(shim)
        });
        if let Some(shim) = shim {
            return Delay::Known {
                min: shim.drain_delay.0.as_secs_f64(),
                max: shim.drain_delay.1.as_secs_f64(),
                how: "the shim's /prestop hook".into(),
                at: hook,
                editable: None,
                drain: Some((shim.drain_timeout + shim.stop_timeout).as_secs_f64()),
            };
        }
    }
    Delay::Unknown
}

/// The script of a container run as `sh -c SCRIPT`, with the node holding it.
fn shell_script<'a>(c: &Container<'a>) -> Option<(String, &'a Node)> {
    let script = shell_argv_script(&c.argv)?;
    let node = c
        .node
        .get("command")
        .filter(|n| !n.items().is_empty())
        .or(c.node.get("args"))?;
    Some((script, node))
}

fn shell_argv_script(argv: &[String]) -> Option<String> {
    let shell = argv.first()?.rsplit('/').next()?;
    if !matches!(shell, "sh" | "bash" | "ash" | "dash" | "zsh" | "ksh") {
        return None;
    }
    let flag = argv[1..]
        .iter()
        .position(|a| a.starts_with('-') && !a.starts_with("--") && a.contains('c'))?;
    argv.get(flag + 2).cloned()
}

/// The simple commands of a shell script, split at `;`, `&&`, `||`, `|`, `&` and newlines;
/// comments and blank parts left out.
fn split_commands(script: &str) -> Vec<String> {
    script
        .split(['\n', ';', '|', '&'])
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.starts_with('#'))
        .map(str::to_owned)
        .collect()
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
