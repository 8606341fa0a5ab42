//! Delay lines: where the host holds packets until their departure time.
//!
//! Plugins never keep packets; they answer "deliver at t" and the packet waits here, in
//! the host, where a hot swap cannot lose it. Most stages produce departure times in
//! order (constant latency, a shaper, FIFO jitter), so a FIFO per output port takes those
//! in O(1); out-of-order times (reordering jitter) go to a binary heap. Ties leave in the
//! order they were scheduled. A line holds at most `limit` packets.
//!
//! Held packets are the dominant memory traffic of a delay stage (a 10 ms line at 1 Mpps
//! holds 10 000), so FIFO entries are bare 16-byte [`Packet`]s whose `ts_ns` is the
//! departure time: no port (one FIFO per port) and no sequence number (a FIFO entry with
//! the same time as a heap entry was always scheduled first, because the heap only takes
//! times earlier than its FIFO's tail). The FIFOs are queues of fixed-size blocks
//! recycled last-in first-out, so the tail writes into the block the head has just
//! finished reading; as a plain ring every push missed the cache.

use crate::packet::Packet;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

const BLOCK: usize = 256;

/// An out-of-order packet: departure (`pkt.ts_ns`), scheduling order, port.
#[derive(Clone, Copy, Debug)]
struct Held {
    pkt: Packet,
    seq: u64,
    port: u16,
}

impl Held {
    fn key(&self) -> (u64, u64) {
        (self.pkt.ts_ns, self.seq)
    }
}
impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        self.key() == o.key()
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
        self.key().cmp(&o.key())
    }
}

/// A FIFO of packets in blocks of [`BLOCK`], with a free list of spent blocks.
#[derive(Default)]
struct BlockFifo {
    blocks: VecDeque<Box<[Packet; BLOCK]>>,
    spare: Vec<Box<[Packet; BLOCK]>>,
    /// Index of the first live entry in the front block; entries used in the back one.
    head: usize,
    tail: usize,
    len: usize,
}

impl BlockFifo {
    #[inline(always)]
    fn front(&self) -> Option<&Packet> {
        if self.len == 0 {
            return None;
        }
        self.blocks.front().map(|b| &b[self.head])
    }
    #[inline(always)]
    fn back_ts(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        self.blocks.back().map(|b| b[self.tail - 1].ts_ns)
    }
    #[inline(always)]
    fn push_back(&mut self, p: Packet) {
        if self.tail == BLOCK || self.blocks.is_empty() {
            let b = self
                .spare
                .pop()
                .unwrap_or_else(|| Box::new([Packet::default(); BLOCK]));
            self.blocks.push_back(b);
            self.tail = 0;
        }
        if let Some(b) = self.blocks.back_mut() {
            b[self.tail] = p;
            self.tail += 1;
            self.len += 1;
        }
    }
    #[inline(always)]
    fn pop_front(&mut self) {
        if self.len == 0 {
            return;
        }
        self.len -= 1;
        self.head += 1;
        if self.len == 0 {
            // Keep one block: an idle line that wakes up touches no allocator.
            while self.blocks.len() > 1 {
                if let Some(b) = self.blocks.pop_front() {
                    self.spare.push(b);
                }
            }
            self.head = 0;
            self.tail = 0;
        } else if self.head == BLOCK {
            if let Some(b) = self.blocks.pop_front() {
                self.spare.push(b);
            }
            self.head = 0;
        }
    }
}

/// Where the next packet to leave is.
#[derive(Clone, Copy)]
enum Head {
    Fifo(usize),
    Heap,
}

pub struct DelayLine {
    fifos: Vec<BlockFifo>,
    heap: BinaryHeap<Reverse<Held>>,
    seq: u64,
    len: usize,
    limit: usize,
}

impl DelayLine {
    pub fn new(limit: usize) -> Self {
        DelayLine {
            fifos: vec![BlockFifo::default()],
            heap: BinaryHeap::new(),
            seq: 0,
            len: 0,
            limit,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hold `pkt` for `port` until `at_ns`; hands it back when the line is full.
    #[inline]
    pub fn push(&mut self, at_ns: u64, port: u16, mut pkt: Packet) -> Result<(), Packet> {
        if self.len >= self.limit {
            return Err(pkt);
        }
        pkt.ts_ns = at_ns;
        let port_i = port as usize;
        if port_i >= self.fifos.len() {
            self.fifos.resize_with(port_i + 1, BlockFifo::default);
        }
        let fifo = &mut self.fifos[port_i];
        match fifo.back_ts() {
            Some(back) if back > at_ns => {
                self.heap.push(Reverse(Held {
                    pkt,
                    seq: self.seq,
                    port,
                }));
                self.seq += 1;
            }
            _ => fifo.push_back(pkt),
        }
        self.len += 1;
        Ok(())
    }

    /// The next packet to leave, its port and where it is held.
    #[inline(always)]
    fn head(&self) -> Option<(Packet, u16, Head)> {
        let mut best: Option<(Packet, u16, Head)> = None;
        for (i, f) in self.fifos.iter().enumerate() {
            if let Some(p) = f.front() {
                if best.is_none_or(|(b, _, _)| p.ts_ns < b.ts_ns) {
                    best = Some((*p, i as u16, Head::Fifo(i)));
                }
            }
        }
        if let Some(Reverse(h)) = self.heap.peek() {
            // Strictly earlier only: on a tie the FIFO entry was scheduled first.
            if best.is_none_or(|(b, _, _)| h.pkt.ts_ns < b.ts_ns) {
                best = Some((h.pkt, h.port, Head::Heap));
            }
        }
        best
    }

    fn pop_head(&mut self, at: Head) {
        match at {
            Head::Fifo(i) => self.fifos[i].pop_front(),
            Head::Heap => {
                self.heap.pop();
            }
        }
        self.len -= 1;
    }

    /// Departure time of the next packet.
    #[inline]
    pub fn next_at(&self) -> Option<u64> {
        self.head().map(|(p, _, _)| p.ts_ns)
    }

    /// The next packet due at or before `now_ns`, as (departure time, port, packet); the
    /// packet's `ts_ns` is its departure time.
    #[inline]
    pub fn pop_due(&mut self, now_ns: u64) -> Option<(u64, u16, Packet)> {
        let (p, port, at) = self.head()?;
        if p.ts_ns > now_ns {
            return None;
        }
        self.pop_head(at);
        Some((p.ts_ns, port, p))
    }

    /// Move every packet due by `now_ns` to `out(port, packet)`, stopping early when `out`
    /// returns false (its port is full; that packet stays held). A line with one port and
    /// nothing out of order takes a fast path that never looks at the heap.
    #[inline]
    pub fn release(&mut self, now_ns: u64, mut out: impl FnMut(u16, Packet) -> bool) {
        if self.heap.is_empty() && self.fifos.len() == 1 {
            let f = &mut self.fifos[0];
            while let Some(&p) = f.front() {
                if p.ts_ns > now_ns || !out(0, p) {
                    return;
                }
                f.pop_front();
                self.len -= 1;
            }
            return;
        }
        while let Some((p, port, at)) = self.head() {
            if p.ts_ns > now_ns || !out(port, p) {
                return;
            }
            self.pop_head(at);
        }
    }

    /// Take every held packet, in departure order (for shutdown and tests).
    pub fn drain(&mut self) -> Vec<Packet> {
        let mut out = Vec::with_capacity(self.len);
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
        Packet {
            id,
            len: 60,
            ts_ns: 0,
        }
    }

    #[test]
    fn releases_in_time_order_with_stable_ties() {
        let mut d = DelayLine::new(10);
        for (at, p) in [(10, 1), (20, 2), (15, 3), (20, 4), (5, 5), (30, 6), (15, 7)] {
            d.push(at, 0, pk(p)).unwrap();
        }
        assert_eq!(d.next_at(), Some(5));
        assert_eq!(d.pop_due(4), None);
        let mut got = vec![];
        while let Some((_, _, p)) = d.pop_due(25) {
            got.push(p.id);
        }
        // 3 and 7 tie at 15 (both out of order: heap order by scheduling); 2 and 4 tie
        // at 20 (both in the FIFO).
        assert_eq!(got, [5, 1, 3, 7, 2, 4]);
        let mut rest = vec![];
        d.release(u64::MAX, |_, p| {
            rest.push((p.id, p.ts_ns));
            true
        });
        assert_eq!(rest, [(6, 30)]);
        assert!(d.drain().is_empty());
    }

    #[test]
    fn ports_keep_their_own_order() {
        let mut d = DelayLine::new(10);
        d.push(10, 1, pk(1)).unwrap();
        d.push(5, 0, pk(2)).unwrap();
        d.push(7, 1, pk(3)).unwrap();
        let got: Vec<(u16, u32)> =
            std::iter::from_fn(|| d.pop_due(100).map(|(_, port, p)| (port, p.id))).collect();
        assert_eq!(got, [(0, 2), (1, 3), (1, 1)]);
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
    fn fifo_spans_blocks_and_recycles_them() {
        let mut d = DelayLine::new(10_000);
        let mut next_out = 0u32;
        for round in 0..5u32 {
            for k in 0..1000u32 {
                let id = round * 1000 + k;
                d.push(id as u64, 0, pk(id)).unwrap();
            }
            while let Some((_, _, p)) = d.pop_due((round * 1000 + 700) as u64) {
                assert_eq!(p.id, next_out);
                next_out += 1;
            }
        }
        assert_eq!(d.len(), (5000 - next_out) as usize);
        let f = &d.fifos[0];
        assert!(f.spare.len() + f.blocks.len() <= 8, "blocks are recycled");
        let rest: Vec<u32> = d.drain().iter().map(|p| p.id).collect();
        assert_eq!(rest, (next_out..5000).collect::<Vec<_>>());
    }

    #[test]
    fn refuses_beyond_limit() {
        let mut d = DelayLine::new(2);
        d.push(1, 0, pk(1)).unwrap();
        d.push(1, 0, pk(2)).unwrap();
        assert_eq!(d.push(1, 0, pk(3)), Err(pk(3)));
    }
}
