//! What the demo app is told to be: its color and how badly it behaves.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use http::HeaderValue;

/// Everything that shapes one demo app: its version (color) and the switches that reproduce
/// each rollout failure. [`Config::default`] is the naive app: red, ready at once, dies on
/// SIGTERM.
#[derive(Debug, Clone)]
pub struct Config {
    /// The version this app serves; sent as `X-Version` on every response.
    pub color: Color,
    /// What SIGTERM does once `drain_delay` has passed.
    pub on_sigterm: OnSigterm,
    /// How long to keep serving normally after SIGTERM before applying `on_sigterm`
    /// (what a preStop `sleep` buys in Kubernetes).
    pub drain_delay: Duration,
    /// Whether `/health` answers 503 from the moment SIGTERM arrives.
    pub fail_health_on_sigterm: bool,
    /// Whether every HTTP/1.1 answer carries `Connection: close` from the moment SIGTERM
    /// arrives, drain delay included, so kept-alive clients move to another pod before any
    /// idle connection is closed under them (the keep-alive race).
    pub close_keepalive_on_sigterm: bool,
    /// How long to wait before listening; connections are refused meanwhile.
    pub startup_delay: Duration,
    /// How long `/health` answers 503 after listening starts.
    pub ready_delay: Duration,
    /// How long a connection with no request in flight may stay open; zero never closes it.
    pub keepalive_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            color: Color::RED,
            on_sigterm: OnSigterm::Exit,
            drain_delay: Duration::ZERO,
            fail_health_on_sigterm: false,
            close_keepalive_on_sigterm: false,
            startup_delay: Duration::ZERO,
            ready_delay: Duration::ZERO,
            keepalive_timeout: Duration::from_secs(60),
        }
    }
}

/// What the app does with SIGTERM once the drain delay has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSigterm {
    /// Stop at once and cut every open connection, in-flight requests included (the naive
    /// default of most runtimes).
    Exit,
    /// Close the listener, finish in-flight requests, close keep-alive connections politely
    /// (`Connection: close`, HTTP/2 GOAWAY), then stop.
    Drain,
    /// Log it and keep serving; only SIGKILL ends the app (a shell PID 1 that never forwards
    /// the signal looks like this).
    Ignore,
}

impl fmt::Display for OnSigterm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Exit => "exit",
            Self::Drain => "drain",
            Self::Ignore => "ignore",
        })
    }
}

/// The version an app serves, named by a color so a person can tell versions apart in a
/// browser. It ends up in a response header and in HTML, so it is limited to ASCII letters,
/// digits, `-`, `_` and `#` (CSS names like `red` or hex like `#ff8800` both work).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Color {
    name: Cow<'static, str>,
    // Built once so that every response only clones it (a reference count) instead of
    // validating the header value again.
    header: HeaderValue,
}

impl Color {
    /// The default version.
    pub const RED: Color = Color {
        name: Cow::Borrowed("red"),
        header: HeaderValue::from_static("red"),
    };

    /// The color as written, e.g. `red`.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The color as an `X-Version` header value.
    pub(crate) fn header(&self) -> &HeaderValue {
        &self.header
    }
}

impl FromStr for Color {
    type Err = ColorError;

    fn from_str(name: &str) -> Result<Self, ColorError> {
        const MAX_LEN: usize = 64;
        let invalid = || ColorError {
            name: name.to_owned(),
        };
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '#');
        if name.is_empty() || name.len() > MAX_LEN || !name.chars().all(allowed) {
            return Err(invalid());
        }
        let header = HeaderValue::from_str(name).map_err(|_| invalid())?;
        Ok(Color {
            name: Cow::Owned(name.to_owned()),
            header,
        })
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A color name that cannot be used as a version.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid color '{name}': use 1 to 64 ASCII letters, digits, '-', '_' or '#' (e.g. red, blue, #ff8800)"
)]
pub struct ColorError {
    name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colors_are_header_and_html_safe() {
        for good in ["red", "blue", "#ff8800", "v2_green-1"] {
            assert_eq!(good.parse::<Color>().unwrap().as_str(), good);
        }
        for bad in [
            "",
            "red blue",
            "<b>",
            "rouge\u{e9}",
            "a\"b",
            &"x".repeat(65),
        ] {
            let err = bad.parse::<Color>().unwrap_err().to_string();
            assert!(err.contains("invalid color"), "{bad}: {err}");
        }
    }
}
