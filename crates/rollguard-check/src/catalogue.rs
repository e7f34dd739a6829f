//! The rule catalogue: every rule's ID, default severity, explanation and fix, as
//! `rollguard check --explain ID`, SARIF's `tool.driver.rules` and the docs show them.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; rarely a dropped request on its own.
    Info,
    /// Drops requests in some rollouts or disruptions.
    Warning,
    /// Drops requests in ordinary rollouts.
    Error,
}

impl Severity {
    /// The lowercase name: `info`, `warning` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "info" => Ok(Self::Info),
            "warning" => Ok(Self::Warning),
            "error" => Ok(Self::Error),
            other => Err(format!(
                "unknown severity '{other}' (expected info, warning or error)"
            )),
        }
    }
}

/// A rule of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// `RG001` .. `RG015`.
    pub id: &'static str,
    /// A short name, used as SARIF's rule name: `missing-readiness-probe`.
    pub name: &'static str,
    /// One line: what the rule finds.
    pub title: &'static str,
    /// The severity unless `.rollguard.toml` changes it.
    pub severity: Severity,
    /// The failure modes it prevents (`F1` .. `F4`, or `rollout`).
    pub failure: &'static str,
    /// Why it drops requests.
    pub why: &'static str,
    /// How to fix it.
    pub fix: &'static str,
    /// Whether `--fix` can fix it.
    pub fixable: bool,
    /// A manifest fragment that the rule reports.
    pub bad: &'static str,
    /// The same fragment, fixed.
    pub good: &'static str,
}

/// Looks a rule up by its ID (case-insensitive).
pub fn rule(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id.eq_ignore_ascii_case(id))
}

impl Rule {
    /// The text `--explain` prints.
    pub fn explain(&self) -> String {
        format!(
            "{id}: {title}\n\nseverity: {sev} (failure mode {failure}){fixable}\n\n{why}\n\nFix: {fix}\n\nReported:\n\n{bad}\nPasses:\n\n{good}",
            id = self.id,
            title = self.title,
            sev = self.severity,
            failure = self.failure,
            fixable = if self.fixable {
                "; `--fix` fixes it"
            } else {
                ""
            },
            why = wrap(self.why, 88),
            fix = wrap(self.fix, 83),
            bad = indent(self.bad),
            good = indent(self.good),
        )
    }
}

/// Greedy word wrap at `width` columns.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split_whitespace() {
        if line > 0 && line + 1 + word.len() > width {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// Every rule, in ID order.
pub const RULES: [Rule; 15] = [
    Rule {
        id: "RG001",
        name: "missing-readiness-probe",
        title: "serving container without a readinessProbe",
        severity: Severity::Error,
        failure: "F1",
        why: "Without a readiness probe a pod is ready as soon as its containers have started, \
              so the Service sends it traffic before the app listens, and every rollout \
              refuses or resets the first requests to each new pod.",
        fix: "Add a readinessProbe that succeeds only once the app serves (an httpGet on a \
              health path, or a tcpSocket on the serving port).",
        fixable: false,
        bad: "containers:\n  - name: web\n    ports: [{containerPort: 8080}]\n",
        good: "containers:\n  - name: web\n    ports: [{containerPort: 8080}]\n    readinessProbe:\n      httpGet: {path: /ready, port: 8080}\n",
    },
    Rule {
        id: "RG002",
        name: "liveness-equals-readiness",
        title: "livenessProbe identical to the readinessProbe",
        severity: Severity::Warning,
        failure: "F3",
        why: "A liveness probe that is the readiness probe restarts a container that is only \
              busy or draining: the restart cuts its in-flight requests, and under load it can \
              restart every replica in turn.",
        fix: "Point liveness at a cheaper endpoint that only says the process is alive, and give \
              it a higher failureThreshold than readiness.",
        fixable: false,
        bad: "readinessProbe: {httpGet: {path: /health, port: 8080}}\nlivenessProbe: {httpGet: {path: /health, port: 8080}}\n",
        good: "readinessProbe: {httpGet: {path: /ready, port: 8080}}\nlivenessProbe: {httpGet: {path: /live, port: 8080}, failureThreshold: 6}\n",
    },
    Rule {
        id: "RG003",
        name: "probe-port-not-declared",
        title: "a probe's port is not a port of its container",
        severity: Severity::Error,
        failure: "F1",
        why: "A probe on a port name the container does not declare never succeeds, so the pod \
              never becomes ready and the rollout stalls; a number that differs from the \
              declared ports usually checks something other than the app.",
        fix: "Use one of the container's declared port names or numbers.",
        fixable: false,
        bad: "ports: [{name: http, containerPort: 8080}]\nreadinessProbe: {httpGet: {path: /ready, port: web}}\n",
        good: "ports: [{name: http, containerPort: 8080}]\nreadinessProbe: {httpGet: {path: /ready, port: http}}\n",
    },
    Rule {
        id: "RG004",
        name: "no-delay-before-sigterm",
        title: "no delay before SIGTERM, or one shorter than endpoint propagation",
        severity: Severity::Error,
        failure: "F2",
        why: "Kubernetes removes a terminating pod from its Services and sends it SIGTERM at the \
              same time. kube-proxies, ingress controllers and load balancers learn of the \
              removal seconds later, and keep sending new connections to a pod that has stopped \
              listening.",
        fix: "Delay SIGTERM by the propagation budget: `lifecycle.preStop.sleep.seconds` \
              (Kubernetes 1.30+), an exec `sleep`, or run the app under `rollguard shim`, whose \
              drain delay does the same without a shell.",
        fixable: true,
        bad: "containers:\n  - name: web\n    ports: [{containerPort: 8080}]\n",
        good: "containers:\n  - name: web\n    ports: [{containerPort: 8080}]\n    lifecycle:\n      preStop:\n        sleep:\n          seconds: 5\n",
    },
    Rule {
        id: "RG005",
        name: "grace-period-too-short",
        title: "the preStop delay and the drain do not fit in terminationGracePeriodSeconds",
        severity: Severity::Error,
        failure: "F3",
        why: "The grace period counts from the start of the preStop hook. When the delay plus the \
              time the app needs to finish its requests exceeds it, the kubelet SIGKILLs the app \
              with requests still in flight.",
        fix: "Raise terminationGracePeriodSeconds to at least the delay plus the drain time (the \
              `timing.drain` budget, or the shim's --drain-timeout and --stop-timeout).",
        fixable: true,
        bad: "terminationGracePeriodSeconds: 10\ncontainers:\n  - name: web\n    lifecycle: {preStop: {sleep: {seconds: 15}}}\n",
        good: "terminationGracePeriodSeconds: 25\ncontainers:\n  - name: web\n    lifecycle: {preStop: {sleep: {seconds: 15}}}\n",
    },
    Rule {
        id: "RG006",
        name: "readiness-detected-too-late",
        title: "shutdown readiness is detected later than the drain delay ends",
        severity: Severity::Warning,
        failure: "F2",
        why: "When the pod turns unready on SIGTERM (the shim's /ready does), load balancers that \
              health-check pods stop sending only after failureThreshold x periodSeconds. If the \
              delay ends first, the pod drains while it still gets new connections.",
        fix: "Make failureThreshold x periodSeconds of the readinessProbe shorter than the drain \
              delay (e.g. periodSeconds: 1, failureThreshold: 2 with a 5 s delay), or lengthen \
              the delay.",
        fixable: false,
        bad: "command: [/rollguard, shim, --health-listen, '8082', --drain-delay, 5s, --, /app]\nreadinessProbe: {httpGet: {path: /ready, port: 8082}}\n",
        good: "command: [/rollguard, shim, --health-listen, '8082', --drain-delay, 5s, --, /app]\nreadinessProbe: {httpGet: {path: /ready, port: 8082}, periodSeconds: 1, failureThreshold: 2}\n",
    },
    Rule {
        id: "RG007",
        name: "recreate-strategy",
        title: "Recreate strategy on a Deployment that serves traffic",
        severity: Severity::Error,
        failure: "rollout",
        why: "Recreate stops every old pod before it starts a new one: every rollout is an outage \
              as long as the new pods take to become ready.",
        fix: "Use the RollingUpdate strategy (with maxUnavailable: 0 when capacity matters). Keep \
              Recreate only where two versions must never run at once, and expect downtime.",
        fixable: false,
        bad: "strategy:\n  type: Recreate\n",
        good: "strategy:\n  type: RollingUpdate\n  rollingUpdate: {maxSurge: 1, maxUnavailable: 0}\n",
    },
    Rule {
        id: "RG008",
        name: "rollout-can-remove-every-replica",
        title: "maxSurge/maxUnavailable let available replicas reach 0, or are both 0",
        severity: Severity::Error,
        failure: "rollout",
        why: "The Deployment controller keeps at least replicas - maxUnavailable pods available \
              (maxUnavailable rounds down, maxSurge up, and when both round to 0 it allows one \
              unavailable). When that is 0, a rollout may take every replica down at once. Both \
              set to 0 is rejected by the API server.",
        fix: "maxSurge: 1 and maxUnavailable: 0: one new pod at a time, never fewer ready pods \
              than replicas.",
        fixable: true,
        bad: "replicas: 2\nstrategy:\n  rollingUpdate:\n    maxUnavailable: 100%\n",
        good: "replicas: 2\nstrategy:\n  rollingUpdate:\n    maxSurge: 1\n    maxUnavailable: 0\n",
    },
    Rule {
        id: "RG009",
        name: "single-replica",
        title: "fewer than 2 replicas",
        severity: Severity::Warning,
        failure: "rollout",
        why: "With one replica, any eviction (node drain, preemption) and any crash leaves the \
              Service with no endpoint, whatever the rollout strategy.",
        fix: "Run at least 2 replicas, or an HorizontalPodAutoscaler with minReplicas >= 2.",
        fixable: false,
        bad: "replicas: 1\n",
        good: "replicas: 2\n",
    },
    Rule {
        id: "RG010",
        name: "missing-pod-disruption-budget",
        title: "no PodDisruptionBudget selects the workload",
        severity: Severity::Warning,
        failure: "rollout",
        why: "Without a PodDisruptionBudget, a node drain or cluster upgrade may evict every \
              replica at once.",
        fix: "Add a PodDisruptionBudget whose selector matches the pod labels, e.g. \
              maxUnavailable: 1.",
        fixable: false,
        bad: "kind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 3\n  template: {metadata: {labels: {app: web}}}\n",
        good: "kind: PodDisruptionBudget\nmetadata: {name: web}\nspec:\n  maxUnavailable: 1\n  selector: {matchLabels: {app: web}}\n",
    },
    Rule {
        id: "RG011",
        name: "pod-disruption-budget-extreme",
        title: "a PodDisruptionBudget that allows no disruption, or allows all",
        severity: Severity::Warning,
        failure: "rollout",
        why: "A budget that allows no disruption blocks node drains and cluster upgrades until \
              someone deletes it; one that allows every pod to go protects nothing.",
        fix: "Allow some but not all pods to go: maxUnavailable: 1, or a minAvailable below the \
              replica count.",
        fixable: false,
        bad: "spec:\n  minAvailable: 100%\n",
        good: "spec:\n  maxUnavailable: 1\n",
    },
    Rule {
        id: "RG012",
        name: "shell-swallows-sigterm",
        title: "shell-form command that does not pass SIGTERM on",
        severity: Severity::Warning,
        failure: "F3",
        why: "A shell running a script does not forward SIGTERM to the command it started. The \
              app never hears of the shutdown, keeps serving until the grace period ends, and \
              is SIGKILLed with its requests in flight.",
        fix: "Start the app with `exec` as the script's last command, so that it replaces the \
              shell, or run it under `rollguard shim`.",
        fixable: false,
        bad: "command: [/bin/sh, -c, './migrate && ./server']\n",
        good: "command: [/bin/sh, -c, './migrate && exec ./server']\n",
    },
    Rule {
        id: "RG013",
        name: "sidecar-order",
        title: "a proxy sidecar that starts and stops in no particular order",
        severity: Severity::Warning,
        failure: "F1, F3",
        why: "Containers in `containers` start and get SIGTERM together. A proxy sidecar there may \
              not be ready when the app sends its first request, and may exit while the app \
              still drains through it.",
        fix: "Run the proxy as a native sidecar (an initContainer with restartPolicy: Always, \
              Kubernetes 1.29+), which starts before and stops after the app, or hold the app \
              until the proxy is ready (Istio's holdApplicationUntilProxyStarts, Linkerd's \
              proxy-await).",
        fixable: false,
        bad: "containers:\n  - name: app\n  - name: envoy\n    image: envoyproxy/envoy:v1.31\n",
        good: "initContainers:\n  - name: envoy\n    image: envoyproxy/envoy:v1.31\n    restartPolicy: Always\ncontainers:\n  - name: app\n",
    },
    Rule {
        id: "RG014",
        name: "initial-delay-without-startup-probe",
        title: "a large initialDelaySeconds without a startupProbe",
        severity: Severity::Warning,
        failure: "F1",
        why: "A long fixed initialDelaySeconds waits the same time whether the app starts in 1 s \
              or 60 s: rollouts are slow when it is too long, and liveness kills slow starters \
              when it is too short.",
        fix: "Add a startupProbe (failureThreshold x periodSeconds covers the slowest start) and \
              drop initialDelaySeconds from the other probes.",
        fixable: false,
        bad: "readinessProbe: {httpGet: {path: /ready, port: 8080}, initialDelaySeconds: 60}\n",
        good: "startupProbe: {httpGet: {path: /ready, port: 8080}, periodSeconds: 2, failureThreshold: 30}\nreadinessProbe: {httpGet: {path: /ready, port: 8080}}\n",
    },
    Rule {
        id: "RG015",
        name: "min-ready-seconds-zero",
        title: "minReadySeconds is 0",
        severity: Severity::Info,
        failure: "F1",
        why: "With minReadySeconds 0, a new pod counts as available the moment its first \
              readiness probe passes, and the rollout removes an old pod even if the new one \
              crashes a second later.",
        fix: "Set minReadySeconds to a few seconds (e.g. 5), so a new pod must stay ready before \
              the rollout goes on.",
        fixable: false,
        bad: "spec:\n  replicas: 3\n",
        good: "spec:\n  replicas: 3\n  minReadySeconds: 5\n",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_in_order_and_explanations_complete() {
        for (i, rule) in RULES.iter().enumerate() {
            assert_eq!(rule.id, format!("RG{:03}", i + 1));
            let text = rule.explain();
            assert!(text.starts_with(rule.id) && text.contains("Fix: "));
        }
        assert_eq!(rule("rg004").map(|r| r.id), Some("RG004"));
        assert!(rule("RG099").is_none());
    }
}
