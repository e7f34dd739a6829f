//! The shim's endpoints for the kubelet: `/ready`, `/live` and `/prestop`.
//!
//! `/ready` answers 200 only while the shim is not draining and the app passes its own
//! check (a TCP connect or an HTTP GET), so the readiness probe turns unready the moment
//! SIGTERM arrives, without waiting for the app. `/live` answers 200 while the shim runs.
//! `/prestop` is for an httpGet preStop hook: it starts the drain as SIGTERM would, but
//! does not stop the app, and answers once every client connection has closed, so the
//! kubelet sends SIGTERM to the app only then.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::debug;

/// How long one check of the app may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// How `/ready` checks the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyCheck {
    /// A TCP connection to `host:port` succeeds.
    Tcp(String),
    /// A GET of the URL answers 200-399, as a kubelet httpGet probe counts it.
    Http(Uri),
}

/// An `--upstream-ready` value that is neither `tcp:HOST:PORT` nor an `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a readiness check: use tcp:HOST:PORT or http://HOST:PORT/PATH")]
pub struct BadReadyCheck(String);

impl FromStr for ReadyCheck {
    type Err = BadReadyCheck;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadReadyCheck(text.to_owned());
        if let Some(addr) = text.strip_prefix("tcp:") {
            return match addr.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    Ok(Self::Tcp(addr.to_owned()))
                }
                _ => Err(bad()),
            };
        }
        let uri: Uri = text.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(bad());
        }
        Ok(Self::Http(uri))
    }
}

impl ReadyCheck {
    /// Runs the check once; `Err` says why the app is not ready.
    async fn run(&self, client: &Client<HttpConnector, Empty<Bytes>>) -> Result<(), String> {
        let check = async {
            match self {
                Self::Tcp(addr) => match TcpStream::connect(addr.as_str()).await {
                    Ok(stream) if crate::connected_to_itself(&stream) => {
                        Err(format!("cannot connect to {addr}: nothing listens there"))
                    }
                    Ok(_) => Ok(()),
                    Err(err) => Err(format!("cannot connect to {addr}: {err}")),
                },
                Self::Http(uri) => {
                    let resp = client
                        .get(uri.clone())
                        .await
                        .map_err(|err| format!("GET {uri} failed: {err}"))?;
                    let status = resp.status();
                    if (200..400).contains(&status.as_u16()) {
                        Ok(())
                    } else {
                        Err(format!("GET {uri} answered {status}"))
                    }
                }
            }
        };
        tokio::time::timeout(CHECK_TIMEOUT, check)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())))
    }
}

/// The health endpoints, bound and not yet serving.
#[derive(Debug)]
pub struct Health {
    listener: TcpListener,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    check: Option<ReadyCheck>,
    client: Client<HttpConnector, Empty<Bytes>>,
    drain: DrainLink,
}

/// How the health endpoints and the supervisor see each other's drain.
#[derive(Debug, Clone)]
pub struct DrainLink {
    /// Set from the moment the shim turns unready.
    pub draining: Arc<AtomicBool>,
    /// `/prestop` asks the supervisor to start the drain.
    pub prestop: mpsc::UnboundedSender<()>,
    /// Turns true once the drain is over (or the app is being stopped).
    pub drained: watch::Receiver<bool>,
}

impl Health {
    /// Binds `addr`. `/ready` fails while draining or while `check` fails (no check: ready
    /// whenever not draining).
    pub fn bind(
        addr: SocketAddr,
        check: Option<ReadyCheck>,
        drain: DrainLink,
    ) -> io::Result<Health> {
        let listener = crate::listen(addr, 128)?;
        let client = Client::builder(TokioExecutor::new())
            // A fresh connection per check: a check must see the app as a new client would.
            .pool_max_idle_per_host(0)
            .build_http();
        Ok(Health {
            listener,
            state: Arc::new(State {
                check,
                client,
                drain,
            }),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the task is dropped.
    pub async fn serve(self) {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    debug!(%err, "health accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let state = Arc::clone(&self.state);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(state.answer(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(err) = conn.await {
                    debug!(%err, "health connection ended with an error");
                }
            });
        }
    }
}

impl State {
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".to_owned());
        }
        match req.uri().path() {
            "/live" => text(StatusCode::OK, "alive\n".to_owned()),
            "/prestop" => {
                // An error means the supervisor is gone: the shim is exiting anyway.
                let _ = self.drain.prestop.send(());
                let mut drained = self.drain.drained.clone();
                let _ = drained.wait_for(|d| *d).await;
                text(StatusCode::OK, "drained\n".to_owned())
            }
            "/ready" => {
                if self.drain.draining.load(Ordering::Relaxed) {
                    return text(StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_owned());
                }
                let Some(check) = &self.check else {
                    return text(StatusCode::OK, "ready\n".to_owned());
                };
                match check.run(&self.client).await {
                    Ok(()) => text(StatusCode::OK, "ready\n".to_owned()),
                    Err(why) => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("app not ready: {why}\n"),
                    ),
                }
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "try /ready, /live or /prestop\n".to_owned(),
            ),
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_parse() {
        assert_eq!(
            "tcp:127.0.0.1:8081".parse(),
            Ok(ReadyCheck::Tcp("127.0.0.1:8081".to_owned()))
        );
        assert_eq!(
            "tcp:localhost:80".parse(),
            Ok(ReadyCheck::Tcp("localhost:80".to_owned()))
        );
        assert!(matches!(
            "http://127.0.0.1:8081/health".parse(),
            Ok(ReadyCheck::Http(_))
        ));
        for bad in [
            "tcp:8081",
            "tcp::80",
            "https://x/health",
            "/health",
            "ftp://x",
        ] {
            assert!(bad.parse::<ReadyCheck>().is_err(), "{bad}");
        }
    }
}
