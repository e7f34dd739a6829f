//! The drain-aware reverse proxy in front of the app.
//!
//! Clients speak HTTP/1.1 or h2c to the shim; the shim speaks HTTP/1.1 to the app over
//! kept-alive connections. Plain HTTP/1.1 requests, nearly all of them, take the proxy's
//! own path ([`h1`]); the rest (HTTP/2, HTTP/1.0, upgrades, streamed request bodies) are
//! served by hyper. Bodies stream both ways; upgrades (WebSocket) become tunnels. While the shim drains, answers on HTTP/1.1 carry `Connection: close`, HTTP/2
//! connections get GOAWAY, and a kept-alive connection that sits idle for the drain idle
//! time is closed. A connection that keeps sending gets its next answer with
//! `Connection: close` instead, so the shim never closes a connection a request may be
//! travelling on.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::upstream::{Dedicated, Driver, Handoff};

mod h1;

/// Pending connections the kernel queues before `accept`.
const BACKLOG: u32 = 1024;

/// Pause after a failed `accept` (out of file descriptors, say) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// How long a pooled connection to the app may sit idle. Shorter than the keep-alive
/// timeout of common servers (Node's 5 s), so the app rarely closes one under the shim.
const POOL_IDLE: Duration = Duration::from_secs(3);

/// The body of an answer: the app's, counted while it streams, or the shim's own.
type ProxyBody = Either<Tracked, Full<Bytes>>;

/// Where the proxy listens and what it forwards to.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The address clients connect to (the container port).
    pub listen: SocketAddr,
    /// The app's address, `host:port`.
    pub upstream: Authority,
    /// While draining, a kept-alive connection idle this long is closed.
    pub drain_idle: Duration,
}

/// The proxy, bound and not yet serving.
#[derive(Debug)]
pub struct Proxy {
    listener: TcpListener,
    /// The open listener counts as active, so the drain can't end before it closes.
    listening: Active,
    shared: Arc<Shared>,
    draining: watch::Receiver<bool>,
}

/// What the supervisor sees of a running proxy.
#[derive(Debug, Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
    drain: Arc<watch::Sender<bool>>,
}

/// State shared by the accept loop, every connection and the handle.
#[derive(Debug)]
struct Shared {
    client: Client<HttpConnector, Incoming>,
    upstream: Authority,
    drain_idle: Duration,
    started: Instant,
    /// Mirrors the drain flag for the request path, which must not take a lock.
    draining: AtomicBool,
    /// When the last connection was accepted, in milliseconds since `started` plus one
    /// (zero: none yet).
    last_accept: AtomicU64,
    /// Open client connections, upgraded tunnels, and the listener while it is open: the
    /// drain is over at zero.
    active: watch::Sender<usize>,
    /// Requests whose answer has not been fully sent, tunnels included.
    in_flight: AtomicUsize,
    /// Whether the listener is open (and counted in `active`).
    listening: AtomicBool,
}

impl Proxy {
    /// Binds the listening address; fails when it is taken or not allowed.
    pub fn bind(config: &ProxyConfig) -> io::Result<(Proxy, ProxyHandle)> {
        let listener = crate::listen(config.listen, BACKLOG)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            // Closes idle pooled connections when they expire, not at the next checkout.
            .pool_timer(TokioTimer::new())
            // hyper-util's default, stated: a request that finds its pooled connection
            // closed before any of it was written goes out again on a new connection.
            .retry_canceled_requests(true)
            .build(connector);
        let shared = Arc::new(Shared {
            client,
            upstream: config.upstream.clone(),
            drain_idle: config.drain_idle,
            started: Instant::now(),
            draining: AtomicBool::new(false),
            last_accept: AtomicU64::new(0),
            active: watch::Sender::new(0),
            in_flight: AtomicUsize::new(0),
            listening: AtomicBool::new(true),
        });
        let (drain, draining) = watch::channel(false);
        let handle = ProxyHandle {
            shared: Arc::clone(&shared),
            drain: Arc::new(drain),
        };
        Ok((
            Proxy {
                listener,
                listening: Active::new(Arc::clone(&shared)),
                shared,
                draining,
            },
            handle,
        ))
    }

    /// The address it listens on (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts and serves connections until the drain starts; then closes the listener and
    /// returns, leaving open connections to finish on their own tasks.
    pub async fn serve(self) {
        let Proxy {
            listener,
            listening,
            shared,
            mut draining,
        } = self;
        let mut http = auto::Builder::new(TokioExecutor::new());
        // One flat buffer per answer, written with send(2): cheaper than writev(2) for the
        // small messages a proxy mostly carries.
        http.http1().writev(false);
        let http = Arc::new(http);
        let drain_signal = draining.clone();
        let serve = |stream, peer| {
            shared.note_accept();
            let conn = Connection::new(Arc::clone(&shared), drain_signal.clone(), peer);
            tokio::spawn(conn.serve(stream, peer, Arc::clone(&http)));
        };
        loop {
            let accepted = tokio::select! {
                biased;
                _ = draining.wait_for(|d| *d) => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => serve(stream, peer),
                Err(err) => {
                    warn!(%err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
        // Clients the kernel has already connected wait in the backlog, their requests
        // possibly sent: closing the listener would reset them. Serve them (their answers
        // say `Connection: close`), then close.
        let mut backlog = 0;
        while let Some(Ok((stream, peer))) =
            std::future::poll_fn(|cx| match listener.poll_accept(cx) {
                Poll::Ready(accepted) => Poll::Ready(Some(accepted)),
                Poll::Pending => Poll::Ready(None),
            })
            .await
        {
            backlog += 1;
            serve(stream, peer);
        }
        drop(listener);
        shared.listening.store(false, Ordering::Relaxed);
        drop(listening);
        debug!(backlog, "listener closed");
    }
}

impl ProxyHandle {
    /// Starts the drain: the listener closes, answers carry `Connection: close`, HTTP/2
    /// connections get GOAWAY, idle connections close after the drain idle time.
    pub fn start_drain(&self) {
        self.shared.draining.store(true, Ordering::Relaxed);
        self.drain.send_replace(true);
    }

    /// Completes once no client connection or tunnel is left.
    pub async fn drained(&self) {
        let mut active = self.shared.active.subscribe();
        // The sender lives in `self`, so this cannot fail.
        let _ = active.wait_for(|n| *n == 0).await;
    }

    /// Open client connections and tunnels.
    pub fn connections(&self) -> usize {
        let listening = usize::from(self.shared.listening.load(Ordering::Relaxed));
        self.shared.active.borrow().saturating_sub(listening)
    }

    /// Requests being answered right now, tunnels included.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// How long ago the last connection was accepted; `None` before the first.
    pub fn since_last_accept(&self) -> Option<Duration> {
        let stamp = self.shared.last_accept.load(Ordering::Relaxed);
        let at = self.shared.started + Duration::from_millis(stamp.checked_sub(1)?);
        Some(at.elapsed())
    }
}

impl Shared {
    fn note_accept(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last_accept.store(ms + 1, Ordering::Relaxed);
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Counts one connection or tunnel as active while it lives.
#[derive(Debug)]
struct Active(Arc<Shared>);

impl Active {
    fn new(shared: Arc<Shared>) -> Self {
        shared.active.send_modify(|n| *n += 1);
        Active(shared)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.send_modify(|n| *n -= 1);
    }
}

/// One client connection: what its service and its drain timer share.
#[derive(Debug)]
struct Connection {
    shared: Arc<Shared>,
    draining: watch::Receiver<bool>,
    opened: Instant,
    /// Requests on this connection whose answer is not fully sent.
    in_flight: AtomicUsize,
    /// When the last answer finished, in milliseconds since `opened`.
    last_done: AtomicU64,
    /// Whether the client speaks HTTP/2 (known from its first request).
    h2: AtomicBool,
    /// An HTTP/1.x client's own connection to the app.
    upstream: Dedicated,
    /// The client's address, as `X-Forwarded-For` names it.
    peer_ip: HeaderValue,
}

impl Connection {
    /// A connection, to be served by [`serve`](Connection::serve).
    fn new(shared: Arc<Shared>, draining: watch::Receiver<bool>, peer: SocketAddr) -> Arc<Self> {
        Arc::new(Connection {
            shared,
            draining,
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_done: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            upstream: Dedicated::new(),
            peer_ip: forwarded_for(peer),
        })
    }

    /// Serves the connection until it ends, on the HTTP/1.1 path while it can and with
    /// hyper from the first request that path leaves to it; once the drain starts, closes
    /// it gracefully as soon as that cuts nothing.
    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        http: Arc<auto::Builder<TokioExecutor>>,
    ) {
        let _active = Active::new(Arc::clone(&self.shared));
        if let Err(err) = stream.set_nodelay(true) {
            debug!(%err, "cannot set TCP_NODELAY");
        }
        let stream = match h1::serve(&self, stream).await {
            h1::Served::Ended => return,
            h1::Served::Other(rewound) => rewound,
        };
        let this = Arc::clone(&self);
        let service = service_fn(move |req| {
            let this = Arc::clone(&this);
            async move { Ok::<_, Infallible>(this.forward(req).await) }
        });
        let conn = http.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let mut conn = std::pin::pin!(conn);
        let mut draining = self.draining.clone();
        let mut drain_seen = false;
        let mut closing = false;
        // The I/O of this client's connection to the app, polled here (see `upstream`).
        let mut upstream: Option<Driver> = None;
        let client_wake = Arc::new(ClientWake::default());
        let client_waker = Waker::from(Arc::clone(&client_wake));
        loop {
            // Whatever ended the last round (the drain, a graceful shutdown begun) may have
            // given the client's side work to do.
            client_wake.woken.store(true, Ordering::Release);
            tokio::select! {
                // The hot branch first; no need to pick at random.
                biased;
                ended = Both {
                    client: conn.as_mut(),
                    app: &mut upstream,
                    handoff: self.upstream.handoff(),
                    wake: &client_wake,
                    waker: &client_waker,
                } => {
                    if let Err(err) = ended {
                        debug!(%err, %peer, "client connection ended with an error");
                    }
                    break;
                }
                _ = draining.wait_for(|d| *d), if !drain_seen => {
                    drain_seen = true;
                    // HTTP/2 has a race-free way to say goodbye: GOAWAY now.
                    if self.h2.load(Ordering::Relaxed) {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
                () = self.idle_for(self.shared.drain_idle), if drain_seen && !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
        // The app's side may still be finishing (an upgrade handing over its socket, an
        // answer being read): let it, on its own task, as any connection opened from now on.
        for driver in [upstream, self.upstream.handoff().close()]
            .into_iter()
            .flatten()
        {
            tokio::spawn(driver);
        }
    }

    /// Completes once the connection has had nothing in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let now = Instant::now();
            let next = if self.in_flight.load(Ordering::Acquire) > 0 {
                // Busy: its answer will say `Connection: close`; look again later.
                now + idle
            } else {
                let last = Duration::from_millis(self.last_done.load(Ordering::Relaxed));
                let idle_at = self.opened + last + idle;
                if idle_at <= now {
                    return;
                }
                idle_at
            };
            tokio::time::sleep_until(next).await;
        }
    }

    /// Forwards one request to the app and returns its answer (or the shim's 502).
    async fn forward(self: Arc<Self>, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let request = Answering::start(Arc::clone(&self));
        let version = req.version();
        if version == Version::HTTP_2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        let upgrade = is_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
        if let Err(reason) = self.prepare(&mut req, upgrade.is_some()) {
            return self.own_answer(StatusCode::BAD_REQUEST, reason, version);
        }
        let sent = if version == Version::HTTP_2 {
            // Many streams at once: the shared pool.
            self.shared.client.request(req).await.map_err(Into::into)
        } else {
            self.upstream.send(&self.shared.upstream, req).await
        };
        let mut resp = match sent {
            Ok(resp) => resp,
            Err(err) => {
                debug!(%err, upstream = %self.shared.upstream, "the app did not answer");
                return self.own_answer(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "rollguard shim: the app at {} did not answer\n",
                        self.shared.upstream
                    ),
                    version,
                );
            }
        };
        match upgrade {
            // The tunnel's own headers (`Connection: upgrade`, `Upgrade`) stay.
            Some(client_side) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                let app_side = hyper::upgrade::on(&mut resp);
                tokio::spawn(tunnel(
                    Active::new(Arc::clone(&self.shared)),
                    Flight::new(Arc::clone(&self.shared)),
                    client_side,
                    app_side,
                ));
            }
            _ => {
                strip_hop_by_hop(resp.headers_mut());
                self.close_if_draining(resp.headers_mut(), version);
            }
        }
        resp.map(|body| {
            Either::Left(Tracked {
                body,
                _request: request,
            })
        })
    }

    /// Rewrites a client's request for the app: absolute URI, HTTP/1.1, no hop-by-hop
    /// headers (but an upgrade's), `X-Forwarded-For` and `X-Forwarded-Proto`.
    fn prepare(&self, req: &mut Request<Incoming>, upgrade: bool) -> Result<(), String> {
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // HTTP/2 clients name the host in the URI (:authority), HTTP/1.0 ones may name
        // none; the app expects `Host`.
        if !req.headers().contains_key(header::HOST) {
            let host = req
                .uri()
                .authority()
                .unwrap_or(&self.shared.upstream)
                .as_str();
            if let Ok(host) = HeaderValue::from_str(host) {
                req.headers_mut().insert(header::HOST, host);
            }
        }
        // The pool (HTTP/2 clients) wants the app's address in the URI; a dedicated
        // connection sends the origin form as it is.
        *req.uri_mut() = if req.version() == Version::HTTP_2 {
            Uri::builder()
                .scheme(Scheme::HTTP)
                .authority(self.shared.upstream.clone())
                .path_and_query(path)
                .build()
                .map_err(|err| format!("rollguard shim: bad request target: {err}\n"))?
        } else {
            Uri::from(path)
        };
        *req.version_mut() = Version::HTTP_11;
        let headers = req.headers_mut();
        let kept_upgrade = if upgrade {
            headers.get(header::UPGRADE).cloned()
        } else {
            None
        };
        strip_hop_by_hop(headers);
        if let Some(protocol) = kept_upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol);
        }
        append_forwarded_for(headers, &self.peer_ip);
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
        }
        Ok(())
    }

    /// While draining, an HTTP/1.x answer closes its connection.
    fn close_if_draining(&self, headers: &mut HeaderMap, version: Version) {
        if version < Version::HTTP_2 && self.shared.is_draining() {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }

    /// An answer the shim makes itself.
    fn own_answer(
        &self,
        status: StatusCode,
        text: String,
        version: Version,
    ) -> Response<ProxyBody> {
        let mut resp = Response::new(Either::Right(Full::new(Bytes::from(text))));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        self.close_if_draining(resp.headers_mut(), version);
        resp
    }
}

/// Counts one request as in flight, on its connection and in the proxy, until dropped
/// (when its answer has been sent, or abandoned).
#[derive(Debug)]
struct Answering {
    conn: Arc<Connection>,
    _flight: Flight,
}

impl Answering {
    fn start(conn: Arc<Connection>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        let flight = Flight::new(Arc::clone(&conn.shared));
        Answering {
            conn,
            _flight: flight,
        }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        let conn = &self.conn;
        let ms = u64::try_from(conn.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        conn.last_done.store(ms, Ordering::Relaxed);
        // Release: whoever sees the count drop also sees the new `last_done`.
        conn.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// One request or tunnel in the proxy's in-flight count.
#[derive(Debug)]
struct Flight(Arc<Shared>);

impl Flight {
    fn new(shared: Arc<Shared>) -> Self {
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        Flight(shared)
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The app's answer body, streamed as it comes, keeping its request counted until the last
/// byte is sent or the client goes away.
#[derive(Debug)]
struct Tracked {
    body: Incoming,
    _request: Answering,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Polls a client connection and its connection to the app together: the client's side
/// (which hands a request over), the app's (which writes it, or reads an answer and hands
/// it back), then the client's again (which writes the answer), so that an answer is on its
/// way in the poll it arrived in. The client's side is polled only when something it waits
/// on woke it (its socket, or an answer from the app): a task woken by the app's socket
/// alone goes straight to the app's side. Completes when the client's connection ends.
struct Both<'a, C> {
    client: Pin<&'a mut C>,
    /// The connection to the app in use, if any.
    app: &'a mut Option<Driver>,
    /// Where a request that opened a new connection to the app leaves its I/O.
    handoff: &'a Handoff,
    wake: &'a ClientWake,
    /// Wakes the task through `wake`, which notes that the client's side was woken.
    waker: &'a Waker,
}

impl<C: Future> Both<'_, C> {
    /// Polls the client's side if it was woken since its last poll, then adopts the
    /// connection to the app it may have opened.
    fn poll_client(&mut self, cx: &Context<'_>) -> Poll<C::Output> {
        if !self.wake.take(cx) {
            return Poll::Pending;
        }
        let polled = self
            .client
            .as_mut()
            .poll(&mut Context::from_waker(self.waker));
        if let Some(new) = self.handoff.take() {
            // The one replaced is closed or upgraded; let it finish on its own.
            if let Some(old) = self.app.replace(new) {
                tokio::spawn(old);
            }
        }
        polled
    }
}

impl<C: Future> Future for Both<'_, C> {
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(ended) = self.poll_client(cx) {
            return Poll::Ready(ended);
        }
        if let Some(app) = self.app.as_mut()
            && app.as_mut().poll(cx).is_ready()
        {
            *self.app = None;
        }
        self.poll_client(cx)
    }
}

/// The client side's wake-ups: each wakes the connection's task and is noted, so that the
/// task polls the client's side only when it has something to do.
#[derive(Debug, Default)]
struct ClientWake {
    /// Woken since the client's side was last polled (set by the serving loop before each
    /// round, so that a round starts with a poll of the client's side).
    woken: AtomicBool,
    /// The connection's task.
    task: Mutex<Option<Waker>>,
}

impl ClientWake {
    /// Whether the client's side was woken since the last call; keeps the task's waker.
    fn take(&self, cx: &Context<'_>) -> bool {
        let mut task = self
            .task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            *task = Some(cx.waker().clone());
        }
        self.woken.swap(false, Ordering::AcqRel)
    }
}

impl Wake for ClientWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self
            .task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

/// Copies bytes both ways between an upgraded client connection and the app until either
/// side closes.
async fn tunnel(
    _active: Active,
    _flight: Flight,
    client: hyper::upgrade::OnUpgrade,
    app: hyper::upgrade::OnUpgrade,
) {
    let (client, app) = match tokio::try_join!(client, app) {
        Ok(both) => both,
        Err(err) => {
            debug!(%err, "upgrade failed");
            return;
        }
    };
    let (mut client, mut app) = (TokioIo::new(client), TokioIo::new(app));
    match tokio::io::copy_bidirectional(&mut client, &mut app).await {
        Ok((up, down)) => debug!(up, down, "tunnel closed"),
        Err(err) => debug!(%err, "tunnel ended with an error"),
    }
}

static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Headers that describe one hop and must not be passed on (RFC 9110, section 7.6.1), in
/// any case.
fn is_hop_by_hop(name: &str) -> bool {
    const HOP_BY_HOP: [&str; 8] = [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    HOP_BY_HOP.iter().any(|hop| hop.eq_ignore_ascii_case(name))
}

/// Removes the hop-by-hop headers, and those `Connection` names but `Host` and the
/// message's framing, which no hop may take away (as nginx and haproxy ignore such
/// names). Most messages carry none, so one pass over the headers decides whether anything
/// needs removing.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|name| is_hop_by_hop(name.as_str())) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| tokens(v.as_bytes()))
        .filter_map(|name| HeaderName::from_bytes(name).ok())
        .filter(|name| {
            *name != header::HOST
                && *name != header::CONTENT_LENGTH
                && *name != header::TRANSFER_ENCODING
        })
        .collect();
    for name in named {
        headers.remove(name);
    }
    let hop_by_hop: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name.as_str()))
        .cloned()
        .collect();
    for name in hop_by_hop {
        headers.remove(name);
    }
}

/// Whether an HTTP/1.1 request asks to switch protocols (`Connection: upgrade`).
fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| tokens(v.as_bytes()))
            .any(|token| token.eq_ignore_ascii_case(b"upgrade"))
}

/// Splits a comma-separated header value (`Connection`, `Transfer-Encoding`) into its
/// trimmed, non-empty items.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

/// Adds the client's address to `X-Forwarded-For`, after any addresses already there.
fn append_forwarded_for(headers: &mut HeaderMap, client: &HeaderValue) {
    // Repeated header lines are one list (RFC 9110, section 5.3): keep every earlier hop.
    let before: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if before.is_empty() {
        headers.insert(X_FORWARDED_FOR.clone(), client.clone());
        return;
    }
    let client = client.to_str().unwrap_or_default();
    if let Ok(value) = HeaderValue::from_str(&format!("{}, {client}", before.join(", "))) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
}

/// A client's address as `X-Forwarded-For` names it (IPv4-mapped addresses as IPv4).
fn forwarded_for(peer: SocketAddr) -> HeaderValue {
    let ip = peer.ip().to_canonical().to_string();
    // An IP address is always a valid header value.
    HeaderValue::from_str(&ip).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_with_those_connection_names() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn connection_cannot_name_away_the_host_or_the_framing() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("Host, content-length, x-secret"),
        );
        headers.insert(header::HOST, HeaderValue::from_static("shop"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 2, "{headers:?}");
        assert_eq!(headers[header::HOST], "shop");
        assert_eq!(headers[header::CONTENT_LENGTH], "5");
    }

    #[test]
    fn forwarded_for_appends() {
        let mut headers = HeaderMap::new();
        let peer = forwarded_for("127.0.0.9:4000".parse().expect("addr"));
        append_forwarded_for(&mut headers, &peer);
        assert_eq!(headers[&X_FORWARDED_FOR], "127.0.0.9");
        append_forwarded_for(
            &mut headers,
            &forwarded_for("[::1]:5".parse().expect("addr")),
        );
        assert_eq!(headers[&X_FORWARDED_FOR], "127.0.0.9, ::1");
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        append_forwarded_for(&mut headers, &peer);
        assert_eq!(
            headers[&X_FORWARDED_FOR],
            "127.0.0.9, ::1, 10.0.0.1, 127.0.0.9"
        );
        assert_eq!(headers.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(
            forwarded_for("[::ffff:10.1.2.3]:80".parse().expect("addr")),
            "10.1.2.3"
        );
    }
}
