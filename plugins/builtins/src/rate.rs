//! `rate`: a shaper (a token bucket in front of a bounded queue).

use crate::Builtin;
use alloc::format;
use alloc::string::String;
use serde::{Deserialize, Serialize};
use synthnet_sdk::queue;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Rate in bits per second of frame bytes (0 = unlimited).
    pub rate_bps: u64,
    /// Bucket depth: bytes that may pass back to back after idle. At least one frame.
    pub burst_bytes: u64,
    /// Queue bound in bytes waiting to leave; beyond it packets are dropped.
    pub queue_bytes: u64,
    /// Bytes added to every frame's length when charging (e.g. 24 for preamble, SFD,
    /// FCS and inter-frame gap on Ethernet). May be negative to strip headers.
    pub overhead_bytes: i64,
    /// Cell payload size (0: no cells).
    pub cell_bytes: u32,
    /// Bytes added per cell (may be negative).
    pub cell_overhead_bytes: i32,
    /// The queue's discipline.
    pub queue: queue::Kind,
    pub queue_packets: Option<u64>,
    pub target_ms: f64,
    pub interval_ms: f64,
    pub qdelay_ref_ms: f64,
    pub max_burst_ms: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rate_bps: 0,
            burst_bytes: 1514,
            queue_bytes: 256 * 1024,
            overhead_bytes: 0,
            cell_bytes: 0,
            cell_overhead_bytes: 0,
            queue: queue::Kind::DropTail,
            queue_packets: None,
            target_ms: 5.0,
            interval_ms: 100.0,
            qdelay_ref_ms: 15.0,
            max_burst_ms: 150.0,
        }
    }
}

impl Builtin for Config {
    const PLUGIN: &'static str = "rate";
    /// The shaper's own fields; the queue discipline's settings are checked by
    /// `synthnet_sdk::queue` when the plugin builds its queue.
    fn validate(&self) -> Result<(), String> {
        let c = self;
        if c.rate_bps > 0 && c.rate_bps < 8 {
            return Err(format!(
                "rate_bps: must be 0 (unlimited) or ≥ 8, got {}",
                c.rate_bps
            ));
        }
        if c.burst_bytes == 0 || c.burst_bytes > 1 << 30 {
            return Err(format!(
                "burst_bytes: must be within 1..=2^30, got {}",
                c.burst_bytes
            ));
        }
        if c.queue_bytes > 1 << 34 {
            return Err(format!(
                "queue_bytes: must be at most 2^34, got {}",
                c.queue_bytes
            ));
        }
        if c.overhead_bytes.abs() > 4096 {
            return Err(format!(
                "overhead_bytes: must be within ±4096, got {}",
                c.overhead_bytes
            ));
        }
        if c.cell_bytes > 65_535 {
            return Err(format!(
                "cell_bytes: must be at most 65535, got {}",
                c.cell_bytes
            ));
        }
        if c.cell_overhead_bytes.unsigned_abs() > 1024
            || c.cell_bytes as i64 + c.cell_overhead_bytes as i64 <= 0 && c.cell_bytes > 0
        {
            return Err(format!(
                "cell_overhead_bytes: must be within ±1024 and leave a cell more than 0 bytes, got {}",
                c.cell_overhead_bytes
            ));
        }
        if c.cell_bytes == 0 && c.cell_overhead_bytes != 0 {
            return Err("cell_overhead_bytes: needs cell_bytes".into());
        }
        Ok(())
    }
}
