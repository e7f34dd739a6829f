//! The HTTP/1.1 connection to the app that one HTTP/1.x client connection served by
//! hyper uses (see `proxy::h1` for the others).
//!
//! An HTTP/1.1 client sends one request at a time, so the proxy gives each client
//! connection its own connection to the app, opened on its first request and kept while
//! both stay open: no pool to lock, no checkout, and the app sees as many connections as
//! there are clients. A kept connection that turns out to be closed before a byte of the
//! request was written is replaced once by a new one, and the request goes out on that.
//!
//! The connection's I/O is not a task of its own: its future is handed over ([`Handoff`])
//! to the client connection's task, which polls it beside the client's, so a request and
//! its answer never wake another task or thread.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Poll, Waker};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

/// How long connecting to the app may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request could not be sent to the app or answered by it.
pub(crate) type UpstreamError = Box<dyn StdError + Send + Sync>;

/// The I/O of a connection to the app, for the client connection's task to poll.
pub(crate) type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One client connection's connection to the app, kept between its requests.
#[derive(Debug)]
pub(crate) struct Dedicated {
    /// `None` before the first request, while a request is being sent, and after an
    /// upgrade took the connection.
    sender: Mutex<Option<SendRequest<Incoming>>>,
    /// Where a new connection's I/O goes: the client connection's task.
    handoff: Handoff,
}

impl Dedicated {
    /// A dedicated connection whose I/O futures go to its [`handoff`](Dedicated::handoff).
    /// Until one is polled, the connection it drives can send nothing.
    pub(crate) fn new() -> Self {
        Dedicated {
            sender: Mutex::new(None),
            handoff: Handoff::default(),
        }
    }

    /// Where the client connection's task takes the I/O of each new connection to the app.
    pub(crate) fn handoff(&self) -> &Handoff {
        &self.handoff
    }

    /// Sends `req` (origin-form URI, `Host` set) to the app at `upstream` and returns its
    /// answer's head; the body streams from the connection, which is kept for the next
    /// request unless the answer switched protocols.
    pub(crate) async fn send(
        &self,
        upstream: &Authority,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let kept = self.take().filter(|sender| !sender.is_closed());
        let reused = kept.is_some();
        let mut sender = match kept {
            Some(sender) => sender,
            None => self.connect(upstream).await?,
        };
        // Ready once the previous answer has been read; a connection the app closed fails
        // here, before anything is written.
        if let Err(err) = sender.ready().await {
            if !reused {
                return Err(err.into());
            }
            debug!(%err, "kept connection to the app is gone; opening a new one");
            return self.send_fresh(upstream, req).await;
        }
        match sender.try_send_request(req).await {
            Ok(resp) => {
                self.keep(sender, &resp);
                Ok(resp)
            }
            Err(mut err) => match err.take_message() {
                // Not a byte was written: safe to send again, once, on a new connection.
                Some(req) if reused => {
                    debug!(err = %err.error(), "kept connection to the app failed before the request was written; retrying on a new one");
                    self.send_fresh(upstream, req).await
                }
                _ => Err(err.into_error().into()),
            },
        }
    }

    async fn send_fresh(
        &self,
        upstream: &Authority,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = self.connect(upstream).await?;
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        self.keep(sender, &resp);
        Ok(resp)
    }

    /// Opens a new HTTP/1.1 connection to the app and hands its I/O to the client
    /// connection's task (or to a task of its own if that one is gone).
    async fn connect(&self, upstream: &Authority) -> Result<SendRequest<Incoming>, UpstreamError> {
        let stream = open(upstream).await?;
        // One flat buffer per request, written with send(2) (as for answers to clients).
        let (sender, conn) = http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await?;
        let driver: Driver = Box::pin(async move {
            if let Err(err) = conn.with_upgrades().await {
                debug!(%err, "connection to the app ended with an error");
            }
        });
        // The task polling this request polls the handoff: wake it so it looks.
        let task = std::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
        self.handoff.give(driver, &task);
        Ok(sender)
    }

    fn take(&self) -> Option<SendRequest<Incoming>> {
        // A poisoned lock only means a panic elsewhere; the Option is still sound.
        self.sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    /// Keeps the connection for the next request, unless the answer turned it into a
    /// tunnel.
    fn keep(&self, sender: SendRequest<Incoming>, resp: &Response<Incoming>) {
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            *self
                .sender
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(sender);
        }
    }
}

/// Opens a TCP connection to the app at `upstream`, with Nagle's delay off.
pub(crate) async fn open(upstream: &Authority) -> Result<TcpStream, UpstreamError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream.as_str()))
        .await
        .map_err(|_| format!("connecting to {upstream} took longer than {CONNECT_TIMEOUT:?}"))??;
    if crate::connected_to_itself(&stream) {
        return Err(format!("connection to {upstream} refused: nothing listens there").into());
    }
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Passes the I/O of a new connection to the app from the request that opened it to the
/// client connection's task, which looks after every poll of the client's side.
#[derive(Default)]
pub(crate) struct Handoff {
    /// Whether `state` holds a connection: lets the task look without locking.
    waiting: AtomicBool,
    state: Mutex<HandoffState>,
}

#[derive(Default)]
struct HandoffState {
    driver: Option<Driver>,
    /// The client connection's task has ended: connections drive themselves.
    closed: bool,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff")
            .field("waiting", &self.waiting.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Handoff {
    fn state(&self) -> std::sync::MutexGuard<'_, HandoffState> {
        // A poisoned lock only means a panic elsewhere; the state is still sound.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands `driver` to the client connection's task and wakes `task`, or runs it on a
    /// task of its own once that one is gone.
    fn give(&self, driver: Driver, task: &Waker) {
        let mut state = self.state();
        if state.closed {
            drop(state);
            tokio::spawn(driver);
            return;
        }
        // A request waits for its connection to be taken before it can open another, so
        // none should be here; should one be, it runs alone rather than be dropped.
        if let Some(old) = state.driver.replace(driver) {
            tokio::spawn(old);
        }
        self.waiting.store(true, Ordering::Release);
        drop(state);
        task.wake_by_ref();
    }

    /// The connection handed over since the last call, if any.
    pub(crate) fn take(&self) -> Option<Driver> {
        // A plain load: this runs after every poll of the client's side.
        if !self.waiting.load(Ordering::Acquire) {
            return None;
        }
        let mut state = self.state();
        self.waiting.store(false, Ordering::Relaxed);
        state.driver.take()
    }

    /// The client connection's task is ending: later connections drive themselves. Returns
    /// one handed over and not taken.
    pub(crate) fn close(&self) -> Option<Driver> {
        let mut state = self.state();
        state.closed = true;
        self.waiting.store(false, Ordering::Release);
        state.driver.take()
    }
}
