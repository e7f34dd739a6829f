//! The live progress line on a terminal: elapsed time, request rate, outcomes, and which
//! versions answered in the last moment (so a rollout shows while it happens).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rollguard_load::{LiveStats, LiveView};
use tokio::task::JoinHandle;

const TICK: Duration = Duration::from_millis(250);

/// A progress line on stderr when it is a terminal; otherwise lines are printed plainly
/// and the live line is left out.
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
    phase: Arc<Mutex<String>>,
    total: Option<Duration>,
}

impl Progress {
    /// A progress line for a run of `total` (unknown when a command decides the end).
    pub fn new(total: Option<Duration>) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner:.cyan} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        Self {
            bar,
            phase: Arc::new(Mutex::new("loading".into())),
            total,
        }
    }

    /// Sets what the run is doing now (shown at the start of the live line).
    pub fn phase(&self, phase: String) {
        if self.bar.is_hidden() {
            eprintln!("rollguard: {phase}");
        }
        if let Ok(mut p) = self.phase.lock() {
            *p = phase;
        }
    }

    /// Prints a line above the live line (or plainly on stderr without a terminal).
    pub fn line(&self, text: String) {
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }

    /// Updates the live line from the run's counters until aborted.
    pub fn start_ticker(&self, live: LiveView) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut last = LiveStats::default();
            let mut interval = tokio::time::interval(TICK);
            loop {
                interval.tick().await;
                let now = live.stats();
                this.bar
                    .set_message(this.message(live.elapsed(), &last, &now));
                this.bar.tick();
                last = now;
            }
        })
    }

    /// Removes the live line.
    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }

    fn message(&self, elapsed: Duration, last: &LiveStats, now: &LiveStats) -> String {
        let done = (now.ok + now.failed).saturating_sub(last.ok + last.failed);
        let rate = done as f64 / TICK.as_secs_f64();
        let clock = match self.total {
            Some(total) => format!("{:.1}s/{}s", elapsed.as_secs_f64(), total.as_secs()),
            None => format!("{:.1}s", elapsed.as_secs_f64()),
        };
        let phase = self.phase.lock().map(|p| p.clone()).unwrap_or_default();
        let mut msg = format!(
            "{clock} {phase} | {rate:.0} req/s | ok {} | failed {}",
            now.ok, now.failed
        );
        let recent: Vec<(&str, u64)> = now
            .versions
            .iter()
            .map(|(name, n)| {
                let before = last
                    .versions
                    .iter()
                    .find(|(v, _)| v == name)
                    .map_or(0, |(_, b)| *b);
                (name.as_str(), n.saturating_sub(before))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        let sum: u64 = recent.iter().map(|(_, n)| n).sum();
        if !recent.is_empty() {
            msg.push_str(" | now");
        }
        for (name, n) in recent {
            let share = (n * 100).checked_div(sum).unwrap_or(0);
            msg.push_str(&format!(" {name} {share}%"));
        }
        msg
    }
}
