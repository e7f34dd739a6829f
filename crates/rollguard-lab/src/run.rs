//! One run, start to end: a Deployment behind the Service, loaded while it rolls, and
//! every failed request attributed to its cause.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rollguard_core::Cause;
use rollguard_load::{ConnectionMode, LoadModel, LoadSpec, Report};
use serde::Serialize;

use crate::attribution::{FailedRequest, PodTimeline, Route, attribute};
use crate::deployment::{Deployment, DeploymentError, DeploymentSpec, EndpointSink, Strategy};
use crate::pod::Termination;
use crate::prober::Probes;
use crate::service::{ConnRecord, Endpoint, Service, ServiceConfig, Upstream};

/// Report times are whole milliseconds counted from a request's due time: a connection
/// the Service accepted up to this much after a failure's computed time is still its own.
const CONN_SLACK: Duration = Duration::from_millis(100);

/// The longest a single rollout may take before the run gives up on it.
const ROLLOUT_LIMIT: Duration = Duration::from_secs(120);

/// What runs in each pod, and how the kubelet treats it: a scenario's preset, or the
/// user's own app and manifest.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The name in reports (the scenario, or the Deployment's name).
    pub name: String,
    /// The app's command; `{ip}`, `{port}`, `{pod}` and `{version}` are replaced.
    pub command: Vec<String>,
    /// The container's probes. A probe port given by name means the pod's port.
    pub probes: Probes,
    /// preStop hook and grace period.
    pub termination: Termination,
    /// `minReadySeconds`.
    pub min_ready: Duration,
    /// The container port; a free one is picked when absent.
    pub port: Option<u16>,
}

/// How a lab run is set up, whatever runs in the pods.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Desired replicas.
    pub replicas: u32,
    /// The update strategy, resolved.
    pub strategy: Strategy,
    /// Requests per second to `/`, half on kept-alive, half on fresh connections (none:
    /// no built-in load, for `--serve` where other clients bring theirs).
    pub rate: Option<f64>,
    /// Requests per second to `/slow` (long requests, so cut requests show), and how long
    /// each takes.
    pub slow: Option<(f64, Duration)>,
    /// Rollouts per scenario.
    pub rollouts: u32,
    /// How long endpoint changes take to reach the Service.
    pub propagation_delay: Duration,
    /// Jitter of the propagation delay, as a fraction of it.
    pub jitter: f64,
    /// Where the Service listens (a free port on 127.0.0.1 when absent).
    pub serve: Option<SocketAddr>,
    /// Pause before each rollout, once the previous one has settled.
    pub interval: Duration,
}

impl LabConfig {
    /// The longest an endpoint change takes to reach the Service: the delay plus its
    /// jitter.
    pub fn longest_propagation(&self) -> Duration {
        self.propagation_delay.mul_f64(1.0 + self.jitter)
    }
}

/// What a run found. Part of `rollguard lab --json`; see docs/lab.md.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// The scenario's (or the Deployment's) name.
    pub name: String,
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Failed requests per cause (`not-ready`, `endpoint-lag`, ...).
    pub causes: BTreeMap<String, u64>,
    /// Failed requests per failure class, as the client saw them.
    pub classes: BTreeMap<String, u64>,
    /// Rollouts performed.
    pub rollouts: u32,
    /// How long each rollout took, in seconds.
    pub rollout_seconds: Vec<f64>,
}

/// Why a run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The Service or a port could not be set up.
    #[error("cannot set up the lab: {0}")]
    Setup(#[from] std::io::Error),
    /// A rollout failed.
    #[error(transparent)]
    Rollout(#[from] DeploymentError),
    /// The load could not start.
    #[error("cannot start the load: {0}")]
    Load(#[from] rollguard_load::StartError),
}

/// Runs one setup: creates the Deployment, starts the load, rolls `rollouts` times, lets
/// the last changes settle, stops the load and attributes every failure. `progress` hears
/// about each step.
pub async fn run_scenario(
    config: &LabConfig,
    setup: &Setup,
    progress: &(dyn Fn(String) + Sync),
) -> Result<ScenarioReport, LabError> {
    let service = Arc::new(Service::bind(
        config
            .serve
            .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        ServiceConfig {
            propagation_delay: config.propagation_delay,
            jitter: config.jitter,
        },
    )?);
    // Pods listen on their own addresses; a port free on 127.0.0.1 is free there too
    // unless something listens on every address.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port();
    let subnet = [fastrand::u8(1..=254), fastrand::u8(0..=200)];
    let mut deployment = Deployment::new(
        deployment_spec(config, setup, port),
        crate::pod::Journal::default(),
        Arc::new(ServiceSink(service.clone())),
        subnet,
    );
    let result = roll(config, setup, &service, &mut deployment, progress).await;
    deployment.shutdown().await;
    let connections = service.connections();
    service.shutdown().await;
    let (reports, rollout_seconds) = result?;
    progress(format!("{}: attributing failures", setup.name));
    Ok(summarize(
        setup,
        config,
        &reports,
        rollout_seconds,
        &connections,
        &PodTimeline::from_journal(&deployment.journal().entries()),
    ))
}

/// The steps between setup and teardown; the caller cleans up whatever happens here.
async fn roll(
    config: &LabConfig,
    setup: &Setup,
    service: &Service,
    deployment: &mut Deployment,
    progress: &(dyn Fn(String) + Sync),
) -> Result<(Vec<(Instant, Report)>, Vec<f64>), LabError> {
    let settle = settle_time(config);
    let creating = |pods: &str| progress(format!("{}: creating | pods: {pods}", setup.name));
    deployment
        .roll_to(VERSIONS[0], ROLLOUT_LIMIT, &creating)
        .await?;
    // Let the Service learn the first endpoints before load starts.
    tokio::time::sleep(settle).await;

    progress(format!(
        "{}: http://{} is serving (the Service has its endpoints)",
        setup.name,
        service.local_addr()
    ));
    let url = format!("http://{}", service.local_addr());
    let mut runs = Vec::new();
    // Workers sized to the load: a kept-alive connection then carries a request every
    // few tens of milliseconds, as a busy client's pool does, instead of idling for
    // seconds (an idle connection is what the keep-alive race needs).
    if let Some(rate) = config.rate {
        runs.push(start_load(
            &url,
            "/",
            rate,
            FAST_WORKERS,
            ConnectionMode::Mixed,
        )?);
    }
    if let Some((rate, duration)) = config.slow {
        let path = format!("/slow?ms={}", duration.as_millis());
        let in_flight = (rate * duration.as_secs_f64() * 1.5).ceil() as usize + 4;
        runs.push(start_load(
            &url,
            &path,
            rate,
            in_flight,
            ConnectionMode::KeepAlive,
        )?);
    }
    // Warm up: kept-alive connections exist before anything changes (F4 needs them).
    tokio::time::sleep(settle).await;
    let mut rollout_seconds = Vec::new();
    for i in 1..=config.rollouts {
        tokio::time::sleep(config.interval).await;
        let version = VERSIONS[i as usize % 2];
        let step = format!(
            "{}: rollout {i}/{} to {version}",
            setup.name, config.rollouts
        );
        progress(step.clone());
        let rolling = |pods: &str| progress(format!("{step} | pods: {pods}"));
        let took = deployment.roll_to(version, ROLLOUT_LIMIT, &rolling).await?;
        progress(format!(
            "{}: rollout {i} to {version} complete in {:.1}s",
            setup.name,
            took.as_secs_f64()
        ));
        rollout_seconds.push(took.as_secs_f64());
        deployment.wait_terminations().await;
        tokio::time::sleep(settle).await;
    }
    let mut reports = Vec::new();
    for run in runs {
        let started = run.started_at();
        reports.push((started, run.finish().await));
    }
    Ok((reports, rollout_seconds))
}

/// The two versions rollouts alternate between.
const VERSIONS: [&str; 2] = ["red", "blue"];

/// Long enough for any endpoint change to reach the Service.
fn settle_time(config: &LabConfig) -> Duration {
    config.longest_propagation() + Duration::from_millis(300)
}

/// Workers of the load to `/`: plenty for sub-millisecond answers at the lab's rates.
const FAST_WORKERS: usize = 32;

fn start_load(
    base: &str,
    path: &str,
    rate: f64,
    workers: usize,
    connections: ConnectionMode,
) -> Result<rollguard_load::LoadRun, LabError> {
    let target = format!("{base}{path}")
        .parse()
        .map_err(|e| std::io::Error::other(format!("load target: {e}")))?;
    let mut spec = LoadSpec::new(target);
    spec.model = LoadModel::Open { rate, workers };
    spec.connections = connections;
    Ok(rollguard_load::start(spec)?)
}

fn deployment_spec(config: &LabConfig, setup: &Setup, port: u16) -> DeploymentSpec {
    DeploymentSpec {
        name: "app".to_owned(),
        replicas: config.replicas,
        strategy: config.strategy,
        min_ready: setup.min_ready,
        probes: setup.probes.clone(),
        termination: setup.termination.clone(),
        command: setup.command.clone(),
        port,
    }
}

/// Counts requests and attributes each failure to its cause.
fn summarize(
    setup: &Setup,
    config: &LabConfig,
    reports: &[(Instant, Report)],
    rollout_seconds: Vec<f64>,
    connections: &[ConnRecord],
    pods: &HashMap<String, PodTimeline>,
) -> ScenarioReport {
    // The Service saw each client connection by its source port.
    let mut by_port: HashMap<u16, Vec<&ConnRecord>> = HashMap::new();
    for conn in connections {
        by_port.entry(conn.client.port()).or_default().push(conn);
    }
    let mut causes: BTreeMap<String, u64> = BTreeMap::new();
    let mut classes: BTreeMap<String, u64> = BTreeMap::new();
    for (started, report) in reports {
        for (class, n) in &report.failures_by_class {
            *classes.entry(class.clone()).or_default() += n;
        }
        for failure in &report.failures {
            let sent = *started + Duration::from_millis(failure.t_ms);
            let failed = sent + Duration::from_millis(failure.elapsed_ms);
            let route = failure
                .local_port
                .and_then(|port| by_port.get(&port))
                // Ports are reused over a run: the connection is the last one accepted
                // from that port before the request failed.
                .and_then(|conns| {
                    conns
                        .iter()
                        .filter(|c| c.accepted_at <= failed + CONN_SLACK)
                        .max_by_key(|c| c.accepted_at)
                })
                .map(|conn| route_of(conn));
            let request = FailedRequest {
                sent,
                failed,
                class: failure.class,
                route,
            };
            *causes
                .entry(attribute(&request, pods).to_string())
                .or_default() += 1;
        }
        // Failures past the report's cap are counted but not listed: no ground truth.
        let unlisted = report.failed - report.failures.len() as u64;
        if unlisted > 0 {
            *causes.entry(Cause::Unknown.to_string()).or_default() += unlisted;
        }
    }
    ScenarioReport {
        name: setup.name.clone(),
        requests: reports.iter().map(|(_, r)| r.total).sum(),
        failed: reports.iter().map(|(_, r)| r.failed).sum(),
        causes,
        classes,
        rollouts: config.rollouts,
        rollout_seconds,
    }
}

fn route_of(conn: &ConnRecord) -> Route {
    match (&conn.endpoint, &conn.upstream) {
        (None, _) => Route::NoEndpoints,
        (Some(endpoint), Upstream::Connected) => Route::Connected(endpoint.pod.clone()),
        (Some(endpoint), _) => Route::Refused(endpoint.pod.clone()),
    }
}

/// Publishes the Deployment's endpoints to the lab's Service.
struct ServiceSink(Arc<Service>);

impl EndpointSink for ServiceSink {
    fn set_endpoints(&self, endpoints: Vec<(String, SocketAddr)>) {
        self.0.set_endpoints(
            endpoints
                .into_iter()
                .map(|(pod, addr)| Endpoint { pod, addr })
                .collect(),
        );
    }
}
