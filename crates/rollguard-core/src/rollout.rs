//! Deployment rolling-update math, with the Kubernetes rounding and validation rules.
//!
//! A rolling update may run `maxSurge` pods above `replicas` and leave `maxUnavailable` pods
//! unavailable. Both are absolute numbers or percentages of `replicas`; a percent `maxSurge`
//! rounds up and a percent `maxUnavailable` rounds down, so 10 replicas at 25%/25% may surge
//! by 3 and lose 2.
//!
//! ```
//! use rollguard_core::rollout::RollingUpdate;
//!
//! let bounds = RollingUpdate::default().resolve(10).unwrap();
//! assert_eq!((bounds.max_surge, bounds.max_unavailable), (3, 2));
//! assert_eq!((bounds.max_total(), bounds.min_available()), (13, 8));
//! ```

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A count that is either absolute or a percentage of the replicas, like Kubernetes'
/// `IntOrString` in `maxSurge` and `maxUnavailable`.
///
/// Parsed from `1` or `25%`. In manifests it is a number or a `"N%"` string, as in Kubernetes,
/// which rejects a quoted number such as `"1"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntOrPercent {
    /// An absolute number of pods.
    Int(u32),
    /// A percentage of the desired replicas, rounded as the field prescribes.
    Percent(u32),
}

/// Why a value is not a valid [`IntOrPercent`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid value '{input}': expected a non-negative integer (e.g. 1) or a percentage (e.g. 25%)"
)]
pub struct IntOrPercentError {
    input: String,
}

/// The `rollingUpdate` parameters of a Deployment. `Default` is Kubernetes' 25%/25%, and a
/// field missing from a manifest gets its default, as the API server does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RollingUpdate {
    /// How many pods may exist above the desired replicas (percent rounds up).
    pub max_surge: IntOrPercent,
    /// How many of the desired replicas may be unavailable (percent rounds down).
    pub max_unavailable: IntOrPercent,
}

/// Why the API server would reject a [`RollingUpdate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RollingUpdateError {
    /// Both fields are literally zero (`0` or `0%`): the rollout could neither add nor remove a pod.
    #[error(
        "maxUnavailable may not be 0 when maxSurge is 0: the rollout could neither add nor remove a pod"
    )]
    BothZero,
    /// `maxUnavailable` is a percentage above 100%.
    #[error("maxUnavailable must not be greater than 100% (got {0})")]
    UnavailableOver100(IntOrPercent),
}

/// A [`RollingUpdate`] resolved for a replica count: the absolute bounds the Deployment
/// controller works with (Kubernetes calls them fenceposts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fenceposts {
    /// The desired replica count.
    pub replicas: u32,
    /// How many pods may exist above `replicas`.
    pub max_surge: u32,
    /// How many of `replicas` may be unavailable.
    pub max_unavailable: u32,
}

impl IntOrPercent {
    /// The absolute value for `total` replicas; a percentage rounds up or down as asked.
    pub fn scaled(self, total: u32, round_up: bool) -> u32 {
        match self {
            Self::Int(n) => n,
            Self::Percent(p) => {
                let product = u64::from(p) * u64::from(total);
                let scaled = if round_up {
                    product.div_ceil(100)
                } else {
                    product / 100
                };
                u32::try_from(scaled).unwrap_or(u32::MAX)
            }
        }
    }

    /// The number as written, ignoring the unit: what the API server compares with zero.
    fn literal(self) -> u32 {
        match self {
            Self::Int(n) | Self::Percent(n) => n,
        }
    }
}

impl FromStr for IntOrPercent {
    type Err = IntOrPercentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (digits, percent) = match s.strip_suffix('%') {
            Some(digits) => (digits, true),
            None => (s, false),
        };
        // `u32::from_str` alone would accept "+5"; Kubernetes wants digits only.
        let n = Some(digits)
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| IntOrPercentError {
                input: s.to_owned(),
            })?;
        Ok(if percent {
            Self::Percent(n)
        } else {
            Self::Int(n)
        })
    }
}

impl fmt::Display for IntOrPercent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for IntOrPercent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Int(n) => serializer.serialize_u32(*n),
            Self::Percent(_) => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrPercent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IntOrPercentVisitor)
    }
}

struct IntOrPercentVisitor;

impl Visitor<'_> for IntOrPercentVisitor {
    type Value = IntOrPercent;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-negative integer or a percentage string like \"25%\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        u32::try_from(v)
            .map(IntOrPercent::Int)
            .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        u32::try_from(v)
            .map(IntOrPercent::Int)
            .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        match v.parse() {
            Ok(percent @ IntOrPercent::Percent(_)) => Ok(percent),
            _ => Err(E::invalid_value(Unexpected::Str(v), &self)),
        }
    }
}

impl Default for RollingUpdate {
    fn default() -> Self {
        Self {
            max_surge: IntOrPercent::Percent(25),
            max_unavailable: IntOrPercent::Percent(25),
        }
    }
}

impl RollingUpdate {
    /// Checks the parameters as the API server does, independently of the replica count.
    pub fn validate(&self) -> Result<(), RollingUpdateError> {
        if self.max_surge.literal() == 0 && self.max_unavailable.literal() == 0 {
            return Err(RollingUpdateError::BothZero);
        }
        if matches!(self.max_unavailable, IntOrPercent::Percent(p) if p > 100) {
            return Err(RollingUpdateError::UnavailableOver100(self.max_unavailable));
        }
        Ok(())
    }

    /// Validates, then resolves both fields for `replicas` as the Deployment controller does.
    ///
    /// Rounding can make both resolve to zero (1 replica, `0`/`20%`); the controller then
    /// allows one unavailable pod, so that the rollout can always progress.
    pub fn resolve(&self, replicas: u32) -> Result<Fenceposts, RollingUpdateError> {
        self.validate()?;
        let max_surge = self.max_surge.scaled(replicas, true);
        let mut max_unavailable = self.max_unavailable.scaled(replicas, false);
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        Ok(Fenceposts {
            replicas,
            max_surge,
            max_unavailable,
        })
    }
}

impl Fenceposts {
    /// The most pods, old and new, that may exist at once: `replicas + max_surge`.
    pub fn max_total(&self) -> u32 {
        self.replicas.saturating_add(self.max_surge)
    }

    /// The fewest available pods the rollout keeps: `replicas - max_unavailable`, at least 0.
    pub fn min_available(&self) -> u32 {
        self.replicas.saturating_sub(self.max_unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IntOrPercent::{Int, Percent};

    fn rolling(surge: &str, unavailable: &str) -> RollingUpdate {
        RollingUpdate {
            max_surge: surge.parse().unwrap(),
            max_unavailable: unavailable.parse().unwrap(),
        }
    }

    /// (replicas, maxSurge, maxUnavailable) -> (surge, unavailable), from the Kubernetes docs
    /// and the comments on the controller's `ResolveFenceposts`.
    #[test]
    fn rounding_table() {
        let table = [
            (10, "25%", "25%", 3, 2),
            (3, "25%", "25%", 1, 0),
            (1, "25%", "25%", 1, 0),
            (4, "50%", "0", 2, 0),
            (4, "1", "1", 1, 1),
            (10, "0", "100%", 0, 10),
            (5, "200%", "0", 10, 0),
            // Fencepost: both round to zero, so one pod may be unavailable.
            (1, "0", "20%", 0, 1),
            (2, "0%", "1%", 0, 1),
            (0, "25%", "25%", 0, 1),
        ];
        for (replicas, surge, unavailable, want_surge, want_unavailable) in table {
            let got = rolling(surge, unavailable).resolve(replicas).unwrap();
            assert_eq!(
                (got.max_surge, got.max_unavailable),
                (want_surge, want_unavailable),
                "{replicas} replicas, {surge}/{unavailable}"
            );
        }
    }

    #[test]
    fn derived_bounds() {
        let bounds = RollingUpdate::default().resolve(10).unwrap();
        assert_eq!((bounds.max_total(), bounds.min_available()), (13, 8));
        // An absolute maxUnavailable above replicas is valid; availability floors at zero.
        let bounds = rolling("0", "5").resolve(3).unwrap();
        assert_eq!((bounds.max_total(), bounds.min_available()), (3, 0));
    }

    #[test]
    fn both_literally_zero_is_rejected() {
        for (surge, unavailable) in [("0", "0"), ("0%", "0%"), ("0", "0%"), ("0%", "0")] {
            assert_eq!(
                rolling(surge, unavailable).resolve(4),
                Err(RollingUpdateError::BothZero),
                "{surge}/{unavailable}"
            );
        }
    }

    #[test]
    fn unavailable_above_100_percent_is_rejected() {
        let err = rolling("1", "101%").validate().unwrap_err();
        assert_eq!(err, RollingUpdateError::UnavailableOver100(Percent(101)));
        assert!(err.to_string().contains("101%"));
        assert!(rolling("1", "100%").validate().is_ok());
    }

    #[test]
    fn parses_and_displays() {
        assert_eq!("25%".parse(), Ok(Percent(25)));
        assert_eq!("1".parse(), Ok(Int(1)));
        assert_eq!("0%".parse(), Ok(Percent(0)));
        assert_eq!(Percent(25).to_string(), "25%");
        assert_eq!(Int(3).to_string(), "3");
    }

    #[test]
    fn rejects_malformed_values_quoting_them() {
        for bad in [
            "-1",
            "abc",
            "%",
            "1.5",
            "",
            "+5",
            "25 %",
            "5%%",
            "99999999999",
        ] {
            let err = bad.parse::<IntOrPercent>().unwrap_err().to_string();
            assert!(err.contains(&format!("'{bad}'")), "{bad}: {err}");
        }
    }

    #[test]
    fn serde_follows_int_or_string() {
        assert_eq!(serde_json::to_string(&Int(1)).unwrap(), "1");
        assert_eq!(serde_json::to_string(&Percent(25)).unwrap(), r#""25%""#);
        let parsed: RollingUpdate =
            serde_json::from_str(r#"{"maxSurge": 1, "maxUnavailable": "10%"}"#).unwrap();
        assert_eq!(parsed, rolling("1", "10%"));
        let round_trip = serde_json::to_string(&parsed).unwrap();
        assert_eq!(round_trip, r#"{"maxSurge":1,"maxUnavailable":"10%"}"#);
    }

    #[test]
    fn serde_defaults_a_missing_field_to_25_percent() {
        let parsed: RollingUpdate = serde_json::from_str(r#"{"maxSurge": 0}"#).unwrap();
        assert_eq!(parsed, rolling("0", "25%"));
    }

    #[test]
    fn serde_rejects_what_kubernetes_rejects() {
        for bad in [r#""1""#, "-1", "1.5", r#""abc""#, "4294967296"] {
            let err = serde_json::from_str::<IntOrPercent>(bad).unwrap_err();
            assert!(
                err.to_string().contains("expected a non-negative integer"),
                "{bad}: {err}"
            );
        }
    }
}
