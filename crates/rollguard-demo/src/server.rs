//! The demo app's lifecycle: when it listens, when it is ready, and what SIGTERM does to it.
//!
//! One task owns the lifecycle ([`Server::serve`]); it is the only writer of the phase and of
//! what `/health` answers, and it logs every transition with its old and new phase.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use rollguard_core::duration::format_duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinSet};
use tokio::time::{Instant, Sleep};
use tracing::{info, warn};

use crate::config::{Config, OnSigterm};
use crate::connection::serve_connection;
use crate::routes::Shared;

/// Pending connections the kernel queues for us before `accept`.
const BACKLOG: u32 = 1024;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// A demo app bound to its address, not yet serving.
///
/// Binding happens at once so that a bad or busy address is reported before any delay, and
/// so that the port of `127.0.0.1:0` is known; the socket only starts listening (accepting
/// connections) when [`serve`](Server::serve) has waited out the startup delay.
#[derive(Debug)]
pub struct Server {
    config: Config,
    addr: SocketAddr,
    socket: TcpSocket,
    shared: Arc<Shared>,
    sigterm_tx: mpsc::UnboundedSender<()>,
    sigterm_rx: mpsc::UnboundedReceiver<()>,
}

/// A way to reach a running app from outside: deliver SIGTERM, look at in-flight requests.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    sigterm: mpsc::UnboundedSender<()>,
    shared: Arc<Shared>,
}

/// How [`Server::serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// [`OnSigterm::Exit`]: stopped at once, open connections and in-flight requests were
    /// cut. A process reports this as exit status 143.
    Abandoned,
    /// [`OnSigterm::Drain`]: stopped after every connection finished. A process exits 0.
    Drained,
}

/// The app could not listen on its address (address in use, permission denied, ...).
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct ListenError {
    addr: SocketAddr,
    source: io::Error,
}

/// Where the app is in its life. Only [`Server::serve`] moves it, and logs every move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting out the startup delay: bound but not listening, connections are refused.
    Starting,
    /// Listening, but `/health` answers 503 until the ready delay has passed.
    NotReady,
    /// Listening and healthy.
    Ready,
    /// SIGTERM received: serving normally for the drain delay (`/health` per
    /// `fail_health_on_sigterm`).
    DrainDelay,
    /// SIGTERM ignored: serving until SIGKILL.
    Ignoring,
    /// Listener closed; waiting for open connections to finish.
    Draining,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Starting => "starting",
            Self::NotReady => "not-ready",
            Self::Ready => "ready",
            Self::DrainDelay => "drain-delay",
            Self::Ignoring => "ignoring-sigterm",
            Self::Draining => "draining",
        })
    }
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) for an app configured by `config`.
    pub fn bind(config: Config, addr: SocketAddr) -> Result<Server, ListenError> {
        let fail = |source| ListenError { addr, source };
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(fail)?;
        // Like every server: rebinding must work while old connections sit in TIME_WAIT.
        socket.set_reuseaddr(true).map_err(fail)?;
        socket.bind(addr).map_err(fail)?;
        let addr = socket.local_addr().map_err(fail)?;
        let shared = Arc::new(Shared::new(&config.color));
        let (sigterm_tx, sigterm_rx) = mpsc::unbounded_channel();
        Ok(Server {
            config,
            addr,
            socket,
            shared,
            sigterm_tx,
            sigterm_rx,
        })
    }

    /// The bound address, with the real port when port 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle to deliver SIGTERM to the app and observe it while it serves.
    pub fn handle(&self) -> Handle {
        Handle {
            sigterm: self.sigterm_tx.clone(),
            shared: Arc::clone(&self.shared),
        }
    }

    /// Runs the app: waits out the startup delay, listens, serves, and reacts to SIGTERM as
    /// configured. Returns only when SIGTERM makes the app exit or drain; with
    /// [`OnSigterm::Ignore`] it never returns, so drop the future (or end the process) to
    /// stop it. Dropping the future, like [`Exit::Abandoned`], cuts open connections.
    ///
    /// Each connection is served by its own task; answering a request takes no lock and, but
    /// for `/slow`, no allocation beyond hyper's. Fails only if listening fails once the
    /// startup delay is over (rare: binding already checked the address).
    pub async fn serve(self) -> Result<Exit, ListenError> {
        let Server {
            config,
            addr,
            socket,
            shared,
            // Kept alive so that `recv` waits instead of ending when every `Handle` is gone.
            sigterm_tx: _sigterm_tx,
            mut sigterm_rx,
        } = self;
        let mut startup = std::pin::pin!(tokio::time::sleep(config.startup_delay));
        // Both armed later: by listening, and by SIGTERM.
        let mut ready = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        let mut drain_delay = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        let (drain, _) = watch::channel(false);
        let mut app = Lifecycle {
            config,
            addr,
            shared,
            phase: Phase::Starting,
            warm: false,
            socket: Some(socket),
            listener: None,
            connections: JoinSet::new(),
            http: Arc::new(auto::Builder::new(TokioExecutor::new())),
            drain,
        };
        app.publish_health();
        loop {
            let step = tokio::select! {
                Some(()) = sigterm_rx.recv() => app.on_sigterm(drain_delay.as_mut()),
                () = startup.as_mut(), if app.socket.is_some() => {
                    app.listen(ready.as_mut())?;
                    ControlFlow::Continue(())
                }
                () = ready.as_mut(), if app.listener.is_some() && !app.warm => {
                    app.on_ready_delay_elapsed();
                    ControlFlow::Continue(())
                }
                () = drain_delay.as_mut(), if app.phase == Phase::DrainDelay => {
                    app.apply_sigterm()
                }
                accepted = accept(app.listener.as_ref()) => {
                    if let Err(err) = app.on_accept(accepted) {
                        warn!(%err, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    ControlFlow::Continue(())
                }
                Some(done) = app.connections.join_next() => app.on_connection_done(done),
            };
            if let ControlFlow::Break(exit) = step {
                return Ok(exit);
            }
        }
    }
}

impl Handle {
    /// Delivers SIGTERM to the app, as the CLI does when the process receives one. Does
    /// nothing once the app has stopped.
    pub fn sigterm(&self) {
        // An error only means the app has already stopped.
        let _ = self.sigterm.send(());
    }

    /// Requests being answered right now. Every route but `/slow` answers within the call,
    /// so in practice this counts `/slow` requests.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }
}

/// The state [`Server::serve`] owns while it runs.
struct Lifecycle {
    config: Config,
    addr: SocketAddr,
    shared: Arc<Shared>,
    phase: Phase,
    /// Whether the ready delay has passed since listening started.
    warm: bool,
    /// Bound, not yet listening (during the startup delay).
    socket: Option<TcpSocket>,
    listener: Option<TcpListener>,
    connections: JoinSet<()>,
    http: Arc<auto::Builder<TokioExecutor>>,
    /// Turns true when draining starts; every connection watches it.
    drain: watch::Sender<bool>,
}

impl Lifecycle {
    /// Startup delay over: start listening.
    fn listen(&mut self, ready: Pin<&mut Sleep>) -> Result<(), ListenError> {
        let Some(socket) = self.socket.take() else {
            return Ok(());
        };
        let addr = self.addr;
        let listener = socket
            .listen(BACKLOG)
            .map_err(|source| ListenError { addr, source })?;
        self.listener = Some(listener);
        if self.phase == Phase::Starting {
            let from = self.enter(Phase::NotReady);
            info!(%from, to = %self.phase, color = %self.config.color, "listening on {addr}");
        } else {
            info!(phase = %self.phase, color = %self.config.color, "listening on {addr}");
        }
        // Decided before the next `accept`, so that a zero ready delay never shows a 503.
        if self.config.ready_delay.is_zero() {
            self.on_ready_delay_elapsed();
        } else {
            ready.reset(Instant::now() + self.config.ready_delay);
        }
        Ok(())
    }

    fn on_ready_delay_elapsed(&mut self) {
        self.warm = true;
        if self.phase == Phase::NotReady {
            let from = self.enter(Phase::Ready);
            info!(%from, to = %self.phase, "ready");
        } else {
            self.publish_health();
            info!(phase = %self.phase, "ready delay over (already terminating)");
        }
    }

    fn on_sigterm(&mut self, drain_delay: Pin<&mut Sleep>) -> ControlFlow<Exit> {
        if self.config.close_keepalive_on_sigterm {
            self.shared.close_keepalive();
        }
        let on_sigterm = self.config.on_sigterm;
        let delay = self.config.drain_delay;
        match self.phase {
            Phase::Starting | Phase::NotReady | Phase::Ready => {
                if delay.is_zero() {
                    info!(phase = %self.phase, %on_sigterm, drain_delay = %format_duration(delay), "SIGTERM received");
                    return self.apply_sigterm();
                }
                let from = self.enter(Phase::DrainDelay);
                info!(%from, to = %self.phase, %on_sigterm, drain_delay = %format_duration(delay), "SIGTERM received");
                drain_delay.reset(Instant::now() + delay);
            }
            Phase::DrainDelay | Phase::Ignoring | Phase::Draining => {
                info!(phase = %self.phase, %on_sigterm, "SIGTERM received again; nothing changes");
            }
        }
        ControlFlow::Continue(())
    }

    /// Does what SIGTERM asks for, once the drain delay (if any) has passed.
    fn apply_sigterm(&mut self) -> ControlFlow<Exit> {
        let connections = self.connections.len();
        let in_flight = self.shared.in_flight();
        match self.config.on_sigterm {
            OnSigterm::Exit => {
                info!(from = %self.phase, connections, in_flight, "exiting at once, cutting open connections");
                self.connections.abort_all();
                ControlFlow::Break(Exit::Abandoned)
            }
            OnSigterm::Drain => {
                self.listener = None;
                self.socket = None;
                let from = self.enter(Phase::Draining);
                info!(%from, to = %self.phase, connections, in_flight, "draining");
                self.drain.send_replace(true);
                self.exit_if_drained()
            }
            OnSigterm::Ignore => {
                let from = self.enter(Phase::Ignoring);
                info!(%from, to = %self.phase, "ignoring SIGTERM; only SIGKILL stops the app now");
                ControlFlow::Continue(())
            }
        }
    }

    fn on_accept(&mut self, accepted: io::Result<(TcpStream, SocketAddr)>) -> io::Result<()> {
        let (stream, _peer) = accepted?;
        // Small answers must not wait for Nagle's algorithm.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY");
        }
        self.connections.spawn(serve_connection(
            stream,
            Arc::clone(&self.http),
            Arc::clone(&self.shared),
            self.drain.subscribe(),
            self.config.keepalive_timeout,
        ));
        Ok(())
    }

    fn on_connection_done(&mut self, done: Result<(), JoinError>) -> ControlFlow<Exit> {
        if let Err(err) = done {
            warn!(%err, "connection task failed");
        }
        self.exit_if_drained()
    }

    fn exit_if_drained(&self) -> ControlFlow<Exit> {
        if self.phase == Phase::Draining && self.connections.is_empty() {
            info!(from = %self.phase, "all connections closed");
            return ControlFlow::Break(Exit::Drained);
        }
        ControlFlow::Continue(())
    }

    /// Moves to `to`, updates what `/health` answers, and returns the phase left.
    fn enter(&mut self, to: Phase) -> Phase {
        let from = std::mem::replace(&mut self.phase, to);
        self.publish_health();
        from
    }

    fn publish_health(&self) {
        let healthy = match self.phase {
            Phase::Ready => true,
            Phase::DrainDelay | Phase::Ignoring => self.warm && !self.config.fail_health_on_sigterm,
            Phase::Starting | Phase::NotReady | Phase::Draining => false,
        };
        self.shared.set_healthy(healthy);
    }
}

/// Accepts the next connection, or waits forever when nothing listens.
async fn accept(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}
