//! The proxy's own HTTP/1.1 path, for the requests nearly every client sends.
//!
//! A kept-alive HTTP/1.1 client sends a request and waits for its answer, so its
//! connection needs no more than a loop: read a request, pass it to the app on the client
//! connection's own connection to the app, pass the answer back. Heads are parsed with
//! `httparse` and rewritten as bytes; bodies pass through as they come, their framing
//! (`Content-Length`, chunked) followed only to find where they end.
//!
//! Anything else goes to hyper (see [`Served::Other`]): HTTP/2, HTTP/1.0, upgrades,
//! `Expect`, chunked or large request bodies, targets that are not a path, and heads
//! `httparse` rejects. The connection, with the bytes already read, then stays on the
//! general path for the rest of its life.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tracing::debug;

use super::{Answering, Connection, is_hop_by_hop, tokens};
use crate::upstream;

/// Header lines a head may have; a request with more goes to hyper (whose limit is the
/// same), an answer with more gets a 502.
const MAX_HEADERS: usize = 100;

/// The largest request head this path waits for; a longer one goes to hyper.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// The largest request body this path buffers; a longer one goes to hyper, which streams it.
const MAX_REQUEST_BODY: usize = 64 * 1024;

/// The largest answer head the app may send.
const MAX_ANSWER_HEAD: usize = 64 * 1024;

/// Request headers a client's `Connection` may not name: the shim writes them itself, or
/// they frame the request.
const FRAMED_HERE: [&str; 5] = [
    "content-length",
    "host",
    "transfer-encoding",
    "x-forwarded-for",
    "x-forwarded-proto",
];

/// Room made in a buffer before each read.
const READ_SIZE: usize = 16 * 1024;

/// After the last answer on a connection the shim closes, how long it reads (and drops)
/// what the client still sends, so that its close doesn't reset that answer.
const LINGER: Duration = Duration::from_secs(1);

/// How the connection left this path.
pub(super) enum Served {
    /// It is over.
    Ended,
    /// Its next request is for hyper: the connection and the bytes read from it.
    Other(Rewound),
}

/// Serves `client` as long as its requests are plain HTTP/1.1.
pub(super) async fn serve(conn: &Arc<Connection>, client: TcpStream) -> Served {
    let mut path = H1 {
        conn,
        client,
        from_client: BytesMut::with_capacity(READ_SIZE),
        to_app: Vec::with_capacity(1024),
        to_client: Vec::with_capacity(1024),
        app: None,
        client_done: false,
    };
    let mut draining = conn.draining.clone();
    // Made once and polled between requests: waits on the drain's start.
    let drain = async move {
        // An error: the proxy is gone, and this connection drains with it.
        let _ = draining.wait_for(|d| *d).await;
    };
    let mut drain = std::pin::pin!(drain);
    let mut drain_seen = false;
    loop {
        let request = match path.next_request(drain.as_mut(), &mut drain_seen).await {
            Next::Request(request) => request,
            Next::Other => {
                return Served::Other(Rewound {
                    read: path.from_client,
                    stream: path.client,
                });
            }
            Next::Closed => return Served::Ended,
        };
        let answering = Answering::start(Arc::clone(conn));
        path.from_client.advance(request.len);
        let close = match path.forward(&request).await {
            Ok(close) => close,
            Err(err) => {
                debug!(%err, peer = ?path.client.peer_addr().ok(), "connection ended mid-answer");
                // A reset, not a FIN: a client reading an answer cut short must not take
                // it for a whole one.
                if let Err(err) = path.client.set_zero_linger() {
                    debug!(%err, "cannot set SO_LINGER");
                }
                return Served::Ended;
            }
        };
        drop(answering);
        if close {
            path.close().await;
            return Served::Ended;
        }
    }
}

/// One client connection on this path.
struct H1<'a> {
    conn: &'a Connection,
    client: TcpStream,
    /// Read from the client and not yet passed on.
    from_client: BytesMut,
    /// The request being passed to the app.
    to_app: Vec<u8>,
    /// An answer's head (and its first bytes of body) for the client.
    to_client: Vec<u8>,
    /// The connection to the app, kept between requests.
    app: Option<App>,
    /// The client closed its side after a request that said `Connection: close`: it
    /// waits for that answer, and sends nothing more.
    client_done: bool,
}

/// A connection to the app and what was read from it.
struct App {
    stream: TcpStream,
    read: BytesMut,
}

/// What the client sent next.
enum Next {
    Request(Request),
    /// Something for hyper.
    Other,
    /// The client closed, or the drain closed the idle connection.
    Closed,
}

/// A request ready in `H1::to_app`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Request {
    /// Bytes of the client's it takes, head and body.
    len: usize,
    /// A HEAD request: its answer has no body, whatever its head says.
    head: bool,
    /// The client asked to close the connection after the answer.
    close: bool,
    /// Its method is idempotent (RFC 9110, section 9.2.2): it may be sent again.
    idempotent: bool,
}

/// How a request parsed.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Request(Request),
    /// More bytes are needed.
    Partial,
    /// Not for this path.
    Other,
}

/// Why an answer could not be passed on.
type Failure = Box<dyn std::error::Error + Send + Sync>;

impl H1<'_> {
    /// Reads until a whole request is there; meanwhile, lets the drain close the
    /// connection once it has been idle for the drain idle time.
    async fn next_request<F: Future<Output = ()>>(
        &mut self,
        mut drain: Pin<&mut F>,
        drain_seen: &mut bool,
    ) -> Next {
        loop {
            if !self.from_client.is_empty() {
                let conn = self.conn;
                let (upstream, client_ip) =
                    (conn.shared.upstream.as_str(), conn.peer_ip.as_bytes());
                match parse_request(&self.from_client, upstream, client_ip, &mut self.to_app) {
                    Parsed::Request(request) => return Next::Request(request),
                    Parsed::Other => return Next::Other,
                    Parsed::Partial => {}
                }
            }
            self.from_client.reserve(READ_SIZE);
            let read = tokio::select! {
                biased;
                read = self.client.read_buf(&mut self.from_client) => read,
                // The app closed its kept connection (or sent what nobody asked for): let
                // it go now rather than at the next request.
                () = closed(self.app.as_ref()), if self.app.is_some() => {
                    self.app = None;
                    continue;
                }
                _ = drain.as_mut(), if !*drain_seen => {
                    *drain_seen = true;
                    continue;
                }
                () = self.conn.idle_for(self.conn.shared.drain_idle), if *drain_seen => {
                    self.shutdown().await;
                    return Next::Closed;
                }
            };
            match read {
                Ok(0) => return Next::Closed,
                Ok(_) => {}
                Err(err) => {
                    debug!(%err, "reading from the client failed");
                    return Next::Closed;
                }
            }
        }
    }

    /// Passes the request in `to_app` to the app and its answer to the client. Returns
    /// whether the connection is to close; an error means it can't go on.
    async fn forward(&mut self, request: &Request) -> Result<bool, Failure> {
        // Whether the answer closes the connection: decided when it is made, so that a
        // drain begun while the app works closes this connection with this answer.
        let closing = |conn: &Connection| request.close || conn.shared.is_draining();
        let (mut app, mut retry) = match self.send().await {
            Ok((app, reused)) => (app, reused && request.idempotent),
            Err(err) => {
                let close = closing(self.conn);
                return self.gave_up(request, close, &err.to_string()).await;
            }
        };
        // The head, after any interim (1xx) answers, which pass straight on.
        let answer = loop {
            let close = closing(self.conn);
            let parsed = if app.read.is_empty() {
                Ok(None)
            } else {
                parse_answer(&app.read, request, close, &mut self.to_client)
            };
            match parsed {
                Ok(Some(answer)) if answer.interim => {
                    self.client.write_all(&self.to_client).await?;
                    self.to_client.clear();
                    app.read.advance(answer.head_len);
                }
                Ok(Some(answer)) => break answer,
                Ok(None) if app.read.len() > MAX_ANSWER_HEAD => {
                    return self
                        .gave_up(request, close, "the app's answer head is too long")
                        .await;
                }
                Ok(None) => {
                    let read = self.read_app(&mut app, request).await?;
                    // A kept connection the app closed just as the request went out (its
                    // keep-alive timeout, say) answers nothing: an idempotent request goes
                    // again, once, on a new connection (RFC 9112, section 9.3.1).
                    if retry && !matches!(read, Ok(n) if n > 0) {
                        retry = false;
                        debug!(
                            ?read,
                            "kept connection to the app closed without answering; sending the request again on a new one"
                        );
                        match self.send_fresh().await {
                            Ok(fresh) => app = fresh,
                            Err(err) => {
                                return self.gave_up(request, close, &err.to_string()).await;
                            }
                        }
                        continue;
                    }
                    retry = false;
                    match read {
                        Ok(0) => {
                            return self
                                .gave_up(request, close, "the app closed without answering")
                                .await;
                        }
                        Ok(_) => {}
                        Err(err) => return self.gave_up(request, close, &err.to_string()).await,
                    }
                }
                Err(why) => return self.gave_up(request, close, why).await,
            }
        };
        app.read.advance(answer.head_len);
        let mut framing = answer.framing;
        loop {
            let (take, done) = match framing.take(&app.read) {
                Ok(taken) => taken,
                // Nothing has gone to the client yet (its head still waits in
                // `to_client`): it can still get the shim's 502.
                Err(why) if !self.to_client.is_empty() => {
                    self.to_client.clear();
                    return self.gave_up(request, closing(self.conn), why).await;
                }
                Err(why) => return Err(why.into()),
            };
            let body = &app.read[..take];
            if answer.rechunk {
                if take > 0 {
                    self.to_client
                        .extend_from_slice(format!("{take:x}\r\n").as_bytes());
                    self.to_client.extend_from_slice(body);
                    self.to_client.extend_from_slice(b"\r\n");
                }
            } else if self.to_client.is_empty() {
                // Straight from the app's buffer: no copy.
                self.client.write_all(body).await?;
            } else {
                self.to_client.extend_from_slice(body);
            }
            if !self.to_client.is_empty() {
                self.client.write_all(&self.to_client).await?;
                self.to_client.clear();
            }
            app.read.advance(take);
            if done {
                break;
            }
            if self.read_app(&mut app, request).await?? == 0 {
                if framing != Framing::UntilClose {
                    return Err("the app closed the connection mid-answer".into());
                }
                if answer.rechunk {
                    self.client.write_all(b"0\r\n\r\n").await?;
                }
                break;
            }
        }
        // Bytes after the answer are not an answer to anything: such a connection is not
        // kept.
        if answer.keep_app && app.read.is_empty() {
            self.app = Some(app);
        }
        Ok(answer.close)
    }

    /// Writes the request to the app: on the kept connection if it is still open, or else
    /// on a new one; a kept connection that fails before taking a byte is replaced once.
    /// Returns the connection, and whether it is the kept one.
    async fn send(&mut self) -> Result<(App, bool), Failure> {
        if let Some(mut app) = self.app.take().filter(App::is_open) {
            match write_all(&mut app.stream, &self.to_app).await {
                Ok(()) => return Ok((app, true)),
                Err((err, false)) => {
                    debug!(%err, "kept connection to the app failed before the request was written; retrying on a new one");
                }
                Err((err, true)) => return Err(err.into()),
            }
        }
        Ok((self.send_fresh().await?, false))
    }

    /// Writes the request to the app on a new connection.
    async fn send_fresh(&mut self) -> Result<App, Failure> {
        let mut app = App {
            stream: upstream::open(&self.conn.shared.upstream).await?,
            read: BytesMut::with_capacity(READ_SIZE),
        };
        write_all(&mut app.stream, &self.to_app)
            .await
            .map_err(|(err, _)| err)?;
        Ok(app)
    }

    /// Waits for the app's next bytes. While nothing else from the client is buffered, also
    /// reads from the client, so that a client that leaves is noticed at once: that is an
    /// error, unless `request` said `Connection: close` (the client closed only its side,
    /// and waits for the answer). A client that pipelined requests and then closed its side
    /// gets the answers to those. The app's read, failed or not, is the result.
    async fn read_app(
        &mut self,
        app: &mut App,
        request: &Request,
    ) -> Result<io::Result<usize>, Failure> {
        app.read.reserve(READ_SIZE);
        loop {
            let watch = self.from_client.is_empty() && !self.client_done;
            if watch {
                self.from_client.reserve(READ_SIZE);
            }
            tokio::select! {
                biased;
                read = app.stream.read_buf(&mut app.read) => return Ok(read),
                read = self.client.read_buf(&mut self.from_client), if watch => match read {
                    Ok(0) if request.close => self.client_done = true,
                    Ok(0) => return Err("the client closed its connection".into()),
                    Ok(_) => {}
                    Err(err) => return Err(err.into()),
                },
            }
        }
    }

    /// Answers 502 when the app could not be reached or failed before its answer's head
    /// was passed on: its connection is dropped.
    async fn gave_up(
        &mut self,
        request: &Request,
        close: bool,
        why: &str,
    ) -> Result<bool, Failure> {
        debug!(why, upstream = %self.conn.shared.upstream, "the app did not answer");
        self.bad_gateway(close, request.head).await?;
        Ok(close)
    }

    /// The shim's own answer when the app did not answer (without its body for a HEAD
    /// request).
    async fn bad_gateway(&mut self, close: bool, head: bool) -> io::Result<()> {
        let text = format!(
            "rollguard shim: the app at {} did not answer\n",
            self.conn.shared.upstream
        );
        let out = &mut self.to_client;
        out.clear();
        out.extend_from_slice(
            b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\n",
        );
        out.extend_from_slice(format!("content-length: {}\r\n", text.len()).as_bytes());
        write_date(out);
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head {
            out.extend_from_slice(text.as_bytes());
        }
        let written = self.client.write_all(out).await;
        out.clear();
        written
    }

    /// Closes the connection after its last answer: a FIN, then whatever the client still
    /// sends is read and dropped until it closes too (or `LINGER` passes).
    async fn close(&mut self) {
        self.shutdown().await;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(LINGER, async {
            while matches!(self.client.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }

    async fn shutdown(&mut self) {
        if let Err(err) = self.client.shutdown().await {
            debug!(%err, "closing the client connection failed");
        }
    }
}

impl App {
    /// Whether a kept connection is still open: nothing (no end, no stray bytes) has come
    /// since its last answer. Costs no system call while the socket has not become ready.
    fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(err) if err.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Parses the request at the start of `buf` and, when this path takes it, writes it for
/// the app at `upstream` into `out`: the target as sent, HTTP/1.1, no hop-by-hop headers,
/// `Host` (the app's address when the client sent none), `X-Forwarded-For` (ending with
/// `client_ip`) and `X-Forwarded-Proto` as [`Connection::prepare`] sets them, and the body.
fn parse_request(buf: &[u8], upstream: &str, client_ip: &[u8], out: &mut Vec<u8>) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_REQUEST_HEAD => return Parsed::Partial,
        Ok(httparse::Status::Partial) | Err(_) => return Parsed::Other,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Other;
    };
    // A CONNECT's answer opens a tunnel: hyper's to handle.
    if !target.starts_with('/') || method == "CONNECT" {
        return Parsed::Other;
    }
    let mut length: Option<usize> = None;
    let mut close = false;
    let mut has_host = false;
    let mut has_proto = false;
    let mut forwarded = false;
    // Headers the client's `Connection` names: they are for this hop only.
    let mut named: Vec<&[u8]> = Vec::new();
    for header in req.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let Some(len) = parse_length(header.value) else {
                return Parsed::Other;
            };
            if length.is_some_and(|earlier| earlier != len) {
                return Parsed::Other;
            }
            length = Some(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
        {
            return Parsed::Other;
        } else if name.eq_ignore_ascii_case("host") {
            has_host = true;
        } else if name.eq_ignore_ascii_case("x-forwarded-proto") {
            has_proto = true;
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(header.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if FRAMED_HERE
                    .iter()
                    .any(|framed| framed.as_bytes().eq_ignore_ascii_case(token))
                {
                    // Dropping one of these would change the request, not just its hop.
                    return Parsed::Other;
                } else {
                    named.push(token);
                }
            }
        }
    }
    let body = length.unwrap_or(0);
    if body > MAX_REQUEST_BODY {
        return Parsed::Other;
    }
    let len = head_len + body;
    if buf.len() < len {
        return Parsed::Partial;
    }

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for header in req.headers.iter() {
        if ends_here(header.name, &named)
            || header.name.eq_ignore_ascii_case("x-forwarded-for")
            || header.name.eq_ignore_ascii_case("content-length")
        {
            continue;
        }
        push_header(out, header.name.as_bytes(), header.value);
    }
    // One length, however many lines said it.
    if let Some(length) = length {
        push_header(out, b"content-length", length.to_string().as_bytes());
    }
    if !has_host {
        push_header(out, b"host", upstream.as_bytes());
    }
    // Every earlier hop, in order, then this client (as `append_forwarded_for` does).
    out.extend_from_slice(b"x-forwarded-for: ");
    if forwarded {
        for header in req.headers.iter() {
            if header.name.eq_ignore_ascii_case("x-forwarded-for") {
                let hops = header.value.trim_ascii();
                if !hops.is_empty() {
                    out.extend_from_slice(hops);
                    out.extend_from_slice(b", ");
                }
            }
        }
    }
    out.extend_from_slice(client_ip);
    out.extend_from_slice(b"\r\n");
    if !has_proto {
        out.extend_from_slice(b"x-forwarded-proto: http\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&buf[head_len..len]);
    Parsed::Request(Request {
        len,
        head: method == "HEAD",
        close,
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
    })
}

/// An answer's head, parsed and written for the client.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    /// Bytes of the app's it takes.
    head_len: usize,
    /// An interim (1xx) answer: the real one follows.
    interim: bool,
    framing: Framing,
    /// The body goes to the client chunked (its own framing is the app's close).
    rechunk: bool,
    /// The app keeps its connection open after this answer.
    keep_app: bool,
    /// The client's connection closes after this answer.
    close: bool,
}

/// Parses the app's answer head at the start of `buf` and writes it for the client into
/// `out`: HTTP/1.1, no hop-by-hop headers but `Transfer-Encoding` (chunked bodies pass as
/// they are), a `Date` if the app sent none, and `Connection: close` when `close` (or
/// when only the app's close can end the body). `None`: more bytes are needed.
fn parse_answer(
    buf: &[u8],
    request: &Request,
    close: bool,
    out: &mut Vec<u8>,
) -> Result<Option<Answer>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("the app's answer is not HTTP/1.x"),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Err("the app's answer is not HTTP/1.x");
    };
    if status < 100 {
        return Err("the app's answer has no valid status");
    }
    if status == 101 {
        return Err("the app switched protocols without being asked to");
    }
    let interim = (100..200).contains(&status);
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut app_close = false;
    let mut app_keep_alive = false;
    let mut has_date = false;
    let mut named: Vec<&[u8]> = Vec::new();
    for header in resp.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let len = parse_length(header.value).ok_or("the app sent a bad Content-Length")?;
            if length.is_some_and(|earlier| earlier != len as u64) {
                return Err("the app sent two Content-Lengths");
            }
            length = Some(len as u64);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding of the last line is the one that frames the body.
            chunked = Some(
                tokens(header.value)
                    .last()
                    .is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked")),
            );
        } else if name.eq_ignore_ascii_case("date") {
            has_date = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(header.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    app_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    app_keep_alive = true;
                } else {
                    named.push(token);
                }
            }
        }
    }
    let framing = if interim || request.head || status == 204 || status == 304 {
        Framing::Length(0)
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked(Chunked::default()),
            (Some(false), _) | (None, None) => Framing::UntilClose,
            (None, Some(len)) => Framing::Length(len),
        }
    };
    // A body that ends at the app's close goes to the client chunked, so that its
    // connection stays and a body cut short shows; unless the app named another coding.
    let rechunk = framing == Framing::UntilClose && chunked.is_none();
    let close = close || (framing == Framing::UntilClose && !rechunk);
    let keep_app = framing != Framing::UntilClose && !app_close && (version == 1 || app_keep_alive);

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    // httparse takes three digits only.
    out.extend([status / 100, status / 10 % 10, status % 10].map(|digit| b'0' + digit as u8));
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\r\n");
    for header in resp.headers.iter() {
        let name = header.name;
        let passes = if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunks pass as they are, and a coding that isn't chunked ends at the close.
            true
        } else if name.eq_ignore_ascii_case("content-length") {
            chunked.is_none()
        } else {
            !ends_here(name, &named)
        };
        if passes {
            push_header(out, name.as_bytes(), header.value);
        }
    }
    if !interim {
        if !has_date {
            write_date(out);
        }
        if rechunk {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(Answer {
        head_len,
        interim,
        framing,
        rechunk,
        keep_app,
        close,
    }))
}

/// Where an answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// After this many more bytes.
    Length(u64),
    /// At the end of its chunks.
    Chunked(Chunked),
    /// When the app closes the connection.
    UntilClose,
}

impl Framing {
    /// How many bytes at the start of `buf` belong to the body, and whether the body ends
    /// with them.
    fn take(&mut self, buf: &[u8]) -> Result<(usize, bool), &'static str> {
        match self {
            Framing::Length(left) => {
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= take as u64;
                Ok((take, *left == 0))
            }
            Framing::Chunked(chunked) => {
                let take = chunked.scan(buf)?;
                Ok((take, chunked.is_done()))
            }
            Framing::UntilClose => Ok((buf.len(), false)),
        }
    }
}

/// Follows a chunked body as it passes, to find where it ends (RFC 9112, section 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// In a chunk's size line: the size so far, and whether it has a digit yet.
    Size(u64, bool),
    /// In a chunk extension (or the spaces before one).
    Extension(u64),
    /// The size line's LF.
    SizeLf(u64),
    /// In a chunk's data: bytes left.
    Data(u64),
    /// The CR after a chunk's data.
    DataCr,
    /// The LF after a chunk's data.
    DataLf,
    /// After the last chunk, at the start of a trailer line (or of the final CRLF).
    LineStart,
    /// In a trailer line.
    Trailer,
    /// The final LF.
    EndLf,
    /// The body is over.
    Done,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked::Size(0, false)
    }
}

impl Chunked {
    fn is_done(&self) -> bool {
        *self == Chunked::Done
    }

    /// Follows the body through `buf`; returns how many bytes of it belong to the body
    /// (all of them unless the body ends within).
    fn scan(&mut self, buf: &[u8]) -> Result<usize, &'static str> {
        const BAD: &str = "the app's chunked body is malformed";
        let mut at = 0;
        while at < buf.len() && !self.is_done() {
            if let Chunked::Data(left) = *self {
                let take = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(buf.len() - at);
                at += take;
                *self = match left - take as u64 {
                    0 => Chunked::DataCr,
                    left => Chunked::Data(left),
                };
                continue;
            }
            let byte = buf[at];
            at += 1;
            *self = match (*self, byte) {
                (Chunked::Size(size, _), b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    if size >> 60 != 0 {
                        return Err("the app's chunk is too large");
                    }
                    let digit = (byte as char).to_digit(16).unwrap_or(0);
                    Chunked::Size(size << 4 | u64::from(digit), true)
                }
                (Chunked::Size(size, true), b';' | b' ' | b'\t') => Chunked::Extension(size),
                (Chunked::Size(size, true), b'\r') | (Chunked::Extension(size), b'\r') => {
                    Chunked::SizeLf(size)
                }
                (Chunked::Extension(_), b'\n') => return Err(BAD),
                (Chunked::Extension(size), _) => Chunked::Extension(size),
                (Chunked::SizeLf(0), b'\n') => Chunked::LineStart,
                (Chunked::SizeLf(size), b'\n') => Chunked::Data(size),
                (Chunked::DataCr, b'\r') => Chunked::DataLf,
                (Chunked::DataLf, b'\n') => Chunked::Size(0, false),
                (Chunked::LineStart, b'\r') => Chunked::EndLf,
                (Chunked::LineStart | Chunked::Trailer, b'\n') => Chunked::LineStart,
                (Chunked::LineStart | Chunked::Trailer, _) => Chunked::Trailer,
                (Chunked::EndLf, b'\n') => Chunked::Done,
                _ => return Err(BAD),
            };
        }
        Ok(at)
    }
}

/// Completes when the kept connection to the app is no longer open (see [`App::is_open`]);
/// never without one.
async fn closed(app: Option<&App>) {
    let Some(app) = app else {
        return std::future::pending().await;
    };
    loop {
        if std::future::poll_fn(|cx| app.stream.poll_read_ready(cx))
            .await
            .is_err()
            || !app.is_open()
        {
            return;
        }
    }
}

/// Writes all of `bytes`; on failure, says whether any byte was written.
async fn write_all(stream: &mut TcpStream, bytes: &[u8]) -> Result<(), (io::Error, bool)> {
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]).await {
            Ok(0) => return Err((io::ErrorKind::WriteZero.into(), written > 0)),
            Ok(n) => written += n,
            Err(err) => return Err((err, written > 0)),
        }
    }
    Ok(())
}

/// Whether header `name` is for this hop only: hop-by-hop, or `named` by the message's
/// `Connection`.
fn ends_here(name: &str, named: &[&[u8]]) -> bool {
    is_hop_by_hop(name)
        || named
            .iter()
            .any(|named| named.eq_ignore_ascii_case(name.as_bytes()))
}

/// A `Content-Length` value: digits only.
fn parse_length(value: &[u8]) -> Option<usize> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes a `Date` header line for now; the text is made once a second per thread.
fn write_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    DATE.with_borrow_mut(|(made, text)| {
        if *made != second || text.is_empty() {
            *text = httpdate::fmt_http_date(now);
            *made = second;
        }
        push_header(out, b"date", text.as_bytes());
    });
}

/// A client connection handed to hyper, with the bytes this path read and did not use:
/// hyper reads those first.
#[derive(Debug)]
pub(super) struct Rewound {
    read: BytesMut,
    stream: TcpStream,
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        let take = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read[..take]);
        self.read.advance(take);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &[u8] = b"10.0.0.9";

    fn request(raw: &str) -> (Parsed, String) {
        let mut out = Vec::new();
        let parsed = parse_request(raw.as_bytes(), "app:8080", CLIENT, &mut out);
        (parsed, String::from_utf8(out).expect("utf-8"))
    }

    fn answer(raw: &str, head: bool, close: bool) -> (Answer, String) {
        let mut out = Vec::new();
        let request = Request {
            len: 0,
            head,
            close: false,
            idempotent: true,
        };
        let answer = parse_answer(raw.as_bytes(), &request, close, &mut out)
            .expect("valid answer")
            .expect("complete answer");
        (answer, String::from_utf8(out).expect("utf-8"))
    }

    /// The head lines of `text` after its first, without `Date` (which is the clock's).
    fn lines(text: &str) -> Vec<&str> {
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        head.split("\r\n")
            .skip(1)
            .filter(|line| !line.starts_with("date: "))
            .collect()
    }

    #[test]
    fn a_plain_request_is_rewritten_for_the_app() {
        let raw = "GET /a?b=1 HTTP/1.1\r\nHost: shop\r\nConnection: keep-alive, X-Drop\r\n\
                   X-Drop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nAccept: */*\r\n\r\n";
        let (parsed, out) = request(raw);
        assert_eq!(
            parsed,
            Parsed::Request(Request {
                len: raw.len(),
                head: false,
                close: false,
                idempotent: true,
            })
        );
        assert_eq!(
            out,
            "GET /a?b=1 HTTP/1.1\r\nHost: shop\r\nAccept: */*\r\n\
             x-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\n\r\n"
        );
    }

    #[test]
    fn forwarded_headers_keep_earlier_hops_and_the_clients_proto() {
        let (_, out) = request(
            "GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2\r\nX-Forwarded-Proto: https\r\n\
             x-forwarded-for: 3.3.3.3\r\n\r\n",
        );
        assert_eq!(
            lines(&out),
            [
                "X-Forwarded-Proto: https",
                "host: app:8080",
                "x-forwarded-for: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9",
            ]
        );
    }

    #[test]
    fn a_request_body_comes_whole_with_its_head() {
        let raw = "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: close\r\n\
                   Content-Length: 5\r\n\r\nhello";
        // Not all there yet: wait for more.
        assert_eq!(request(&raw[..raw.len() - 2]).0, Parsed::Partial);
        let (parsed, out) = request(&format!("{raw}GET / HTTP/1.1\r\n"));
        assert_eq!(
            parsed,
            Parsed::Request(Request {
                len: raw.len(),
                head: false,
                close: true,
                idempotent: false,
            })
        );
        assert!(out.ends_with("\r\n\r\nhello"), "{out}");
        assert_eq!(out.matches("ontent-length").count(), 1, "{out}");
        assert!(!out.contains("Connection"), "{out}");
        let (parsed, _) = request("HEAD / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(matches!(
            parsed,
            Parsed::Request(Request { head: true, .. })
        ));
    }

    #[test]
    fn requests_this_path_does_not_take_go_to_hyper() {
        for raw in [
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "GET http://shop/ HTTP/1.1\r\nHost: shop\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: shop\r\n\r\n",
            "GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            "POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\na",
            "POST / HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "CONNECT /x HTTP/1.1\r\nHost: shop\r\n\r\n",
            // Dropping what `Connection` names must not unframe the body (nor drop the
            // headers the shim writes).
            "POST / HTTP/1.1\r\nConnection: content-length\r\nContent-Length: 1\r\n\r\nx",
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: Host\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: x-forwarded-proto\r\n\r\n",
            "\x16\x03\x01\x02\x00",
        ] {
            assert_eq!(request(raw).0, Parsed::Other, "{raw:?}");
        }
        assert_eq!(request("GET / HTTP/1.1\r\nHost: x").0, Parsed::Partial);
        let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_REQUEST_HEAD));
        assert_eq!(request(&endless).0, Parsed::Other);
    }

    #[test]
    fn an_answer_loses_its_hop_by_hop_headers_and_gets_a_date() {
        let (answer, out) = answer(
            "HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
             Proxy-Connection: keep-alive\r\nX-App: 1\r\nContent-Length: 2\r\n\r\nhi",
            false,
            false,
        );
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("\r\ndate: "), "{out}");
        assert_eq!(lines(&out), ["X-App: 1", "Content-Length: 2"]);
        assert_eq!(answer.framing, Framing::Length(2));
        assert!(!answer.keep_app, "the app said close");
        assert!(!answer.close, "the client's connection stays");
    }

    #[test]
    fn an_answer_is_framed_as_the_app_framed_it() {
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\
                       Date: x\r\n\r\n";
        let (got, out) = answer(chunked, false, false);
        assert_eq!(got.framing, Framing::Chunked(Chunked::default()));
        assert!(got.keep_app && !got.close);
        assert_eq!(lines(&out), ["Transfer-Encoding: chunked", "Date: x"]);

        let (got, out) = answer("HTTP/1.0 200 OK\r\nX: 1\r\n\r\n", false, false);
        assert_eq!(got.framing, Framing::UntilClose);
        assert!(got.rechunk && !got.keep_app && !got.close);
        assert_eq!(lines(&out), ["X: 1", "transfer-encoding: chunked"]);

        let (got, _) = answer(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
            false,
            true,
        );
        assert!(got.keep_app && got.close);

        let (got, out) = answer(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            false,
            false,
        );
        assert_eq!(got.framing, Framing::UntilClose);
        assert!(!got.rechunk && got.close);
        assert_eq!(
            lines(&out),
            ["Transfer-Encoding: gzip", "connection: close"]
        );

        for (raw, head) in [
            ("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", true),
            ("HTTP/1.1 204 No Content\r\n\r\n", false),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
                false,
            ),
        ] {
            let (got, _) = answer(raw, head, false);
            assert_eq!(got.framing, Framing::Length(0), "{raw:?}");
            assert!(got.keep_app, "{raw:?}");
        }

        let (got, out) = answer(
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\n",
            false,
            true,
        );
        assert!(got.interim);
        assert_eq!(out, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n");
    }

    #[test]
    fn bad_answers_are_refused() {
        let request = Request {
            len: 0,
            head: false,
            close: false,
            idempotent: true,
        };
        for raw in [
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 099 Odd\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            let parsed = parse_answer(raw.as_bytes(), &request, false, &mut Vec::new());
            assert!(parsed.is_err(), "{raw:?}");
        }
        let partial = parse_answer(b"HTTP/1.1 200 OK\r\n", &request, false, &mut Vec::new());
        assert_eq!(partial, Ok(None));
    }

    #[test]
    fn a_chunked_body_ends_where_its_last_chunk_and_trailers_end() {
        let body =
            b"4;ext=1\r\nWiki\r\n5 \r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n";
        let after = b"HTTP/1.1 200 OK\r\n";
        let whole = [&body[..], after].concat();
        // Any split, including one byte at a time, finds the same end.
        for split in 0..=body.len() {
            let mut chunked = Chunked::default();
            let first = chunked.scan(&whole[..split]).expect("valid");
            assert_eq!(first, split);
            let second = chunked.scan(&whole[split..]).expect("valid");
            assert!(chunked.is_done(), "split at {split}");
            assert_eq!(first + second, body.len(), "split at {split}");
        }
        let mut chunked = Chunked::default();
        for (at, byte) in body.iter().enumerate() {
            assert!(!chunked.is_done(), "done early at {at}");
            assert_eq!(chunked.scan(std::slice::from_ref(byte)), Ok(1));
        }
        assert!(chunked.is_done());
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"4\r\nWikiX",
            b"4\r\nWiki\rX",
            b"4;ext\n",
            b"11111111111111111\r\n",
            b"0\r\n\rX",
        ] {
            assert!(Chunked::default().scan(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_length_takes_only_its_bytes() {
        let mut framing = Framing::Length(5);
        assert_eq!(framing.take(b"abc"), Ok((3, false)));
        assert_eq!(framing.take(b"defgh"), Ok((2, true)));
        assert_eq!(Framing::UntilClose.take(b"abc"), Ok((3, false)));
    }
}
