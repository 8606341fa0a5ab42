//! Delay lines: where the host holds packets until their departure time.
//!
//! Plugins never keep packets; they answer "deliver at t" and the packet waits here, in
//! the host, where a hot swap cannot lose it. Most stages produce departure times in
//! order (constant latency, a shaper, FIFO jitter), so a deque takes those in O(1);
//! out-of-order times (reordering jitter) go to a binary heap. Ties leave in the order
//! they were scheduled. A line holds at most `limit` packets.

use crate::packet::Packet;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// A held packet; its `ts_ns` is its departure time. 24 bytes: a 10 ms delay line at
/// 1 Mpps holds 10 000 of these, so size matters for the cache.
#[derive(Clone, Copy, Debug)]
struct Held {
    pkt: Packet,
    /// Scheduling order, for ties; compared with wrap-around.
    seq: u32,
    port: u16,
}

impl Held {
    #[inline(always)]
    fn before(&self, o: &Held) -> bool {
        self.pkt.ts_ns < o.pkt.ts_ns || (self.pkt.ts_ns == o.pkt.ts_ns && (self.seq.wrapping_sub(o.seq) as i32) < 0)
    }
}

// Min-heap order through `Reverse`: by departure, then scheduling order.
impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        !self.before(o) && !o.before(self)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        if self.before(o) {
            std::cmp::Ordering::Less
        } else if o.before(self) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    }
}

pub struct DelayLine {
    fifo: VecDeque<Held>,
    heap: BinaryHeap<Reverse<Held>>,
    seq: u32,
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
    pub fn push(&mut self, at_ns: u64, port: u16, mut pkt: Packet) -> Result<(), Packet> {
        if self.len() >= self.limit {
            return Err(pkt);
        }
        pkt.ts_ns = at_ns;
        let h = Held { pkt, seq: self.seq, port };
        self.seq = self.seq.wrapping_add(1);
        match self.fifo.back() {
            Some(b) if b.pkt.ts_ns > at_ns => self.heap.push(Reverse(h)),
            _ => self.fifo.push_back(h),
        }
        Ok(())
    }

    #[inline(always)]
    fn head(&self) -> Option<(bool, &Held)> {
        match (self.fifo.front(), self.heap.peek()) {
            (Some(a), Some(Reverse(b))) => Some(if a.before(b) { (true, a) } else { (false, b) }),
            (Some(a), None) => Some((true, a)),
            (None, Some(Reverse(b))) => Some((false, b)),
            (None, None) => None,
        }
    }

    /// Departure time and port of the next packet.
    #[inline]
    pub fn peek(&self) -> Option<(u64, u16)> {
        self.head().map(|(_, h)| (h.pkt.ts_ns, h.port))
    }

    /// Departure time of the next packet.
    #[inline]
    pub fn next_at(&self) -> Option<u64> {
        self.head().map(|(_, h)| h.pkt.ts_ns)
    }

    /// The next packet due at or before `now_ns`, as (departure time, port, packet); the
    /// packet's `ts_ns` is its departure time.
    #[inline]
    pub fn pop_due(&mut self, now_ns: u64) -> Option<(u64, u16, Packet)> {
        let (from_fifo, h) = self.head().map(|(f, h)| (f, *h))?;
        if h.pkt.ts_ns > now_ns {
            return None;
        }
        if from_fifo {
            self.fifo.pop_front();
        } else {
            self.heap.pop();
        }
        Some((h.pkt.ts_ns, h.port, h.pkt))
    }

    /// Move every packet due by `now_ns` to `out(port, packet)`, stopping early when `out`
    /// returns false (its port is full; that packet stays held). In-order lines take a
    /// fast path that never looks at the heap.
    #[inline]
    pub fn release(&mut self, now_ns: u64, mut out: impl FnMut(u16, Packet) -> bool) {
        if self.heap.is_empty() {
            while let Some(h) = self.fifo.front() {
                if h.pkt.ts_ns > now_ns || !out(h.port, h.pkt) {
                    return;
                }
                self.fifo.pop_front();
            }
            return;
        }
        while let Some((from_fifo, h)) = self.head().map(|(f, h)| (f, *h)) {
            if h.pkt.ts_ns > now_ns || !out(h.port, h.pkt) {
                return;
            }
            if from_fifo {
                self.fifo.pop_front();
            } else {
                self.heap.pop();
            }
        }
    }

    /// Take every held packet, in departure order (for shutdown and tests).
    pub fn drain(&mut self) -> Vec<Packet> {
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

    fn pk(id: u32) -> Packet {
        Packet { id, len: 60, ts_ns: 0 }
    }

    #[test]
    fn releases_in_time_order_with_stable_ties() {
        let mut d = DelayLine::new(10);
        for (at, p) in [(10, 1), (20, 2), (15, 3), (20, 4), (5, 5), (30, 6)] {
            d.push(at, 0, pk(p)).unwrap();
        }
        assert_eq!(d.next_at(), Some(5));
        assert_eq!(d.pop_due(4), None);
        let mut got = vec![];
        while let Some((_, _, p)) = d.pop_due(25) {
            got.push(p.id);
        }
        assert_eq!(got, [5, 1, 3, 2, 4]);
        let mut rest = vec![];
        d.release(u64::MAX, |_, p| {
            rest.push((p.id, p.ts_ns));
            true
        });
        assert_eq!(rest, [(6, 30)]);
        assert!(d.drain().is_empty());
    }

    #[test]
    fn release_stops_when_the_output_is_full() {
        let mut d = DelayLine::new(10);
        for p in 0..5 {
            d.push(p as u64, 0, pk(p)).unwrap();
        }
        let mut room = 3;
        d.release(10, |_, _| {
            room -= 1;
            room >= 0
        });
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn refuses_beyond_limit() {
        let mut d = DelayLine::new(2);
        d.push(1, 0, pk(1)).unwrap();
        d.push(1, 0, pk(2)).unwrap();
        assert_eq!(d.push(1, 0, pk(3)), Err(pk(3)));
    }
}
