//! The kubelet's prober for one pod: startup, readiness and liveness probes, run on their
//! schedule, their results fed to the probe state machines of `rollguard-core`.
//!
//! Readiness decides whether the pod is an endpoint. Without a readiness probe a pod is
//! ready as soon as its process runs (and its startup probe, if any, has passed), which is
//! exactly why traffic can reach an app that is not listening yet (F1).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rollguard_core::probe::{PortRef, ProbeAction, ProbeKind, ProbeSpec, ProbeState, ProbeTracker};
use tokio::process::Command;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::pod::{Journal, Pod, PodEvent, Termination};

/// A container's probes.
#[derive(Debug, Clone, Default)]
pub struct Probes {
    /// Decides whether the pod receives traffic.
    pub readiness: Option<ProbeSpec>,
    /// Restarts the container when it fails.
    pub liveness: Option<ProbeSpec>,
    /// Holds the other probes back until the app has started.
    pub startup: Option<ProbeSpec>,
}

/// Starts probing `pod`. The returned receiver says since when the pod has been ready
/// (`None`: not ready); every change is journaled and wakes `changed`. A failed startup
/// or liveness probe restarts the container (stopped as `termination` says) and probing
/// starts over; a process that exits by itself is not restarted.
pub fn spawn(
    pod: Arc<Pod>,
    probes: Probes,
    termination: Termination,
    journal: Journal,
    changed: Arc<Notify>,
) -> (JoinHandle<()>, watch::Receiver<Option<Instant>>) {
    let (ready_tx, ready) = watch::channel(None);
    let readiness = Readiness {
        tx: ready_tx,
        pod: pod.name().to_owned(),
        journal,
        changed,
    };
    let task = tokio::spawn(async move {
        loop {
            let failed = tokio::select! {
                kind = probe(&pod, &probes, &readiness) => kind,
                _ = pod.wait() => {
                    // An exited process serves nothing.
                    readiness.set(false);
                    return;
                }
            };
            readiness.set(false);
            tracing::info!(pod = pod.name(), probe = %failed, "probe failed: restarting the container");
            if let Err(err) = pod.restart(&termination).await {
                tracing::warn!(pod = pod.name(), "cannot restart the container: {err}");
                return;
            }
        }
    });
    (task, ready)
}

/// Publishes readiness changes.
struct Readiness {
    tx: watch::Sender<Option<Instant>>,
    pod: String,
    journal: Journal,
    changed: Arc<Notify>,
}

impl Readiness {
    fn set(&self, ready: bool) {
        let was = self.tx.borrow().is_some();
        if was == ready {
            return;
        }
        let _ = self.tx.send(ready.then(Instant::now));
        self.journal.record(
            &self.pod,
            if ready {
                PodEvent::Ready
            } else {
                PodEvent::NotReady
            },
        );
        self.changed.notify_one();
    }
}

/// Runs the probes until a startup or liveness probe fails; returns which.
async fn probe(pod: &Pod, probes: &Probes, readiness: &Readiness) -> ProbeKind {
    if let Some(startup) = &probes.startup
        && !run_until_decided(pod, startup, ProbeKind::Startup).await
    {
        return ProbeKind::Startup;
    }
    let liveness = async {
        match &probes.liveness {
            Some(spec) => {
                // A liveness probe never passes for good: this returns only on failure.
                run_until_decided(pod, spec, ProbeKind::Liveness).await;
                ProbeKind::Liveness
            }
            None => std::future::pending().await,
        }
    };
    let ready = async {
        match &probes.readiness {
            None => readiness.set(true),
            Some(spec) => {
                tokio::time::sleep(spec.initial_delay).await;
                let mut tracker = ProbeTracker::new(ProbeKind::Readiness, spec);
                let mut tick = tokio::time::interval(spec.period);
                loop {
                    tick.tick().await;
                    let ok = check(pod, spec).await;
                    tracker.observe(ok);
                    readiness.set(tracker.state() == ProbeState::Ready);
                }
            }
        }
        // Readiness never restarts anything: only the liveness arm ends the select.
        std::future::pending::<ProbeKind>().await
    };
    tokio::select! {
        failed = liveness => failed,
        failed = ready => failed,
    }
}

/// Runs a startup or liveness probe until its tracker decides: `true` when a startup probe
/// passed (a liveness probe never passes for good), `false` when the probe failed.
async fn run_until_decided(pod: &Pod, spec: &ProbeSpec, kind: ProbeKind) -> bool {
    tokio::time::sleep(spec.initial_delay).await;
    let mut tracker = ProbeTracker::new(kind, spec);
    let mut tick = tokio::time::interval(spec.period);
    loop {
        tick.tick().await;
        tracker.observe(check(pod, spec).await);
        match tracker.state() {
            ProbeState::Failed => return false,
            ProbeState::Started => return true,
            _ => {}
        }
    }
}

/// One probe, bounded by its timeout.
async fn check(pod: &Pod, spec: &ProbeSpec) -> bool {
    let port = |p: &PortRef| match p {
        PortRef::Number(n) => *n,
        // The lab's container exposes one port; any name refers to it.
        PortRef::Name(_) => pod.addr().port(),
    };
    let attempt = async {
        match &spec.action {
            ProbeAction::HttpGet { path, port: p, .. } => {
                let addr = SocketAddr::new(pod.addr().ip(), port(p));
                matches!(crate::http::get(addr, path).await, Ok(status) if (200..400).contains(&status))
            }
            ProbeAction::TcpSocket { port: p } => {
                let addr = SocketAddr::new(pod.addr().ip(), port(p));
                tokio::net::TcpStream::connect(addr).await.is_ok()
            }
            ProbeAction::Exec { command } => match command.split_first() {
                // The kubelet runs it inside the container: the pod's environment.
                Some((program, args)) => Command::new(program)
                    .args(args)
                    .envs(pod.spec().env())
                    .kill_on_drop(true)
                    .status()
                    .await
                    .is_ok_and(|s| s.success()),
                None => false,
            },
        }
    };
    tokio::time::timeout(spec.timeout.max(Duration::from_millis(1)), attempt)
        .await
        .unwrap_or(false)
}
