//! `rollguard lab` end to end: real pods, a real Service, real signals.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Proc, Scratch, describe, live_processes, read_json, rollguard, wait_until};
use nix::sys::signal::Signal;
use serde_json::Value;

fn scenario<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["scenarios"]
        .as_array()
        .expect("scenarios array")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no scenario {name} in {report}"))
}

fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The pids of `rollguard demo-app` processes whose parent is `parent`.
fn demo_apps_of(parent: u32) -> Vec<u32> {
    live_processes()
        .into_iter()
        .filter(|p| p.ppid == parent && p.cmdline.contains("demo-app"))
        .map(|p| p.pid)
        .collect()
}

/// Processes whose command line contains `marker`, anywhere on the machine.
fn processes_with(marker: &str) -> Vec<u32> {
    live_processes()
        .into_iter()
        .filter(|p| p.cmdline.contains(marker))
        .map(|p| p.pid)
        .collect()
}

/// Asserts that no process with `marker` in its command line is left (within a deadline:
/// the last ones may still be exiting).
fn assert_none_left(marker: &str) {
    assert!(
        wait_until(Duration::from_secs(10), || processes_with(marker)
            .is_empty()),
        "left behind: {:?}",
        processes_with(marker)
    );
}

/// Runs `rollguard lab ARGS --json FILE`, which must succeed; returns its stdout and
/// stderr, and the report of the scenario called `name`.
fn lab_ok(args: &[&str], name: &str) -> (String, String, Value) {
    let scratch = Scratch::new("lab");
    let json = scratch.path("lab.json");
    let out = rollguard()
        .arg("lab")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run lab");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let report = read_json(&json);
    let scenario = scenario(&report, name).clone();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (text(&out.stdout), text(&out.stderr), scenario)
}

#[test]
fn naive_drops_requests_for_their_known_causes() {
    let (stdout, _, naive) = lab_ok(&["--scenario", "naive", "--rollouts", "2"], "naive");
    assert!(count(&naive["failed"]) > 0, "{naive}");
    let causes = &naive["causes"];
    assert!(count(&causes["not-ready"]) > 0, "no not-ready: {naive}");
    assert!(
        count(&causes["endpoint-lag"]) > 0,
        "no endpoint-lag: {naive}"
    );
    assert!(
        count(&causes["in-flight-killed"]) > 0,
        "no in-flight-killed: {naive}"
    );
    let attributed: u64 = causes
        .as_object()
        .expect("causes")
        .values()
        .map(count)
        .sum();
    assert_eq!(
        attributed,
        count(&naive["failed"]),
        "every failure has a cause"
    );
    assert_eq!(naive["rollout_seconds"].as_array().map(Vec::len), Some(2));
    assert!(
        stdout.contains("naive") && stdout.contains("Fixes"),
        "{stdout}"
    );
}

#[test]
fn complete_drops_nothing_over_three_rollouts() {
    let args = ["--scenario", "complete", "--rollouts", "3", "--rate", "200"];
    let (_, _, complete) = lab_ok(&args, "complete");
    assert_eq!(count(&complete["failed"]), 0, "{complete}");
    // 200 req/s plus the long requests, over three rollouts.
    assert!(count(&complete["requests"]) > 1000, "{complete}");
    assert_eq!(complete["rollouts"], 3);
}

#[test]
fn the_naive_app_under_the_shim_drops_nothing_over_three_rollouts() {
    let args = ["--scenario", "shim", "--rollouts", "3", "--rate", "200"];
    let (_, _, shim) = lab_ok(&args, "shim");
    assert_eq!(count(&shim["failed"]), 0, "{shim}");
    assert!(count(&shim["requests"]) > 1000, "{shim}");
    assert_eq!(shim["rollouts"], 3);
    // The shims and the apps they wrapped are all gone.
    assert_none_left(":28082 --drain-delay");
}

#[test]
fn interrupting_the_lab_leaves_no_pod_behind() {
    let child = rollguard()
        .args(["lab", "--scenario", "naive", "--rollouts", "50"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn lab");
    let mut lab = Proc { child };
    let pid = lab.child.id();
    assert!(
        wait_until(Duration::from_secs(30), || demo_apps_of(pid).len() >= 3),
        "the lab never started its pods"
    );
    lab.signal(Signal::SIGINT);
    let status = lab
        .wait_exit(Duration::from_secs(30))
        .expect("lab exits on SIGINT");
    assert_eq!(status.code(), Some(130));
    assert!(
        wait_until(Duration::from_secs(10), || demo_apps_of(pid).is_empty()),
        "pods survived the lab: {:?}",
        demo_apps_of(pid)
    );
}

#[test]
fn a_manifest_with_every_fix_and_a_draining_app_drops_nothing() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/manifests/demo.yaml");
    let app = format!(
        "exec '{}' demo-app --listen {{ip}}:{{port}} --color {{version}} --startup-delay 1s \
         --sigterm drain --close-keepalive-on-sigterm --drain-delay 1s",
        env!("CARGO_BIN_EXE_rollguard")
    );
    let args = ["--manifest", manifest, "--app", &app, "--rollouts", "1"];
    let (_, stderr, demo) = lab_ok(&args, "demo");
    assert_eq!(count(&demo["failed"]), 0, "{demo}");
    assert!(count(&demo["requests"]) > 500, "{demo}");
    assert!(
        stderr.contains("resources"),
        "ignored fields are listed: {stderr}"
    );
}

#[test]
fn recreate_leaves_the_service_without_endpoints() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/manifests/recreate.yaml");
    let (_, _, recreate) = lab_ok(&["--manifest", manifest, "--rollouts", "1"], "recreate");
    assert!(count(&recreate["causes"]["no-endpoints"]) > 0, "{recreate}");
}

#[test]
fn a_bad_manifest_exits_2_naming_file_line_and_field() {
    let scratch = Scratch::new("lab-bad-manifest");
    let path = scratch.path("deploy.yaml");
    std::fs::write(
        &path,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replicas: three\n",
    )
    .expect("write manifest");
    let out = rollguard()
        .args(["lab", "--manifest"])
        .arg(&path)
        .output()
        .expect("run lab");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr.contains("deploy.yaml:6") && stderr.contains("replicas"),
        "{stderr}"
    );
}

#[test]
fn nothing_outlives_a_run_not_even_the_apps_children() {
    // A unique sleep length marks this test's processes; the app leaves a child behind.
    let marker = format!("3599.{}", std::process::id());
    let app = format!("sleep {marker} & exec python3 -m http.server {{port}} --bind {{ip}}");
    let out = rollguard()
        .args(["lab", "--app", &app, "--rollouts", "1", "--rate", "20"])
        .output()
        .expect("run lab");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_none_left(&marker);
}

#[test]
fn a_failing_app_stops_the_lab_with_a_clear_error_and_nothing_left() {
    let marker = format!("3598.{}", std::process::id());
    let app = format!("sleep {marker} & exit 3");
    let out = rollguard()
        .args(["lab", "--app", &app, "--rollouts", "1"])
        .output()
        .expect("run lab");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr.contains("exit code 3") && stderr.contains("pod app-red-"),
        "{stderr}"
    );
    assert_none_left(&marker);
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["lab", "--scenario", "bogus"], "--scenario"),
        (&["lab", "--replicas", "0"], "--replicas"),
        (
            &["lab", "--max-surge", "0", "--max-unavailable", "0"],
            "--max-surge",
        ),
        (
            &["lab", "--propagation-delay", "soon"],
            "--propagation-delay",
        ),
        (&["lab", "--rate", "0"], "--rate"),
    ];
    for (args, needle) in cases {
        let out = rollguard().args(*args).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
