//! The command run during a measurement (typically a rollout), in its own process group so
//! that it and everything it starts can be stopped together and none is left behind.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use super::progress::Progress;

/// How long a stopped command gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// What became of the command; part of the JSON report.
#[derive(Debug, Serialize)]
pub struct CommandOutcome {
    /// The command as given.
    pub argv: Vec<String>,
    /// Its exit code, or `None` when it was ended by a signal.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// When it started, ms after the load started.
    pub started_ms: u64,
    /// When it ended, ms after the load started.
    pub ended_ms: u64,
    /// Whether rollguard had to stop it (interrupt or --duration reached).
    pub stopped: bool,
}

impl CommandOutcome {
    /// Exit code 0, not stopped.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.stopped
    }
}

/// A command started in its own process group.
pub struct RunningCommand {
    argv: Vec<String>,
    child: Child,
    pgid: Pid,
    /// The load's elapsed time when the command was spawned, and the spawn instant.
    started: Duration,
    spawned_at: Instant,
    status: Option<(ExitStatus, Instant)>,
    progress: Progress,
}

impl RunningCommand {
    /// Starts the command; its output is shown above the progress line, on stderr.
    /// `started` is the load's elapsed time at this moment.
    pub fn spawn(argv: &[String], started: Duration, progress: Progress) -> anyhow::Result<Self> {
        let mut command = match argv {
            [line] if is_shell_line(line) => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(line);
                c
            }
            [program, args @ ..] => {
                let mut c = Command::new(program);
                c.args(args);
                c
            }
            [] => anyhow::bail!("empty command after --"),
        };
        command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot run command '{}'", argv.join(" ")))?;
        let pid = child
            .id()
            .context("the command exited before its process id was known")?;
        let pgid = Pid::from_raw(i32::try_from(pid).context("process id out of range")?);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward(out, "|", progress.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward(err, "|", progress.clone()));
        }
        progress.phase(format!("running: {}", argv.join(" ")));
        Ok(Self {
            argv: argv.to_vec(),
            child,
            pgid,
            started,
            spawned_at: Instant::now(),
            status: None,
            progress,
        })
    }

    /// Waits for the command to exit. Cancel-safe: it may be called again after being
    /// dropped mid-way.
    pub async fn wait(&mut self) {
        if self.status.is_some() {
            return;
        }
        match self.child.wait().await {
            Ok(status) => {
                self.progress.line(format!(
                    "command exited: {}",
                    describe_exit(status.code(), status.signal())
                ));
                self.status = Some((status, Instant::now()));
            }
            Err(err) => {
                self.progress
                    .line(format!("cannot wait for the command: {err}"));
            }
        }
    }

    /// Stops whatever is left of the command's process group (all of it, if the command
    /// itself is still running) and returns the outcome.
    pub async fn finish(mut self) -> CommandOutcome {
        let stopped = self.status.is_none();
        if stopped {
            self.progress.line("stopping the command".into());
            let _ = killpg(self.pgid, Signal::SIGTERM);
            if tokio::time::timeout(STOP_GRACE, self.wait()).await.is_err() {
                let _ = killpg(self.pgid, Signal::SIGKILL);
                self.wait().await;
            }
        }
        // Background jobs the command left running belong to its group: end them too.
        let _ = killpg(self.pgid, Signal::SIGTERM);
        let status = self.status.map(|(s, _)| s);
        let ended = match self.status {
            Some((_, at)) => self.started + at.saturating_duration_since(self.spawned_at),
            None => self.started + self.spawned_at.elapsed(),
        };
        CommandOutcome {
            argv: self.argv,
            exit_code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            started_ms: millis(self.started),
            ended_ms: millis(ended),
            stopped,
        }
    }
}

/// Whether a single-argument command needs a shell: it has spaces or shell syntax.
fn is_shell_line(line: &str) -> bool {
    line.chars()
        .any(|c| c.is_whitespace() || ";&|<>$`'\"()*?~{}[]#=!".contains(c))
}

/// How a process ended, for people: `exit code 3`, `killed by signal 15`.
pub fn describe_exit(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "no exit status".into(),
    }
}

/// Shows a child's output line by line above the progress line, after `prefix`.
async fn forward(stream: impl AsyncRead + Unpin, prefix: &str, progress: Progress) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        progress.line(format!("{prefix} {line}"));
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_lines_are_told_from_programs() {
        assert!(is_shell_line(
            "kubectl rollout restart deploy/x && kubectl rollout status"
        ));
        assert!(is_shell_line("echo $HOME"));
        assert!(!is_shell_line("./rollout.sh"));
        assert!(!is_shell_line("/usr/bin/true"));
    }
}
