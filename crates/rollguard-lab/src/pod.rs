//! A pod: one real process on its own loopback address, started and terminated the way the
//! kubelet does it.
//!
//! Termination follows the kubelet: the preStop hook runs first (while, in parallel, the
//! controller removes the pod's endpoint), then the main process gets SIGTERM; the grace
//! period counts from the start of preStop, and when it expires the whole process group is
//! SIGKILLed. A preStop hook still running at expiry gets the kubelet's one-off 2 s
//! extension, then SIGTERM, then SIGKILL. Every step is written to a [`Journal`] with its
//! time, so failed requests can later be matched with what their pod was doing.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::sync::watch;

/// The kubelet's one-off extension when preStop outlives the grace period.
const PRESTOP_EXTENSION: Duration = Duration::from_secs(2);

/// What to run for a pod and where.
#[derive(Debug, Clone)]
pub struct PodSpec {
    /// The pod's name, e.g. `app-blue-4`.
    pub name: String,
    /// Its address (a loopback address such as 127.0.1.4, like a pod IP).
    pub ip: Ipv4Addr,
    /// The port the app listens on.
    pub port: u16,
    /// The version (color) the pod runs.
    pub version: String,
    /// The program and its arguments; `{ip}`, `{port}`, `{pod}` and `{version}` are
    /// replaced in each argument.
    pub command: Vec<String>,
}

impl PodSpec {
    /// The pod's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.port))
    }

    fn expand(&self, arg: &str) -> String {
        arg.replace("{ip}", &self.ip.to_string())
            .replace("{port}", &self.port.to_string())
            .replace("{pod}", &self.name)
            .replace("{version}", &self.version)
    }

    /// The environment the app gets, as the Downward API would give it.
    pub(crate) fn env(&self) -> [(&'static str, String); 4] {
        [
            ("POD_IP", self.ip.to_string()),
            ("PORT", self.port.to_string()),
            ("POD_NAME", self.name.clone()),
            ("APP_VERSION", self.version.clone()),
        ]
    }
}

/// A preStop hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreStop {
    /// `lifecycle.preStop.sleep`: wait, with no process.
    Sleep(Duration),
    /// `lifecycle.preStop.exec`: run a command (with the pod's environment) to completion.
    Exec(Vec<String>),
    /// `lifecycle.preStop.httpGet`: one GET to the pod, answer ignored.
    HttpGet {
        /// Request path.
        path: String,
        /// Port on the pod's address.
        port: u16,
    },
}

/// How a pod is terminated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    /// The preStop hook, if any.
    pub pre_stop: Option<PreStop>,
    /// `terminationGracePeriodSeconds`, counted from the start of preStop.
    pub grace_period: Duration,
}

impl Default for Termination {
    /// No preStop hook, Kubernetes' default grace period of 30 s.
    fn default() -> Self {
        Self {
            pre_stop: None,
            grace_period: Duration::from_secs(30),
        }
    }
}

/// How a pod's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

/// What happened to a pod, as written to the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodEvent {
    /// The process started.
    Started {
        /// Its process id.
        pid: i32,
    },
    /// The pod became ready (its readiness probe passed, or it started, without one).
    Ready,
    /// The pod stopped being ready (its readiness probe failed).
    NotReady,
    /// The pod was deleted: the controller removed its endpoint and termination began
    /// (the preStop hook started, or SIGTERM is next, without one).
    TerminationStarted,
    /// The preStop hook finished (or was cut short by the grace period).
    PreStopFinished,
    /// SIGTERM was sent to the main process.
    SigtermSent,
    /// The grace period expired: SIGKILL was sent to the whole process group.
    SigkillSent,
    /// The process ended.
    Exited(ExitReason),
}

/// One journal entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// When it happened.
    pub at: Instant,
    /// Which pod.
    pub pod: String,
    /// What happened.
    pub event: PodEvent,
}

/// The time-ordered record of what every pod did. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<Entry>>>);

impl Journal {
    /// Records an event for `pod` now.
    pub fn record(&self, pod: &str, event: PodEvent) {
        tracing::debug!(pod, ?event, "pod event");
        if let Ok(mut entries) = self.0.lock() {
            entries.push(Entry {
                at: Instant::now(),
                pod: pod.to_owned(),
                event,
            });
        }
    }

    /// A copy of every entry so far, in time order.
    pub fn entries(&self) -> Vec<Entry> {
        self.0.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// How a termination ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminated {
    /// The process exited within the grace period.
    Exited(ExitReason),
    /// The grace period expired and the process group was SIGKILLed.
    Killed,
}

/// Why a pod could not start.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// The pod has no command.
    #[error("pod {0}: empty command")]
    EmptyCommand(String),
    /// The process could not be spawned.
    #[error("pod {pod}: cannot run '{program}': {source}")]
    Spawn {
        /// The pod.
        pod: String,
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A running (or exited) pod process. Dropping it SIGKILLs whatever is left of its process
/// group, so no process outlives the lab.
#[derive(Debug)]
pub struct Pod {
    spec: PodSpec,
    /// The container's current process; a restart replaces it.
    process: Mutex<Process>,
    /// Set once the pod is being deleted: it is not restarted any more.
    deleting: AtomicBool,
    journal: Journal,
}

/// One run of the container's process.
#[derive(Debug, Clone)]
struct Process {
    pgid: Pid,
    exit: watch::Receiver<Option<ExitReason>>,
}

impl Pod {
    /// Starts the pod's process in its own process group (like a container's cgroup), with
    /// the placeholders expanded and the pod's environment set.
    pub fn spawn(spec: PodSpec, journal: Journal) -> Result<Self, PodError> {
        let process = start(&spec, &journal)?;
        Ok(Self {
            spec,
            process: Mutex::new(process),
            deleting: AtomicBool::new(false),
            journal,
        })
    }

    /// Restarts the container, as the kubelet does after a failed liveness or startup
    /// probe: the process is killed the way a deletion kills it (preStop, SIGTERM, SIGKILL
    /// at the end of the grace period), then started again, same name and address. Does
    /// nothing for a pod being deleted.
    pub async fn restart(&self, termination: &Termination) -> Result<(), PodError> {
        if self.deleting.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.stop(termination).await;
        if self.deleting.load(Ordering::Relaxed) {
            return Ok(());
        }
        let process = start(&self.spec, &self.journal)?;
        if let Ok(mut current) = self.process.lock() {
            *current = process;
        }
        Ok(())
    }

    /// The pod's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The pod's address.
    pub fn addr(&self) -> SocketAddr {
        self.spec.addr()
    }

    /// What the pod runs.
    pub(crate) fn spec(&self) -> &PodSpec {
        &self.spec
    }

    /// The version the pod runs.
    pub fn version(&self) -> &str {
        &self.spec.version
    }

    /// How the current process ended, if it has.
    pub fn exited(&self) -> Option<ExitReason> {
        *self.current().exit.borrow()
    }

    /// Waits until the current process has ended.
    pub async fn wait(&self) -> ExitReason {
        let mut exit = self.current().exit;
        match exit.wait_for(Option::is_some).await {
            Ok(reason) => reason.unwrap_or(ExitReason::Code(-1)),
            // The waiter task is gone only when the runtime shuts down.
            Err(_) => ExitReason::Code(-1),
        }
    }

    /// Terminates the pod as the kubelet does on deletion: preStop, SIGTERM, SIGKILL at
    /// the end of the grace period (counted from the start of preStop).
    pub async fn terminate(&self, termination: &Termination) -> Terminated {
        self.deleting.store(true, Ordering::Relaxed);
        self.stop(termination).await
    }

    /// Stops the current process: preStop, SIGTERM, SIGKILL at grace expiry.
    async fn stop(&self, termination: &Termination) -> Terminated {
        let pgid = self.current().pgid;
        let deadline = tokio::time::Instant::now() + termination.grace_period;
        self.journal
            .record(self.name(), PodEvent::TerminationStarted);
        if let Some(hook) = &termination.pre_stop {
            let hook_deadline = deadline.max(tokio::time::Instant::now()) + PRESTOP_EXTENSION;
            let in_time = tokio::time::timeout_at(hook_deadline, self.run_pre_stop(hook)).await;
            if in_time.is_err() {
                tracing::warn!(pod = self.name(), "preStop hook outlived the grace period");
            }
            self.journal.record(self.name(), PodEvent::PreStopFinished);
        }
        if let Some(reason) = self.exited() {
            return Terminated::Exited(reason);
        }
        // Like the container runtime, SIGTERM goes to the main process (PID 1) only.
        let _ = kill(pgid, Signal::SIGTERM);
        self.journal.record(self.name(), PodEvent::SigtermSent);
        let deadline = deadline.max(tokio::time::Instant::now());
        if let Ok(reason) = tokio::time::timeout_at(deadline, self.wait()).await {
            return Terminated::Exited(reason);
        }
        self.kill();
        self.wait().await;
        Terminated::Killed
    }

    /// SIGKILLs the current process's whole group at once.
    pub fn kill(&self) {
        if self.exited().is_none() {
            self.journal.record(self.name(), PodEvent::SigkillSent);
        }
        let _ = killpg(self.current().pgid, Signal::SIGKILL);
    }

    fn current(&self) -> Process {
        match self.process.lock() {
            Ok(process) => process.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    async fn run_pre_stop(&self, hook: &PreStop) {
        match hook {
            PreStop::Sleep(d) => tokio::time::sleep(*d).await,
            PreStop::Exec(argv) => {
                let Some((program, args)) = argv.split_first() else {
                    return;
                };
                let status = Command::new(self.spec.expand(program))
                    .args(args.iter().map(|a| self.spec.expand(a)))
                    .envs(self.spec.env())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .status()
                    .await;
                if let Err(err) = status {
                    tracing::warn!(pod = self.name(), "preStop exec failed: {err}");
                }
            }
            PreStop::HttpGet { path, port } => {
                let addr = SocketAddr::from((self.spec.ip, *port));
                if let Err(err) = crate::http::get(addr, path).await {
                    tracing::warn!(pod = self.name(), "preStop httpGet failed: {err}");
                }
            }
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // The group may hold children of the app even after the app itself exited.
        let _ = killpg(self.current().pgid, Signal::SIGKILL);
    }
}

/// Starts the pod's process in its own process group (like a container's cgroup), with the
/// placeholders expanded and the pod's environment set, and a task that waits for it.
fn start(spec: &PodSpec, journal: &Journal) -> Result<Process, PodError> {
    let (program, args) = spec
        .command
        .split_first()
        .ok_or_else(|| PodError::EmptyCommand(spec.name.clone()))?;
    let program = spec.expand(program);
    let mut command = Command::new(&program);
    command
        .args(args.iter().map(|a| spec.expand(a)))
        .envs(spec.env())
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let spawn_error = |source| PodError::Spawn {
        pod: spec.name.clone(),
        program: program.clone(),
        source,
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| spawn_error(std::io::Error::other("no process id")))?;
    journal.record(&spec.name, PodEvent::Started { pid });
    let (exit_tx, exit) = watch::channel(None);
    let (name, events) = (spec.name.clone(), journal.clone());
    // The one place that waits for this process.
    tokio::spawn(async move {
        let reason = match child.wait().await {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => ExitReason::Code(code),
                (None, Some(sig)) => ExitReason::Signal(sig),
                (None, None) => ExitReason::Code(-1),
            },
            Err(_) => ExitReason::Code(-1),
        };
        events.record(&name, PodEvent::Exited(reason));
        let _ = exit_tx.send(Some(reason));
    });
    Ok(Process {
        pgid: Pid::from_raw(pid),
        exit,
    })
}
