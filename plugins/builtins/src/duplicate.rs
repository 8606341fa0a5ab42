//! `duplicate`: netem's `duplicate P [CORR]`.

use crate::Builtin;
use alloc::string::String;
use serde::{Deserialize, Serialize};
use synthnet_sdk::config::ratio;

#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Probability that a packet is sent twice, 0..=1.
    pub duplicate_ratio: f64,
    /// netem's correlation approximation, 0..=1.
    pub correlation_ratio: f64,
}

impl Builtin for Config {
    const PLUGIN: &'static str = "duplicate";
    fn validate(&self) -> Result<(), String> {
        ratio("duplicate_ratio", self.duplicate_ratio)?;
        ratio("correlation_ratio", self.correlation_ratio).map(drop)
    }
}
