//! Shared vocabulary of rollguard.
//!
//! Every rollguard component speaks about the same things: human durations on the command
//! line (`500ms`, `10s`), the classes a failed request falls into, Deployment rollout math
//! ([`rollout`]: maxSurge/maxUnavailable rounding as Kubernetes does it), kubelet probes
//! ([`probe`]: specs and the threshold state machine) and the [`Cause`] a request failed
//! for during a rollout, with its fix, and socket facts ([`net`]: a loopback connect that
//! met itself). They live here so the load engine, the shim, the lab, `check` and the
//! reports agree on spelling and meaning.
//!
//! ```
//! use rollguard_core::{duration::parse_duration, rollout::RollingUpdate, Cause, FailureClass};
//! use std::time::Duration;
//!
//! assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
//! assert_eq!(FailureClass::HttpStatus(503).to_string(), "http-503");
//! assert_eq!(RollingUpdate::default().resolve(10).unwrap().min_available(), 8);
//! assert_eq!(Cause::EndpointLag.failure_mode(), Some("F2"));
//! ```

#![warn(missing_docs)]

mod cause;
pub mod duration;
mod failure;
pub mod net;
pub mod probe;
pub mod rollout;

pub use cause::{Cause, UnknownCause};
pub use failure::FailureClass;
pub use probe::{ProbeKind, ProbeSpec, ProbeTracker};
pub use rollout::{IntOrPercent, RollingUpdate};
