//! Durations on the command line.

use std::time::Duration;

/// Seconds as `flock(1)` takes them (`2`, `0.25`, `1e-1`), or a humantime
/// duration (`250ms`, `1m 30s`), which flock rejects, so no flock command
/// line changes meaning.
pub(crate) fn parse(s: &str) -> Result<Duration, String> {
    let invalid = |why: String| format!("invalid timeout value {s:?}: {why}");
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| invalid(e.to_string()));
    }
    humantime::parse_duration(s).map_err(|e| {
        invalid(format!(
            "{e} (give seconds, like 2.5, or a duration, like 250ms or 1m 30s)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_flock_seconds_and_humantime_durations() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("2", ms(2000)),
            ("0.25", ms(250)),
            (".5", ms(500)),
            ("1e-1", ms(100)),
            ("0", ms(0)),
            ("250ms", ms(250)),
            ("1m 30s", ms(90_000)),
            ("2h", ms(7_200_000)),
        ] {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for text in ["", "-1", "1,5", "soon", "inf", "NaN", "1 fortnight"] {
            let err = parse(text).unwrap_err();
            assert!(err.contains("invalid timeout value"), "{text}: {err}");
        }
    }
}
