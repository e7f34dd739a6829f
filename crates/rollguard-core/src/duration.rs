//! Human durations as written on the command line and in reports.

use std::time::Duration;

/// Why a duration could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid duration '{input}': {reason} (expected e.g. 500ms, 10s, 1m30s)")]
pub struct DurationError {
    input: String,
    reason: String,
}

/// Parses a human duration such as `500ms`, `10s`, `1m30s` or `2h`.
///
/// A bare `0` is accepted as zero; any other number needs a unit, because `10` alone is
/// ambiguous (seconds for Kubernetes, milliseconds for many tools).
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let trimmed = input.trim();
    if trimmed == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(trimmed).map_err(|e| DurationError {
        input: input.to_owned(),
        reason: e.to_string(),
    })
}

/// Formats a duration for people: `850ms`, `2.35s`, `1m05s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.2}s", d.as_secs_f64())
    } else {
        let secs = d.as_secs();
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_numbers_without_unit_and_garbage() {
        for bad in ["10", "abc", "", "-1s", "5 parsecs"] {
            let err = parse_duration(bad).unwrap_err().to_string();
            assert!(err.contains("invalid duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(format_duration(Duration::from_millis(2346)), "2.35s");
        assert_eq!(format_duration(Duration::from_secs(65)), "1m05s");
    }
}
