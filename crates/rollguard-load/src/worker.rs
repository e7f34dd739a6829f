//! A worker: one logical client that sends requests one after another, on a kept-alive
//! connection or on a fresh connection per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONNECTION, HOST, HeaderValue};
use http::{HeaderMap, HeaderName, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use rollguard_core::FailureClass;
use tokio::sync::watch;
use tokio::time::timeout_at;

use crate::classify;
use crate::conn::{Conn, Connector};
use crate::report::{Attempt, Outcome, Recorder, Slot};
use crate::{ConnectionMode, LoadModel, StatusSet};

/// Everything the workers share: where and what to send, and how to judge the answer.
pub(crate) struct Plan {
    pub(crate) connector: Connector,
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) timeout: Duration,
    pub(crate) expect_status: StatusSet,
    pub(crate) version_header: HeaderName,
    pub(crate) model: LoadModel,
    pub(crate) start: Instant,
    /// Open loop: the next request number to claim; request `i` is due at
    /// `start + i / rate`.
    pub(crate) next_ticket: AtomicU64,
}

pub(crate) struct Worker {
    plan: Arc<Plan>,
    mode: ConnectionMode,
    conn: Option<Conn>,
    /// When the run ends, once known.
    end: watch::Receiver<Option<Instant>>,
    recorder: Recorder,
}

impl Worker {
    pub(crate) fn new(
        plan: Arc<Plan>,
        mode: ConnectionMode,
        end: watch::Receiver<Option<Instant>>,
        recorder: Recorder,
    ) -> Self {
        Self {
            plan,
            mode,
            conn: None,
            end,
            recorder,
        }
    }

    /// Sends requests until the end of the run: no request due at or after the end is
    /// sent, and a request in flight is finished first (it is bounded by the timeout).
    pub(crate) async fn run(mut self) -> Recorder {
        match self.plan.model {
            LoadModel::Closed { .. } => loop {
                let now = Instant::now();
                if self.ended(now) {
                    break;
                }
                self.request(Slot {
                    due: now,
                    origin: now,
                })
                .await;
            },
            LoadModel::Open { rate, .. } => loop {
                let ticket = self.plan.next_ticket.fetch_add(1, Ordering::Relaxed);
                let due = self.plan.start + Duration::from_secs_f64(ticket as f64 / rate);
                // Overdue when claimed: every worker was busy when it fell due, so the wait
                // is the server's doing and counts in its latency (no coordinated
                // omission). Otherwise this worker sleeps until `due`, and its wake-up lag
                // (timer granularity) is ours, not the server's.
                let overdue = Instant::now() >= due;
                // The end may be set, or brought forward, while we wait for `due`.
                while !self.ended(due) && Instant::now() < due {
                    tokio::select! {
                        changed = self.end.changed() => if changed.is_err() { break },
                        () = tokio::time::sleep_until(due.into()) => {}
                    }
                }
                if self.ended(due) || self.backlog_expired() {
                    break;
                }
                let origin = if overdue { due } else { Instant::now() };
                self.request(Slot { due, origin }).await;
            },
        }
        self.recorder
    }

    /// Whether a request due at `at` falls after the end of the run (or the run was
    /// dropped).
    fn ended(&self, at: Instant) -> bool {
        match *self.end.borrow() {
            Some(end) => at >= end,
            None => self.end.has_changed().is_err(),
        }
    }

    /// Whether the run ended more than a request timeout ago: requests still overdue
    /// then are left unsent, so an overloaded target can't stretch the run (or an
    /// interrupt) by more than that.
    fn backlog_expired(&self) -> bool {
        match *self.end.borrow() {
            Some(end) => Instant::now() >= end + self.plan.timeout,
            None => false,
        }
    }

    /// Sends one request and records how it went.
    async fn request(&mut self, slot: Slot) {
        // One timer bounds the whole attempt, connecting included; `progress` says where
        // the attempt was if the timer fires.
        let deadline = tokio::time::Instant::now() + self.plan.timeout;
        let mut progress = Progress::default();
        let conn = self.conn.take();
        let attempt = attempt(&self.plan, &self.recorder, self.mode, conn, &mut progress);
        let result = timeout_at(deadline, attempt).await;
        match result {
            Ok(Ok((conn, status, version))) => {
                let attempt = Attempt {
                    slot,
                    answered: true,
                    conn_requests: conn.completed - 1,
                    local_port: Some(conn.local_port),
                };
                let outcome = if self.plan.expect_status.contains(status) {
                    Outcome::Ok { version }
                } else {
                    Outcome::Failed {
                        class: FailureClass::HttpStatus(status),
                        detail: format!("unexpected status {status}"),
                        version,
                    }
                };
                self.recorder.record(attempt, outcome);
                if self.mode == ConnectionMode::KeepAlive {
                    self.conn = Some(conn);
                }
            }
            Ok(Err((class, detail))) => self.fail(slot, &progress, class, detail),
            Err(_) if progress.connected => {
                let detail = format!("no complete response within {:?}", self.plan.timeout);
                self.fail(slot, &progress, FailureClass::RequestTimeout, detail);
            }
            Err(_) => {
                let detail = format!("no connection within {:?}", self.plan.timeout);
                self.fail(slot, &progress, FailureClass::ConnectTimeout, detail);
            }
        }
    }

    fn fail(&mut self, slot: Slot, progress: &Progress, class: FailureClass, detail: String) {
        let attempt = Attempt {
            slot,
            answered: false,
            conn_requests: progress.conn_requests,
            local_port: progress.local_port,
        };
        let outcome = Outcome::Failed {
            class,
            detail,
            version: None,
        };
        self.recorder.record(attempt, outcome);
    }
}

/// How far an attempt got, for classifying a timeout.
#[derive(Default)]
struct Progress {
    /// A connection was ready for the request.
    connected: bool,
    /// Requests the connection had completed before this one.
    conn_requests: u64,
    /// The connection's local port.
    local_port: Option<u16>,
}

/// One request: reuse the kept-alive connection if the peer has not closed it meanwhile
/// (a connection closed while idle is replaced silently, as any client would; only a
/// close that races the request counts as a failure), or connect; then send the request
/// and read the whole response. Returns the connection, the status and the version id.
async fn attempt(
    plan: &Plan,
    recorder: &Recorder,
    mode: ConnectionMode,
    conn: Option<Conn>,
    progress: &mut Progress,
) -> Result<(Conn, u16, Option<usize>), (FailureClass, String)> {
    let reusable = match conn {
        Some(mut conn) => conn.ready().await.then_some(conn),
        None => None,
    };
    let mut conn = match reusable {
        Some(conn) => conn,
        None => plan.connector.connect(&mut progress.local_port).await?,
    };
    progress.connected = true;
    progress.conn_requests = conn.completed;
    progress.local_port = Some(conn.local_port);
    let fail = |e: hyper::Error| (classify::exchange_error(&e), classify::detail(&e));
    let response = conn.send(build_request(plan, mode)).await.map_err(fail)?;
    let status = response.status().as_u16();
    let version = response
        .headers()
        .get(&plan.version_header)
        .and_then(|v| recorder.version_id(v.as_bytes()));
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(fail)?;
    }
    conn.completed += 1;
    Ok((conn, status, version))
}

fn build_request(plan: &Plan, mode: ConnectionMode) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(plan.body.clone()));
    *request.method_mut() = plan.method.clone();
    *request.uri_mut() = plan.uri.clone();
    *request.headers_mut() = plan.headers.clone();
    if mode == ConnectionMode::Fresh && !plan.connector.is_http2() {
        // One request per connection, and the server closes first, so TIME_WAIT sits on
        // the server side and fresh-connection load can't exhaust local ports.
        request
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    request
}

/// The request headers every request carries: `Host` for HTTP/1.1 (HTTP/2 takes the
/// authority from the URI), a `User-Agent`, then the user's headers, which win.
pub(crate) fn base_headers(
    authority: Option<&http::uri::Authority>,
    http2: bool,
    user: &[(HeaderName, HeaderValue)],
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if !http2
        && let Some(authority) = authority
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(HOST, host);
    }
    headers.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static(concat!("rollguard/", env!("CARGO_PKG_VERSION"))),
    );
    for (name, value) in user {
        headers.insert(name.clone(), value.clone());
    }
    headers
}
