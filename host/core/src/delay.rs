//! Delay lines: where the host holds packets until their departure time.
//!
//! Plugins never keep packets; they answer "deliver at t" and the packet waits here, in
//! the host, where a hot swap cannot lose it. Most stages produce departure times in
//! order (constant latency, a shaper, FIFO jitter), so a FIFO takes those in O(1);
//! out-of-order times (reordering jitter) go to a binary heap. Ties leave in the order
//! they were scheduled. A line holds at most `limit` packets.
//!
//! Held packets are the dominant memory traffic of a delay stage (a 10 ms line at 1 Mpps
//! holds 10 000), so FIFO entries are bare 16-byte [`Packet`]s whose `ts_ns` is the
//! departure time and no sequence number (a FIFO entry with the same time as a heap
//! entry was always scheduled first, because the heap only takes times earlier than the
//! FIFO's tail). The FIFO is a queue of fixed-size blocks
//! recycled last-in first-out, so the tail writes into the block the head has just
//! finished reading; as a plain ring every push missed the cache.

use crate::packet::Packet;
use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::rc::Rc;

/// A share of the packet pool that several delay lines hold packets against: every
/// stage of a chain shares its chain's, every chain of a direction its direction's. So
/// one chain holding packets (a long delay under a flood) cannot take the pool from the
/// other chains or from the other direction.
#[derive(Debug, Default)]
pub struct HoldShare {
    held: Cell<usize>,
    limit: Cell<usize>,
}

impl HoldShare {
    pub fn new(limit: usize) -> Rc<HoldShare> {
        Rc::new(HoldShare {
            held: Cell::new(0),
            limit: Cell::new(limit),
        })
    }
    pub fn held(&self) -> usize {
        self.held.get()
    }
    pub fn limit(&self) -> usize {
        self.limit.get()
    }
    /// A new limit (a configuration change); what is held stays held.
    pub fn set_limit(&self, limit: usize) {
        self.limit.set(limit);
    }
    fn is_full(&self) -> bool {
        self.held.get() >= self.limit.get()
    }
    fn add(&self, n: usize) {
        self.held.set(self.held.get() + n);
    }
    fn sub(&self, n: usize) {
        self.held.set(self.held.get().saturating_sub(n));
    }
}

const BLOCK: usize = 256;

/// An out-of-order packet: departure (`pkt.ts_ns`) and scheduling order.
#[derive(Clone, Copy, Debug)]
struct Held {
    pkt: Packet,
    seq: u64,
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

pub struct DelayLine {
    fifo: BlockFifo,
    heap: BinaryHeap<Reverse<Held>>,
    seq: u64,
    len: usize,
    limit: usize,
    /// The shares this line's packets count against (none: only `limit`).
    shares: Vec<Rc<HoldShare>>,
}

impl DelayLine {
    pub fn new(limit: usize) -> Self {
        DelayLine {
            fifo: BlockFifo::default(),
            heap: BinaryHeap::new(),
            seq: 0,
            len: 0,
            limit,
            shares: Vec::new(),
        }
    }

    /// Count this line's packets against `shares` from now on (moving what it holds
    /// from the shares it had).
    pub fn set_shares(&mut self, shares: Vec<Rc<HoldShare>>) {
        for s in &self.shares {
            s.sub(self.len);
        }
        for s in &shares {
            s.add(self.len);
        }
        self.shares = shares;
    }

    fn released(&mut self, n: usize) {
        self.len -= n;
        for s in &self.shares {
            s.sub(n);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A new bound on the packets this line holds (what it holds beyond it stays, and
    /// it takes no more until it is under it again).
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Hold `pkt` until `at_ns`; hands it back when the line or one of its shares is
    /// full.
    #[inline]
    pub fn push(&mut self, at_ns: u64, mut pkt: Packet) -> Result<(), Packet> {
        if self.len >= self.limit || self.shares.iter().any(|s| s.is_full()) {
            return Err(pkt);
        }
        for s in &self.shares {
            s.add(1);
        }
        pkt.ts_ns = at_ns;
        match self.fifo.back_ts() {
            Some(back) if back > at_ns => {
                self.heap.push(Reverse(Held { pkt, seq: self.seq }));
                self.seq += 1;
            }
            _ => self.fifo.push_back(pkt),
        }
        self.len += 1;
        Ok(())
    }

    /// The next packet to leave, and whether it is in the heap.
    #[inline(always)]
    fn head(&self) -> Option<(Packet, bool)> {
        let fifo = self.fifo.front().copied();
        match self.heap.peek() {
            // Strictly earlier only: on a tie the FIFO entry was scheduled first.
            Some(Reverse(h)) if fifo.is_none_or(|f| h.pkt.ts_ns < f.ts_ns) => Some((h.pkt, true)),
            _ => fifo.map(|f| (f, false)),
        }
    }

    fn pop_head(&mut self, in_heap: bool) {
        if in_heap {
            self.heap.pop();
        } else {
            self.fifo.pop_front();
        }
        self.released(1);
    }

    /// Departure time of the next packet.
    #[inline]
    pub fn next_at(&self) -> Option<u64> {
        self.head().map(|(p, _)| p.ts_ns)
    }

    /// The next packet due at or before `now_ns`; its `ts_ns` is its departure time.
    #[inline]
    pub fn pop_due(&mut self, now_ns: u64) -> Option<Packet> {
        let (p, in_heap) = self.head()?;
        if p.ts_ns > now_ns {
            return None;
        }
        self.pop_head(in_heap);
        Some(p)
    }

    /// Move every packet due by `now_ns` to `out(packet)`, stopping early when `out`
    /// returns false (the output is full; that packet stays held). A line with nothing
    /// out of order takes a fast path that never looks at the heap.
    #[inline]
    pub fn release(&mut self, now_ns: u64, mut out: impl FnMut(Packet) -> bool) {
        if self.heap.is_empty() {
            let mut n = 0;
            while let Some(&p) = self.fifo.front() {
                if p.ts_ns > now_ns || !out(p) {
                    break;
                }
                self.fifo.pop_front();
                n += 1;
            }
            self.released(n);
            return;
        }
        while let Some((p, in_heap)) = self.head() {
            if p.ts_ns > now_ns || !out(p) {
                return;
            }
            self.pop_head(in_heap);
        }
    }

    /// Take every held packet, in departure order (a stage being removed).
    pub fn drain(&mut self) -> Vec<Packet> {
        let mut out = Vec::with_capacity(self.len);
        while let Some(p) = self.pop_due(u64::MAX) {
            out.push(p);
        }
        out
    }
}

/// Packets a plugin parked (link ABI 1.1): held in the host, in order, with no departure
/// time, until the plugin releases or drops the oldest of them. Each keeps the output
/// port it will leave on. Counted against shares like a delay line's packets.
#[derive(Default)]
pub struct ParkedQueue {
    queue: VecDeque<(Packet, u16)>,
    shares: Vec<Rc<HoldShare>>,
}

impl ParkedQueue {
    pub fn len(&self) -> usize {
        self.queue.len()
    }
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Count this queue's packets against `shares` from now on (see
    /// [`DelayLine::set_shares`]).
    pub fn set_shares(&mut self, shares: Vec<Rc<HoldShare>>) {
        for s in &self.shares {
            s.sub(self.queue.len());
        }
        for s in &shares {
            s.add(self.queue.len());
        }
        self.shares = shares;
    }

    /// Park `pkt` to leave on `port` later; hands it back when a share is full.
    pub fn push(&mut self, pkt: Packet, port: u16) -> Result<(), Packet> {
        if self.shares.iter().any(|s| s.is_full()) {
            return Err(pkt);
        }
        for s in &self.shares {
            s.add(1);
        }
        self.queue.push_back((pkt, port));
        Ok(())
    }

    /// Take the oldest `max` parked packets (0 = all), oldest first, with their ports.
    pub fn take(&mut self, max: usize) -> Vec<(Packet, u16)> {
        let k = if max == 0 {
            self.queue.len()
        } else {
            max.min(self.queue.len())
        };
        for s in &self.shares {
            s.sub(k);
        }
        self.queue.drain(..k).collect()
    }

    /// Take every packet parked for `port`, oldest first; the others stay, in order.
    pub fn take_port(&mut self, port: u16) -> Vec<Packet> {
        let mut out = Vec::new();
        self.queue.retain(|&(p, q)| {
            if q == port {
                out.push(p);
            }
            q != port
        });
        for s in &self.shares {
            s.sub(out.len());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parked_packets_leave_oldest_first_and_count_against_shares() {
        let share = HoldShare::new(3);
        let mut q = ParkedQueue::default();
        q.set_shares(vec![share.clone()]);
        let mut line = DelayLine::new(10);
        line.set_shares(vec![share.clone()]);
        line.push(5, pk(9)).unwrap();
        q.push(pk(1), 0).unwrap();
        q.push(pk(2), 1).unwrap();
        assert_eq!(q.push(pk(3), 0), Err(pk(3)), "the share is full");
        assert_eq!(share.held(), 3);
        let got: Vec<_> = q
            .take(1)
            .into_iter()
            .map(|(p, port)| (p.id, port))
            .collect();
        assert_eq!(got, [(1, 0)]);
        q.push(pk(3), 0).unwrap();
        let got: Vec<_> = q
            .take(0)
            .into_iter()
            .map(|(p, port)| (p.id, port))
            .collect();
        assert_eq!(got, [(2, 1), (3, 0)]);
        assert_eq!((q.len(), share.held()), (0, 1));
        assert!(q.take(5).is_empty());
    }

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
            d.push(at, pk(p)).unwrap();
        }
        assert_eq!(d.next_at(), Some(5));
        assert_eq!(d.pop_due(4), None);
        let mut got = vec![];
        while let Some(p) = d.pop_due(25) {
            got.push(p.id);
        }
        // 3 and 7 tie at 15 (both out of order: heap order by scheduling); 2 and 4 tie
        // at 20 (both in the FIFO).
        assert_eq!(got, [5, 1, 3, 7, 2, 4]);
        let mut rest = vec![];
        d.release(u64::MAX, |p| {
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
            d.push(p as u64, pk(p)).unwrap();
        }
        let mut out = vec![];
        d.release(10, |p| {
            out.push(p.id);
            out.len() <= 3
        });
        // The fourth was refused: it and the fifth stay, in order.
        assert_eq!(out, [0, 1, 2, 3]);
        assert_eq!(d.drain().iter().map(|p| p.id).collect::<Vec<_>>(), [3, 4]);
    }

    #[test]
    fn fifo_spans_blocks_and_recycles_them() {
        let mut d = DelayLine::new(10_000);
        let mut next_out = 0u32;
        for round in 0..5u32 {
            for k in 0..1000u32 {
                let id = round * 1000 + k;
                d.push(id as u64, pk(id)).unwrap();
            }
            while let Some(p) = d.pop_due((round * 1000 + 700) as u64) {
                assert_eq!(p.id, next_out);
                next_out += 1;
            }
        }
        assert_eq!(d.len(), (5000 - next_out) as usize);
        let f = &d.fifo;
        assert!(f.spare.len() + f.blocks.len() <= 8, "blocks are recycled");
        let rest: Vec<u32> = d.drain().iter().map(|p| p.id).collect();
        assert_eq!(rest, (next_out..5000).collect::<Vec<_>>());
    }

    #[test]
    fn refuses_beyond_limit() {
        let mut d = DelayLine::new(2);
        d.push(1, pk(1)).unwrap();
        d.push(1, pk(2)).unwrap();
        assert_eq!(d.push(1, pk(3)), Err(pk(3)));
    }

    #[test]
    fn shares_bound_several_lines_together() {
        let chain = HoldShare::new(3);
        let (mut a, mut b) = (DelayLine::new(10), DelayLine::new(10));
        a.set_shares(vec![chain.clone()]);
        b.set_shares(vec![chain.clone()]);
        a.push(5, pk(1)).unwrap();
        b.push(5, pk(2)).unwrap();
        a.push(6, pk(3)).unwrap();
        assert_eq!(b.push(7, pk(4)), Err(pk(4)), "the chain's share is full");
        assert_eq!(chain.held(), 3);
        let mut got = vec![];
        a.release(5, |p| {
            got.push(p.id);
            true
        });
        assert_eq!((got, chain.held()), (vec![1], 2));
        b.push(7, pk(4)).unwrap();
        assert_eq!(a.drain().len() + b.drain().len(), 3);
        assert_eq!(chain.held(), 0);
    }
}
