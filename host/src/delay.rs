//! Delay lines: where the host holds packets until their departure time.
//!
//! Plugins never keep packets; they answer "deliver at t" and the packet waits here, in
//! the host, where a hot swap cannot lose it. Most stages produce departure times in
//! order (constant latency, a shaper, FIFO jitter), so a deque takes those in O(1);
//! out-of-order times (reordering jitter) go to a binary heap. Ties leave in the order
//! they were scheduled. A line holds at most `limit` packets.

use crate::packet::PacketId;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    at_ns: u64,
    seq: u64,
    pkt: PacketId,
    port: u16,
}

pub struct DelayLine {
    fifo: VecDeque<Held>,
    heap: BinaryHeap<Reverse<Held>>,
    seq: u64,
    limit: usize,
}

impl DelayLine {
    pub fn new(limit: usize) -> Self {
        DelayLine { fifo: VecDeque::new(), heap: BinaryHeap::new(), seq: 0, limit }
    }

    pub fn len(&self) -> usize {
        self.fifo.len() + self.heap.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hold `pkt` for `port` until `at_ns`; hands it back when the line is full.
    #[inline]
    pub fn push(&mut self, at_ns: u64, port: u16, pkt: PacketId) -> Result<(), PacketId> {
        if self.len() >= self.limit {
            return Err(pkt);
        }
        let h = Held { at_ns, seq: self.seq, pkt, port };
        self.seq += 1;
        match self.fifo.back() {
            Some(b) if b.at_ns > at_ns => self.heap.push(Reverse(h)),
            _ => self.fifo.push_back(h),
        }
        Ok(())
    }

    /// Departure time and port of the next packet.
    #[inline]
    pub fn peek(&self) -> Option<(u64, u16)> {
        match (self.fifo.front(), self.heap.peek()) {
            (Some(a), Some(Reverse(b))) => Some(if (a.at_ns, a.seq) <= (b.at_ns, b.seq) { (a.at_ns, a.port) } else { (b.at_ns, b.port) }),
            (Some(a), None) => Some((a.at_ns, a.port)),
            (None, Some(Reverse(b))) => Some((b.at_ns, b.port)),
            (None, None) => None,
        }
    }

    /// Departure time of the next packet.
    #[inline]
    pub fn next_at(&self) -> Option<u64> {
        match (self.fifo.front(), self.heap.peek()) {
            (Some(a), Some(Reverse(b))) => Some(a.at_ns.min(b.at_ns)),
            (Some(a), None) => Some(a.at_ns),
            (None, Some(Reverse(b))) => Some(b.at_ns),
            (None, None) => None,
        }
    }

    /// The next packet due at or before `now_ns`: (departure time, port, packet).
    #[inline]
    pub fn pop_due(&mut self, now_ns: u64) -> Option<(u64, u16, PacketId)> {
        let from_fifo = match (self.fifo.front(), self.heap.peek()) {
            (Some(a), Some(Reverse(b))) => (a.at_ns, a.seq) <= (b.at_ns, b.seq),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        let h = if from_fifo {
            *self.fifo.front()?
        } else {
            self.heap.peek()?.0
        };
        if h.at_ns > now_ns {
            return None;
        }
        if from_fifo {
            self.fifo.pop_front();
        } else {
            self.heap.pop();
        }
        Some((h.at_ns, h.port, h.pkt))
    }

    /// Take every held packet, in departure order (for shutdown and tests).
    pub fn drain(&mut self) -> Vec<PacketId> {
        let mut out = Vec::with_capacity(self.len());
        while let Some((_, _, p)) = self.pop_due(u64::MAX) {
            out.push(p);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_in_time_order_with_stable_ties() {
        let mut d = DelayLine::new(10);
        for (at, p) in [(10, 1), (20, 2), (15, 3), (20, 4), (5, 5), (30, 6)] {
            d.push(at, 0, p).unwrap();
        }
        assert_eq!(d.next_at(), Some(5));
        assert_eq!(d.pop_due(4), None);
        let mut got = vec![];
        while let Some((_, _, p)) = d.pop_due(25) {
            got.push(p);
        }
        assert_eq!(got, [5, 1, 3, 2, 4]);
        assert_eq!(d.drain(), [6]);
    }

    #[test]
    fn refuses_beyond_limit() {
        let mut d = DelayLine::new(2);
        d.push(1, 0, 1).unwrap();
        d.push(1, 0, 2).unwrap();
        assert_eq!(d.push(1, 0, 3), Err(3));
    }
}
