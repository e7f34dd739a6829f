//! `rollguard shim --no-proxy` as a process supervisor, with real processes and signals:
//! signal forwarding (to the app's group or its process only, rewritten or not, before and
//! after the stop signal), reaping of orphaned grandchildren, exit codes (the app's,
//! 128+N, 126, 127), the SIGKILL escalation, the cleanup of the app's process group when
//! the app exits first, the second-signal fast path, bad flags, and `rollguard sleep`.
//! The last two tests show bugs found along the way (the shim panics when its stderr is a
//! closed pipe, or on a huge --stop-timeout/--drain-delay); they fail until those are fixed.
//!
//! Most behaviours run twice: with the shim as PID 1 of a new PID namespace (`unshare
//! --pid --fork --mount-proc`), and with the shim as a child subreaper of the test. Where
//! `unshare` is refused, the PID-namespace tests run as a subreaper too, and say why.
//!
//! The apps are `sh -c` scripts that take a scratch directory as `$1`. They log what they
//! see (`app USR1`, `helper ready`...) to `$1/log` from signal traps, and run `$1/sleep`, a
//! symlink to `sleep`, so that every process a test starts names the scratch directory on
//! its command line. That is how a test finds its processes in `/proc`, checks that none is
//! left once the shim has exited, and SIGKILLs every one of them when it ends, failed or
//! not (killing the shim, PID 1 of its namespace, kills the whole namespace).
//!
//! Nothing waits on a fixed sleep: every wait is for a condition under a generous deadline.
//! Where a test checks that something did *not* happen, it first waits for a later probe
//! signal to be handled: `sh` runs pending traps in signal-number order, so the probe's
//! trap runs after any earlier signal's.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{
    Log, Proc, ProcStat, Scratch, live_processes, pids, proc_stat, rollguard, spawn_piped,
    wait_until,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long any awaited condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_rollguard");

/// How the PID-namespace mode starts the shim: PID 1 of a new PID namespace, with a `/proc`
/// of its own (the test keeps the host's), and SIGKILLed if `unshare` dies.
const UNSHARE: [&str; 4] = ["--pid", "--fork", "--mount-proc", "--kill-child"];

/// Keeps a script running until a signal ends it; traps run as soon as a signal arrives
/// (`wait` returns early for a trapped signal, a foreground command would not).
const KEEP_RUNNING: &str = r#"while :; do "$1/sleep" 1 & wait $!; done"#;

/// The signals the shim forwards as they come.
const FORWARDED: [&str; 8] = [
    "HUP", "QUIT", "USR1", "USR2", "WINCH", "CONT", "ALRM", "PWR",
];

// ---------------------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------------------

/// How the shim runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// PID 1 of a new PID namespace, under `unshare`.
    PidNamespace,
    /// A child of the test, which makes itself a child subreaper.
    Subreaper,
}

impl Mode {
    /// PID-namespace mode, or subreaper mode (saying why) where `unshare` is refused.
    fn pid_namespace() -> Mode {
        static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
        match PROBE.get_or_init(probe_pid_namespace) {
            Ok(()) => Mode::PidNamespace,
            Err(why) => {
                eprintln!(
                    "cannot start a PID namespace ({why}); running this test with the shim \
                     as a subreaper instead"
                );
                Mode::Subreaper
            }
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Mode::PidNamespace => "pidns",
            Mode::Subreaper => "subreaper",
        }
    }
}

/// Whether `unshare --pid --fork --mount-proc --kill-child true` works here.
fn probe_pid_namespace() -> Result<(), String> {
    let out = Command::new("unshare")
        .args(UNSHARE)
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run `unshare`: {err}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`unshare {} true` failed with {}: {}",
            UNSHARE.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Defines `mod NAME { fn pid_namespace(); fn subreaper(); }`, two tests that call
/// `NAME(Mode)`.
macro_rules! in_both_modes {
    ($(#[doc = $doc:literal])+ fn $name:ident;) => {
        mod $name {
            #[doc = concat!($($doc,)+ " (As PID 1 of a PID namespace.)")]
            #[test]
            fn pid_namespace() {
                super::$name(super::Mode::pid_namespace());
            }

            #[doc = concat!($($doc,)+ " (As a child subreaper.)")]
            #[test]
            fn subreaper() {
                super::$name(super::Mode::Subreaper);
            }
        }
    };
}

// ---------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------

/// Every process (zombies included) whose parent is `parent`.
fn children_of(parent: i32) -> Vec<ProcStat> {
    pids()
        .into_iter()
        .filter_map(proc_stat)
        .filter(|s| s.ppid == parent)
        .collect()
}

/// The command-line arguments of `pid` (none for a zombie or a gone process).
fn args_of(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Running processes with `dir`, or a path in it, as an argument: `(pid, command line)`.
fn processes_in(dir: &str) -> Vec<(u32, String)> {
    let inside = format!("{dir}/");
    live_processes()
        .into_iter()
        .filter(|p| p.pid != std::process::id())
        .filter(|p| {
            p.cmdline
                .split(' ')
                .any(|arg| arg == dir || arg.starts_with(&inside))
        })
        .map(|p| (p.pid, p.cmdline))
        .collect()
}

/// The first process whose arguments start with `prefix`.
fn find_process(prefix: &[&str]) -> Option<i32> {
    pids().into_iter().find(|&pid| {
        let args = args_of(pid);
        args.len() >= prefix.len() && args.iter().zip(prefix).all(|(a, p)| a == p)
    })
}

// ---------------------------------------------------------------------------------------
// A test's scratch directory and the shim
// ---------------------------------------------------------------------------------------

/// A scratch directory for one test, with `sleep` and `orphan` (symlinks to `sleep`) and
/// the `log` the apps write to.
struct Case {
    scratch: Scratch,
    dir: String,
}

impl Case {
    fn new(name: &str, mode: Mode) -> Case {
        let scratch = Scratch::new(&format!("supervise-{name}-{}", mode.tag()));
        let log = scratch.path("log");
        let dir = log
            .parent()
            .and_then(Path::to_str)
            .expect("the scratch directory is a UTF-8 path")
            .to_owned();
        let sleep = which("sleep");
        for name in ["sleep", "orphan"] {
            std::os::unix::fs::symlink(&sleep, scratch.path(name))
                .expect("symlink sleep into the scratch directory");
        }
        std::fs::write(&log, "").expect("create the log");
        Case { scratch, dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.scratch.path(file)
    }

    /// Writes `text` to `file` in the scratch directory.
    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.path(file), text).expect("write a scratch file");
    }

    /// The lines the apps have logged so far.
    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// How many times the apps have logged `line`.
    fn count(&self, line: &str) -> usize {
        self.log().iter().filter(|l| *l == line).count()
    }

    /// Waits until the apps have logged `line` at least `times` times.
    fn wait_count(&self, shim: &Shim, line: &str, times: usize) {
        assert!(
            wait_until(DEADLINE, || self.count(line) >= times),
            "{:?}: the app did not log {line:?} {times} time(s) within {DEADLINE:?}; app log:\n{}\nshim log:\n{}",
            shim.mode,
            self.log().join("\n"),
            shim.log.dump()
        );
    }

    /// Waits until the apps have logged `line`.
    fn wait_log(&self, shim: &Shim, line: &str) {
        self.wait_count(shim, line, 1);
    }

    /// Starts `rollguard shim --no-proxy FLAGS -- sh -c SCRIPT app DIR`.
    fn shim(&self, mode: Mode, flags: &[&str], script: &str) -> Shim {
        Shim::start(
            mode,
            &self.dir,
            flags,
            &["sh", "-c", script, "app", &self.dir],
        )
    }
}

/// Where `program` is on the `PATH`.
fn which(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("`{program}` is not on the PATH"))
}

/// Trap lines that log `WHO SIGNAL` to `$1/log` for each of `signals`.
fn log_traps(who: &str, signals: &[&str]) -> String {
    signals
        .iter()
        .map(|sig| format!("trap 'echo \"{who} {sig}\" >> \"$1/log\"' {sig}\n"))
        .collect()
}

/// A running `rollguard shim` (under `unshare` in PID-namespace mode). When dropped, every
/// process naming the test's scratch directory is SIGKILLed (the shim and `unshare`
/// included), and the shim or `unshare` is reaped.
struct Shim {
    mode: Mode,
    /// `rollguard shim`, or `unshare` in PID-namespace mode.
    proc: Proc,
    /// The shim's pid as the test sees it, once known.
    pid: Option<i32>,
    log: Log,
    dir: String,
}

impl Shim {
    /// Starts `rollguard shim --no-proxy FLAGS -- COMMAND`; its processes must all name
    /// `dir` on their command line.
    fn start(mode: Mode, dir: &str, flags: &[&str], command: &[&str]) -> Shim {
        Shim::start_logging(mode, dir, flags, command, true)
    }

    /// [`Shim::start`], with the read end of the shim's stderr closed at once unless
    /// `read_stderr` (the log is then empty).
    fn start_logging(
        mode: Mode,
        dir: &str,
        flags: &[&str],
        command: &[&str],
        read_stderr: bool,
    ) -> Shim {
        let mut cmd = match mode {
            Mode::PidNamespace => {
                let mut cmd = Command::new("unshare");
                cmd.args(UNSHARE).arg(BIN);
                cmd
            }
            Mode::Subreaper => Command::new(BIN),
        };
        let (proc, pipe) = spawn_piped(
            cmd.args(["shim", "--no-proxy"])
                .args(flags)
                .arg("--")
                .args(command)
                .env("RUST_LOG", "info,rollguard_shim=debug"),
        );
        let pid = match mode {
            Mode::Subreaper => Some(proc.pid().as_raw()),
            Mode::PidNamespace => None,
        };
        let log = if read_stderr {
            Log::reading(pipe)
        } else {
            drop(pipe);
            Log::default()
        };
        Shim {
            mode,
            proc,
            pid,
            log,
            dir: dir.to_owned(),
        }
    }

    /// Whether the shim (or `unshare`) has exited, and how.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.proc.child.try_wait().expect("look at the shim")
    }

    /// Waits until the app has logged `line`; `Err` with the shim's exit status if the shim
    /// exits first.
    fn wait_app_or_exit(&mut self, case: &Case, line: &str) -> Result<(), ExitStatus> {
        let mut status = None;
        let logged = wait_until(DEADLINE, || {
            if case.count(line) > 0 {
                return true;
            }
            status = self.exited();
            status.is_some()
        });
        match status {
            Some(status) if case.count(line) == 0 => Err(status),
            _ => {
                assert!(
                    logged,
                    "{:?}: the app did not log {line:?} within {DEADLINE:?}; app log:\n{}\nshim log:\n{}",
                    self.mode,
                    case.log().join("\n"),
                    self.log.dump()
                );
                Ok(())
            }
        }
    }

    /// The shim's pid as the test sees it (in PID-namespace mode: the child of `unshare`
    /// once it runs the shim).
    fn pid(&mut self) -> i32 {
        match self.try_pid() {
            Ok(pid) => pid,
            Err(status) => panic!(
                "{:?}: the shim is gone (`unshare` exited with {status}); log:\n{}",
                self.mode,
                self.log.dump()
            ),
        }
    }

    /// [`Shim::pid`], or how `unshare` exited if it did before the shim could be seen.
    fn try_pid(&mut self) -> Result<i32, ExitStatus> {
        if let Some(pid) = self.pid {
            return Ok(pid);
        }
        let unshare = self.proc.pid().as_raw();
        let mut found = None;
        let mut exited = None;
        let seen = wait_until(DEADLINE, || {
            found = children_of(unshare)
                .into_iter()
                .map(|s| s.pid)
                .find(|&pid| {
                    let args = args_of(pid);
                    args.len() >= 2 && args[0] == BIN && args[1] == "shim"
                });
            if found.is_none() {
                exited = self.exited();
            }
            found.is_some() || exited.is_some()
        });
        assert!(
            seen,
            "no shim under unshare (pid {unshare}) within {DEADLINE:?}; log:\n{}",
            self.log.dump()
        );
        match (found, exited) {
            (Some(pid), _) => {
                self.pid = Some(pid);
                Ok(pid)
            }
            (None, Some(status)) => Err(status),
            (None, None) => unreachable!("checked by the assertion above"),
        }
    }

    /// Sends `signal` to the shim.
    fn signal(&mut self, signal: Signal) {
        let pid = self.pid();
        kill(Pid::from_raw(pid), signal).expect("signal the shim");
    }

    /// Sends `signal` to the shim; `Err` with its exit status if it has exited.
    fn try_signal(&mut self, signal: Signal) -> Result<(), ExitStatus> {
        if let Some(status) = self.exited() {
            return Err(status);
        }
        let pid = self.try_pid()?;
        // The shim may exit meanwhile; in subreaper mode it stays a zombie until reaped.
        if kill(Pid::from_raw(pid), signal).is_err() {
            return Err(self.wait_exit());
        }
        Ok(())
    }

    /// Waits until the shim has started the app, so that its signal handlers are in place
    /// (as PID 1 it would drop signals without one).
    fn wait_started(&self) {
        self.log.wait_for("INFO rollguard_shim: started ", DEADLINE);
    }

    /// Waits for the shim to exit and returns how.
    fn wait_exit(&mut self) -> ExitStatus {
        match self.proc.wait_exit(DEADLINE) {
            Some(status) => status,
            None => panic!(
                "{:?}: the shim still runs {DEADLINE:?} later; log:\n{}",
                self.mode,
                self.log.dump()
            ),
        }
    }

    /// Waits for the shim to exit, checks its code, and that no process it ran is left.
    fn expect_exit(&mut self, code: i32) {
        let status = self.wait_exit();
        assert_eq!(
            status.code(),
            Some(code),
            "{:?}: shim {status:?}; log:\n{}",
            self.mode,
            self.log.dump()
        );
        self.assert_no_leftovers();
    }

    /// Checks that no process of the test is running (called once the shim has exited).
    fn assert_no_leftovers(&self) {
        let left = processes_in(&self.dir);
        assert!(
            left.is_empty(),
            "{:?}: processes left once the shim exited: {left:?}; log:\n{}",
            self.mode,
            self.log.dump()
        );
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        // Kill until nothing is left: a shell may fork between two sweeps.
        wait_until(DEADLINE, || {
            let left = processes_in(&self.dir);
            for (pid, _) in &left {
                if let Ok(pid) = i32::try_from(*pid) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            left.is_empty()
        });
        // `proc` is dropped next: SIGKILLed if need be, and reaped.
    }
}

/// Runs `rollguard ARGS` to its end (at most [`DEADLINE`]); its exit code and stderr.
fn run_rollguard(args: &[&str]) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let mut child = rollguard()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rollguard");
    let log = Log::reading(child.stderr.take().expect("stderr is piped"));
    let mut proc = Proc { child };
    let Some(status) = proc.wait_exit(DEADLINE) else {
        panic!(
            "`rollguard {}` still runs {DEADLINE:?} later; stderr:\n{}",
            args.join(" "),
            log.dump()
        );
    };
    let took = started.elapsed();
    log.wait_closed(DEADLINE);
    (status.code(), log.dump(), took)
}

// ---------------------------------------------------------------------------------------
// Signal forwarding
// ---------------------------------------------------------------------------------------

/// A helper script for `$1/helper.sh`: a grandchild of the shim, in the app's process
/// group, that logs `helper SIG` for the signals that would kill it otherwise.
fn helper_script() -> String {
    format!(
        "{}echo \"helper ready\" >> \"$1/log\"\n{KEEP_RUNNING}\n",
        log_traps("helper", &["HUP", "USR1", "USR2", "ALRM", "PWR"])
    )
}

/// An app that logs every forwarded signal, starts `helper.sh` in its process group, and
/// exits 42 on TERM.
fn logging_app() -> String {
    format!(
        "{}trap 'echo \"app TERM\" >> \"$1/log\"; exit 42' TERM\n\
         sh \"$1/helper.sh\" \"$1\" &\n\
         echo \"app ready\" >> \"$1/log\"\n\
         {KEEP_RUNNING}\n",
        log_traps("app", &FORWARDED)
    )
}

/// Starts the logging app and its helper under the shim and waits until both trap signals.
fn start_logging_app(case: &Case, mode: Mode, flags: &[&str]) -> Shim {
    case.write("helper.sh", &helper_script());
    let shim = case.shim(mode, flags, &logging_app());
    shim.wait_started();
    case.wait_log(&shim, "app ready");
    case.wait_log(&shim, "helper ready");
    shim
}

in_both_modes! {
    /// Every forwarded signal reaches the app, and its process group; TERM stops it.
    fn forwards_signals;
}

fn forwards_signals(mode: Mode) {
    let case = Case::new("forward", mode);
    let mut shim = start_logging_app(&case, mode, &["--drain-delay", "0"]);
    for name in FORWARDED {
        let signal: Signal = format!("SIG{name}").parse().expect("a signal name");
        shim.signal(signal);
        case.wait_log(&shim, &format!("app {name}"));
        shim.log.wait_for(
            &format!("SIG{name} received: forwarding SIG{name} to the app's group"),
            DEADLINE,
        );
    }
    // The default target is the group: the helper got those that it traps.
    for name in ["HUP", "USR1", "USR2", "ALRM", "PWR"] {
        case.wait_log(&shim, &format!("helper {name}"));
    }
    assert_eq!(case.count("app TERM"), 0, "{:?}", case.log());
    shim.signal(Signal::SIGTERM);
    case.wait_log(&shim, "app TERM");
    shim.expect_exit(42);
}

in_both_modes! {
    /// With `--signal-target child` a forwarded signal reaches the app but not its group.
    fn signal_target_child;
}

fn signal_target_child(mode: Mode) {
    let case = Case::new("target-child", mode);
    let mut shim = start_logging_app(
        &case,
        mode,
        &["--drain-delay", "0", "--signal-target", "child"],
    );
    shim.signal(Signal::SIGUSR1);
    case.wait_log(&shim, "app USR1");
    // Probe: ALRM, sent to the helper directly, is handled after any earlier USR1.
    let helper_sh = format!("{}/helper.sh", case.dir);
    let helper = find_process(&["sh", &helper_sh]).expect("the helper runs");
    kill(Pid::from_raw(helper), Signal::SIGALRM).expect("signal the helper");
    case.wait_log(&shim, "helper ALRM");
    assert_eq!(
        case.count("helper USR1"),
        0,
        "{mode:?}: USR1 reached the app's group with --signal-target child: {:?}",
        case.log()
    );
    shim.log.wait_for(
        "SIGUSR1 received: forwarding SIGUSR1 to the app's child",
        DEADLINE,
    );
    // The stop signal goes to the app only; the shim then stops the rest of the group.
    shim.signal(Signal::SIGTERM);
    case.wait_log(&shim, "app TERM");
    shim.expect_exit(42);
}

in_both_modes! {
    /// `--rewrite` (repeated) makes the shim forward TO, and only TO, for FROM.
    fn rewrite_forwarded_signals;
}

fn rewrite_forwarded_signals(mode: Mode) {
    let case = Case::new("rewrite", mode);
    let flags = [
        "--drain-delay",
        "0",
        "--rewrite",
        "USR1:USR2",
        "--rewrite",
        "SIGHUP:30",
    ];
    let mut shim = start_logging_app(&case, mode, &flags);
    shim.signal(Signal::SIGUSR1);
    case.wait_log(&shim, "app USR2");
    case.wait_log(&shim, "helper USR2");
    shim.signal(Signal::SIGHUP);
    case.wait_log(&shim, "app PWR");
    case.wait_log(&shim, "helper PWR");
    // Probe: WINCH (28) is handled after any USR1 (10) or HUP (1) sent before it.
    shim.signal(Signal::SIGWINCH);
    case.wait_log(&shim, "app WINCH");
    for unwanted in ["app USR1", "helper USR1", "app HUP", "helper HUP"] {
        assert_eq!(
            case.count(unwanted),
            0,
            "{mode:?}: {unwanted} despite the rewrite: {:?}",
            case.log()
        );
    }
    shim.log.wait_for(
        "SIGUSR1 received: forwarding SIGUSR2 to the app's group",
        DEADLINE,
    );
    shim.log.wait_for(
        "SIGHUP received: forwarding SIGPWR to the app's group",
        DEADLINE,
    );
    shim.signal(Signal::SIGTERM);
    case.wait_log(&shim, "app TERM");
    shim.expect_exit(42);
}

in_both_modes! {
    /// After SIGTERM the shim waits --drain-delay, then sends --stop-signal (not TERM).
    fn stop_signal_after_the_drain_delay;
}

fn stop_signal_after_the_drain_delay(mode: Mode) {
    let case = Case::new("stop-signal", mode);
    let script = format!(
        "{}trap 'echo \"app INT\" >> \"$1/log\"; exit 9' INT\n\
         echo \"app ready\" >> \"$1/log\"\n\
         {KEEP_RUNNING}\n",
        log_traps("app", &["HUP", "WINCH", "TERM"])
    );
    let delay = Duration::from_millis(700);
    let flags = ["--drain-delay", "700ms", "--stop-signal", "hup"];
    let mut shim = case.shim(mode, &flags, &script);
    shim.wait_started();
    case.wait_log(&shim, "app ready");
    let sent = Instant::now();
    shim.signal(Signal::SIGTERM);
    case.wait_log(&shim, "app HUP");
    assert!(
        sent.elapsed() >= delay,
        "{mode:?}: the stop signal came {:?} after SIGTERM, before the drain delay; log:\n{}",
        sent.elapsed(),
        shim.log.dump()
    );
    // Probe: WINCH (28), forwarded after the stop signal, is handled after any TERM (15).
    shim.signal(Signal::SIGWINCH);
    case.wait_log(&shim, "app WINCH");
    assert_eq!(
        case.count("app TERM"),
        0,
        "{mode:?}: the app got TERM with --stop-signal HUP: {:?}",
        case.log()
    );
    shim.signal(Signal::SIGINT);
    shim.expect_exit(9);
}

in_both_modes! {
    /// The stop signal is rewritten; TERM and INT after it are forwarded (rewritten).
    fn signals_after_the_stop_signal_are_forwarded;
}

fn signals_after_the_stop_signal_are_forwarded(mode: Mode) {
    let case = Case::new("after-stop", mode);
    let script = format!(
        "{}trap 'echo \"app INT\" >> \"$1/log\"; exit 5' INT\n\
         echo \"app ready\" >> \"$1/log\"\n\
         {KEEP_RUNNING}\n",
        log_traps("app", &["USR1", "WINCH", "TERM"])
    );
    let flags = [
        "--drain-delay",
        "0",
        "--stop-timeout",
        "60s",
        "--rewrite",
        "TERM:USR1",
    ];
    let mut shim = case.shim(mode, &flags, &script);
    shim.wait_started();
    case.wait_log(&shim, "app ready");
    let started = Instant::now();
    // The stop signal TERM goes out as USR1.
    shim.signal(Signal::SIGTERM);
    case.wait_log(&shim, "app USR1");
    shim.log
        .wait_for("sending SIGUSR1 to the app's group", DEADLINE);
    // Forwarded after the stop signal; also a probe: WINCH (28) comes after TERM (15).
    shim.signal(Signal::SIGWINCH);
    case.wait_log(&shim, "app WINCH");
    assert_eq!(case.count("app TERM"), 0, "{mode:?}: {:?}", case.log());
    // A second TERM, after the stop signal, is forwarded: rewritten to USR1.
    shim.signal(Signal::SIGTERM);
    case.wait_count(&shim, "app USR1", 2);
    // INT is forwarded too; the app exits on it.
    shim.signal(Signal::SIGINT);
    case.wait_log(&shim, "app INT");
    shim.expect_exit(5);
    assert_eq!(case.count("app TERM"), 0, "{mode:?}: {:?}", case.log());
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "{mode:?}: the shim waited for its stop timeout"
    );
}

// ---------------------------------------------------------------------------------------
// Reaping
// ---------------------------------------------------------------------------------------

in_both_modes! {
    /// Orphaned grandchildren are re-parented to the shim, which reaps them when they die.
    fn reaps_orphans;
}

fn reaps_orphans(mode: Mode) {
    const ORPHANS: usize = 5;
    let case = Case::new("orphans", mode);
    // The subshell starts the orphans and exits at once; the app then runs on.
    let script = format!(
        "( for i in {}; do \"$1/orphan\" 600 & done )\n\
         echo \"app ready\" >> \"$1/log\"\n\
         exec \"$1/sleep\" 600\n",
        (1..=ORPHANS)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut shim = case.shim(mode, &["--drain-delay", "0"], &script);
    shim.wait_started();
    case.wait_log(&shim, "app ready");
    let shim_pid = shim.pid();
    let orphan = format!("{}/orphan", case.dir);
    let mut orphans = Vec::new();
    let adopted = wait_until(DEADLINE, || {
        orphans = children_of(shim_pid)
            .into_iter()
            .filter(|s| args_of(s.pid).first() == Some(&orphan))
            .collect();
        orphans.len() == ORPHANS
    });
    assert!(
        adopted,
        "{mode:?}: {} of {ORPHANS} orphans re-parented to the shim (pid {shim_pid}) within \
         {DEADLINE:?}; its children: {:?}; log:\n{}",
        orphans.len(),
        children_of(shim_pid),
        shim.log.dump()
    );
    let app = children_of(shim_pid)
        .into_iter()
        .find(|s| s.pid == s.pgrp)
        .expect("the app is the shim's child, leading its process group");
    assert!(
        orphans.iter().all(|s| s.pgrp == app.pid),
        "{mode:?}: the orphans left the app's process group: {orphans:?}"
    );
    // Without reaping, each would stay a zombie child of the shim.
    for s in &orphans {
        kill(Pid::from_raw(s.pid), Signal::SIGKILL).expect("kill an orphan");
    }
    let mut unreaped = Vec::new();
    let reaped = wait_until(DEADLINE, || {
        unreaped = orphans
            .iter()
            .filter_map(|s| proc_stat(s.pid))
            .filter(|s| s.ppid == shim_pid)
            .collect();
        unreaped.is_empty()
    });
    assert!(
        reaped,
        "{mode:?}: orphans not reaped by the shim within {DEADLINE:?}: {unreaped:?}; log:\n{}",
        shim.log.dump()
    );
    assert!(
        proc_stat(app.pid).is_some_and(|s| s.state != 'Z'),
        "{mode:?}: the app should still run"
    );
    shim.signal(Signal::SIGTERM);
    shim.expect_exit(128 + Signal::SIGTERM as i32);
}

// ---------------------------------------------------------------------------------------
// Exit codes
// ---------------------------------------------------------------------------------------

in_both_modes! {
    /// The shim exits with the app's code, 128+N for signal N, 127 and 126 when CMD can't run.
    fn exit_codes;
}

fn exit_codes(mode: Mode) {
    let case = Case::new("exit-codes", mode);
    let dir = case.dir.as_str();
    for (script, code) in [
        ("exit 0", 0),
        ("exit 7", 7),
        ("kill -USR2 $$", 128 + Signal::SIGUSR2 as i32),
        ("kill -KILL $$", 128 + Signal::SIGKILL as i32),
    ] {
        let mut shim = Shim::start(mode, dir, &[], &["sh", "-c", script, "app", dir]);
        let status = shim.wait_exit();
        assert_eq!(
            status.code(),
            Some(code),
            "{mode:?}: `sh -c {script:?}`: {status:?}; log:\n{}",
            shim.log.dump()
        );
    }
    let missing = format!("{dir}/no-such-command");
    let not_executable = format!("{dir}/not-executable");
    case.write("not-executable", "#!/bin/sh\nexit 0\n");
    for (command, code, message) in [
        (
            &missing,
            127,
            format!("cannot run `{missing}`: command not found"),
        ),
        (
            &not_executable,
            126,
            format!("cannot run `{not_executable}`: permission denied"),
        ),
        (
            &case.dir,
            126,
            format!("cannot run `{dir}`: permission denied"),
        ),
    ] {
        let mut shim = Shim::start(mode, dir, &[], &[command.as_str(), "arg"]);
        let status = shim.wait_exit();
        let log = shim.log.clone();
        log.wait_closed(DEADLINE);
        assert!(
            status.code() == Some(code) && log.has(&message),
            "{mode:?}: `{command}`: want exit {code} and {message:?}, got {status:?}; log:\n{}",
            log.dump()
        );
        assert!(!log.has("panicked"), "{mode:?}: {}", log.dump());
    }
}

// ---------------------------------------------------------------------------------------
// Stopping
// ---------------------------------------------------------------------------------------

in_both_modes! {
    /// A `sh -c` app that ignores TERM gets SIGKILL after --stop-timeout: exit 137.
    fn sigkill_escalation;
}

fn sigkill_escalation(mode: Mode) {
    let case = Case::new("escalation", mode);
    let script = format!("trap '' TERM\necho \"app ready\" >> \"$1/log\"\n{KEEP_RUNNING}\n");
    let flags = ["--drain-delay", "0", "--stop-timeout", "500ms"];
    let mut shim = case.shim(mode, &flags, &script);
    shim.wait_started();
    case.wait_log(&shim, "app ready");
    let sent = Instant::now();
    shim.signal(Signal::SIGTERM);
    shim.expect_exit(128 + Signal::SIGKILL as i32);
    assert!(
        sent.elapsed() >= Duration::from_millis(500),
        "{mode:?}: killed before the stop timeout ({:?}); log:\n{}",
        sent.elapsed(),
        shim.log.dump()
    );
    assert!(
        shim.log.has("phase=\"kill\""),
        "{mode:?}: no kill phase; log:\n{}",
        shim.log.dump()
    );
}

in_both_modes! {
    /// When the app exits first, the rest of its group gets TERM and the shim exits after it.
    fn group_is_stopped_when_the_app_exits;
}

fn group_is_stopped_when_the_app_exits(mode: Mode) {
    let case = Case::new("group-term", mode);
    case.write(
        "survivor.sh",
        &format!(
            "trap 'echo \"survivor TERM\" >> \"$1/log\"; exit 0' TERM\n\
             echo \"survivor ready\" >> \"$1/log\"\n\
             {KEEP_RUNNING}\n"
        ),
    );
    // The app exits once the survivor's trap is set.
    let script = "sh \"$1/survivor.sh\" \"$1\" &\n\
                  until grep -q 'survivor ready' \"$1/log\"; do \"$1/sleep\" 0.01; done\n\
                  exit 3\n";
    let mut shim = case.shim(mode, &[], script);
    shim.expect_exit(3);
    // The survivor got TERM from the shim (a namespace's end would SIGKILL it).
    assert_eq!(
        case.count("survivor TERM"),
        1,
        "{mode:?}: {:?}; log:\n{}",
        case.log(),
        shim.log.dump()
    );
    assert!(
        shim.log.has("process group still has members"),
        "{mode:?}: {}",
        shim.log.dump()
    );
}

in_both_modes! {
    /// Group members left by the app that ignore TERM get SIGKILL after --stop-timeout.
    fn group_members_ignoring_term_are_killed;
}

fn group_members_ignoring_term_are_killed(mode: Mode) {
    let case = Case::new("group-kill", mode);
    let script = "trap '' TERM\n\"$1/sleep\" 600 &\nexit 3\n";
    let mut shim = case.shim(mode, &["--stop-timeout", "500ms"], script);
    let started = Instant::now();
    shim.expect_exit(3);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{mode:?}: exited before the stop timeout; log:\n{}",
        shim.log.dump()
    );
    assert!(
        shim.log.has("outlived the stop timeout: sending SIGKILL"),
        "{mode:?}: {}",
        shim.log.dump()
    );
}

in_both_modes! {
    /// A second TERM, or INT, during a 60 s drain delay sends the stop signal at once.
    fn second_signal_skips_the_delay;
}

fn second_signal_skips_the_delay(mode: Mode) {
    for second in [Signal::SIGTERM, Signal::SIGINT] {
        let case = Case::new(&format!("fast-{}", second.as_str()), mode);
        let script = format!(
            "trap 'echo \"app TERM\" >> \"$1/log\"; exit 42' TERM\n\
             echo \"app ready\" >> \"$1/log\"\n\
             {KEEP_RUNNING}\n"
        );
        let flags = ["--drain-delay", "60s", "--grace-period", "120s"];
        let mut shim = case.shim(mode, &flags, &script);
        shim.wait_started();
        case.wait_log(&shim, "app ready");
        let first = Instant::now();
        shim.signal(Signal::SIGTERM);
        shim.log.wait_for("phase=\"propagation\"", DEADLINE);
        assert_eq!(
            case.count("app TERM"),
            0,
            "{mode:?}: the app was stopped before the drain delay"
        );
        shim.signal(second);
        case.wait_log(&shim, "app TERM");
        shim.expect_exit(42);
        assert!(
            first.elapsed() < Duration::from_secs(20),
            "{mode:?}: {second} took {:?}",
            first.elapsed()
        );
        assert!(
            shim.log.has("received: skipping to the stop"),
            "{mode:?}: {}",
            shim.log.dump()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------

/// Bad `rollguard shim` flags exit 2 with a message naming the flag or the value.
#[test]
fn bad_flags_exit_2() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["--", "true"], &["--no-proxy", "--listen"]),
        (
            &["--no-proxy", "--stop-signal", "NOPE", "--", "true"],
            &["--stop-signal", "NOPE"],
        ),
        (
            &["--no-proxy", "--stop-signal", "99", "--", "true"],
            &["--stop-signal", "99"],
        ),
        (
            &["--no-proxy", "--rewrite", "USR1", "--", "true"],
            &["--rewrite", "USR1", "FROM:TO"],
        ),
        (
            &["--no-proxy", "--rewrite", "USR1:NOPE", "--", "true"],
            &["--rewrite", "NOPE"],
        ),
        (
            &["--no-proxy", "--stop-timeout", "5parsecs", "--", "true"],
            &["--stop-timeout", "5parsecs"],
        ),
        (
            &["--no-proxy", "--drain-delay", "soon", "--", "true"],
            &["--drain-delay", "soon"],
        ),
        (
            &["--no-proxy", "--drain-delay", "1s..5s", "--", "true"],
            &["--drain-delay", "adaptive", "--no-proxy"],
        ),
        (
            &["--no-proxy", "--signal-target", "sideways", "--", "true"],
            &["--signal-target", "sideways"],
        ),
        (&["--no-proxy"], &["--no-proxy", "CMD"]),
        (&["--no-proxy", "--"], &["--no-proxy", "CMD"]),
        (
            &["--no-proxy", "--listen", "127.0.0.1:0", "--", "true"],
            &["--no-proxy", "--listen"],
        ),
    ];
    for (flags, needles) in cases {
        let args: Vec<&str> = std::iter::once("shim")
            .chain(flags.iter().copied())
            .collect();
        let (code, stderr, _) = run_rollguard(&args);
        let line = format!("rollguard {}", args.join(" "));
        assert_eq!(code, Some(2), "`{line}`: stderr:\n{stderr}");
        assert!(!stderr.contains("panicked"), "`{line}` panicked:\n{stderr}");
        for needle in *needles {
            assert!(
                stderr.contains(needle),
                "`{line}`: no {needle:?} in the message:\n{stderr}"
            );
        }
    }
}

/// `rollguard sleep` sleeps for a duration or plain seconds, and rejects bad input with 2.
#[test]
fn sleep_good_and_bad() {
    for (arg, at_least) in [
        ("200ms", Duration::from_millis(200)),
        ("0.2", Duration::from_millis(200)),
        ("1s", Duration::from_secs(1)),
        ("0", Duration::ZERO),
    ] {
        let (code, stderr, took) = run_rollguard(&["sleep", arg]);
        assert_eq!(code, Some(0), "`rollguard sleep {arg}`: {stderr}");
        assert!(took >= at_least, "`rollguard sleep {arg}` took {took:?}");
    }
    for args in [
        &["sleep", "soon"][..],
        &["sleep", "1parsec"],
        &["sleep", "--", "-1"],
        &["sleep", "NaN"],
        &["sleep", "inf"],
        &["sleep", "1e400"],
        &["sleep"],
    ] {
        let (code, stderr, _) = run_rollguard(args);
        let line = format!("rollguard {}", args.join(" "));
        assert_eq!(code, Some(2), "`{line}`: stderr:\n{stderr}");
        assert!(!stderr.contains("panicked"), "`{line}` panicked:\n{stderr}");
        let named = args
            .last()
            .filter(|a| **a != "sleep")
            .unwrap_or(&"DURATION");
        assert!(
            stderr.contains(named),
            "`{line}`: no {named:?} in the message:\n{stderr}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Robustness (these showed bugs; see the failure messages)
// ---------------------------------------------------------------------------------------

/// The shim keeps supervising when nobody reads its stderr any more (a closed log pipe).
#[test]
fn keeps_supervising_with_a_closed_stderr() {
    let mode = Mode::pid_namespace();
    let case = Case::new("closed-stderr", mode);
    // The app's own stderr goes to a file: only the shim writes to the closed pipe.
    let script = format!(
        "exec 2>>\"$1/app.err\"\n{}trap 'exit 3' USR1\n\
         echo \"app ready\" >> \"$1/log\"\n\
         {KEEP_RUNNING}\n",
        log_traps("app", &["HUP"])
    );
    let command = ["sh", "-c", script.as_str(), "app", case.dir.as_str()];
    let mut shim = Shim::start_logging(mode, &case.dir, &["--drain-delay", "0"], &command, false);
    let closed = "with its stderr closed (101 is a panic: writing a log line failed with EPIPE)";
    if let Err(status) = shim.wait_app_or_exit(&case, "app ready") {
        panic!("{mode:?}: the shim exited with {status} {closed}");
    }
    // The shim logs that it forwards HUP, to a pipe nobody reads.
    let forwarded = shim
        .try_signal(Signal::SIGHUP)
        .and_then(|()| shim.wait_app_or_exit(&case, "app HUP"));
    if let Err(status) = forwarded {
        panic!("{mode:?}: the shim did not forward SIGHUP: it exited with {status} {closed}");
    }
    shim.signal(Signal::SIGUSR1);
    let status = shim.wait_exit();
    assert_eq!(status.code(), Some(3), "{mode:?}: {status} {closed}");
    shim.assert_no_leftovers();
}

/// A huge --stop-timeout or --drain-delay is refused (exit 2) or works; it never panics.
#[test]
fn huge_durations_do_not_panic() {
    const HUGE: &str = "10000000000000000000s";
    const LARGEST: &str = "18446744073709551615s";
    let mode = Mode::Subreaper;
    let on_term =
        format!("trap 'exit 42' TERM\necho \"app ready\" >> \"$1/log\"\n{KEEP_RUNNING}\n");
    // (flags, the app, whether it needs a second SIGTERM, its exit code)
    let cases: [(&[&str], &str, bool, i32); 4] = [
        (
            &["--drain-delay", "0", "--stop-timeout", HUGE],
            &on_term,
            false,
            42,
        ),
        (&["--drain-delay", HUGE], &on_term, true, 42),
        (
            &["--stop-timeout", HUGE],
            "\"$1/sleep\" 600 &\necho \"app ready\" >> \"$1/log\"\nexit 3\n",
            false,
            3,
        ),
        (
            &["--drain-delay", LARGEST, "--stop-timeout", LARGEST],
            "echo \"app ready\" >> \"$1/log\"\nexit 3\n",
            false,
            3,
        ),
    ];
    let failures: Vec<String> = cases
        .into_iter()
        .enumerate()
        .filter_map(|(i, (flags, script, twice, code))| {
            huge_duration_case(mode, i, flags, script, twice, code).err()
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// One case of [`huge_durations_do_not_panic`]; `Err` says what went wrong.
fn huge_duration_case(
    mode: Mode,
    i: usize,
    flags: &[&str],
    script: &str,
    twice: bool,
    code: i32,
) -> Result<(), String> {
    let case = Case::new(&format!("huge-{i}"), mode);
    let mut shim = case.shim(mode, flags, script);
    let line = format!("rollguard shim --no-proxy {}", flags.join(" "));
    if let Err(status) = shim.wait_app_or_exit(&case, "app ready") {
        // Refusing the value is fine, with a message naming the flag.
        let log = shim.log.clone();
        log.wait_closed(DEADLINE);
        let named = flags.iter().any(|f| f.starts_with("--") && log.has(f));
        if status.code() == Some(2) && named && !log.has("panicked") {
            return Ok(());
        }
        return Err(format!(
            "`{line}`: exited with {status} before starting the app; log:\n{}",
            log.dump()
        ));
    }
    if !script.contains("exit 3") {
        shim.signal(Signal::SIGTERM);
        if twice {
            let log = shim.log.clone();
            if !wait_until(DEADLINE, || log.has("phase=\"propagation\"")) {
                return Err(format!("`{line}`: no drain delay; log:\n{}", log.dump()));
            }
            if shim.exited().is_none() {
                shim.signal(Signal::SIGTERM);
            }
        }
    }
    let status = shim.wait_exit();
    if status.code() != Some(code) || shim.log.has("panicked") {
        return Err(format!(
            "`{line}`: want exit {code}, got {status}; log:\n{}",
            shim.log.dump()
        ));
    }
    shim.assert_no_leftovers();
    Ok(())
}
