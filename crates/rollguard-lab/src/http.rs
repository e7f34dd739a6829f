//! The one HTTP GET the lab makes itself, for httpGet probes and preStop hooks, as the
//! kubelet makes them: a new connection, `Connection: close`, the body read and dropped.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;

/// GETs `path` from `addr` and returns the status code.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let request = Request::get(path)
        .header(HOST, addr.to_string())
        .header(USER_AGENT, "kube-probe/rollguard-lab")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(std::io::Error::other)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    response
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?;
    Ok(status)
}
