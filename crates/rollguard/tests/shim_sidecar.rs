//! `rollguard shim` without a command (the native-sidecar form) and its `/prestop` hook:
//! the hook drains the proxy and answers only once nothing is left in flight, without
//! stopping anything; SIGTERM then ends the sidecar with code 0.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use common::{Proc, demo_app, free_addr, rollguard, wait_until};
use nix::sys::signal::Signal;

/// Sends `GET path` on a fresh connection that closes after the answer.
fn send(addr: SocketAddr, path: &str) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send to {addr}: {e}"))?;
    Ok(stream)
}

/// Reads the answer to [`send`]: its status code, and the moment it was complete.
fn answer(mut stream: TcpStream) -> Result<(u16, Instant), String> {
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| format!("read: {e}"))?;
    let done = Instant::now();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    Ok((status, done))
}

/// One `GET path`: its status code and when the answer was complete.
fn get(addr: SocketAddr, path: &str) -> Result<(u16, Instant), String> {
    answer(send(addr, path)?)
}

/// The shim as a sidecar (no command) in front of `upstream`, with its health endpoints.
fn sidecar(upstream: SocketAddr, extra: &[&str]) -> (Proc, SocketAddr, SocketAddr) {
    let (listen, health) = (free_addr(), free_addr());
    let child = rollguard()
        .args(["shim", "--listen", &listen.to_string()])
        .args(["--upstream", &upstream.to_string()])
        .args(["--health-listen", &health.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the shim");
    let shim = Proc { child };
    assert!(
        wait_until(Duration::from_secs(15), || matches!(
            get(health, "/ready"),
            Ok((200, _))
        )),
        "the sidecar never became ready"
    );
    (shim, listen, health)
}

/// `/prestop` answers only after the request in flight through the proxy has been
/// answered, leaves the app running, and makes `/ready` fail; SIGTERM then exits 0.
#[test]
fn prestop_hook_answers_once_drained_and_stops_nothing() {
    let app_addr = free_addr();
    let _app = demo_app(app_addr, &[]);
    let (mut shim, listen, health) = sidecar(app_addr, &["--drain-delay", "1s"]);

    // Sent before the hook: the shim has a second to accept it before its listener closes.
    let mut slow = send(listen, "/slow?ms=1500").expect("send the slow request");
    let (hook_status, _) = get(health, "/prestop").expect("the preStop hook");
    assert_eq!(hook_status, 200);
    // The shim wrote the slow answer before it answered the hook, and loopback delivers a
    // write at once: the whole answer must already be waiting in the socket.
    slow.set_nonblocking(true).expect("non-blocking");
    let mut waiting = Vec::new();
    let _ = slow.read_to_end(&mut waiting);
    let waiting = String::from_utf8_lossy(&waiting);
    assert!(
        waiting.starts_with("HTTP/1.1 200") && waiting.contains("slept 1500ms"),
        "/prestop answered before the in-flight request was answered: {waiting:?}"
    );
    assert_eq!(get(health, "/ready").map(|r| r.0), Ok(503));
    assert_eq!(get(health, "/live").map(|r| r.0), Ok(200));
    // Nothing was stopped: the app still answers on its own port.
    assert_eq!(get(app_addr, "/").map(|r| r.0), Ok(200));
    // The shim no longer listens for clients.
    assert!(TcpStream::connect(listen).is_err(), "the listener is open");

    shim.signal(Signal::SIGTERM);
    let status = shim
        .wait_exit(Duration::from_secs(10))
        .expect("the sidecar exits on SIGTERM after the drain");
    assert_eq!(status.code(), Some(0));
}

/// Without the hook, SIGTERM runs the whole drain and the sidecar exits 0, the app
/// untouched.
#[test]
fn sigterm_drains_the_sidecar_and_leaves_the_app_alone() {
    let app_addr = free_addr();
    let _app = demo_app(app_addr, &[]);
    let (mut shim, listen, _health) = sidecar(app_addr, &["--drain-delay", "1s"]);
    assert_eq!(get(listen, "/").map(|r| r.0), Ok(200));
    let slow = send(listen, "/slow?ms=1000").expect("send the slow request");
    let slow = thread::spawn(move || answer(slow));
    shim.signal(Signal::SIGTERM);
    let (slow_status, _) = slow
        .join()
        .expect("slow request thread")
        .expect("the slow request through the shim");
    assert_eq!(slow_status, 200, "the in-flight request was cut");
    let status = shim
        .wait_exit(Duration::from_secs(15))
        .expect("the sidecar exits after the drain");
    assert_eq!(status.code(), Some(0));
    assert_eq!(get(app_addr, "/").map(|r| r.0), Ok(200));
}
