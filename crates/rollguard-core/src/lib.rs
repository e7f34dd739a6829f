//! Shared vocabulary of rollguard.
//!
//! Every rollguard component speaks about the same things: human durations on the command
//! line (`500ms`, `10s`) and the classes a failed request falls into. They live here so the
//! load engine, the lab and the reports agree on spelling and meaning.
//!
//! ```
//! use rollguard_core::{duration::parse_duration, FailureClass};
//! use std::time::Duration;
//!
//! assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
//! assert_eq!(FailureClass::HttpStatus(503).to_string(), "http-503");
//! ```

pub mod duration;
mod failure;

pub use failure::FailureClass;
