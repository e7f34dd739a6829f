//! Why a request failed during a rollout, and what fixes it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// The cause of a failed request during a rollout. The lab knows it from ground truth (which
/// pod the connection went to and that pod's state); `rollout` infers it from the event
/// timeline. The spelling (`Display`, serde, `FromStr`) is part of the machine-readable
/// output and must not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    /// The request reached a pod that could not serve yet (`not-ready`).
    NotReady,
    /// The request reached a pod that had stopped listening but was still in the endpoints
    /// (`endpoint-lag`).
    EndpointLag,
    /// The request was in flight when its pod's process exited (`in-flight-killed`).
    InFlightKilled,
    /// A kept-alive connection was closed by the dying server as the client sent on it
    /// (`keepalive-race`).
    KeepaliveRace,
    /// The pod was SIGKILLed at the end of its grace period with the request in flight (`sigkill`).
    Sigkill,
    /// No pod was in the endpoints (`no-endpoints`).
    NoEndpoints,
    /// None of the above explains the failure (`unknown`).
    Unknown,
}

/// A string that is not the spelling of any [`Cause`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown cause '{input}' (expected one of: not-ready, endpoint-lag, in-flight-killed, keepalive-race, sigkill, no-endpoints, unknown)"
)]
pub struct UnknownCause {
    input: String,
}

impl Cause {
    /// Every cause, in report order.
    pub const ALL: [Cause; 7] = [
        Self::NotReady,
        Self::EndpointLag,
        Self::InFlightKilled,
        Self::KeepaliveRace,
        Self::Sigkill,
        Self::NoEndpoints,
        Self::Unknown,
    ];

    /// The stable spelling, e.g. `endpoint-lag`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotReady => "not-ready",
            Self::EndpointLag => "endpoint-lag",
            Self::InFlightKilled => "in-flight-killed",
            Self::KeepaliveRace => "keepalive-race",
            Self::Sigkill => "sigkill",
            Self::NoEndpoints => "no-endpoints",
            Self::Unknown => "unknown",
        }
    }

    /// The failure of DESIGN.md this cause belongs to: `F1` to `F4`, `rollout parameters`
    /// for `no-endpoints` (maxSurge, maxUnavailable and replicas, not the app), none for `unknown`.
    pub fn failure_mode(self) -> Option<&'static str> {
        match self {
            Self::NotReady => Some("F1"),
            Self::EndpointLag => Some("F2"),
            Self::InFlightKilled | Self::Sigkill => Some("F3"),
            Self::KeepaliveRace => Some("F4"),
            Self::NoEndpoints => Some("rollout parameters"),
            Self::Unknown => None,
        }
    }

    /// The fix, in one line, as the report prints it.
    pub fn fix(self) -> &'static str {
        match self {
            Self::NotReady => {
                "add a readinessProbe that passes only once the app can serve requests"
            }
            Self::EndpointLag => {
                "keep serving after SIGTERM: a preStop sleep longer than endpoint propagation, or `rollguard shim --drain-delay`"
            }
            Self::InFlightKilled => {
                "drain in-flight requests before exiting on SIGTERM, or run the app under `rollguard shim`"
            }
            Self::KeepaliveRace => {
                "send Connection: close (HTTP/1.1) or GOAWAY (HTTP/2) while draining (`rollguard shim` does), or put a retrying proxy tier in front"
            }
            Self::Sigkill => {
                "exit within terminationGracePeriodSeconds: forward SIGTERM to the app (no shell as PID 1; `rollguard shim` can be PID 1) and keep preStop plus drain under the grace period"
            }
            Self::NoEndpoints => {
                "raise replicas or maxSurge, lower maxUnavailable so some replica stays ready"
            }
            Self::Unknown => {
                "no known mechanism explains it: look at the failed requests' timeline"
            }
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Cause {
    type Err = UnknownCause;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|cause| cause.as_str() == s)
            .ok_or_else(|| UnknownCause {
                input: s.to_owned(),
            })
    }
}

impl Serialize for Cause {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Cause {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn spelling_is_stable() {
        let spelled: Vec<_> = Cause::ALL.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            spelled,
            [
                "not-ready",
                "endpoint-lag",
                "in-flight-killed",
                "keepalive-race",
                "sigkill",
                "no-endpoints",
                "unknown"
            ]
        );
    }

    #[test]
    fn spelling_round_trips_through_from_str_and_serde() {
        for cause in Cause::ALL {
            assert_eq!(cause.as_str().parse(), Ok(cause));
            let json = serde_json::to_string(&cause).unwrap();
            assert_eq!(json, format!("\"{cause}\""));
            assert_eq!(serde_json::from_str::<Cause>(&json).unwrap(), cause);
        }
    }

    #[test]
    fn works_as_a_json_map_key() {
        let counts = BTreeMap::from([(Cause::EndpointLag, 3), (Cause::NotReady, 1)]);
        let json = serde_json::to_string(&counts).unwrap();
        assert_eq!(json, r#"{"not-ready":1,"endpoint-lag":3}"#);
        let back: BTreeMap<Cause, u64> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, counts);
    }

    #[test]
    fn rejects_unknown_spellings_quoting_them() {
        for bad in ["NotReady", "not_ready", "", "F1"] {
            let err = bad.parse::<Cause>().unwrap_err().to_string();
            assert!(err.contains(&format!("'{bad}'")), "{bad}: {err}");
        }
        assert!(serde_json::from_str::<Cause>(r#""timeout""#).is_err());
    }

    #[test]
    fn maps_to_failure_modes_and_fixes() {
        let modes: Vec<_> = Cause::ALL.iter().map(|c| c.failure_mode()).collect();
        assert_eq!(
            modes,
            [
                Some("F1"),
                Some("F2"),
                Some("F3"),
                Some("F4"),
                Some("F3"),
                Some("rollout parameters"),
                None
            ]
        );
        for cause in Cause::ALL {
            let fix = cause.fix();
            assert!(!fix.is_empty() && !fix.contains('\n'), "{cause}");
        }
    }
}
