//! Links: bounded rings of packets from one app's output port to another's input port.
//! A full link refuses the packet and the sender drops and counts it (apps count what
//! they send, receive and drop; a link counts nothing, so no packet is counted twice).
//! Never blocks, never panics. As in Snabb, the core is a handful of lines.
//!
//! A link's ring starts small and doubles, up to its capacity, when a backlog needs the
//! room: a graph of ten thousand flows costs a few hundred bytes per idle link, not the
//! 32 KiB a full ring takes. (Growth allocates on the packet thread, at most
//! log2(capacity / 64) times in a link's life.)

use crate::packet::Packet;

pub struct Link {
    ring: Box<[Packet]>,
    mask: usize,
    read: usize,
    write: usize,
    /// What the ring may grow to (a power of two).
    cap: usize,
}

/// Slots a ring starts with (or its capacity, when smaller).
const FIRST_RING: usize = 64;

impl Link {
    /// `capacity` is rounded up to a power of two.
    pub fn new(capacity: usize) -> Self {
        let cap = capacity.max(2).next_power_of_two();
        let first = cap.min(FIRST_RING);
        Link {
            ring: vec![Packet::default(); first].into_boxed_slice(),
            mask: first - 1,
            read: 0,
            write: 0,
            cap,
        }
    }

    /// Make room for `more` packets beyond those held, within the capacity. Returns
    /// the room there is afterwards.
    #[cold]
    fn grow(&mut self, more: usize) -> usize {
        let len = self.len();
        let want = (len + more).min(self.cap).next_power_of_two().min(self.cap);
        if want > self.ring.len() {
            let mut ring = vec![Packet::default(); want].into_boxed_slice();
            let start = self.read & self.mask;
            let first = len.min(self.ring.len() - start);
            ring[..first].copy_from_slice(&self.ring[start..start + first]);
            ring[first..len].copy_from_slice(&self.ring[..len - first]);
            self.ring = ring;
            self.mask = want - 1;
            self.read = 0;
            self.write = len;
        }
        self.ring.len() - len
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
        self.len() == self.cap
    }
    /// Packets the link may hold.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Enqueue `p`, or hand it back when full (the caller frees it and counts the drop).
    #[inline(always)]
    pub fn transmit(&mut self, p: Packet) -> Result<(), Packet> {
        if self.len() == self.ring.len() && self.grow(1) == 0 {
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
        let mut room = self.ring.len() - self.len();
        if room < ps.len() {
            room = self.grow(ps.len());
        }
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

    #[test]
    fn a_ring_grows_to_its_capacity_keeping_order_across_the_wrap() {
        let pk = |id| Packet {
            id,
            len: 60,
            ts_ns: 0,
        };
        let mut l = Link::new(1000); // rounds to 1024; starts at 64 slots
        assert_eq!((l.capacity(), l.ring.len()), (1024, 64));
        // Wrap the small ring first, so growth has to unroll it.
        for p in 0..50 {
            l.transmit(pk(p)).unwrap();
        }
        let mut out = [Packet::default(); 40];
        assert_eq!(l.receive_into(&mut out), 40);
        let mut next = 50;
        for _ in 0..30 {
            l.transmit(pk(next)).unwrap();
            next += 1;
        }
        // 40 held (40..80), the ring has wrapped; a slice of 100 makes it grow.
        let more: Vec<Packet> = (next..next + 100).map(pk).collect();
        assert_eq!(l.transmit_slice(&more), 100);
        next += 100;
        assert!(l.ring.len() >= 140 && l.ring.len() <= 256);
        // Fill to the capacity, one by one; the next is refused.
        while l.transmit(pk(next)).is_ok() {
            next += 1;
        }
        assert_eq!((l.len(), l.ring.len()), (1024, 1024));
        assert_eq!(l.transmit_slice(&[pk(9999)]), 0);
        let ids: Vec<u32> = std::iter::from_fn(|| l.receive()).map(|p| p.id).collect();
        assert_eq!(ids, (40..next).collect::<Vec<_>>());
    }
}
