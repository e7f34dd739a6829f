//! What a load run records, per worker while it runs, and the merged report at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rollguard_core::FailureClass;
use serde::Serialize;

/// At most this many individual failures are kept; counts stay exact beyond it.
pub const MAX_STORED_FAILURES: usize = 100_000;

/// The report of a finished load run. Its JSON form is documented in `docs/measure.md`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// How long load was sent, in milliseconds.
    pub elapsed_ms: u64,
    /// Requests sent (ok + failed).
    pub total: u64,
    /// Requests answered with an expected status.
    pub ok: u64,
    /// Requests that failed, whatever the class.
    pub failed: u64,
    /// Open loop: requests that fell due but were never sent, because every worker was
    /// busy until the run had ended for longer than the request timeout.
    pub unsent: u64,
    /// Failed requests per class name.
    pub failures_by_class: BTreeMap<String, u64>,
    /// Per class: count, when it first and last happened, and how many were on reused
    /// connections, ordered by first occurrence.
    pub classes: Vec<ClassSummary>,
    /// Every failed request (up to [`MAX_STORED_FAILURES`]), in the order they were sent.
    pub failures: Vec<Failure>,
    /// Failed requests not kept in `failures` because of the cap.
    pub failures_truncated: u64,
    /// Latency of the requests that got a response, or `None` when none did.
    pub latency_ms: Option<Latency>,
    /// Per second of the run: requests by outcome and the versions that answered.
    pub timeline: Vec<Second>,
    /// Responses per version over the whole run.
    pub versions: BTreeMap<String, u64>,
}

/// One failed request.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// When the request was due to be sent, in ms since the start of the run.
    pub t_ms: u64,
    /// How it failed.
    pub class: FailureClass,
    /// The error as the client saw it.
    pub detail: String,
    /// Whether the connection had carried a request before this one.
    pub reused: bool,
    /// How many requests the connection had completed before this one.
    pub conn_requests: u64,
    /// How long the attempt took until it failed, in ms.
    pub elapsed_ms: u64,
    /// The local port of the connection the request rode on (absent when no connection
    /// was established): it identifies the connection in the server's or a proxy's logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u16>,
    /// The version that answered, for a response with an unexpected status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The summary of one failure class.
#[derive(Debug, Clone, Serialize)]
pub struct ClassSummary {
    /// The class name, e.g. `connect-refused`.
    pub class: FailureClass,
    /// How many requests failed this way.
    pub count: u64,
    /// Of those, how many rode a reused (kept-alive) connection.
    pub reused: u64,
    /// Send time of the first one, ms since the start.
    pub first_ms: u64,
    /// Send time of the last one, ms since the start.
    pub last_ms: u64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest response.
    pub max: f64,
}

/// One second of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Second {
    /// Seconds since the start of the run.
    pub t: u64,
    /// Requests sent in this second that succeeded.
    pub ok: u64,
    /// Requests sent in this second that failed.
    pub failed: u64,
    /// Responses per version, for requests sent in this second.
    pub versions: BTreeMap<String, u64>,
}

/// A snapshot of a run in progress, for progress displays.
#[derive(Debug, Clone, Default)]
pub struct LiveStats {
    /// Requests finished so far that succeeded.
    pub ok: u64,
    /// Requests finished so far that failed.
    pub failed: u64,
    /// Responses per version so far, in order of first appearance.
    pub versions: Vec<(String, u64)>,
}

/// State shared by all workers of a run: live counters and the version names.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    ok: AtomicU64,
    failed: AtomicU64,
    stored_failures: AtomicUsize,
    versions: RwLock<Vec<(String, AtomicU64)>>,
}

impl Shared {
    pub(crate) fn live(&self) -> LiveStats {
        let versions = self
            .versions
            .read()
            .map(|v| {
                v.iter()
                    .map(|(name, n)| (name.clone(), n.load(Ordering::Relaxed)))
                    .collect()
            })
            .unwrap_or_default();
        LiveStats {
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            versions,
        }
    }

    /// The id of a version name, registering it on first sight. The common case (a known
    /// version) takes only a read lock.
    fn version_id(&self, name: &[u8]) -> Option<usize> {
        let name = std::str::from_utf8(name).ok()?;
        if let Ok(known) = self.versions.read()
            && let Some(id) = known.iter().position(|(n, _)| n == name)
        {
            known[id].1.fetch_add(1, Ordering::Relaxed);
            return Some(id);
        }
        let mut known = self.versions.write().ok()?;
        let id = match known.iter().position(|(n, _)| n == name) {
            Some(id) => id,
            None => {
                known.push((name.to_owned(), AtomicU64::new(0)));
                known.len() - 1
            }
        };
        known[id].1.fetch_add(1, Ordering::Relaxed);
        Some(id)
    }

    fn version_names(&self) -> Vec<String> {
        self.versions
            .read()
            .map(|v| v.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default()
    }
}

/// How one request ended.
pub(crate) enum Outcome {
    /// A response with an expected status.
    Ok { version: Option<usize> },
    /// A failure, with a response (`http-<code>`) or without one.
    Failed {
        class: FailureClass,
        detail: String,
        version: Option<usize>,
    },
}

/// When a request was meant to go out, and where its latency counts from.
#[derive(Clone, Copy)]
pub(crate) struct Slot {
    /// When the request was due (open loop) or sent (closed loop): its place in the
    /// timeline.
    pub(crate) due: Instant,
    /// Where its latency counts from: `due` when it had to wait for a free worker, the
    /// moment it was sent otherwise.
    pub(crate) origin: Instant,
}

/// Per-request facts besides the outcome.
pub(crate) struct Attempt {
    pub(crate) slot: Slot,
    /// Whether a response arrived (latency is recorded only then).
    pub(crate) answered: bool,
    /// Requests the connection had completed before this one.
    pub(crate) conn_requests: u64,
    /// The connection's local port, once connected.
    pub(crate) local_port: Option<u16>,
}

/// What one worker records; merged into a [`Report`] at the end of the run.
pub(crate) struct Recorder {
    start: Instant,
    shared: Arc<Shared>,
    latency_us: Histogram<u64>,
    seconds: Vec<WorkerSecond>,
    /// Failures with the id of the version that answered; names are filled in at merge.
    failures: Vec<(Option<usize>, Failure)>,
    truncated: u64,
    classes: BTreeMap<FailureClass, ClassSummary>,
}

#[derive(Default, Clone)]
struct WorkerSecond {
    ok: u64,
    failed: u64,
    /// Responses per version id (index into the shared names).
    versions: Vec<u64>,
}

impl Recorder {
    pub(crate) fn new(start: Instant, shared: Arc<Shared>) -> Self {
        Self {
            start,
            shared,
            latency_us: new_histogram(),
            seconds: Vec::new(),
            failures: Vec::new(),
            truncated: 0,
            classes: BTreeMap::new(),
        }
    }

    /// Looks up the id of a version header value.
    pub(crate) fn version_id(&self, value: &[u8]) -> Option<usize> {
        self.shared.version_id(value)
    }

    pub(crate) fn record(&mut self, attempt: Attempt, outcome: Outcome) {
        let now = Instant::now();
        let t = attempt.slot.due.saturating_duration_since(self.start);
        if attempt.answered {
            let us = now
                .saturating_duration_since(attempt.slot.origin)
                .as_micros();
            let _ = self
                .latency_us
                .record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
        }
        let index = usize::try_from(t.as_secs()).unwrap_or(usize::MAX);
        if self.seconds.len() <= index {
            self.seconds.resize(index + 1, WorkerSecond::default());
        }
        let second = &mut self.seconds[index];
        let version = match &outcome {
            Outcome::Ok { version } | Outcome::Failed { version, .. } => *version,
        };
        if let Some(id) = version {
            if second.versions.len() <= id {
                second.versions.resize(id + 1, 0);
            }
            second.versions[id] += 1;
        }
        match outcome {
            Outcome::Ok { .. } => {
                second.ok += 1;
                self.shared.ok.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Failed { class, detail, .. } => {
                second.failed += 1;
                self.shared.failed.fetch_add(1, Ordering::Relaxed);
                let t_ms = millis(t);
                let reused = attempt.conn_requests > 0;
                let summary = self.classes.entry(class).or_insert(ClassSummary {
                    class,
                    count: 0,
                    reused: 0,
                    first_ms: t_ms,
                    last_ms: t_ms,
                });
                summary.count += 1;
                summary.reused += u64::from(reused);
                summary.first_ms = summary.first_ms.min(t_ms);
                summary.last_ms = summary.last_ms.max(t_ms);
                if self.shared.stored_failures.fetch_add(1, Ordering::Relaxed) < MAX_STORED_FAILURES
                {
                    let failure = Failure {
                        t_ms,
                        class,
                        detail,
                        reused,
                        conn_requests: attempt.conn_requests,
                        local_port: attempt.local_port,
                        elapsed_ms: millis(now.saturating_duration_since(attempt.slot.origin)),
                        version: None,
                    };
                    self.failures.push((version, failure));
                } else {
                    self.truncated += 1;
                }
            }
        }
    }
}

/// Merges the workers' records into one report.
pub(crate) fn merge(
    recorders: Vec<Recorder>,
    shared: &Shared,
    elapsed: Duration,
    due: Option<u64>,
) -> Report {
    let names = shared.version_names();
    let name = |id: usize| names.get(id).cloned().unwrap_or_else(|| id.to_string());
    let mut latency_us = new_histogram();
    let mut timeline: Vec<Second> = Vec::new();
    let mut failures = Vec::new();
    let mut truncated = 0;
    let mut classes: BTreeMap<FailureClass, ClassSummary> = BTreeMap::new();
    for rec in recorders {
        let _ = latency_us.add(&rec.latency_us);
        if timeline.len() < rec.seconds.len() {
            let from = timeline.len();
            timeline.extend((from..rec.seconds.len()).map(|t| Second {
                t: t as u64,
                ..Second::default()
            }));
        }
        for (sec, ws) in timeline.iter_mut().zip(&rec.seconds) {
            sec.ok += ws.ok;
            sec.failed += ws.failed;
            for (id, n) in ws.versions.iter().enumerate().filter(|(_, n)| **n > 0) {
                *sec.versions.entry(name(id)).or_default() += n;
            }
        }
        failures.extend(rec.failures.into_iter().map(|(version, mut f)| {
            f.version = version.map(name);
            f
        }));
        truncated += rec.truncated;
        for (class, s) in rec.classes {
            classes
                .entry(class)
                .and_modify(|m| {
                    m.count += s.count;
                    m.reused += s.reused;
                    m.first_ms = m.first_ms.min(s.first_ms);
                    m.last_ms = m.last_ms.max(s.last_ms);
                })
                .or_insert(s);
        }
    }
    failures.sort_by_key(|f| f.t_ms);
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    for sec in &timeline {
        for (v, n) in &sec.versions {
            *versions.entry(v.clone()).or_default() += n;
        }
    }
    let ok: u64 = timeline.iter().map(|s| s.ok).sum();
    let failed: u64 = timeline.iter().map(|s| s.failed).sum();
    let mut classes: Vec<ClassSummary> = classes.into_values().collect();
    classes.sort_by_key(|c| (c.first_ms, c.class));
    Report {
        elapsed_ms: millis(elapsed),
        total: ok + failed,
        ok,
        failed,
        unsent: due.map_or(0, |due| due.saturating_sub(ok + failed)),
        failures_by_class: classes
            .iter()
            .map(|c| (c.class.to_string(), c.count))
            .collect(),
        classes,
        failures,
        failures_truncated: truncated,
        latency_ms: latency(&latency_us),
        timeline,
        versions,
    }
}

fn latency(h: &Histogram<u64>) -> Option<Latency> {
    if h.is_empty() {
        return None;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Some(Latency {
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    })
}

fn new_histogram() -> Histogram<u64> {
    // Auto-resizing, 3 significant digits, in microseconds: no ceiling to pick or to hit.
    Histogram::new(3).expect("3 significant figures is a valid histogram precision")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
