//! The rules: each reads the model and reports findings, with an edit when the fix is safe.

use std::collections::{BTreeSet, HashMap};

use rollguard_core::rollout::{IntOrPercent, RollingUpdate, RollingUpdateError};

use crate::catalogue::{Rule, Severity, rule};
use crate::config::Config;
use crate::fix::{Edit, Fragment, insert_entries, replace_string, set_entry};
use crate::model::{Container, Object, Shim, Workload, sleep_seconds};
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
        if w.is_replicated() {
            for &i in &pdbs {
                budgets[i].push((w, related.replicas(w)));
            }
        }
        cx.workload(w, !pdbs.is_empty());
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

/// The objects workloads are related to, indexed so that relating every workload costs
/// about one lookup per pod label rather than a scan of every object.
struct Related<'a> {
    /// Services, by the first label of their selector (a Service selects a pod only if
    /// the pod has every label of it, so the first one in particular).
    services: HashMap<(&'a str, String), Vec<Object<'a>>>,
    /// Every PodDisruptionBudget.
    pdbs: Vec<Object<'a>>,
    /// Indexes into `pdbs`, by the first `matchLabels` entry of their selector.
    pdbs_by_label: HashMap<(&'a str, String), Vec<usize>>,
    /// Indexes into `pdbs` of those without `matchLabels`, checked against every workload.
    pdbs_unindexed: Vec<usize>,
    /// HorizontalPodAutoscalers, by the kind and name of their target.
    hpas: HashMap<(&'a str, &'a str), Vec<Object<'a>>>,
}

impl<'a> Related<'a> {
    fn new(objects: &[Object<'a>]) -> Self {
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
    fn services_selecting(&self, w: &Workload<'a>) -> Vec<&Object<'a>> {
        Self::label_keys(w)
            .filter_map(|key| self.services.get(&key))
            .flatten()
            .filter(|s| w.selected_by_service(s))
            .collect()
    }

    /// Indexes into `pdbs` of the budgets that select the workload's pods.
    fn pdbs_selecting(&self, w: &Workload<'a>) -> Vec<usize> {
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
    fn hpa_min_replicas(&self, w: &Workload<'_>) -> Option<i64> {
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
    fn replicas(&self, w: &Workload<'_>) -> i64 {
        self.hpa_min_replicas(w)
            .or(w.replicas().map(|(r, _)| r))
            .unwrap_or(1)
    }
}

/// Where a finding is and what it is about.
struct Place<'n> {
    object: Object<'n>,
    ignored: BTreeSet<String>,
    container: Option<String>,
}

/// Where a preStop delay is written, for `--fix` to raise it.
#[derive(Clone, Copy)]
enum Editable<'a> {
    /// `sleep.seconds`: the `sleep` mapping (the value is set as a plain integer).
    Seconds(&'a Node),
    /// The operand of an exec `sleep N` (a string: its quotes are kept).
    Operand(&'a Node),
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
        editable: Option<Editable<'a>>,
        /// The drain time after the delay, when the shim sets it.
        drain: Option<f64>,
    },
    /// A preStop hook whose length can't be known.
    Unknown,
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

    fn workload(&mut self, w: &Workload<'a>, has_pdb: bool) {
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
        let replicas = self.related.replicas(w);

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
        self.grace_period(w, &containers, &serving, &place);
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
        let execs = |i: usize| {
            commands
                .get(i)
                .is_some_and(|(cmd, _)| cmd.split_whitespace().next() == Some("exec"))
        };
        let n = commands.len();
        let Some((last, joined)) = commands.last() else {
            return;
        };
        // `exec ./server || true`: what follows an `exec` runs only if it failed.
        if n < 2 || execs(n - 1) || (*joined && execs(n - 2)) {
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
                let value = budget_secs.to_string();
                let edit = editable.and_then(|e| match e {
                    Editable::Seconds(sleep) => set_entry(source, sleep, "seconds", &value),
                    Editable::Operand(n) => Some(replace_string(source, n, &value)),
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
        place: &dyn Fn(Option<&Container<'_>>) -> Place<'a>,
    ) {
        let drain_budget = self.config.drain.as_secs_f64();
        let mut worst: Option<(f64, String, &'a Node, &Container<'a>)> = None;
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
                if worst.as_ref().is_none_or(|(n, ..)| need > *n) {
                    let why = format!("{how} ({}) plus {what} ({})", secs(max), secs(drain));
                    worst = Some((need, why, at, c));
                }
            }
        }
        let Some((need, why, delay_at, container)) = worst else {
            return;
        };
        let p = &place(Some(container));
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
            Some(_) => set_entry(
                source,
                w.pod,
                "terminationGracePeriodSeconds",
                &fixed.to_string(),
            ),
            None if unreadable => set_entry(
                source,
                w.pod,
                "terminationGracePeriodSeconds",
                &fixed.to_string(),
            ),
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
    fn pdb(&mut self, pdb: &Object<'a>, selected: &[(&Workload<'a>, i64)]) {
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
        if !shim.sidecar || !c.native_sidecar {
            return shim_delay(shim, "the shim's --drain-delay", c.node);
        }
        // A native sidecar drains when an app container's preStop calls its /prestop.
        let hooked = containers.iter().find_map(|other| {
            let hook = other.pre_stop()?.get("httpGet")?;
            let path = hook.get("path").and_then(Node::as_str)?;
            (path == "/prestop" && c.port_number(hook.get("port")?) == shim.health_port)
                .then_some(hook)
        });
        return match hooked {
            Some(hook) => shim_delay(shim, "the shim's /prestop hook", hook),
            None => Delay::None,
        };
    }
    let Some(pre_stop) = c.pre_stop() else {
        return Delay::None;
    };
    if let Some(sleep) = pre_stop.get("sleep") {
        let seconds = sleep.get("seconds");
        let s = seconds
            .and_then(Node::scalar_text)
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(0.0);
        return Delay::Known {
            min: s,
            max: s,
            how: "preStop sleep".into(),
            at: seconds.unwrap_or(sleep),
            editable: Some(Editable::Seconds(sleep)),
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
            // Only when every item is a scalar do the argv and the items line up.
            Some("sleep") if argv.len() == 2 && command.items().len() == 2 => {
                if let Some(s) = sleep_seconds(&argv[1]) {
                    let operand = &command.items()[1];
                    let plain = argv[1].parse::<u64>().is_ok();
                    return Delay::Known {
                        min: s,
                        max: s,
                        how: "preStop `sleep`".into(),
                        at: operand,
                        editable: plain.then_some(Editable::Operand(operand)),
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
                .filter_map(|(cmd, _)| {
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
            return shim_delay(shim, "the shim's /prestop hook", hook);
        }
    }
    Delay::Unknown
}

/// The delay a shim gives: its drain delay, then its drain and stop timeouts.
fn shim_delay<'a>(shim: &Shim, how: &str, at: &'a Node) -> Delay<'a> {
    Delay::Known {
        min: shim.drain_delay.0.as_secs_f64(),
        max: shim.drain_delay.1.as_secs_f64(),
        how: how.into(),
        at,
        editable: None,
        drain: Some(shim.drain_timeout.as_secs_f64() + shim.stop_timeout.as_secs_f64()),
    }
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

/// The simple commands of a shell script, split at `;`, `&&`, `||`, `|`, `&` and newlines
/// outside quotes (redirections such as `2>&1`, `&>` and `>|` are not separators), each
/// with whether `&&` or `||` joins it to the one before. Comments and blank parts are left
/// out.
fn split_commands(script: &str) -> Vec<(String, bool)> {
    let mut commands = Vec::new();
    let mut current = String::new();
    let mut joined = false;
    let mut quote = None;
    let mut chars = script.chars().peekable();
    let mut previous = ' ';
    let mut push = |current: &mut String, joined: bool| {
        let cmd = current.trim();
        if !cmd.is_empty() && !cmd.starts_with('#') {
            commands.push((cmd.to_owned(), joined));
        }
        current.clear();
    };
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '&' | '|') if previous == '>' || chars.peek() == Some(&'>') => {}
            (None, '&' | '|') if chars.peek() == Some(&c) => {
                chars.next();
                push(&mut current, joined);
                joined = true;
                previous = c;
                continue;
            }
            (None, '\n' | ';' | '&' | '|') => {
                push(&mut current, joined);
                joined = false;
                previous = c;
                continue;
            }
            _ => {}
        }
        current.push(c);
        previous = c;
    }
    push(&mut current, joined);
    commands
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
