//! Turning client-side errors into failure classes.
//!
//! The class says what the client saw on the wire, which is what tells the rollout failure
//! modes apart: a refused connect is a pod that no longer listens (or not yet), a reset or an
//! early close on a reused connection is the keep-alive race, a close on a request in flight
//! is a process that exited without draining.

use std::error::Error as StdError;
use std::io;

use rollguard_core::FailureClass;

/// The class of an error raised while establishing a TCP connection.
pub(crate) fn connect_error(err: &io::Error) -> FailureClass {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => FailureClass::ConnectRefused,
        io::ErrorKind::TimedOut => FailureClass::ConnectTimeout,
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
            FailureClass::ConnectionReset
        }
        _ => FailureClass::ConnectError,
    }
}

/// The class of an error raised after the connection was established: during the HTTP/2
/// handshake, while sending the request, or while reading the response head or body.
pub(crate) fn exchange_error(err: &hyper::Error) -> FailureClass {
    if let Some(h2) = find_source::<h2::Error>(err) {
        if let Some(io) = h2.get_io() {
            return io_error(io);
        }
        // A GOAWAY that does not cover our stream means the server closed the connection
        // before processing the request; a RST_STREAM is a reset of this one request.
        return if h2.is_go_away() {
            FailureClass::ClosedBeforeResponse
        } else {
            FailureClass::ConnectionReset
        };
    }
    if let Some(io) = find_source::<io::Error>(err) {
        return io_error(io);
    }
    FailureClass::ClosedBeforeResponse
}

fn io_error(err: &io::Error) -> FailureClass {
    match err.kind() {
        io::ErrorKind::TimedOut => FailureClass::RequestTimeout,
        io::ErrorKind::UnexpectedEof => FailureClass::ClosedBeforeResponse,
        _ => FailureClass::ConnectionReset,
    }
}

/// The error and its causes, joined into one line for people.
pub(crate) fn detail(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // hyper and io errors often repeat their cause verbatim; say it once.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn find_source<'a, E: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_by_kind() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(connect_error(&refused), FailureClass::ConnectRefused);
        let timeout = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(connect_error(&timeout), FailureClass::ConnectTimeout);
        let unreachable = io::Error::from(io::ErrorKind::AddrNotAvailable);
        assert_eq!(connect_error(&unreachable), FailureClass::ConnectError);
    }

    #[test]
    fn io_errors_after_connect() {
        assert_eq!(
            io_error(&io::Error::from(io::ErrorKind::ConnectionReset)),
            FailureClass::ConnectionReset
        );
        assert_eq!(
            io_error(&io::Error::from(io::ErrorKind::BrokenPipe)),
            FailureClass::ConnectionReset
        );
        assert_eq!(
            io_error(&io::Error::from(io::ErrorKind::UnexpectedEof)),
            FailureClass::ClosedBeforeResponse
        );
    }

    #[test]
    fn detail_joins_causes_once() {
        let inner = io::Error::other("peer went away");
        let outer = io::Error::other(Wrapper(inner));
        assert_eq!(detail(&outer), "wrapped: peer went away");
    }

    #[derive(Debug)]
    struct Wrapper(io::Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }
}
