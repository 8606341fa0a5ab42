//! `latency`: a constant delay.

use crate::Builtin;
use alloc::string::String;
use serde::{Deserialize, Serialize};
use synthnet_sdk::{duration_ms, MAX_DELAY_MS};

#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// One-way delay, milliseconds (fractions allowed).
    pub delay_ms: f64,
}

impl Builtin for Config {
    const PLUGIN: &'static str = "latency";
    fn validate(&self) -> Result<(), String> {
        duration_ms("delay_ms", self.delay_ms, MAX_DELAY_MS).map(drop)
    }
}
