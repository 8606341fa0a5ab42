//! `delay`: netem's delay, jitter, distribution, correlation and reorder.

use crate::Builtin;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use synthnet_sdk::config::ratio;
use synthnet_sdk::dist::Distribution;
use synthnet_sdk::{duration_ms, MAX_DELAY_MS};

#[derive(Serialize, Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Correlation {
    #[default]
    Netem,
    Ar1,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub delay_ms: f64,
    pub jitter_ms: f64,
    pub distribution: Distribution,
    /// For `distribution: table`: the samples the table is made from.
    pub table_samples: Vec<f64>,
    pub correlation_ratio: f64,
    pub correlation: Correlation,
    pub keep_order: bool,
    pub reorder_ratio: f64,
    pub reorder_correlation_ratio: f64,
    pub reorder_gap_packets: Option<u32>,
    pub limit_packets: Option<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            delay_ms: 0.0,
            jitter_ms: 0.0,
            distribution: Distribution::Uniform,
            table_samples: Vec::new(),
            correlation_ratio: 0.0,
            correlation: Correlation::Netem,
            keep_order: false,
            reorder_ratio: 0.0,
            reorder_correlation_ratio: 0.0,
            reorder_gap_packets: None,
            limit_packets: None,
        }
    }
}

impl Config {
    /// netem's reorder gap: every how many delayed packets one may go at once (0: no
    /// reordering), or why the reorder fields do not fit together.
    pub fn reorder_gap(&self) -> Result<u32, String> {
        let gap = match (self.reorder_ratio > 0.0, self.reorder_gap_packets) {
            (_, Some(0)) => return Err("reorder_gap_packets: must be at least 1".into()),
            (false, Some(_)) => {
                return Err(
                    "reorder_gap_packets: needs reorder_ratio (netem: gap without reorder)".into(),
                )
            }
            (true, g) => g.unwrap_or(1),
            (false, None) => 0,
        };
        if gap > 0 && self.delay_ms == 0.0 {
            return Err(
                "reorder_ratio: needs delay_ms (netem: reordering not possible without some delay)"
                    .into(),
            );
        }
        Ok(gap)
    }
}

impl Builtin for Config {
    const PLUGIN: &'static str = "delay";
    /// Every field but the samples of a `table` distribution (the plugin builds the
    /// table, and says what is wrong with them).
    fn validate(&self) -> Result<(), String> {
        duration_ms("delay_ms", self.delay_ms, MAX_DELAY_MS)?;
        duration_ms("jitter_ms", self.jitter_ms, MAX_DELAY_MS)?;
        if !(0.0..1.0).contains(&self.correlation_ratio) {
            return Err(format!(
                "correlation_ratio: must be within 0..1, got {}",
                self.correlation_ratio
            ));
        }
        if self.distribution != Distribution::Table && !self.table_samples.is_empty() {
            return Err("table_samples: only for distribution \"table\"".into());
        }
        ratio("reorder_ratio", self.reorder_ratio)?;
        ratio("reorder_correlation_ratio", self.reorder_correlation_ratio)?;
        self.reorder_gap()?;
        if self.limit_packets == Some(0) {
            return Err("limit_packets: must be at least 1".into());
        }
        Ok(())
    }
}
