//! The one-line stats report: per interval, packets in and out and throughput per
//! direction, packets held, drops by cause and what plugins counted, from two
//! [`Snapshot`]s of the network's counters. Counters are cumulative across changes (a
//! removed stage's counts stay in its direction's total), and every difference
//! saturates, so a line never shows a wrapped number.

use std::collections::HashMap;
use synthnet_config::Snapshot;
use synthnet_core::Drops;

/// The previous snapshot, for per-interval rates.
pub struct StatsLine {
    at_ns: u64,
    last: Option<Snapshot>,
}

impl StatsLine {
    pub fn new(now_ns: u64, first: Snapshot) -> Self {
        StatsLine {
            at_ns: now_ns,
            last: Some(first),
        }
    }

    /// The line for the interval since the previous call.
    pub fn line(&mut self, now_ns: u64, snap: Snapshot) -> String {
        let secs = now_ns.saturating_sub(self.at_ns).max(1) as f64 / 1e9;
        let last = self.last.take();
        let mut s = String::from("stats:");
        let mut drops = Drops::default();
        let mut plugin: Vec<String> = Vec::new();
        let mut held = 0;
        for d in &snap.directions {
            let before = last
                .as_ref()
                .and_then(|l| l.directions.iter().find(|x| x.direction == d.direction));
            let (rx0, tx0, bytes0, drops0) = before
                .map(|b| (b.rx_packets, b.tx_packets, b.tx_bytes, b.drops))
                .unwrap_or_default();
            let rx = d.rx_packets.saturating_sub(rx0) as f64 / secs;
            let tx = d.tx_packets.saturating_sub(tx0) as f64 / secs;
            let bits = d.tx_bytes.saturating_sub(bytes0) as f64 * 8.0 / secs;
            s.push_str(&format!(
                " {} {} in, {} {} out |",
                d.direction,
                pps(rx),
                pps(tx),
                bps(bits)
            ));
            drops += &d.drops.since(&drops0);
            held += d.held;
            let old: HashMap<(&str, &str), u64> = before
                .map(|b| {
                    b.stages
                        .iter()
                        .flat_map(|st| {
                            st.plugin_counters
                                .iter()
                                .map(move |(k, v)| ((st.id.name.as_str(), k.as_str()), *v))
                        })
                        .collect()
                })
                .unwrap_or_default();
            for st in &d.stages {
                for (k, v) in &st.plugin_counters {
                    let was = old
                        .get(&(st.id.name.as_str(), k.as_str()))
                        .copied()
                        .unwrap_or(0);
                    let n = v.saturating_sub(was);
                    if n > 0 {
                        plugin.push(format!("{}.{k}={n}", st.id));
                    }
                }
            }
        }
        s.push_str(&format!(" held {held} | drops"));
        let mut any = false;
        for (c, n) in drops.nonzero() {
            s.push_str(&format!(" {}={n}", c.name()));
            any = true;
        }
        if !any {
            s.push_str(" none");
        }
        if !plugin.is_empty() {
            s.push_str(" | plugins ");
            s.push_str(&plugin.join(" "));
        }
        self.at_ns = now_ns;
        self.last = Some(snap);
        s
    }
}

/// Packets per second in a unit that fits.
pub fn pps(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} Mpps", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} kpps", v / 1e3)
    } else {
        format!("{v:.0} pps")
    }
}

/// Bits per second in a unit that fits.
pub fn bps(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2} Gbit/s", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} Mbit/s", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} kbit/s", v / 1e3)
    } else {
        format!("{v:.0} bit/s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synthnet_config::apply::DirectionStats;
    use synthnet_core::{Direction, DropCause};

    fn snap(rx: u64, plugin_drops: u64) -> Snapshot {
        let mut drops = Drops::default();
        drops.add(DropCause::Plugin, plugin_drops);
        Snapshot {
            generation: 1,
            directions: vec![DirectionStats {
                direction: Direction::Ingress,
                rx_packets: rx,
                rx_bytes: rx * 100,
                tx_packets: rx,
                tx_bytes: rx * 100,
                drops,
                held: 0,
                stages: vec![],
            }],
            pool_capacity: 1024,
            pool_in_use: 0,
        }
    }

    #[test]
    fn intervals_never_wrap() {
        let mut s = StatsLine::new(0, snap(100, 500));
        let line = s.line(1_000_000_000, snap(1100, 700));
        assert!(
            line.contains("ingress 1.0 kpps in") && line.contains("plugin=200"),
            "{line}"
        );
        // Totals that went down (they should not, but a line must never wrap): zero.
        let line = s.line(2_000_000_000, snap(50, 10));
        assert!(
            line.contains("ingress 0 pps in") && line.contains("drops none"),
            "{line}"
        );
    }

    #[test]
    fn units_fit_the_size() {
        assert_eq!(bps(5.0e9), "5.00 Gbit/s");
        assert_eq!(bps(1.5e6), "1.50 Mbit/s");
        assert_eq!(bps(96_000.0), "96.0 kbit/s");
        assert_eq!(bps(12.0), "12 bit/s");
        assert_eq!(pps(2_500_000.0), "2.50 Mpps");
        assert_eq!(pps(120.0), "120 pps");
    }
}
