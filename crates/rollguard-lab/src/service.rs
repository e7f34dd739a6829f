//! The lab's Service: an L4 balancer on a stable address that behaves like kube-proxy.
//!
//! - **Its own copy of the endpoint table, late.** The controller publishes endpoints with
//!   [`Service::set_endpoints`]; the copy used to route is updated `propagation_delay` later
//!   (± jitter), as kube-proxy reprograms iptables on each node some time after an
//!   EndpointSlice change. Changes apply in the order they were made, whatever the jitter.
//! - **One endpoint per new connection, at random**, like iptables' `statistic --mode random`
//!   rules (kube-proxy's default mode), not round-robin as in IPVS mode.
//! - **Established connections stay on their pod** when the table changes, as conntrack
//!   keeps them; bytes are spliced both ways and half-closes and resets are passed on.
//! - **Nothing to route to fails at once**: with no endpoint, or when the chosen pod refuses
//!   the connection (it is gone but the copy still lists it: endpoint lag), the client's
//!   accepted connection is reset (RST), so the client sees `ECONNRESET` right away.
//!
//! Every connection and every applied table change is logged with its time: the ground
//! truth that cause attribution matches failed requests against.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

/// Pending connections the kernel queues before the Service accepts them.
const BACKLOG: u32 = 1024;
/// Bytes read at once in each direction of a spliced connection.
const SPLICE_BUFFER: usize = 16 * 1024;
/// Pause after a failed accept (e.g. out of file descriptors), so it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// One backend of the Service: a ready pod and its address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The pod's name.
    pub pod: String,
    /// Where the pod listens (its pod IP and container port).
    pub addr: SocketAddr,
}

/// How late the Service's copy of the endpoint table follows the controller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServiceConfig {
    /// How long after [`Service::set_endpoints`] the change reaches the Service's copy.
    /// Zero applies changes at once, before `set_endpoints` returns.
    pub propagation_delay: Duration,
    /// Jitter of the delay, as a fraction of it: each change waits a delay drawn uniformly
    /// from `delay × [1 - jitter, 1 + jitter]`. Clamped to `[0, 1]`.
    pub jitter: f64,
}

impl Default for ServiceConfig {
    /// One second ± 20 %: a quiet cluster's kube-proxy.
    fn default() -> Self {
        Self {
            propagation_delay: Duration::from_secs(1),
            jitter: 0.2,
        }
    }
}

/// A change of the endpoint table, as the Service applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableChange {
    /// When the controller made the change ([`Service::set_endpoints`]).
    pub requested_at: Instant,
    /// When the Service's copy took it: from then on, new connections use it.
    pub applied_at: Instant,
    /// The complete endpoint set from then on.
    pub endpoints: Vec<Endpoint>,
}

/// What came of connecting a client's connection to its endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// The table was empty: there was nothing to connect to; the client was reset.
    NoEndpoints,
    /// The connection to the endpoint is being made.
    Connecting,
    /// Connected: bytes were spliced between the client and the pod.
    Connected,
    /// The pod refused the connection (nothing listens there); the client was reset.
    Refused,
    /// Connecting failed otherwise; the client was reset.
    Failed(String),
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The Service reset the client: no endpoint, or the upstream connect failed.
    Rejected,
    /// The client half-closed first, then the pod; both sides closed cleanly.
    ClientClosed,
    /// The pod half-closed first (e.g. it closed a kept-alive connection), then the client.
    UpstreamClosed,
    /// The client's side broke (reset or gone); the pod's side was reset in turn.
    ClientReset,
    /// The pod's side broke (reset, e.g. its process died); the client was reset in turn.
    UpstreamReset,
    /// Another I/O error, prefixed with the side it happened on.
    Error(String),
    /// The Service shut down with the connection still open.
    Shutdown,
}

/// When and how a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// When the Service saw it end.
    pub at: Instant,
    /// How.
    pub how: End,
}

/// One client connection, as the Service handled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnRecord {
    /// The connection's number, in order of acceptance, from 0.
    pub id: u64,
    /// The client's address; its port identifies the connection on the client's side.
    pub client: SocketAddr,
    /// When the Service accepted it and chose its endpoint.
    pub accepted_at: Instant,
    /// The endpoint chosen, or `None` when the table was empty.
    pub endpoint: Option<Endpoint>,
    /// What came of connecting to it.
    pub upstream: Upstream,
    /// When and how it ended; `None` while it is open.
    pub ended: Option<Ended>,
}

/// A running Service: a listener on a stable address, its accept loop and its connections.
///
/// Stop it with [`Service::shutdown`]; dropping it stops it too, without waiting.
pub struct Service {
    local_addr: SocketAddr,
    config: ServiceConfig,
    shared: Arc<Shared>,
    /// Changes on their way to the Service's copy; `None` when they apply at once.
    propagation: Option<mpsc::UnboundedSender<Pending>>,
    /// Set to `true` (or dropped) to stop every task.
    stop: watch::Sender<bool>,
    /// The accept loop (which owns the connections) and the propagation task.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Service {
    /// Listens on `addr` (port 0 picks a free port) and starts accepting, with an empty
    /// endpoint table.
    ///
    /// # Errors
    ///
    /// Fails when called outside a Tokio runtime, or when `addr` cannot be listened on.
    pub fn bind(addr: SocketAddr, config: ServiceConfig) -> io::Result<Service> {
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(BACKLOG)?;
        let local_addr = listener.local_addr()?;

        let shared = Arc::new(Shared::default());
        let (stop, stopping) = watch::channel(false);
        let mut tasks =
            vec![runtime.spawn(accept_loop(listener, shared.clone(), stopping.clone()))];
        let propagation = (!config.propagation_delay.is_zero()).then(|| {
            let (queue, pending) = mpsc::unbounded_channel();
            tasks.push(runtime.spawn(propagate(shared.clone(), pending, stopping)));
            queue
        });
        Ok(Service {
            local_addr,
            config,
            shared,
            propagation,
            stop,
            tasks: Mutex::new(tasks),
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Publishes the complete set of ready endpoints, as the EndpointSlice controller does.
    /// New connections use it once it has propagated (see [`ServiceConfig`]); connections
    /// already established are not affected.
    pub fn set_endpoints(&self, endpoints: Vec<Endpoint>) {
        let requested_at = Instant::now();
        let Some(queue) = &self.propagation else {
            self.shared.apply(requested_at, endpoints);
            return;
        };
        let pending = Pending {
            requested_at,
            due: requested_at + propagation_lag(&self.config),
            endpoints,
        };
        if queue.send(pending).is_err() {
            tracing::debug!("service shut down: endpoint change dropped");
        }
    }

    /// Every connection so far, in order of acceptance (a snapshot; open ones have no end).
    pub fn connections(&self) -> Vec<ConnRecord> {
        lock(&self.shared.connections).clone()
    }

    /// Every change applied to the Service's copy of the endpoint table, in order.
    pub fn table_changes(&self) -> Vec<TableChange> {
        lock(&self.shared.changes).clone()
    }

    /// Stops accepting (the port refuses connections from then on), drops pending table
    /// changes, closes every open connection, and returns once every task has finished.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for task in tasks {
            if let Err(error) = task.await {
                tracing::warn!(%error, "service task failed");
            }
        }
    }
}

/// What the Service's tasks share.
#[derive(Default)]
struct Shared {
    /// The Service's copy of the endpoint table: what new connections are routed with.
    table: Mutex<Vec<Endpoint>>,
    changes: Mutex<Vec<TableChange>>,
    /// Indexed by connection id.
    connections: Mutex<Vec<ConnRecord>>,
}

impl Shared {
    /// Replaces the Service's copy of the table and logs the change.
    fn apply(&self, requested_at: Instant, endpoints: Vec<Endpoint>) {
        let mut table = lock(&self.table);
        let applied_at = Instant::now();
        tracing::debug!(
            old = %describe(&table),
            new = %describe(&endpoints),
            lag = ?applied_at.duration_since(requested_at),
            "service endpoint table changed",
        );
        *table = endpoints.clone();
        // Logged under the table's lock, so the log's order is the order of application.
        lock(&self.changes).push(TableChange {
            requested_at,
            applied_at,
            endpoints,
        });
    }

    /// Chooses the endpoint of a new connection and logs the connection; returns its id.
    fn route(&self, client: SocketAddr) -> (u64, Option<Endpoint>) {
        let accepted_at = Instant::now();
        let endpoint = {
            let table = lock(&self.table);
            (!table.is_empty()).then(|| table[fastrand::usize(..table.len())].clone())
        };
        let mut connections = lock(&self.connections);
        let id = connections.len() as u64;
        connections.push(ConnRecord {
            id,
            client,
            accepted_at,
            upstream: match endpoint {
                Some(_) => Upstream::Connecting,
                None => Upstream::NoEndpoints,
            },
            endpoint: endpoint.clone(),
            ended: None,
        });
        (id, endpoint)
    }

    fn update(&self, id: u64, change: impl FnOnce(&mut ConnRecord)) {
        if let Some(record) = lock(&self.connections).get_mut(id as usize) {
            change(record);
        }
    }
}

/// A change on its way to the Service's copy.
struct Pending {
    requested_at: Instant,
    due: Instant,
    endpoints: Vec<Endpoint>,
}

/// Applies changes at their due time, one after the other: a change drawn a shorter delay
/// than the one before it waits for it, so the copy never goes back to an older set.
async fn propagate(
    shared: Arc<Shared>,
    mut pending: mpsc::UnboundedReceiver<Pending>,
    mut stopping: watch::Receiver<bool>,
) {
    let changes = async {
        while let Some(change) = pending.recv().await {
            tokio::time::sleep_until(change.due.into()).await;
            shared.apply(change.requested_at, change.endpoints);
        }
    };
    tokio::select! {
        () = stopped(&mut stopping) => {}
        () = changes => {}
    }
}

/// Accepts connections until told to stop, then closes the listener and waits for every
/// connection to be closed.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut stopping) => break,
            accepted = listener.accept() => match accepted {
                Ok((client, addr)) => {
                    // Routed at accept time, as iptables routes at the SYN.
                    let (id, endpoint) = shared.route(addr);
                    connections.spawn(serve(shared.clone(), id, client, endpoint, stopping.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "service cannot accept");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = done {
                    tracing::warn!(%error, "service connection task failed");
                }
            }
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Carries one connection to its end and logs how it ended.
async fn serve(
    shared: Arc<Shared>,
    id: u64,
    client: TcpStream,
    endpoint: Option<Endpoint>,
    mut stopping: watch::Receiver<bool>,
) {
    let how = match endpoint {
        None => {
            reset(client);
            End::Rejected
        }
        Some(endpoint) => tokio::select! {
            () = stopped(&mut stopping) => End::Shutdown,
            how = forward(&shared, id, client, endpoint.addr) => how,
        },
    };
    shared.update(id, |record| {
        record.ended = Some(Ended {
            at: Instant::now(),
            how,
        });
    });
}

/// Connects to the endpoint and splices; resets the client if the endpoint cannot be reached.
async fn forward(shared: &Shared, id: u64, client: TcpStream, addr: SocketAddr) -> End {
    let connected = TcpStream::connect(addr).await;
    let outcome = match &connected {
        Ok(_) => Upstream::Connected,
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => Upstream::Refused,
        Err(error) => Upstream::Failed(error.to_string()),
    };
    // Logged before the client can see anything, so its failure always has a record.
    shared.update(id, |record| record.upstream = outcome);
    let Ok(upstream) = connected else {
        reset(client);
        return End::Rejected;
    };
    splice(client, upstream).await
}

/// Copies bytes both ways until both sides have closed; a half-close is passed on as a
/// half-close, a broken side as a reset of the other side.
async fn splice(mut client: TcpStream, mut upstream: TcpStream) -> End {
    // Request/response traffic: don't hold small segments back (Nagle).
    for stream in [&client, &upstream] {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    }
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    let pumped = tokio::try_join!(
        pump(client_read, upstream_write, Side::Client),
        pump(upstream_read, client_write, Side::Upstream),
    );
    match pumped {
        Ok((client_eof, upstream_eof)) if client_eof <= upstream_eof => End::ClientClosed,
        Ok(_) => End::UpstreamClosed,
        Err(Broken { side, error }) => {
            reset(client);
            reset(upstream);
            // A peer that is gone shows as any of these, depending on when it went.
            let gone = matches!(
                error.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::NotConnected
            );
            match side {
                Side::Client if gone => End::ClientReset,
                Side::Upstream if gone => End::UpstreamReset,
                side => End::Error(format!("{}: {error}", side.name())),
            }
        }
    }
}

/// One side of a spliced connection.
#[derive(Debug, Clone, Copy)]
enum Side {
    Client,
    Upstream,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
        }
    }

    fn other(self) -> Side {
        match self {
            Side::Client => Side::Upstream,
            Side::Upstream => Side::Client,
        }
    }
}

/// An I/O error on one side of a spliced connection.
struct Broken {
    side: Side,
    error: io::Error,
}

/// Copies `from` (the `side` side) to the other side until EOF, then half-closes the other
/// side; returns when `from` reached EOF.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    side: Side,
) -> Result<Instant, Broken> {
    let broken = |side| move |error| Broken { side, error };
    let mut buffer = vec![0; SPLICE_BUFFER];
    loop {
        let n = from.read(&mut buffer).await.map_err(broken(side))?;
        if n == 0 {
            let eof = Instant::now();
            to.shutdown().await.map_err(broken(side.other()))?;
            return Ok(eof);
        }
        to.write_all(&buffer[..n])
            .await
            .map_err(broken(side.other()))?;
    }
}

/// Closes `stream` with an RST instead of a FIN, so its peer sees a reset.
fn reset(stream: TcpStream) {
    if let Err(error) = stream.set_zero_linger() {
        tracing::debug!(%error, "cannot set SO_LINGER 0");
    }
    drop(stream);
}

/// This change's delay: the configured one, jittered.
fn propagation_lag(config: &ServiceConfig) -> Duration {
    let jitter = if config.jitter.is_finite() {
        config.jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let factor = 1.0 + jitter * (2.0 * fastrand::f64() - 1.0);
    Duration::try_from_secs_f64(config.propagation_delay.as_secs_f64() * factor)
        .unwrap_or(config.propagation_delay)
}

/// Resolves once the Service is told to stop (or is dropped).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // An error means the Service was dropped: stop too.
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// `pod=addr` for each endpoint, for logs.
fn describe(endpoints: &[Endpoint]) -> String {
    let described: Vec<String> = endpoints
        .iter()
        .map(|e| format!("{}={}", e.pod, e.addr))
        .collect();
    format!("[{}]", described.join(", "))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one still holds valid data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_stays_within_the_jitter() {
        let config = ServiceConfig::default();
        for _ in 0..1000 {
            let lag = propagation_lag(&config);
            assert!(lag >= Duration::from_millis(800), "{lag:?}");
            assert!(lag <= Duration::from_millis(1200), "{lag:?}");
        }
    }

    #[test]
    fn out_of_range_jitter_is_clamped() {
        let delay = Duration::from_millis(100);
        for jitter in [-1.0, f64::NAN, f64::INFINITY] {
            let config = ServiceConfig {
                propagation_delay: delay,
                jitter,
            };
            assert_eq!(propagation_lag(&config), delay, "jitter {jitter}");
        }
        let wide = ServiceConfig {
            propagation_delay: delay,
            jitter: 5.0,
        };
        for _ in 0..1000 {
            assert!(propagation_lag(&wide) <= 2 * delay);
        }
    }
}
