//! The classes a failed request falls into, as seen from the client.

use std::fmt;

use serde::{Serialize, Serializer};

/// How a request failed, as the client saw it. The spelling (`Display`) is part of the
/// machine-readable output and must not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureClass {
    /// The TCP connection was refused: nothing listens on the address (`connect-refused`).
    ConnectRefused,
    /// The TCP connection was not established in time (`connect-timeout`).
    ConnectTimeout,
    /// Any other error while connecting, e.g. no route or no local port left (`connect-error`).
    ConnectError,
    /// The peer reset the connection, or it broke while writing (`connection-reset`).
    ConnectionReset,
    /// The connection was closed before a complete response arrived (`closed-before-response`).
    ClosedBeforeResponse,
    /// No complete response within the request timeout (`request-timeout`).
    RequestTimeout,
    /// The TLS handshake failed (`tls`).
    Tls,
    /// The host name could not be resolved (`dns`).
    Dns,
    /// A response arrived with a status outside the expected range (`http-<code>`).
    HttpStatus(u16),
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::ConnectRefused => "connect-refused",
            Self::ConnectTimeout => "connect-timeout",
            Self::ConnectError => "connect-error",
            Self::ConnectionReset => "connection-reset",
            Self::ClosedBeforeResponse => "closed-before-response",
            Self::RequestTimeout => "request-timeout",
            Self::Tls => "tls",
            Self::Dns => "dns",
            Self::HttpStatus(code) => return write!(f, "http-{code}"),
        };
        f.write_str(name)
    }
}

impl Serialize for FailureClass {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelling_is_stable() {
        assert_eq!(FailureClass::ConnectRefused.to_string(), "connect-refused");
        assert_eq!(
            FailureClass::ClosedBeforeResponse.to_string(),
            "closed-before-response"
        );
        assert_eq!(FailureClass::HttpStatus(503).to_string(), "http-503");
    }
}
