//! Per-flow accounting: a bounded table of five-tuples ([`FiveTuple`]) with the packets
//! and bytes seen of each, for the control plane's flow list and synthetic-network's
//! `/top/*.profile`.
//!
//! An interface app records every frame it receives or sends into its own table (the
//! engine thread is the only writer); the bridge copies the rows out at its publishing
//! cadence. Memory is bounded: at most `capacity` flows are tracked. Flows idle for
//! longer than the idle time are evicted when the owner calls [`FlowTable::evict_idle`];
//! a new flow that finds the table full is not tracked, and its packets are counted in
//! [`FlowTable::untracked`] instead — so a flood of new flows costs one failed lookup
//! per packet, never a scan.

use crate::flow::{five_tuple, FiveTuple};
use std::collections::HashMap;

/// What one flow has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub packets: u64,
    /// Frame bytes (Ethernet header included, no FCS).
    pub bytes: u64,
    /// Frame bytes with every frame padded to Ethernet's 60-byte minimum: what
    /// synthetic-network's profile charges (it adds preamble, gap and FCS per packet).
    pub padded_bytes: u64,
    /// When the flow was last seen (engine clock, ns).
    pub last_ns: u64,
}

impl FlowStats {
    fn add(&mut self, len: u64, now_ns: u64) {
        self.packets += 1;
        self.bytes += len;
        self.padded_bytes += len.max(60);
        self.last_ns = now_ns;
    }
}

/// Packets and bytes outside the table: non-IP frames, and flows that found it full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Untracked {
    pub packets: u64,
    pub bytes: u64,
}

/// A bounded map from five-tuple to [`FlowStats`].
#[derive(Debug, Clone)]
pub struct FlowTable {
    flows: HashMap<FiveTuple, FlowStats>,
    capacity: usize,
    untracked: Untracked,
}

impl FlowTable {
    /// A table of at most `capacity` flows (memory is reserved up front).
    pub fn new(capacity: usize) -> FlowTable {
        FlowTable {
            flows: HashMap::with_capacity(capacity),
            capacity,
            untracked: Untracked::default(),
        }
    }

    /// Count one frame of `len` bytes (the packet's length: a super-packet counts whole).
    #[inline]
    pub fn record(&mut self, frame: &[u8], len: u32, now_ns: u64) {
        let len = u64::from(len);
        let Some(key) = five_tuple(frame) else {
            self.untracked.packets += 1;
            self.untracked.bytes += len;
            return;
        };
        if let Some(s) = self.flows.get_mut(&key) {
            s.add(len, now_ns);
        } else if self.flows.len() < self.capacity {
            self.flows.entry(key).or_default().add(len, now_ns);
        } else {
            self.untracked.packets += 1;
            self.untracked.bytes += len;
        }
    }

    /// Forget flows not seen for `idle_ns` (their counts go with them).
    pub fn evict_idle(&mut self, now_ns: u64, idle_ns: u64) {
        self.flows
            .retain(|_, s| now_ns.saturating_sub(s.last_ns) <= idle_ns);
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    pub fn untracked(&self) -> Untracked {
        self.untracked
    }
    pub fn get(&self, key: &FiveTuple) -> Option<&FlowStats> {
        self.flows.get(key)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&FiveTuple, &FlowStats)> {
        self.flows.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    /// An IPv4 UDP frame from 10.0.0.`src` port `sport` to 10.0.0.2:53.
    fn frame(src: u8, sport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&46u16.to_be_bytes());
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, src]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&53u16.to_be_bytes());
        f
    }

    #[test]
    fn counts_each_five_tuple_and_pads_short_frames() {
        let mut t = FlowTable::new(8);
        t.record(&frame(1, 1000), 42, 5);
        t.record(&frame(1, 1000), 1500, 7);
        t.record(&frame(3, 1000), 100, 9);
        assert_eq!(t.len(), 2);
        let key = five_tuple(&frame(1, 1000)).unwrap();
        assert_eq!(key.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((key.protocol, key.src_port, key.dst_port), (17, 1000, 53));
        let s = t.get(&key).unwrap();
        assert_eq!(
            (s.packets, s.bytes, s.padded_bytes, s.last_ns),
            (2, 1542, 1560, 7)
        );
        // Not IP: outside the table.
        t.record(&[0u8; 20], 20, 10);
        assert_eq!(
            t.untracked(),
            Untracked {
                packets: 1,
                bytes: 20
            }
        );
    }

    #[test]
    fn a_full_table_counts_new_flows_apart_and_idle_flows_make_room() {
        let mut t = FlowTable::new(2);
        t.record(&frame(1, 1), 100, 0);
        t.record(&frame(1, 2), 100, 1_000);
        t.record(&frame(1, 3), 100, 2_000);
        assert_eq!(t.len(), 2);
        assert_eq!(t.untracked().packets, 1);
        // Known flows still count when full.
        t.record(&frame(1, 2), 100, 3_000);
        assert_eq!(
            t.get(&five_tuple(&frame(1, 2)).unwrap()).unwrap().packets,
            2
        );
        // The first flow has been idle longest: it goes, and a new flow finds room.
        t.evict_idle(3_000, 2_500);
        assert_eq!(t.len(), 1);
        t.record(&frame(1, 3), 100, 3_100);
        assert_eq!(t.len(), 2);
        assert_eq!(t.untracked().packets, 1);
    }
}
