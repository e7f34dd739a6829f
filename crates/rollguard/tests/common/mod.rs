//! Helpers for tests that run the real `rollguard` binary on loopback.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The binary under test.
pub fn rollguard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rollguard"))
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
}

/// Polls `cond` until it holds or `deadline` passes; returns whether it held.
pub fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Every line a process wrote to a pipe so far, read by a thread of its own.
#[derive(Clone, Default)]
pub struct Log {
    lines: Arc<Mutex<Vec<String>>>,
    /// Whether every writer has closed the pipe (all lines are in).
    closed: Arc<AtomicBool>,
}

impl Log {
    /// Starts reading `pipe` line by line into a new log.
    pub fn reading(pipe: impl std::io::Read + Send + 'static) -> Log {
        let log = Log::default();
        let reader = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                reader.lines.lock().expect("log lock").push(line);
            }
            reader.closed.store(true, Ordering::SeqCst);
        });
        log
    }

    /// Whether every writer has closed the pipe.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// The first line containing `needle`.
    pub fn find(&self, needle: &str) -> Option<String> {
        let lines = self.lines.lock().expect("log lock");
        lines.iter().find(|l| l.contains(needle)).cloned()
    }

    /// Whether a line contains `needle`.
    pub fn has(&self, needle: &str) -> bool {
        self.find(needle).is_some()
    }

    /// Waits (at most `deadline`) until every writer has closed the pipe.
    pub fn wait_closed(&self, deadline: Duration) -> bool {
        wait_until(deadline, || self.is_closed())
    }

    /// How many lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        let lines = self.lines.lock().expect("log lock");
        lines.iter().filter(|l| l.contains(needle)).count()
    }

    /// Every line so far.
    pub fn dump(&self) -> String {
        self.lines.lock().expect("log lock").join("\n")
    }

    /// Waits (at most `deadline`) for a line containing `needle` and returns it.
    pub fn wait_for(&self, needle: &str, deadline: Duration) -> String {
        let mut found = None;
        wait_until(deadline, || {
            found = self.find(needle);
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "no log line with {needle:?} within {deadline:?}; log:\n{}",
                self.dump()
            )
        })
    }

    /// [`Log::wait_for`] for async tests: polls without blocking the runtime.
    pub async fn wait_line(&self, needle: &str, deadline: Duration) -> String {
        let end = Instant::now() + deadline;
        loop {
            if let Some(line) = self.find(needle) {
                return line;
            }
            assert!(
                Instant::now() < end,
                "no log line with {needle:?} within {deadline:?}; log:\n{}",
                self.dump()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Starts `cmd` without colours, with stdin and stdout closed and stderr piped: the
/// process (killed when dropped) and its stderr.
pub fn spawn_piped(cmd: &mut Command) -> (Proc, std::process::ChildStderr) {
    let mut child = cmd
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    let pipe = child.stderr.take().expect("stderr is piped");
    (Proc { child }, pipe)
}

/// A child process that is killed (SIGKILL, by its pid) and reaped when dropped.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("signal the child");
    }

    /// Waits for the process to exit, at most `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_until(deadline, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `rollguard demo-app --listen ADDR ARGS...` and waits until it accepts connections.
pub fn demo_app(addr: SocketAddr, args: &[&str]) -> Proc {
    let child = rollguard()
        .args(["demo-app", "--listen", &addr.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo-app");
    let proc = Proc { child };
    assert!(
        wait_until(Duration::from_secs(15), || TcpStream::connect(addr).is_ok()),
        "demo-app did not listen on {addr}"
    );
    proc
}

/// A scratch directory removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rollguard-test-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Self(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Parses the JSON report written by `measure --json PATH`.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("read the JSON report");
    serde_json::from_str(&text).expect("valid JSON report")
}

/// Exit code and stderr of a finished run, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A process as `/proc/PID/stat` describes it.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub pid: i32,
    /// `R`, `S`, `Z`, ...
    pub state: char,
    pub ppid: i32,
    /// The process group.
    pub pgrp: i32,
}

/// The process `pid`, if it exists (even as a zombie).
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised command name: state, parent pid, process group.
    let mut fields = text.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        state,
        ppid,
        pgrp,
    })
}

/// The pid of every process on the machine (zombies included).
pub fn pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// A running (not zombie) process and its command line.
pub struct LiveProcess {
    pub pid: u32,
    pub ppid: u32,
    pub cmdline: String,
}

/// Every running process on the machine.
pub fn live_processes() -> Vec<LiveProcess> {
    pids()
        .into_iter()
        .filter_map(proc_stat)
        .filter(|s| s.state != 'Z')
        .filter_map(|s| {
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", s.pid)).ok()?;
            Some(LiveProcess {
                pid: u32::try_from(s.pid).ok()?,
                ppid: u32::try_from(s.ppid).ok()?,
                cmdline: String::from_utf8_lossy(&cmdline).replace('\0', " "),
            })
        })
        .collect()
}
