//! Black-box HTTP/1.1 conformance of the shim's proxy: what a client and an app see on
//! the wire, byte for byte where it matters.
//!
//! Each test runs the shim as a sidecar (`rollguard shim --listen 127.0.0.1:0 --upstream
//! APP`, no command) and reads its address from its log. The app is a fake written here on
//! raw sockets (a thread per connection), so each test decides the exact bytes the app
//! sends; the client is a raw `TcpStream` too, and a small reader parses what comes back.
//! The proxy may re-frame a body, drop hop-by-hop headers and add `Date`, so the tests
//! compare decoded bodies, statuses and end-to-end headers, not framing bytes, unless the
//! case is about framing.
//!
//! No test sleeps: every wait is for a condition under a deadline, and every socket has a
//! read timeout (10 s) so that a proxy that hangs fails the test instead. Where a test
//! needs the proxy to receive something in a read of its own (a response head or a chunked
//! body split across writes), the writer waits until the kernel shows the proxy's socket
//! has no unread byte left (`/proc/net/tcp`). A failed exchange prints the shim's log (at
//! debug level). The shim is SIGKILLed and reaped when a test ends, even when it fails.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::{Log, Proc, free_addr, rollguard, spawn_piped, wait_until};
use nix::sys::signal::Signal;

/// The longest any single read or write may take before the test fails.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest the shim may take to start listening.
const STARTUP: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------
// The wire: a socket, the bytes received and not yet parsed, and an HTTP/1.1 reader.
// ---------------------------------------------------------------------------------------

/// A message head: its start line and header fields in order.
#[derive(Debug, Clone)]
struct Head {
    start: String,
    fields: Vec<(String, String)>,
}

impl Head {
    /// The first value of the field `name` (case-insensitive).
    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Whether any `name` field lists `token` (comma-separated, case-insensitive).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The first word of the start line: a request's method, a response's version.
    fn first(&self) -> &str {
        self.start.split(' ').next().unwrap_or_default()
    }

    /// The second word: a request's target, a response's status code.
    fn second(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or_default()
    }

    /// A response's status code (0 when the start line has none).
    fn status(&self) -> u16 {
        self.second().parse().unwrap_or(0)
    }
}

/// How a message's body is delimited (RFC 9112, section 6).
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilEof,
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn eof(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, what.to_owned())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A socket and what it received that is not parsed yet.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    fn new(stream: TcpStream) -> Wire {
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("set a read timeout");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("set a write timeout");
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads what is there (waiting at most [`IO_TIMEOUT`]); `false` at EOF.
    fn fill(&mut self) -> io::Result<bool> {
        let len = self.buf.len();
        self.buf.resize(len + 64 * 1024, 0);
        let read = self.stream.read(&mut self.buf[len..]);
        self.buf.truncate(len + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(n) => Ok(n > 0),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("nothing arrived for {IO_TIMEOUT:?} (a hang)"),
                ))
            }
            Err(err) => Err(err),
        }
    }

    /// Reads until the unparsed bytes contain `needle` (without consuming anything).
    fn fill_until(&mut self, needle: &[u8]) -> io::Result<()> {
        while find(&self.buf, needle).is_none() {
            if !self.fill()? {
                return Err(eof("EOF while waiting for bytes"));
            }
        }
        Ok(())
    }

    /// Takes the next `n` bytes.
    fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill()? {
                return Err(eof("EOF inside a body"));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Takes one line, without its CRLF.
    fn line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line = self.buf[..end].to_vec();
                self.buf.drain(..end + 2);
                return Ok(line);
            }
            if !self.fill()? {
                return Err(eof("EOF inside a line"));
            }
        }
    }

    /// The next message head; `None` at an EOF before its first byte.
    fn head(&mut self) -> io::Result<Option<Head>> {
        while self.buf.is_empty() {
            if !self.fill()? {
                return Ok(None);
            }
        }
        let end = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end;
            }
            if !self.fill()? {
                return Err(eof("EOF inside a message head"));
            }
        };
        let raw: Vec<u8> = self.buf.drain(..end + 4).collect();
        let text = String::from_utf8(raw[..end].to_vec())
            .map_err(|_| invalid(format!("a head that is not UTF-8: {raw:?}")))?;
        let mut lines = text.split("\r\n");
        let start = lines.next().unwrap_or_default().to_owned();
        let mut fields = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("a header line without a colon: {line:?}")))?;
            fields.push((name.to_owned(), value.trim().to_owned()));
        }
        Ok(Some(Head { start, fields }))
    }

    /// The body that follows a head, decoded.
    fn body(&mut self, framing: Framing) -> io::Result<Vec<u8>> {
        match framing {
            Framing::Empty => Ok(Vec::new()),
            Framing::Length(n) => self.take(n),
            Framing::Chunked => self.chunked(),
            Framing::UntilEof => {
                while self.fill()? {}
                Ok(std::mem::take(&mut self.buf))
            }
        }
    }

    /// A chunked body, decoded (extensions and trailer fields skipped).
    fn chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.line()?;
            let line = String::from_utf8_lossy(&line);
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("a bad chunk size line: {line:?}")))?;
            if size == 0 {
                while !self.line()?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.take(size)?);
            let end = self.line()?;
            if !end.is_empty() {
                return Err(invalid(format!("chunk data runs on: {end:?}")));
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Writes `bytes`, then waits until the process at the other end has read every one
    /// of them off its socket, so that what is written next reaches it in a read of its
    /// own. Where the kernel does not show it (no `/proc/net/tcp`), it only writes; if the
    /// peer does not read within [`IO_TIMEOUT`], it goes on (the test then fails on what
    /// the peer does, or does not, send).
    fn write_apart(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write(bytes)?;
        let (Some(local), Some(peer)) = (
            self.stream.local_addr().ok().and_then(proc_net_addr),
            self.stream.peer_addr().ok().and_then(proc_net_addr),
        ) else {
            return Ok(());
        };
        wait_until(IO_TIMEOUT, || {
            let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
                return true;
            };
            let (mut unacked, mut unread) = (0, 0);
            for line in table.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let Some((tx, rx)) = fields.get(4).and_then(|q| q.split_once(':')) else {
                    continue;
                };
                let queue = |hex| u64::from_str_radix(hex, 16).unwrap_or(0);
                if fields[1] == local && fields[2] == peer {
                    unacked = queue(tx);
                } else if fields[1] == peer && fields[2] == local {
                    unread = queue(rx);
                }
            }
            unacked == 0 && unread == 0
        });
        Ok(())
    }
}

/// An IPv4 socket address as `/proc/net/tcp` prints it (`0100007F:1F90`).
fn proc_net_addr(addr: SocketAddr) -> Option<String> {
    let SocketAddr::V4(v4) = addr else {
        return None;
    };
    // The kernel prints the address as the integer its network-order bytes make.
    let ip = u32::from_ne_bytes(v4.ip().octets());
    Some(format!("{ip:08X}:{:04X}", v4.port()))
}

/// How a request's body is delimited.
fn request_framing(head: &Head) -> io::Result<Framing> {
    if head.has_token("transfer-encoding", "chunked") {
        return Ok(Framing::Chunked);
    }
    match head.get("content-length") {
        Some(len) => len
            .parse()
            .map(Framing::Length)
            .map_err(|_| invalid(format!("a bad Content-Length: {len:?}"))),
        None => Ok(Framing::Empty),
    }
}

/// How the body of a response to a `method` request is delimited.
fn response_framing(head: &Head, method: &str) -> io::Result<Framing> {
    let status = head.status();
    if method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Framing::Empty);
    }
    if head.has_token("transfer-encoding", "chunked") {
        return Ok(Framing::Chunked);
    }
    match head.get("content-length") {
        Some(len) => len
            .parse()
            .map(Framing::Length)
            .map_err(|_| invalid(format!("a bad Content-Length: {len:?}"))),
        None => Ok(Framing::UntilEof),
    }
}

/// A whole message: a response the client got, or a request the app got.
#[derive(Debug, Clone)]
struct Message {
    head: Head,
    body: Vec<u8>,
}

impl Message {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Fails unless `actual` is `expected`, naming the first difference (not dumping MiBs).
fn assert_same_bytes(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let at = actual
        .iter()
        .zip(expected)
        .position(|(a, e)| a != e)
        .unwrap_or(actual.len().min(expected.len()));
    panic!(
        "{what}: {} bytes where {} were expected, first difference at byte {at}",
        actual.len(),
        expected.len()
    );
}

/// `len` bytes that do not repeat for a long while, so a lost or doubled block shows.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// A `200 OK` answer with a Content-Length body.
fn ok(body: &[u8]) -> Vec<u8> {
    let mut answer =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    answer.extend_from_slice(body);
    answer
}

// ---------------------------------------------------------------------------------------
// The shim and the client.
// ---------------------------------------------------------------------------------------

/// The shim as a sidecar proxy in front of `app`, killed when dropped.
struct Shim {
    addr: SocketAddr,
    log: Log,
    proc: Proc,
}

impl Shim {
    fn start(app: SocketAddr) -> Shim {
        Shim::start_with(app, &[])
    }

    /// The shim with `extra` flags.
    fn start_with(app: SocketAddr, extra: &[&str]) -> Shim {
        let (proc, stderr) = spawn_piped(
            rollguard()
                .args(["shim", "--listen", "127.0.0.1:0"])
                .args(["--upstream", &app.to_string()])
                .args(extra)
                .env("RUST_LOG", "info,rollguard_shim=debug"),
        );
        let log = Log::reading(stderr);
        let line = log.wait_for("proxy listening on ", STARTUP);
        let addr = line
            .split("proxy listening on ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|addr| addr.trim().parse().ok())
            .unwrap_or_else(|| panic!("no proxy address in {line:?}"));
        Shim { addr, log, proc }
    }

    /// A new client connection to the proxy.
    fn client(&self) -> Client {
        let stream = TcpStream::connect(self.addr)
            .unwrap_or_else(|e| panic!("connect to the shim at {}: {e}", self.addr));
        Client {
            wire: Wire::new(stream),
        }
    }

    /// Fails with `what`, `err` and the shim's log.
    fn fail(&self, what: &str, err: impl std::fmt::Display) -> ! {
        panic!("{what}: {err}\nshim log:\n{}", self.log.dump())
    }
}

/// A client connection to the shim, on a raw socket.
struct Client {
    wire: Wire,
}

impl Client {
    fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.wire
            .write(bytes.as_ref())
            .expect("the client writes to the shim");
    }

    /// The next message, an interim (1xx) one included, to a `method` request.
    fn message(&mut self, method: &str) -> io::Result<Message> {
        let head = self
            .wire
            .head()?
            .ok_or_else(|| eof("the shim closed the connection without an answer"))?;
        let body = self.wire.body(response_framing(&head, method)?)?;
        Ok(Message { head, body })
    }

    /// The final answer to a `method` request, and the interim ones before it.
    fn answer_with_interim(&mut self, method: &str) -> io::Result<(Vec<Head>, Message)> {
        let mut interim = Vec::new();
        loop {
            let message = self.message(method)?;
            if message.head.status() >= 200 {
                return Ok((interim, message));
            }
            interim.push(message.head);
        }
    }

    /// The final answer to a `method` request.
    fn answer(&mut self, shim: &Shim, method: &str) -> Message {
        match self.answer_with_interim(method) {
            Ok((_, answer)) => answer,
            Err(err) => shim.fail(&format!("no answer to a {method} request"), err),
        }
    }

    /// `GET path` on this connection, kept alive, and its answer.
    fn get(&mut self, shim: &Shim, path: &str) -> Message {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: shim.test\r\n\r\n"));
        self.answer(shim, "GET")
    }

    /// Fails unless the shim closes the connection cleanly, with nothing more to read.
    fn expect_eof(&mut self, shim: &Shim) {
        assert!(
            self.wire.buf.is_empty(),
            "bytes after the answer: {:?}",
            String::from_utf8_lossy(&self.wire.buf)
        );
        match self.wire.fill() {
            Ok(false) => {}
            Ok(true) => shim.fail(
                "bytes where an EOF was expected",
                String::from_utf8_lossy(&self.wire.buf),
            ),
            Err(err) => shim.fail("no EOF from the shim", err),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The fake app.
// ---------------------------------------------------------------------------------------

/// What the app received: each request (with the number of the connection it came on).
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<(usize, Message)>>,
    connections: AtomicUsize,
}

/// One connection the app accepted, handed to the test's handler on a thread of its own.
struct AppConn {
    wire: Wire,
    number: usize,
    seen: Arc<Seen>,
}

impl AppConn {
    /// The next whole request (recorded); `None` once the shim closed the connection.
    fn request(&mut self) -> Option<Message> {
        let head = self.wire.head().ok()??;
        let body = request_framing(&head)
            .and_then(|framing| self.wire.body(framing))
            .ok()?;
        let request = Message { head, body };
        self.seen
            .requests
            .lock()
            .expect("app lock")
            .push((self.number, request.clone()));
        Some(request)
    }

    fn write(&mut self, bytes: impl AsRef<[u8]>) {
        self.wire
            .write(bytes.as_ref())
            .expect("the app writes to the shim");
    }

    /// Writes `bytes`, then waits until the shim has read them (see [`Wire::write_apart`]).
    fn write_apart(&mut self, bytes: impl AsRef<[u8]>) {
        self.wire
            .write_apart(bytes.as_ref())
            .expect("the app writes to the shim");
    }
}

impl Drop for AppConn {
    /// Closes the connection (the app keeps a copy of the socket, see [`FakeApp`]).
    fn drop(&mut self) {
        let _ = self.wire.stream.shutdown(Shutdown::Both);
    }
}

/// An HTTP/1.1 app on a loopback port, whose every connection runs `handler`. Dropping it
/// stops accepting and shuts every connection down.
struct FakeApp {
    addr: SocketAddr,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl FakeApp {
    fn start(handler: impl Fn(AppConn) + Send + Sync + 'static) -> FakeApp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("the app binds a loopback port");
        let addr = listener.local_addr().expect("the app's address");
        let seen = Arc::new(Seen::default());
        let stop = Arc::new(AtomicBool::new(false));
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let accept = {
            let (seen, stop, sockets) =
                (Arc::clone(&seen), Arc::clone(&stop), Arc::clone(&sockets));
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    if let Ok(copy) = stream.try_clone() {
                        sockets.lock().expect("app lock").push(copy);
                    }
                    let number = seen.connections.fetch_add(1, Ordering::SeqCst);
                    let conn = AppConn {
                        wire: Wire::new(stream),
                        number,
                        seen: Arc::clone(&seen),
                    };
                    let handler = Arc::clone(&handler);
                    thread::spawn(move || handler(conn));
                }
            })
        };
        FakeApp {
            addr,
            seen,
            stop,
            sockets,
            accept: Some(accept),
        }
    }

    /// An app that answers every request `200 OK` with `body`.
    fn answering(body: Vec<u8>) -> FakeApp {
        FakeApp::start(move |mut conn| {
            while conn.request().is_some() {
                conn.write(ok(&body));
            }
        })
    }

    /// Every request so far, in the order the app read them.
    fn requests(&self) -> Vec<Message> {
        self.requests_by_connection()
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    }

    /// Every request so far with the number of the connection it came on.
    fn requests_by_connection(&self) -> Vec<(usize, Message)> {
        self.seen.requests.lock().expect("app lock").clone()
    }

    /// The targets of every request so far, in order.
    fn targets(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| r.head.second().to_owned())
            .collect()
    }
}

impl Drop for FakeApp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect(self.addr);
        for socket in self.sockets.lock().expect("app lock").drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Lets the app wait for the test (e.g. until the client has seen part of an answer).
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn open(&self) {
        let (open, changed) = &*self.0;
        *open.lock().expect("gate lock") = true;
        changed.notify_all();
    }

    /// Waits (at most [`IO_TIMEOUT`]) for the gate to open; whether it did.
    fn wait(&self) -> bool {
        let (open, changed) = &*self.0;
        let guard = open.lock().expect("gate lock");
        let (guard, _) = changed
            .wait_timeout_while(guard, IO_TIMEOUT, |open| !*open)
            .expect("gate lock");
        *guard
    }
}

// ---------------------------------------------------------------------------------------
// The cases.
// ---------------------------------------------------------------------------------------

/// A chunked answer written in separate pieces streams through whole (the client sees the
/// first chunk before the app writes the rest), and the connection then serves another
/// request.
#[test]
fn chunked_answer_written_in_pieces_arrives_whole_and_the_connection_serves_again() {
    let gate = Gate::default();
    let app_gate = gate.clone();
    let app = FakeApp::start(move |mut conn| {
        while let Some(req) = conn.request() {
            if req.head.second() == "/chunked" {
                conn.write_apart(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
                );
                conn.write_apart("6\r\nfirst \r\n");
                // The rest only once the client has seen the first chunk.
                assert!(app_gate.wait(), "the client never saw the first chunk");
                conn.write_apart("7\r\nsecond \r\n");
                conn.write_apart("5\r\n");
                conn.write_apart("third\r\n");
                conn.write_apart("0\r\n\r\n");
            } else {
                conn.write(ok(b"again"));
            }
        }
    });
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    client.send("GET /chunked HTTP/1.1\r\nHost: shim.test\r\n\r\n");
    let head = client
        .wire
        .head()
        .unwrap_or_else(|e| shim.fail("the answer's head", e))
        .unwrap_or_else(|| shim.fail("the answer's head", "EOF"));
    assert_eq!(head.status(), 200, "{head:?}");
    assert_eq!(head.get("content-type"), Some("text/plain"), "{head:?}");
    client
        .wire
        .fill_until(b"first ")
        .unwrap_or_else(|e| shim.fail("the first chunk, before the rest is written", e));
    gate.open();
    let body = response_framing(&head, "GET")
        .and_then(|framing| client.wire.body(framing))
        .unwrap_or_else(|e| shim.fail("the answer's body", e));
    assert_eq!(String::from_utf8_lossy(&body), "first second third");

    let again = client.get(&shim, "/again");
    assert_eq!(again.head.status(), 200, "{again:?}");
    assert_eq!(again.text(), "again");
    assert_eq!(app.targets(), ["/chunked", "/again"]);
}

/// An answer without Content-Length or Transfer-Encoding, ended by the app closing its
/// connection, reaches the client whole.
#[test]
fn close_delimited_answer_arrives_whole() {
    let body = pattern(200_000, 2);
    let app_body = body.clone();
    let app = FakeApp::start(move |mut conn| {
        if conn.request().is_some() {
            conn.write_apart("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n");
            for piece in app_body.chunks(70_000) {
                conn.write_apart(piece);
            }
            // Dropping the connection closes it: the end of the body.
        }
    });
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    let answer = client.get(&shim, "/until-close");
    assert_eq!(answer.head.status(), 200, "{:?}", answer.head);
    assert_eq!(
        answer.head.get("content-type"),
        Some("application/octet-stream")
    );
    assert_same_bytes(&answer.body, &body, "the close-delimited body");
}

/// The answer to HEAD names a Content-Length of 1000 and has no body: the client gets the
/// head alone, and the next GET on the connection gets its own answer (the proxy did not
/// wait for 1000 bytes that never come).
#[test]
fn head_answer_with_content_length_has_no_body_and_the_next_get_is_answered() {
    let app = FakeApp::start(|mut conn| {
        while let Some(req) = conn.request() {
            if req.head.first() == "HEAD" {
                conn.write("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-Head: yes\r\n\r\n");
            } else {
                conn.write(ok(b"after the head"));
            }
        }
    });
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    client.send("HEAD /thing HTTP/1.1\r\nHost: shim.test\r\n\r\n");
    let head = client.answer(&shim, "HEAD");
    assert_eq!(head.head.status(), 200, "{:?}", head.head);
    assert_eq!(head.head.get("x-head"), Some("yes"), "{:?}", head.head);
    assert_eq!(
        head.head.get("content-length"),
        Some("1000"),
        "a HEAD answer keeps the length a GET would have: {:?}",
        head.head
    );
    let after = client.get(&shim, "/after");
    assert_eq!(after.head.status(), 200, "{after:?}");
    assert_eq!(after.text(), "after the head");
    assert_eq!(app.targets(), ["/thing", "/after"]);
}

/// 204 and 304 answers have no body (even a 304 that names a Content-Length): the client
/// gets them and the connection stays in step for the next request.
#[test]
fn answers_204_and_304_have_no_body_and_the_connection_stays_in_step() {
    let app = FakeApp::start(|mut conn| {
        while let Some(req) = conn.request() {
            match req.head.second() {
                "/no-content" => conn.write("HTTP/1.1 204 No Content\r\nX-Kind: none\r\n\r\n"),
                // A 304 may state the length the full answer would have had.
                "/not-modified" => conn.write(
                    "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 10\r\n\r\n",
                ),
                _ => conn.write(ok(b"full answer")),
            }
        }
    });
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    let none = client.get(&shim, "/no-content");
    assert_eq!(none.head.status(), 204, "{none:?}");
    assert_eq!(none.head.get("x-kind"), Some("none"), "{none:?}");
    let cached = client.get(&shim, "/not-modified");
    assert_eq!(cached.head.status(), 304, "{cached:?}");
    assert_eq!(cached.head.get("etag"), Some("\"v1\""), "{cached:?}");
    let full = client.get(&shim, "/full");
    assert_eq!(full.head.status(), 200, "{full:?}");
    assert_eq!(full.text(), "full answer");
    // And the order holds the other way round.
    let none = client.get(&shim, "/no-content");
    assert_eq!(none.head.status(), 204, "{none:?}");
    assert_eq!(client.get(&shim, "/full").text(), "full answer");
    assert_eq!(
        app.targets(),
        [
            "/no-content",
            "/not-modified",
            "/full",
            "/no-content",
            "/full"
        ]
    );
}

/// Two requests in one write: both are answered, in order.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let app = FakeApp::start(|mut conn| {
        while let Some(req) = conn.request() {
            let answer = format!("answer to {}", req.head.second());
            conn.write(ok(answer.as_bytes()));
        }
    });
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    client.send(
        "GET /first HTTP/1.1\r\nHost: shim.test\r\n\r\nGET /second HTTP/1.1\r\nHost: shim.test\r\n\r\n",
    );
    let first = client.answer(&shim, "GET");
    let second = client.answer(&shim, "GET");
    assert_eq!(first.text(), "answer to /first");
    assert_eq!(second.text(), "answer to /second");
    assert_eq!(app.targets(), ["/first", "/second"]);
    // The connection is still in step.
    assert_eq!(client.get(&shim, "/third").text(), "answer to /third");
}

/// An app that answers every request with the length of its body, as text.
fn echo_length_app() -> FakeApp {
    FakeApp::start(|mut conn| {
        while let Some(req) = conn.request() {
            conn.write(ok(req.body.len().to_string().as_bytes()));
        }
    })
}

/// A small body with Content-Length reaches the app byte for byte.
#[test]
fn small_content_length_request_body_reaches_the_app_intact() {
    let app = echo_length_app();
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    let body = "name=value&other=1";
    client.send(format!(
        "POST /form HTTP/1.1\r\nHost: shim.test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    let answer = client.answer(&shim, "POST");
    assert_eq!(answer.head.status(), 200, "{answer:?}");
    assert_eq!(answer.text(), body.len().to_string());
    let requests = app.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].head.first(), "POST");
    assert_eq!(requests[0].body, body.as_bytes());
    assert_eq!(
        requests[0].head.get("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    // The next request on the connection is not taken for more body.
    assert_eq!(client.get(&shim, "/next").text(), "0");
}

/// A 1 MiB body with Content-Length reaches the app byte for byte.
#[test]
fn one_mib_request_body_reaches_the_app_intact() {
    let app = echo_length_app();
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    let body = pattern(1 << 20, 6);
    let mut request = format!(
        "PUT /upload HTTP/1.1\r\nHost: shim.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    client.send(&request);
    let answer = client.answer(&shim, "PUT");
    assert_eq!(answer.head.status(), 200, "{answer:?}");
    assert_eq!(answer.text(), (1 << 20).to_string());
    let requests = app.requests();
    assert_eq!(requests.len(), 1);
    assert_same_bytes(&requests[0].body, &body, "the body the app got");
    assert_eq!(client.get(&shim, "/next").text(), "0");
}

/// A chunked body (with a chunk extension and CRLFs inside the data), sent in pieces the
/// shim reads one at a time, reaches the app with the same decoded bytes.
#[test]
fn chunked_request_body_reaches_the_app_decoded() {
    let app = echo_length_app();
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    let pieces: [&[u8]; 7] = [
        b"POST /chunks HTTP/1.1\r\nHost: shim.test\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"4\r\nWiki\r\n",
        b"5;note=x\r\npe",
        b"dia\r\n",
        b"E\r\n in\r\n\r\nchunks.\r\n",
        b"0\r\n",
        b"\r\n",
    ];
    for piece in pieces {
        client
            .wire
            .write_apart(piece)
            .expect("the client writes to the shim");
    }
    let expected = b"Wikipedia in\r\n\r\nchunks.";
    let answer = client.answer(&shim, "POST");
    assert_eq!(answer.head.status(), 200, "{answer:?}");
    assert_eq!(answer.text(), expected.len().to_string());
    let requests = app.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        String::from_utf8_lossy(&requests[0].body),
        String::from_utf8_lossy(expected)
    );
    assert_eq!(client.get(&shim, "/next").text(), "0");
}

/// A `103 Early Hints` before the final answer: the client ends up with the final 200 and
/// its body (whether the shim passes the 103 on or not), and the connection stays in step.
#[test]
fn interim_103_answer_is_followed_by_the_final_answer() {
    let app = FakeApp::start(|mut conn| {
        while let Some(req) = conn.request() {
            if req.head.second() == "/hints" {
                conn.write_apart(
                    "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n",
                );
                conn.write(ok(b"final body"));
            } else {
                conn.write(ok(b"next"));
            }
        }
    });
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    client.send("GET /hints HTTP/1.1\r\nHost: shim.test\r\n\r\n");
    let (interim, answer) = client
        .answer_with_interim("GET")
        .unwrap_or_else(|e| shim.fail("the final answer after a 103", e));
    // The shim may pass the 103 on or drop it; passed on, it is whole.
    for head in &interim {
        assert_eq!(head.status(), 103, "an unexpected interim answer: {head:?}");
        assert_eq!(
            head.get("link"),
            Some("</style.css>; rel=preload; as=style"),
            "{head:?}"
        );
    }
    assert_eq!(answer.head.status(), 200, "{answer:?}");
    assert_eq!(answer.text(), "final body");
    assert_eq!(client.get(&shim, "/next").text(), "next");
}

/// A 4 MiB answer with Content-Length streams to the client whole.
#[test]
fn four_mib_answer_arrives_whole() {
    let body = pattern(4 << 20, 8);
    let app = FakeApp::answering(body.clone());
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    let answer = client.get(&shim, "/big");
    assert_eq!(answer.head.status(), 200, "{:?}", answer.head);
    assert_same_bytes(&answer.body, &body, "the 4 MiB body");
    // The connection is in step after it.
    let again = client.get(&shim, "/big");
    assert_same_bytes(&again.body, &body, "the second 4 MiB body");
}

/// A client that says `Connection: close` gets the whole answer, then EOF.
#[test]
fn client_connection_close_gets_the_whole_answer_then_eof() {
    let app = FakeApp::answering(b"goodbye".to_vec());
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    client.send("GET /last HTTP/1.1\r\nHost: shim.test\r\nConnection: close\r\n\r\n");
    let answer = client.answer(&shim, "GET");
    assert_eq!(answer.head.status(), 200, "{answer:?}");
    assert_eq!(answer.text(), "goodbye");
    client.expect_eof(&shim);
}

/// An HTTP/1.0 request (no Host) gets a correct answer: an app's chunked body reaches it
/// decoded, without Transfer-Encoding (which HTTP/1.0 does not know), and the connection
/// then closes (HTTP/1.0 without keep-alive).
#[test]
fn http10_request_gets_an_unchunked_answer_then_eof() {
    let app = FakeApp::start(|mut conn| {
        while conn.request().is_some() {
            conn.write(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nold \r\n6\r\nschool\r\n0\r\n\r\n",
            );
        }
    });
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    client.send("GET /legacy HTTP/1.0\r\n\r\n");
    let answer = client.answer(&shim, "GET");
    assert!(answer.head.first().starts_with("HTTP/1."), "{answer:?}");
    assert_eq!(answer.head.status(), 200, "{answer:?}");
    assert!(
        !answer.head.has("transfer-encoding"),
        "an HTTP/1.0 client got Transfer-Encoding: {:?}",
        answer.head
    );
    assert_eq!(answer.text(), "old school");
    client.expect_eof(&shim);
    let requests = app.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].head.second(), "/legacy");
    assert!(
        requests[0].head.has("host"),
        "the app got no Host: {:?}",
        requests[0].head
    );
}

/// Bytes that are not HTTP get a 4xx answer (then a close) or a close, not a hang; none
/// reaches the app, and the shim then serves a new connection normally.
#[test]
fn garbage_gets_a_4xx_or_a_close_and_the_shim_keeps_serving() {
    let app = FakeApp::answering(b"fine".to_vec());
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    // What a TLS client would send first, then text that is no request line.
    client.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 this is not HTTP\r\n\r\n");
    match client.wire.head() {
        Ok(Some(head)) => {
            assert!((400..500).contains(&head.status()), "garbage got {head:?}");
            // Nothing after garbage can be parsed: the connection then closes (cleanly or
            // not), rather than hang.
            let closed = response_framing(&head, "GET")
                .and_then(|framing| client.wire.body(framing))
                .and_then(|_| client.wire.fill());
            match closed {
                Ok(false) => {}
                Err(err) if err.kind() == io::ErrorKind::ConnectionReset => {}
                Ok(true) => shim.fail(
                    "bytes after the 4xx answer to garbage",
                    String::from_utf8_lossy(&client.wire.buf),
                ),
                Err(err) => shim.fail("no close after the 4xx answer to garbage", err),
            }
        }
        // Closed without an answer (cleanly or not): fine too.
        Ok(None) => {}
        Err(err) if err.kind() == io::ErrorKind::ConnectionReset => {}
        Err(err) => shim.fail("neither an answer nor a close after garbage", err),
    }

    let mut fresh = shim.client();
    let answer = fresh.get(&shim, "/fine");
    assert_eq!(answer.head.status(), 200, "{answer:?}");
    assert_eq!(answer.text(), "fine");
    assert_eq!(app.targets(), ["/fine"]);
}

/// An app that says `Connection: close` and closes after every answer: the client's
/// kept-alive connection still gets its second and third answers (each request on a new
/// connection to the app), and the app's `Connection: close` does not reach it.
#[test]
fn app_closing_after_each_answer_does_not_end_the_client_connection() {
    let app = FakeApp::start(|mut conn| {
        if let Some(req) = conn.request() {
            let body = format!("answer to {}", req.head.second());
            conn.write(format!(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
            // Dropping the connection closes it.
        }
    });
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    for path in ["/one", "/two", "/three"] {
        let answer = client.get(&shim, path);
        assert_eq!(answer.head.status(), 200, "{answer:?}");
        assert_eq!(answer.text(), format!("answer to {path}"));
        assert!(
            !answer.head.has_token("connection", "close"),
            "the app's Connection: close reached the client: {:?}",
            answer.head
        );
    }
    let requests = app.requests_by_connection();
    let targets: Vec<&str> = requests.iter().map(|(_, r)| r.head.second()).collect();
    assert_eq!(targets, ["/one", "/two", "/three"]);
    let mut connections: Vec<usize> = requests.iter().map(|(c, _)| *c).collect();
    connections.dedup();
    assert_eq!(
        connections.len(),
        3,
        "one request per app connection: {requests:?}"
    );
}

/// The answer's hop-by-hop headers (`Keep-Alive`, `Proxy-Connection`, and what its
/// `Connection` names) stop at the shim; its end-to-end headers reach the client.
#[test]
fn hop_by_hop_answer_headers_stop_at_the_shim() {
    let app = FakeApp::start(|mut conn| {
        while conn.request().is_some() {
            conn.write(
                "HTTP/1.1 200 OK\r\nConnection: x-hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5, max=100\r\nProxy-Connection: keep-alive\r\nX-App: 1\r\nCache-Control: no-store\r\nContent-Length: 2\r\n\r\nok",
            );
        }
    });
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    let answer = client.get(&shim, "/hop");
    assert_eq!(answer.head.status(), 200, "{answer:?}");
    assert_eq!(answer.text(), "ok");
    assert_eq!(answer.head.get("x-app"), Some("1"), "{:?}", answer.head);
    assert_eq!(
        answer.head.get("cache-control"),
        Some("no-store"),
        "{:?}",
        answer.head
    );
    for hop in ["x-hop", "keep-alive", "proxy-connection"] {
        assert!(
            !answer.head.has(hop),
            "{hop} reached the client: {:?}",
            answer.head
        );
    }
    assert!(
        !answer.head.has_token("connection", "x-hop"),
        "the app's Connection reached the client: {:?}",
        answer.head
    );
    assert_eq!(client.get(&shim, "/hop").text(), "ok");
}

/// A request target in absolute form reaches the app in origin form.
#[test]
fn absolute_form_target_reaches_the_app_in_origin_form() {
    let app = FakeApp::answering(b"here".to_vec());
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    client.send("GET http://example.test/p?q=1 HTTP/1.1\r\nHost: example.test\r\n\r\n");
    let answer = client.answer(&shim, "GET");
    assert_eq!(answer.head.status(), 200, "{answer:?}");
    assert_eq!(answer.text(), "here");
    let requests = app.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].head.start, "GET /p?q=1 HTTP/1.1");
    assert_eq!(requests[0].head.get("host"), Some("example.test"));
}

/// A header line of 8 KiB (a long cookie) passes both ways.
#[test]
fn eight_kib_header_lines_pass_both_ways() {
    let long = |prefix: &str| -> String {
        let filler: String = (0..8192 - prefix.len())
            .map(|i| char::from(b'a' + u8::try_from(i % 26).expect("a letter")))
            .collect();
        format!("{prefix}{filler}")
    };
    let request_cookie = long("session=");
    let answer_cookie = long("token=");
    let app_cookie = answer_cookie.clone();
    let app = FakeApp::start(move |mut conn| {
        while conn.request().is_some() {
            conn.write(format!(
                "HTTP/1.1 200 OK\r\nSet-Cookie: {app_cookie}\r\nContent-Length: 4\r\n\r\nbig!"
            ));
        }
    });
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    client.send(format!(
        "GET /cookie HTTP/1.1\r\nHost: shim.test\r\nCookie: {request_cookie}\r\n\r\n"
    ));
    let answer = client.answer(&shim, "GET");
    assert_eq!(answer.head.status(), 200, "{:?}", answer.head.start);
    assert_eq!(answer.text(), "big!");
    assert!(
        answer.head.get("set-cookie") == Some(answer_cookie.as_str()),
        "the 8 KiB Set-Cookie did not reach the client whole"
    );
    let requests = app.requests();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].head.get("cookie") == Some(request_cookie.as_str()),
        "the 8 KiB Cookie did not reach the app whole"
    );
}

/// The app sees `X-Forwarded-For: 127.0.0.1`, `X-Forwarded-Proto: http` and the client's
/// `Host`, and none of the hop-by-hop headers the client sent (`Connection` and what it
/// names, `Keep-Alive`, `TE`, `Proxy-Connection`).
#[test]
fn app_gets_forwarded_headers_and_none_of_the_clients_hop_by_hop_headers() {
    let app = FakeApp::answering(b"seen".to_vec());
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    client.send(
        "GET /fwd HTTP/1.1\r\nHost: client.test\r\nConnection: keep-alive, x-drop\r\nx-drop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nX-Keep: yes\r\n\r\n",
    );
    let answer = client.answer(&shim, "GET");
    assert_eq!(answer.text(), "seen");
    let requests = app.requests();
    assert_eq!(requests.len(), 1);
    let head = &requests[0].head;
    assert_eq!(head.get("x-forwarded-for"), Some("127.0.0.1"), "{head:?}");
    assert_eq!(head.get("x-forwarded-proto"), Some("http"), "{head:?}");
    assert_eq!(head.get("host"), Some("client.test"), "{head:?}");
    assert_eq!(head.get("x-keep"), Some("yes"), "{head:?}");
    for hop in [
        "connection",
        "x-drop",
        "keep-alive",
        "te",
        "proxy-connection",
    ] {
        assert!(!head.has(hop), "{hop} reached the app: {head:?}");
    }
}

/// A response head the app writes in pieces (the status line, headers cut mid-name and
/// between CR and LF, the blank line, then the body), each read by the shim on its own,
/// arrives whole.
#[test]
fn answer_head_split_across_writes_arrives_whole() {
    let app = FakeApp::start(|mut conn| {
        while conn.request().is_some() {
            for piece in [
                "HTTP/1.1 200 OK\r\n",
                "X-Spl",
                "it: yes\r",
                "\nContent-Type: text/plain\r\nContent-Length: 11\r\n",
                "\r\n",
                "hello",
                " world",
            ] {
                conn.write_apart(piece);
            }
        }
    });
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    let answer = client.get(&shim, "/split");
    assert_eq!(answer.head.status(), 200, "{answer:?}");
    assert_eq!(answer.head.get("x-split"), Some("yes"), "{:?}", answer.head);
    assert_eq!(answer.head.get("content-type"), Some("text/plain"));
    assert_eq!(answer.text(), "hello world");
    assert_eq!(client.get(&shim, "/split").text(), "hello world");
}

/// A kept connection that the app closes on reading the next request, unanswered (as an
/// app does whose keep-alive timeout ends just then): a GET goes again on a new
/// connection and is answered; a POST, which must not be sent twice, gets the shim's 502.
#[test]
fn a_request_the_app_closed_its_kept_connection_under_goes_again_only_when_idempotent() {
    let app = FakeApp::start(|mut conn| {
        // One answer per connection; the next request is read and left unanswered.
        if let Some(req) = conn.request() {
            let body = format!("answer to {}", req.head.second());
            conn.write(format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
            let _ = conn.request();
        }
    });
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    assert_eq!(client.get(&shim, "/a").text(), "answer to /a");
    let again = client.get(&shim, "/b");
    assert_eq!(again.head.status(), 200, "{again:?}");
    assert_eq!(again.text(), "answer to /b");
    client.send("POST /c HTTP/1.1\r\nHost: shim.test\r\nContent-Length: 1\r\n\r\nx");
    let post = client.answer(&shim, "POST");
    assert_eq!(post.head.status(), 502, "{post:?}");
    assert_eq!(client.get(&shim, "/d").text(), "answer to /d");
    assert_eq!(app.targets(), ["/a", "/b", "/b", "/c", "/d"]);
}

/// The app's side of a connection the test expects the shim to close: whether the shim
/// closed it (an EOF, not the read timeout) is noted in the flag.
fn note_close(conn: &mut AppConn, closed: &AtomicBool) {
    if matches!(conn.wire.fill(), Ok(false)) {
        closed.store(true, Ordering::SeqCst);
    }
}

/// How long the shim may take to close a connection it no longer needs.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// `Connection: content-length` must not take the request's framing with it: the app gets
/// one request whose body is what the client sent, not a second request made of it.
#[test]
fn a_request_whose_connection_header_names_content_length_stays_one_request() {
    let app = FakeApp::answering(b"ok".to_vec());
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    let inner = "GET /admin HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";
    client.send(format!(
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nContent-Length: {}\r\n\r\n{inner}",
        inner.len()
    ));
    assert_eq!(client.answer(&shim, "POST").text(), "ok");
    let first = app
        .requests()
        .into_iter()
        .next()
        .expect("the app got the request");
    assert_eq!(first.head.second(), "/");
    assert_eq!(first.text(), inner, "the body reached the app as a body");
}

/// A client that leaves while the app works on its request frees the app's connection at
/// once, rather than whenever the app answers.
#[test]
fn a_client_that_leaves_while_the_app_works_frees_the_apps_connection() {
    let closed = Arc::new(AtomicBool::new(false));
    let noted = Arc::clone(&closed);
    let app = FakeApp::start(move |mut conn| {
        // Never answers.
        if conn.request().is_some() {
            note_close(&mut conn, &noted);
        }
    });
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    client.send("GET /slow HTTP/1.1\r\nHost: shim.test\r\n\r\n");
    assert!(wait_until(IO_TIMEOUT, || app.targets().len() == 1));
    drop(client);
    assert!(
        wait_until(CLOSE_WITHIN, || closed.load(Ordering::SeqCst)),
        "the app's connection stayed open after its client left\n{}",
        shim.log.dump()
    );
}

/// A kept connection the app closes between requests is closed by the shim too at once,
/// not left half-closed until the client's next request.
#[test]
fn a_kept_connection_the_app_closes_is_let_go_at_once() {
    let closed = Arc::new(AtomicBool::new(false));
    let noted = Arc::clone(&closed);
    let app = FakeApp::start(move |mut conn| {
        if conn.request().is_some() {
            conn.write(ok(b"ok"));
            let _ = conn.wire.stream.shutdown(Shutdown::Write);
            note_close(&mut conn, &noted);
        }
    });
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    assert_eq!(client.get(&shim, "/").text(), "ok");
    assert!(
        wait_until(CLOSE_WITHIN, || closed.load(Ordering::SeqCst)),
        "the shim kept the app's closed connection while its client idled\n{}",
        shim.log.dump()
    );
    // The client's connection stays, and its next request gets a new app connection.
    assert_eq!(client.get(&shim, "/").text(), "ok");
}

/// The shim's own 502 to a HEAD request has no body: the next answer on the connection
/// reads right.
#[test]
fn a_502_to_a_head_request_has_no_body() {
    // Nothing listens there.
    let shim = Shim::start(free_addr());
    let mut client = shim.client();
    client.send("HEAD / HTTP/1.1\r\nHost: shim.test\r\n\r\n");
    let head = client.answer(&shim, "HEAD");
    assert_eq!(head.head.status(), 502, "{head:?}");
    assert!(head.head.has("content-length"), "{head:?}");
    let get = client.get(&shim, "/");
    assert_eq!(get.head.status(), 502, "{get:?}");
    assert!(get.text().contains("did not answer"), "{get:?}");
}

/// A body that ends when the app closes reaches the client framed, and the client's
/// connection serves its next request.
#[test]
fn a_close_delimited_answer_keeps_the_clients_connection() {
    let app = FakeApp::start(|mut conn| {
        if let Some(req) = conn.request() {
            conn.write(format!(
                "HTTP/1.1 200 OK\r\n\r\nanswer to {}",
                req.head.second()
            ));
        }
    });
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    assert_eq!(client.get(&shim, "/one").text(), "answer to /one");
    assert_eq!(client.get(&shim, "/two").text(), "answer to /two");
}

/// Once the drain starts, a kept-alive connection that has been idle for the drain idle
/// time is closed, even when the client sent a stray CRLF after its last request.
#[test]
fn the_drain_closes_an_idle_connection_with_a_stray_crlf() {
    let app = FakeApp::answering(b"ok".to_vec());
    let shim = Shim::start_with(
        app.addr,
        &[
            "--drain-delay",
            "0",
            "--drain-idle",
            "200ms",
            "--drain-timeout",
            "60s",
        ],
    );
    let mut client = shim.client();
    client.send("GET / HTTP/1.1\r\nHost: shim.test\r\n\r\n\r\n");
    assert_eq!(client.answer(&shim, "GET").text(), "ok");
    shim.proc.signal(Signal::SIGTERM);
    client.expect_eof(&shim);
}

/// A `Connection` that names `Host` does not take the request's `Host` away.
#[test]
fn a_connection_header_naming_host_leaves_the_host() {
    let app = FakeApp::answering(b"ok".to_vec());
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    client.send("GET /h HTTP/1.1\r\nHost: shop.example\r\nConnection: host\r\n\r\n");
    assert_eq!(client.answer(&shim, "GET").text(), "ok");
    let request = app
        .requests()
        .into_iter()
        .next()
        .expect("the app got the request");
    assert_eq!(
        request.head.get("host"),
        Some("shop.example"),
        "{request:?}"
    );
}

/// A client that pipelines two requests, the last saying `Connection: close`, and then
/// closes its side still gets both answers.
#[test]
fn pipelined_requests_then_a_half_close_are_all_answered() {
    let app = FakeApp::start(|mut conn| {
        while let Some(req) = conn.request() {
            conn.write(ok(format!("answer to {}", req.head.second()).as_bytes()));
        }
    });
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    client.send(
        "GET /one HTTP/1.1\r\nHost: shim.test\r\n\r\n\
         GET /two HTTP/1.1\r\nHost: shim.test\r\nConnection: close\r\n\r\n",
    );
    client
        .wire
        .stream
        .shutdown(Shutdown::Write)
        .expect("the client closes its side");
    assert_eq!(client.answer(&shim, "GET").text(), "answer to /one");
    assert_eq!(client.answer(&shim, "GET").text(), "answer to /two");
}

/// A chunked body that is malformed from its first byte gets the shim's 502, not a reset:
/// nothing of the answer had gone to the client yet.
#[test]
fn an_answer_with_a_malformed_chunked_body_gets_a_502() {
    let app = FakeApp::start(|mut conn| {
        if conn.request().is_some() {
            conn.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
        }
    });
    let shim = Shim::start(app.addr);
    let mut client = shim.client();
    let answer = client.get(&shim, "/");
    assert_eq!(answer.head.status(), 502, "{answer:?}");
}
