//! A Deployment at work: real pods, created and deleted as the controller decides, their
//! readiness published to the Service as endpoints.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use rollguard_core::rollout::Fenceposts;

use crate::controller::{PodView, rolling_step};
use crate::pod::{ExitReason, Journal, Pod, PodError, PodSpec, Terminated, Termination};
use crate::prober::{self, Probes};

/// How a Deployment replaces its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `RollingUpdate` with its budget resolved to absolute numbers.
    RollingUpdate {
        /// Pods allowed above `replicas`.
        max_surge: u32,
        /// Pods allowed below `replicas` among the available.
        max_unavailable: u32,
    },
    /// `Recreate`: delete every old pod, wait until they are gone, then create new ones.
    Recreate,
}

/// What the lab knows of a Deployment manifest.
#[derive(Debug, Clone)]
pub struct DeploymentSpec {
    /// The Deployment's name; pods are named `NAME-VERSION-N`.
    pub name: String,
    /// Desired replicas.
    pub replicas: u32,
    /// Update strategy.
    pub strategy: Strategy,
    /// `minReadySeconds`: how long a pod must be ready to count as available.
    pub min_ready: Duration,
    /// The container's probes.
    pub probes: Probes,
    /// preStop hook and grace period.
    pub termination: Termination,
    /// The app's command; see [`PodSpec::command`] for placeholders.
    pub command: Vec<String>,
    /// The container port.
    pub port: u16,
}

/// Where the Deployment publishes the addresses of its ready pods (the lab's Service).
pub trait EndpointSink: Send + Sync {
    /// The complete set of ready endpoints, as (pod name, address) pairs.
    fn set_endpoints(&self, endpoints: Vec<(String, SocketAddr)>);
}

/// Why a rollout could not proceed.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    /// A pod could not be started.
    #[error(transparent)]
    Pod(#[from] PodError),
    /// A pod's process exited while the pod was not being deleted (the app crashed or
    /// could not start); Kubernetes would restart it in a loop, the lab stops.
    #[error(
        "pod {pod} exited ({reason}) before it was deleted: the app crashed or could not start"
    )]
    PodExited {
        /// The pod.
        pod: String,
        /// How its process ended.
        reason: String,
    },
    /// The rollout did not complete in time (e.g. new pods never become ready).
    #[error("rollout to {version} did not complete within {limit:?}: {detail}")]
    Stuck {
        /// The version being rolled out.
        version: String,
        /// The time allowed.
        limit: Duration,
        /// What the pods were doing.
        detail: String,
    },
}

/// A pod the Deployment manages.
struct Managed {
    pod: Arc<Pod>,
    /// Since when the pod has been ready, if it is.
    ready: watch::Receiver<Option<Instant>>,
    prober: JoinHandle<()>,
    /// Set once the pod is deleted: its termination in progress.
    termination: Option<JoinHandle<Terminated>>,
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.prober.abort();
    }
}

/// A Deployment: its pods and the loop that rolls them.
pub struct Deployment {
    spec: DeploymentSpec,
    journal: Journal,
    endpoints: Arc<dyn EndpointSink>,
    pods: Vec<Managed>,
    subnet: [u8; 2],
    next_host: u32,
    changed: Arc<Notify>,
    /// What was last published, so unchanged sets are not published again.
    published: Vec<(String, SocketAddr)>,
}

/// How often the controller looks again when nothing woke it (for minReadySeconds).
const TICK: Duration = Duration::from_millis(50);

impl Deployment {
    /// A Deployment with no pods yet. Pods get addresses 127.`subnet`.N, like pod IPs.
    pub fn new(
        spec: DeploymentSpec,
        journal: Journal,
        endpoints: Arc<dyn EndpointSink>,
        subnet: [u8; 2],
    ) -> Self {
        Self {
            spec,
            journal,
            endpoints,
            pods: Vec::new(),
            subnet,
            next_host: 1,
            changed: Arc::new(Notify::new()),
            published: Vec::new(),
        }
    }

    /// The journal every pod of this Deployment writes to.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Rolls the Deployment to `version` (the first call creates it) and returns how long
    /// it took, from the first change to every new pod available. `pods` hears a summary
    /// of the pods' states (`2 ready, 1 starting, 1 terminating`) whenever it changes.
    pub async fn roll_to(
        &mut self,
        version: &str,
        limit: Duration,
        pods: &(dyn Fn(&str) + Sync),
    ) -> Result<Duration, DeploymentError> {
        let started = Instant::now();
        let mut last = String::new();
        loop {
            self.reap();
            self.check_crashes()?;
            let done = self.reconcile(version)?;
            let summary = self.summary();
            if summary != last {
                pods(&summary);
                last = summary;
            }
            if done {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                return Err(DeploymentError::Stuck {
                    version: version.to_owned(),
                    limit,
                    detail: self.describe(),
                });
            }
            tokio::select! {
                () = self.changed.notified() => {}
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Waits until every deleted pod has finished terminating.
    pub async fn wait_terminations(&mut self) {
        loop {
            self.reap();
            if self.pods.iter().all(|m| m.termination.is_none()) {
                return;
            }
            tokio::select! {
                () = self.changed.notified() => {}
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Kills every pod at once and waits until they are gone (end of a run, Ctrl-C).
    pub async fn shutdown(&mut self) {
        self.published.clear();
        self.endpoints.set_endpoints(Vec::new());
        for managed in &self.pods {
            managed.pod.kill();
        }
        for managed in self.pods.drain(..) {
            managed.pod.wait().await;
        }
    }

    /// One controller step; `true` when the rollout is complete.
    fn reconcile(&mut self, version: &str) -> Result<bool, DeploymentError> {
        let now = Instant::now();
        let live: Vec<&Managed> = self
            .pods
            .iter()
            .filter(|m| m.termination.is_none())
            .collect();
        let views: Vec<PodView> = live
            .iter()
            .map(|m| PodView {
                name: m.pod.name().to_owned(),
                current: m.pod.version() == version,
                available: m.ready.borrow().is_some_and(|since| {
                    now.saturating_duration_since(since) >= self.spec.min_ready
                }),
            })
            .collect();
        let (create, delete, done) = match self.spec.strategy {
            Strategy::RollingUpdate {
                max_surge,
                max_unavailable,
            } => {
                let budget = Fenceposts {
                    replicas: self.spec.replicas,
                    max_surge,
                    max_unavailable,
                };
                let step = rolling_step(&views, budget);
                (step.create, step.delete, step.done)
            }
            Strategy::Recreate => self.recreate_step(&views),
        };
        for name in &delete {
            self.delete(name);
        }
        for _ in 0..create {
            self.create(version)?;
        }
        self.publish();
        Ok(done)
    }

    /// Recreate: old pods deleted and gone before any new one starts.
    fn recreate_step(&self, views: &[PodView]) -> (u32, Vec<String>, bool) {
        let old: Vec<String> = views
            .iter()
            .filter(|v| !v.current)
            .map(|v| v.name.clone())
            .collect();
        if !old.is_empty() {
            return (0, old, false);
        }
        if self.pods.iter().any(|m| m.termination.is_some()) {
            return (0, Vec::new(), false);
        }
        let current = views.len() as u32;
        let create = self.spec.replicas.saturating_sub(current);
        let done = create == 0 && views.iter().all(|v| v.available);
        (create, Vec::new(), done)
    }

    fn create(&mut self, version: &str) -> Result<(), DeploymentError> {
        let host = self.next_host;
        self.next_host += 1;
        let spec = PodSpec {
            name: format!("{}-{version}-{host}", self.spec.name),
            ip: Ipv4Addr::new(
                127,
                self.subnet[0],
                self.subnet[1].wrapping_add((host / 250) as u8),
                (host % 250 + 1) as u8,
            ),
            port: self.spec.port,
            version: version.to_owned(),
            command: self.spec.command.clone(),
        };
        let pod = Arc::new(Pod::spawn(spec, self.journal.clone())?);
        let (prober, ready) = prober::spawn(
            pod.clone(),
            self.spec.probes.clone(),
            self.spec.termination.clone(),
            self.journal.clone(),
            self.changed.clone(),
        );
        self.pods.push(Managed {
            pod,
            ready,
            prober,
            termination: None,
        });
        Ok(())
    }

    /// Deletes a pod: its endpoint goes (at the next publish, in this same step) while,
    /// in parallel, its termination starts.
    fn delete(&mut self, name: &str) {
        let termination = self.spec.termination.clone();
        let changed = self.changed.clone();
        if let Some(managed) = self.pods.iter_mut().find(|m| m.pod.name() == name) {
            let pod = managed.pod.clone();
            managed.termination = Some(tokio::spawn(async move {
                let outcome = pod.terminate(&termination).await;
                changed.notify_one();
                outcome
            }));
        }
    }

    /// Fails when a pod that is not being deleted has no process any more.
    fn check_crashes(&self) -> Result<(), DeploymentError> {
        match self
            .pods
            .iter()
            .find(|m| m.termination.is_none() && m.pod.exited().is_some())
        {
            Some(m) => Err(DeploymentError::PodExited {
                pod: m.pod.name().to_owned(),
                reason: match m.pod.exited() {
                    Some(ExitReason::Code(code)) => format!("exit code {code}"),
                    Some(ExitReason::Signal(sig)) => format!("signal {sig}"),
                    None => "unknown".to_owned(),
                },
            }),
            None => Ok(()),
        }
    }

    /// Forgets pods whose termination has finished.
    fn reap(&mut self) {
        self.pods
            .retain(|m| m.termination.as_ref().is_none_or(|t| !t.is_finished()));
    }

    /// Publishes the ready pods that are not being deleted, when that set changed.
    fn publish(&mut self) {
        let endpoints: Vec<(String, SocketAddr)> = self
            .pods
            .iter()
            .filter(|m| m.termination.is_none() && m.ready.borrow().is_some())
            .map(|m| (m.pod.name().to_owned(), m.pod.addr()))
            .collect();
        if endpoints != self.published {
            self.published = endpoints.clone();
            self.endpoints.set_endpoints(endpoints);
        }
    }

    /// How many pods are in each state, e.g. `2 ready, 1 starting, 1 terminating`.
    pub fn summary(&self) -> String {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for m in &self.pods {
            let state = pod_state(m);
            match counts.iter_mut().find(|(s, _)| *s == state) {
                Some((_, n)) => *n += 1,
                None => counts.push((state, 1)),
            }
        }
        counts.sort_by_key(|(state, _)| STATES.iter().position(|s| s == state));
        counts
            .iter()
            .map(|(state, n)| format!("{n} {state}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn describe(&self) -> String {
        self.pods
            .iter()
            .map(|m| format!("{} {}", m.pod.name(), pod_state(m)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The states a pod is shown in, in display order.
const STATES: [&str; 4] = ["ready", "starting", "terminating", "exited"];

/// A pod's state as people say it: `starting` until it is first ready.
fn pod_state(m: &Managed) -> &'static str {
    match (&m.termination, m.pod.exited(), *m.ready.borrow()) {
        (Some(_), _, _) => STATES[2],
        (None, Some(_), _) => STATES[3],
        (None, None, Some(_)) => STATES[0],
        (None, None, None) => STATES[1],
    }
}
