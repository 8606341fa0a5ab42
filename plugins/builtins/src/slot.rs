//! `slot`: netem's `slot`, packets leave in slots (Wi-Fi and cellular MAC timing).

use crate::Builtin;
use alloc::string::String;
use serde::{Deserialize, Serialize};
use synthnet_sdk::dist::Distribution;
use synthnet_sdk::{duration_ms, MAX_DELAY_MS};

#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub min_delay_ms: f64,
    pub max_delay_ms: Option<f64>,
    pub distribution: Option<Distribution>,
    pub delay_ms: f64,
    pub jitter_ms: f64,
    pub packets: Option<u32>,
    pub bytes: Option<u64>,
}

/// When slots open, as [`Config`] asks: a gap drawn uniformly between two bounds, or
/// from a netem table around a delay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Gap {
    /// ns.
    Uniform { min: u64, max: u64 },
    /// ns; a shipped table (never `uniform` or `table`).
    Table {
        mu: f64,
        sigma: f64,
        distribution: Distribution,
    },
}

impl Config {
    /// The slot gap asked for, or why it is not valid.
    pub fn gap(&self) -> Result<Gap, String> {
        Ok(match self.distribution {
            None | Some(Distribution::Uniform) => {
                let min = duration_ms("min_delay_ms", self.min_delay_ms, MAX_DELAY_MS)?;
                let max = duration_ms(
                    "max_delay_ms",
                    self.max_delay_ms.unwrap_or(self.min_delay_ms),
                    MAX_DELAY_MS,
                )?;
                if max < min {
                    return Err("max_delay_ms: must not be below min_delay_ms".into());
                }
                Gap::Uniform { min, max }
            }
            Some(Distribution::Table) => return Err(
                "distribution: a table distribution needs table_samples, which slot does not take"
                    .into(),
            ),
            Some(d) => Gap::Table {
                mu: duration_ms("delay_ms", self.delay_ms, MAX_DELAY_MS)? as f64,
                sigma: duration_ms("jitter_ms", self.jitter_ms, MAX_DELAY_MS)? as f64,
                distribution: d,
            },
        })
    }
}

impl Builtin for Config {
    const PLUGIN: &'static str = "slot";
    fn validate(&self) -> Result<(), String> {
        self.gap()?;
        if self.packets == Some(0) {
            return Err("packets: must be at least 1".into());
        }
        if self.bytes == Some(0) {
            return Err("bytes: must be at least 1".into());
        }
        Ok(())
    }
}
