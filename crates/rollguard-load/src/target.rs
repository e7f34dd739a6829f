//! The URL under load: where to connect and what to put in the request line.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};

/// A parsed `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    uri: Uri,
    tls: bool,
    host: String,
    port: u16,
}

/// Why a URL was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// The text is not a URL at all.
    #[error("'{0}' is not a valid URL: {1}")]
    Invalid(String, String),
    /// The URL has no scheme or one other than http/https.
    #[error("'{0}' must start with http:// or https://")]
    Scheme(String),
    /// The URL has no host.
    #[error("'{0}' has no host")]
    NoHost(String),
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let uri: Uri = s.parse().map_err(|e: http::uri::InvalidUri| {
            TargetError::Invalid(s.to_owned(), e.to_string())
        })?;
        let tls = match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTP => false,
            Some(scheme) if *scheme == Scheme::HTTPS => true,
            _ => return Err(TargetError::Scheme(s.to_owned())),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| TargetError::NoHost(s.to_owned()))?;
        // `Uri::host` keeps the brackets of an IPv6 literal; the resolver wants them off.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Self {
            uri,
            tls,
            host,
            port,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.uri)
    }
}

impl Target {
    /// Whether the connection is wrapped in TLS (`https://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The host name or address, without IPv6 brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, defaulted from the scheme.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `host[:port]` as written in the URL: the value of `Host` and `:authority`.
    pub fn authority(&self) -> Option<&Authority> {
        self.uri.authority()
    }

    /// The path and query for an HTTP/1.1 request line.
    pub fn path_and_query(&self) -> PathAndQuery {
        self.uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"))
    }

    /// The absolute URI, as HTTP/2 requests carry it.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }
}

/// Resolves the target's host, keeping the answer for a short while so that fresh
/// connections at a high rate don't each pay for a lookup, while a DNS change (a new
/// Service IP, a new ingress address) is still followed within a second.
#[derive(Debug)]
pub(crate) struct Resolver {
    host: String,
    port: u16,
    literal: Option<SocketAddr>,
    cache: Mutex<Option<(Instant, Vec<SocketAddr>)>>,
}

const RESOLVE_TTL: Duration = Duration::from_secs(1);

impl Resolver {
    pub(crate) fn new(target: &Target) -> Self {
        let literal = target
            .host
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, target.port));
        Self {
            host: target.host.clone(),
            port: target.port,
            literal,
            cache: Mutex::new(None),
        }
    }

    /// The first address of the host (the cached answer when it is fresh).
    pub(crate) async fn resolve(&self) -> std::io::Result<SocketAddr> {
        if let Some(addr) = self.literal {
            return Ok(addr);
        }
        if let Some(addr) = self.cached() {
            return Ok(addr);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .collect();
        let first = addrs.first().copied().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} has no address", self.host),
            )
        })?;
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some((Instant::now(), addrs));
        }
        Ok(first)
    }

    fn cached(&self) -> Option<SocketAddr> {
        let cache = self.cache.lock().ok()?;
        let (at, addrs) = cache.as_ref()?;
        (at.elapsed() < RESOLVE_TTL).then(|| addrs.first().copied())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_https_and_ipv6() {
        let t: Target = "http://127.0.0.1:8080/health?x=1".parse().unwrap();
        assert!(!t.is_tls());
        assert_eq!((t.host(), t.port()), ("127.0.0.1", 8080));
        assert_eq!(t.path_and_query().as_str(), "/health?x=1");

        let t: Target = "https://example.test".parse().unwrap();
        assert!(t.is_tls());
        assert_eq!(t.port(), 443);
        assert_eq!(t.path_and_query().as_str(), "/");

        let t: Target = "http://[::1]:9000/".parse().unwrap();
        assert_eq!(t.host(), "::1");
        assert_eq!(t.authority().unwrap().as_str(), "[::1]:9000");
    }

    #[test]
    fn rejects_what_is_not_an_http_url() {
        assert!(matches!(
            "localhost:8080".parse::<Target>(),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            "ftp://x/".parse::<Target>(),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            "http://".parse::<Target>(),
            Err(TargetError::Invalid(..))
        ));
        assert!(matches!(
            "not a url".parse::<Target>(),
            Err(TargetError::Invalid(..))
        ));
    }
}
