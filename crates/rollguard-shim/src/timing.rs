//! The drain sequence's timing: the propagation delay (fixed or adaptive) and the check that
//! every phase fits in the pod's grace period.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rollguard_core::duration::{format_duration, parse_duration};

/// How long the shim keeps serving normally after SIGTERM, while endpoint removal
/// propagates through the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainDelay {
    /// Exactly this long.
    Fixed(Duration),
    /// At least `min`; then as soon as no new connection has arrived for the quiet time;
    /// at most `max`.
    Adaptive {
        /// The shortest delay.
        min: Duration,
        /// The longest delay.
        max: Duration,
    },
}

impl DrainDelay {
    /// The longest the delay can last.
    pub fn max(&self) -> Duration {
        match *self {
            Self::Fixed(delay) => delay,
            Self::Adaptive { max, .. } => max,
        }
    }

    /// How much longer the delay lasts, `elapsed` after SIGTERM, when the last new
    /// connection arrived `since_last_connection` ago (`None`: none has arrived); `None`
    /// when the delay is over.
    pub fn remaining(
        &self,
        elapsed: Duration,
        since_last_connection: Option<Duration>,
        quiet: Duration,
    ) -> Option<Duration> {
        let until = |end: Duration| end.checked_sub(elapsed).filter(|d| !d.is_zero());
        match *self {
            Self::Fixed(delay) => until(delay),
            Self::Adaptive { min, max } => {
                let to_max = until(max)?;
                if let Some(to_min) = until(min) {
                    return Some(to_min);
                }
                let to_quiet = since_last_connection
                    .and_then(|since| quiet.checked_sub(since))
                    .filter(|d| !d.is_zero())?;
                Some(to_quiet.min(to_max))
            }
        }
    }
}

/// A `--drain-delay` that is neither `D` nor `MIN..MAX`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a delay: {reason} (examples: 5s, 2s..15s)")]
pub struct BadDrainDelay {
    text: String,
    reason: String,
}

impl FromStr for DrainDelay {
    type Err = BadDrainDelay;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| BadDrainDelay {
            text: text.to_owned(),
            reason,
        };
        let parse = |part: &str| parse_duration(part.trim()).map_err(|e| bad(e.to_string()));
        match text.split_once("..") {
            None => Ok(Self::Fixed(parse(text)?)),
            Some((min, max)) => {
                let (min, max) = (parse(min)?, parse(max)?);
                if min > max {
                    return Err(bad(format!(
                        "MIN ({}) is longer than MAX ({})",
                        format_duration(min),
                        format_duration(max)
                    )));
                }
                Ok(Self::Adaptive { min, max })
            }
        }
    }
}

impl fmt::Display for DrainDelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Fixed(delay) => f.write_str(&format_duration(delay)),
            Self::Adaptive { min, max } => {
                write!(f, "{}..{}", format_duration(min), format_duration(max))
            }
        }
    }
}

/// The longest each phase can last, to check against the grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The propagation delay at its longest.
    pub drain_delay: Duration,
    /// The longest wait for in-flight requests (zero without the proxy).
    pub drain_timeout: Duration,
    /// The wait between the stop signal and SIGKILL.
    pub stop_timeout: Duration,
    /// `terminationGracePeriodSeconds`.
    pub grace_period: Duration,
}

impl Budget {
    /// The phases at their longest.
    pub fn total(&self) -> Duration {
        self.drain_delay
            .saturating_add(self.drain_timeout)
            .saturating_add(self.stop_timeout)
    }

    /// Why the phases do not fit in the grace period, or `None` when they do.
    pub fn overrun(&self) -> Option<String> {
        let total = self.total();
        (total > self.grace_period).then(|| {
            format!(
                "the shutdown phases can take {} (drain delay {} + drain timeout {} + stop \
                 timeout {}), longer than the grace period of {}: the pod would be SIGKILLed \
                 before the app stops; shorten the phases or raise \
                 terminationGracePeriodSeconds (and --grace-period) to at least {}",
                format_duration(total),
                format_duration(self.drain_delay),
                format_duration(self.drain_timeout),
                format_duration(self.stop_timeout),
                format_duration(self.grace_period),
                total
                    .as_secs()
                    .saturating_add(u64::from(total.subsec_nanos() > 0)),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn delays_parse() {
        assert_eq!("5s".parse(), Ok(DrainDelay::Fixed(5 * S)));
        assert_eq!(
            "2s..15s".parse(),
            Ok(DrainDelay::Adaptive {
                min: 2 * S,
                max: 15 * S
            })
        );
        assert!("15s..2s".parse::<DrainDelay>().is_err());
        assert!("soon".parse::<DrainDelay>().is_err());
        assert!("1s..".parse::<DrainDelay>().is_err());
        assert_eq!(
            "2s..15s".parse::<DrainDelay>().map(|d| d.to_string()),
            Ok("2.00s..15.00s".into())
        );
    }

    #[test]
    fn fixed_delay_ends_on_time() {
        let delay = DrainDelay::Fixed(5 * S);
        assert_eq!(delay.remaining(2 * S, None, S), Some(3 * S));
        assert_eq!(delay.remaining(5 * S, None, S), None);
    }

    #[test]
    fn adaptive_delay_waits_for_quiet_between_min_and_max() {
        let delay = DrainDelay::Adaptive {
            min: 2 * S,
            max: 10 * S,
        };
        // Before MIN: wait for MIN, whatever the traffic.
        assert_eq!(delay.remaining(S, Some(5 * S), S), Some(S));
        // After MIN, quiet for longer than the quiet time: over.
        assert_eq!(delay.remaining(3 * S, Some(2 * S), S), None);
        // After MIN, a connection 300 ms ago: 700 ms more.
        assert_eq!(
            delay.remaining(3 * S, Some(Duration::from_millis(300)), S),
            Some(Duration::from_millis(700))
        );
        // Never beyond MAX.
        assert_eq!(
            delay.remaining(Duration::from_millis(9500), Some(Duration::ZERO), S),
            Some(Duration::from_millis(500))
        );
        assert_eq!(delay.remaining(10 * S, Some(Duration::ZERO), S), None);
    }

    #[test]
    fn budget_warns_only_when_phases_overrun() {
        let budget = Budget {
            drain_delay: 5 * S,
            drain_timeout: 15 * S,
            stop_timeout: 5 * S,
            grace_period: 30 * S,
        };
        assert_eq!(budget.overrun(), None);
        let tight = Budget {
            grace_period: 20 * S,
            ..budget
        };
        let message = tight.overrun().expect("overrun");
        assert!(message.contains("25.00s"), "{message}");
        assert!(message.contains("at least 25"), "{message}");
        let huge = Budget {
            drain_delay: Duration::MAX,
            stop_timeout: Duration::MAX,
            ..budget
        };
        assert!(huge.overrun().is_some());
    }
}
