//! HTTPS against a real TLS server on loopback with a self-signed certificate: verified
//! connections fail with class `tls`, `insecure` ones succeed over HTTP/1.1 and HTTP/2.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rollguard_load::{ConnectionMode, LoadModel, LoadSpec, Report};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Serves `X-Version: tls` over TLS (ALPN h2 and http/1.1) on a loopback port.
async fn tls_server() -> SocketAddr {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .expect("self-signed certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("server certificate");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(|_req| async {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("x-version", "tls")
                            .body(Full::new(Bytes::from_static(b"ok")))
                            .expect("response"),
                    )
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

async fn run(addr: SocketAddr, insecure: bool, http2: bool) -> Report {
    let mut spec = LoadSpec::new(format!("https://{addr}/").parse().expect("URL"));
    spec.model = LoadModel::Open {
        rate: 100.0,
        workers: 8,
    };
    spec.connections = ConnectionMode::Mixed;
    spec.insecure = insecure;
    spec.http2 = http2;
    let run = rollguard_load::start(spec).expect("start");
    tokio::time::sleep_until(run.end_after(Duration::from_millis(500))).await;
    run.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_https_succeeds_over_http1_and_http2() {
    let addr = tls_server().await;
    for http2 in [false, true] {
        let report = run(addr, true, http2).await;
        assert_eq!(report.total, 50, "http2={http2}: {report:?}");
        assert_eq!(report.failed, 0, "http2={http2}: {:?}", report.failures);
        assert_eq!(report.versions.get("tls"), Some(&50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverifiable_certificate_fails_with_class_tls() {
    let addr = tls_server().await;
    let report = run(addr, false, false).await;
    assert_eq!(report.ok, 0);
    assert_eq!(report.failures_by_class.get("tls"), Some(&report.total));
    let detail = &report.failures[0].detail;
    assert!(detail.contains("certificate"), "{detail}");
}
