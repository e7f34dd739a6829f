//! `rollguard measure`: load a URL, optionally while a command (a rollout) runs, and report
//! every failed request.

mod command;
mod demo;
mod progress;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use http::{HeaderName, HeaderValue, Method};
use rollguard_core::duration::parse_duration;
use rollguard_load::{ConnectionMode, LoadModel, LoadSpec, Report, StatusSet, Target};
use serde::Serialize;

use self::command::{CommandOutcome, RunningCommand};
use self::progress::Progress;
use crate::Failure;

/// Flags of `rollguard measure`.
#[derive(Debug, Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct MeasureArgs {
    /// The URL to load (http:// or https://).
    #[arg(value_name = "URL", required_unless_present = "demo")]
    url: Option<Target>,

    /// Command to run while loading (e.g. a rollout); load runs until it exits plus --settle.
    /// A single argument with spaces or shell syntax is run by `sh -c`; otherwise the
    /// arguments are run as they are.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,

    /// Open loop: requests per second, whatever the server does [default: 200]
    #[arg(long, value_name = "N", value_parser = parse_rate, conflicts_with = "concurrency")]
    rate: Option<f64>,

    /// Open loop: the most requests in flight at once; late requests count their wait.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_in_flight: u32,

    /// Closed loop: N clients each sending as soon as their last request is answered.
    #[arg(long, short = 'c', value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    concurrency: Option<u32>,

    /// Connection reuse: keep-alive pools, a new connection per request, or half of each.
    #[arg(long, value_name = "MODE", default_value = "mixed")]
    connections: ConnectionMode,

    /// Speak HTTP/2 (h2c with prior knowledge on http://, ALPN h2 on https://).
    #[arg(long)]
    http2: bool,

    /// Do not verify the server's TLS certificate.
    #[arg(long, short = 'k')]
    insecure: bool,

    /// Request method.
    #[arg(short = 'X', long = "method", value_name = "METHOD", default_value = "GET", value_parser = parse_method)]
    method: Method,

    /// Request header 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER", value_parser = parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,

    /// Request body; @FILE reads it from a file.
    #[arg(long, value_name = "BODY")]
    body: Option<String>,

    /// Limit for one request, connecting included.
    #[arg(long, value_name = "D", default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,

    /// Statuses that count as success, e.g. 200-399 or 200,204.
    #[arg(long, value_name = "SET", default_value = "200-399")]
    expect_status: StatusSet,

    /// How long to load [default: 10s]. With a command it is an upper bound: the command is
    /// stopped when it is reached.
    #[arg(long, short = 'd', value_name = "D", value_parser = parse_duration)]
    duration: Option<Duration>,

    /// With a command: keep loading this long after it exits.
    #[arg(long, value_name = "D", default_value = "5s", value_parser = parse_duration)]
    settle: Duration,

    /// Response header that names the version that answered.
    #[arg(long, value_name = "NAME", default_value = "X-Version")]
    version_header: HeaderName,

    /// Exit 0 when at most N requests failed.
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_failures: u64,

    /// Write the report as JSON to FILE (`-` for stdout; the table then goes to stderr).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Self-test: start a demo app, restart it naively mid-run (red -> blue) and measure.
    #[arg(long, conflicts_with_all = ["url", "command"])]
    demo: bool,
}

const AFTER_HELP: &str = "\
Examples:
  rollguard measure http://127.0.0.1:8080/ --duration 30s
  rollguard measure https://app.example.com/health --rate 500 --json out.json \\
      -- 'kubectl rollout restart deploy/app && kubectl rollout status deploy/app'
  rollguard measure --demo

Exit status: 0 when at most --max-failures requests failed (and the command, if any,
succeeded), 1 otherwise, 2 on bad input, 130 when interrupted.";

/// Runs `rollguard measure` to completion and returns its exit code.
pub fn run(args: MeasureArgs) -> ExitCode {
    let runtime = match crate::runtime() {
        Ok(runtime) => runtime,
        Err(failure) => return failure.report(),
    };
    let code = match runtime.block_on(measure(args)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => failure.report(),
    };
    // Workers still finishing a request after an interrupt must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Ending {
    /// The duration elapsed, or the command exited and the settle time passed.
    Completed,
    /// With a command: --duration was reached first; the command was stopped.
    DurationReached,
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

async fn measure(args: MeasureArgs) -> Result<u8, Failure> {
    let body = read_body(args.body.as_deref()).map_err(Failure::Input)?;
    let mut demo = None;
    let target = match &args.url {
        Some(url) => url.clone(),
        // clap guarantees a URL unless --demo is given.
        None => {
            let app = demo::Demo::start().await.map_err(Failure::Run)?;
            let url = app.url().clone();
            demo = Some(app);
            url
        }
    };
    let model = match args.concurrency {
        Some(concurrency) => LoadModel::Closed {
            concurrency: concurrency as usize,
        },
        None => LoadModel::Open {
            rate: args.rate.unwrap_or(200.0),
            workers: args.max_in_flight as usize,
        },
    };
    let mut spec = LoadSpec::new(target.clone());
    spec.model = model;
    spec.connections = args.connections;
    spec.http2 = args.http2;
    spec.insecure = args.insecure;
    spec.method = args.method.clone();
    spec.headers = args.headers.clone();
    spec.body = body;
    spec.timeout = args.timeout;
    spec.expect_status = args.expect_status.clone();
    spec.version_header = args.version_header.clone();

    let duration = match (args.command.is_empty(), args.duration) {
        (true, None) => Some(Duration::from_secs(10)),
        (_, d) => d,
    };
    let progress = Progress::new(duration);
    let run = rollguard_load::start(spec).map_err(|e| Failure::Run(e.into()))?;

    let mut command = if args.command.is_empty() {
        None
    } else {
        Some(
            RunningCommand::spawn(&args.command, run.elapsed(), progress.clone())
                .map_err(Failure::Input)?,
        )
    };
    let ticker = progress.start_ticker(run.live());
    // With a duration the end is known now; a command that exits earlier brings it forward.
    let deadline = duration.map(|d| run.end_after(d));
    let has_command = command.is_some();
    let ending = {
        let end = async {
            if let Some(cmd) = command.as_mut() {
                cmd.wait().await;
                progress.phase(format!(
                    "settling for {}",
                    humantime::format_duration(args.settle)
                ));
                tokio::time::sleep_until(run.end_after(run.elapsed() + args.settle)).await;
            } else if let Some(app) = demo.as_mut() {
                app.script(
                    deadline.unwrap_or_else(tokio::time::Instant::now),
                    &progress,
                )
                .await;
            } else if let Some(deadline) = deadline {
                tokio::time::sleep_until(deadline).await;
            }
        };
        let cap = async {
            match (has_command, deadline) {
                (true, Some(deadline)) => tokio::time::sleep_until(deadline).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            () = end => Ending::Completed,
            () = cap => Ending::DurationReached,
            () = interrupted() => Ending::Interrupted,
        }
    };
    if ending == Ending::Interrupted {
        progress.phase("interrupted: finishing requests in flight".into());
    }
    let command = match command.take() {
        Some(cmd) => Some(cmd.finish().await),
        None => None,
    };
    let report = tokio::select! {
        report = run.finish() => report,
        // A second Ctrl-C while requests in flight finish: report what is known now.
        () = interrupted() => return Ok(130),
    };
    ticker.abort();
    progress.clear();
    if let Some(app) = demo.take() {
        app.stop().await;
    }
    let passed = report.failed <= args.max_failures
        && command.as_ref().is_none_or(CommandOutcome::succeeded)
        && ending != Ending::DurationReached;
    let output = Output {
        target: target.to_string(),
        load: LoadInfo::new(&args, model),
        ending,
        report: &report,
        command: command.as_ref(),
        max_failures: args.max_failures,
        passed,
    };
    emit(&args, &output).map_err(Failure::Run)?;
    Ok(match ending {
        Ending::Interrupted => 130,
        _ if passed => 0,
        _ => 1,
    })
}

/// The JSON document of `--json`, documented in docs/measure.md.
#[derive(Serialize)]
struct Output<'a> {
    target: String,
    load: LoadInfo,
    ending: Ending,
    #[serde(flatten)]
    report: &'a Report,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<&'a CommandOutcome>,
    max_failures: u64,
    passed: bool,
}

#[derive(Serialize)]
struct LoadInfo {
    model: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_in_flight: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency: Option<usize>,
    connections: String,
    http2: bool,
    method: String,
    timeout_ms: u64,
    expect_status: String,
}

impl LoadInfo {
    fn new(args: &MeasureArgs, model: LoadModel) -> Self {
        let (kind, rate, max_in_flight, concurrency) = match model {
            LoadModel::Open { rate, workers } => ("open", Some(rate), Some(workers), None),
            LoadModel::Closed { concurrency } => ("closed", None, None, Some(concurrency)),
        };
        Self {
            model: kind,
            rate,
            max_in_flight,
            concurrency,
            connections: args.connections.to_string(),
            http2: args.http2,
            method: args.method.to_string(),
            timeout_ms: u64::try_from(args.timeout.as_millis()).unwrap_or(u64::MAX),
            expect_status: args.expect_status.to_string(),
        }
    }
}

fn emit(args: &MeasureArgs, output: &Output<'_>) -> anyhow::Result<()> {
    let table = render::report(output);
    match args.json.as_deref() {
        Some(path) if path.as_os_str() == "-" => {
            eprint!("{table}");
            serde_json::to_writer_pretty(std::io::stdout().lock(), output)?;
            println!();
        }
        Some(path) => {
            print!("{table}");
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot write --json {}", path.display()))?;
            serde_json::to_writer_pretty(std::io::BufWriter::new(file), output)
                .with_context(|| format!("cannot write --json {}", path.display()))?;
        }
        None => print!("{table}"),
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

fn read_body(body: Option<&str>) -> anyhow::Result<Bytes> {
    match body {
        None => Ok(Bytes::new()),
        Some(text) => match text.strip_prefix('@') {
            Some(path) => std::fs::read(path)
                .map(Bytes::from)
                .with_context(|| format!("--body: cannot read {path}")),
            None => Ok(Bytes::from(text.to_owned())),
        },
    }
}

/// A positive, finite number of requests per second (`--rate`).
pub(crate) fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!(
            "'{s}' is not a positive number of requests per second"
        )),
    }
}

fn parse_method(s: &str) -> Result<Method, String> {
    Method::from_bytes(s.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("'{s}' is not an HTTP method"))
}

fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}' is not a header: expected 'Name: value'"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("'{}' is not a valid header name", name.trim()))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of header '{name}' is not valid"))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_and_reject() {
        let (name, value) = parse_header("X-Test:  a b ").unwrap();
        assert_eq!((name.as_str(), value.to_str().unwrap()), ("x-test", "a b"));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
    }

    #[test]
    fn rates_and_methods() {
        assert_eq!(parse_rate("250").unwrap(), 250.0);
        for bad in ["0", "-1", "abc", "inf"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_method("post").unwrap(), Method::POST);
        assert!(parse_method("GE T").is_err());
    }
}
