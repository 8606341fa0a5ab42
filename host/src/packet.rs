//! Packets: frames in buffers from a fixed pool, named by a [`PacketId`].
//!
//! The pool is allocated once (zeroed memory the kernel maps lazily, so unused slots cost
//! no RAM); afterwards allocating and freeing is a push/pop on a free list: no allocation
//! per packet. The pool's capacity bounds every packet in flight, so a flood into a long
//! delay can never grow memory: when the pool is empty, new packets are dropped and
//! counted.
//!
//! A [`Packet`] is a 16-byte handle passed by value: buffer id, length, and `ts_ns`, the
//! exact time the packet reached the stage that holds it (capture time, or the time a
//! delay line scheduled it for). Links and delay lines carry the handle, so moving a
//! packet through a chain never touches the buffer or any table indexed by it: measured,
//! that lookup was the largest cost of a four-plugin chain.

/// Index of a buffer in its pool.
pub type PacketId = u32;

/// A packet: which buffer, how many bytes of it, and its timestamp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Packet {
    pub id: PacketId,
    pub len: u32,
    pub ts_ns: u64,
}

pub struct PacketPool {
    data: Vec<u8>,
    slot: usize,
    capacity: usize,
    free: Vec<PacketId>,
}

impl PacketPool {
    /// A pool of `capacity` packets of at most `slot_size` bytes each.
    pub fn new(capacity: usize, slot_size: usize) -> Self {
        assert!(capacity > 0 && capacity <= u32::MAX as usize && slot_size > 0);
        PacketPool {
            data: vec![0u8; capacity * slot_size],
            slot: slot_size,
            capacity,
            // Pop from the end: hand out low ids first (warmer memory).
            free: (0..capacity as PacketId).rev().collect(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
    pub fn slot_size(&self) -> usize {
        self.slot
    }
    pub fn available(&self) -> usize {
        self.free.len()
    }
    pub fn in_use(&self) -> usize {
        self.capacity - self.free.len()
    }

    /// A packet of `len` bytes with stale contents, or `None` when the pool is exhausted.
    #[inline]
    pub fn alloc(&mut self, len: u32, ts_ns: u64) -> Option<Packet> {
        let id = self.free.pop()?;
        Some(Packet {
            id,
            len: len.min(self.slot as u32),
            ts_ns,
        })
    }

    /// A packet holding a copy of `bytes` (`None` if exhausted or too long).
    pub fn alloc_from(&mut self, bytes: &[u8], ts_ns: u64) -> Option<Packet> {
        if bytes.len() > self.slot {
            return None;
        }
        let p = self.alloc(bytes.len() as u32, ts_ns)?;
        self.buf_mut(p.id)[..bytes.len()].copy_from_slice(bytes);
        Some(p)
    }

    #[inline]
    pub fn free(&mut self, p: Packet) {
        debug_assert!(!self.free.contains(&p.id), "double free of packet {}", p.id);
        self.free.push(p.id);
    }

    /// Free many packets at once.
    #[inline]
    pub fn free_all(&mut self, ps: &[Packet]) {
        self.free.extend(ps.iter().map(|p| p.id));
    }

    /// A copy of packet `p` (`None` if exhausted).
    pub fn clone_packet(&mut self, p: &Packet) -> Option<Packet> {
        let q = self.alloc(p.len, p.ts_ns)?;
        let (a, b) = (p.id as usize * self.slot, q.id as usize * self.slot);
        self.data.copy_within(a..a + p.len as usize, b);
        Some(q)
    }

    /// The packet's bytes.
    #[inline(always)]
    pub fn data(&self, p: &Packet) -> &[u8] {
        let a = p.id as usize * self.slot;
        &self.data[a..a + (p.len as usize).min(self.slot)]
    }
    /// The buffer's whole capacity, to write into before setting a packet's length.
    #[inline(always)]
    pub fn buf_mut(&mut self, id: PacketId) -> &mut [u8] {
        let a = id as usize * self.slot;
        &mut self.data[a..a + self.slot]
    }

    /// Replace the first `old_prefix` bytes of `p` with `prefix`, keeping the rest. Fails
    /// (and changes nothing) if the result would not fit.
    pub fn replace_prefix(&mut self, p: &mut Packet, old_prefix: usize, prefix: &[u8]) -> bool {
        let len = p.len as usize;
        let old_prefix = old_prefix.min(len);
        let new_len = len - old_prefix + prefix.len();
        if new_len > self.slot {
            return false;
        }
        let buf = self.buf_mut(p.id);
        if prefix.len() != old_prefix {
            buf.copy_within(old_prefix..len, prefix.len());
        }
        buf[..prefix.len()].copy_from_slice(prefix);
        p.len = new_len as u32;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_until_empty_then_refuse() {
        let mut pool = PacketPool::new(3, 64);
        let ps: Vec<_> = (0..3).map(|_| pool.alloc(10, 0).unwrap()).collect();
        assert_eq!(pool.alloc(10, 0), None);
        assert_eq!(pool.in_use(), 3);
        pool.free(ps[1]);
        assert_eq!(pool.alloc(10, 0).map(|p| p.id), Some(ps[1].id));
    }

    #[test]
    fn clone_and_replace_prefix() {
        let mut pool = PacketPool::new(4, 32);
        let mut p = pool.alloc_from(b"headerPAYLOAD", 7).unwrap();
        let mut q = pool.clone_packet(&p).unwrap();
        assert!(pool.replace_prefix(&mut q, 6, b"HDR"));
        assert_eq!(pool.data(&q), b"HDRPAYLOAD");
        assert!(pool.replace_prefix(&mut p, 6, b"LONGERHEADER"));
        assert_eq!(pool.data(&p), b"LONGERHEADERPAYLOAD");
        assert_eq!(q.ts_ns, 7);
        assert!(
            !pool.replace_prefix(&mut p, 0, &[0u8; 20]),
            "would exceed the slot"
        );
        assert_eq!(pool.data(&p), b"LONGERHEADERPAYLOAD");
        assert!(pool.alloc_from(&[0u8; 33], 0).is_none());
    }
}
