//! `rollguard measure` against real demo apps on loopback: steady traffic, crashes,
//! SIGTERM with and without draining, a version switch, interrupts and bad input.
//!
//! Scenarios that change the target mid-run use a command (`-- CMD`) that the test
//! controls: it signals that load is running by creating a file, and ends when the test
//! creates another. Between the two the test acts on the apps. The pauses that let traffic
//! flow are phases of the scenario, not synchronisation: at the rates used, any phase of a
//! few milliseconds carries requests, and the assertions ask for "at least one".

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::{Proc, Scratch, demo_app, describe, free_addr, read_json, rollguard, wait_until};
use nix::sys::signal::Signal;
use serde_json::Value;

/// How long a scenario phase lets traffic flow.
const PHASE: Duration = Duration::from_millis(800);

/// A `measure` run whose end the test decides.
struct ControlledRun {
    proc: Proc,
    scratch: Scratch,
}

struct Finished {
    code: Option<i32>,
    report: Value,
    stdout: String,
    stderr: String,
}

impl ControlledRun {
    fn start(url: &str, args: &[&str]) -> Self {
        let scratch = Scratch::new("measure");
        let script = format!(
            "touch '{started}'; while [ ! -e '{done}' ]; do sleep 0.02; done",
            started = scratch.path("started").display(),
            done = scratch.path("done").display(),
        );
        let child = rollguard()
            .args([
                "measure",
                url,
                "--settle",
                "300ms",
                "--duration",
                "60s",
                "--json",
            ])
            .arg(scratch.path("report.json"))
            .args(args)
            .arg("--")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(File::create(scratch.path("stdout")).expect("stdout file"))
            .stderr(File::create(scratch.path("stderr")).expect("stderr file"))
            .spawn()
            .expect("spawn measure");
        let run = Self {
            proc: Proc { child },
            scratch,
        };
        let started = run.scratch.path("started");
        assert!(
            wait_until(Duration::from_secs(15), || started.exists()),
            "measure did not start its command"
        );
        run
    }

    fn finish(mut self) -> Finished {
        File::create(self.scratch.path("done")).expect("create done file");
        let status = self
            .proc
            .wait_exit(Duration::from_secs(60))
            .expect("measure ends after its command");
        let read = |f: &str| std::fs::read_to_string(self.scratch.path(f)).unwrap_or_default();
        Finished {
            code: status.code(),
            report: read_json(&self.scratch.path("report.json")),
            stdout: read("stdout"),
            stderr: read("stderr"),
        }
    }
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

fn failures(report: &Value) -> &Vec<Value> {
    report["failures"].as_array().expect("failures array")
}

fn classes(report: &Value) -> BTreeSet<String> {
    failures(report)
        .iter()
        .map(|f| f["class"].as_str().expect("class").to_owned())
        .collect()
}

fn u(v: &Value) -> u64 {
    v.as_u64().expect("unsigned number")
}

#[test]
fn steady_demo_app_has_no_failures_and_consistent_totals() {
    let addr = free_addr();
    let _app = demo_app(addr, &["--color", "red"]);
    let scratch = Scratch::new("steady");
    let json = scratch.path("report.json");
    let out = rollguard()
        .args([
            "measure",
            &url(addr, "/"),
            "--duration",
            "2s",
            "--rate",
            "200",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("run measure");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let r = read_json(&json);
    assert_eq!(u(&r["failed"]), 0, "{r}");
    assert_eq!(u(&r["total"]), u(&r["ok"]));
    // 2 s at 200 req/s, open loop: 400 requests are due, none after the end.
    assert_eq!(u(&r["total"]), 400, "{r}");
    let timeline = r["timeline"].as_array().expect("timeline");
    let ok_sum: u64 = timeline.iter().map(|s| u(&s["ok"])).sum();
    assert_eq!(ok_sum, u(&r["ok"]));
    assert_eq!(u(&r["versions"]["red"]), u(&r["total"]));
    assert!(failures(&r).is_empty() && r["failures_by_class"].as_object().expect("map").is_empty());
    assert!(r["latency_ms"]["p50"].as_f64().expect("p50") > 0.0);
    assert!(r.get("command").is_none());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("PASS") && text.contains("red 200"), "{text}");
}

#[test]
fn sigkill_and_restart_shows_refused_and_cut_connections() {
    let addr = free_addr();
    let mut red = demo_app(addr, &["--color", "red"]);
    // Slow requests keep some in flight on kept-alive connections when the app dies.
    let run = ControlledRun::start(&url(addr, "/slow?ms=200"), &["--rate", "200"]);
    std::thread::sleep(PHASE);
    red.signal(Signal::SIGKILL);
    red.wait_exit(Duration::from_secs(10)).expect("red died");
    std::thread::sleep(PHASE);
    let _blue = demo_app(addr, &["--color", "blue"]);
    std::thread::sleep(PHASE);
    let done = run.finish();
    let r = &done.report;
    assert_eq!(done.code, Some(1), "{}\n{}", done.stdout, done.stderr);
    assert!(u(&r["ok"]) > 0, "{r}");
    let refused: Vec<&Value> = failures(r)
        .iter()
        .filter(|f| f["class"] == "connect-refused")
        .collect();
    assert!(!refused.is_empty(), "no connect-refused: {:?}", classes(r));
    assert!(
        refused
            .iter()
            .all(|f| f["reused"] == false && f["conn_requests"] == 0)
    );
    let cut_on_reused = failures(r).iter().any(|f| {
        f["reused"] == true
            && (f["class"] == "connection-reset" || f["class"] == "closed-before-response")
    });
    assert!(cut_on_reused, "no cut kept-alive request: {:?}", classes(r));
    assert_eq!(
        u(&r["failures_by_class"]["connect-refused"]),
        refused.len() as u64
    );
    assert!(done.stdout.contains("connect-refused") && done.stdout.contains("FAIL"));
}

/// Runs slow requests on kept-alive connections and sends SIGTERM to the app mid-way;
/// returns the failures that were not refused connects (requests cut in flight).
fn sigterm_with_requests_in_flight(behavior: &str) -> Vec<Value> {
    let addr = free_addr();
    let mut app = demo_app(addr, &["--sigterm", behavior]);
    let run = ControlledRun::start(
        &url(addr, "/slow?ms=1000"),
        &["--concurrency", "8", "--connections", "keepalive"],
    );
    std::thread::sleep(PHASE);
    app.signal(Signal::SIGTERM);
    app.wait_exit(Duration::from_secs(20))
        .expect("app exits after SIGTERM");
    let done = run.finish();
    assert_eq!(
        done.code,
        Some(1),
        "refused connects after the exit fail the run"
    );
    failures(&done.report)
        .iter()
        .filter(|f| f["class"] != "connect-refused")
        .cloned()
        .collect()
}

#[test]
fn sigterm_exit_cuts_requests_in_flight() {
    let cut = sigterm_with_requests_in_flight("exit");
    assert!(!cut.is_empty(), "SIGTERM with --sigterm exit cut nothing");
    assert!(
        cut.iter()
            .all(|f| f["class"] == "closed-before-response" || f["class"] == "connection-reset")
    );
}

#[test]
fn sigterm_drain_answers_requests_in_flight() {
    let cut = sigterm_with_requests_in_flight("drain");
    assert!(cut.is_empty(), "requests cut despite draining: {cut:?}");
}

#[test]
fn version_switch_shows_red_then_blue() {
    let addr = free_addr();
    let mut red = demo_app(addr, &["--color", "red"]);
    let run = ControlledRun::start(&url(addr, "/"), &["--rate", "200"]);
    std::thread::sleep(PHASE);
    red.signal(Signal::SIGTERM);
    red.wait_exit(Duration::from_secs(10))
        .expect("red exits on SIGTERM");
    let _blue = demo_app(addr, &["--color", "blue"]);
    std::thread::sleep(PHASE);
    let done = run.finish();
    let r = &done.report;
    let seconds_with = |version: &str| -> Vec<u64> {
        r["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .filter(|s| s["versions"].get(version).is_some())
            .map(|s| u(&s["t"]))
            .collect()
    };
    let (red_s, blue_s) = (seconds_with("red"), seconds_with("blue"));
    assert!(!red_s.is_empty() && !blue_s.is_empty(), "{r}");
    assert!(
        red_s.iter().max() <= blue_s.iter().min(),
        "red after blue: red {red_s:?} blue {blue_s:?}"
    );
    assert!(u(&r["versions"]["red"]) > 0 && u(&r["versions"]["blue"]) > 0);
    assert!(done.stdout.contains("blue"), "{}", done.stdout);
}

#[test]
fn http2_and_fresh_connections_work() {
    let addr = free_addr();
    let _app = demo_app(addr, &["--color", "blue"]);
    for extra in [
        &["--http2"][..],
        &["--connections", "fresh"],
        &["--http2", "-c", "4"],
    ] {
        let out = rollguard()
            .args(["measure", &url(addr, "/"), "--duration", "1s"])
            .args(extra)
            .output()
            .expect("run measure");
        assert_eq!(out.status.code(), Some(0), "{extra:?}: {}", describe(&out));
    }
}

#[test]
fn command_exit_code_is_reported_and_fails_the_run() {
    let addr = free_addr();
    let _app = demo_app(addr, &[]);
    let scratch = Scratch::new("cmd");
    let json = scratch.path("report.json");
    let out = rollguard()
        .args(["measure", &url(addr, "/"), "--settle", "100ms", "--json"])
        .arg(&json)
        .args(["--", "sh", "-c", "echo rolling; exit 3"])
        .output()
        .expect("run measure");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let r = read_json(&json);
    assert_eq!(r["command"]["exit_code"], 3);
    assert_eq!(r["command"]["argv"][0], "sh");
    assert_eq!(u(&r["failed"]), 0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("| rolling"));
}

#[test]
fn interrupt_stops_the_command_group_and_reports() {
    let addr = free_addr();
    let _app = demo_app(addr, &[]);
    let scratch = Scratch::new("interrupt");
    let pidfile = scratch.path("pid");
    let script = format!("sleep 60 & echo $! > '{}'; wait", pidfile.display());
    let child = rollguard()
        .args(["measure", &url(addr, "/"), "--json"])
        .arg(scratch.path("report.json"))
        .args(["--", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn measure");
    let mut measure = Proc { child };
    assert!(wait_until(Duration::from_secs(15), || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.trim().parse::<i32>().is_ok())
    }));
    let grandchild: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    measure.signal(Signal::SIGINT);
    let status = measure
        .wait_exit(Duration::from_secs(15))
        .expect("measure exits on SIGINT");
    assert_eq!(status.code(), Some(130));
    let gone = || nix::sys::signal::kill(nix::unistd::Pid::from_raw(grandchild), None).is_err();
    assert!(
        wait_until(Duration::from_secs(10), gone),
        "the command's background sleep survived"
    );
    let r = read_json(&scratch.path("report.json"));
    assert_eq!(r["ending"], "interrupted");
    assert_eq!(r["command"]["stopped"], true);
}

#[test]
fn demo_self_test_shows_the_problem() {
    let scratch = Scratch::new("demo");
    let json = scratch.path("report.json");
    let out = rollguard()
        .args(["measure", "--demo", "--duration", "4s", "--json"])
        .arg(&json)
        .output()
        .expect("run measure --demo");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let r = read_json(&json);
    assert!(
        u(&r["versions"]["red"]) > 0 && u(&r["versions"]["blue"]) > 0,
        "{r}"
    );
    assert!(classes(&r).contains("connect-refused"), "{r}");
}

/// Runs `measure URL ARGS --json` to completion; returns the exit code and the report.
fn measure_json(url: &str, args: &[&str]) -> (Option<i32>, Value) {
    let scratch = Scratch::new("measure-json");
    let json = scratch.path("report.json");
    let out = rollguard()
        .args(["measure", url, "--json"])
        .arg(&json)
        .args(args)
        .output()
        .expect("run measure");
    (out.status.code(), read_json(&json))
}

#[test]
fn unexpected_statuses_and_timeouts_have_their_classes() {
    let addr = free_addr();
    let _app = demo_app(addr, &["--ready-delay", "10m"]);

    let (code, r) = measure_json(&url(addr, "/health"), &["-d", "1s", "--rate", "50"]);
    assert_eq!(code, Some(1));
    assert_eq!(u(&r["failures_by_class"]["http-503"]), 50, "{r}");
    assert_eq!(
        failures(&r)[0]["version"],
        "red",
        "the app that answered 503 is named"
    );
    assert!(
        r["latency_ms"]["p50"].as_f64().is_some(),
        "503s are responses: {r}"
    );

    let (code, r) = measure_json(
        &url(addr, "/health"),
        &["-d", "1s", "--rate", "50", "--expect-status", "503"],
    );
    assert_eq!((code, u(&r["failed"])), (Some(0), 0), "{r}");

    let (code, r) = measure_json(
        &url(addr, "/slow?ms=5000"),
        &["-d", "1s", "--rate", "20", "--timeout", "300ms"],
    );
    assert_eq!(code, Some(1));
    assert_eq!(u(&r["failures_by_class"]["request-timeout"]), 20, "{r}");
    let elapsed = u(&failures(&r)[0]["elapsed_ms"]);
    assert!(
        (300..2000).contains(&elapsed),
        "timed out after {elapsed} ms"
    );
}

#[test]
fn open_loop_counts_the_wait_of_requests_that_could_not_go_out_on_time() {
    let addr = free_addr();
    let _app = demo_app(addr, &[]);
    // One slot, 50 req/s due for 1 s, each answered after 100 ms: the slot keeps up with
    // 10 req/s, so requests queue and their wait is part of their latency.
    let (code, r) = measure_json(
        &url(addr, "/slow?ms=100"),
        &[
            "-d",
            "1s",
            "--rate",
            "50",
            "--max-in-flight",
            "1",
            "--timeout",
            "1s",
        ],
    );
    assert_eq!(code, Some(0), "{r}");
    let p50 = r["latency_ms"]["p50"].as_f64().expect("p50");
    assert!(p50 > 300.0, "queueing hidden from latency: p50 {p50} ms");
    // The queue is worked off for at most --timeout after the end; the rest is unsent.
    assert!(u(&r["unsent"]) > 0, "{r}");
    assert_eq!(u(&r["total"]) + u(&r["unsent"]), 50, "{r}");
}

#[test]
fn bad_input_exits_2_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["measure", "not a url"], "URL]"),
        (&["measure", "ftp://example.test/"], "http://"),
        (
            &["measure", "http://127.0.0.1:1/", "--duration", "abc"],
            "--duration",
        ),
        (&["measure", "http://127.0.0.1:1/", "--rate", "0"], "--rate"),
        (
            &["measure", "http://127.0.0.1:1/", "-H", "nocolon"],
            "--header",
        ),
        (
            &["measure", "http://127.0.0.1:1/", "--expect-status", "600"],
            "--expect-status",
        ),
        (
            &[
                "measure",
                "http://127.0.0.1:1/",
                "--connections",
                "sometimes",
            ],
            "--connections",
        ),
        (&["measure", "http://127.0.0.1:1/", "--bogus"], "--bogus"),
        (
            &[
                "measure",
                "http://127.0.0.1:1/",
                "--body",
                "@/nonexistent/file",
            ],
            "--body",
        ),
        (
            &["measure", "http://127.0.0.1:1/", "--", "/nonexistent/cmd"],
            "/nonexistent/cmd",
        ),
    ];
    for (args, needle) in cases {
        let out = rollguard().args(*args).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        assert!(
            stderr.contains(needle),
            "{args:?}: stderr lacks {needle}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
