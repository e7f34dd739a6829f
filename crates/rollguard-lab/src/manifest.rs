//! Reads the parts of a Kubernetes Deployment manifest that the lab can emulate.
//!
//! `rollguard lab --manifest deploy.yaml` takes replicas, the update strategy,
//! `minReadySeconds`, the container's probes, its preStop hook and
//! `terminationGracePeriodSeconds` from a real manifest. Everything else the lab cannot honor
//! (resources, volumes, env, other containers, ...) is listed in
//! [`ManifestDeployment::ignored`] with its line, never silently dropped.
//!
//! The YAML is read with `saphyr`'s marked nodes, so every error names the file, the line and
//! the field: `deploy.yaml:14: spec.strategy.rollingUpdate.maxSurge: invalid value 'abc': ...`.
//! Defaults are Kubernetes' own, including its defaulting of a zero probe period, timeout or
//! threshold to the default value.
//!
//! ```
//! use std::path::Path;
//! use rollguard_lab::manifest::parse_deployment;
//!
//! let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n\
//!             spec:\n  template:\n    spec:\n      containers:\n      - name: app\n";
//! let deployment = parse_deployment(yaml, Path::new("deploy.yaml")).unwrap();
//! assert_eq!((deployment.name.as_str(), deployment.replicas), ("web", 1));
//! ```

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rollguard_core::probe::{PortRef, ProbeAction, ProbeKind, ProbeSpec, Scheme};
use rollguard_core::rollout::{IntOrPercent, RollingUpdate, RollingUpdateError};
use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

use crate::pod::{PreStop, Termination};
use crate::prober::Probes;

/// The Deployment strategy as written in a manifest (`spec.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestStrategy {
    /// `type: RollingUpdate` (the default), with its validated `rollingUpdate` parameters.
    RollingUpdate(RollingUpdate),
    /// `type: Recreate`.
    Recreate,
}

impl Default for ManifestStrategy {
    /// Kubernetes' default: a rolling update with 25% surge and 25% unavailable.
    fn default() -> Self {
        Self::RollingUpdate(RollingUpdate::default())
    }
}

/// What the lab takes from a Deployment manifest.
#[derive(Debug, Clone)]
pub struct ManifestDeployment {
    /// `metadata.name`.
    pub name: String,
    /// `spec.replicas` (Kubernetes' default: 1).
    pub replicas: u32,
    /// `spec.strategy` (default: rolling update, 25%/25%).
    pub strategy: ManifestStrategy,
    /// `spec.minReadySeconds` (default 0).
    pub min_ready: Duration,
    /// Readiness, liveness and startup probes of the chosen container.
    pub probes: Probes,
    /// The chosen container's preStop hook and the pod's `terminationGracePeriodSeconds`
    /// (default 30 s).
    pub termination: Termination,
    /// The first `containerPort` of the chosen container.
    pub container_port: Option<u16>,
    /// Fields the lab cannot honor, as `path (line N)`, e.g.
    /// `spec.template.spec.containers[0].resources (line 23)`.
    pub ignored: Vec<String>,
}

/// Why a manifest could not be used. Displays on one line as `FILE:LINE: FIELD: MESSAGE`
/// (the field is left out when the error is not about one, e.g. a YAML syntax error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The manifest file, as given.
    pub file: PathBuf,
    /// 1-based line of the offending node.
    pub line: usize,
    /// 1-based column of the offending node.
    pub column: usize,
    /// The field, as a JSON-path-like string (`spec.template.spec.containers[0].ports`);
    /// empty when the error is about the whole document.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ManifestError {}

/// Reads the first `kind: Deployment` document of `text` (multi-document YAML is fine) and
/// takes the probes and preStop hook of its first container. `file` only names the source
/// in errors and is not read.
pub fn parse_deployment(text: &str, file: &Path) -> Result<ManifestDeployment, ManifestError> {
    parse_deployment_container(text, file, None)
}

/// Like [`parse_deployment`], but takes probes, preStop and port from the container named
/// `container` (the first one when `None`); every other container is listed as ignored.
pub fn parse_deployment_container(
    text: &str,
    file: &Path,
    container: Option<&str>,
) -> Result<ManifestDeployment, ManifestError> {
    let mut cx = Cx {
        file,
        ignored: Vec::new(),
    };
    // The parser should never panic; if a malformed input finds a bug in it, report the
    // input as invalid rather than taking the lab down.
    let loaded = catch_unwind(AssertUnwindSafe(|| MarkedYaml::load_from_str(text)));
    let docs = match loaded {
        Ok(Ok(docs)) => docs,
        Ok(Err(e)) => {
            let m = e.marker();
            return Err(ManifestError {
                file: file.to_owned(),
                line: m.line().max(1),
                column: m.col() + 1,
                field: String::new(),
                message: format!("invalid YAML: {}", e.info()),
            });
        }
        Err(_) => {
            return Err(ManifestError {
                file: file.to_owned(),
                line: 1,
                column: 1,
                field: String::new(),
                message: "invalid YAML: the parser could not read this file".to_owned(),
            });
        }
    };
    let root = docs
        .iter()
        .map(Node::root)
        .find(|doc| {
            doc.field_opt("kind")
                .and_then(|k| k.scalar_str().map(|s| s == "Deployment"))
                .unwrap_or(false)
        })
        .ok_or_else(|| ManifestError {
            file: file.to_owned(),
            line: 1,
            column: 1,
            field: String::new(),
            message: "no document with `kind: Deployment` (apiVersion apps/v1) found".to_owned(),
        })?;
    cx.deployment(&root, container)
}

/// The parse context: where errors point and what was ignored so far.
struct Cx<'f> {
    file: &'f Path,
    ignored: Vec<String>,
}

/// A node with the path that led to it and the position to report for it (the key's
/// position for a mapping value, so an error points at the field's line).
#[derive(Clone)]
struct Node<'a, 'i> {
    yaml: &'a MarkedYaml<'i>,
    path: String,
    line: usize,
    column: usize,
}

impl<'a, 'i> Node<'a, 'i> {
    fn root(yaml: &'a MarkedYaml<'i>) -> Self {
        Self {
            yaml,
            path: String::new(),
            line: yaml.span.start.line().max(1),
            column: yaml.span.start.col() + 1,
        }
    }

    /// The node's data, looking through tags.
    fn data(&self) -> &'a YamlData<'i, MarkedYaml<'i>> {
        let mut yaml = self.yaml;
        while let YamlData::Tagged(_, inner) = &yaml.data {
            yaml = inner;
        }
        &yaml.data
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The mapping's entries with string keys, in order; null values count as absent, as
    /// the API server treats them. `None` when the node is not a mapping.
    fn entries(&self) -> Option<Vec<(String, Node<'a, 'i>)>> {
        let YamlData::Mapping(map) = self.data() else {
            return None;
        };
        let entries = map
            .iter()
            .filter_map(|(key, value)| {
                let name = Node::root(key).scalar_str()?.to_owned();
                if matches!(value.data, YamlData::Value(Scalar::Null)) {
                    return None;
                }
                let node = Node {
                    yaml: value,
                    path: self.child_path(&name),
                    line: key.span.start.line().max(1),
                    column: key.span.start.col() + 1,
                };
                Some((name, node))
            })
            .collect();
        Some(entries)
    }

    /// A field of a mapping, without type errors (for document detection).
    fn field_opt(&self, key: &str) -> Option<Node<'a, 'i>> {
        self.entries()?
            .into_iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }

    /// The scalar's text if it is a string.
    fn scalar_str(&self) -> Option<&'a str> {
        match self.data() {
            YamlData::Value(Scalar::String(s)) => Some(s.as_ref()),
            YamlData::Representation(s, _, _) => Some(s.as_ref()),
            _ => None,
        }
    }

    /// What the node is, for "expected X, found Y" messages.
    fn describe(&self) -> String {
        match self.data() {
            YamlData::Value(Scalar::Null) => "null".to_owned(),
            YamlData::Value(Scalar::Boolean(b)) => format!("'{b}'"),
            YamlData::Value(Scalar::Integer(i)) => format!("'{i}'"),
            YamlData::Value(Scalar::FloatingPoint(f)) => format!("'{f}'"),
            YamlData::Value(Scalar::String(s)) => format!("'{s}'"),
            YamlData::Representation(s, _, _) => format!("'{s}'"),
            YamlData::Sequence(_) => "a list".to_owned(),
            YamlData::Mapping(_) => "a mapping".to_owned(),
            _ => "an invalid value".to_owned(),
        }
    }
}

impl Cx<'_> {
    fn error(&self, node: &Node<'_, '_>, message: impl Into<String>) -> ManifestError {
        ManifestError {
            file: self.file.to_owned(),
            line: node.line,
            column: node.column,
            field: node.path.clone(),
            message: message.into(),
        }
    }

    fn ignore(&mut self, node: &Node<'_, '_>) {
        self.ignored
            .push(format!("{} (line {})", node.path, node.line));
    }

    fn mapping<'a, 'i>(
        &self,
        node: &Node<'a, 'i>,
    ) -> Result<Vec<(String, Node<'a, 'i>)>, ManifestError> {
        node.entries().ok_or_else(|| {
            self.error(
                node,
                format!("expected a mapping, found {}", node.describe()),
            )
        })
    }

    fn sequence<'a, 'i>(&self, node: &Node<'a, 'i>) -> Result<Vec<Node<'a, 'i>>, ManifestError> {
        let YamlData::Sequence(items) = node.data() else {
            return Err(self.error(node, format!("expected a list, found {}", node.describe())));
        };
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, yaml)| Node {
                yaml,
                path: format!("{}[{i}]", node.path),
                line: yaml.span.start.line().max(1),
                column: yaml.span.start.col() + 1,
            })
            .collect())
    }

    fn string(&self, node: &Node<'_, '_>) -> Result<String, ManifestError> {
        node.scalar_str().map(str::to_owned).ok_or_else(|| {
            self.error(
                node,
                format!("expected a string, found {}", node.describe()),
            )
        })
    }

    fn integer(&self, node: &Node<'_, '_>) -> Result<i64, ManifestError> {
        match node.data() {
            YamlData::Value(Scalar::Integer(i)) => Ok(*i),
            _ => Err(self.error(
                node,
                format!("expected an integer, found {}", node.describe()),
            )),
        }
    }

    /// A non-negative integer that fits `u32`.
    fn count(&self, node: &Node<'_, '_>) -> Result<u32, ManifestError> {
        let value = self.integer(node)?;
        u32::try_from(value).map_err(|_| {
            self.error(
                node,
                format!("invalid value '{value}': must be a non-negative integer"),
            )
        })
    }

    fn seconds(&self, node: &Node<'_, '_>) -> Result<Duration, ManifestError> {
        Ok(Duration::from_secs(u64::from(self.count(node)?)))
    }

    fn port(&self, node: &Node<'_, '_>) -> Result<u16, ManifestError> {
        let value = self.integer(node)?;
        u16::try_from(value)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| {
                self.error(
                    node,
                    format!("invalid value '{value}': must be between 1 and 65535"),
                )
            })
    }

    fn port_ref(&self, node: &Node<'_, '_>) -> Result<PortRef, ManifestError> {
        match node.scalar_str() {
            Some(name) if !name.is_empty() => Ok(PortRef::Name(name.to_owned())),
            Some(_) => Err(self.error(node, "must not be empty")),
            None => self.port(node).map(PortRef::Number),
        }
    }

    fn int_or_percent(&self, node: &Node<'_, '_>) -> Result<IntOrPercent, ManifestError> {
        match (node.data(), node.scalar_str()) {
            (YamlData::Value(Scalar::Integer(_)), _) => self.count(node).map(IntOrPercent::Int),
            (_, Some(text)) => match text.parse::<IntOrPercent>() {
                Ok(percent @ IntOrPercent::Percent(_)) => Ok(percent),
                Ok(IntOrPercent::Int(_)) => Err(self.error(
                    node,
                    format!(
                        "invalid value '{text}': a string must be a percentage (e.g. 25%); \
                         write a number without quotes"
                    ),
                )),
                Err(e) => Err(self.error(node, e.to_string())),
            },
            _ => Err(self.error(
                node,
                format!(
                    "invalid value {}: expected a non-negative integer (e.g. 1) or a \
                     percentage (e.g. 25%)",
                    node.describe()
                ),
            )),
        }
    }

    fn command(&self, node: &Node<'_, '_>) -> Result<Vec<String>, ManifestError> {
        self.sequence(node)?
            .iter()
            .map(|arg| self.string(arg))
            .collect()
    }

    fn deployment(
        &mut self,
        root: &Node<'_, '_>,
        container: Option<&str>,
    ) -> Result<ManifestDeployment, ManifestError> {
        let mut name = None;
        let mut spec = None;
        for (key, value) in self.mapping(root)? {
            match key.as_str() {
                "apiVersion" => {
                    let version = self.string(&value)?;
                    if version != "apps/v1" {
                        return Err(self.error(
                            &value,
                            format!("unsupported value '{version}': expected apps/v1"),
                        ));
                    }
                }
                "metadata" => {
                    name = self
                        .mapping(&value)?
                        .into_iter()
                        .find(|(k, _)| k == "name")
                        .map(|(_, v)| self.string(&v))
                        .transpose()?;
                }
                "spec" => spec = Some(value),
                _ => {}
            }
        }
        let name = name.ok_or_else(|| {
            self.error(
                &Node {
                    path: "metadata.name".to_owned(),
                    ..root.clone()
                },
                "required field is missing",
            )
        })?;
        let spec = spec.ok_or_else(|| {
            self.error(
                &Node {
                    path: "spec".to_owned(),
                    ..root.clone()
                },
                "required field is missing",
            )
        })?;

        let mut deployment = ManifestDeployment {
            name,
            replicas: 1,
            strategy: ManifestStrategy::default(),
            min_ready: Duration::ZERO,
            probes: Probes::default(),
            termination: Termination::default(),
            container_port: None,
            ignored: Vec::new(),
        };
        let mut template = None;
        for (key, value) in self.mapping(&spec)? {
            match key.as_str() {
                "replicas" => deployment.replicas = self.count(&value)?,
                "minReadySeconds" => deployment.min_ready = self.seconds(&value)?,
                "strategy" => deployment.strategy = self.strategy(&value)?,
                "template" => template = Some(value),
                // Bookkeeping with no effect on how a rollout behaves.
                "selector" | "revisionHistoryLimit" => {}
                _ => self.ignore(&value),
            }
        }
        let template = template.ok_or_else(|| {
            self.error(
                &Node {
                    path: "spec.template".to_owned(),
                    ..spec.clone()
                },
                "required field is missing",
            )
        })?;
        let pod = self
            .mapping(&template)?
            .into_iter()
            .find_map(|(k, v)| (k == "spec").then_some(v))
            .ok_or_else(|| {
                self.error(
                    &Node {
                        path: "spec.template.spec".to_owned(),
                        ..template.clone()
                    },
                    "required field is missing",
                )
            })?;
        self.pod(&pod, container, &mut deployment)?;
        deployment.ignored = std::mem::take(&mut self.ignored);
        Ok(deployment)
    }

    fn strategy(&mut self, node: &Node<'_, '_>) -> Result<ManifestStrategy, ManifestError> {
        let mut recreate = false;
        let mut rolling = None;
        for (key, value) in self.mapping(node)? {
            match key.as_str() {
                "type" => match self.string(&value)?.as_str() {
                    "RollingUpdate" => {}
                    "Recreate" => recreate = true,
                    other => {
                        return Err(self.error(
                            &value,
                            format!(
                                "unsupported value '{other}': expected RollingUpdate or Recreate"
                            ),
                        ));
                    }
                },
                "rollingUpdate" => rolling = Some(value),
                _ => self.ignore(&value),
            }
        }
        if recreate {
            if let Some(rolling) = rolling {
                return Err(self.error(
                    &rolling,
                    "may not be specified when strategy type is 'Recreate'",
                ));
            }
            return Ok(ManifestStrategy::Recreate);
        }
        let mut update = RollingUpdate::default();
        let (mut surge_node, mut unavailable_node) = (None, None);
        if let Some(rolling) = rolling {
            for (key, value) in self.mapping(&rolling)? {
                match key.as_str() {
                    "maxSurge" => {
                        update.max_surge = self.int_or_percent(&value)?;
                        surge_node = Some(value);
                    }
                    "maxUnavailable" => {
                        update.max_unavailable = self.int_or_percent(&value)?;
                        unavailable_node = Some(value);
                    }
                    _ => self.ignore(&value),
                }
            }
            if let Err(e) = update.validate() {
                let at = match e {
                    RollingUpdateError::BothZero => unavailable_node.or(surge_node),
                    RollingUpdateError::UnavailableOver100(_) => unavailable_node,
                };
                return Err(self.error(at.as_ref().unwrap_or(&rolling), e.to_string()));
            }
        }
        Ok(ManifestStrategy::RollingUpdate(update))
    }

    fn pod(
        &mut self,
        pod: &Node<'_, '_>,
        wanted: Option<&str>,
        out: &mut ManifestDeployment,
    ) -> Result<(), ManifestError> {
        let mut containers = None;
        for (key, value) in self.mapping(pod)? {
            match key.as_str() {
                "terminationGracePeriodSeconds" => {
                    out.termination.grace_period = self.seconds(&value)?;
                }
                "containers" => containers = Some(value),
                _ => self.ignore(&value),
            }
        }
        let containers_node = containers.ok_or_else(|| {
            self.error(
                &Node {
                    path: pod.child_path("containers"),
                    ..pod.clone()
                },
                "required field is missing",
            )
        })?;
        let containers = self.sequence(&containers_node)?;
        if containers.is_empty() {
            return Err(self.error(&containers_node, "must have at least one container"));
        }
        let mut names = Vec::with_capacity(containers.len());
        for container in &containers {
            let name = self
                .mapping(container)?
                .into_iter()
                .find_map(|(k, v)| (k == "name").then_some(v))
                .map(|v| self.string(&v))
                .transpose()?;
            names.push(name);
        }
        let chosen = match wanted {
            None => 0,
            Some(wanted) => names
                .iter()
                .position(|n| n.as_deref() == Some(wanted))
                .ok_or_else(|| {
                    self.error(&containers_node, format!("no container named '{wanted}'"))
                })?,
        };
        for (i, container) in containers.iter().enumerate() {
            if i == chosen {
                self.container(container, out)?;
            } else {
                self.ignore(container);
            }
        }
        Ok(())
    }

    fn container(
        &mut self,
        container: &Node<'_, '_>,
        out: &mut ManifestDeployment,
    ) -> Result<(), ManifestError> {
        let entries = self.mapping(container)?;
        // Ports first: named probe and preStop ports resolve against them.
        let mut ports: Vec<(Option<String>, u16)> = Vec::new();
        for (key, value) in &entries {
            if key == "ports" {
                for port in self.sequence(value)? {
                    let mut name = None;
                    let mut number = None;
                    for (k, v) in self.mapping(&port)? {
                        match k.as_str() {
                            "containerPort" => number = Some(self.port(&v)?),
                            "name" => name = Some(self.string(&v)?),
                            // protocol, hostPort, hostIP: no effect in the lab.
                            _ => {}
                        }
                    }
                    let number = number.ok_or_else(|| {
                        self.error(
                            &Node {
                                path: port.child_path("containerPort"),
                                ..port.clone()
                            },
                            "required field is missing",
                        )
                    })?;
                    ports.push((name, number));
                }
            }
        }
        out.container_port = ports.first().map(|&(_, n)| n);
        for (key, value) in &entries {
            match key.as_str() {
                "name" | "ports" => {}
                "readinessProbe" => {
                    out.probes.readiness = self.probe(value, ProbeKind::Readiness, &ports)?;
                }
                "livenessProbe" => {
                    out.probes.liveness = self.probe(value, ProbeKind::Liveness, &ports)?;
                }
                "startupProbe" => {
                    out.probes.startup = self.probe(value, ProbeKind::Startup, &ports)?;
                }
                "lifecycle" => {
                    for (k, v) in self.mapping(value)? {
                        if k == "preStop" {
                            out.termination.pre_stop = self.pre_stop(&v, &ports)?;
                        } else {
                            self.ignore(&v);
                        }
                    }
                }
                _ => self.ignore(value),
            }
        }
        Ok(())
    }

    fn check_named_port(
        &self,
        node: &Node<'_, '_>,
        port: &PortRef,
        ports: &[(Option<String>, u16)],
    ) -> Result<Option<u16>, ManifestError> {
        match port {
            PortRef::Number(n) => Ok(Some(*n)),
            PortRef::Name(name) => ports
                .iter()
                .find(|(n, _)| n.as_deref() == Some(name.as_str()))
                .map(|&(_, number)| Some(number))
                .ok_or_else(|| {
                    self.error(
                        node,
                        format!("no container port named '{name}' in the container's ports"),
                    )
                }),
        }
    }

    /// One probe, or `None` when its only action is one the lab cannot run (grpc).
    fn probe(
        &mut self,
        node: &Node<'_, '_>,
        kind: ProbeKind,
        ports: &[(Option<String>, u16)],
    ) -> Result<Option<ProbeSpec>, ManifestError> {
        let mut actions = Vec::new();
        let mut unsupported = None;
        let mut spec = ProbeSpec::new(ProbeAction::Exec { command: vec![] });
        // Kubernetes defaults a zero period, timeout or threshold to its default value.
        let nonzero = |value: u32, default: u32| if value == 0 { default } else { value };
        for (key, value) in self.mapping(node)? {
            match key.as_str() {
                "httpGet" => actions.push((self.http_probe(&value, ports)?, value)),
                "tcpSocket" => {
                    let mut port = None;
                    for (k, v) in self.mapping(&value)? {
                        match k.as_str() {
                            "port" => {
                                let p = self.port_ref(&v)?;
                                self.check_named_port(&v, &p, ports)?;
                                port = Some(p);
                            }
                            _ => self.ignore(&v),
                        }
                    }
                    let port = port.ok_or_else(|| self.missing(&value, "port"))?;
                    actions.push((ProbeAction::TcpSocket { port }, value));
                }
                "exec" => {
                    let mut command = Vec::new();
                    for (k, v) in self.mapping(&value)? {
                        if k == "command" {
                            command = self.command(&v)?;
                        }
                    }
                    actions.push((ProbeAction::Exec { command }, value));
                }
                "grpc" => unsupported = Some(value),
                "initialDelaySeconds" => spec.initial_delay = self.seconds(&value)?,
                "periodSeconds" => {
                    spec.period = Duration::from_secs(u64::from(nonzero(self.count(&value)?, 10)));
                }
                "timeoutSeconds" => {
                    spec.timeout = Duration::from_secs(u64::from(nonzero(self.count(&value)?, 1)));
                }
                "successThreshold" => spec.success_threshold = nonzero(self.count(&value)?, 1),
                "failureThreshold" => spec.failure_threshold = nonzero(self.count(&value)?, 3),
                _ => self.ignore(&value),
            }
        }
        if let Some(grpc) = &unsupported
            && actions.is_empty()
        {
            self.ignore(grpc);
            return Ok(None);
        }
        let handlers = actions.len() + usize::from(unsupported.is_some());
        if handlers > 1 {
            return Err(self.error(node, "may not specify more than 1 handler type"));
        }
        let Some((action, _)) = actions.into_iter().next() else {
            return Err(self.error(
                node,
                "must specify a handler type (httpGet, tcpSocket or exec)",
            ));
        };
        spec.action = action;
        if let Err(e) = spec.validate(kind) {
            // Point at the offending field when the manifest has it, else at the probe.
            let mut at = node.clone();
            for part in e.field.split('.') {
                match at.field_opt(part) {
                    Some(next) => at = next,
                    None => {
                        at.path = format!("{}.{part}", at.path);
                    }
                }
            }
            return Err(self.error(&at, e.reason));
        }
        Ok(Some(spec))
    }

    fn missing(&self, parent: &Node<'_, '_>, field: &str) -> ManifestError {
        self.error(
            &Node {
                path: parent.child_path(field),
                ..parent.clone()
            },
            "required field is missing",
        )
    }

    fn http_probe(
        &mut self,
        node: &Node<'_, '_>,
        ports: &[(Option<String>, u16)],
    ) -> Result<ProbeAction, ManifestError> {
        let mut path = "/".to_owned();
        let mut port = None;
        let mut scheme = Scheme::Http;
        let mut headers = Vec::new();
        for (key, value) in self.mapping(node)? {
            match key.as_str() {
                "path" => path = self.string(&value)?,
                "port" => {
                    let p = self.port_ref(&value)?;
                    self.check_named_port(&value, &p, ports)?;
                    port = Some(p);
                }
                "scheme" => {
                    scheme = match self.string(&value)?.as_str() {
                        "HTTP" => Scheme::Http,
                        "HTTPS" => Scheme::Https,
                        other => {
                            return Err(self.error(
                                &value,
                                format!("unsupported value '{other}': expected HTTP or HTTPS"),
                            ));
                        }
                    };
                }
                "httpHeaders" => {
                    for header in self.sequence(&value)? {
                        let (mut name, mut val) = (None, None);
                        for (k, v) in self.mapping(&header)? {
                            match k.as_str() {
                                "name" => name = Some(self.string(&v)?),
                                "value" => val = Some(self.string(&v)?),
                                _ => {}
                            }
                        }
                        let name = name.ok_or_else(|| self.missing(&header, "name"))?;
                        headers.push((name, val.unwrap_or_default()));
                    }
                }
                _ => self.ignore(&value),
            }
        }
        let port = port.ok_or_else(|| self.missing(node, "port"))?;
        Ok(ProbeAction::HttpGet {
            path,
            port,
            scheme,
            headers,
        })
    }

    /// The preStop hook, or `None` when it is of a kind the lab cannot run (listed as ignored).
    fn pre_stop(
        &mut self,
        node: &Node<'_, '_>,
        ports: &[(Option<String>, u16)],
    ) -> Result<Option<PreStop>, ManifestError> {
        let mut hooks = Vec::new();
        for (key, value) in self.mapping(node)? {
            match key.as_str() {
                "exec" => {
                    let mut command = None;
                    for (k, v) in self.mapping(&value)? {
                        if k == "command" {
                            command = Some(self.command(&v)?);
                        }
                    }
                    let command = command
                        .filter(|c| !c.is_empty())
                        .ok_or_else(|| self.missing(&value, "command"))?;
                    hooks.push(PreStop::Exec(command));
                }
                "sleep" => {
                    let mut seconds = None;
                    for (k, v) in self.mapping(&value)? {
                        if k == "seconds" {
                            seconds = Some(self.seconds(&v)?);
                        }
                    }
                    let seconds = seconds.ok_or_else(|| self.missing(&value, "seconds"))?;
                    hooks.push(PreStop::Sleep(seconds));
                }
                "httpGet" => {
                    let mut path = "/".to_owned();
                    let mut port = None;
                    for (k, v) in self.mapping(&value)? {
                        match k.as_str() {
                            "path" => path = self.string(&v)?,
                            "port" => {
                                let p = self.port_ref(&v)?;
                                port = self.check_named_port(&v, &p, ports)?;
                            }
                            _ => self.ignore(&v),
                        }
                    }
                    let port = port.ok_or_else(|| self.missing(&value, "port"))?;
                    hooks.push(PreStop::HttpGet { path, port });
                }
                _ => self.ignore(&value),
            }
        }
        if hooks.len() > 1 {
            return Err(self.error(node, "may not specify more than 1 handler type"));
        }
        Ok(hooks.pop())
    }
}
