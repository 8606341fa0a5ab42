//! `jitter`: random extra delay, synthetic-network's model.

use crate::Builtin;
use alloc::string::String;
use serde::{Deserialize, Serialize};
use synthnet_sdk::config::ratio;
use synthnet_sdk::{duration_ms, MAX_DELAY_MS};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Largest extra delay, milliseconds.
    pub jitter_ms: f64,
    /// Fraction of packets that get extra delay, 0..=1.
    pub strength: f64,
    /// Let packets overtake each other.
    pub reorder: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            jitter_ms: 0.0,
            strength: 1.0,
            reorder: false,
        }
    }
}

impl Builtin for Config {
    const PLUGIN: &'static str = "jitter";
    fn validate(&self) -> Result<(), String> {
        duration_ms("jitter_ms", self.jitter_ms, MAX_DELAY_MS)?;
        ratio("strength", self.strength).map(drop)
    }
}
