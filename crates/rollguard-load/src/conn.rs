//! One client connection: TCP, optional TLS, then an HTTP/1.1 or HTTP/2 handshake.
//!
//! The load engine uses hyper's connection-level client instead of a pooled client so that
//! every request knows which connection it rode on and how many requests that connection
//! had carried: the keep-alive race (F4) is only visible that way.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rollguard_core::FailureClass;
use rustls::pki_types::ServerName;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;

use crate::classify;
use crate::target::{Resolver, Target};

/// A failed attempt: its class and a line of detail for people.
pub(crate) type Failed = (FailureClass, String);

/// Opens connections to the target.
pub(crate) struct Connector {
    resolver: Resolver,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    http2: bool,
}

/// An established connection and how many requests it has completed.
pub(crate) struct Conn {
    sender: Sender,
    /// The local port of the TCP connection: it names the connection to whoever logs
    /// connections on the other side (the lab's Service).
    pub(crate) local_port: u16,
    /// Requests completed on this connection so far.
    pub(crate) completed: u64,
}

enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Connector {
    pub(crate) fn new(target: &Target, http2: bool, insecure: bool) -> Result<Self, TlsError> {
        let tls = if target.is_tls() {
            let config = tls_config(http2, insecure)?;
            let name = ServerName::try_from(target.host().to_owned())
                .map_err(|e| TlsError(format!("invalid TLS server name: {e}")))?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Self {
            resolver: Resolver::new(target),
            tls,
            http2,
        })
    }

    /// Whether requests go out as HTTP/2.
    pub(crate) fn is_http2(&self) -> bool {
        self.http2
    }

    /// Resolves, connects, and performs the TLS and HTTP handshakes. The connection's
    /// local port goes to `local_port` as soon as it is known, so that even a failed
    /// connect names its connection.
    pub(crate) async fn connect(&self, local_port: &mut Option<u16>) -> Result<Conn, Failed> {
        let addr = self
            .resolver
            .resolve()
            .await
            .map_err(|e| (FailureClass::Dns, classify::detail(&e)))?;
        let connect_failed =
            |e: std::io::Error| (classify::connect_error(&e), classify::detail(&e));
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(connect_failed)?;
        // Binding first fixes the local port before the connect, which may fail (a reset
        // can arrive before the connect completes).
        let any = SocketAddr::new(
            if addr.is_ipv4() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            },
            0,
        );
        socket.bind(any).map_err(connect_failed)?;
        let port = socket.local_addr().map_or(0, |a| a.port());
        *local_port = Some(port);
        let tcp = socket.connect(addr).await.map_err(connect_failed)?;
        if rollguard_core::net::connected_to_itself(tcp.local_addr(), tcp.peer_addr()) {
            return Err((
                FailureClass::ConnectRefused,
                format!(
                    "connection refused: nothing listens on {addr} (the socket connected to itself)"
                ),
            ));
        }
        // Requests are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.handshake(tcp, port).await,
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| tls_failure(&e))?;
                self.handshake(stream, port).await
            }
        }
    }

    async fn handshake<S>(&self, stream: S, local_port: u16) -> Result<Conn, Failed>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(stream);
        let fail = |e: hyper::Error| (classify::exchange_error(&e), classify::detail(&e));
        let sender = if self.http2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(fail)?;
            tokio::spawn(conn);
            Sender::Http2(sender)
        } else {
            let (sender, conn) = http1::handshake(io).await.map_err(fail)?;
            tokio::spawn(conn);
            Sender::Http1(sender)
        };
        Ok(Conn {
            sender,
            local_port,
            completed: 0,
        })
    }
}

impl Conn {
    /// Waits until the connection can take another request; `false` when the peer has
    /// closed it meanwhile (a client would then open a new one without failing a request).
    pub(crate) async fn ready(&mut self) -> bool {
        match &mut self.sender {
            Sender::Http1(s) => s.ready().await.is_ok(),
            Sender::Http2(s) => s.ready().await.is_ok(),
        }
    }

    /// Sends a request and waits for the response head.
    pub(crate) async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, hyper::Error> {
        match &mut self.sender {
            Sender::Http1(s) => s.send_request(request).await,
            Sender::Http2(s) => s.send_request(request).await,
        }
    }
}

/// The TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[error("TLS setup: {0}")]
pub struct TlsError(String);

fn tls_failure(err: &std::io::Error) -> Failed {
    let class = match err.kind() {
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => {
            FailureClass::ConnectionReset
        }
        std::io::ErrorKind::UnexpectedEof => FailureClass::ClosedBeforeResponse,
        _ => FailureClass::Tls,
    };
    (class, classify::detail(err))
}

fn tls_config(http2: bool, insecure: bool) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!(
                "no system root certificates found; HTTPS targets will fail verification (use --insecure to skip it)"
            );
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}

/// `--insecure`: accept any server certificate, but still check handshake signatures so
/// the TLS session itself is sound.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
