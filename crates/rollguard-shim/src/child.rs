//! The app's process: starting it in its own process group, signalling it, and reaping.
//!
//! Waiting is done in one place only: [`reap`] calls `waitpid(-1)` until nothing is left to
//! collect, which also collects orphans re-parented to the shim (as PID 1 or as a child
//! subreaper). Nothing else in the shim waits, and the std `Child` is never waited on.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, IsTerminal};
use std::os::fd::BorrowedFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::errno::Errno;
use nix::sys::prctl;
use nix::sys::signal::{SigHandler, Signal, kill, killpg, signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpgrp, getpid, getppid, tcsetpgrp};

/// How the app ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Killed(Signal),
}

impl Status {
    /// The exit code a shell would report: the code itself, or 128 + the signal number.
    pub fn code(&self) -> u8 {
        let code = match *self {
            Self::Exited(code) => code,
            Self::Killed(signal) => 128 + signal as i32,
        };
        // Exit codes are one byte; the kernel keeps the low 8 bits as well.
        (code & 0xff) as u8
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Exited(code) => write!(f, "exited with code {code}"),
            Self::Killed(signal) => write!(f, "killed by SIG{}", crate::signal::name(signal)),
        }
    }
}

/// The app could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot run `{program}`: {reason}")]
pub struct SpawnError {
    program: String,
    reason: String,
    code: u8,
}

impl SpawnError {
    /// 127 when the command does not exist, 126 when it exists but cannot be run, as shells
    /// and container runtimes report it.
    pub fn code(&self) -> u8 {
        self.code
    }
}

/// The running app: its pid, which is also its process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct App {
    pid: Pid,
}

impl App {
    /// Starts `command` in a process group of its own. When the shim is not PID 1, the app
    /// is SIGKILLed by the kernel if the shim dies, so that it never outlives its supervisor.
    /// When stdin is a terminal, the app's group becomes its foreground group.
    ///
    /// Call from the thread that lives as long as the shim: the kernel ties the parent-death
    /// signal to the thread that forked.
    pub fn spawn(command: &[OsString]) -> Result<App, SpawnError> {
        let Some((program, args)) = command.split_first() else {
            return Err(SpawnError {
                program: String::new(),
                reason: "no command given".to_owned(),
                code: 127,
            });
        };
        let mut cmd = Command::new(program);
        cmd.args(args).process_group(0);
        let shim = getpid();
        let terminal = std::io::stdin().is_terminal();
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // system calls (prctl, getppid, signal, tcsetpgrp, getpgrp); it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                prctl::set_pdeathsig(Signal::SIGKILL)?;
                // The shim may have died before the line above took effect.
                if getppid() != shim {
                    return Err(io::Error::other("the shim exited while starting the app"));
                }
                if terminal {
                    // A background group writing to the terminal's settings gets SIGTTOU.
                    signal(Signal::SIGTTOU, SigHandler::SigIgn)?;
                    // Not fatal: the app then runs as a background job.
                    let _ = tcsetpgrp(BorrowedFd::borrow_raw(0), getpgrp());
                    signal(Signal::SIGTTOU, SigHandler::SigDfl)?;
                }
                Ok(())
            });
        }
        // The reaper collects the app with waitpid(-1); the std handle is never waited on.
        #[allow(clippy::zombie_processes)]
        let child = cmd.spawn().map_err(|err| {
            let code = if err.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            let reason = match err.kind() {
                io::ErrorKind::NotFound => "command not found".to_owned(),
                io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
                _ => err.to_string(),
            };
            SpawnError {
                program: program.to_string_lossy().into_owned(),
                reason,
                code,
            }
        })?;
        let pid = i32::try_from(child.id()).map_err(|_| SpawnError {
            program: program.to_string_lossy().into_owned(),
            reason: format!("pid {} out of range", child.id()),
            code: 126,
        })?;
        Ok(App {
            pid: Pid::from_raw(pid),
        })
    }

    /// The app's pid (and process group id).
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Sends `signal` to the app alone, or to its whole process group.
    pub fn signal(&self, signal: Signal, target: Target) {
        let sent = match target {
            Target::Child => kill(self.pid, signal),
            Target::Group => killpg(self.pid, signal),
        };
        // ESRCH: nobody left to signal, which is not an error here.
        if let Err(err) = sent
            && err != Errno::ESRCH
        {
            tracing::warn!(%err, signal = %crate::signal::name(signal), "cannot signal the app");
        }
    }

    /// Whether any process is left in the app's process group.
    pub fn group_alive(&self) -> bool {
        killpg(self.pid, None::<Signal>) != Err(Errno::ESRCH)
    }
}

/// Where signals for the app go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// The app's whole process group (the app and the children it did not move away).
    #[default]
    Group,
    /// The app's main process only.
    Child,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Group => "group",
            Self::Child => "child",
        })
    }
}

/// Collects every child that has ended, and returns the status of `app` if it was among
/// them. Never blocks.
pub fn reap(app: Pid) -> Option<Status> {
    let mut status = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                if pid == app {
                    status = Some(Status::Exited(code));
                } else {
                    tracing::debug!(%pid, code, "reaped a process");
                }
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) => {
                if pid == app {
                    status = Some(Status::Killed(signal));
                } else {
                    tracing::debug!(%pid, signal = %crate::signal::name(signal), "reaped a process");
                }
            }
            // Nothing has ended (yet).
            Ok(WaitStatus::StillAlive) => return status,
            // Stopped/continued children are not reported without WUNTRACED/WCONTINUED.
            Ok(_) => {}
            Err(Errno::EINTR) => {}
            // ECHILD: no children at all.
            Err(_) => return status,
        }
    }
}

/// Makes the shim the reaper of its orphaned descendants when it is not PID 1 (as PID 1 it
/// already is). Returns whether the shim is PID 1.
pub fn become_reaper() -> bool {
    if getpid() == Pid::from_raw(1) {
        return true;
    }
    if let Err(err) = prctl::set_child_subreaper(true) {
        tracing::warn!(%err, "cannot become a child subreaper; orphans of the app will not be reaped by the shim");
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(Status::Exited(3).code(), 3);
        assert_eq!(Status::Killed(Signal::SIGKILL).code(), 137);
        assert_eq!(Status::Killed(Signal::SIGTERM).code(), 143);
        assert_eq!(Status::Exited(256 + 7).code(), 7);
        assert_eq!(
            Status::Killed(Signal::SIGTERM).to_string(),
            "killed by SIGTERM"
        );
    }
}
