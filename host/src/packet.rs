//! Packets: frames in buffers from a fixed pool, named by a [`PacketId`].
//!
//! The pool is allocated once (zeroed memory the kernel maps lazily, so unused slots cost
//! no RAM); afterwards allocating and freeing is a push/pop on a free list: no allocation
//! per packet. A packet's metadata is its length and `ts_ns`: the exact time it reached
//! the stage that holds it (capture time, or the time a delay line scheduled it for).
//! The pool's capacity bounds every packet in flight, so a flood into a long delay can
//! never grow memory: when the pool is empty, new packets are dropped and counted.

/// Index of a packet in its pool. Cheap to copy; links carry these.
pub type PacketId = u32;

pub struct PacketPool {
    data: Vec<u8>,
    slot: usize,
    len: Vec<u32>,
    ts_ns: Vec<u64>,
    free: Vec<PacketId>,
}

impl PacketPool {
    /// A pool of `capacity` packets of at most `slot_size` bytes each.
    pub fn new(capacity: usize, slot_size: usize) -> Self {
        assert!(capacity > 0 && capacity <= u32::MAX as usize && slot_size > 0);
        PacketPool {
            data: vec![0u8; capacity * slot_size],
            slot: slot_size,
            len: vec![0; capacity],
            ts_ns: vec![0; capacity],
            // Pop from the end: hand out low ids first (warmer memory).
            free: (0..capacity as PacketId).rev().collect(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.len.len()
    }
    pub fn slot_size(&self) -> usize {
        self.slot
    }
    pub fn available(&self) -> usize {
        self.free.len()
    }
    pub fn in_use(&self) -> usize {
        self.capacity() - self.free.len()
    }

    /// A packet of length 0 with stale contents, or `None` when the pool is exhausted.
    #[inline]
    pub fn alloc(&mut self) -> Option<PacketId> {
        self.free.pop()
    }

    /// A packet holding a copy of `bytes` (`None` if exhausted or too long).
    pub fn alloc_from(&mut self, bytes: &[u8], ts_ns: u64) -> Option<PacketId> {
        if bytes.len() > self.slot {
            return None;
        }
        let p = self.alloc()?;
        self.buf_mut(p)[..bytes.len()].copy_from_slice(bytes);
        self.len[p as usize] = bytes.len() as u32;
        self.ts_ns[p as usize] = ts_ns;
        Some(p)
    }

    #[inline]
    pub fn free(&mut self, p: PacketId) {
        debug_assert!(!self.free.contains(&p), "double free of packet {p}");
        self.free.push(p);
    }

    /// A copy of packet `p` (`None` if exhausted).
    pub fn clone_packet(&mut self, p: PacketId) -> Option<PacketId> {
        let q = self.alloc()?;
        let (s, len) = (self.slot, self.len[p as usize] as usize);
        let (a, b) = (p as usize * s, q as usize * s);
        self.data.copy_within(a..a + len, b);
        self.len[q as usize] = len as u32;
        self.ts_ns[q as usize] = self.ts_ns[p as usize];
        Some(q)
    }

    #[inline(always)]
    pub fn len(&self, p: PacketId) -> u32 {
        self.len[p as usize]
    }
    /// Set the length; callers keep it within [`PacketPool::slot_size`].
    #[inline(always)]
    pub fn set_len(&mut self, p: PacketId, len: u32) {
        debug_assert!(len as usize <= self.slot);
        self.len[p as usize] = len.min(self.slot as u32);
    }
    #[inline(always)]
    pub fn ts_ns(&self, p: PacketId) -> u64 {
        self.ts_ns[p as usize]
    }
    #[inline(always)]
    pub fn set_ts_ns(&mut self, p: PacketId, ts: u64) {
        self.ts_ns[p as usize] = ts;
    }

    /// The packet's bytes.
    #[inline(always)]
    pub fn data(&self, p: PacketId) -> &[u8] {
        let a = p as usize * self.slot;
        &self.data[a..a + self.len[p as usize] as usize]
    }
    /// The packet's whole buffer (its capacity), to write into before `set_len`.
    #[inline(always)]
    pub fn buf_mut(&mut self, p: PacketId) -> &mut [u8] {
        let a = p as usize * self.slot;
        &mut self.data[a..a + self.slot]
    }

    /// Replace the first `old_prefix` bytes with `prefix`, keeping the rest. Fails (and
    /// changes nothing) if the result would not fit.
    pub fn replace_prefix(&mut self, p: PacketId, old_prefix: usize, prefix: &[u8]) -> bool {
        let len = self.len[p as usize] as usize;
        let old_prefix = old_prefix.min(len);
        let new_len = len - old_prefix + prefix.len();
        if new_len > self.slot {
            return false;
        }
        let buf = self.buf_mut(p);
        if prefix.len() != old_prefix {
            buf.copy_within(old_prefix..len, prefix.len());
        }
        buf[..prefix.len()].copy_from_slice(prefix);
        self.len[p as usize] = new_len as u32;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_until_empty_then_refuse() {
        let mut pool = PacketPool::new(3, 64);
        let ps: Vec<_> = (0..3).map(|_| pool.alloc().unwrap()).collect();
        assert_eq!(pool.alloc(), None);
        assert_eq!(pool.in_use(), 3);
        pool.free(ps[1]);
        assert_eq!(pool.alloc(), Some(ps[1]));
    }

    #[test]
    fn clone_and_replace_prefix() {
        let mut pool = PacketPool::new(4, 32);
        let p = pool.alloc_from(b"headerPAYLOAD", 7).unwrap();
        let q = pool.clone_packet(p).unwrap();
        assert!(pool.replace_prefix(q, 6, b"HDR"));
        assert_eq!(pool.data(q), b"HDRPAYLOAD");
        assert!(pool.replace_prefix(p, 6, b"LONGERHEADER"));
        assert_eq!(pool.data(p), b"LONGERHEADERPAYLOAD");
        assert_eq!(pool.ts_ns(q), 7);
        assert!(!pool.replace_prefix(p, 0, &[0u8; 20]), "would exceed the slot");
        assert_eq!(pool.data(p), b"LONGERHEADERPAYLOAD");
        assert!(pool.alloc_from(&[0u8; 33], 0).is_none());
    }
}
