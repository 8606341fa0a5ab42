//! `trace`: a Mahimahi trace, a link that delivers a packet-sized opportunity at each
//! listed time.

use crate::Builtin;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use synthnet_sdk::queue;

/// Most opportunities a trace may list.
pub const MAX_TRACE_LEN: usize = 4_000_000;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub trace_ms: Vec<u64>,
    pub once: bool,
    pub queue: queue::Kind,
    pub queue_packets: Option<u64>,
    pub queue_bytes: Option<u64>,
    pub target_ms: f64,
    pub interval_ms: f64,
    pub qdelay_ref_ms: f64,
    pub max_burst_ms: f64,
}

impl Default for Config {
    fn default() -> Self {
        let q = queue::Params::default();
        Config {
            trace_ms: Vec::new(),
            once: false,
            queue: queue::Kind::Infinite,
            queue_packets: None,
            queue_bytes: None,
            target_ms: q.target_ms,
            interval_ms: q.interval_ms,
            qdelay_ref_ms: q.qdelay_ref_ms,
            max_burst_ms: q.max_burst_ms,
        }
    }
}

impl Builtin for Config {
    const PLUGIN: &'static str = "trace";
    /// The trace itself; the queue discipline's settings are checked by
    /// `synthnet_sdk::queue` when the plugin builds its queue.
    fn validate(&self) -> Result<(), String> {
        if self.trace_ms.is_empty() || self.trace_ms.len() > MAX_TRACE_LEN {
            return Err(format!(
                "trace_ms: needs 1 to {MAX_TRACE_LEN} opportunities (ms), got {}",
                self.trace_ms.len()
            ));
        }
        if let Some(i) = self.trace_ms.windows(2).position(|w| w[1] < w[0]) {
            return Err(format!(
                "trace_ms: times must not decrease, but line {} ({}) comes after {}",
                i + 2,
                self.trace_ms[i + 1],
                self.trace_ms[i]
            ));
        }
        let last = *self.trace_ms.last().unwrap_or(&0);
        if last == 0 {
            return Err("trace_ms: the last time must be above 0 ms (it is the period)".into());
        }
        if last > 86_400_000 {
            return Err(format!("trace_ms: a trace longer than a day ({last} ms)"));
        }
        Ok(())
    }
}
