//! Checks for a plugin's config, so every plugin says the same thing about the same
//! mistake: ratios within `0..=1` ([`ratio`]), durations in ms that are finite, not
//! negative and bounded ([`duration_ms`], [`Millis`]). The built-in plugins use them
//! (through `synthnet-builtins`, where their configs are declared), and so can yours:
//!
//! ```
//! use synthnet_sdk::config::{ratio, Millis};
//! use synthnet_sdk::MAX_DELAY_MS;
//!
//! #[derive(serde::Deserialize, Default)]
//! #[serde(deny_unknown_fields, default)]
//! struct Config {
//!     drop_ratio: f64,
//!     hold_ms: Millis,
//! }
//!
//! fn check(c: &Config) -> Result<(f64, u64), String> {
//!     Ok((ratio("drop_ratio", c.drop_ratio)?, c.hold_ms.to_ns("hold_ms", MAX_DELAY_MS)?))
//! }
//! let c: Config = serde_json::from_str(r#"{"drop_ratio": 0.5, "hold_ms": 2.5}"#).unwrap();
//! assert_eq!(check(&c), Ok((0.5, 2_500_000)));
//! let bad: Config = serde_json::from_str(r#"{"drop_ratio": 1.5}"#).unwrap();
//! assert_eq!(check(&bad).unwrap_err(), "drop_ratio: must be within 0..=1, got 1.5");
//! ```
//!
//! Each check comes in two forms: `check_*` gives the reason alone (for a caller that
//! names the field its own way, as the host does with a spec's field path), the other
//! puts the field's name in front (`loss_ratio: must be within 0..=1, got 1.5`).

use serde::{Deserialize, Serialize};

/// Nanoseconds per millisecond, for configs given in ms.
pub const NS_PER_MS: u64 = 1_000_000;

/// The longest delay a built-in accepts, in ms: one day. A longer one is almost surely a
/// unit mistake, and near `u64::MAX` ns a departure time would wrap.
pub const MAX_DELAY_MS: f64 = 86_400_000.0;

/// `v` if it is a ratio (within `0..=1`; NaN is not), else why not.
pub fn check_ratio(v: f64) -> Result<f64, String> {
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("must be within 0..=1, got {v}"));
    }
    Ok(v)
}

/// [`check_ratio`], the error naming `field`.
pub fn ratio(field: &str, v: f64) -> Result<f64, String> {
    check_ratio(v).map_err(|e| format!("{field}: {e}"))
}

/// `v` if it is a finite number ≥ 0, else why not (`unit` is said in the reason:
/// `must be a number ≥ 0 (ms), got -1`).
pub fn check_non_negative(v: f64, unit: &str) -> Result<f64, String> {
    if !(v >= 0.0 && v.is_finite()) {
        return Err(format!("must be a number ≥ 0 ({unit}), got {v}"));
    }
    Ok(v)
}

/// Validate a duration field given in ms — finite, within `0..=max_ms` — and convert it
/// to ns; the error names `field`.
pub fn duration_ms(field: &str, ms: f64, max_ms: f64) -> Result<u64, String> {
    if !(ms >= 0.0 && ms <= max_ms) {
        return Err(format!(
            "{field}: must be a number of ms within 0..={max_ms}, got {ms}"
        ));
    }
    Ok(ms_to_ns(ms))
}

/// Convert a duration in (possibly fractional) milliseconds to whole nanoseconds.
/// Negative and NaN become 0.
pub fn ms_to_ns(ms: f64) -> u64 {
    if ms.is_nan() || ms <= 0.0 {
        0
    } else {
        (ms * NS_PER_MS as f64).round() as u64
    }
}

/// A duration in milliseconds as a config field carries it (a JSON number, fractions
/// allowed), checked and converted once with [`Millis::to_ns`].
#[derive(Serialize, Deserialize, Debug, Default, Clone, Copy, PartialEq, PartialOrd)]
#[serde(transparent)]
pub struct Millis(pub f64);

impl Millis {
    /// The duration in ns, if within `0..=max_ms`; the error names `field`.
    pub fn to_ns(self, field: &str, max_ms: f64) -> Result<u64, String> {
        duration_ms(field, self.0, max_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_durations_say_what_is_wrong() {
        assert_eq!(ratio("p", 0.25), Ok(0.25));
        for bad in [-0.1, 1.5, f64::NAN] {
            assert!(ratio("p", bad)
                .unwrap_err()
                .starts_with("p: must be within 0..=1"));
        }
        assert_eq!(check_non_negative(3.0, "ms"), Ok(3.0));
        assert_eq!(
            check_non_negative(-1.0, "ms").unwrap_err(),
            "must be a number ≥ 0 (ms), got -1"
        );
        assert!(check_non_negative(f64::INFINITY, "ms").is_err());
        assert_eq!(Millis(1.5).to_ns("d", MAX_DELAY_MS), Ok(1_500_000));
        assert!(Millis(MAX_DELAY_MS + 1.0).to_ns("d", MAX_DELAY_MS).is_err());
    }
}
