//! `.rollguard.toml`: rules turned off or given another severity, and the timing budgets.
//!
//! ```toml
//! [rules]
//! RG015 = "off"        # off | info | warning | error
//! RG009 = "error"
//!
//! [timing]
//! propagation = "5s"   # how long endpoint removal takes to reach every load balancer
//! drain = "10s"        # how long the app needs after SIGTERM to finish its requests
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rollguard_core::duration::parse_duration;
use serde::Deserialize;

use crate::catalogue::{RULES, Severity, rule};

/// The configuration file's name.
pub const FILE_NAME: &str = ".rollguard.toml";

/// What `check` assumes and reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The severity of each rule, `None` when the rule is off; indexed like
    /// [`RULES`](crate::catalogue::RULES).
    severities: [Option<Severity>; RULES.len()],
    /// How long endpoint removal takes to reach every kube-proxy and load balancer: the
    /// shortest delay before SIGTERM that RG004 accepts. Default 5 s.
    pub propagation: Duration,
    /// How long the app needs after SIGTERM to finish its in-flight requests, for RG005.
    /// Default 10 s.
    pub drain: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            severities: RULES.map(|r| Some(r.severity)),
            propagation: Duration::from_secs(5),
            drain: Duration::from_secs(10),
        }
    }
}

/// A configuration file that can't be used. Displays as `FILE:LINE: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (1 when the error is not about one place).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    rules: BTreeMap<String, toml::Spanned<String>>,
    #[serde(default)]
    timing: Timing,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Timing {
    propagation: Option<toml::Spanned<String>>,
    drain: Option<toml::Spanned<String>>,
}

impl Config {
    /// The severity of rule `id`, or `None` when it is off or unknown.
    pub fn severity(&self, id: &str) -> Option<Severity> {
        let index = RULES.iter().position(|r| r.id == id)?;
        self.severities[index]
    }

    /// Turns a rule off (`None`) or gives it a severity.
    pub fn set_severity(&mut self, id: &str, severity: Option<Severity>) {
        if let Some(index) = RULES.iter().position(|r| r.id == id) {
            self.severities[index] = severity;
        }
    }

    /// Parses the text of a configuration file; `file` only names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let error = |offset: usize, message: String| ConfigError {
            file: file.to_owned(),
            line: line_of(offset),
            message,
        };
        let parsed: File = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            error(at, e.message().to_string())
        })?;
        let mut config = Self::default();
        for (id, value) in &parsed.rules {
            let at = value.span().start;
            let Some(rule) = rule(id) else {
                return Err(error(
                    at,
                    format!("rules: unknown rule '{id}' (expected RG001 to RG015)"),
                ));
            };
            let severity = match value.get_ref().as_str() {
                "off" => None,
                other => Some(
                    other
                        .parse::<Severity>()
                        .map_err(|e| error(at, format!("rules.{id}: {e}, or off")))?,
                ),
            };
            config.set_severity(rule.id, severity);
        }
        let duration = |value: &toml::Spanned<String>, key: &str| {
            parse_duration(value.get_ref())
                .map_err(|e| error(value.span().start, format!("timing.{key}: {e}")))
        };
        if let Some(v) = &parsed.timing.propagation {
            config.propagation = duration(v, "propagation")?;
        }
        if let Some(v) = &parsed.timing.drain {
            config.drain = duration(v, "drain")?;
        }
        Ok(config)
    }

    /// Reads `file`.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_owned(),
            line: 1,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, file)
    }

    /// Finds `.rollguard.toml` in `dir` or the nearest of its parents.
    pub fn discover(dir: &Path) -> Option<PathBuf> {
        dir.ancestors()
            .map(|d| d.join(FILE_NAME))
            .find(|f| f.is_file())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_timing_are_read() {
        let c = Config::parse(
            "[rules]\nRG015 = \"off\"\nrg009 = \"error\"\n[timing]\npropagation = \"8s\"\n",
            Path::new("c.toml"),
        )
        .expect("valid");
        assert_eq!(c.severity("RG015"), None);
        assert_eq!(c.severity("RG009"), Some(Severity::Error));
        assert_eq!(c.severity("RG001"), Some(Severity::Error));
        assert_eq!(c.propagation, Duration::from_secs(8));
        assert_eq!(c.drain, Duration::from_secs(10));
    }

    #[test]
    fn errors_name_the_line() {
        let e = Config::parse("[rules]\n\nRG099 = \"off\"\n", Path::new("c.toml")).unwrap_err();
        assert_eq!((e.line, e.to_string().contains("RG099")), (3, true));
        let e = Config::parse("[timing]\ndrain = \"soon\"\n", Path::new("c.toml")).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().starts_with("c.toml:2: timing.drain"));
        let e = Config::parse("[rules]\nRG001 = \"loud\"\n", Path::new("c.toml")).unwrap_err();
        assert!(e.message.contains("loud"), "{e}");
        let e = Config::parse("[other]\n", Path::new("c.toml")).unwrap_err();
        assert_eq!(e.line, 1);
    }
}
