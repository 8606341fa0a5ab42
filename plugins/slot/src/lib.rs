//! `slot`: netem's `slot` — packets leave in bursts at slot times, as on bursty MACs
//! (Wi-Fi aggregation, DOCSIS, LTE scheduling).
//!
//! A slot opens a drawn gap after the previous one closed — uniform in
//! [`min_delay_ms`, `max_delay_ms`] (`max_delay_ms` left out: exactly `min_delay_ms`),
//! or with `distribution` (`normal`, `pareto`, `paretonormal`: netem's tables)
//! `delay_ms` ± `jitter_ms` — and releases the packets due by then until `packets` or
//! `bytes` of them have gone (either left out: no bound of that kind); then the next
//! slot is drawn. As in netem's dequeue, a packet that becomes due after the open
//! slot's time has passed waits for a fresh draw from its own time.

use synthnet_sdk::dist::{shipped_table, DIST_SCALE};
use synthnet_sdk::{export_plugin, Batch, Plugin, Rng};

pub use synthnet_builtins::slot::Config;
use synthnet_builtins::{slot, Builtin};

/// How the gap to the next slot is drawn, ns.
enum Gap {
    Uniform {
        min: u64,
        max: u64,
    },
    Table {
        mu: f64,
        sigma: f64,
        table: Vec<i16>,
    },
}

pub struct Slot {
    gap: Gap,
    packets: Option<u32>,
    bytes: Option<u64>,
    rng: Rng,
    /// When the open slot opens (`None`: none drawn yet), and what it may still send.
    open_ns: Option<u64>,
    packets_left: u32,
    bytes_left: u64,
}

impl Slot {
    fn draw(&mut self) -> u64 {
        match &self.gap {
            Gap::Uniform { min, max } => min + self.rng.up_to(max - min),
            Gap::Table { mu, sigma, table } => {
                let t = table[self.rng.below(table.len() as u32) as usize] as f64 / DIST_SCALE;
                (mu + sigma * t).max(0.0) as u64
            }
        }
    }

    fn refill(&mut self, at: u64) {
        self.open_ns = Some(at);
        self.packets_left = self.packets.unwrap_or(u32::MAX);
        self.bytes_left = self.bytes.unwrap_or(u64::MAX);
    }
}

impl Plugin for Slot {
    type Config = Config;
    const COUNTERS: &'static [&'static str] = &["slots"];
    const STATE_VERSION: u32 = 1;

    fn new(c: Config, seed: u64) -> Result<Self, String> {
        c.validate()?;
        let gap = match c.gap()? {
            slot::Gap::Uniform { min, max } => Gap::Uniform { min, max },
            slot::Gap::Table {
                mu,
                sigma,
                distribution,
            } => Gap::Table {
                mu,
                sigma,
                table: shipped_table(distribution).ok_or(
                    "distribution: a table distribution needs table_samples, which slot does not take",
                )?,
            },
        };
        Ok(Slot {
            gap,
            packets: c.packets,
            bytes: c.bytes,
            rng: Rng::new(seed),
            open_ns: None,
            packets_left: 0,
            bytes_left: 0,
        })
    }

    fn process(&mut self, batch: &mut Batch<'_>) {
        let mut slots = 0;
        for i in 0..batch.len() {
            let due = batch.arrival_ns(i);
            // No slot yet, or the open one passed before this packet was due: draw.
            if self.open_ns.is_none_or(|o| o < due) {
                let gap = self.draw();
                self.refill(due.saturating_add(gap));
                slots += 1;
            }
            let at = self.open_ns.unwrap_or(due);
            batch.send(i, 0, at);
            let len = u64::from(batch.wire_len(i));
            self.packets_left = self.packets_left.saturating_sub(1);
            self.bytes_left = self.bytes_left.saturating_sub(len);
            if self.packets_left == 0 || self.bytes_left == 0 {
                let gap = self.draw();
                self.refill(at.saturating_add(gap));
                slots += 1;
            }
        }
        batch.count(0, slots);
    }
}

export_plugin!(Slot);

#[cfg(test)]
mod tests {
    use super::*;
    use synthnet_sdk::Harness;

    fn departures(cfg: &str, arrivals: &[u64]) -> Vec<u64> {
        let mut h = Harness::<Slot>::new(cfg, 3).unwrap();
        for &t in arrivals {
            h.push(&[0; 100], t);
        }
        h.run(0).iter().map(|o| o.at_ns).collect()
    }

    #[test]
    fn a_backlog_leaves_in_bursts_of_the_slot_size() {
        // 10 packets at once; slots every 5 ms exactly, 3 packets each.
        let d = departures(r#"{"min_delay_ms": 5, "packets": 3}"#, &[0; 10]);
        let ms: Vec<u64> = d.iter().map(|t| t / 1_000_000).collect();
        assert_eq!(ms, [5, 5, 5, 10, 10, 10, 15, 15, 15, 20]);
        // A byte budget: 250 bytes a slot, 100-byte frames: 3 per slot (the third
        // overdraws, as in netem).
        let d = departures(r#"{"min_delay_ms": 5, "bytes": 250}"#, &[0; 4]);
        assert_eq!(d, [5_000_000, 5_000_000, 5_000_000, 10_000_000]);
    }

    #[test]
    fn a_packet_due_after_the_slot_passed_waits_for_a_fresh_draw() {
        let d = departures(r#"{"min_delay_ms": 2}"#, &[0, 7_000_000]);
        assert_eq!(d, [2_000_000, 9_000_000]);
    }

    #[test]
    fn uniform_gaps_stay_within_their_bounds() {
        let arrivals = vec![0u64; 2000];
        let d = departures(
            r#"{"min_delay_ms": 1, "max_delay_ms": 3, "packets": 1}"#,
            &arrivals,
        );
        for w in d.windows(2) {
            let gap = w[1] - w[0];
            assert!((1_000_000..=3_000_000).contains(&gap), "{gap}");
        }
        let mean = (d[d.len() - 1] - d[0]) as f64 / (d.len() - 1) as f64;
        assert!((mean - 2e6).abs() < 0.05e6, "{mean}");
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (c, f) in [
            (r#"{"min_delay_ms": 5, "max_delay_ms": 1}"#, "max_delay_ms"),
            (r#"{"min_delay_ms": 1, "packets": 0}"#, "packets"),
            (r#"{"distribution": "normal", "delay_ms": -1}"#, "delay_ms"),
        ] {
            let e = Harness::<Slot>::new(c, 1).err().unwrap();
            assert!(e.contains(f), "{c}: {e}");
        }
    }
}
