//! Socket facts the load engine and the shim share.

use std::io;
use std::net::SocketAddr;

/// Whether a connected TCP socket is connected to itself, given its local and peer
/// addresses as the socket reports them.
///
/// With nothing listening on a loopback port in the ephemeral range, the kernel may give
/// the connecting socket that very port and connect it to itself (TCP simultaneous open):
/// a request would come back as its own answer. Such a connect is a refused one. An address
/// the socket can't report proves nothing, so it never counts as a match.
///
/// ```
/// use rollguard_core::net::connected_to_itself;
/// use std::io;
///
/// let addr = "127.0.0.1:40000".parse().unwrap();
/// assert!(connected_to_itself(Ok(addr), Ok(addr)));
/// assert!(!connected_to_itself(Ok(addr), Ok("127.0.0.1:8080".parse().unwrap())));
/// let gone = || Err(io::Error::from(io::ErrorKind::NotConnected));
/// assert!(!connected_to_itself(gone(), gone()));
/// ```
pub fn connected_to_itself(local: io::Result<SocketAddr>, peer: io::Result<SocketAddr>) -> bool {
    matches!((local, peer), (Ok(local), Ok(peer)) if local == peer)
}
