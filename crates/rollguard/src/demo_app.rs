//! `rollguard demo-app`: flags and wiring of real signals into [`rollguard_demo::Server`].

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use rollguard_core::duration::parse_duration;
use rollguard_demo::{Color, Config, Exit, OnSigterm, Server};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

/// Exit status after SIGTERM with `--sigterm exit`: what a shell reports for a TERM death.
const EXIT_SIGTERM: u8 = 143;
/// Exit status after SIGINT: what a shell reports for an INT death.
const EXIT_SIGINT: u8 = 130;

/// Flags of `rollguard demo-app`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Routes: GET / (page in the app's color), GET /health (200 ok or 503), \
    GET /slow?ms=N (answers after N ms); every response carries X-Version: <color>. \
    HTTP/1.1 keep-alive and h2c (prior knowledge) share the port. \
    SIGINT (Ctrl-C) always stops the app at once (exit 130)."
)]
pub struct DemoAppArgs {
    /// Address to listen on (IP:PORT; port 0 picks a free port, printed in the log).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// The version this app serves, sent as `X-Version` (e.g. red, blue, #ff8800).
    #[arg(long, value_name = "NAME", default_value = "red")]
    color: Color,

    /// What SIGTERM does (after --drain-delay).
    #[arg(long, value_name = "BEHAVIOR", value_enum, default_value_t = SigtermFlag::Exit)]
    sigterm: SigtermFlag,

    /// After SIGTERM, keep serving normally for this long before --sigterm applies.
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    drain_delay: Duration,

    /// Make /health answer 503 from the moment SIGTERM arrives.
    #[arg(long)]
    fail_health_on_sigterm: bool,

    /// From SIGTERM on, answer every HTTP/1.1 request with `Connection: close`, drain delay
    /// included, so kept-alive clients leave before idle connections are closed.
    #[arg(long)]
    close_keepalive_on_sigterm: bool,

    /// Wait this long before listening; connections are refused meanwhile.
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    startup_delay: Duration,

    /// Listen at once, but answer 503 on /health for this long.
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    ready_delay: Duration,

    /// Close a connection that has had no request in flight for this long (0: never).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    keepalive_timeout: Duration,
}

/// `--sigterm` values; see [`OnSigterm`] for the full story.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SigtermFlag {
    /// Die at once (exit 143), cutting in-flight requests and open connections.
    Exit,
    /// Stop listening, finish in-flight requests, close connections politely, exit 0.
    Drain,
    /// Log SIGTERM and keep serving; only SIGKILL (or SIGINT) stops the app.
    Ignore,
}

/// Runs the demo app until SIGTERM (as `--sigterm` says) or SIGINT stops it.
pub fn run(args: DemoAppArgs) -> ExitCode {
    let runtime = match crate::runtime() {
        Ok(runtime) => runtime,
        Err(failure) => return failure.report(),
    };
    let status = runtime.block_on(demo_app(args));
    info!(status, "exit");
    // Whatever is still running (connections cut by `--sigterm exit`) is not waited for.
    runtime.shutdown_background();
    ExitCode::from(status)
}

async fn demo_app(args: DemoAppArgs) -> u8 {
    // Handlers first: from here on SIGTERM and SIGINT no longer kill the process by default.
    let (mut sigterm, mut sigint) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(err), _) | (_, Err(err)) => {
            eprintln!("error: cannot install signal handlers: {err}");
            return 1;
        }
    };
    let server = match Server::bind(config(&args), args.listen) {
        Ok(server) => server,
        Err(err) => {
            eprintln!("error: {err}");
            return 1;
        }
    };
    let handle = server.handle();
    let mut serve = std::pin::pin!(server.serve());
    loop {
        tokio::select! {
            exit = serve.as_mut() => return match exit {
                Ok(Exit::Drained) => 0,
                Ok(Exit::Abandoned) => EXIT_SIGTERM,
                Err(err) => {
                    eprintln!("error: {err}");
                    1
                }
            },
            Some(()) = sigterm.recv() => handle.sigterm(),
            Some(()) = sigint.recv() => {
                info!("SIGINT received, stopping at once");
                return EXIT_SIGINT;
            }
        }
    }
}

fn config(args: &DemoAppArgs) -> Config {
    Config {
        color: args.color.clone(),
        on_sigterm: match args.sigterm {
            SigtermFlag::Exit => OnSigterm::Exit,
            SigtermFlag::Drain => OnSigterm::Drain,
            SigtermFlag::Ignore => OnSigterm::Ignore,
        },
        drain_delay: args.drain_delay,
        fail_health_on_sigterm: args.fail_health_on_sigterm,
        close_keepalive_on_sigterm: args.close_keepalive_on_sigterm,
        startup_delay: args.startup_delay,
        ready_delay: args.ready_delay,
        keepalive_timeout: args.keepalive_timeout,
    }
}
