//! Which response statuses count as success (`--expect-status`).

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// A set of HTTP status codes, written as `200-399` or `200,204,300-399`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<RangeInclusive<u16>>);

impl Default for StatusSet {
    /// `200-399`: success and redirects, as a load balancer's health check would accept.
    fn default() -> Self {
        Self(vec![200..=399])
    }
}

impl StatusSet {
    /// Whether `status` is in the set.
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|r| r.contains(&status))
    }
}

/// Why a status set could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid status set '{0}': expected codes and ranges such as 200-399 or 200,204")]
pub struct StatusSetError(String);

impl FromStr for StatusSet {
    type Err = StatusSetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || StatusSetError(s.to_owned());
        let code = |t: &str| -> Result<u16, StatusSetError> {
            t.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(err)
        };
        let ranges = s
            .split(',')
            .map(|part| match part.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (code(lo)?, code(hi)?);
                    if lo > hi {
                        return Err(err());
                    }
                    Ok(lo..=hi)
                }
                None => code(part).map(|c| c..=c),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(ranges))
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_codes_and_ranges() {
        let set: StatusSet = "200,204,300-399".parse().unwrap();
        assert!(set.contains(200) && set.contains(204) && set.contains(302));
        assert!(!set.contains(201) && !set.contains(404));
        assert_eq!(set.to_string(), "200,204,300-399");
        assert!(StatusSet::default().contains(301));
        assert!(!StatusSet::default().contains(503));
    }

    #[test]
    fn rejects_bad_sets() {
        for bad in ["", "abc", "399-200", "200-", "99", "600", "200,,204"] {
            assert!(bad.parse::<StatusSet>().is_err(), "{bad}");
        }
    }
}
