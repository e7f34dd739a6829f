//! The load engine behind `rollguard measure` and the lab's built-in load.
//!
//! It sends HTTP requests at a fixed rate (open loop: a request that could not go out on
//! time because every worker was busy counts its wait in its latency, so a stalled server
//! can't hide its stall; no coordinated omission) or
//! as fast as a fixed number of clients can (closed loop), on kept-alive connections, fresh
//! connections, or both, and records **every** failed request with its time, its class, and
//! whether it rode a reused connection. It also counts which version (`X-Version`) answered
//! each second, so a rollout is visible in the timeline.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rollguard_load::{LoadSpec, LoadModel};
//!
//! let mut spec = LoadSpec::new("http://127.0.0.1:8080/".parse()?);
//! spec.model = LoadModel::Open { rate: 200.0, workers: 64 };
//! let run = rollguard_load::start(spec)?;
//! tokio::time::sleep_until(run.end_after(std::time::Duration::from_secs(5))).await;
//! let report = run.finish().await;
//! println!("{} of {} requests failed", report.failed, report.total);
//! # Ok(()) }
//! ```

mod classify;
mod conn;
mod report;
mod status;
mod target;
mod worker;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Uri};
use tokio::sync::{oneshot, watch};

pub use conn::TlsError;
pub use report::{ClassSummary, Failure, Latency, LiveStats, MAX_STORED_FAILURES, Report, Second};
pub use status::{StatusSet, StatusSetError};
pub use target::{Target, TargetError};

use report::{Recorder, Shared};
use worker::{Plan, Worker};

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoadModel {
    /// Open loop: `rate` requests per second whatever the server does, with at most
    /// `workers` requests in flight; a request that has to wait for a free worker counts
    /// its wait in its latency.
    Open {
        /// Requests per second.
        rate: f64,
        /// The most requests in flight at once.
        workers: usize,
    },
    /// Closed loop: `concurrency` clients each send their next request as soon as the
    /// previous one is answered (maximum throughput).
    Closed {
        /// Number of clients.
        concurrency: usize,
    },
}

impl LoadModel {
    /// The number of workers (clients) the model runs.
    pub fn workers(&self) -> usize {
        match *self {
            Self::Open { workers, .. } => workers,
            Self::Closed { concurrency } => concurrency,
        }
        .max(1)
    }
}

/// How workers use connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ConnectionMode {
    /// Every worker keeps its connection open and reuses it (a connection pool).
    #[cfg_attr(feature = "clap", value(name = "keepalive"))]
    KeepAlive,
    /// Every request opens a new connection, like `watch curl`.
    Fresh,
    /// Half the workers keep connections alive, the other half open fresh ones.
    Mixed,
}

impl fmt::Display for ConnectionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::KeepAlive => "keepalive",
            Self::Fresh => "fresh",
            Self::Mixed => "mixed",
        })
    }
}

/// What to send, how, and how to judge the answers.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The URL to load.
    pub target: Target,
    /// Pacing.
    pub model: LoadModel,
    /// Connection reuse.
    pub connections: ConnectionMode,
    /// Speak HTTP/2 (h2c with prior knowledge on `http://`, ALPN `h2` on `https://`).
    pub http2: bool,
    /// Skip TLS certificate verification.
    pub insecure: bool,
    /// Request method.
    pub method: Method,
    /// Extra request headers; they replace the defaults of the same name.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Request body.
    pub body: Bytes,
    /// Limit for one request, connecting included.
    pub timeout: Duration,
    /// Statuses that count as success.
    pub expect_status: StatusSet,
    /// The response header that names the version that answered.
    pub version_header: HeaderName,
}

impl LoadSpec {
    /// A spec with the defaults of `rollguard measure`: `GET`, open loop at 200 req/s with
    /// up to 64 in flight, mixed connections, 5 s timeout, 200-399 expected, `X-Version`.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            model: LoadModel::Open {
                rate: 200.0,
                workers: 64,
            },
            connections: ConnectionMode::Mixed,
            http2: false,
            insecure: false,
            method: Method::GET,
            headers: Vec::new(),
            body: Bytes::new(),
            timeout: Duration::from_secs(5),
            expect_status: StatusSet::default(),
            version_header: HeaderName::from_static("x-version"),
        }
    }
}

/// A read-only view of a run's counters while it runs.
#[derive(Clone)]
pub struct LiveView {
    start: Instant,
    shared: Arc<Shared>,
}

impl LiveView {
    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Counters so far, cheap enough to read several times a second.
    pub fn stats(&self) -> LiveStats {
        self.shared.live()
    }
}

/// A load run in progress: it runs until the end set by [`LoadRun::end_after`] or until
/// [`LoadRun::finish`]. Dropping it stops the workers at their next request.
pub struct LoadRun {
    start: Instant,
    model: LoadModel,
    shared: Arc<Shared>,
    end: watch::Sender<Option<Instant>>,
    /// One per load thread: its workers' records once they have all ended.
    shards: Vec<oneshot::Receiver<std::io::Result<Vec<Recorder>>>>,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The TLS client configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A load thread could not be started.
    #[error("cannot start a load thread: {0}")]
    Thread(std::io::Error),
}

/// Starts sending load, on one thread per core (at most one per worker), each with a
/// single-threaded runtime. Must be called from within a tokio runtime (for the timer
/// returned by [`LoadRun::end_after`]).
///
/// Fails only when the TLS client or a thread can't be set up; connection and request
/// errors are recorded as failures, never returned.
pub fn start(spec: LoadSpec) -> Result<LoadRun, StartError> {
    let connector = conn::Connector::new(&spec.target, spec.http2, spec.insecure)?;
    let uri = if spec.http2 {
        spec.target.uri().clone()
    } else {
        Uri::from(spec.target.path_and_query())
    };
    let headers = worker::base_headers(spec.target.authority(), spec.http2, &spec.headers);
    let start = Instant::now();
    let plan = Arc::new(Plan {
        connector,
        method: spec.method,
        uri,
        headers,
        body: spec.body,
        timeout: spec.timeout,
        expect_status: spec.expect_status,
        version_header: spec.version_header,
        model: spec.model,
        start,
        next_ticket: AtomicU64::new(0),
    });
    let shared = Arc::new(Shared::default());
    let (end, end_rx) = watch::channel(None);
    let workers = spec.model.workers();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(workers);
    let mut shards = Vec::with_capacity(threads);
    for thread in 0..threads {
        // Worker i runs on thread i % threads, so both connection kinds of a mixed run
        // are spread over every thread.
        let modes: Vec<ConnectionMode> = (thread..workers)
            .step_by(threads)
            .map(|i| match spec.connections {
                ConnectionMode::Mixed if i % 2 == 1 => ConnectionMode::Fresh,
                ConnectionMode::Mixed => ConnectionMode::KeepAlive,
                other => other,
            })
            .collect();
        let (done, shard) = oneshot::channel();
        let (plan, shared, end_rx) = (plan.clone(), shared.clone(), end_rx.clone());
        std::thread::Builder::new()
            .name(format!("rollguard-load-{thread}"))
            .spawn(move || {
                let _ = done.send(run_shard(plan, shared, end_rx, modes));
            })
            .map_err(StartError::Thread)?;
        shards.push(shard);
    }
    Ok(LoadRun {
        start,
        model: spec.model,
        shared,
        end,
        shards,
    })
}

/// Runs some workers on a single-threaded runtime of their own until they all end.
///
/// One runtime per core, as wrk has one event loop per thread: a worker and the task
/// driving its connection always run on the same thread, so the wake-ups between them,
/// two per request, never cross threads.
fn run_shard(
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    end: watch::Receiver<Option<Instant>>,
    modes: Vec<ConnectionMode>,
) -> std::io::Result<Vec<Recorder>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let handles: Vec<_> = modes
            .into_iter()
            .map(|mode| {
                let recorder = Recorder::new(plan.start, shared.clone());
                tokio::spawn(Worker::new(plan.clone(), mode, end.clone(), recorder).run())
            })
            .collect();
        let mut recorders = Vec::with_capacity(handles.len());
        for handle in handles {
            match handle.await {
                Ok(recorder) => recorders.push(recorder),
                Err(err) => tracing::error!("load worker failed: {err}"),
            }
        }
        Ok(recorders)
    })
}

impl LoadRun {
    /// When the run started: the origin of every `t_ms` in its report.
    pub fn started_at(&self) -> Instant {
        self.start
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// A handle on the run's live counters, for a progress display running beside it.
    pub fn live(&self) -> LiveView {
        LiveView {
            start: self.start,
            shared: self.shared.clone(),
        }
    }

    /// Sets the end of the run to `after` its start (or brings it forward): no request due
    /// at or after it is sent. Returns the end, to sleep until.
    pub fn end_after(&self, after: Duration) -> tokio::time::Instant {
        let end = self.start + after;
        self.end.send_modify(|current| {
            *current = Some(current.map_or(end, |c| c.min(end)));
        });
        self.end.borrow().unwrap_or(end).into()
    }

    /// Ends the run now (unless its end has passed already), waits for the requests in
    /// flight (each bounded by the request timeout), and returns the report.
    pub async fn finish(self) -> Report {
        let end = self.end_after(self.start.elapsed());
        let mut recorders = Vec::new();
        for shard in self.shards {
            match shard.await {
                Ok(Ok(shard)) => recorders.extend(shard),
                Ok(Err(err)) => tracing::error!("load thread could not start: {err}"),
                Err(_) => tracing::error!("load thread ended without its records"),
            }
        }
        let elapsed = end.into_std().saturating_duration_since(self.start);
        // Request i is due at i / rate: those due before the end number ceil(t x rate).
        let due = match self.model {
            LoadModel::Open { rate, .. } => Some((elapsed.as_secs_f64() * rate).ceil() as u64),
            LoadModel::Closed { .. } => None,
        };
        report::merge(recorders, &self.shared, elapsed, due)
    }
}
