//! `rollguard demo-app` as a real process: real sockets on 127.0.0.1, real signals.
//!
//! Every test reads the app's address from its `listening on ADDR` log line and waits for
//! log lines or conditions under a deadline instead of sleeping. The child is SIGKILLed by
//! pid when a test ends, even when it fails.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long any awaited condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// A running `rollguard demo-app`, killed by pid when dropped.
struct DemoApp {
    child: Child,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl DemoApp {
    /// Starts `rollguard demo-app FLAGS`; does not wait for anything.
    fn spawn(flags: &[&str]) -> DemoApp {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rollguard"))
            .arg("demo-app")
            .args(flags)
            .env("NO_COLOR", "1")
            // Debug logs include "slow request started", which tells when one is in flight.
            .env("RUST_LOG", "info,rollguard_demo=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start rollguard");
        let pipe = child.stderr.take().expect("stderr is piped");
        let (lines, stderr) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        DemoApp {
            child,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Starts the app on a free port and waits until it listens; returns it with its address.
    fn start(flags: &[&str]) -> (DemoApp, SocketAddr) {
        let mut app = DemoApp::spawn(&[&["--listen", "127.0.0.1:0"], flags].concat());
        let line = app.wait_for_line("listening on ");
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        (app, addr)
    }

    /// Waits for a stderr line containing `needle` and returns it.
    fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; stderr so far: {:#?}", self.seen),
            }
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits in i32"))
    }

    fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("cannot signal the app");
    }

    /// Waits for the process to end.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the app is still running");
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for DemoApp {
    fn drop(&mut self) {
        // `try_wait` reaps an exited child first, so the pid signalled is still ours.
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Sends `GET path` on a new connection (closed after the answer); returns the connection
/// to read the answer from with [`read_answer`].
fn send_get(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("cannot connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream
}

/// Everything the server sent until it closed the connection (an error if it reset it).
fn read_answer(mut stream: TcpStream) -> std::io::Result<String> {
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

fn get(addr: SocketAddr, path: &str) -> String {
    read_answer(send_get(addr, path)).expect("no answer")
}

/// The status code of a raw HTTP/1.1 answer.
fn status(answer: &str) -> Option<u16> {
    answer.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[test]
fn sigterm_exit_dies_at_once_and_cuts_the_request_in_flight() {
    let (mut app, addr) = DemoApp::start(&["--sigterm", "exit"]);
    let slow = send_get(addr, "/slow?ms=30000");
    app.wait_for_line("slow request started");

    let sigterm_at = Instant::now();
    app.signal(Signal::SIGTERM);
    let exit = app.wait_exit();
    assert!(
        exit.code() == Some(143) || exit.signal() == Some(Signal::SIGTERM as i32),
        "{exit:?}"
    );
    assert!(sigterm_at.elapsed() < Duration::from_secs(5));
    match read_answer(slow) {
        Ok(answer) => assert_eq!(status(&answer), None, "got an answer: {answer}"),
        Err(err) => assert_eq!(err.kind(), ErrorKind::ConnectionReset),
    }
}

#[test]
fn sigterm_drain_finishes_the_request_in_flight_then_exits_0() {
    let (mut app, addr) = DemoApp::start(&["--sigterm", "drain", "--color", "blue"]);
    let slow = send_get(addr, "/slow?ms=1000");
    app.wait_for_line("slow request started");

    app.signal(Signal::SIGTERM);
    app.wait_for_line("draining");
    let refused = TcpStream::connect(addr).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);

    let answer = read_answer(slow).expect("the request in flight was cut");
    assert_eq!(status(&answer), Some(200), "{answer}");
    assert!(answer.contains("x-version: blue\r\n"), "{answer}");
    assert_eq!(app.wait_exit().code(), Some(0));
    app.wait_for_line("all connections closed");
}

#[test]
fn sigterm_ignore_survives_until_sigkill() {
    let (mut app, addr) = DemoApp::start(&["--sigterm", "ignore"]);
    app.signal(Signal::SIGTERM);
    app.wait_for_line("ignoring SIGTERM");
    assert_eq!(status(&get(addr, "/")), Some(200));
    app.signal(Signal::SIGTERM);
    app.wait_for_line("SIGTERM received again");
    assert_eq!(status(&get(addr, "/health")), Some(200));
    assert!(app.is_running());

    app.signal(Signal::SIGKILL);
    assert_eq!(app.wait_exit().signal(), Some(Signal::SIGKILL as i32));
}

#[test]
fn drain_delay_keeps_serving_after_sigterm() {
    let (mut app, addr) = DemoApp::start(&[
        "--sigterm",
        "drain",
        "--drain-delay",
        "2s",
        "--fail-health-on-sigterm",
    ]);
    let sigterm_at = Instant::now();
    app.signal(Signal::SIGTERM);
    app.wait_for_line("SIGTERM received");
    // New connections are still served; only /health tells the truth.
    let page = get(addr, "/");
    assert_eq!(status(&page), Some(200), "{page}");
    assert_eq!(status(&get(addr, "/health")), Some(503));

    app.wait_for_line("draining");
    assert_eq!(app.wait_exit().code(), Some(0));
    assert!(sigterm_at.elapsed() >= Duration::from_secs(2));
}

#[test]
fn sigint_stops_at_once_whatever_sigterm_says() {
    let (mut app, _) = DemoApp::start(&["--sigterm", "ignore", "--drain-delay", "1m"]);
    app.signal(Signal::SIGINT);
    assert_eq!(app.wait_exit().code(), Some(130));
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    for (flags, named) in [
        (["--sigterm", "bogus"], "--sigterm"),
        (["--drain-delay", "abc"], "--drain-delay"),
        (["--keepalive-timeout", "10"], "--keepalive-timeout"),
        (["--color", "<b>"], "--color"),
    ] {
        // A free port, so that a flag wrongly accepted cannot take a real one.
        let mut app = DemoApp::spawn(&[&["--listen", "127.0.0.1:0"], &flags[..]].concat());
        let line = app.wait_for_line("error:");
        assert!(line.contains(named), "{flags:?}: {line}");
        assert_eq!(app.wait_exit().code(), Some(2), "{flags:?}");
    }
}

#[test]
fn an_address_in_use_exits_1_with_one_clear_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut app = DemoApp::spawn(&["--listen", &addr]);
    let line = app.wait_for_line("error:");
    assert!(
        line.starts_with(&format!("error: cannot listen on {addr}: ")),
        "{line}"
    );
    assert_eq!(app.wait_exit().code(), Some(1));
}
