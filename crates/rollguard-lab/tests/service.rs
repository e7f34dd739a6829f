//! The lab's Service routes like kube-proxy: a random endpoint per new connection from its
//! own, late copy of the endpoint table; established connections stay on their pod; nothing
//! to route to resets the client at once; every connection is logged.
//!
//! Pods here are small TCP servers on their own 127.0.1.x addresses: for each chunk they
//! receive they answer with their name and a newline; at EOF they answer `bye` and close;
//! a chunk saying `rst` makes them reset the connection.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use rollguard_lab::service::{End, Endpoint, Service, ServiceConfig, Upstream};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Longest any expected thing may take before a test fails.
const DEADLINE: Duration = Duration::from_secs(5);

/// Gives each pod of this test binary its own address, so tests running in parallel never
/// share one.
fn next_ip() -> Ipv4Addr {
    static NEXT: AtomicU8 = AtomicU8::new(1);
    Ipv4Addr::new(127, 0, 1, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A pod: a TCP server that answers with its name.
struct Pod {
    endpoint: Endpoint,
    server: JoinHandle<()>,
}

impl Pod {
    async fn start(name: &str) -> Pod {
        let listener = TcpListener::bind((next_ip(), 0)).await.expect("pod bind");
        let addr = listener.local_addr().expect("pod addr");
        let reply = name.to_owned();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(answer(stream, reply.clone()));
            }
        });
        Pod {
            endpoint: Endpoint {
                pod: name.to_owned(),
                addr,
            },
            server,
        }
    }

    /// Stops listening (connections already open stay).
    async fn stop(self) {
        self.server.abort();
        let _ = self.server.await;
    }
}

async fn answer(mut stream: TcpStream, name: String) {
    let mut buffer = [0; 1024];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) => {
                let _ = stream.write_all(b"bye\n").await;
                return;
            }
            Ok(n) if buffer[..n].starts_with(b"rst") => {
                let _ = stream.set_zero_linger();
                return;
            }
            Ok(_) => {
                if stream
                    .write_all(format!("{name}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// A client connection through the Service.
struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    async fn connect(service: &Service) -> Client {
        let stream = TcpStream::connect(service.local_addr())
            .await
            .expect("connect to the service");
        Client {
            stream: BufReader::new(stream),
        }
    }

    fn local_addr(&self) -> SocketAddr {
        self.stream.get_ref().local_addr().expect("client addr")
    }

    /// Sends `message` and reads one line back.
    async fn ask(&mut self, message: &str) -> io::Result<String> {
        tokio::time::timeout(DEADLINE, async {
            self.stream
                .get_mut()
                .write_all(format!("{message}\n").as_bytes())
                .await?;
            let mut line = String::new();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            Ok(line.trim_end().to_owned())
        })
        .await
        .expect("no answer within the deadline")
    }
}

/// Which pod a new connection reaches: sends one chunk, half-closes, and reads the pod's
/// answer (its name, then `bye`) to the end.
async fn pod_of_new_connection(service: &Service) -> String {
    let mut stream = TcpStream::connect(service.local_addr())
        .await
        .expect("connect to the service");
    let mut answer = String::new();
    tokio::time::timeout(DEADLINE, async {
        stream.write_all(b"ping\n").await?;
        stream.shutdown().await?;
        stream.read_to_string(&mut answer).await
    })
    .await
    .expect("no answer within the deadline")
    .expect("answer through the service");
    let pod = answer.strip_suffix("\nbye\n").expect("name then bye");
    pod.to_owned()
}

fn immediate() -> ServiceConfig {
    ServiceConfig {
        propagation_delay: Duration::ZERO,
        jitter: 0.0,
    }
}

fn bind(config: ServiceConfig) -> Service {
    Service::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).expect("service bind")
}

/// Polls `condition` until it holds, failing the test after [`DEADLINE`].
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Asserts the client's connection was reset promptly.
async fn assert_reset(mut client: Client) {
    let started = Instant::now();
    let error = client
        .ask("ping")
        .await
        .expect_err("the service must not answer");
    assert!(
        matches!(
            error.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        "expected a reset, got {error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1), "reset too late");
}

#[tokio::test]
async fn traffic_spreads_over_all_endpoints() {
    let service = bind(immediate());
    let pods = [
        Pod::start("a").await,
        Pod::start("b").await,
        Pod::start("c").await,
    ];
    service.set_endpoints(pods.iter().map(|p| p.endpoint.clone()).collect());
    let mut seen = Vec::new();
    for _ in 0..60 {
        seen.push(pod_of_new_connection(&service).await);
    }
    for pod in ["a", "b", "c"] {
        assert!(
            seen.iter().any(|s| s == pod),
            "{pod} never reached: {seen:?}"
        );
    }
    wait_until("every connection has ended", || {
        service.connections().iter().all(|c| c.ended.is_some())
    })
    .await;
    let connections = service.connections();
    assert_eq!(connections.len(), 60);
    for (i, (conn, pod)) in connections.iter().zip(&seen).enumerate() {
        assert_eq!(conn.id, i as u64);
        assert_eq!(conn.endpoint.as_ref().map(|e| &e.pod), Some(pod));
        assert_eq!(conn.upstream, Upstream::Connected);
        // The client closed first; the pod answered `bye` and closed in turn.
        assert_eq!(
            conn.ended.as_ref().map(|e| &e.how),
            Some(&End::ClientClosed)
        );
    }
    service.shutdown().await;
}

#[tokio::test]
async fn removed_endpoint_keeps_new_connections_until_the_change_propagates() {
    let delay = Duration::from_millis(300);
    let service = bind(ServiceConfig {
        propagation_delay: delay,
        jitter: 0.0,
    });
    let (old, new) = (Pod::start("old").await, Pod::start("new").await);
    service.set_endpoints(vec![old.endpoint.clone()]);
    wait_until("the first table propagated", || {
        service.table_changes().len() == 1
    })
    .await;

    let removed = Instant::now();
    service.set_endpoints(vec![new.endpoint.clone()]);
    // Endpoint lag: the controller removed `old`, the Service's copy still lists it.
    assert_eq!(pod_of_new_connection(&service).await, "old");
    while pod_of_new_connection(&service).await == "old" {
        assert!(removed.elapsed() < DEADLINE, "the removal never propagated");
    }
    let switched = removed.elapsed();
    assert!(
        switched >= delay,
        "switched after {switched:?}, before the delay"
    );
    for _ in 0..10 {
        assert_eq!(pod_of_new_connection(&service).await, "new");
    }

    let changes = service.table_changes();
    assert_eq!(changes.len(), 2);
    let removal = &changes[1];
    assert_eq!(removal.endpoints, vec![new.endpoint.clone()]);
    let lag = removal.applied_at - removal.requested_at;
    assert!(lag >= delay && lag < Duration::from_secs(2), "lag {lag:?}");
    // The lagging connection was accepted after the controller's change, before the copy's.
    let lagging = &service.connections()[0];
    assert_eq!(lagging.endpoint.as_ref(), Some(&old.endpoint));
    assert!(lagging.accepted_at >= removal.requested_at);
    assert!(lagging.accepted_at < removal.applied_at);
    service.shutdown().await;
}

#[tokio::test]
async fn with_no_delay_a_removal_applies_at_once() {
    let service = bind(immediate());
    let (old, new) = (Pod::start("old").await, Pod::start("new").await);
    service.set_endpoints(vec![old.endpoint.clone()]);
    assert_eq!(pod_of_new_connection(&service).await, "old");
    service.set_endpoints(vec![new.endpoint.clone()]);
    for _ in 0..20 {
        assert_eq!(pod_of_new_connection(&service).await, "new");
    }
    service.shutdown().await;
}

#[tokio::test]
async fn jittered_changes_apply_in_order() {
    let service = bind(ServiceConfig {
        propagation_delay: Duration::from_millis(50),
        jitter: 1.0,
    });
    let sets: Vec<Vec<Endpoint>> = (0..30u16)
        .map(|i| {
            vec![Endpoint {
                pod: format!("p{i}"),
                addr: SocketAddr::from((Ipv4Addr::new(127, 0, 1, 250), 1000 + i)),
            }]
        })
        .collect();
    for set in &sets {
        service.set_endpoints(set.clone());
    }
    wait_until("every change applied", || {
        service.table_changes().len() == sets.len()
    })
    .await;
    let changes = service.table_changes();
    let applied: Vec<_> = changes.iter().map(|c| c.endpoints.clone()).collect();
    assert_eq!(applied, sets);
    for pair in changes.windows(2) {
        assert!(pair[0].requested_at <= pair[1].requested_at);
        assert!(pair[0].applied_at <= pair[1].applied_at);
    }
    for change in &changes {
        assert!(change.applied_at - change.requested_at < Duration::from_secs(2));
    }
    service.shutdown().await;
}

#[tokio::test]
async fn established_connection_stays_on_its_pod_after_removal() {
    let service = bind(immediate());
    let (old, new) = (Pod::start("old").await, Pod::start("new").await);
    service.set_endpoints(vec![old.endpoint.clone()]);
    let mut established = Client::connect(&service).await;
    assert_eq!(established.ask("ping").await.expect("answer"), "old");

    service.set_endpoints(vec![new.endpoint.clone()]);
    assert_eq!(pod_of_new_connection(&service).await, "new");
    for _ in 0..5 {
        assert_eq!(established.ask("ping").await.expect("answer"), "old");
    }
    let record = &service.connections()[0];
    assert_eq!(record.client, established.local_addr());
    assert_eq!(record.endpoint.as_ref(), Some(&old.endpoint));
    assert_eq!(record.ended, None);
    service.shutdown().await;
}

#[tokio::test]
async fn no_endpoints_resets_the_client_at_once() {
    let service = bind(immediate());
    let client = Client::connect(&service).await;
    let client_addr = client.local_addr();
    assert_reset(client).await;

    let connections = service.connections();
    assert_eq!(connections.len(), 1);
    let record = &connections[0];
    assert_eq!(record.client, client_addr);
    assert_eq!(record.endpoint, None);
    assert_eq!(record.upstream, Upstream::NoEndpoints);
    wait_until("the connection is logged as ended", || {
        service.connections()[0].ended.is_some()
    })
    .await;
    assert_eq!(
        service.connections()[0].ended.as_ref().map(|e| &e.how),
        Some(&End::Rejected)
    );
    service.shutdown().await;
}

#[tokio::test]
async fn refused_upstream_resets_the_client_and_names_the_pod() {
    let service = bind(immediate());
    let gone = Pod::start("gone").await;
    let endpoint = gone.endpoint.clone();
    // The pod stopped listening, but the Service's copy still lists it.
    gone.stop().await;
    service.set_endpoints(vec![endpoint.clone()]);

    let client = Client::connect(&service).await;
    let client_addr = client.local_addr();
    assert_reset(client).await;

    let record = &service.connections()[0];
    assert_eq!(record.client, client_addr);
    assert_eq!(record.endpoint.as_ref(), Some(&endpoint));
    assert_eq!(record.upstream, Upstream::Refused);
    service.shutdown().await;
}

#[tokio::test]
async fn half_close_reaches_the_pod_and_its_answer_comes_back() {
    let service = bind(immediate());
    let pod = Pod::start("pod").await;
    service.set_endpoints(vec![pod.endpoint.clone()]);
    let mut client = TcpStream::connect(service.local_addr())
        .await
        .expect("connect");
    client.write_all(b"ping\n").await.expect("write");
    client.shutdown().await.expect("half-close");
    let mut answer = String::new();
    tokio::time::timeout(DEADLINE, client.read_to_string(&mut answer))
        .await
        .expect("answer within the deadline")
        .expect("read");
    assert_eq!(answer, "pod\nbye\n");
    wait_until("the connection is logged as ended", || {
        service.connections()[0].ended.is_some()
    })
    .await;
    assert_eq!(
        service.connections()[0].ended.as_ref().map(|e| &e.how),
        Some(&End::ClientClosed)
    );
    service.shutdown().await;
}

#[tokio::test]
async fn upstream_reset_resets_the_client() {
    let service = bind(immediate());
    let pod = Pod::start("pod").await;
    service.set_endpoints(vec![pod.endpoint.clone()]);
    let mut client = Client::connect(&service).await;
    let error = client.ask("rst").await.expect_err("the pod reset");
    assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error:?}");
    wait_until("the connection is logged as ended", || {
        service.connections()[0].ended.is_some()
    })
    .await;
    assert_eq!(
        service.connections()[0].ended.as_ref().map(|e| &e.how),
        Some(&End::UpstreamReset)
    );
    service.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_closes_open_connections() {
    let service = bind(ServiceConfig::default());
    let pod = Pod::start("pod").await;
    service.set_endpoints(vec![pod.endpoint.clone()]);
    wait_until("the endpoint propagated", || {
        service.table_changes().len() == 1
    })
    .await;
    let mut open = Client::connect(&service).await;
    assert_eq!(open.ask("ping").await.expect("answer"), "pod");
    // A change still on its way is dropped.
    service.set_endpoints(Vec::new());

    service.shutdown().await;
    let refused = TcpStream::connect(service.local_addr())
        .await
        .expect_err("the port must refuse connections");
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    // Every task is done: the open connection was closed and logged as such.
    let record = &service.connections()[0];
    assert_eq!(record.ended.as_ref().map(|e| &e.how), Some(&End::Shutdown));
    assert!(
        open.ask("ping").await.is_err(),
        "the connection must be closed"
    );
    assert_eq!(service.table_changes().len(), 1);
    // Endpoints published after shutdown go nowhere, harmlessly.
    service.set_endpoints(vec![pod.endpoint.clone()]);
    service.shutdown().await;
}

#[tokio::test]
async fn dropping_the_service_stops_it() {
    let service = bind(immediate());
    let addr = service.local_addr();
    drop(service);
    let deadline = Instant::now() + DEADLINE;
    loop {
        match TcpStream::connect(addr).await {
            Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => break,
            _ => assert!(Instant::now() < deadline, "still accepting after drop"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
