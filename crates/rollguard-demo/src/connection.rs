//! One accepted connection: HTTP/1.1 or h2c (prior knowledge) served by hyper, shut down
//! politely when the app drains or when it has sat idle for the keep-alive timeout.
//!
//! hyper has no timer for the idle time *between* requests on a kept-alive connection, so the
//! connection task races hyper's connection future against its own idle timer. The timer
//! only fires with no request in flight, and even then it asks hyper for a graceful shutdown
//! (which never cuts an answer being written) instead of dropping the socket.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::routes::{Routes, Shared};

/// What the idle timer and the routes of one connection need to know about each other.
/// Requests update it with relaxed atomics only; no lock on the request path.
#[derive(Debug)]
pub(crate) struct ConnActivity {
    opened: Instant,
    /// When the last answer was produced, in nanoseconds since `opened`.
    last_answer: AtomicU64,
    /// Requests whose answer is not produced yet (only `/slow` takes time).
    in_flight: AtomicUsize,
    /// Set once a graceful shutdown of this connection has started.
    closing: AtomicBool,
}

impl ConnActivity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_answer: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
        }
    }

    /// Records that an answer was just produced: the idle time starts again now.
    pub(crate) fn answered(&self) {
        let since_open = u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_answer.store(since_open, Ordering::Relaxed);
    }

    /// Records the start of a request that takes time to answer.
    pub(crate) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// Records the end (answer or cancellation) of a request counted by `request_started`.
    pub(crate) fn request_finished(&self) {
        self.answered();
        // Release: whoever sees the count drop also sees the new `last_answer`.
        self.in_flight.fetch_sub(1, Ordering::Release);
    }

    /// Whether the connection is shutting down (answers then carry `Connection: close`).
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// The moment the connection has been idle for `timeout`, unless a request is running.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last_answer = Duration::from_nanos(self.last_answer.load(Ordering::Relaxed));
        Some(self.opened + last_answer + timeout)
    }
}

/// Serves one connection until it ends, shutting it down gracefully when `drain` turns true
/// or when it has been idle for `keepalive_timeout` (zero: never).
pub(crate) async fn serve_connection(
    stream: TcpStream,
    http: Arc<auto::Builder<TokioExecutor>>,
    shared: Arc<Shared>,
    mut drain: watch::Receiver<bool>,
    keepalive_timeout: Duration,
) {
    let activity = Arc::new(ConnActivity::new());
    let routes = Routes::new(shared, Arc::clone(&activity));
    let mut conn = std::pin::pin!(http.serve_connection(TokioIo::new(stream), routes));
    let mut idle = std::pin::pin!(idle(&activity, keepalive_timeout));
    loop {
        let reason = tokio::select! {
            ended = conn.as_mut() => {
                if let Err(err) = ended {
                    tracing::debug!(%err, "connection ended with an error");
                }
                return;
            }
            // An error means the app is gone, which is also a reason to close.
            _ = drain.wait_for(|draining| *draining), if !activity.is_closing() => "draining",
            () = idle.as_mut(), if !activity.is_closing() => "idle",
        };
        tracing::debug!(reason, "closing connection gracefully");
        // Before hyper is told, so that any answer produced from now on says `close`.
        activity.closing.store(true, Ordering::Relaxed);
        conn.as_mut().graceful_shutdown();
    }
}

/// Completes once the connection has had no request in flight for `timeout`.
async fn idle(activity: &ConnActivity, timeout: Duration) {
    if timeout.is_zero() {
        return std::future::pending().await;
    }
    let mut deadline = activity.opened + timeout;
    loop {
        tokio::time::sleep_until(deadline).await;
        let now = Instant::now();
        deadline = match activity.idle_deadline(timeout) {
            Some(idle_at) if idle_at <= now => return,
            Some(idle_at) => idle_at,
            // Busy: look again one timeout later; finishing the request moves the deadline.
            None => now + timeout,
        };
    }
}
