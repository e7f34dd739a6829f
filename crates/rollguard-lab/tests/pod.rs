//! Pods terminate as the kubelet terminates them: preStop, SIGTERM, SIGKILL at the end of
//! the grace period counted from the start of preStop; nothing outlives a dropped pod.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rollguard_lab::pod::{
    ExitReason, Journal, Pod, PodEvent, PodSpec, PreStop, Terminated, Termination,
};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rollguard-lab-pod-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn spec(name: &str, script: String) -> PodSpec {
    PodSpec {
        name: name.to_owned(),
        ip: Ipv4Addr::new(127, 0, 1, 7),
        port: 8080,
        version: "blue".to_owned(),
        command: vec!["sh".into(), "-c".into(), script],
    }
}

async fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An app that ignores SIGTERM, like a shell PID 1 that never forwards it; it creates
/// `ready` once the signal is ignored.
fn ignoring_sigterm(dir: &Path) -> String {
    format!(
        "trap '' TERM; touch '{}'; exec sleep 60",
        dir.join("ready").display()
    )
}

fn time_of(journal: &Journal, pod: &str, event: &PodEvent) -> Instant {
    journal
        .entries()
        .into_iter()
        .find(|e| e.pod == pod && &e.event == event)
        .unwrap_or_else(|| panic!("no {event:?} for {pod}: {:?}", journal.entries()))
        .at
}

#[tokio::test]
async fn app_ignoring_sigterm_is_killed_at_grace_expiry() {
    let dir = scratch("ignore");
    let journal = Journal::default();
    let pod = Pod::spawn(spec("ignore", ignoring_sigterm(&dir)), journal.clone()).expect("spawn");
    wait_for_file(&dir.join("ready")).await;
    let termination = Termination {
        pre_stop: None,
        grace_period: Duration::from_millis(800),
    };
    assert_eq!(pod.terminate(&termination).await, Terminated::Killed);
    assert_eq!(pod.exited(), Some(ExitReason::Signal(9)));
    let start = time_of(&journal, "ignore", &PodEvent::TerminationStarted);
    let kill = time_of(&journal, "ignore", &PodEvent::SigkillSent);
    let waited = kill - start;
    assert!(
        (Duration::from_millis(750)..Duration::from_secs(3)).contains(&waited),
        "SIGKILL after {waited:?}"
    );
    let order: Vec<PodEvent> = journal.entries().into_iter().map(|e| e.event).collect();
    assert!(matches!(order[0], PodEvent::Started { .. }), "{order:?}");
    assert_eq!(
        order[1..],
        [
            PodEvent::TerminationStarted,
            PodEvent::SigtermSent,
            PodEvent::SigkillSent,
            PodEvent::Exited(ExitReason::Signal(9)),
        ]
    );
}

#[tokio::test]
async fn app_exiting_on_sigterm_ends_termination_early() {
    let journal = Journal::default();
    let pod = Pod::spawn(spec("exits", "exec sleep 60".into()), journal).expect("spawn");
    let started = Instant::now();
    let outcome = pod.terminate(&Termination::default()).await;
    assert_eq!(outcome, Terminated::Exited(ExitReason::Signal(15)));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn grace_period_counts_from_the_start_of_prestop() {
    let dir = scratch("prestop");
    let journal = Journal::default();
    let pod = Pod::spawn(spec("hooked", ignoring_sigterm(&dir)), journal.clone()).expect("spawn");
    wait_for_file(&dir.join("ready")).await;
    let termination = Termination {
        pre_stop: Some(PreStop::Sleep(Duration::from_millis(1000))),
        grace_period: Duration::from_millis(1500),
    };
    assert_eq!(pod.terminate(&termination).await, Terminated::Killed);
    let start = time_of(&journal, "hooked", &PodEvent::TerminationStarted);
    let term = time_of(&journal, "hooked", &PodEvent::SigtermSent);
    let kill = time_of(&journal, "hooked", &PodEvent::SigkillSent);
    assert!(
        term - start >= Duration::from_millis(1000),
        "SIGTERM before preStop ended"
    );
    // Counted from preStop: SIGKILL at ~1.5 s; counted from SIGTERM it would be ~2.5 s.
    let waited = kill - start;
    assert!(
        (Duration::from_millis(1450)..Duration::from_millis(2200)).contains(&waited),
        "SIGKILL after {waited:?}"
    );
}

#[tokio::test]
async fn prestop_exec_and_the_app_get_the_pod_environment_and_placeholders() {
    let dir = scratch("env");
    let seen_by_app = dir.join("app");
    let seen_by_hook = dir.join("hook");
    let journal = Journal::default();
    let script = format!(
        "echo {{pod}} {{ip}} {{port}} {{version}} > '{}'; exec sleep 60",
        seen_by_app.display()
    );
    let pod = Pod::spawn(spec("envy", script), journal).expect("spawn");
    wait_for_file(&seen_by_app).await;
    let hook = format!(
        "echo $POD_NAME $POD_IP $PORT $APP_VERSION > '{}'",
        seen_by_hook.display()
    );
    let termination = Termination {
        pre_stop: Some(PreStop::Exec(vec!["sh".into(), "-c".into(), hook])),
        grace_period: Duration::from_secs(10),
    };
    pod.terminate(&termination).await;
    let expected = "envy 127.0.1.7 8080 blue\n";
    assert_eq!(
        std::fs::read_to_string(&seen_by_app).expect("app file"),
        expected
    );
    assert_eq!(
        std::fs::read_to_string(&seen_by_hook).expect("hook file"),
        expected
    );
}

#[tokio::test]
async fn dropping_a_pod_kills_its_whole_process_group() {
    let dir = scratch("drop");
    let pidfile = dir.join("pid");
    let script = format!("sleep 60 & echo $! > '{}'; wait", pidfile.display());
    let pod = Pod::spawn(spec("leaky", script), Journal::default()).expect("spawn");
    wait_for_file(&pidfile).await;
    let grandchild: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    drop(pod);
    let deadline = Instant::now() + Duration::from_secs(10);
    // Gone, or a zombie waiting for init to reap it: either way not running.
    let running = || {
        std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
            .map(|stat| !stat.contains(") Z "))
            .unwrap_or(false)
    };
    while running() {
        assert!(
            Instant::now() < deadline,
            "the app's child survived the pod"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn empty_or_missing_commands_are_errors_not_panics() {
    let mut empty = spec("empty", String::new());
    empty.command.clear();
    assert!(Pod::spawn(empty, Journal::default()).is_err());
    let mut missing = spec("missing", String::new());
    missing.command = vec!["/nonexistent/app".into()];
    let err = Pod::spawn(missing, Journal::default()).expect_err("spawn fails");
    assert!(err.to_string().contains("/nonexistent/app"), "{err}");
}
