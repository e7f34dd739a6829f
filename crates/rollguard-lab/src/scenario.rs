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
}

/// Every scenario, in the order they build on each other.
pub const SCENARIOS: [Scenario; 5] = [
    Scenario {
        name: "naive",
        summary: "no readiness probe, no preStop, the app dies on SIGTERM",
        readiness_probe: false,
        pre_stop_sleep: false,
        app_drains: false,
        keepalive_close: false,
    },
    Scenario {
        name: "readiness",
        summary: "+ a readinessProbe",
        readiness_probe: true,
        pre_stop_sleep: false,
        app_drains: false,
        keepalive_close: false,
    },
    Scenario {
        name: "prestop",
        summary: "+ a preStop sleep longer than endpoint propagation",
        readiness_probe: true,
        pre_stop_sleep: true,
        app_drains: false,
        keepalive_close: false,
    },
    Scenario {
        name: "drain",
        summary: "+ the app drains in-flight requests on SIGTERM",
        readiness_probe: true,
        pre_stop_sleep: true,
        app_drains: true,
        keepalive_close: false,
    },
    Scenario {
        name: "complete",
        summary: "+ Connection: close to kept-alive clients before closing",
        readiness_probe: true,
        pre_stop_sleep: true,
        app_drains: true,
        keepalive_close: true,
    },
];

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
        let mut command = demo_app_command(app);
        command.extend(self.app_flags());
        // Faster than Kubernetes' 10 s default so that rollouts take seconds, and strict
        // (one failure flips it) as the articles configure it.
        let readiness = self.readiness_probe.then(|| ProbeSpec {
            period: Duration::from_millis(200),
            failure_threshold: 1,
            ..ProbeSpec::new(ProbeAction::HttpGet {
                path: "/health".to_owned(),
                port: PortRef::Name("http".to_owned()),
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

    /// The preStop sleep for endpoints that propagate within `propagation` (jitter
    /// included): the propagation time with a margin of half of it plus 500 ms.
    fn pre_stop(&self, propagation: Duration) -> Option<Duration> {
        self.pre_stop_sleep
            .then(|| propagation + propagation / 2 + Duration::from_millis(500))
    }
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
        for (i, s) in SCENARIOS.iter().enumerate() {
            assert_eq!(fixes(s), i, "{}", s.name);
        }
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
