//! Why each failed request failed, from ground truth.
//!
//! The lab knows which pod every connection went to (the Service's connection log) and what
//! that pod was doing at every moment (the pods' journal). A failure is attributed to the
//! first explanation that holds:
//!
//! - the Service had no endpoint: `no-endpoints`;
//! - the pod refused the connection: `endpoint-lag` if the pod had already been deleted
//!   (the Service's copy of the endpoints still listed it), `not-ready` if its process was
//!   alive but not listening yet (it was listed before it could serve: no readiness probe,
//!   or one that lies);
//! - the connection broke while the request was outstanding: `sigkill` if the pod was
//!   SIGKILLed meanwhile, `in-flight-killed` if its process exited meanwhile, and
//!   `keepalive-race` if the process was alive: the server closed a kept-alive connection
//!   the client was sending on;
//! - a response with an unexpected status from a pod that was not ready: `not-ready`;
//! - anything else: `unknown`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rollguard_core::{Cause, FailureClass};

use crate::pod::{Entry, PodEvent};

/// How long after the client saw a connection break a process exit still counts as its
/// cause: the exit is journaled when the process is reaped, a little after the kernel
/// closed its sockets.
const EXIT_SLACK: Duration = Duration::from_millis(250);

/// What the pods' journal says about one pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodTimeline {
    /// When it first became ready (later flaps of readiness are not needed here).
    pub ready: Option<Instant>,
    /// When it was deleted (endpoint removed, termination started).
    pub deleted: Option<Instant>,
    /// When the grace period expired and it was SIGKILLed.
    pub sigkill: Option<Instant>,
    /// When its process exited (the last exit, after restarts).
    pub exited: Option<Instant>,
}

impl PodTimeline {
    /// Builds each pod's timeline from the journal.
    pub fn from_journal(entries: &[Entry]) -> HashMap<String, PodTimeline> {
        let mut pods: HashMap<String, PodTimeline> = HashMap::new();
        for entry in entries {
            let pod = pods.entry(entry.pod.clone()).or_default();
            match entry.event {
                PodEvent::Ready => {
                    pod.ready.get_or_insert(entry.at);
                }
                PodEvent::TerminationStarted => pod.deleted = Some(entry.at),
                PodEvent::SigkillSent => pod.sigkill = Some(entry.at),
                PodEvent::Exited(_) => pod.exited = Some(entry.at),
                PodEvent::Started { .. }
                | PodEvent::NotReady
                | PodEvent::PreStopFinished
                | PodEvent::SigtermSent => {}
            }
        }
        pods
    }

    fn ready_at(&self, t: Instant) -> bool {
        self.ready.is_some_and(|r| r <= t) && self.deleted.is_none_or(|d| d > t)
    }
}

/// Where the Service sent a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The Service's endpoint table was empty.
    NoEndpoints,
    /// The pod refused (or failed) the upstream connection.
    Refused(String),
    /// Connected to the pod.
    Connected(String),
}

/// One failed request, with the facts attribution needs.
#[derive(Debug, Clone)]
pub struct FailedRequest {
    /// When it was sent.
    pub sent: Instant,
    /// When it failed.
    pub failed: Instant,
    /// How it failed, as the client saw it.
    pub class: FailureClass,
    /// Where the Service sent its connection, if the connection is known.
    pub route: Option<Route>,
}

/// Attributes one failed request to its cause.
pub fn attribute(request: &FailedRequest, pods: &HashMap<String, PodTimeline>) -> Cause {
    let (pod_name, connected) = match &request.route {
        None => return Cause::Unknown,
        Some(Route::NoEndpoints) => return Cause::NoEndpoints,
        Some(Route::Refused(pod)) => (pod, false),
        Some(Route::Connected(pod)) => (pod, true),
    };
    let Some(pod) = pods.get(pod_name) else {
        return Cause::Unknown;
    };
    if !connected {
        return if pod.deleted.is_some_and(|d| d <= request.failed) {
            Cause::EndpointLag
        } else if pod.exited.is_none_or(|e| e > request.failed) {
            // Listed and alive, but not listening: the pod got traffic before it could
            // serve, whatever its (missing or lying) readiness said.
            Cause::NotReady
        } else {
            Cause::Unknown
        };
    }
    if let FailureClass::HttpStatus(_) = request.class {
        return if pod.ready_at(request.sent) {
            Cause::Unknown
        } else {
            Cause::NotReady
        };
    }
    let outstanding = |t: Option<Instant>| {
        t.is_some_and(|t| t >= request.sent && t <= request.failed + EXIT_SLACK)
    };
    if outstanding(pod.sigkill) {
        Cause::Sigkill
    } else if outstanding(pod.exited) {
        Cause::InFlightKilled
    } else if pod.exited.is_none_or(|e| e > request.failed + EXIT_SLACK) {
        // The process lived on: its server closed the connection under the request.
        Cause::KeepaliveRace
    } else {
        Cause::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn request(
        base: Instant,
        sent: u64,
        failed: u64,
        class: FailureClass,
        route: Route,
    ) -> FailedRequest {
        FailedRequest {
            sent: at(base, sent),
            failed: at(base, failed),
            class,
            route: Some(route),
        }
    }

    /// A pod ready at 1 s, deleted at 10 s, exited at 12 s.
    fn pods(base: Instant, sigkill: bool) -> HashMap<String, PodTimeline> {
        HashMap::from([(
            "p".to_owned(),
            PodTimeline {
                ready: Some(at(base, 1000)),
                deleted: Some(at(base, 10_000)),
                sigkill: sigkill.then(|| at(base, 12_000)),
                exited: Some(at(base, 12_010)),
            },
        )])
    }

    #[test]
    fn each_cause_from_its_ground_truth() {
        let base = Instant::now();
        let pods = pods(base, false);
        let refused = |sent| {
            request(
                base,
                sent,
                sent + 1,
                FailureClass::ConnectionReset,
                Route::Refused("p".into()),
            )
        };
        assert_eq!(attribute(&refused(500), &pods), Cause::NotReady);
        assert_eq!(attribute(&refused(11_000), &pods), Cause::EndpointLag);
        let cut = request(
            base,
            11_900,
            12_005,
            FailureClass::ClosedBeforeResponse,
            Route::Connected("p".into()),
        );
        assert_eq!(attribute(&cut, &pods), Cause::InFlightKilled);
        assert_eq!(attribute(&cut, &self::pods(base, true)), Cause::Sigkill);
        let race = request(
            base,
            10_500,
            10_501,
            FailureClass::ClosedBeforeResponse,
            Route::Connected("p".into()),
        );
        assert_eq!(attribute(&race, &pods), Cause::KeepaliveRace);
        let none = request(
            base,
            5,
            6,
            FailureClass::ConnectionReset,
            Route::NoEndpoints,
        );
        assert_eq!(attribute(&none, &pods), Cause::NoEndpoints);
        let early_503 = request(
            base,
            500,
            501,
            FailureClass::HttpStatus(503),
            Route::Connected("p".into()),
        );
        assert_eq!(attribute(&early_503, &pods), Cause::NotReady);
    }

    #[test]
    fn unknown_without_ground_truth() {
        let base = Instant::now();
        let mut lost = request(
            base,
            1,
            2,
            FailureClass::ConnectionReset,
            Route::Connected("p".into()),
        );
        lost.route = None;
        assert_eq!(attribute(&lost, &pods(base, false)), Cause::Unknown);
        let stranger = request(
            base,
            1,
            2,
            FailureClass::ConnectionReset,
            Route::Connected("q".into()),
        );
        assert_eq!(attribute(&stranger, &pods(base, false)), Cause::Unknown);
    }

    #[test]
    fn timelines_come_from_the_journal() {
        let base = Instant::now();
        let entry = |ms, event| Entry {
            at: at(base, ms),
            pod: "p".into(),
            event,
        };
        let journal = [
            entry(0, PodEvent::Started { pid: 1 }),
            entry(1000, PodEvent::Ready),
            entry(2000, PodEvent::NotReady),
            entry(3000, PodEvent::Ready),
            entry(10_000, PodEvent::TerminationStarted),
            entry(12_010, PodEvent::Exited(crate::pod::ExitReason::Code(0))),
        ];
        let timeline = &PodTimeline::from_journal(&journal)["p"];
        assert_eq!(timeline.ready, Some(at(base, 1000)));
        assert_eq!(timeline.deleted, Some(at(base, 10_000)));
        assert_eq!(timeline.exited, Some(at(base, 12_010)));
        assert_eq!(timeline.sigkill, None);
    }
}
