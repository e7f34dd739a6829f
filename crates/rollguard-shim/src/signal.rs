//! Signal names on the command line, the rewrite table, and which signals the shim passes on.

use std::fmt;
use std::str::FromStr;

use nix::sys::signal::Signal;

/// The signals the shim passes on to the app as they come (after rewriting). SIGTERM and
/// SIGINT are not in the list: they drive the drain sequence. SIGCHLD is the shim's own.
pub const FORWARDED: [Signal; 8] = [
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
    Signal::SIGALRM,
    Signal::SIGPWR,
];

/// A signal given on the command line as `TERM`, `SIGTERM`, `term` or `15`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalArg(pub Signal);

/// A signal name or number that names no signal the shim can send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a signal (use a name such as TERM, SIGINT, USR1, or a number such as 15)")]
pub struct BadSignal(String);

impl FromStr for SignalArg {
    type Err = BadSignal;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadSignal(text.to_owned());
        let signal = if let Ok(number) = text.parse::<i32>() {
            Signal::try_from(number).map_err(|_| bad())?
        } else {
            let upper = text.to_ascii_uppercase();
            let name = if upper.starts_with("SIG") {
                upper
            } else {
                format!("SIG{upper}")
            };
            Signal::from_str(&name).map_err(|_| bad())?
        };
        Ok(SignalArg(signal))
    }
}

impl fmt::Display for SignalArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(name(self.0))
    }
}

/// The short name of `signal`: `TERM` for SIGTERM.
pub fn name(signal: Signal) -> &'static str {
    let full = signal.as_str();
    full.strip_prefix("SIG").unwrap_or(full)
}

/// One `--rewrite FROM:TO`: the shim sends `to` wherever it would have sent `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    /// The signal as received (or as configured, for the stop signal).
    pub from: Signal,
    /// The signal the app gets instead.
    pub to: Signal,
}

/// A `--rewrite` value that is not `FROM:TO`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRewrite {
    /// No colon.
    #[error("`{0}` is not FROM:TO (for example TERM:INT)")]
    Shape(String),
    /// One side is not a signal.
    #[error(transparent)]
    Signal(#[from] BadSignal),
}

impl FromStr for Rewrite {
    type Err = BadRewrite;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (from, to) = text
            .split_once(':')
            .ok_or_else(|| BadRewrite::Shape(text.to_owned()))?;
        Ok(Rewrite {
            from: from.parse::<SignalArg>()?.0,
            to: to.parse::<SignalArg>()?.0,
        })
    }
}

/// Every `--rewrite`, applied to each signal the shim sends to the app but SIGKILL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrites(Vec<Rewrite>);

impl Rewrites {
    /// The table; when two entries rewrite the same signal, the first wins.
    pub fn new(rewrites: Vec<Rewrite>) -> Self {
        Rewrites(rewrites)
    }

    /// The signal to send in place of `signal`.
    pub fn apply(&self, signal: Signal) -> Signal {
        self.0
            .iter()
            .find(|r| r.from == signal)
            .map_or(signal, |r| r.to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        for text in ["TERM", "SIGTERM", "term", "15"] {
            assert_eq!(text.parse::<SignalArg>(), Ok(SignalArg(Signal::SIGTERM)));
        }
        assert_eq!("usr1".parse::<SignalArg>(), Ok(SignalArg(Signal::SIGUSR1)));
        assert!("TERMINATE".parse::<SignalArg>().is_err());
        assert!("0".parse::<SignalArg>().is_err());
        assert!("99".parse::<SignalArg>().is_err());
        assert_eq!(SignalArg(Signal::SIGQUIT).to_string(), "QUIT");
    }

    #[test]
    fn rewrites_apply_first_match() {
        let rewrites = Rewrites::new(vec![
            "TERM:INT".parse().expect("valid"),
            "TERM:QUIT".parse().expect("valid"),
        ]);
        assert_eq!(rewrites.apply(Signal::SIGTERM), Signal::SIGINT);
        assert_eq!(rewrites.apply(Signal::SIGHUP), Signal::SIGHUP);
        assert!(matches!(
            "TERM".parse::<Rewrite>(),
            Err(BadRewrite::Shape(_))
        ));
        assert!(matches!(
            "TERM:NOPE".parse::<Rewrite>(),
            Err(BadRewrite::Signal(_))
        ));
    }
}
