//! `corrupt`: flip one random bit in a fraction of the frames (netem's `corrupt`).

use crate::Builtin;
use alloc::string::String;
use serde::{Deserialize, Serialize};
use synthnet_sdk::config::ratio;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Fraction of packets to damage, 0..=1.
    pub ratio: f64,
    /// netem's correlation approximation, 0..=1.
    pub correlation_ratio: f64,
    /// Bytes at the start of the frame left intact.
    pub skip_bytes: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ratio: 0.0,
            correlation_ratio: 0.0,
            skip_bytes: 14,
        }
    }
}

impl Builtin for Config {
    const PLUGIN: &'static str = "corrupt";
    fn validate(&self) -> Result<(), String> {
        ratio("ratio", self.ratio)?;
        ratio("correlation_ratio", self.correlation_ratio).map(drop)
    }
}
