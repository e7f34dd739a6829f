//! `rollguard measure --demo`: the experiment every zero-downtime article starts with, in
//! one command. A demo app (red) serves on loopback; a third of the way in it is restarted
//! the naive way (SIGTERM, the app dies at once, the new version (blue) needs a second to
//! start), and the report shows the requests that dropped and the switch from red to blue.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rollguard_load::Target;
use tokio::process::{Child, Command};

use super::progress::Progress;

/// How long the new version takes to start listening.
const STARTUP: &str = "1s";
/// How long to wait for an app to listen before giving up.
const LISTEN_DEADLINE: Duration = Duration::from_secs(10);

/// The demo apps of a `--demo` run.
pub struct Demo {
    addr: SocketAddr,
    url: Target,
    app: Child,
}

impl Demo {
    /// Starts the red version on a free loopback port and waits until it listens.
    pub async fn start() -> anyhow::Result<Self> {
        let addr = free_port().context("cannot find a free loopback port")?;
        let url: Target = format!("http://{addr}/").parse().context("demo URL")?;
        let app = spawn_app(addr, "red", None)?;
        wait_listening(addr).await?;
        Ok(Self { addr, url, app })
    }

    /// The URL the demo app serves.
    pub fn url(&self) -> &Target {
        &self.url
    }

    /// Runs the restart: red for a third of the run, then SIGTERM (red dies at once), then
    /// blue, which listens after a second, until `end`.
    pub async fn script(&mut self, end: tokio::time::Instant, progress: &Progress) {
        let now = tokio::time::Instant::now();
        tokio::time::sleep_until(now + end.saturating_duration_since(now) / 3).await;
        progress.phase("restarting: SIGTERM to red, starting blue".into());
        if let Some(pid) = self.app.id().and_then(|id| i32::try_from(id).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let _ = self.app.wait().await;
        match spawn_app(self.addr, "blue", Some(STARTUP)) {
            Ok(blue) => self.app = blue,
            Err(err) => progress.line(format!("cannot start the blue app: {err:#}")),
        }
        if wait_listening(self.addr).await.is_ok() {
            progress.phase("blue is serving".into());
        }
        tokio::time::sleep_until(end).await;
    }

    /// Stops the app that is running.
    pub async fn stop(mut self) {
        let _ = self.app.kill().await;
    }
}

fn spawn_app(addr: SocketAddr, color: &str, startup: Option<&str>) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the rollguard executable")?;
    let mut command = Command::new(exe);
    command
        .args(["demo-app", "--listen", &addr.to_string(), "--color", color])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some(delay) = startup {
        command.args(["--startup-delay", delay]);
    }
    command
        .spawn()
        .with_context(|| format!("cannot start the {color} demo app"))
}

async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + LISTEN_DEADLINE;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("the demo app did not listen on {addr} within {LISTEN_DEADLINE:?}")
}

fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}
