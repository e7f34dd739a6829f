//! `rollguard lab`: roll a Deployment of real processes on this machine, scenario by
//! scenario, and explain every dropped request.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use comfy_table::{Cell, CellAlignment, Table, presets};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rollguard_core::Cause;
use rollguard_core::duration::parse_duration;
use rollguard_core::rollout::{IntOrPercent, RollingUpdate};
use rollguard_lab::deployment::Strategy;
use rollguard_lab::manifest::{ManifestDeployment, ManifestStrategy, parse_deployment};
use rollguard_lab::pod::Termination;
use rollguard_lab::run::{LabConfig, ScenarioReport, Setup, run_scenario};
use rollguard_lab::scenario::{SCENARIOS, Scenario, demo_app_command};
use serde::Serialize;

use crate::Failure;

/// Flags of `rollguard lab`.
#[derive(Debug, Args)]
pub struct LabArgs {
    /// Scenario to run (repeatable): naive, readiness, prestop, drain, complete, shim
    /// [default: all, in that order]
    #[arg(long = "scenario", value_name = "NAME", value_parser = parse_scenario)]
    scenarios: Vec<&'static Scenario>,

    /// Roll your own app instead of the demo app: a shell command in which {ip}, {port},
    /// {pod} and {version} are replaced (also given as POD_IP, PORT, POD_NAME,
    /// APP_VERSION). It must listen on {ip}:{port}.
    #[arg(long, value_name = "CMD", conflicts_with = "scenarios")]
    app: Option<String>,

    /// Take replicas, strategy, minReadySeconds, probes, preStop and the grace period from
    /// a Deployment manifest (the first one in the file); pods run --app, or the demo app.
    #[arg(long, value_name = "FILE", conflicts_with = "scenarios")]
    manifest: Option<PathBuf>,

    /// Replicas of the Deployment.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    replicas: u32,

    /// maxSurge of the RollingUpdate strategy (absolute or percent).
    #[arg(long, value_name = "N|P%", default_value = "25%")]
    max_surge: IntOrPercent,

    /// maxUnavailable of the RollingUpdate strategy (absolute or percent).
    #[arg(long, value_name = "N|P%", default_value = "25%")]
    max_unavailable: IntOrPercent,

    /// Requests per second of the built-in load (plus, with the demo app, a tenth of that
    /// as long requests to /slow) [default: 200; with --serve: no built-in load]
    #[arg(long, value_name = "N", value_parser = crate::measure::parse_rate)]
    rate: Option<f64>,

    /// Rollouts per scenario.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    rollouts: u32,

    /// How long endpoint changes take to reach the Service (kube-proxy's lag).
    #[arg(long, value_name = "D", default_value = "1s", value_parser = parse_duration)]
    propagation_delay: Duration,

    /// Keep the Service on ADDR (e.g. 127.0.0.1:8080) so any client (curl, ab, a browser)
    /// can watch the rollouts; one scenario at a time.
    #[arg(long, value_name = "ADDR")]
    serve: Option<std::net::SocketAddr>,

    /// Pause before each rollout [default: 0; with --serve: 10s]
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    interval: Option<Duration>,

    /// Write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// Runs `rollguard lab` and returns its exit code.
pub fn run(args: LabArgs) -> ExitCode {
    match lab(args) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => failure.report(),
    }
}

#[derive(Serialize)]
struct Output<'a> {
    scenarios: &'a [ScenarioReport],
}

/// Runs the lab; `Ok` carries the exit code (0, or 130 when interrupted).
fn lab(args: LabArgs) -> Result<u8, Failure> {
    let manifest = match &args.manifest {
        Some(path) => Some(read_manifest(path).map_err(Failure::Input)?),
        None => None,
    };
    let (replicas, strategy) = match &manifest {
        Some(m) => (m.replicas, m.strategy),
        None => (
            args.replicas,
            ManifestStrategy::RollingUpdate(RollingUpdate {
                max_surge: args.max_surge,
                max_unavailable: args.max_unavailable,
            }),
        ),
    };
    let strategy = match strategy {
        ManifestStrategy::Recreate => Strategy::Recreate,
        ManifestStrategy::RollingUpdate(update) => {
            let budget = update.resolve(replicas).map_err(|e| {
                Failure::Input(anyhow::anyhow!("--max-surge/--max-unavailable: {e}"))
            })?;
            Strategy::RollingUpdate {
                max_surge: budget.max_surge,
                max_unavailable: budget.max_unavailable,
            }
        }
    };
    let config = LabConfig {
        replicas,
        strategy,
        rate: match (args.rate, args.serve) {
            (Some(rate), _) => Some(rate),
            (None, Some(_)) => None,
            (None, None) => Some(200.0),
        },
        // The demo app's /slow keeps requests in flight, so cut requests (F3) show; a
        // user's app has no such endpoint.
        slow: match (&args.app, args.rate, args.serve) {
            (None, Some(rate), _) => Some((rate / 10.0, Duration::from_millis(1500))),
            (None, None, None) => Some((20.0, Duration::from_millis(1500))),
            _ => None,
        },
        rollouts: args.rollouts,
        propagation_delay: args.propagation_delay,
        jitter: 0.2,
        serve: args.serve,
        interval: args.interval.unwrap_or(if args.serve.is_some() {
            Duration::from_secs(10)
        } else {
            Duration::ZERO
        }),
    };
    let setups = setups(&args, &config, manifest).map_err(Failure::Run)?;
    if args.serve.is_some() && setups.len() > 1 {
        return Err(Failure::Input(anyhow::anyhow!(
            "--serve: choose one --scenario (or --app): the address serves one at a time"
        )));
    }

    let runtime = crate::runtime()?;
    let started = Instant::now();
    let progress = progress_bar();
    let serving = args.serve.is_some();
    let reports = runtime.block_on(async {
        let mut reports = Vec::new();
        for setup in &setups {
            // Under --serve each step is also a line, timed: the rollouts' timeline as it
            // happens, for whoever watches beside their own client.
            let say = |msg: String| {
                if serving {
                    let line = format!("[{:>6.1}s] {msg}", started.elapsed().as_secs_f64());
                    if progress.is_hidden() {
                        eprintln!("{line}");
                    } else {
                        progress.println(line);
                    }
                }
                progress.set_message(msg);
            };
            let report = tokio::select! {
                report = run_scenario(&config, setup, &say) => report,
                () = crate::measure::interrupted() => return Ok(None),
            };
            let report = report
                .with_context(|| format!("scenario {}", setup.name))
                .map_err(Failure::Run)?;
            reports.push(report);
        }
        Ok(Some(reports))
    });
    progress.finish_and_clear();
    // Pods and their probes are gone with the scenario; nothing may outlive the command.
    runtime.shutdown_timeout(Duration::from_secs(2));
    let Some(reports) = reports? else {
        return Ok(130);
    };
    print!("{}", render(&reports, &config, started.elapsed()));
    if let Some(path) = &args.json {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot write --json {}", path.display()))
            .map_err(Failure::Run)?;
        serde_json::to_writer_pretty(
            std::io::BufWriter::new(file),
            &Output {
                scenarios: &reports,
            },
        )
        .with_context(|| format!("cannot write --json {}", path.display()))
        .map_err(Failure::Run)?;
    }
    Ok(0)
}

/// What runs in the pods: the user's app and manifest, or the demo app in each chosen
/// scenario.
fn setups(
    args: &LabArgs,
    config: &LabConfig,
    manifest: Option<ManifestDeployment>,
) -> anyhow::Result<Vec<Setup>> {
    let exe = std::env::current_exe().context("cannot find the rollguard executable")?;
    let demo_app = [exe.display().to_string(), "demo-app".to_owned()];
    if args.app.is_some() || manifest.is_some() {
        let command = match &args.app {
            Some(app) => vec!["sh".to_owned(), "-c".to_owned(), app.clone()],
            None => demo_app_command(&demo_app),
        };
        // Without a manifest, Kubernetes' defaults: no probes, no preStop, 30 s of grace.
        let setup = match manifest {
            Some(m) => Setup {
                name: m.name,
                command,
                probes: m.probes,
                termination: m.termination,
                min_ready: m.min_ready,
                port: m.container_port,
            },
            None => Setup {
                name: "app".to_owned(),
                command,
                probes: Default::default(),
                termination: Termination::default(),
                min_ready: Duration::ZERO,
                port: None,
            },
        };
        return Ok(vec![setup]);
    }
    let propagation = config.longest_propagation();
    let scenarios: Vec<&Scenario> = if args.scenarios.is_empty() {
        SCENARIOS.iter().collect()
    } else {
        args.scenarios.clone()
    };
    Ok(scenarios
        .iter()
        .map(|s| s.setup(&demo_app, propagation))
        .collect())
}

/// Reads and parses `--manifest`, and says which of its fields the lab can't honor.
fn read_manifest(path: &std::path::Path) -> anyhow::Result<ManifestDeployment> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--manifest: cannot read {}", path.display()))?;
    let manifest = parse_deployment(&text, path)?;
    if !manifest.ignored.is_empty() {
        eprintln!(
            "{}: the lab does not honor these fields:\n  {}",
            path.display(),
            manifest.ignored.join("\n  ")
        );
    }
    Ok(manifest)
}

fn parse_scenario(name: &str) -> Result<&'static Scenario, String> {
    Scenario::find(name).ok_or_else(|| {
        format!(
            "unknown scenario '{name}' (known: {})",
            Scenario::names().join(", ")
        )
    })
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner:.cyan} [{elapsed}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn render(reports: &[ScenarioReport], config: &LabConfig, took: Duration) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_header(vec![
        "scenario",
        "requests",
        "failed",
        "failures by cause",
        "rollout time",
    ]);
    for r in reports {
        let causes = if r.causes.is_empty() {
            "-".to_owned()
        } else {
            r.causes
                .iter()
                .map(|(cause, n)| format!("{cause} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let times = r
            .rollout_seconds
            .iter()
            .map(|s| format!("{s:.1}s"))
            .collect::<Vec<_>>()
            .join(" ");
        table.add_row(vec![
            Cell::new(r.name.as_str()),
            Cell::new(r.requests).set_alignment(CellAlignment::Right),
            Cell::new(r.failed).set_alignment(CellAlignment::Right),
            Cell::new(causes),
            Cell::new(times),
        ]);
    }
    let load = match (config.rate, config.slow) {
        (None, _) => "no built-in load".to_owned(),
        (Some(rate), None) => format!("{rate} req/s"),
        (Some(rate), Some((slow, d))) => {
            format!(
                "{rate} req/s (+{slow} req/s of {} ms requests)",
                d.as_millis()
            )
        }
    };
    let mut out = format!(
        "rollguard lab: {} replicas, {} rollouts per scenario, {load}, endpoint propagation {:?}\n\n{table}\n",
        config.replicas, config.rollouts, config.propagation_delay,
    );
    let seen: Vec<Cause> = Cause::ALL
        .iter()
        .copied()
        .filter(|c| {
            reports
                .iter()
                .any(|r| r.causes.contains_key(&c.to_string()))
        })
        .collect();
    if !seen.is_empty() {
        out.push_str("\nFixes\n");
        for cause in seen {
            out.push_str(&format!("  {:<17} {}\n", cause.to_string(), cause.fix()));
        }
    }
    out.push_str(&format!(
        "\nmatrix finished in {:.0}s\n",
        took.as_secs_f64()
    ));
    out
}
