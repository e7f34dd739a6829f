//! Kubelet probes as data, and the state machine that turns probe results into pod events.
//!
//! This module does no I/O: whoever runs the probes (the lab) feeds each result to a
//! [`ProbeTracker`], which counts consecutive successes and failures as the kubelet does and
//! reports a [`Transition`] when a threshold is reached. A probe that does not answer within
//! its timeout counts as a failure.
//!
//! As in the kubelet, the caller runs no probe before `initial_delay`, runs liveness and
//! readiness only once the startup probe (if any) has succeeded, and builds fresh trackers
//! when the container restarts.
//!
//! ```
//! use rollguard_core::probe::{ProbeAction, ProbeKind, ProbeSpec, ProbeTracker, PortRef, Transition};
//!
//! let spec = ProbeSpec::new(ProbeAction::TcpSocket { port: PortRef::Number(8080) });
//! spec.validate(ProbeKind::Readiness).unwrap();
//! let mut readiness = ProbeTracker::new(ProbeKind::Readiness, &spec);
//! assert_eq!(readiness.observe(true), Some(Transition::Ready));
//! assert_eq!(readiness.observe(false), None); // 1 of 3 failures
//! ```

use std::fmt;
use std::time::Duration;

/// One probe of a container: what to check, when, and how many results make a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// What the probe does.
    pub action: ProbeAction,
    /// Wait after the container starts before the first probe (`initialDelaySeconds`).
    pub initial_delay: Duration,
    /// Time between probes (`periodSeconds`). Kubernetes counts whole seconds, at least 1;
    /// a `Duration` lets the lab run probes faster than a cluster can.
    pub period: Duration,
    /// How long one probe may take before it counts as failed (`timeoutSeconds`). Same
    /// unit note as `period`.
    pub timeout: Duration,
    /// Consecutive successes that make the probe pass (`successThreshold`).
    pub success_threshold: u32,
    /// Consecutive failures that make the probe fail (`failureThreshold`).
    pub failure_threshold: u32,
}

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// An HTTP GET to the pod; a status from 200 to 399 is a success.
    HttpGet {
        /// Request path, e.g. `/healthz`.
        path: String,
        /// Port on the pod.
        port: PortRef,
        /// Plain HTTP or HTTPS (the kubelet does not verify certificates).
        scheme: Scheme,
        /// Extra request headers, in order.
        headers: Vec<(String, String)>,
    },
    /// A TCP connect to the pod; an established connection is a success.
    TcpSocket {
        /// Port on the pod.
        port: PortRef,
    },
    /// A command run in the container; exit status 0 is a success.
    Exec {
        /// The program and its arguments, run without a shell.
        command: Vec<String>,
    },
}

/// A container port, by number or by the name given in the container's `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    /// A port number.
    Number(u16),
    /// A named container port.
    Name(String),
}

/// The scheme of an HTTP probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    /// Plain HTTP (the Kubernetes default).
    #[default]
    Http,
    /// HTTPS.
    Https,
}

/// What the kubelet does with a probe's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Decides whether the pod is in the Service's endpoints.
    Readiness,
    /// Decides whether the container is restarted.
    Liveness,
    /// Holds liveness and readiness back until the app has started; restarts it if it never does.
    Startup,
}

/// Why the API server would reject a probe. Displays as `readinessProbe.periodSeconds: ...`,
/// naming the manifest field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}Probe.{field}: {reason}")]
pub struct ProbeError {
    /// Which probe of the container.
    pub kind: ProbeKind,
    /// The offending field, spelled as in a manifest.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// Where a probe stands, as the kubelet sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeState {
    /// Readiness: the pod gets no traffic. Where readiness starts.
    NotReady,
    /// Readiness: the pod is in the Service's endpoints.
    Ready,
    /// Liveness: the container is left running. Where liveness starts.
    Alive,
    /// Startup: the app has not started yet. Where startup starts.
    Starting,
    /// Startup: the app started; the kubelet stops this probe for good.
    Started,
    /// Liveness or startup: the failure threshold was reached and the container must be
    /// restarted; the kubelet stops this probe until the new container runs.
    Failed,
}

/// A change of [`ProbeState`] that the pod's owner must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// Readiness passed: add the pod to the endpoints (`not-ready -> ready`).
    Ready,
    /// Readiness failed: remove the pod from the endpoints (`ready -> not-ready`).
    NotReady,
    /// Startup passed: begin liveness and readiness probing (`starting -> started`).
    Started,
    /// Liveness or startup failed: kill and restart the container (`alive|starting -> failed`).
    Restart,
}

/// Counts one probe's results and decides, as the kubelet does, when they change its state.
#[derive(Debug, Clone)]
pub struct ProbeTracker {
    state: ProbeState,
    success_threshold: u32,
    failure_threshold: u32,
    /// The last result and how many times in a row it came; a different result restarts the run.
    last: Option<bool>,
    run: u32,
}

impl ProbeSpec {
    /// A probe with Kubernetes' defaults: no initial delay, period 10s, timeout 1s,
    /// success threshold 1, failure threshold 3.
    pub fn new(action: ProbeAction) -> Self {
        Self {
            action,
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 3,
        }
    }

    /// Checks the probe as the API server does for a probe of `kind`, except that `period`
    /// and `timeout` only have to be non-zero (see [`ProbeSpec::period`]).
    pub fn validate(&self, kind: ProbeKind) -> Result<(), ProbeError> {
        let error = |field, reason: &str| {
            Err(ProbeError {
                kind,
                field,
                reason: reason.to_owned(),
            })
        };
        if self.period.is_zero() {
            return error("periodSeconds", "must be greater than zero");
        }
        if self.timeout.is_zero() {
            return error("timeoutSeconds", "must be greater than zero");
        }
        if self.success_threshold == 0 {
            return error("successThreshold", "must be at least 1");
        }
        if self.failure_threshold == 0 {
            return error("failureThreshold", "must be at least 1");
        }
        if kind != ProbeKind::Readiness && self.success_threshold != 1 {
            return error(
                "successThreshold",
                "must be 1 for liveness and startup probes",
            );
        }
        match &self.action {
            ProbeAction::HttpGet { port, .. } => port.validate(kind, "httpGet.port"),
            ProbeAction::TcpSocket { port } => port.validate(kind, "tcpSocket.port"),
            ProbeAction::Exec { command } if command.is_empty() => {
                error("exec.command", "must not be empty")
            }
            ProbeAction::Exec { .. } => Ok(()),
        }
    }
}

impl PortRef {
    fn validate(&self, kind: ProbeKind, field: &'static str) -> Result<(), ProbeError> {
        let reason = match self {
            Self::Number(0) => "must be between 1 and 65535",
            Self::Name(name) if name.is_empty() => "must not be empty",
            _ => return Ok(()),
        };
        Err(ProbeError {
            kind,
            field,
            reason: reason.to_owned(),
        })
    }
}

impl ProbeKind {
    /// The state a probe of this kind starts in, before any result.
    fn initial_state(self) -> ProbeState {
        match self {
            Self::Readiness => ProbeState::NotReady,
            Self::Liveness => ProbeState::Alive,
            Self::Startup => ProbeState::Starting,
        }
    }
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Readiness => "readiness",
            Self::Liveness => "liveness",
            Self::Startup => "startup",
        })
    }
}

impl fmt::Display for ProbeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotReady => "not-ready",
            Self::Ready => "ready",
            Self::Alive => "alive",
            Self::Starting => "starting",
            Self::Started => "started",
            Self::Failed => "failed",
        })
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ready => "ready",
            Self::NotReady => "not-ready",
            Self::Started => "started",
            Self::Restart => "restart",
        })
    }
}

impl ProbeTracker {
    /// A tracker in the kind's initial state, using the spec's thresholds. The spec should be
    /// validated first; a zero threshold behaves as 1.
    pub fn new(kind: ProbeKind, spec: &ProbeSpec) -> Self {
        Self {
            state: kind.initial_state(),
            success_threshold: spec.success_threshold,
            failure_threshold: spec.failure_threshold,
            last: None,
            run: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> ProbeState {
        self.state
    }

    /// Feeds one probe result (`ok` = success) and returns the transition it completes, if any.
    /// Results after `Started` or `Failed` are ignored: the kubelet no longer probes then.
    pub fn observe(&mut self, ok: bool) -> Option<Transition> {
        if matches!(self.state, ProbeState::Started | ProbeState::Failed) {
            return None;
        }
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let threshold = if ok {
            self.success_threshold
        } else {
            self.failure_threshold
        };
        if self.run < threshold {
            return None;
        }
        let (next, transition) = match (self.state, ok) {
            (ProbeState::NotReady, true) => (ProbeState::Ready, Transition::Ready),
            (ProbeState::Ready, false) => (ProbeState::NotReady, Transition::NotReady),
            (ProbeState::Starting, true) => (ProbeState::Started, Transition::Started),
            (ProbeState::Alive | ProbeState::Starting, false) => {
                (ProbeState::Failed, Transition::Restart)
            }
            _ => return None,
        };
        self.state = next;
        Some(transition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(success_threshold: u32, failure_threshold: u32) -> ProbeSpec {
        ProbeSpec {
            success_threshold,
            failure_threshold,
            ..ProbeSpec::new(ProbeAction::TcpSocket {
                port: PortRef::Number(8080),
            })
        }
    }

    /// Feeds `results` ('+' success, '-' failure) and lists the transitions with the 1-based
    /// index of the result that caused each.
    fn run(kind: ProbeKind, spec: &ProbeSpec, results: &str) -> Vec<(usize, Transition)> {
        let mut tracker = ProbeTracker::new(kind, spec);
        results
            .chars()
            .enumerate()
            .filter_map(|(i, c)| tracker.observe(c == '+').map(|t| (i + 1, t)))
            .collect()
    }

    #[test]
    fn defaults_are_kubernetes_and_valid_for_every_kind() {
        let spec = spec(1, 3);
        assert_eq!(spec.period, Duration::from_secs(10));
        assert_eq!(spec.timeout, Duration::from_secs(1));
        assert_eq!(spec.initial_delay, Duration::ZERO);
        for kind in [
            ProbeKind::Readiness,
            ProbeKind::Liveness,
            ProbeKind::Startup,
        ] {
            assert_eq!(spec.validate(kind), Ok(()), "{kind}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        let zero_period = ProbeSpec {
            period: Duration::ZERO,
            ..spec(1, 3)
        };
        let cases = [
            (spec(0, 3), ProbeKind::Readiness, "successThreshold"),
            (spec(1, 0), ProbeKind::Readiness, "failureThreshold"),
            (spec(2, 3), ProbeKind::Liveness, "successThreshold"),
            (spec(2, 3), ProbeKind::Startup, "successThreshold"),
            (zero_period, ProbeKind::Readiness, "periodSeconds"),
        ];
        for (spec, kind, field) in cases {
            let err = spec.validate(kind).unwrap_err();
            assert_eq!(err.field, field);
            assert!(
                err.to_string()
                    .starts_with(&format!("{kind}Probe.{field}: "))
            );
        }
    }

    #[test]
    fn validation_checks_the_action() {
        let with = |action| ProbeSpec::new(action).validate(ProbeKind::Liveness);
        let http = |port| ProbeAction::HttpGet {
            path: "/healthz".into(),
            port,
            scheme: Scheme::Http,
            headers: vec![],
        };
        assert_eq!(with(http(PortRef::Name("http".into()))), Ok(()));
        let err = with(http(PortRef::Number(0))).unwrap_err();
        assert_eq!(err.field, "httpGet.port");
        let err = with(ProbeAction::TcpSocket {
            port: PortRef::Name(String::new()),
        });
        assert_eq!(err.unwrap_err().field, "tcpSocket.port");
        let err = with(ProbeAction::Exec { command: vec![] }).unwrap_err();
        assert_eq!(err.field, "exec.command");
    }

    #[test]
    fn sub_second_timing_is_allowed_for_the_lab() {
        let fast = ProbeSpec {
            period: Duration::from_millis(100),
            timeout: Duration::from_millis(50),
            ..spec(1, 3)
        };
        assert_eq!(fast.validate(ProbeKind::Readiness), Ok(()));
    }

    #[test]
    fn readiness_starts_not_ready() {
        let tracker = ProbeTracker::new(ProbeKind::Readiness, &spec(1, 3));
        assert_eq!(tracker.state(), ProbeState::NotReady);
    }

    #[test]
    fn readiness_becomes_ready_after_success_threshold() {
        assert_eq!(
            run(ProbeKind::Readiness, &spec(1, 3), "+"),
            [(1, Transition::Ready)]
        );
        assert_eq!(
            run(ProbeKind::Readiness, &spec(3, 3), "++-+++"),
            [(6, Transition::Ready)]
        );
    }

    #[test]
    fn readiness_becomes_not_ready_after_failure_threshold_and_recovers() {
        let transitions = run(ProbeKind::Readiness, &spec(1, 3), "+--+---+");
        assert_eq!(
            transitions,
            [
                (1, Transition::Ready),
                (7, Transition::NotReady),
                (8, Transition::Ready),
            ]
        );
    }

    #[test]
    fn failures_before_ready_change_nothing() {
        let mut tracker = ProbeTracker::new(ProbeKind::Readiness, &spec(1, 3));
        for _ in 0..5 {
            assert_eq!(tracker.observe(false), None);
        }
        assert_eq!(tracker.state(), ProbeState::NotReady);
    }

    #[test]
    fn flapping_never_reaches_a_threshold() {
        let flapping = "+-".repeat(20);
        // Not ready, needing 2 successes in a row: stays not ready.
        assert_eq!(run(ProbeKind::Readiness, &spec(2, 2), &flapping), []);
        // Ready, needing 3 failures in a row: stays ready after the first success.
        assert_eq!(
            run(
                ProbeKind::Readiness,
                &spec(1, 3),
                &format!("+{}", "--+".repeat(10))
            ),
            [(1, Transition::Ready)]
        );
        // Alive, needing 3 failures in a row: never restarted.
        assert_eq!(run(ProbeKind::Liveness, &spec(1, 3), &"--+".repeat(10)), []);
    }

    #[test]
    fn liveness_restarts_after_failure_threshold_then_stops() {
        let mut tracker = ProbeTracker::new(ProbeKind::Liveness, &spec(1, 3));
        assert_eq!(tracker.state(), ProbeState::Alive);
        assert_eq!(tracker.observe(true), None);
        assert_eq!(tracker.observe(false), None);
        assert_eq!(tracker.observe(false), None);
        assert_eq!(tracker.observe(false), Some(Transition::Restart));
        assert_eq!(tracker.state(), ProbeState::Failed);
        assert_eq!(tracker.observe(false), None);
        assert_eq!(tracker.observe(true), None);
        assert_eq!(tracker.state(), ProbeState::Failed);
    }

    #[test]
    fn startup_starts_after_one_success_then_stops() {
        let mut tracker = ProbeTracker::new(ProbeKind::Startup, &spec(1, 3));
        assert_eq!(tracker.state(), ProbeState::Starting);
        assert_eq!(tracker.observe(false), None);
        assert_eq!(tracker.observe(true), Some(Transition::Started));
        assert_eq!(tracker.state(), ProbeState::Started);
        for _ in 0..5 {
            assert_eq!(tracker.observe(false), None);
        }
        assert_eq!(tracker.state(), ProbeState::Started);
    }

    #[test]
    fn startup_restarts_after_failure_threshold() {
        assert_eq!(
            run(ProbeKind::Startup, &spec(1, 5), "----+-----+"),
            [(5, Transition::Started)]
        );
        assert_eq!(
            run(ProbeKind::Startup, &spec(1, 5), "-----+"),
            [(5, Transition::Restart)]
        );
    }

    #[test]
    fn spelling() {
        assert_eq!(ProbeState::NotReady.to_string(), "not-ready");
        assert_eq!(Transition::Restart.to_string(), "restart");
        assert_eq!(ProbeKind::Startup.to_string(), "startup");
    }
}
