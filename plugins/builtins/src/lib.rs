//! # synthnet-builtins: the built-in plugins' configs, declared once
//!
//! Each built-in plugin that the host writes configs for (from a synthetic-network QoS
//! object or a tc-netem(8) line) has its `Config` here: the serde shape the plugin
//! parses (`deny_unknown_fields`, every field defaulted) and its [`Builtin::validate`].
//! The plugin (compiled to wasm) and the host's config layer both depend on this crate,
//! so a renamed field fails to compile on both sides, and a bound (`MAX_DELAY_MS`, a
//! ratio's `0..=1`) is checked by the same code in the host, when a spec is read, and
//! in the plugin, when it starts.
//!
//! `no_std` with `alloc`: what a wasm plugin links stays small. The shared checks
//! themselves are the SDK's ([`synthnet_sdk::config`]), open to any plugin.

#![no_std]
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

extern crate alloc;

use alloc::string::String;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub mod corrupt;
pub mod delay;
pub mod duplicate;
pub mod jitter;
pub mod latency;
pub mod loss;
pub mod rate;
pub mod slot;
pub mod trace;

/// A built-in plugin's config: the plugin it configures, and its check.
pub trait Builtin: Serialize + DeserializeOwned + Default + Clone + PartialEq {
    /// The built-in's name (`plugins/<PLUGIN>`, `synthnet-plugin-<PLUGIN>`).
    const PLUGIN: &'static str;
    /// Whether the plugin will start with this config; the error names the field
    /// (`loss_ratio: must be within 0..=1, got 1.5`).
    fn validate(&self) -> Result<(), String>;
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use alloc::string::ToString;

    fn parse<C: Builtin>(text: &str) -> Result<C, String> {
        let c: C = serde_json::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn configs_parse_check_and_round_trip() {
        let l: latency::Config = parse(r#"{"delay_ms": 20}"#).unwrap();
        assert_eq!(l.delay_ms, 20.0);
        let back: latency::Config =
            serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(back, l);
        assert!(parse::<latency::Config>(r#"{"delay": 20}"#)
            .unwrap_err()
            .contains("unknown field"));
        assert_eq!(
            parse::<loss::Config>(r#"{"loss_ratio": 1.5}"#).unwrap_err(),
            "loss_ratio: must be within 0..=1, got 1.5"
        );
        assert!(parse::<delay::Config>(r#"{"delay_ms": 1e12}"#)
            .unwrap_err()
            .starts_with("delay_ms: must be a number of ms within 0..=86400000"));
        assert!(parse::<delay::Config>(r#"{"reorder_ratio": 0.5}"#)
            .unwrap_err()
            .starts_with("reorder_ratio: needs delay_ms"));
        assert_eq!(
            parse::<rate::Config>(r#"{"rate_bps": 4}"#).unwrap_err(),
            "rate_bps: must be 0 (unlimited) or ≥ 8, got 4"
        );
        assert_eq!(
            parse::<slot::Config>(r#"{"min_delay_ms": 2, "max_delay_ms": 1}"#).unwrap_err(),
            "max_delay_ms: must not be below min_delay_ms"
        );
        assert_eq!(<jitter::Config as Builtin>::PLUGIN, "jitter");
    }
}
