//! `rollguard-shim`: an in-pod supervisor and drain-aware reverse proxy that lets any HTTP
//! app shut down during a rolling update without dropping a request, with no code change.
//!
//! The shim runs the app as its child, in a process group of its own, and can be the
//! container's PID 1: it forwards signals, reaps every zombie, and exits with the app's
//! code. On SIGTERM it runs the drain sequence, logging each phase:
//!
//! 1. **unready**: `/ready` answers 503 at once;
//! 2. **propagation**: it keeps serving normally for the drain delay, while the endpoint
//!    removal reaches every node (fixed, or adaptive: ends once no new connection has
//!    arrived for the quiet time);
//! 3. **drain**: the listener closes, HTTP/1.1 answers carry `Connection: close`, HTTP/2
//!    connections get GOAWAY, idle kept-alive connections close; in-flight requests finish;
//! 4. **stop**: the app gets the stop signal, then SIGKILL after the stop timeout.
//!
//! A second SIGTERM, or SIGINT, skips to the stop. Without the proxy (`--no-proxy`) the
//! drain phase is skipped: the shim is then a PID 1 with a built-in preStop delay.
//!
//! Without a command the shim is a sidecar proxy: it drains on SIGTERM and exits. An
//! httpGet preStop hook on `/prestop` (health endpoints) runs phases 1 to 3 without
//! stopping the app and answers once drained, so that a sidecar drains before the kubelet
//! sends SIGTERM to the app's container.

mod child;
mod health;
mod proxy;
mod signal;
mod timing;
mod upstream;

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use rollguard_core::duration::format_duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::signal::unix::SignalKind;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn};

pub use child::{SpawnError, Status, Target};
pub use health::{BadReadyCheck, ReadyCheck};
pub use proxy::ProxyConfig;
pub use signal::{BadRewrite, BadSignal, Rewrite, Rewrites, SignalArg};
pub use timing::{BadDrainDelay, Budget, DrainDelay};

use child::App;
use health::{DrainLink, Health};
use proxy::{Proxy, ProxyHandle};

/// How often the shim looks whether the app's process group is empty once the app itself
/// has exited (its members are not all the shim's children, so no SIGCHLD says so).
const GROUP_POLL: Duration = Duration::from_millis(20);

/// Everything the shim needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// The app's command and arguments.
    pub command: Vec<OsString>,
    /// The proxy in front of the app; `None` for `--no-proxy`.
    pub proxy: Option<ProxyConfig>,
    /// Where to serve `/ready` and `/live`, if anywhere.
    pub health: Option<SocketAddr>,
    /// What `/ready` checks besides the drain state.
    pub ready_check: Option<ReadyCheck>,
    /// How long to keep serving after SIGTERM.
    pub drain_delay: DrainDelay,
    /// For an adaptive delay: how long without a new connection ends it.
    pub quiet: Duration,
    /// The longest wait for in-flight requests and open connections.
    pub drain_timeout: Duration,
    /// The signal that asks the app to stop.
    pub stop_signal: Signal,
    /// How long the app gets after the stop signal before SIGKILL.
    pub stop_timeout: Duration,
    /// The pod's `terminationGracePeriodSeconds`, to check the phases against.
    pub grace_period: Duration,
    /// Where forwarded signals go.
    pub target: Target,
    /// Signal rewriting, applied to every signal sent to the app but SIGKILL.
    pub rewrites: Rewrites,
}

impl Config {
    /// The phases at their longest, against the grace period.
    pub fn budget(&self) -> Budget {
        Budget {
            drain_delay: self.drain_delay.max(),
            drain_timeout: if self.proxy.is_some() {
                self.drain_timeout
            } else {
                Duration::ZERO
            },
            stop_timeout: self.stop_timeout,
            grace_period: self.grace_period,
        }
    }
}

/// Why the shim could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The app could not be started.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// A listening address could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Listen {
        /// `the proxy` or `health checks`.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the system said.
        source: io::Error,
    },
    /// A signal handler could not be installed.
    #[error("cannot handle signals: {0}")]
    Signals(io::Error),
}

impl Error {
    /// The exit code for this failure: 127 or 126 when the app could not be started (as
    /// shells and container runtimes report it), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Spawn(err) => err.code(),
            Self::Listen { .. } | Self::Signals(_) => 1,
        }
    }
}

/// Runs the app under the shim until it has exited and its process group is gone; returns
/// how it ended. Without a command (sidecar mode) it runs the proxy until the drain is over
/// and returns `Exited(0)`. Must run on the thread that lives as long as the shim (e.g. the
/// future given to `Runtime::block_on`), which starts the app.
pub async fn run(config: Config) -> Result<Status, Error> {
    let signals = Signals::install()?;
    let pid1 = child::become_reaper();
    let draining = Arc::new(AtomicBool::new(false));
    let (prestop_tx, prestop) = mpsc::unbounded_channel();
    let (drained, drained_rx) = watch::channel(false);
    let proxy = match &config.proxy {
        Some(proxy_config) => {
            let (proxy, handle) = Proxy::bind(proxy_config).map_err(|source| Error::Listen {
                what: "the proxy",
                addr: proxy_config.listen,
                source,
            })?;
            Some((proxy, handle))
        }
        None => None,
    };
    let health = match config.health {
        Some(addr) => {
            let link = DrainLink {
                draining: Arc::clone(&draining),
                prestop: prestop_tx,
                drained: drained_rx,
            };
            let health =
                Health::bind(addr, config.ready_check.clone(), link).map_err(|source| {
                    Error::Listen {
                        what: "health checks",
                        addr,
                        source,
                    }
                })?;
            Some(health)
        }
        None => None,
    };
    if let Some(overrun) = config.budget().overrun() {
        warn!("{overrun}");
    }
    let app = if config.command.is_empty() {
        info!("no command: running as a sidecar proxy");
        None
    } else {
        let app = App::spawn(&config.command)?;
        info!(
            pid = app.pid().as_raw(),
            pid1,
            signal_target = %config.target,
            "started {}",
            describe_command(&config.command)
        );
        Some(app)
    };
    let proxy = proxy.map(|(proxy, handle)| {
        if let (Ok(addr), Some(proxy_config)) = (proxy.local_addr(), &config.proxy) {
            info!(
                "proxy listening on {addr}, forwarding to {}",
                proxy_config.upstream
            );
        }
        tokio::spawn(proxy.serve());
        handle
    });
    if let Some(health) = health {
        if let Ok(addr) = health.local_addr() {
            info!("health endpoints on http://{addr}: /ready, /live, /prestop");
        }
        tokio::spawn(health.serve());
    }
    let mut supervisor = Supervisor {
        config,
        app,
        proxy,
        draining,
        drained,
        prestop,
        phase: Phase::Serving,
        stop_after_drain: false,
        deadline: None,
        signals,
    };
    let status = supervisor.supervise().await;
    supervisor.clear_group(status).await;
    Ok(status)
}

/// Where the shim is in the app's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Serving; no SIGTERM yet.
    Serving,
    /// Unready, serving normally while endpoint removal propagates.
    Propagation { since: Instant },
    /// Closing client connections; waiting for in-flight requests.
    Drain,
    /// Drained at a preStop hook's request; the app runs until SIGTERM.
    Drained,
    /// The stop signal was sent; SIGKILL at the deadline.
    Stop,
    /// SIGKILL was sent; waiting for the app to be gone.
    Killed,
}

/// The loop that owns the app: signals, reaping, and the drain sequence.
struct Supervisor {
    config: Config,
    /// `None` in sidecar mode.
    app: Option<App>,
    proxy: Option<ProxyHandle>,
    draining: Arc<AtomicBool>,
    /// Tells `/prestop` that the drain is over.
    drained: watch::Sender<bool>,
    /// Requests from `/prestop`.
    prestop: mpsc::UnboundedReceiver<()>,
    phase: Phase,
    /// Whether SIGTERM has come, so the app is stopped once drained (a preStop hook
    /// alone drains without stopping).
    stop_after_drain: bool,
    /// When the current phase times out (its meaning depends on the phase).
    deadline: Option<Instant>,
    signals: Signals,
}

impl Supervisor {
    /// Runs until the app exits (in sidecar mode: until the stop phase); returns its status.
    async fn supervise(&mut self) -> Status {
        loop {
            // The app may have ended before the SIGCHLD handler saw it start.
            if let Some(status) = self.reap() {
                info!(phase = self.phase.name(), "the app {status}");
                return status;
            }
            if self.app.is_none() && self.phase == Phase::Stop {
                info!("drained; exiting");
                return Status::Exited(0);
            }
            let in_drain = self.phase == Phase::Drain;
            tokio::select! {
                Some(signal) = self.signals.rx.recv() => {
                    if signal != Signal::SIGCHLD {
                        self.on_signal(signal);
                    }
                }
                () = sleep_until(self.deadline) => self.on_deadline(),
                () = drained(self.proxy.as_ref()), if in_drain => {
                    self.drain_over("every client connection has closed");
                }
                Some(()) = self.prestop.recv() => self.on_prestop(),
            }
        }
    }

    /// Collects ended children; the app's status if it was among them.
    fn reap(&self) -> Option<Status> {
        // In sidecar mode there is no app, but there may be orphans to collect.
        let app = self.app.map_or(Pid::from_raw(-1), |app| app.pid());
        child::reap(app)
    }

    fn on_signal(&mut self, signal: Signal) {
        let name = signal::name(signal);
        match (signal, self.phase) {
            (Signal::SIGTERM, Phase::Serving) => {
                info!(
                    phase = "unready",
                    "SIGTERM received: /ready answers 503 from now on"
                );
                self.unready(true);
            }
            (Signal::SIGTERM, Phase::Propagation { .. } | Phase::Drain)
                if !self.stop_after_drain =>
            {
                info!(
                    phase = self.phase.name(),
                    "SIGTERM received: the app stops once drained"
                );
                self.stop_after_drain = true;
            }
            (Signal::SIGTERM, Phase::Drained) => self.stop("SIGTERM received after the drain"),
            (
                Signal::SIGTERM | Signal::SIGINT,
                Phase::Serving | Phase::Propagation { .. } | Phase::Drain | Phase::Drained,
            ) => {
                info!(
                    phase = self.phase.name(),
                    "SIG{name} received: skipping to the stop"
                );
                self.stop(&format!("SIG{name} received"));
            }
            _ => match self.app {
                Some(app) => {
                    let sent = self.config.rewrites.apply(signal);
                    info!(
                        "SIG{name} received: forwarding SIG{} to the app's {}",
                        signal::name(sent),
                        self.config.target
                    );
                    app.signal(sent, self.config.target);
                }
                None => info!("SIG{name} received: no app to forward it to"),
            },
        }
    }

    /// A preStop hook asks for the drain, without stopping the app afterwards.
    fn on_prestop(&mut self) {
        if self.phase == Phase::Serving {
            info!(
                phase = "unready",
                "preStop hook called: /ready answers 503 from now on"
            );
            self.unready(false);
        } else {
            info!(
                phase = self.phase.name(),
                "preStop hook called: already shutting down"
            );
        }
    }

    /// Phase 1: `/ready` fails from now on; then phase 2.
    fn unready(&mut self, stop_after_drain: bool) {
        self.draining.store(true, Ordering::Relaxed);
        self.stop_after_drain = stop_after_drain;
        let since = Instant::now();
        self.phase = Phase::Propagation { since };
        info!(
            phase = "propagation",
            drain_delay = %self.config.drain_delay,
            "serving normally while endpoint removal propagates"
        );
        self.on_deadline();
    }

    fn on_deadline(&mut self) {
        match self.phase {
            Phase::Serving | Phase::Drained | Phase::Killed => self.deadline = None,
            Phase::Propagation { since } => {
                let since_accept = self.proxy.as_ref().and_then(ProxyHandle::since_last_accept);
                match self.config.drain_delay.remaining(
                    since.elapsed(),
                    since_accept,
                    self.config.quiet,
                ) {
                    Some(left) => self.deadline = after(left),
                    None => self.drain(since.elapsed()),
                }
            }
            Phase::Drain => {
                let (connections, in_flight) = self
                    .proxy
                    .as_ref()
                    .map_or((0, 0), |p| (p.connections(), p.in_flight()));
                warn!(
                    connections,
                    in_flight,
                    "drain timeout ({}) reached with connections still open",
                    format_duration(self.config.drain_timeout)
                );
                self.drain_over("the drain timeout passed");
            }
            Phase::Stop => {
                warn!(
                    phase = "kill",
                    "the app is still running {} after the stop signal: sending SIGKILL to its process group",
                    format_duration(self.config.stop_timeout)
                );
                if let Some(app) = self.app {
                    app.signal(Signal::SIGKILL, Target::Group);
                }
                self.phase = Phase::Killed;
                self.deadline = None;
            }
        }
    }

    /// Phase 3: close client connections, wait for in-flight requests (with the proxy).
    fn drain(&mut self, delayed: Duration) {
        let Some(proxy) = &self.proxy else {
            self.drain_over(&format!(
                "the drain delay passed ({})",
                format_duration(delayed)
            ));
            return;
        };
        proxy.start_drain();
        info!(
            phase = "drain",
            delayed = %format_duration(delayed),
            connections = proxy.connections(),
            in_flight = proxy.in_flight(),
            drain_timeout = %format_duration(self.config.drain_timeout),
            "listener closed; answers say Connection: close, HTTP/2 gets GOAWAY; waiting for in-flight requests"
        );
        self.phase = Phase::Drain;
        self.deadline = after(self.config.drain_timeout);
    }

    /// The drain is over: stop the app if SIGTERM has come, else wait for it.
    fn drain_over(&mut self, why: &str) {
        self.drained.send_replace(true);
        if self.stop_after_drain {
            self.stop(why);
        } else {
            info!(phase = "drained", "{why}; waiting for SIGTERM");
            self.phase = Phase::Drained;
            self.deadline = None;
        }
    }

    /// Phase 4: the stop signal, then SIGKILL at the stop timeout.
    fn stop(&mut self, why: &str) {
        self.draining.store(true, Ordering::Relaxed);
        self.drained.send_replace(true);
        if let Some(proxy) = &self.proxy {
            proxy.start_drain();
        }
        self.phase = Phase::Stop;
        let Some(app) = self.app else {
            info!(phase = "stop", "{why}");
            return;
        };
        let sent = self.config.rewrites.apply(self.config.stop_signal);
        info!(
            phase = "stop",
            stop_timeout = %format_duration(self.config.stop_timeout),
            "{why}: sending SIG{} to the app's {}",
            signal::name(sent),
            self.config.target
        );
        app.signal(sent, self.config.target);
        self.deadline = after(self.config.stop_timeout);
    }

    /// The app has exited: stops whatever is left of its process group, TERM first, KILL
    /// after the stop timeout, reaping all along.
    async fn clear_group(&mut self, status: Status) {
        let Some(app) = self.app else {
            return;
        };
        if !app.group_alive() {
            return;
        }
        info!(
            stop_timeout = %format_duration(self.config.stop_timeout),
            "the app's process group still has members: sending them SIGTERM"
        );
        app.signal(Signal::SIGTERM, Target::Group);
        let kill_at = after(self.config.stop_timeout);
        let mut killed = false;
        while app.group_alive() {
            tokio::select! {
                Some(signal) = self.signals.rx.recv() => {
                    if signal == Signal::SIGCHLD {
                        child::reap(app.pid());
                    }
                }
                () = tokio::time::sleep(GROUP_POLL) => {}
            }
            if !killed && kill_at.is_some_and(|at| Instant::now() >= at) {
                warn!(
                    "members of the app's process group outlived the stop timeout: sending SIGKILL"
                );
                app.signal(Signal::SIGKILL, Target::Group);
                killed = true;
            }
        }
        info!(
            "the app's process group is gone; exiting with code {}",
            status.code()
        );
    }
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Self::Serving => "serving",
            Self::Propagation { .. } => "propagation",
            Self::Drain => "drain",
            Self::Drained => "drained",
            Self::Stop => "stop",
            Self::Killed => "kill",
        }
    }
}

/// Every signal the shim handles, funnelled into one channel. Handlers are installed
/// before the app starts, so none of its signals (SIGCHLD included) is missed.
struct Signals {
    rx: mpsc::UnboundedReceiver<Signal>,
}

impl Signals {
    fn install() -> Result<Signals, Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        let handled = [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT]
            .into_iter()
            .chain(signal::FORWARDED);
        for signal in handled {
            let mut stream = tokio::signal::unix::signal(SignalKind::from_raw(signal as i32))
                .map_err(Error::Signals)?;
            let tx = tx.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if tx.send(signal).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Signals { rx })
    }
}

/// The moment `delay` from now; `None` (never) when that is beyond what the clock can
/// hold, as for a delay of centuries.
fn after(delay: Duration) -> Option<Instant> {
    Instant::now().checked_add(delay)
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Completes once the proxy has no connection left (at once without a proxy).
async fn drained(proxy: Option<&ProxyHandle>) {
    if let Some(proxy) = proxy {
        proxy.drained().await;
    }
}

/// A listening socket on `addr`, rebindable while old connections sit in TIME_WAIT.
fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Whether a loopback connect met no listener but the socket itself (see
/// [`rollguard_core::net::connected_to_itself`]): a refused connect.
fn connected_to_itself(stream: &tokio::net::TcpStream) -> bool {
    rollguard_core::net::connected_to_itself(stream.local_addr(), stream.peer_addr())
}

/// The command as a shell would show it, for logs.
fn describe_command(command: &[OsString]) -> String {
    command
        .iter()
        .map(|arg| arg.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_socket_connected_to_itself_is_told_apart() {
        // Connecting a socket to its own loopback address is a simultaneous open with itself.
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let own = socket.local_addr().expect("local address");
        let stream = socket.connect(own).await.expect("self-connect");
        assert!(connected_to_itself(&stream));

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let addr = listener.local_addr().expect("listener address");
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        assert!(!connected_to_itself(&stream));
    }
}
