//! The demo app in-process, over real sockets on 127.0.0.1: its routes, its readiness, and
//! what it does to connections and requests when SIGTERM arrives.
//!
//! Nothing here sleeps to synchronize: tests wait for conditions (a port that accepts, a
//! request counted in flight, a connection that closes) under a deadline.

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rollguard_demo::{Config, Exit, Handle, ListenError, OnSigterm, Server};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long any awaited condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(5);

struct App {
    addr: SocketAddr,
    handle: Handle,
    serving: JoinHandle<Result<Exit, ListenError>>,
}

impl App {
    /// Binds a port, starts serving, and returns at once (the app may not listen yet).
    fn start(config: Config) -> App {
        let server = Server::bind(config, "127.0.0.1:0".parse().unwrap()).unwrap();
        App {
            addr: server.local_addr(),
            handle: server.handle(),
            serving: tokio::spawn(server.serve()),
        }
    }

    /// Waits for `serve` to return.
    async fn exit(self) -> Exit {
        tokio::time::timeout(DEADLINE, self.serving)
            .await
            .expect("the app did not stop in time")
            .unwrap()
            .unwrap()
    }
}

/// Connects, retrying while the app is not listening yet.
async fn connect(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match TcpStream::connect(addr).await {
            Ok(stream) => return stream,
            Err(err) if err.kind() == ErrorKind::ConnectionRefused && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(err) => panic!("cannot connect to {addr}: {err}"),
        }
    }
}

/// Waits until `check` holds, polling every few milliseconds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A client connection; `closed` finishes when the server has closed it.
struct Client {
    addr: SocketAddr,
    sender: Sender,
    closed: JoinHandle<()>,
}

enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

struct Reply {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

impl Client {
    async fn http1(addr: SocketAddr) -> Client {
        let io = TokioIo::new(connect(addr).await);
        let (sender, conn) = http1::handshake(io).await.unwrap();
        let closed = tokio::spawn(async move {
            let _ = conn.await;
        });
        Client {
            addr,
            sender: Sender::H1(sender),
            closed,
        }
    }

    async fn h2c(addr: SocketAddr) -> Client {
        let io = TokioIo::new(connect(addr).await);
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
        let closed = tokio::spawn(async move {
            let _ = conn.await;
        });
        Client {
            addr,
            sender: Sender::H2(sender),
            closed,
        }
    }

    async fn try_send(&mut self, method: &str, path: &str) -> hyper::Result<Reply> {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("host", self.addr.to_string())
            .body(Empty::new())
            .unwrap();
        let response = match &mut self.sender {
            Sender::H1(sender) => sender.send_request(request).await?,
            Sender::H2(sender) => sender.send_request(request).await?,
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        })
    }

    async fn get(&mut self, path: &str) -> Reply {
        self.try_send("GET", path).await.unwrap()
    }

    /// Waits until the server has closed the connection; returns how long that took.
    async fn closed(self) -> Duration {
        let start = Instant::now();
        tokio::time::timeout(DEADLINE, self.closed)
            .await
            .expect("the server did not close the connection in time")
            .unwrap();
        start.elapsed()
    }
}

/// One request on a fresh HTTP/1.1 connection.
async fn get(addr: SocketAddr, path: &str) -> Reply {
    Client::http1(addr).await.get(path).await
}

#[tokio::test]
async fn every_route_answers_with_the_version_header() {
    let color = "green".parse().unwrap();
    let app = App::start(Config {
        color,
        ..Config::default()
    });
    let mut client = Client::http1(app.addr).await;

    let page = client.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.body.contains("<h1") && page.body.contains("background:green"));

    let health = client.get("/health").await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (StatusCode::OK, "ok\n")
    );

    let start = Instant::now();
    let slow = client.get("/slow?ms=50").await;
    assert_eq!(slow.status, StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(50));

    let bad = client.get("/slow?ms=abc").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.body.contains("ms=abc is not a whole number"),
        "{}",
        bad.body
    );
    let missing = client.get("/slow").await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert!(missing.body.contains("needs ?ms=N"), "{}", missing.body);

    let unknown = client.get("/nope").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let post = client.try_send("POST", "/").await.unwrap();
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);

    // All on one kept-alive connection, and every answer names the version.
    for reply in [page, health, slow, bad, missing, unknown, post] {
        assert_eq!(reply.header("x-version"), Some("green"), "{}", reply.status);
        assert_eq!(reply.version, Version::HTTP_11);
        assert_eq!(reply.header("connection"), None);
    }
}

#[tokio::test]
async fn h2c_with_prior_knowledge_is_served() {
    let app = App::start(Config::default());
    let mut client = Client::h2c(app.addr).await;
    for path in ["/", "/health", "/slow?ms=1"] {
        let reply = client.get(path).await;
        assert_eq!(reply.version, Version::HTTP_2);
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.header("x-version"), Some("red"));
    }
    assert_eq!(client.get("/nope").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn startup_delay_refuses_connections_until_it_listens() {
    let startup_delay = Duration::from_secs(1);
    let start = Instant::now();
    let app = App::start(Config {
        startup_delay,
        ..Config::default()
    });
    let early = TcpStream::connect(app.addr).await;
    assert_eq!(early.unwrap_err().kind(), ErrorKind::ConnectionRefused);
    let reply = get(app.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(start.elapsed() >= startup_delay);
}

#[tokio::test]
async fn ready_delay_answers_503_then_200() {
    let ready_delay = Duration::from_millis(500);
    let start = Instant::now();
    let app = App::start(Config {
        ready_delay,
        ..Config::default()
    });
    let mut client = Client::http1(app.addr).await;
    let first = client.get("/health").await;
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.header("x-version"), Some("red"));
    // Not ready does not mean not serving.
    assert_eq!(client.get("/").await.status, StatusCode::OK);
    eventually("/health answers 200", || {
        let addr = app.addr;
        async move { get(addr, "/health").await.status == StatusCode::OK }
    })
    .await;
    assert!(start.elapsed() >= ready_delay);
}

#[tokio::test]
async fn ignore_with_fail_health_on_sigterm_fails_health_but_keeps_serving() {
    let app = App::start(Config {
        on_sigterm: OnSigterm::Ignore,
        fail_health_on_sigterm: true,
        ..Config::default()
    });
    let mut client = Client::http1(app.addr).await;
    assert_eq!(client.get("/health").await.status, StatusCode::OK);
    let mut busy = Client::http1(app.addr).await;
    let slow = tokio::spawn(async move { busy.get("/slow?ms=500").await });
    eventually("the slow request is in flight", || {
        let in_flight = app.handle.in_flight();
        async move { in_flight == 1 }
    })
    .await;

    app.handle.sigterm();
    eventually("/health answers 503", || {
        let addr = app.addr;
        async move { get(addr, "/health").await.status == StatusCode::SERVICE_UNAVAILABLE }
    })
    .await;
    // Only /health changed: the rest is served as before, on old and new connections.
    assert_eq!(client.get("/").await.status, StatusCode::OK);
    assert_eq!(
        client.get("/health").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get(app.addr, "/").await.status, StatusCode::OK);
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, StatusCode::OK);
    assert_eq!(slow.header("connection"), None);

    app.handle.sigterm();
    assert_eq!(client.get("/").await.status, StatusCode::OK);
    assert!(!app.serving.is_finished(), "ignore must not stop the app");
}

#[tokio::test]
async fn keepalive_timeout_closes_an_idle_connection() {
    let keepalive_timeout = Duration::from_millis(300);
    let app = App::start(Config {
        keepalive_timeout,
        ..Config::default()
    });
    for h2c in [false, true] {
        let mut client = if h2c {
            Client::h2c(app.addr).await
        } else {
            Client::http1(app.addr).await
        };
        assert_eq!(client.get("/").await.status, StatusCode::OK);
        let idle_for = client.closed().await;
        // The server's clock starts when it answers, a little before the client sees it.
        assert!(
            idle_for >= Duration::from_millis(200),
            "closed after {idle_for:?}"
        );
    }
}

#[tokio::test]
async fn keepalive_timeout_never_cuts_a_request_in_flight() {
    let app = App::start(Config {
        keepalive_timeout: Duration::from_millis(100),
        ..Config::default()
    });
    let mut client = Client::http1(app.addr).await;
    let reply = client.get("/slow?ms=700").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "slept 700ms\n")
    );
    assert_eq!(reply.header("connection"), None);
    client.closed().await;
}

#[tokio::test]
async fn drain_finishes_in_flight_requests_and_closes_idle_connections() {
    let app = App::start(Config {
        on_sigterm: OnSigterm::Drain,
        ..Config::default()
    });
    let mut idle_h1 = Client::http1(app.addr).await;
    let mut idle_h2 = Client::h2c(app.addr).await;
    assert_eq!(idle_h1.get("/").await.status, StatusCode::OK);
    assert_eq!(idle_h2.get("/").await.status, StatusCode::OK);
    let mut busy_h1 = Client::http1(app.addr).await;
    let mut busy_h2 = Client::h2c(app.addr).await;
    let slow_h1 = tokio::spawn(async move { busy_h1.get("/slow?ms=600").await });
    let slow_h2 = tokio::spawn(async move { busy_h2.get("/slow?ms=600").await });
    eventually("both slow requests are in flight", || {
        let in_flight = app.handle.in_flight();
        async move { in_flight == 2 }
    })
    .await;

    app.handle.sigterm();
    // Idle connections go at once, long before the 60s keep-alive timeout.
    idle_h1.closed().await;
    idle_h2.closed().await;
    let slow_h1 = slow_h1.await.unwrap();
    assert_eq!(slow_h1.status, StatusCode::OK);
    assert_eq!(slow_h1.header("connection"), Some("close"));
    assert_eq!(slow_h2.await.unwrap().status, StatusCode::OK);

    let addr = app.addr;
    assert_eq!(app.exit().await, Exit::Drained);
    let after = TcpStream::connect(addr).await;
    assert_eq!(after.unwrap_err().kind(), ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn drain_delay_keeps_serving_before_draining() {
    let drain_delay = Duration::from_secs(1);
    let app = App::start(Config {
        on_sigterm: OnSigterm::Drain,
        drain_delay,
        fail_health_on_sigterm: true,
        ..Config::default()
    });
    assert_eq!(get(app.addr, "/health").await.status, StatusCode::OK);

    let sigterm_at = Instant::now();
    app.handle.sigterm();
    eventually("/health answers 503", || {
        let addr = app.addr;
        async move { get(addr, "/health").await.status == StatusCode::SERVICE_UNAVAILABLE }
    })
    .await;
    // New connections are still accepted and answered normally.
    let reply = get(app.addr, "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("connection"), None);

    assert_eq!(app.exit().await, Exit::Drained);
    assert!(sigterm_at.elapsed() >= drain_delay);
}

#[tokio::test]
async fn close_keepalive_on_sigterm_asks_kept_alive_clients_to_leave_during_the_delay() {
    let app = App::start(Config {
        on_sigterm: OnSigterm::Drain,
        drain_delay: Duration::from_secs(30),
        close_keepalive_on_sigterm: true,
        ..Config::default()
    });
    let mut client = Client::http1(app.addr).await;
    assert_eq!(client.get("/").await.header("connection"), None);
    app.handle.sigterm();
    eventually("a kept-alive answer says Connection: close", || {
        let addr = app.addr;
        async move { get(addr, "/").await.header("connection") == Some("close") }
    })
    .await;
    // The kept-alive client is told to leave with its next answer, and the server then
    // closes the connection; nothing is closed under it while idle.
    let reply = client.get("/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("connection"), Some("close"));
    client.closed().await;
}

#[tokio::test]
async fn exit_cuts_in_flight_requests_at_once() {
    let app = App::start(Config {
        on_sigterm: OnSigterm::Exit,
        ..Config::default()
    });
    let mut client = Client::http1(app.addr).await;
    let slow = tokio::spawn(async move { client.try_send("GET", "/slow?ms=30000").await });
    eventually("the slow request is in flight", || {
        let in_flight = app.handle.in_flight();
        async move { in_flight == 1 }
    })
    .await;

    app.handle.sigterm();
    assert_eq!(app.exit().await, Exit::Abandoned);
    let cut = tokio::time::timeout(DEADLINE, slow)
        .await
        .expect("the in-flight request was not cut")
        .unwrap();
    assert!(cut.is_err(), "the in-flight request got an answer");
}

#[tokio::test]
async fn bind_reports_an_address_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = Server::bind(Config::default(), addr)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("cannot listen on {addr}: ")),
        "{err}"
    );
}
