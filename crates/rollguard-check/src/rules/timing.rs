//! RG004, RG005 and RG006: the delay before SIGTERM, the grace period, and readiness on
//! shutdown.

use crate::fix::{Edit, Fragment, insert_entries, replace_string, set_entry};
use crate::model::{Container, Shim, Workload, program_name, sleep_seconds};
use crate::source::Source;
use crate::yaml::Node;

use super::shell::{shell_argv_script, split_commands};
use super::{Cx, Place, secs};

/// Where a preStop delay is written, for `--fix` to raise it.
#[derive(Clone, Copy)]
pub(super) enum Editable<'a> {
    /// `sleep.seconds`: the `sleep` mapping (the value is set as a plain integer).
    Seconds(&'a Node),
    /// The operand of an exec `sleep N` (a string: its quotes are kept).
    Operand(&'a Node),
}

/// A delay before SIGTERM reaches a serving container's process.
pub(super) enum Delay<'a> {
    /// None at all.
    None,
    /// Seconds (shortest and longest), how it is made, and the scalar `--fix` may raise.
    Known {
        min: f64,
        max: f64,
        how: String,
        at: &'a Node,
        editable: Option<Editable<'a>>,
        /// The drain time after the delay, when the shim sets it.
        drain: Option<f64>,
    },
    /// A preStop hook whose length can't be known.
    Unknown,
}

impl<'a> Cx<'_, 'a> {
    /// RG004 and RG006 for one serving container.
    pub(super) fn delay_before_sigterm(
        &mut self,
        w: &Workload<'a>,
        c: &Container<'a>,
        delay: &Delay<'a>,
        containers: &[Container<'a>],
        p: &Place<'_>,
    ) {
        let budget = self.config.propagation.as_secs_f64();
        let budget_secs = budget.ceil() as i64;
        match *delay {
            Delay::None => {
                if let Some(shim) = c.shim.as_ref().filter(|s| s.sidecar && c.native_sidecar) {
                    let port = shim
                        .health_port
                        .map_or("its health port".into(), |p| p.to_string());
                    self.report(
                        "RG004",
                        p,
                        c.node.start,
                        format!(
                            "the shim in native sidecar '{}' is stopped only after the app: no container's preStop calls GET /prestop on {port}, so the app gets SIGTERM at once",
                            c.name
                        ),
                    );
                    return;
                }
                let edit = Self::add_pre_stop_sleep(self.source(&w.object), c, budget_secs);
                self.report_with(
                    "RG004",
                    p,
                    c.node.start,
                    format!(
                        "container '{}' gets SIGTERM while endpoints still point at it: no preStop delay and no rollguard shim (propagation budget {})",
                        c.name,
                        secs(budget)
                    ),
                    edit,
                );
            }
            Delay::Known {
                min,
                ref how,
                at,
                editable,
                ..
            } if min < budget => {
                let source = self.source(&w.object);
                let value = budget_secs.to_string();
                let edit = editable.and_then(|e| match e {
                    Editable::Seconds(sleep) => set_entry(source, sleep, "seconds", &value),
                    Editable::Operand(n) => Some(replace_string(source, n, &value)),
                });
                self.report_with(
                    "RG004",
                    p,
                    at.start,
                    format!(
                        "container '{}': {how} delays SIGTERM by {}, less than the {} endpoints take to propagate",
                        c.name,
                        secs(min),
                        secs(budget)
                    ),
                    edit,
                );
            }
            Delay::Known { .. } | Delay::Unknown => {}
        }
        // RG006: readiness that fails on shutdown (the shim's /ready) must be seen before
        // the drain delay ends.
        let Some(probe) = c.probe("readinessProbe") else {
            return;
        };
        let Some(port) = probe.at(&["httpGet", "port"]) else {
            return;
        };
        let path = probe.at(&["httpGet", "path"]).and_then(Node::as_str);
        let number = c.port_number(port);
        let shim = containers.iter().find_map(|other| {
            other
                .shim
                .as_ref()
                .filter(|s| s.health_port.is_some() && s.health_port == number)
        });
        let (Some(shim), Some("/ready")) = (shim, path) else {
            return;
        };
        let period = probe
            .get("periodSeconds")
            .and_then(Node::as_i64)
            .unwrap_or(10);
        let threshold = probe
            .get("failureThreshold")
            .and_then(Node::as_i64)
            .unwrap_or(3);
        let detect = period.max(0) as f64 * threshold.max(0) as f64;
        let drain_delay = shim.drain_delay.0.as_secs_f64();
        if detect > drain_delay {
            let at = probe
                .get("periodSeconds")
                .or(probe.get("failureThreshold"))
                .map_or(probe.start, |n| n.start);
            self.report(
                "RG006",
                p,
                at,
                format!(
                    "container '{}': the shim's /ready turns unready on SIGTERM, but failureThreshold {threshold} x periodSeconds {period} = {} is longer than its drain delay {}",
                    c.name,
                    secs(detect),
                    secs(drain_delay)
                ),
            );
        }
    }

    fn add_pre_stop_sleep(source: &Source, c: &Container<'a>, seconds: i64) -> Option<Edit> {
        let sleep = Fragment::Map(vec![(
            "sleep",
            Fragment::Map(vec![("seconds", Fragment::Scalar(seconds.to_string()))]),
        )]);
        match c.node.get("lifecycle") {
            None => insert_entries(
                source,
                c.node,
                &[("lifecycle", Fragment::Map(vec![("preStop", sleep)]))],
            ),
            Some(lifecycle) if lifecycle.get("preStop").is_none() => {
                insert_entries(source, lifecycle, &[("preStop", sleep)])
            }
            Some(_) => None,
        }
    }

    /// RG005: the delay and the drain must fit in the grace period.
    pub(super) fn grace_period(
        &mut self,
        w: &Workload<'a>,
        containers: &[Container<'a>],
        delays: &[Option<Delay<'a>>],
        place: &dyn Fn(Option<&Container<'_>>) -> Place<'a>,
    ) {
        let drain_budget = self.config.drain.as_secs_f64();
        let mut worst: Option<(f64, String, &'a Node, &Container<'a>)> = None;
        for (c, d) in containers.iter().zip(delays) {
            if let Some(Delay::Known {
                max,
                how,
                at,
                drain,
                ..
            }) = d
            {
                let (max, at) = (*max, *at);
                let (drain, what) = match *drain {
                    Some(d) => (d, "the shim's drain and stop timeouts"),
                    None => (drain_budget, "the drain budget"),
                };
                let need = max + drain;
                if worst.as_ref().is_none_or(|(n, ..)| need > *n) {
                    let why = format!("{how} ({}) plus {what} ({})", secs(max), secs(drain));
                    worst = Some((need, why, at, c));
                }
            }
        }
        let Some((need, why, delay_at, container)) = worst else {
            return;
        };
        let p = &place(Some(container));
        let (grace, grace_node) = match w.grace_period() {
            Some((g, n)) => (g, Some(n)),
            None => (30, None),
        };
        // Written but not an integer (a null Helm rendered, a string): the API server
        // defaults or rejects it; the fix writes the value over it.
        let written_key = w.pod.get("terminationGracePeriodSeconds").is_some();
        let unreadable = grace_node.is_none() && written_key;
        if need <= grace as f64 {
            return;
        }
        let fixed = need.ceil() as i64;
        let source = self.source(&w.object);
        let edit = if written_key {
            set_entry(
                source,
                w.pod,
                "terminationGracePeriodSeconds",
                &fixed.to_string(),
            )
        } else {
            insert_entries(
                source,
                w.pod,
                &[(
                    "terminationGracePeriodSeconds",
                    Fragment::Scalar(fixed.to_string()),
                )],
            )
        };
        let written = match (grace_node, unreadable) {
            (Some(_), _) => "",
            (None, true) => " (the default: the value written is not an integer)",
            (None, false) => " (the default)",
        };
        self.report_with(
            "RG005",
            p,
            grace_node.map_or(delay_at.start, |n| n.start),
            format!(
                "{why} need {}, but terminationGracePeriodSeconds is {grace}{written}: the app is SIGKILLed with requests in flight",
                secs(need)
            ),
            edit,
        );
    }
}

/// The delay before SIGTERM reaches container `c`.
pub(super) fn delay<'a>(c: &Container<'a>, containers: &[Container<'a>]) -> Delay<'a> {
    let known = |min: f64, max: f64, how: String, at: &'a Node| Delay::Known {
        min,
        max,
        how,
        at,
        editable: None,
        drain: None,
    };
    if let Some(shim) = &c.shim {
        if !shim.sidecar || !c.native_sidecar {
            return shim_delay(shim, "the shim's --drain-delay", c.node);
        }
        // A native sidecar drains when an app container's preStop calls its /prestop.
        let hooked = containers.iter().find_map(|other| {
            let hook = other.pre_stop()?.get("httpGet")?;
            let path = hook.get("path").and_then(Node::as_str)?;
            (path == "/prestop" && c.port_number(hook.get("port")?) == shim.health_port)
                .then_some(hook)
        });
        return match hooked {
            Some(hook) => shim_delay(shim, "the shim's /prestop hook", hook),
            None => Delay::None,
        };
    }
    let Some(pre_stop) = c.pre_stop() else {
        return Delay::None;
    };
    if let Some(sleep) = pre_stop.get("sleep") {
        let seconds = sleep.get("seconds");
        let s = seconds
            .and_then(Node::scalar_text)
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(0.0);
        return Delay::Known {
            min: s,
            max: s,
            how: "preStop sleep".into(),
            at: seconds.unwrap_or(sleep),
            editable: Some(Editable::Seconds(sleep)),
            drain: None,
        };
    }
    if let Some(command) = pre_stop.at(&["exec", "command"]) {
        let argv: Vec<String> = command
            .items()
            .iter()
            .filter_map(Node::scalar_text)
            .collect();
        match argv.first().map(|a| program_name(a)) {
            // Only when every item is a scalar do the argv and the items line up.
            Some("sleep") if argv.len() == 2 && command.items().len() == 2 => {
                if let Some(s) = sleep_seconds(&argv[1]) {
                    let operand = &command.items()[1];
                    let plain = argv[1].parse::<u64>().is_ok();
                    return Delay::Known {
                        min: s,
                        max: s,
                        how: "preStop `sleep`".into(),
                        at: operand,
                        editable: plain.then_some(Editable::Operand(operand)),
                        drain: None,
                    };
                }
            }
            Some("rollguard") if argv.get(1).map(String::as_str) == Some("sleep") => {
                let d = argv.get(2).and_then(|a| {
                    rollguard_core::duration::parse_duration(a)
                        .ok()
                        .map(|d| d.as_secs_f64())
                        .or_else(|| sleep_seconds(a))
                });
                if let Some(s) = d {
                    return known(s, s, "preStop `rollguard sleep`".into(), command);
                }
            }
            _ => {}
        }
        if let Some(script) = shell_argv_script(&argv) {
            let total = split_commands(&script)
                .iter()
                .filter_map(|(cmd, _)| {
                    let mut words = cmd.split_whitespace();
                    (words.next().map(program_name) == Some("sleep"))
                        .then(|| words.next().and_then(sleep_seconds))
                        .flatten()
                })
                .sum::<f64>();
            if total > 0.0 {
                return known(total, total, "preStop shell `sleep`".into(), command);
            }
        }
        return Delay::Unknown;
    }
    if let Some(hook) = pre_stop.get("httpGet") {
        let port = hook.get("port");
        let path = hook.get("path").and_then(Node::as_str);
        let shim = containers.iter().find_map(|other| {
            let shim = other.shim.as_ref()?;
            let n = port.and_then(|p| other.port_number(p))?;
            (shim.health_port == Some(n) && path == Some("/prestop")).then_some(shim)
        });
        if let Some(shim) = shim {
            return shim_delay(shim, "the shim's /prestop hook", hook);
        }
    }
    Delay::Unknown
}

/// The delay a shim gives: its drain delay, then its drain and stop timeouts.
fn shim_delay<'a>(shim: &Shim, how: &str, at: &'a Node) -> Delay<'a> {
    Delay::Known {
        min: shim.drain_delay.0.as_secs_f64(),
        max: shim.drain_delay.1.as_secs_f64(),
        how: how.into(),
        at,
        editable: None,
        drain: Some(shim.drain_timeout.as_secs_f64() + shim.stop_timeout.as_secs_f64()),
    }
}
