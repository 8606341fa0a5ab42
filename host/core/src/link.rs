//! Links: bounded rings of packets from one app's output port to another's input port.
//! A full link refuses the packet and the sender drops and counts it (apps count what
//! they send, receive and drop; a link counts nothing, so no packet is counted twice).
//! Never blocks, never panics. As in Snabb, the core is a handful of lines.

use crate::packet::Packet;

pub struct Link {
    ring: Box<[Packet]>,
    mask: usize,
    read: usize,
    write: usize,
}

impl Link {
    /// `capacity` is rounded up to a power of two.
    pub fn new(capacity: usize) -> Self {
        let cap = capacity.max(2).next_power_of_two();
        Link {
            ring: vec![Packet::default(); cap].into_boxed_slice(),
            mask: cap - 1,
            read: 0,
            write: 0,
        }
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

    /// Enqueue `p`, or hand it back when full (the caller frees it and counts the drop).
    #[inline(always)]
    pub fn transmit(&mut self, p: Packet) -> Result<(), Packet> {
        if self.is_full() {
            return Err(p);
        }
        self.ring[self.write & self.mask] = p;
        self.write = self.write.wrapping_add(1);
        Ok(())
    }

    #[inline(always)]
    pub fn receive(&mut self) -> Option<Packet> {
        if self.is_empty() {
            return None;
        }
        let p = self.ring[self.read & self.mask];
        self.read = self.read.wrapping_add(1);
        if self.read == self.write {
            // Empty: start over at slot 0, so a link drained every breath only ever
            // touches its first few cache lines.
            self.read = 0;
            self.write = 0;
        }
        Some(p)
    }
}

impl Link {
    /// Move up to `out.len()` packets into `out`; returns how many. One copy, one index
    /// update: the batch path of a plugin app.
    pub fn receive_into(&mut self, out: &mut [Packet]) -> usize {
        let n = out.len().min(self.len());
        let start = self.read & self.mask;
        let first = n.min(self.ring.len() - start);
        out[..first].copy_from_slice(&self.ring[start..start + first]);
        out[first..n].copy_from_slice(&self.ring[..n - first]);
        self.read = self.read.wrapping_add(n);
        if self.read == self.write {
            self.read = 0;
            self.write = 0;
        }
        n
    }

    /// Enqueue as many of `ps` as fit; returns how many (the caller frees and counts the
    /// rest).
    pub fn transmit_slice(&mut self, ps: &[Packet]) -> usize {
        let room = self.ring.len() - self.len();
        let n = ps.len().min(room);
        let start = self.write & self.mask;
        let first = n.min(self.ring.len() - start);
        self.ring[start..start + first].copy_from_slice(&ps[..first]);
        self.ring[..n - first].copy_from_slice(&ps[first..n]);
        self.write = self.write.wrapping_add(n);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_then_full_then_counts_drop() {
        let pk = |id| Packet {
            id,
            len: 60,
            ts_ns: 0,
        };
        let mut l = Link::new(3); // rounds to 4
        for p in 0..4 {
            l.transmit(pk(p)).unwrap();
        }
        assert_eq!(l.transmit(pk(9)), Err(pk(9)));
        assert_eq!(
            (0..4).map(|_| l.receive().unwrap().id).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(l.receive(), None);
    }

    #[test]
    fn bulk_operations_wrap_around_the_ring() {
        let pk = |id| Packet {
            id,
            len: 60,
            ts_ns: 0,
        };
        let mut l = Link::new(8);
        for p in 0..6 {
            l.transmit(pk(p)).unwrap();
        }
        let mut out = [Packet::default(); 4];
        assert_eq!(l.receive_into(&mut out), 4);
        // 2 left at slots 4..6; 5 more wrap past the end of the ring; 1 does not fit.
        let more: Vec<Packet> = (10..17).map(pk).collect();
        assert_eq!(l.transmit_slice(&more), 6);
        let mut all = [Packet::default(); 10];
        assert_eq!(l.receive_into(&mut all), 8);
        let ids: Vec<u32> = all[..8].iter().map(|p| p.id).collect();
        assert_eq!(ids, [4, 5, 10, 11, 12, 13, 14, 15]);
        assert!(l.is_empty());
    }
}
