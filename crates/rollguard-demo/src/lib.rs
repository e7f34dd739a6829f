//! The demo app rollguard rolls: a small HTTP service with a version (a color) and a switch
//! for every bad startup and shutdown behavior that makes rolling updates drop requests.
//!
//! The lab and the examples run two colors of it side by side and watch which one answers
//! (every response carries `X-Version: <color>`). Its switches reproduce the failures rollguard
//! is about: answering before it is ready (`ready_delay`), dying with requests in flight
//! ([`OnSigterm::Exit`]), never stopping ([`OnSigterm::Ignore`]), and closing kept-alive
//! connections under the client (`keepalive_timeout`). [`OnSigterm::Drain`] with a
//! `drain_delay` and `fail_health_on_sigterm` is the well-behaved app.
//!
//! Routes: `GET /` (an HTML page in the app's color), `GET /health` (200 `ok` when ready, 503
//! otherwise), `GET /slow?ms=N` (answers after N ms), anything else 404. HTTP/1.1 with
//! keep-alive and h2c (HTTP/2 with prior knowledge) are both served on the same port.
//!
//! SIGTERM is injected through a [`Handle`], so the whole lifecycle can be driven in-process;
//! the `rollguard demo-app` command wires real signals to it.
//!
//! ```
//! use rollguard_demo::{Config, Exit, OnSigterm, Server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rollguard_demo::ListenError> {
//! let config = Config { on_sigterm: OnSigterm::Drain, ..Config::default() };
//! let server = Server::bind(config, "127.0.0.1:0".parse().unwrap())?;
//! println!("serving on {}", server.local_addr());
//! let handle = server.handle();
//! let app = tokio::spawn(server.serve());
//!
//! handle.sigterm();
//! assert_eq!(app.await.unwrap()?, Exit::Drained);
//! # Ok(())
//! # }
//! ```

mod config;
mod connection;
mod routes;
mod server;

pub use config::{Color, ColorError, Config, OnSigterm};
pub use server::{Exit, Handle, ListenError, Server};
