//! `rollguard shim` as a real process: the drain proxy, its health endpoints and its
//! shutdown sequence, on loopback with real signals.
//!
//! Each test starts the shim with `--listen 127.0.0.1:0 --health-listen 127.0.0.1:0` and
//! reads both addresses from its log. The app behind it is either the naive demo app
//! (`rollguard demo-app --sigterm exit`, which cuts everything on SIGTERM, so any request
//! the shim failed to drain shows up as an error) or, for the proxying details, an
//! upstream HTTP/1.1 server running inside the test (the shim then runs `rollguard sleep`
//! as its command). Clients are hyper client connections, HTTP/1.1 or h2c.
//!
//! No test relies on a sleep: every wait is for a condition (a log line, an answer, an
//! exit) under a generous deadline; sleeps only pace clients. The shim is SIGKILLed and reaped when a test ends,
//! even when it fails, and its app follows through its parent-death signal.

mod common;

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Log, Proc, Scratch, free_addr, spawn_piped};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long any awaited condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_rollguard");

/// The shim's log line that starts the drain phase.
const DRAIN_LINE: &str = "phase=\"drain\"";

/// The shim's log line when the drain ended because every client connection closed.
const DRAINED_LINE: &str = "every client connection has closed";

// ---------------------------------------------------------------------------------------
// The shim process
// ---------------------------------------------------------------------------------------

/// A running `rollguard shim`, SIGKILLed and reaped when dropped.
struct Shim {
    proc: Proc,
    log: Log,
    /// Where clients connect.
    listen: SocketAddr,
    /// Where `/ready` and `/live` answer.
    health: SocketAddr,
}

impl Drop for Shim {
    /// A test that fails shows what the shim and its app logged, whatever step failed.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("shim log:\n{}", self.log.dump());
        }
    }
}

impl Shim {
    /// Starts `rollguard shim --upstream UPSTREAM FLAGS -- COMMAND` on free loopback ports
    /// and waits until the proxy and the health endpoints listen.
    async fn start(upstream: SocketAddr, flags: &[&str], command: &[&str]) -> Shim {
        let (proc, pipe) = spawn_piped(
            Command::new(BIN)
                .args(["shim", "--listen", "127.0.0.1:0", "--health-listen"])
                .args(["127.0.0.1:0", "--upstream", &upstream.to_string()])
                .args(flags)
                .arg("--")
                .args(command)
                // The demo app logs "slow request started" at debug: it tells when one is
                // in flight.
                .env("RUST_LOG", "info,rollguard_demo=debug"),
        );
        let log = Log::reading(pipe);
        let line = log.wait_line("proxy listening on ", DEADLINE).await;
        let listen = line
            .split("proxy listening on ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|addr| addr.trim().parse().ok())
            .unwrap_or_else(|| panic!("no proxy address in {line:?}"));
        // "health endpoints on http://127.0.0.1:PORT: /ready, ..." (the wording may change).
        let line = log.wait_line("http://", DEADLINE).await;
        let health = line
            .split("http://")
            .nth(1)
            .map(|rest| {
                let end = rest
                    .find(|c: char| !(c.is_ascii_hexdigit() || ".:[]".contains(c)))
                    .unwrap_or(rest.len());
                rest[..end].trim_end_matches(':')
            })
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no health address in {line:?}"));
        Shim {
            proc,
            log,
            listen,
            health,
        }
    }

    fn signal(&self, signal: Signal) {
        self.proc.signal(signal);
    }

    fn is_running(&mut self) -> bool {
        self.proc
            .child
            .try_wait()
            .expect("look at the shim")
            .is_none()
    }

    /// Waits for the shim to exit, at most `within`.
    async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let end = Instant::now() + within;
        loop {
            if let Some(status) = self.proc.child.try_wait().expect("look at the shim") {
                return status;
            }
            assert!(
                Instant::now() < end,
                "the shim still runs {within:?} later; log:\n{}",
                self.log.dump()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for the shim to exit and checks it exited with `code`, the app's.
    async fn expect_exit(&mut self, within: Duration, code: i32) {
        let status = self.wait_exit(within).await;
        assert_eq!(
            status.code(),
            Some(code),
            "shim {status:?}; log:\n{}",
            self.log.dump()
        );
    }

    /// The status `/ready` answers (`None`: no answer).
    async fn ready(&self) -> Option<StatusCode> {
        fetch(self.health, "/ready").await.ok().map(|a| a.status)
    }

    /// Waits until `/ready` answers 200: the app listens.
    async fn wait_ready(&self) {
        let end = Instant::now() + DEADLINE;
        while self.ready().await != Some(StatusCode::OK) {
            assert!(
                Instant::now() < end,
                "/ready never answered 200; log:\n{}",
                self.log.dump()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The naive demo app on `addr` (dies at once on SIGTERM, exit 143), as the shim's command.
fn naive_app(addr: SocketAddr) -> Vec<String> {
    [
        BIN,
        "demo-app",
        "--listen",
        &addr.to_string(),
        "--sigterm",
        "exit",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A command that listens nowhere and dies of SIGTERM (exit 143): for an in-test upstream.
const SLEEPER: [&str; 3] = [BIN, "sleep", "600"];

/// Starts the shim in front of the naive demo app on a free port; waits until it is ready.
///
/// [`free_addr`] only tells that the port was free a moment ago: until the app binds it,
/// any other process (a shim or an upstream of a test running alongside, each binding
/// `127.0.0.1:0`) may take it. `/ready` would then pass for that other listener, and this
/// test's requests would reach another test's app. So the app's own "listening on" line
/// is awaited too, and when the app could not listen, the shim is started again on
/// another port.
async fn shim_with_naive_app(flags: &[&str]) -> Shim {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let app = free_addr();
        let command = naive_app(app);
        let command: Vec<&str> = command.iter().map(String::as_str).collect();
        let mut shim = Shim::start(app, flags, &command).await;
        // The app's line; the shim's own ends "{addr}, forwarding to ...".
        let listening = format!("listening on {app} ");
        let taken = format!("cannot listen on {app}");
        let end = Instant::now() + DEADLINE;
        while shim.log.find(&listening).is_none() {
            if shim.log.find(&taken).is_some() || !shim.is_running() {
                break;
            }
            assert!(
                Instant::now() < end,
                "the app never listened on {app}; log:\n{}",
                shim.log.dump()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if shim.log.find(&listening).is_none() {
            assert!(
                attempts < 3,
                "the app could not listen on a free port {attempts} times; log:\n{}",
                shim.log.dump()
            );
            continue;
        }
        shim.wait_ready().await;
        return shim;
    }
}

/// Polls `cond` until it holds, at most [`DEADLINE`].
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `fut`, or a panic naming `what` when it takes longer than [`DEADLINE`].
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

/// An HTTP/1.1 client connection: its request sender and the task driving it, whose result
/// says how the connection ended (upgrades allowed).
async fn h1<B>(addr: SocketAddr) -> (http1::SendRequest<B>, JoinHandle<hyper::Result<()>>)
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.expect("connect to the shim");
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    (sender, tokio::spawn(conn.with_upgrades()))
}

/// An h2c (prior knowledge) client connection and the task driving it.
async fn h2(
    addr: SocketAddr,
) -> (
    http2::SendRequest<Empty<Bytes>>,
    JoinHandle<hyper::Result<()>>,
) {
    let stream = TcpStream::connect(addr).await.expect("connect to the shim");
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("HTTP/2 handshake");
    (sender, tokio::spawn(conn))
}

/// `GET path` for an HTTP/1.1 connection to `addr`.
fn get(addr: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header(header::HOST, addr.to_string())
        .body(Empty::new())
        .expect("build a request")
}

/// `GET path` for an HTTP/2 connection to `addr` (the authority goes in the URI).
fn get_h2(addr: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(Empty::new())
        .expect("build a request")
}

/// A whole answer.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    /// Whether the answer tells the client to close the connection.
    fn says_close(&self) -> bool {
        says_close(&self.headers)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn says_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"))
}

/// Reads a whole answer.
async fn read_answer(resp: Response<Incoming>) -> Result<Answer, String> {
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|err| format!("the body was cut: {err}"))?
        .to_bytes();
    Ok(Answer {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    })
}

/// Sends `req` on a new HTTP/1.1 connection to `addr`; the whole answer.
async fn send(addr: SocketAddr, req: Request<Empty<Bytes>>) -> Result<Answer, String> {
    let attempt = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|err| format!("connect to {addr}: {err}"))?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| format!("handshake: {err}"))?;
        tokio::spawn(conn);
        let resp = sender
            .send_request(req)
            .await
            .map_err(|err| format!("no answer: {err}"))?;
        read_answer(resp).await
    };
    tokio::time::timeout(DEADLINE, attempt)
        .await
        .map_err(|_| format!("no answer from {addr} within {DEADLINE:?}"))?
}

/// `GET path` on a new HTTP/1.1 connection to `addr`.
async fn fetch(addr: SocketAddr, path: &str) -> Result<Answer, String> {
    send(addr, get(addr, path)).await
}

/// What one kept-alive HTTP/1.1 client saw.
#[derive(Debug, Default)]
struct Tally {
    /// 200 answers.
    answers: usize,
    /// 200 answers to requests sent after SIGTERM that kept the connection alive.
    kept_alive_after_sigterm: usize,
    /// Whether an answer said `Connection: close`.
    told_to_close: bool,
    /// Whether the shim closed the connection while it was idle, after an answer.
    closed_while_idle: bool,
    /// Everything that went wrong.
    failures: Vec<String>,
}

/// Loops `GET /` on one kept-alive HTTP/1.1 connection, `pause` apart, until an answer says
/// `Connection: close` or the connection closes between two requests. Any error or non-200
/// answer is a failure. `answered` counts 200 answers as they come.
async fn keepalive_client(
    addr: SocketAddr,
    pause: Duration,
    answered: Arc<AtomicUsize>,
    sigterm_sent: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let (mut sender, conn) = h1::<Empty<Bytes>>(addr).await;
    let end = Instant::now() + DEADLINE;
    loop {
        if Instant::now() > end {
            tally
                .failures
                .push(format!("never told to leave within {DEADLINE:?}"));
            break;
        }
        if sender.ready().await.is_err() {
            // The connection closed between two requests: nothing was cut.
            tally.closed_while_idle = true;
            break;
        }
        let after_sigterm = sigterm_sent.load(Ordering::SeqCst);
        let answer = match sender.send_request(get(addr, "/")).await {
            Ok(resp) => read_answer(resp).await,
            Err(err) => Err(format!("request failed: {err}")),
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(err) => {
                tally.failures.push(err);
                break;
            }
        };
        if answer.status != StatusCode::OK {
            tally.failures.push(format!("answered {}", answer.status));
            break;
        }
        tally.answers += 1;
        answered.fetch_add(1, Ordering::SeqCst);
        if answer.says_close() {
            tally.told_to_close = true;
            break;
        }
        if after_sigterm {
            tally.kept_alive_after_sigterm += 1;
        }
        tokio::time::sleep(pause).await;
    }
    drop(sender);
    match tokio::time::timeout(DEADLINE, conn).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => tally.failures.push(format!("connection error: {err}")),
        Ok(Err(err)) => tally.failures.push(format!("connection task: {err}")),
        Err(_) => tally
            .failures
            .push("the connection never closed".to_owned()),
    }
    tally
}

/// `GET /slow?ms=MS` on a connection of its own; the status, or what went wrong.
async fn slow_h1(addr: SocketAddr, ms: u64) -> Result<StatusCode, String> {
    let answer = fetch(addr, &format!("/slow?ms={ms}")).await?;
    Ok(answer.status)
}

// ---------------------------------------------------------------------------------------
// An upstream inside the test
// ---------------------------------------------------------------------------------------

type UpBody = BoxBody<Bytes, hyper::Error>;

/// An HTTP/1.1 server on loopback standing in for the app. `GET /headers` answers the
/// request's headers as JSON (and a few hop-by-hop headers of its own), `POST /echo`
/// streams the request body back, `GET /health` answers 200 or 503 as `healthy` says, and
/// a request with `Connection: upgrade` and `Upgrade: echo` becomes a tunnel that echoes
/// every byte.
struct Upstream {
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    /// Tunnels whose echo loop has ended.
    tunnels_closed: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the upstream");
        let addr = listener.local_addr().expect("upstream address");
        let healthy = Arc::new(AtomicBool::new(true));
        let tunnels_closed = Arc::new(AtomicUsize::new(0));
        let state = (Arc::clone(&healthy), Arc::clone(&tunnels_closed));
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (healthy, tunnels_closed) = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        upstream_answer(req, Arc::clone(&healthy), Arc::clone(&tunnels_closed))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream {
            addr,
            healthy,
            tunnels_closed,
            accept,
        }
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<UpBody> {
    let mut resp = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp
}

async fn upstream_answer(
    mut req: Request<Incoming>,
    healthy: Arc<AtomicBool>,
    tunnels_closed: Arc<AtomicUsize>,
) -> Result<Response<UpBody>, Infallible> {
    if req.headers().get(header::UPGRADE) == Some(&HeaderValue::from_static("echo")) {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let (mut read, mut write) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
            }
            tunnels_closed.fetch_add(1, Ordering::SeqCst);
        });
        let mut resp = full(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
        let headers = resp.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("echo"));
        return Ok(resp);
    }
    let resp = match req.uri().path() {
        "/health" if healthy.load(Ordering::SeqCst) => full(StatusCode::OK, "ok\n"),
        "/health" => full(StatusCode::SERVICE_UNAVAILABLE, "not yet\n"),
        "/headers" => {
            let mut seen = serde_json::Map::new();
            for name in req.headers().keys() {
                let values = req
                    .headers()
                    .get_all(name)
                    .iter()
                    .map(|v| serde_json::Value::from(v.to_str().unwrap_or("<binary>")))
                    .collect();
                seen.insert(name.as_str().to_owned(), serde_json::Value::Array(values));
            }
            let mut resp = full(StatusCode::OK, serde_json::Value::Object(seen).to_string());
            let headers = resp.headers_mut();
            headers.insert(
                header::CONNECTION,
                HeaderValue::from_static("x-resp-secret"),
            );
            headers.insert("x-resp-secret", HeaderValue::from_static("1"));
            headers.insert("keep-alive", HeaderValue::from_static("timeout=9"));
            headers.insert("x-resp-kept", HeaderValue::from_static("1"));
            resp
        }
        "/echo" => Response::new(req.into_body().boxed()),
        _ => full(StatusCode::NOT_FOUND, "no such route\n"),
    };
    Ok(resp)
}

/// A request body fed chunk by chunk through a channel.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|data| Ok(Frame::data(data))))
    }
}

// ---------------------------------------------------------------------------------------
// Draining across SIGTERM
// ---------------------------------------------------------------------------------------

/// Kept-alive HTTP/1.1 clients and slow requests in flight see no failure across SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_clients_and_slow_requests_see_no_failure_across_sigterm() {
    let mut shim = shim_with_naive_app(&["--drain-delay", "1s", "--drain-timeout", "30s"]).await;
    let sigterm_sent = Arc::new(AtomicBool::new(false));
    let counters: Vec<Arc<AtomicUsize>> = (0..4).map(|_| Arc::default()).collect();
    let clients: Vec<_> = counters
        .iter()
        .map(|answered| {
            tokio::spawn(keepalive_client(
                shim.listen,
                Duration::from_millis(10),
                Arc::clone(answered),
                Arc::clone(&sigterm_sent),
            ))
        })
        .collect();
    wait_for("every kept-alive client to get an answer", || {
        counters.iter().all(|c| c.load(Ordering::SeqCst) > 0)
    })
    .await;
    let slow: Vec<_> = (0..3)
        .map(|_| tokio::spawn(slow_h1(shim.listen, 1500)))
        .collect();
    wait_for("3 slow requests to reach the app", || {
        shim.log.count("slow request started") >= 3
    })
    .await;

    sigterm_sent.store(true, Ordering::SeqCst);
    shim.signal(Signal::SIGTERM);

    for (i, slow) in slow.into_iter().enumerate() {
        let status = within("a slow request", slow).await.expect("slow task");
        assert_eq!(status, Ok(StatusCode::OK), "slow request {i}");
    }
    let mut tallies = Vec::new();
    for client in clients {
        tallies.push(
            within("a kept-alive client", client)
                .await
                .expect("client task"),
        );
    }
    let failures: Vec<&String> = tallies.iter().flat_map(|t| &t.failures).collect();
    assert!(
        failures.is_empty(),
        "failures: {failures:#?}\n{tallies:#?}\nlog:\n{}",
        shim.log.dump()
    );
    assert!(
        tallies
            .iter()
            .all(|t| t.told_to_close || t.closed_while_idle),
        "{tallies:#?}"
    );
    assert!(
        tallies.iter().any(|t| t.told_to_close),
        "no client was told `Connection: close`: {tallies:#?}"
    );
    // During the drain delay, kept-alive connections are served normally.
    let kept: usize = tallies.iter().map(|t| t.kept_alive_after_sigterm).sum();
    assert!(kept > 0, "nothing served after SIGTERM: {tallies:#?}");

    shim.expect_exit(DEADLINE, 143).await;
    assert!(shim.log.find(DRAINED_LINE).is_some(), "{}", shim.log.dump());
}

/// Idle kept-alive connections are closed (a clean EOF) once the drain starts, not before;
/// a connection that keeps sending is told `Connection: close` instead of being cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_connections_are_closed_once_the_drain_starts() {
    let drain_delay = Duration::from_millis(500);
    let mut shim = shim_with_naive_app(&["--drain-delay", "500ms", "--drain-timeout", "60s"]).await;
    // A connection that never sends a request (a pre-connecting client). Connected first:
    // the shim accepts in order, so it is accepted once the others are answered.
    let mut silent = TcpStream::connect(shim.listen).await.expect("connect");
    let mut idle = Vec::new();
    for _ in 0..3 {
        let (mut sender, conn) = h1::<Empty<Bytes>>(shim.listen).await;
        let resp = within("an answer", sender.send_request(get(shim.listen, "/")))
            .await
            .expect("an answer");
        let answer = read_answer(resp).await.expect("a whole answer");
        assert_eq!(answer.status, StatusCode::OK);
        assert!(!answer.says_close());
        idle.push((sender, conn));
    }
    let sigterm_sent = Arc::new(AtomicBool::new(false));
    let busy = tokio::spawn(keepalive_client(
        shim.listen,
        Duration::from_millis(200),
        Arc::default(),
        Arc::clone(&sigterm_sent),
    ));

    let sigterm_at = Instant::now();
    sigterm_sent.store(true, Ordering::SeqCst);
    shim.signal(Signal::SIGTERM);

    for (i, (sender, conn)) in idle.into_iter().enumerate() {
        let ended = within("the shim to close an idle connection", conn)
            .await
            .expect("connection task");
        let closed_after = sigterm_at.elapsed();
        assert!(
            ended.is_ok(),
            "idle connection {i} ended with {ended:?}; log:\n{}",
            shim.log.dump()
        );
        assert!(
            closed_after >= drain_delay,
            "idle connection {i} closed {closed_after:?} after SIGTERM, before the drain"
        );
        drop(sender);
    }
    let mut buf = [0u8; 64];
    let read = within(
        "the shim to close the silent connection",
        silent.read(&mut buf),
    )
    .await;
    assert!(
        matches!(read, Ok(0)),
        "the silent connection saw {read:?}, not a clean EOF"
    );
    assert!(sigterm_at.elapsed() >= drain_delay);

    let tally = within("the busy client", busy).await.expect("client task");
    assert!(tally.failures.is_empty(), "{tally:#?}");
    assert!(tally.told_to_close || tally.closed_while_idle, "{tally:#?}");

    shim.expect_exit(DEADLINE, 143).await;
    assert!(shim.log.find(DRAINED_LINE).is_some(), "{}", shim.log.dump());
}

/// h2c clients get GOAWAY when the drain starts; their slow requests in flight finish 200
/// and the connections then close cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_get_goaway_and_their_slow_requests_finish() {
    let mut shim = shim_with_naive_app(&["--drain-delay", "300ms", "--drain-timeout", "60s"]).await;
    let mut conns = Vec::new();
    for _ in 0..2 {
        let (mut sender, conn) = h2(shim.listen).await;
        let resp = within("an answer", sender.send_request(get_h2(shim.listen, "/")))
            .await
            .expect("an answer");
        let answer = read_answer(resp).await.expect("a whole answer");
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.version, Version::HTTP_2);
        assert!(answer.header("x-version").is_some(), "{answer:?}");
        let slow = sender.send_request(get_h2(shim.listen, "/slow?ms=3000"));
        let slow = tokio::spawn(async move {
            match slow.await {
                Ok(resp) => read_answer(resp).await,
                Err(err) => Err(format!("no answer: {err}")),
            }
        });
        conns.push((sender, conn, slow));
    }
    wait_for("2 slow requests to reach the app", || {
        shim.log.count("slow request started") >= 2
    })
    .await;

    shim.signal(Signal::SIGTERM);
    shim.log.wait_line(DRAIN_LINE, DEADLINE).await;

    for (i, (mut sender, conn, slow)) in conns.into_iter().enumerate() {
        let answer = within(&format!("the answer to slow request {i}"), slow)
            .await
            .expect("slow task");
        let answer = answer.unwrap_or_else(|err| panic!("slow request {i}: {err}"));
        assert_eq!(answer.status, StatusCode::OK, "slow request {i}");
        assert_eq!(answer.version, Version::HTTP_2);
        // GOAWAY came before the slow answer: the connection takes no new stream.
        let more = within(
            &format!("a request after GOAWAY on connection {i}"),
            async {
                sender.ready().await?;
                sender.send_request(get_h2(shim.listen, "/")).await
            },
        )
        .await;
        assert!(
            more.is_err(),
            "connection {i} took a new request after the drain started: {more:?}"
        );
        let ended = within(&format!("connection {i} to close"), conn)
            .await
            .expect("connection task");
        assert!(ended.is_ok(), "connection {i} ended with {ended:?}");
    }
    shim.expect_exit(DEADLINE, 143).await;
    assert!(shim.log.find(DRAINED_LINE).is_some(), "{}", shim.log.dump());
}

// ---------------------------------------------------------------------------------------
// Phase timing
// ---------------------------------------------------------------------------------------

/// Sends SIGTERM, then `second` during a 60 s drain delay; the shim must stop the app at once.
async fn second_signal_skips_to_the_stop(second: Signal) {
    let mut shim = shim_with_naive_app(&["--drain-delay", "60s"]).await;
    shim.signal(Signal::SIGTERM);
    shim.log.wait_line("phase=\"propagation\"", DEADLINE).await;
    let sent = Instant::now();
    shim.signal(second);
    shim.expect_exit(DEADLINE, 143).await;
    assert!(sent.elapsed() < DEADLINE);
    assert!(
        shim.log.find("skipping to the stop").is_some(),
        "{}",
        shim.log.dump()
    );
}

/// A second SIGTERM during the drain delay skips straight to stopping the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_skips_the_drain_delay() {
    second_signal_skips_to_the_stop(Signal::SIGTERM).await;
}

/// SIGINT during the drain delay skips straight to stopping the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_skips_the_drain_delay() {
    second_signal_skips_to_the_stop(Signal::SIGINT).await;
}

/// An adaptive drain delay with no traffic ends soon after its minimum, far before its max.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptive_drain_delay_ends_early_without_traffic() {
    let mut shim = shim_with_naive_app(&["--drain-delay", "300ms..30s", "--quiet", "300ms"]).await;
    let sent = Instant::now();
    shim.signal(Signal::SIGTERM);
    shim.expect_exit(DEADLINE, 143).await;
    let took = sent.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < DEADLINE, "{took:?}");
}

/// New connections keep an adaptive drain delay going (and are served); it ends a quiet
/// time after the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_extend_an_adaptive_drain_delay() {
    let quiet = Duration::from_secs(2);
    let mut shim = shim_with_naive_app(&["--drain-delay", "100ms..30s", "--quiet", "2s"]).await;
    let sent = Instant::now();
    shim.signal(Signal::SIGTERM);
    shim.log.wait_line("phase=\"propagation\"", DEADLINE).await;
    let mut last_connect = Instant::now();
    let mut served = 0;
    while sent.elapsed() < Duration::from_millis(1500) {
        last_connect = Instant::now();
        let answer = fetch(shim.listen, "/").await.unwrap_or_else(|err| {
            panic!(
                "a new connection {:?} after SIGTERM failed: {err}; log:\n{}",
                sent.elapsed(),
                shim.log.dump()
            )
        });
        assert_eq!(answer.status, StatusCode::OK);
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served > 1);
    shim.expect_exit(DEADLINE, 143).await;
    let drain = shim.log.find(DRAIN_LINE).expect("a drain phase");
    assert!(
        last_connect.elapsed() >= quiet,
        "the shim exited {:?} after the last new connection, under --quiet {quiet:?}: {drain}",
        last_connect.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// Health endpoints
// ---------------------------------------------------------------------------------------

/// `/ready` is 503 until the app listens, 200 then, 503 at once on SIGTERM while the proxy
/// keeps serving new connections during the drain delay; `/live` is 200 throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_the_app_and_fails_at_once_on_sigterm() {
    let scratch = Scratch::new("shim-ready");
    let gate = scratch.path("go");
    let app = free_addr();
    // The app starts only once the test creates the gate file: until then nothing listens.
    let script = "while [ ! -e \"$1\" ]; do sleep 0.02; done; \
                  exec \"$2\" demo-app --listen \"$3\" --sigterm exit";
    let gate_arg = gate.to_string_lossy().into_owned();
    let app_arg = app.to_string();
    let mut shim = Shim::start(
        app,
        &["--drain-delay", "60s"],
        &["sh", "-c", script, "sh", &gate_arg, BIN, &app_arg],
    )
    .await;

    assert_eq!(
        fetch(shim.health, "/live").await.map(|a| a.status),
        Ok(StatusCode::OK)
    );
    let before = fetch(shim.health, "/ready").await.expect("an answer");
    assert_eq!(before.status, StatusCode::SERVICE_UNAVAILABLE, "{before:?}");
    let proxied = fetch(shim.listen, "/").await.expect("an answer");
    assert_eq!(proxied.status, StatusCode::BAD_GATEWAY, "{proxied:?}");

    std::fs::write(&gate, b"").expect("open the gate");
    shim.wait_ready().await;
    let page = fetch(shim.listen, "/").await.expect("an answer");
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.header("x-version"), Some("red"));

    shim.signal(Signal::SIGTERM);
    shim.log.wait_line("phase=\"unready\"", DEADLINE).await;
    let after = fetch(shim.health, "/ready").await.expect("an answer");
    assert_eq!(after.status, StatusCode::SERVICE_UNAVAILABLE, "{after:?}");
    assert_eq!(
        fetch(shim.health, "/live").await.map(|a| a.status),
        Ok(StatusCode::OK)
    );
    let page = fetch(shim.listen, "/").await.expect("an answer");
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    assert!(
        !page.says_close(),
        "closed during the drain delay: {page:?}"
    );
    assert!(shim.log.find(DRAIN_LINE).is_none());

    shim.signal(Signal::SIGTERM);
    shim.expect_exit(DEADLINE, 143).await;
}

/// With `--upstream-ready http://…/health`, `/ready` follows what the app's health says,
/// not only whether it accepts connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_the_upstream_http_check() {
    let upstream = Upstream::start().await;
    upstream.healthy.store(false, Ordering::SeqCst);
    let check = format!("http://{}/health", upstream.addr);
    let mut shim = Shim::start(
        upstream.addr,
        &["--upstream-ready", &check, "--drain-delay", "60s"],
        &SLEEPER,
    )
    .await;

    // The app accepts connections, yet says it is not healthy.
    let headers = fetch(shim.listen, "/headers").await.expect("an answer");
    assert_eq!(headers.status, StatusCode::OK);
    assert_eq!(shim.ready().await, Some(StatusCode::SERVICE_UNAVAILABLE));

    upstream.healthy.store(true, Ordering::SeqCst);
    shim.wait_ready().await;

    shim.signal(Signal::SIGTERM);
    shim.log.wait_line("phase=\"unready\"", DEADLINE).await;
    assert_eq!(shim.ready().await, Some(StatusCode::SERVICE_UNAVAILABLE));
    shim.signal(Signal::SIGINT);
    shim.expect_exit(DEADLINE, 143).await;
}

// ---------------------------------------------------------------------------------------
// Proxying
// ---------------------------------------------------------------------------------------

/// The shim answers 502 itself, on HTTP/1.1 and HTTP/2, when nothing listens upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shim_answers_502_when_the_app_does_not_answer() {
    let mut shim = Shim::start(free_addr(), &[], &SLEEPER).await;
    let answer = fetch(shim.listen, "/").await.expect("an answer");
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{answer:?}");
    assert!(
        String::from_utf8_lossy(&answer.body).contains("did not answer"),
        "{answer:?}"
    );

    let (mut sender, _conn) = h2(shim.listen).await;
    let resp = within("an answer", sender.send_request(get_h2(shim.listen, "/")))
        .await
        .expect("an answer");
    let answer = read_answer(resp).await.expect("a whole answer");
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{answer:?}");
    assert_eq!(shim.ready().await, Some(StatusCode::SERVICE_UNAVAILABLE));

    shim.signal(Signal::SIGINT);
    shim.expect_exit(DEADLINE, 143).await;
}

/// An app that closes each connection after one answer, without saying so, still answers
/// every request of a kept-alive client: each goes out on a new connection to the app, and
/// none is lost on one the app already closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_closing_each_kept_connection_still_answers_every_request() {
    const REQUESTS: usize = 30;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app = listener.local_addr().expect("app address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&accepted);
    let accept = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                // A kept-alive answer, then the connection closes.
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
                    .await;
            });
        }
    });
    let mut shim = Shim::start(app, &[], &SLEEPER).await;
    let (mut sender, _conn) = h1(shim.listen).await;
    for i in 0..REQUESTS {
        within("the client connection", sender.ready())
            .await
            .unwrap_or_else(|err| panic!("request {i}: the client connection failed: {err}"));
        let resp = within("an answer", sender.send_request(get(shim.listen, "/")))
            .await
            .unwrap_or_else(|err| panic!("request {i}: no answer: {err}"));
        let answer = read_answer(resp).await.expect("a whole answer");
        assert_eq!(answer.status, StatusCode::OK, "request {i}: {answer:?}");
        assert_eq!(answer.body, "ok\n", "request {i}: {answer:?}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), REQUESTS);
    accept.abort();
    shim.signal(Signal::SIGINT);
    shim.expect_exit(DEADLINE, 143).await;
}

/// The app sees `X-Forwarded-For` (appended) and `X-Forwarded-Proto`, and no hop-by-hop
/// header, either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_reach_the_app_and_hop_by_hop_headers_do_not() {
    let upstream = Upstream::start().await;
    let shim = Shim::start(upstream.addr, &[], &SLEEPER).await;
    let seen = |answer: &Answer| -> serde_json::Value {
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        serde_json::from_slice(&answer.body).expect("JSON headers")
    };

    let req = Request::get("/headers")
        .header(header::HOST, "example.test")
        .header("x-forwarded-for", "203.0.113.7")
        .header(header::CONNECTION, "keep-alive, x-secret")
        .header("x-secret", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header(header::TE, "trailers")
        .header("x-custom", "kept")
        .body(Empty::new())
        .expect("build a request");
    let answer = send(shim.listen, req).await.expect("an answer");
    let headers = seen(&answer);
    assert_eq!(
        headers["x-forwarded-for"],
        serde_json::json!(["203.0.113.7, 127.0.0.1"])
    );
    assert_eq!(headers["x-forwarded-proto"], serde_json::json!(["http"]));
    assert_eq!(headers["x-custom"], serde_json::json!(["kept"]));
    assert_eq!(headers["host"], serde_json::json!(["example.test"]));
    for hop in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
    ] {
        assert!(
            headers.get(hop).is_none(),
            "{hop} reached the app: {headers}"
        );
    }
    // The answer's own hop-by-hop headers stop at the shim too.
    assert_eq!(answer.header("x-resp-kept"), Some("1"), "{answer:?}");
    for hop in ["x-resp-secret", "keep-alive"] {
        assert!(
            answer.headers.get(hop).is_none(),
            "{hop} reached the client: {answer:?}"
        );
    }
    assert!(!answer.says_close(), "{answer:?}");

    // Without X-Forwarded-For the shim starts one; a client's X-Forwarded-Proto stays.
    let req = Request::get("/headers")
        .header(header::HOST, "example.test")
        .header("x-forwarded-proto", "https")
        .body(Empty::new())
        .expect("build a request");
    let headers = seen(&send(shim.listen, req).await.expect("an answer"));
    assert_eq!(headers["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(headers["x-forwarded-proto"], serde_json::json!(["https"]));

    // An HTTP/2 client's authority becomes the Host the app sees.
    let (mut sender, _conn) = h2(shim.listen).await;
    let resp = within(
        "an answer",
        sender.send_request(get_h2(shim.listen, "/headers")),
    )
    .await
    .expect("an answer");
    let answer = read_answer(resp).await.expect("a whole answer");
    let headers = seen(&answer);
    assert_eq!(
        headers["host"],
        serde_json::json!([shim.listen.to_string()])
    );
    assert_eq!(headers["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(headers["x-forwarded-proto"], serde_json::json!(["http"]));
}

/// Every earlier hop of a multi-line `X-Forwarded-For` reaches the app, before the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_keeps_every_earlier_hop() {
    let upstream = Upstream::start().await;
    let shim = Shim::start(upstream.addr, &[], &SLEEPER).await;
    // Two field lines of one header are one comma-separated list (RFC 9110, 5.3).
    let req = Request::get("/headers")
        .header(header::HOST, "example.test")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-for", "198.51.100.9")
        .body(Empty::new())
        .expect("build a request");
    let answer = send(shim.listen, req).await.expect("an answer");
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let headers: serde_json::Value = serde_json::from_slice(&answer.body).expect("JSON headers");
    let chain: Vec<&str> = headers["x-forwarded-for"]
        .as_array()
        .expect("x-forwarded-for reached the app")
        .iter()
        .filter_map(|v| v.as_str())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    assert_eq!(
        chain,
        ["203.0.113.7", "198.51.100.9", "127.0.0.1"],
        "the app saw X-Forwarded-For {}",
        headers["x-forwarded-for"]
    );
}

/// An upgrade asked for on a kept-alive connection during the drain keeps its
/// `Connection: upgrade`, and its tunnel works and holds the drain until it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_during_the_drain_keeps_its_headers() {
    let upstream = Upstream::start().await;
    // A long idle time, so that the kept-alive connection is still open in the drain.
    let mut shim = Shim::start(
        upstream.addr,
        &[
            "--drain-delay",
            "0s",
            "--drain-idle",
            "60s",
            "--drain-timeout",
            "60s",
        ],
        &SLEEPER,
    )
    .await;
    let (mut sender, _conn) = h1::<Empty<Bytes>>(shim.listen).await;
    let resp = within(
        "an answer",
        sender.send_request(get(shim.listen, "/headers")),
    )
    .await
    .expect("an answer");
    let answer = read_answer(resp).await.expect("a whole answer");
    assert!(!answer.says_close(), "{answer:?}");

    shim.signal(Signal::SIGTERM);
    shim.log.wait_line(DRAIN_LINE, DEADLINE).await;
    let req = Request::get("/tunnel")
        .header(header::HOST, shim.listen.to_string())
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "echo")
        .body(Empty::new())
        .expect("build a request");
    let resp = within("the upgrade", async {
        sender.ready().await?;
        sender.send_request(req).await
    })
    .await
    .expect("an answer");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS, "{resp:?}");
    let connection = resp.headers().get(header::CONNECTION).cloned();
    assert_eq!(
        connection,
        Some(HeaderValue::from_static("upgrade")),
        "{resp:?}"
    );
    let upgraded = within("the upgraded connection", hyper::upgrade::on(resp))
        .await
        .expect("an upgraded connection");
    let mut tunnel = TokioIo::new(upgraded);
    round_trip(&mut tunnel, b"upgraded while draining\n").await;
    assert!(shim.is_running(), "{}", shim.log.dump());
    tunnel.shutdown().await.expect("close the tunnel");
    let mut rest = Vec::new();
    let read = within("the tunnel to close", tunnel.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(0)), "{read:?}");
    shim.expect_exit(DEADLINE, 143).await;
    assert!(shim.log.find(DRAINED_LINE).is_some(), "{}", shim.log.dump());
}

/// Request bodies stream through to the app and back: a chunked 4 MiB upload is echoed
/// while it is being sent, and a 3 MiB one with a Content-Length comes back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_stream_through_both_ways() {
    let upstream = Upstream::start().await;
    let shim = Shim::start(upstream.addr, &[], &SLEEPER).await;

    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 64;
    let chunk = |i: usize| Bytes::from(vec![u8::try_from(i % 251).expect("byte"); CHUNK]);
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let (mut sender, _conn) = h1::<ChannelBody>(shim.listen).await;
    let req = Request::post("/echo")
        .header(header::HOST, shim.listen.to_string())
        .body(ChannelBody(rx))
        .expect("build a request");
    tx.send(chunk(0)).await.expect("send the first chunk");
    let resp = within("the echo to start", sender.send_request(req))
        .await
        .expect("an answer");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut echoed = Vec::new();
    // The first chunk comes back before the rest is sent: nothing buffers the whole body.
    while echoed.len() < CHUNK {
        let frame = within("the first chunk's echo", body.frame())
            .await
            .expect("the echo ended early")
            .expect("the echo was cut");
        if let Ok(data) = frame.into_data() {
            echoed.extend_from_slice(&data);
        }
    }
    let feeder = tokio::spawn(async move {
        for i in 1..CHUNKS {
            tx.send(chunk(i)).await.expect("send a chunk");
        }
    });
    let rest = within("the rest of the echo", body.collect())
        .await
        .expect("the echo was cut");
    echoed.extend_from_slice(&rest.to_bytes());
    feeder.await.expect("feeder task");
    let sent: Vec<u8> = (0..CHUNKS).flat_map(|i| chunk(i).to_vec()).collect();
    assert_eq!(echoed.len(), sent.len());
    assert!(echoed == sent, "the echo differs from the upload");

    let upload = Bytes::from(
        (0..3 * 1024 * 1024)
            .map(|i| (i % 253) as u8)
            .collect::<Vec<u8>>(),
    );
    let (mut sender, _conn) = h1::<Full<Bytes>>(shim.listen).await;
    let req = Request::post("/echo")
        .header(header::HOST, shim.listen.to_string())
        .body(Full::new(upload.clone()))
        .expect("build a request");
    let resp = within("an answer", sender.send_request(req))
        .await
        .expect("an answer");
    let answer = within("the echo", read_answer(resp))
        .await
        .expect("a whole echo");
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body == upload, "the echo differs from the upload");
}

/// Opens an `Upgrade: echo` tunnel through the shim and checks one round trip.
async fn open_tunnel(shim: &Shim) -> TokioIo<hyper::upgrade::Upgraded> {
    let (mut sender, _conn) = h1::<Empty<Bytes>>(shim.listen).await;
    let req = Request::get("/tunnel")
        .header(header::HOST, shim.listen.to_string())
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "echo")
        .body(Empty::new())
        .expect("build a request");
    let resp = within("the upgrade", sender.send_request(req))
        .await
        .expect("an answer");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS, "{resp:?}");
    assert_eq!(
        resp.headers().get(header::UPGRADE),
        Some(&HeaderValue::from_static("echo"))
    );
    let upgraded = within("the upgraded connection", hyper::upgrade::on(resp))
        .await
        .expect("an upgraded connection");
    let mut tunnel = TokioIo::new(upgraded);
    round_trip(&mut tunnel, b"hello through the shim\n").await;
    tunnel
}

/// Writes `bytes` into the tunnel and reads them back.
async fn round_trip(tunnel: &mut TokioIo<hyper::upgrade::Upgraded>, bytes: &[u8]) {
    within("a round trip in the tunnel", async {
        tunnel.write_all(bytes).await.expect("write to the tunnel");
        let mut back = vec![0u8; bytes.len()];
        tunnel
            .read_exact(&mut back)
            .await
            .expect("read from the tunnel");
        assert_eq!(back, bytes);
    })
    .await;
}

/// An upgraded tunnel carries bytes both ways and holds the drain open until it closes;
/// then the shim stops the app at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_tunnel_holds_the_drain_until_it_closes() {
    let upstream = Upstream::start().await;
    let mut shim = Shim::start(
        upstream.addr,
        &["--drain-delay", "100ms", "--drain-timeout", "60s"],
        &SLEEPER,
    )
    .await;
    let mut tunnel = open_tunnel(&shim).await;
    // An idle kept-alive connection: once the shim has closed it, the drain has gone past
    // its idle time, and only the tunnel keeps it open.
    let (mut sender, idle) = h1::<Empty<Bytes>>(shim.listen).await;
    let resp = within(
        "an answer",
        sender.send_request(get(shim.listen, "/headers")),
    )
    .await
    .expect("an answer");
    read_answer(resp).await.expect("a whole answer");

    shim.signal(Signal::SIGTERM);
    shim.log.wait_line(DRAIN_LINE, DEADLINE).await;
    let ended = within("the idle connection to close", idle)
        .await
        .expect("connection task");
    assert!(ended.is_ok(), "{ended:?}");
    round_trip(&mut tunnel, b"still open while draining\n").await;
    assert!(
        shim.is_running(),
        "the shim exited with a tunnel open; log:\n{}",
        shim.log.dump()
    );
    assert_eq!(upstream.tunnels_closed.load(Ordering::SeqCst), 0);

    tunnel.shutdown().await.expect("close the tunnel");
    let mut rest = Vec::new();
    let read = within("the tunnel to close", tunnel.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(0)), "{read:?}");
    shim.expect_exit(DEADLINE, 143).await;
    assert!(shim.log.find(DRAINED_LINE).is_some(), "{}", shim.log.dump());
    assert_eq!(upstream.tunnels_closed.load(Ordering::SeqCst), 1);
}

/// A tunnel that stays open does not hold the shim past the drain timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_ends_a_drain_held_by_a_tunnel() {
    let upstream = Upstream::start().await;
    let mut shim = Shim::start(
        upstream.addr,
        &["--drain-delay", "100ms", "--drain-timeout", "1s"],
        &SLEEPER,
    )
    .await;
    let mut tunnel = open_tunnel(&shim).await;
    let sent = Instant::now();
    shim.signal(Signal::SIGTERM);
    shim.expect_exit(DEADLINE, 143).await;
    assert!(sent.elapsed() >= Duration::from_millis(1100));
    assert!(
        shim.log.find("drain timeout").is_some(),
        "{}",
        shim.log.dump()
    );
    assert!(shim.log.find(DRAINED_LINE).is_none());
    // The shim is gone, and the tunnel with it.
    let mut rest = Vec::new();
    let _ = within("the tunnel to close", tunnel.read_to_end(&mut rest)).await;
}
