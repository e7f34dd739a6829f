//! The scenarios: the well-known articles' steps towards zero-downtime rollouts, each
//! adding one fix to the one before, applied to the demo app.

use std::time::Duration;

use rollguard_core::probe::{PortRef, ProbeAction, ProbeSpec};

use crate::pod::{PreStop, Termination};
use crate::prober::Probes;
use crate::run::Setup;

/// One preset: which fixes are in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    /// Its name on the command line and in reports.
    pub name: &'static str,
    /// What it adds, in a few words.
    pub summary: &'static str,
    /// A readinessProbe on `/health` (F1).
    pub readiness_probe: bool,
    /// A preStop sleep longer than endpoint propagation (F2).
    pub pre_stop_sleep: bool,
    /// The app drains in-flight requests on SIGTERM instead of exiting at once (F3).
    pub app_drains: bool,
    /// The app answers `Connection: close` from SIGTERM on, before closing idle
    /// connections (F4).
    pub keepalive_close: bool,
    /// The naive app runs under `rollguard shim`, which fixes F1-F4 from outside it: its
    /// `/ready` is the readiness probe, its drain delay covers endpoint propagation, and
    /// it drains clients before stopping the app.
    pub shim: bool,
}

/// Every scenario, in the order they build on each other.
pub const SCENARIOS: [Scenario; 6] = [
    Scenario {
        name: "naive",
        summary: "no readiness probe, no preStop, the app dies on SIGTERM",
        readiness_probe: false,
        pre_stop_sleep: false,
        app_drains: false,
        keepalive_close: false,
        shim: false,
    },
    Scenario {
        name: "readiness",
        summary: "+ a readinessProbe",
        readiness_probe: true,
        pre_stop_sleep: false,
        app_drains: false,
        keepalive_close: false,
        shim: false,
    },
    Scenario {
        name: "prestop",
        summary: "+ a preStop sleep longer than endpoint propagation",
        readiness_probe: true,
        pre_stop_sleep: true,
        app_drains: false,
        keepalive_close: false,
        shim: false,
    },
    Scenario {
        name: "drain",
        summary: "+ the app drains in-flight requests on SIGTERM",
        readiness_probe: true,
        pre_stop_sleep: true,
        app_drains: true,
        keepalive_close: false,
        shim: false,
    },
    Scenario {
        name: "complete",
        summary: "+ Connection: close to kept-alive clients before closing",
        readiness_probe: true,
        pre_stop_sleep: true,
        app_drains: true,
        keepalive_close: true,
        shim: false,
    },
    Scenario {
        name: "shim",
        summary: "the naive app under `rollguard shim`, with a readinessProbe on its /ready",
        readiness_probe: true,
        pre_stop_sleep: false,
        app_drains: false,
        keepalive_close: false,
        shim: true,
    },
];

/// Where the app listens inside a `shim` pod (the shim owns the pod's port).
pub const SHIM_APP_PORT: u16 = 28081;

/// Where the shim serves `/ready` and `/live` inside a `shim` pod.
pub const SHIM_HEALTH_PORT: u16 = 28082;

/// How long the demo app takes to start listening: longer than endpoint propagation, so
/// that traffic sent to a pod before it is ready (F1) shows.
pub const APP_STARTUP: Duration = Duration::from_millis(2000);

/// The demo app listening on the pod's address and serving the pod's version; `app` is
/// its command up to the subcommand (e.g. `[rollguard, demo-app]`).
pub fn demo_app_command(app: &[String]) -> Vec<String> {
    let mut command = app.to_vec();
    command.extend(["--listen", "{ip}:{port}", "--color", "{version}"].map(String::from));
    command
}

impl Scenario {
    /// The scenario called `name`.
    pub fn find(name: &str) -> Option<&'static Scenario> {
        SCENARIOS.iter().find(|s| s.name == name)
    }

    /// The names of every scenario, for help and error messages.
    pub fn names() -> Vec<&'static str> {
        SCENARIOS.iter().map(|s| s.name).collect()
    }

    /// The pods of this scenario: the demo app (`app` is its command up to the
    /// subcommand, e.g. `[rollguard, demo-app]`) with the scenario's flags and manifest,
    /// for endpoints that propagate within `propagation` (jitter included).
    pub fn setup(&self, app: &[String], propagation: Duration) -> Setup {
        let command = if self.shim {
            self.shim_command(app, propagation)
        } else {
            let mut command = demo_app_command(app);
            command.extend(self.app_flags());
            command
        };
        let (path, port) = if self.shim {
            ("/ready", PortRef::Number(SHIM_HEALTH_PORT))
        } else {
            ("/health", PortRef::Name("http".to_owned()))
        };
        // Faster than Kubernetes' 10 s default so that rollouts take seconds, and strict
        // (one failure flips it) as the articles configure it.
        let readiness = self.readiness_probe.then(|| ProbeSpec {
            period: Duration::from_millis(200),
            failure_threshold: 1,
            ..ProbeSpec::new(ProbeAction::HttpGet {
                path: path.to_owned(),
                port,
                scheme: Default::default(),
                headers: Vec::new(),
            })
        });
        Setup {
            name: self.name.to_owned(),
            command,
            probes: Probes {
                readiness,
                ..Probes::default()
            },
            termination: Termination {
                pre_stop: self.pre_stop(propagation).map(PreStop::Sleep),
                grace_period: Duration::from_secs(30),
            },
            min_ready: Duration::ZERO,
            port: None,
        }
    }

    /// The demo app's flags for this scenario (after `demo-app --listen ... --color ...`).
    fn app_flags(&self) -> Vec<String> {
        let mut flags = vec![
            "--startup-delay".to_owned(),
            format!("{}ms", APP_STARTUP.as_millis()),
            "--sigterm".to_owned(),
            if self.app_drains { "drain" } else { "exit" }.to_owned(),
        ];
        if self.keepalive_close {
            flags.extend([
                "--close-keepalive-on-sigterm".to_owned(),
                // Long enough for every kept-alive client to get one more answer.
                "--drain-delay".to_owned(),
                "1s".to_owned(),
            ]);
        }
        flags
    }

    /// `rollguard shim` (the executable of `app`, e.g. `[rollguard, demo-app]`) on the
    /// pod's port, wrapping the naive demo app on [`SHIM_APP_PORT`], with a drain delay
    /// that covers endpoint propagation.
    fn shim_command(&self, app: &[String], propagation: Duration) -> Vec<String> {
        let exe = app
            .first()
            .cloned()
            .unwrap_or_else(|| "rollguard".to_owned());
        let mut command: Vec<String> = [
            exe.as_str(),
            "shim",
            "--listen",
            "{ip}:{port}",
            "--upstream",
            &format!("{{ip}}:{SHIM_APP_PORT}"),
            "--health-listen",
            &format!("{{ip}}:{SHIM_HEALTH_PORT}"),
            "--drain-delay",
            &format!("{}ms", propagation_margin(propagation).as_millis()),
            "--",
        ]
        .map(String::from)
        .to_vec();
        command.extend(app.iter().cloned());
        command.extend(
            [
                "--listen",
                &format!("{{ip}}:{SHIM_APP_PORT}"),
                "--color",
                "{version}",
            ]
            .map(String::from),
        );
        command.extend(self.app_flags());
        command
    }

    /// The preStop sleep for endpoints that propagate within `propagation` (jitter
    /// included).
    fn pre_stop(&self, propagation: Duration) -> Option<Duration> {
        self.pre_stop_sleep.then(|| propagation_margin(propagation))
    }
}

/// How long to keep serving after SIGTERM for endpoints that propagate within
/// `propagation` (jitter included): the propagation time with a margin of half of it plus
/// 500 ms.
fn propagation_margin(propagation: Duration) -> Duration {
    propagation + propagation / 2 + Duration::from_millis(500)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_are_cumulative() {
        let fixes = |s: &Scenario| {
            [
                s.readiness_probe,
                s.pre_stop_sleep,
                s.app_drains,
                s.keepalive_close,
            ]
            .iter()
            .filter(|f| **f)
            .count()
        };
        let (cumulative, shim): (Vec<&Scenario>, Vec<&Scenario>) =
            SCENARIOS.iter().partition(|s| !s.shim);
        for (i, s) in cumulative.iter().enumerate() {
            assert_eq!(fixes(s), i, "{}", s.name);
        }
        // The shim wraps the naive app: only the readiness probe (on the shim) is added.
        assert_eq!(shim.len(), 1);
        assert_eq!(fixes(shim[0]), 1);
    }

    #[test]
    fn shim_wraps_the_naive_app() {
        let shim = Scenario::find("shim").expect("shim");
        let app = ["/bin/rollguard".to_owned(), "demo-app".to_owned()];
        let setup = shim.setup(&app, Duration::from_secs(1));
        let command = setup.command.join(" ");
        assert!(
            command.starts_with("/bin/rollguard shim --listen {ip}:{port} --upstream {ip}:28081"),
            "{command}"
        );
        assert!(command.contains("--drain-delay 2000ms --"), "{command}");
        assert!(
            command.contains("-- /bin/rollguard demo-app --listen {ip}:28081 --color {version}"),
            "{command}"
        );
        assert!(command.contains("--sigterm exit"), "{command}");
        assert!(setup.termination.pre_stop.is_none());
        let readiness = setup.probes.readiness.expect("a readiness probe");
        assert!(matches!(
            readiness.action,
            ProbeAction::HttpGet { ref path, port: PortRef::Number(SHIM_HEALTH_PORT), .. } if path == "/ready"
        ));
    }

    #[test]
    fn flags_follow_the_fixes() {
        let naive = Scenario::find("naive").expect("naive");
        assert!(naive.app_flags().contains(&"exit".to_owned()));
        assert_eq!(naive.pre_stop(Duration::from_secs(1)), None);
        let complete = Scenario::find("complete").expect("complete");
        let flags = complete.app_flags();
        assert!(flags.contains(&"drain".to_owned()));
        assert!(flags.contains(&"--close-keepalive-on-sigterm".to_owned()));
        assert_eq!(
            complete.pre_stop(Duration::from_secs(1)),
            Some(Duration::from_secs(2))
        );
        assert!(Scenario::find("bogus").is_none());
    }
}
