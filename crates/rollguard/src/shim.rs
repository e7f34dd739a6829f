//! `rollguard shim` and `rollguard sleep`: flags and wiring of [`rollguard_shim`].

use std::ffi::OsString;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use http::uri::Authority;
use rollguard_core::duration::parse_duration;
use rollguard_shim::{
    Config, DrainDelay, ProxyConfig, ReadyCheck, Rewrite, Rewrites, SignalArg, Target,
};

use crate::Failure;

/// Flags of `rollguard shim`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "On SIGTERM: /ready fails at once; the app keeps being served for \
    --drain-delay; then the listener closes, answers say `Connection: close`, HTTP/2 gets \
    GOAWAY and in-flight requests finish (up to --drain-timeout); then the app gets \
    --stop-signal, and SIGKILL after --stop-timeout. A second SIGTERM, or SIGINT, skips to \
    the stop signal; GET /prestop on --health-listen drains without stopping the app. Other \
    signals (HUP, QUIT, USR1, USR2, WINCH, CONT, ALRM, PWR) are forwarded. The shim exits \
    with the app's code (128+N when signal N killed it; 127 or 126 when CMD cannot be run). \
    See docs/shim.md.",
    override_usage = "rollguard shim --listen ADDR --upstream ADDR [OPTIONS] -- CMD [ARGS]...\n       \
    rollguard shim --no-proxy [OPTIONS] -- CMD [ARGS]...\n       \
    rollguard shim --listen ADDR --upstream ADDR [OPTIONS]    (sidecar: no CMD)"
)]
pub struct ShimArgs {
    /// Where clients connect (the container port): IP:PORT, or PORT for 0.0.0.0:PORT.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen, requires = "upstream", help_heading = "Proxy")]
    listen: Option<SocketAddr>,

    /// Where the app listens, HOST:PORT (e.g. 127.0.0.1:8081).
    #[arg(long, value_name = "ADDR", value_parser = parse_upstream, requires = "listen", help_heading = "Proxy")]
    upstream: Option<Authority>,

    /// No proxy: supervise CMD and delay its stop signal by --drain-delay (a built-in
    /// preStop sleep), for apps that are not HTTP or run their own drain.
    #[arg(long, conflicts_with_all = ["listen", "upstream"], help_heading = "Proxy")]
    no_proxy: bool,

    /// Serve GET /ready and /live on this address (IP:PORT, or PORT for 0.0.0.0:PORT).
    #[arg(long, value_name = "ADDR", value_parser = parse_listen, help_heading = "Health")]
    health_listen: Option<SocketAddr>,

    /// What /ready checks besides the drain: tcp:HOST:PORT or http://HOST:PORT/PATH
    /// [default: tcp:UPSTREAM with the proxy; nothing without].
    #[arg(
        long,
        value_name = "CHECK",
        requires = "health_listen",
        help_heading = "Health"
    )]
    upstream_ready: Option<ReadyCheck>,

    /// After SIGTERM, keep serving normally this long while endpoint removal propagates.
    /// MIN..MAX: after MIN, end once no new connection has come for --quiet; at most MAX.
    #[arg(
        long,
        value_name = "D|MIN..MAX",
        default_value = "5s",
        help_heading = "Drain"
    )]
    drain_delay: DrainDelay,

    /// With --drain-delay MIN..MAX: how long without a new connection ends the delay.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration, help_heading = "Drain")]
    quiet: Duration,

    /// The longest wait for in-flight requests and open connections once draining.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration, help_heading = "Drain")]
    drain_timeout: Duration,

    /// While draining, close a kept-alive connection once it has been idle this long; a
    /// busier one is closed by its next answer (`Connection: close`).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration, help_heading = "Drain")]
    drain_idle: Duration,

    /// The signal that asks the app to stop, once drained.
    #[arg(
        long,
        value_name = "SIGNAL",
        default_value = "TERM",
        help_heading = "Stop"
    )]
    stop_signal: SignalArg,

    /// How long the app gets after the stop signal before SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration, help_heading = "Stop")]
    stop_timeout: Duration,

    /// The pod's terminationGracePeriodSeconds; the shim warns when its phases can't fit.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration, help_heading = "Stop")]
    grace_period: Duration,

    /// Where signals for the app go: its whole process group, or the app's process only.
    #[arg(long, value_name = "TARGET", value_enum, default_value_t = TargetFlag::Group, help_heading = "Signals")]
    signal_target: TargetFlag,

    /// Send signal TO wherever signal FROM would go (repeatable), e.g. TERM:INT or
    /// QUIT:TERM. Applies to forwarded signals and to --stop-signal.
    #[arg(long, value_name = "FROM:TO", help_heading = "Signals")]
    rewrite: Vec<Rewrite>,

    /// Threads serving the proxy: 1 (a sidecar's share: one core, like haproxy's
    /// `nbthread 1`), N, or 0 for one per core.
    #[arg(long, value_name = "N", default_value_t = 1, help_heading = "Proxy")]
    threads: usize,

    /// The app's command and its arguments. Without one (and with the proxy), the shim is
    /// a sidecar: it proxies to an app in another container, drains on SIGTERM or at
    /// GET /prestop (an httpGet preStop hook on the app's container), and exits.
    #[arg(
        value_name = "CMD",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<OsString>,
}

/// `--signal-target` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TargetFlag {
    /// The app's process group: the app and the children it did not move away.
    Group,
    /// The app's main process only.
    Child,
}

/// Flags of `rollguard sleep`.
#[derive(Debug, clap::Args)]
pub struct SleepArgs {
    /// How long: 15s, 500ms, 1m, or a plain number of seconds (as `sleep` takes it).
    #[arg(value_name = "DURATION", value_parser = parse_sleep)]
    duration: Duration,
}

/// Runs the app under the shim; exits with the app's code.
pub fn run(args: ShimArgs) -> ExitCode {
    let threads = args.threads;
    let config = match config(args) {
        Ok(config) => config,
        Err(failure) => return failure.report(),
    };
    let runtime = match crate::runtime_with_threads(threads) {
        Ok(runtime) => runtime,
        Err(failure) => return failure.report(),
    };
    // `block_on` runs the shim on this (the main) thread, which starts the app and lives
    // as long as the shim, as the parent-death signal requires.
    let outcome = runtime.block_on(rollguard_shim::run(config));
    // Connection tasks and resolver threads must not hold the exit.
    runtime.shutdown_background();
    match outcome {
        Ok(status) => ExitCode::from(status.code()),
        Err(err) => {
            // Not eprintln: a closed stderr must not turn 127 into a panic.
            let _ = writeln!(std::io::stderr(), "rollguard shim: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// Sleeps, for preStop hooks in images without a shell.
pub fn sleep(args: SleepArgs) -> ExitCode {
    std::thread::sleep(args.duration);
    ExitCode::SUCCESS
}

fn config(args: ShimArgs) -> Result<Config, Failure> {
    let proxy = match (args.listen, args.upstream, args.no_proxy) {
        (Some(listen), Some(upstream), false) => Some(ProxyConfig {
            listen,
            upstream,
            drain_idle: args.drain_idle,
        }),
        (None, None, true) => None,
        _ => {
            return Err(Failure::Input(anyhow!(
                "give --listen ADDR and --upstream ADDR to proxy the app, or --no-proxy"
            )));
        }
    };
    if proxy.is_none() && args.command.is_empty() {
        return Err(Failure::Input(anyhow!(
            "--no-proxy needs the app's command: rollguard shim --no-proxy -- CMD [ARGS]..."
        )));
    }
    if proxy.is_none() && matches!(args.drain_delay, DrainDelay::Adaptive { .. }) {
        return Err(Failure::Input(anyhow!(
            "--drain-delay {}: an adaptive delay watches new connections, which needs the \
             proxy; give one duration with --no-proxy",
            args.drain_delay
        )));
    }
    let ready_check = args.upstream_ready.or_else(|| {
        proxy
            .as_ref()
            .map(|p| ReadyCheck::Tcp(p.upstream.as_str().to_owned()))
    });
    Ok(Config {
        command: args.command,
        proxy,
        health: args.health_listen,
        ready_check,
        drain_delay: args.drain_delay,
        quiet: args.quiet,
        drain_timeout: args.drain_timeout,
        stop_signal: args.stop_signal.0,
        stop_timeout: args.stop_timeout,
        grace_period: args.grace_period,
        target: match args.signal_target {
            TargetFlag::Group => Target::Group,
            TargetFlag::Child => Target::Child,
        },
        rewrites: Rewrites::new(args.rewrite),
    })
}

/// `IP:PORT`, or a bare `PORT` for every IPv4 address.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    text.parse().map_err(|_| {
        format!("`{text}` is not IP:PORT or PORT (e.g. 0.0.0.0:8080, [::]:8080, 8080)")
    })
}

/// `HOST:PORT`, with the port.
fn parse_upstream(text: &str) -> Result<Authority, String> {
    let bad = || format!("`{text}` is not HOST:PORT (e.g. 127.0.0.1:8081, localhost:8081)");
    let authority: Authority = text.parse().map_err(|_| bad())?;
    if authority.port_u16().is_none() || authority.host().is_empty() || text.contains('@') {
        return Err(bad());
    }
    Ok(authority)
}

/// A duration, or a plain number of seconds.
fn parse_sleep(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.trim().parse::<f64>() {
        return Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("`{text}` is not a duration of zero or more seconds"));
    }
    parse_duration(text).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_a_port_or_an_address() {
        assert_eq!(
            parse_listen("8080"),
            Ok("0.0.0.0:8080".parse().expect("addr"))
        );
        assert_eq!(
            parse_listen("[::1]:80"),
            Ok("[::1]:80".parse().expect("addr"))
        );
        assert!(parse_listen("localhost:80").is_err());
    }

    #[test]
    fn upstream_needs_a_port() {
        assert!(parse_upstream("127.0.0.1:8081").is_ok());
        assert!(parse_upstream("app:8081").is_ok());
        for bad in ["127.0.0.1", "user@host:80", ":80", "http://x:80"] {
            assert!(parse_upstream(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sleep_takes_seconds_or_durations() {
        assert_eq!(parse_sleep("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_sleep("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_sleep("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_sleep("-1").is_err());
        assert!(parse_sleep("soon").is_err());
    }
}
