//! Links: bounded rings of packets from one app's output port to another's input port.
//! A full link refuses the packet; the sender drops it and the link counts the drop.
//! Never blocks, never panics. As in Snabb, the core is a handful of lines.

use crate::packet::PacketId;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkStats {
    pub tx_packets: u64,
    pub rx_packets: u64,
    pub drops: u64,
}

pub struct Link {
    ring: Box<[PacketId]>,
    mask: usize,
    read: usize,
    write: usize,
    pub stats: LinkStats,
}

impl Link {
    /// `capacity` is rounded up to a power of two.
    pub fn new(capacity: usize) -> Self {
        let cap = capacity.max(2).next_power_of_two();
        Link { ring: vec![0; cap].into_boxed_slice(), mask: cap - 1, read: 0, write: 0, stats: LinkStats::default() }
    }

    #[inline(always)]
    pub fn len(&self) -> usize {
        self.write.wrapping_sub(self.read)
    }
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.read == self.write
    }
    #[inline(always)]
    pub fn is_full(&self) -> bool {
        self.len() == self.ring.len()
    }
    pub fn capacity(&self) -> usize {
        self.ring.len()
    }

    /// Enqueue `p`, or hand it back when full (the caller frees it); the drop is counted.
    #[inline(always)]
    pub fn transmit(&mut self, p: PacketId) -> Result<(), PacketId> {
        if self.is_full() {
            self.stats.drops += 1;
            return Err(p);
        }
        self.ring[self.write & self.mask] = p;
        self.write = self.write.wrapping_add(1);
        self.stats.tx_packets += 1;
        Ok(())
    }

    #[inline(always)]
    pub fn receive(&mut self) -> Option<PacketId> {
        if self.is_empty() {
            return None;
        }
        let p = self.ring[self.read & self.mask];
        self.read = self.read.wrapping_add(1);
        self.stats.rx_packets += 1;
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_then_full_then_counts_drop() {
        let mut l = Link::new(3); // rounds to 4
        for p in 0..4 {
            l.transmit(p).unwrap();
        }
        assert_eq!(l.transmit(9), Err(9));
        assert_eq!(l.stats.drops, 1);
        assert_eq!((0..4).map(|_| l.receive().unwrap()).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(l.receive(), None);
        assert_eq!((l.stats.tx_packets, l.stats.rx_packets), (4, 4));
    }
}
