//! The prober: readiness without a probe, and restarts after a failed liveness probe.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rollguard_core::probe::{ProbeAction, ProbeSpec};
use rollguard_lab::pod::{Journal, Pod, PodEvent, PodSpec, Termination};
use rollguard_lab::prober::{self, Probes};
use tokio::sync::Notify;

fn sleeper(name: &str) -> PodSpec {
    PodSpec {
        name: name.to_owned(),
        ip: Ipv4Addr::new(127, 0, 1, 9),
        port: 8080,
        version: "red".to_owned(),
        command: vec!["sleep".into(), "60".into()],
    }
}

fn starts(journal: &Journal) -> Vec<i32> {
    journal
        .entries()
        .into_iter()
        .filter_map(|e| match e.event {
            PodEvent::Started { pid } => Some(pid),
            _ => None,
        })
        .collect()
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn quick_termination() -> Termination {
    Termination {
        pre_stop: None,
        grace_period: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn without_a_readiness_probe_a_running_pod_is_ready() {
    let journal = Journal::default();
    let pod = Arc::new(Pod::spawn(sleeper("plain"), journal.clone()).expect("spawn"));
    let (task, ready) = prober::spawn(
        pod.clone(),
        Probes::default(),
        quick_termination(),
        journal,
        Arc::new(Notify::new()),
    );
    eventually("ready", || ready.borrow().is_some()).await;
    pod.kill();
    eventually("not ready once the process is gone", || {
        ready.borrow().is_none()
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn a_failing_liveness_probe_restarts_the_container() {
    let journal = Journal::default();
    let pod = Arc::new(Pod::spawn(sleeper("sick"), journal.clone()).expect("spawn"));
    let liveness = ProbeSpec {
        period: Duration::from_millis(100),
        failure_threshold: 2,
        ..ProbeSpec::new(ProbeAction::Exec {
            command: vec!["false".into()],
        })
    };
    let (task, _ready) = prober::spawn(
        pod.clone(),
        Probes {
            liveness: Some(liveness),
            ..Probes::default()
        },
        quick_termination(),
        journal.clone(),
        Arc::new(Notify::new()),
    );
    eventually("a restart", || starts(&journal).len() >= 2).await;
    let pids = starts(&journal);
    assert_ne!(pids[0], pids[1], "a new process");
    let first_alive = std::path::Path::new(&format!("/proc/{}/cmdline", pids[0])).exists()
        && !std::fs::read_to_string(format!("/proc/{}/stat", pids[0]))
            .unwrap_or_default()
            .contains(") Z ");
    assert!(!first_alive, "the first process survived its restart");
    // Deleting the pod ends the restarts. An absence can't be waited for: the pause below
    // only gives a wrong restart the time to show, it can't make the test pass by luck.
    pod.terminate(&quick_termination()).await;
    let after = starts(&journal).len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        starts(&journal).len(),
        after,
        "restarted while being deleted"
    );
    task.abort();
}

#[tokio::test]
async fn exec_probes_run_with_the_pods_environment() {
    let journal = Journal::default();
    let pod = Arc::new(Pod::spawn(sleeper("envy"), journal.clone()).expect("spawn"));
    let readiness = ProbeSpec {
        period: Duration::from_millis(50),
        ..ProbeSpec::new(ProbeAction::Exec {
            command: vec![
                "sh".into(),
                "-c".into(),
                "test \"$POD_NAME $POD_IP $APP_VERSION\" = 'envy 127.0.1.9 red'".into(),
            ],
        })
    };
    let (task, ready) = prober::spawn(
        pod.clone(),
        Probes {
            readiness: Some(readiness),
            ..Probes::default()
        },
        quick_termination(),
        journal,
        Arc::new(Notify::new()),
    );
    eventually("ready by an exec probe that checks its environment", || {
        ready.borrow().is_some()
    })
    .await;
    pod.kill();
    task.abort();
}
