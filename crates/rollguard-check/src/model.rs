//! The Kubernetes objects the rules look at, read from YAML nodes: workloads and their
//! containers, Services, PodDisruptionBudgets and HorizontalPodAutoscalers.
//!
//! The model borrows the node tree, so that every field it reads still knows where it is
//! written.

use std::time::Duration;

use rollguard_core::duration::parse_duration;

use crate::yaml::Node;

/// Kinds whose pods the rules check.
pub const WORKLOAD_KINDS: [&str; 5] = [
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Pod",
];

/// A Kubernetes object: one YAML document, or one item of a `kind: List`.
#[derive(Debug, Clone, Copy)]
pub struct Object<'a> {
    /// Index of the source it was read from.
    pub source: usize,
    /// `kind`.
    pub kind: &'a str,
    /// `metadata.name`, else `metadata.generateName`, else empty.
    pub name: &'a str,
    /// `metadata.namespace`, when written.
    pub namespace: Option<&'a str>,
    /// The whole object.
    pub root: &'a Node,
}

impl<'a> Object<'a> {
    /// Reads an object from a document; `None` when it has no `kind`.
    pub fn new(source: usize, root: &'a Node) -> Option<Self> {
        let kind = root.get("kind")?.as_str()?;
        let metadata = root.get("metadata");
        Some(Self {
            source,
            kind,
            name: metadata
                .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
                .and_then(Node::as_str)
                .unwrap_or(""),
            namespace: metadata
                .and_then(|m| m.get("namespace"))
                .and_then(Node::as_str),
            root,
        })
    }

    /// `Kind/namespace/name`, the namespace being `default` when none is written.
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{}",
            self.kind,
            self.namespace.unwrap_or("default"),
            self.name
        )
    }

    /// Whether `other` may be in the same namespace: an object that names none goes
    /// wherever it is applied (`kubectl apply -n NS`, `helm install -n NS`), so it matches
    /// any.
    pub fn same_namespace(&self, other: &Object<'_>) -> bool {
        match (self.namespace, other.namespace) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }

    /// Where findings about the object as a whole point: its `metadata.name`, or the
    /// document.
    pub fn anchor(&self) -> usize {
        self.root
            .at(&["metadata", "name"])
            .map_or(self.root.start, |n| n.start)
    }

    /// The value under `key` in `metadata.annotations`.
    pub fn annotation(&self, key: &str) -> Option<&'a str> {
        self.root
            .at(&["metadata", "annotations", key])
            .and_then(Node::as_str)
    }

    /// `spec`, when present.
    pub fn spec(&self) -> Option<&'a Node> {
        self.root.get("spec")
    }
}

/// A workload: an object that runs pods from a pod spec.
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    /// The object.
    pub object: Object<'a>,
    /// The pod template (`spec.template`), absent for a bare Pod.
    pub template: Option<&'a Node>,
    /// The pod spec (`spec.template.spec`, or a Pod's `spec`).
    pub pod: &'a Node,
}

impl<'a> Workload<'a> {
    /// Reads a workload; `None` when the object is of another kind or has no pod spec.
    pub fn new(object: Object<'a>) -> Option<Self> {
        if !WORKLOAD_KINDS.contains(&object.kind) {
            return None;
        }
        if object.kind == "Pod" {
            let pod = object.spec()?;
            return Some(Self {
                object,
                template: None,
                pod,
            });
        }
        let template = object.spec()?.get("template")?;
        Some(Self {
            object,
            template: Some(template),
            pod: template.get("spec")?,
        })
    }

    /// The pods' labels.
    pub fn labels(&self) -> &'a [(Node, Node)] {
        let metadata = match self.template {
            Some(t) => t.get("metadata"),
            None => self.object.root.get("metadata"),
        };
        metadata
            .and_then(|m| m.get("labels"))
            .map_or(&[], Node::entries)
    }

    /// A pod-template annotation (or a Pod's own).
    pub fn pod_annotation(&self, key: &str) -> Option<&'a str> {
        let metadata = match self.template {
            Some(t) => t.get("metadata"),
            None => self.object.root.get("metadata"),
        };
        metadata
            .and_then(|m| m.at(&["annotations", key]))
            .and_then(Node::as_str)
    }

    /// Whether the workload keeps a replica count and rolls (not a DaemonSet or a Pod).
    pub fn is_replicated(&self) -> bool {
        matches!(
            self.object.kind,
            "Deployment" | "StatefulSet" | "ReplicaSet"
        )
    }

    /// `spec.replicas` as written, with its node.
    pub fn replicas(&self) -> Option<(i64, &'a Node)> {
        let node = self.object.spec()?.get("replicas")?;
        Some((node.as_i64()?, node))
    }

    /// The app containers, then the native sidecars (init containers with
    /// `restartPolicy: Always`).
    pub fn containers(&self) -> Vec<Container<'a>> {
        let app = self
            .pod
            .get("containers")
            .map_or(&[][..], Node::items)
            .iter()
            .map(|n| Container::new(n, false));
        let sidecars = self
            .pod
            .get("initContainers")
            .map_or(&[][..], Node::items)
            .iter()
            .filter(|n| n.get("restartPolicy").and_then(Node::as_str) == Some("Always"))
            .map(|n| Container::new(n, true));
        app.chain(sidecars).collect()
    }

    /// `terminationGracePeriodSeconds`, with its node; Kubernetes' default is 30.
    pub fn grace_period(&self) -> Option<(i64, &'a Node)> {
        let node = self.pod.get("terminationGracePeriodSeconds")?;
        Some((node.as_i64()?, node))
    }

    /// The value of the pod label `key`, as text.
    fn label(&self, key: &str) -> Option<String> {
        self.labels()
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .and_then(|(_, v)| v.scalar_text())
    }

    /// Whether the pods carry every label of `wanted` (a `matchLabels` or a Service's
    /// `selector`), values compared as text.
    fn has_labels(&self, wanted: &[(Node, Node)]) -> bool {
        wanted.iter().all(|(k, v)| {
            k.as_str()
                .and_then(|k| self.label(k))
                .is_some_and(|have| Some(have) == v.scalar_text())
        })
    }

    /// Whether a label selector (`matchLabels` and `matchExpressions`) selects these pods.
    pub fn selected_by(&self, selector: &Node) -> bool {
        let match_labels = selector.get("matchLabels").map_or(&[][..], Node::entries);
        let expressions = selector
            .get("matchExpressions")
            .map_or(&[][..], Node::items);
        if match_labels.is_empty() && expressions.is_empty() {
            // An empty selector selects every pod of the namespace (PDB semantics).
            return true;
        }
        self.has_labels(match_labels)
            && expressions.iter().all(|e| {
                let Some(key) = e.get("key").and_then(Node::as_str) else {
                    return false;
                };
                let values: Vec<String> = e
                    .get("values")
                    .map_or(&[][..], Node::items)
                    .iter()
                    .filter_map(Node::scalar_text)
                    .collect();
                let value = self.label(key);
                match e.get("operator").and_then(Node::as_str) {
                    Some("In") => value.is_some_and(|v| values.contains(&v)),
                    Some("NotIn") => value.is_none_or(|v| !values.contains(&v)),
                    Some("Exists") => value.is_some(),
                    Some("DoesNotExist") => value.is_none(),
                    _ => false,
                }
            })
    }

    /// Whether a Service's `spec.selector` (labels only) selects these pods.
    pub fn selected_by_service(&self, service: &Object<'_>) -> bool {
        if !self.object.same_namespace(service) {
            return false;
        }
        let Some(selector) = service.spec().and_then(|s| s.get("selector")) else {
            return false;
        };
        !selector.entries().is_empty() && self.has_labels(selector.entries())
    }
}

/// A container of a pod spec.
#[derive(Debug, Clone)]
pub struct Container<'a> {
    /// Its mapping.
    pub node: &'a Node,
    /// `name`.
    pub name: &'a str,
    /// Whether it is a native sidecar.
    pub native_sidecar: bool,
    /// `command` followed by `args`.
    pub argv: Vec<String>,
    /// `rollguard shim`, when the container runs it.
    pub shim: Option<Shim>,
}

/// A port a container declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port<'a> {
    /// `name`.
    pub name: Option<&'a str>,
    /// `containerPort`.
    pub number: Option<i64>,
}

impl<'a> Container<'a> {
    fn new(node: &'a Node, native_sidecar: bool) -> Self {
        let list = |key: &str| {
            node.get(key)
                .map_or(&[][..], Node::items)
                .iter()
                .filter_map(Node::scalar_text)
                .collect::<Vec<_>>()
        };
        let mut argv = list("command");
        argv.extend(list("args"));
        let shim = Shim::from_argv(&argv);
        Self {
            node,
            name: node.get("name").and_then(Node::as_str).unwrap_or(""),
            native_sidecar,
            argv,
            shim,
        }
    }

    /// The declared ports.
    pub fn ports(&self) -> Vec<Port<'a>> {
        self.node
            .get("ports")
            .map_or(&[][..], Node::items)
            .iter()
            .map(|p| Port {
                name: p.get("name").and_then(Node::as_str),
                number: p.get("containerPort").and_then(Node::as_i64),
            })
            .collect()
    }

    /// Whether the container declares `port` (a name or a number as a Service's
    /// `targetPort` or a probe's `port` is written).
    pub fn declares(&self, port: &Node) -> bool {
        let ports = self.ports();
        match (port.as_i64(), port.as_str()) {
            (Some(n), _) => ports.iter().any(|p| p.number == Some(n)),
            (None, Some(name)) => ports.iter().any(|p| p.name == Some(name)),
            _ => false,
        }
    }

    /// The port number a probe's `port` resolves to, if it can be known.
    pub fn port_number(&self, port: &Node) -> Option<i64> {
        port.as_i64().or_else(|| {
            let name = port.as_str()?;
            self.ports()
                .iter()
                .find(|p| p.name == Some(name))
                .and_then(|p| p.number)
        })
    }

    /// The probe of `kind` (`readinessProbe`, `livenessProbe`, `startupProbe`).
    pub fn probe(&self, kind: &str) -> Option<&'a Node> {
        self.node.get(kind)
    }

    /// `lifecycle.preStop`.
    pub fn pre_stop(&self) -> Option<&'a Node> {
        self.node.at(&["lifecycle", "preStop"])
    }
}

/// `rollguard shim` as a container runs it: the flags that decide its timing.
#[derive(Debug, Clone, PartialEq)]
pub struct Shim {
    /// `--drain-delay`: the fixed delay, or `MIN..MAX` (default 5 s).
    pub drain_delay: (Duration, Duration),
    /// `--drain-timeout` (default 15 s).
    pub drain_timeout: Duration,
    /// `--stop-timeout` (default 5 s).
    pub stop_timeout: Duration,
    /// The port of `--health-listen`.
    pub health_port: Option<i64>,
    /// Whether the shim runs without a command: the sidecar form.
    pub sidecar: bool,
}

impl Shim {
    /// Reads the shim's flags from a container's argv, when it runs `rollguard shim`.
    /// Unparsable values keep the default: the shim itself rejects them at start.
    pub fn from_argv(argv: &[String]) -> Option<Self> {
        let at = argv
            .windows(2)
            .position(|w| w[1] == "shim" && program_name(&w[0]) == "rollguard")?;
        let mut shim = Shim {
            drain_delay: (Duration::from_secs(5), Duration::from_secs(5)),
            drain_timeout: Duration::from_secs(15),
            stop_timeout: Duration::from_secs(5),
            health_port: None,
            sidecar: true,
        };
        let mut args = argv[at + 2..].iter();
        while let Some(arg) = args.next() {
            if arg == "--" {
                shim.sidecar = args.next().is_none();
                break;
            }
            // The command may also follow the flags without `--`.
            if !arg.starts_with('-') {
                shim.sidecar = false;
                break;
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) => (f, Some(v.to_owned())),
                None => (arg.as_str(), None),
            };
            let takes_value = matches!(
                flag,
                "--drain-delay"
                    | "--drain-timeout"
                    | "--stop-timeout"
                    | "--health-listen"
                    | "--listen"
                    | "--upstream"
                    | "--upstream-ready"
                    | "--quiet"
                    | "--drain-idle"
                    | "--stop-signal"
                    | "--grace-period"
                    | "--signal-target"
                    | "--rewrite"
                    | "--threads"
            );
            let value = if takes_value {
                inline.or_else(|| args.next().cloned())
            } else {
                None
            };
            let Some(value) = value else { continue };
            let duration = |v: &str| parse_duration(v).ok();
            match flag {
                "--drain-delay" => {
                    let range = match value.split_once("..") {
                        Some((lo, hi)) => duration(lo).zip(duration(hi)),
                        None => duration(&value).map(|d| (d, d)),
                    };
                    if let Some(range) = range {
                        shim.drain_delay = range;
                    }
                }
                "--drain-timeout" => {
                    shim.drain_timeout = duration(&value).unwrap_or(shim.drain_timeout);
                }
                "--stop-timeout" => {
                    shim.stop_timeout = duration(&value).unwrap_or(shim.stop_timeout);
                }
                "--health-listen" => {
                    shim.health_port = value.rsplit(':').next().and_then(|p| p.parse().ok());
                }
                _ => {}
            }
        }
        Some(shim)
    }
}

/// The program a command word runs, without its directory: `/bin/sleep` is `sleep`.
pub fn program_name(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

/// Seconds from a `sleep` operand as coreutils and busybox read it: `10`, `2.5`, `5s`,
/// `1m`, `1h`, `1d`.
pub fn sleep_seconds(operand: &str) -> Option<f64> {
    let (number, unit) = match operand.char_indices().last()? {
        (i, c @ ('s' | 'm' | 'h' | 'd')) => (&operand[..i], c),
        _ => (operand, 's'),
    };
    let value: f64 = number.parse().ok()?;
    let scale = match unit {
        'm' => 60.0,
        'h' => 3600.0,
        'd' => 86400.0,
        _ => 1.0,
    };
    (value.is_finite() && value >= 0.0).then_some(value * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn shim_flags_are_read_from_argv() {
        let shim = Shim::from_argv(&argv(&[
            "/rollguard",
            "shim",
            "--listen",
            "8080",
            "--health-listen=0.0.0.0:8082",
            "--drain-delay",
            "2s..20s",
            "--stop-timeout",
            "10s",
            "--",
            "/app",
        ]))
        .expect("a shim");
        assert_eq!(
            shim.drain_delay,
            (Duration::from_secs(2), Duration::from_secs(20))
        );
        assert_eq!(shim.stop_timeout, Duration::from_secs(10));
        assert_eq!(shim.drain_timeout, Duration::from_secs(15));
        assert_eq!(shim.health_port, Some(8082));
        assert!(!shim.sidecar);
        let sidecar = Shim::from_argv(&argv(&["rollguard", "shim", "--listen", "8080"]));
        assert!(sidecar.is_some_and(|s| s.sidecar));
        assert!(Shim::from_argv(&argv(&["/app", "shim"])).is_none());
    }

    #[test]
    fn sleep_operands() {
        assert_eq!(sleep_seconds("15"), Some(15.0));
        assert_eq!(sleep_seconds("2.5"), Some(2.5));
        assert_eq!(sleep_seconds("1m"), Some(60.0));
        assert_eq!(sleep_seconds("5s"), Some(5.0));
        assert_eq!(sleep_seconds("x"), None);
        assert_eq!(sleep_seconds("-1"), None);
    }
}
