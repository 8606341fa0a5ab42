//! Packets: frames in buffers from a fixed pool, named by a [`PacketId`].
//!
//! The pool is allocated once (zeroed memory the kernel maps lazily, so unused slots cost
//! no RAM); afterwards allocating and freeing is a push/pop on a free list: no allocation
//! per packet. The pool's capacity bounds every packet in flight, so a flood into a long
//! delay can never grow memory: when the pool is empty, new packets are dropped and
//! counted.
//!
//! Buffers come in two classes: *small* slots for frames up to an MTU (most traffic),
//! and a few *large* slots for GSO/GRO super-packets of up to 64 KiB. So the memory bound
//! is `small × small slot + large × large slot`, not `packets × 64 KiB`. Every slot
//! starts with [`HEADROOM`] bytes that carry the packet's offload header (a
//! `virtio_net_hdr`: GSO type and size, checksum start and offset) right before the
//! frame, so the raw-socket apps read and write header + frame in one piece.
//!
//! A [`Packet`] is a 16-byte handle passed by value: buffer id, length, and `ts_ns`, the
//! exact time the packet reached the stage that holds it (capture time, or the time a
//! delay line scheduled it for). Links and delay lines carry the handle, so moving a
//! packet through a chain never touches the buffer or any table indexed by it: measured,
//! that lookup was the largest cost of a four-plugin chain.

/// Largest frame a small slot holds: an MTU frame with VLAN tags and room to grow.
pub const SMALL_FRAME: usize = 2032;
/// Largest frame a large slot holds: a 64 KiB GSO/GRO super-packet plus its Ethernet
/// header.
pub const LARGE_FRAME: usize = synthnet_sdk::abi::MAX_PACKET_LEN;

/// Index of a buffer in its pool.
pub type PacketId = u32;

/// A packet: which buffer, how many bytes of it, and its timestamp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Packet {
    pub id: PacketId,
    pub len: u32,
    pub ts_ns: u64,
}

/// Bytes in front of every frame; the offload header occupies the last [`VNET_HDR_LEN`].
pub const HEADROOM: usize = 16;
/// `sizeof(struct virtio_net_hdr)`.
pub const VNET_HDR_LEN: usize = 10;
const VNET_AT: usize = HEADROOM - VNET_HDR_LEN;

/// `virtio_net_hdr` fields (little-endian on every host synthnet runs on).
pub mod vnet {
    pub const F_NEEDS_CSUM: u8 = 1;
    pub const GSO_NONE: u8 = 0;
    pub const GSO_ECN: u8 = 0x80;
}

/// The offload header of a packet, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn decode(b: &[u8]) -> VnetHdr {
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }
    pub fn encode(&self, b: &mut [u8]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }
    pub fn is_gso(&self) -> bool {
        self.gso_type & !vnet::GSO_ECN != vnet::GSO_NONE
    }
    /// Bytes the frame puts on the wire once segmented: every segment repeats the
    /// headers (`hdr_len`, or `csum_start + 20` for TCP when the sender left it 0).
    pub fn wire_bytes(&self, len: u32) -> u32 {
        if !self.is_gso() || self.gso_size == 0 {
            return len;
        }
        let hdr = if self.hdr_len != 0 {
            self.hdr_len as u32
        } else {
            self.csum_start as u32 + 20
        }
        .min(len);
        let payload = len - hdr;
        let segs = payload.div_ceil(self.gso_size as u32).max(1);
        len + (segs - 1) * hdr
    }
}

/// One size class of slots.
#[derive(Clone, Copy, Debug)]
struct Class {
    first: PacketId,
    count: usize,
    /// Bytes from one slot to the next (headroom + frame, cache-line aligned).
    stride: usize,
    /// Largest frame a slot holds.
    max_len: usize,
    /// Offset of the class's first slot in `data`.
    base: usize,
}

impl Class {
    fn new(first: PacketId, count: usize, max_len: usize, base: usize) -> Class {
        Class {
            first,
            count,
            stride: (HEADROOM + max_len).next_multiple_of(64),
            max_len,
            base,
        }
    }
    fn bytes(&self) -> usize {
        self.count * self.stride
    }
}

pub struct PacketPool {
    data: Vec<u8>,
    small: Class,
    large: Class,
    free: Vec<PacketId>,
    free_large: Vec<PacketId>,
    /// Per buffer: where its packet came from, set by whoever fed it in (a replay's
    /// arrival time), [`NO_ORIGIN`] after an alloc, a copy's that of its original. Ties
    /// a packet that leaves to its arrival by identity, not by content.
    origin: Vec<u64>,
}

/// A buffer whose packet no feeder marked (see [`PacketPool::set_origin`]).
pub const NO_ORIGIN: u64 = u64::MAX;

impl PacketPool {
    /// A pool of `capacity` packets of at most `max_len` bytes each (one class).
    pub fn new(capacity: usize, max_len: usize) -> Self {
        Self::with_large(capacity, max_len, 0, 0)
    }

    /// `small` slots of up to `small_len` bytes and `large` slots of up to `large_len`.
    /// A packet goes to a large slot when it does not fit a small one (or is asked for).
    pub fn with_large(small: usize, small_len: usize, large: usize, large_len: usize) -> Self {
        assert!(small > 0 && small_len > 0);
        assert!(small + large <= u32::MAX as usize);
        let s = Class::new(0, small, small_len, 0);
        let l = Class::new(
            small as PacketId,
            large,
            large_len.max(small_len),
            s.bytes(),
        );
        PacketPool {
            data: vec![0u8; s.bytes() + l.bytes()],
            small: s,
            large: l,
            // Pop from the end: hand out low ids first (warmer memory).
            free: (0..small as PacketId).rev().collect(),
            free_large: (small as PacketId..(small + large) as PacketId)
                .rev()
                .collect(),
            origin: vec![NO_ORIGIN; small + large],
        }
    }

    /// Mark packet `p` as coming from `origin` (copies inherit it; a new alloc clears it).
    #[inline]
    pub fn set_origin(&mut self, p: &Packet, origin: u64) {
        self.origin[p.id as usize] = origin;
    }

    /// Where packet `p` came from, if its feeder said (see [`PacketPool::set_origin`]).
    #[inline]
    pub fn origin(&self, p: &Packet) -> Option<u64> {
        Some(self.origin[p.id as usize]).filter(|&o| o != NO_ORIGIN)
    }

    pub fn capacity(&self) -> usize {
        self.small.count + self.large.count
    }
    /// The longest frame any slot holds.
    pub fn max_len(&self) -> usize {
        if self.large.count > 0 {
            self.large.max_len
        } else {
            self.small.max_len
        }
    }
    /// The longest frame a small slot holds.
    pub fn small_len(&self) -> usize {
        self.small.max_len
    }
    pub fn available(&self) -> usize {
        self.free.len() + self.free_large.len()
    }
    pub fn in_use(&self) -> usize {
        self.capacity() - self.available()
    }
    /// Bytes the pool reserves: the most its slots can ever make resident.
    pub fn reserved_bytes(&self) -> usize {
        self.data.len()
    }

    #[inline(always)]
    fn class(&self, id: PacketId) -> &Class {
        if id < self.large.first {
            &self.small
        } else {
            &self.large
        }
    }
    #[inline(always)]
    fn slot(&self, id: PacketId) -> (usize, usize) {
        let c = self.class(id);
        (c.base + (id - c.first) as usize * c.stride, c.max_len)
    }
    /// Whether `p` sits in a large slot (only those can carry a GSO header).
    #[inline(always)]
    pub fn is_large(&self, p: &Packet) -> bool {
        p.id >= self.large.first
    }

    /// A packet of `len` bytes with stale contents and no offload header, or `None` when
    /// the pool (the class `len` needs) is exhausted or `len` fits no slot.
    #[inline]
    pub fn alloc(&mut self, len: u32, ts_ns: u64) -> Option<Packet> {
        let id = if len as usize <= self.small.max_len {
            self.free.pop()?
        } else if len as usize <= self.large.max_len {
            self.free_large.pop()?
        } else {
            return None;
        };
        let (at, _) = self.slot(id);
        self.data[at + VNET_AT..at + HEADROOM].fill(0);
        self.origin[id as usize] = NO_ORIGIN;
        Some(Packet { id, len, ts_ns })
    }

    /// A packet in a large slot (for GSO frames, whatever their length).
    pub fn alloc_large(&mut self, len: u32, ts_ns: u64) -> Option<Packet> {
        if len as usize > self.large.max_len {
            return None;
        }
        let id = self.free_large.pop()?;
        self.origin[id as usize] = NO_ORIGIN;
        Some(Packet { id, len, ts_ns })
    }

    /// A packet holding a copy of `bytes` (`None` if exhausted or too long).
    pub fn alloc_from(&mut self, bytes: &[u8], ts_ns: u64) -> Option<Packet> {
        let p = self.alloc(bytes.len() as u32, ts_ns)?;
        self.buf_mut(p.id)[..bytes.len()].copy_from_slice(bytes);
        Some(p)
    }

    #[inline]
    pub fn free(&mut self, p: Packet) {
        debug_assert!(
            !self.free.contains(&p.id) && !self.free_large.contains(&p.id),
            "double free of packet {}",
            p.id
        );
        if p.id < self.large.first {
            self.free.push(p.id);
        } else {
            self.free_large.push(p.id);
        }
    }

    /// Free many packets at once.
    #[inline]
    pub fn free_all(&mut self, ps: &[Packet]) {
        for p in ps {
            self.free(*p);
        }
    }

    /// A copy of packet `p`, offload header included (`None` if exhausted).
    pub fn clone_packet(&mut self, p: &Packet) -> Option<Packet> {
        let q = if self.is_large(p) {
            self.alloc_large(p.len, p.ts_ns)?
        } else {
            self.alloc(p.len, p.ts_ns)?
        };
        let ((a, _), (b, _)) = (self.slot(p.id), self.slot(q.id));
        self.data
            .copy_within(a + VNET_AT..a + HEADROOM + p.len as usize, b + VNET_AT);
        self.origin[q.id as usize] = self.origin[p.id as usize];
        Some(q)
    }

    /// The packet's bytes.
    #[inline(always)]
    pub fn data(&self, p: &Packet) -> &[u8] {
        let (a, max) = self.slot(p.id);
        &self.data[a + HEADROOM..a + HEADROOM + (p.len as usize).min(max)]
    }
    /// The buffer's whole capacity, to write into before setting a packet's length.
    #[inline(always)]
    pub fn buf_mut(&mut self, id: PacketId) -> &mut [u8] {
        let (a, max) = self.slot(id);
        &mut self.data[a + HEADROOM..a + HEADROOM + max]
    }
    /// Offload header and buffer, contiguous: what a `PACKET_VNET_HDR` socket reads
    /// and writes.
    #[inline(always)]
    pub fn vnet_buf_mut(&mut self, id: PacketId) -> &mut [u8] {
        let (a, max) = self.slot(id);
        &mut self.data[a + VNET_AT..a + HEADROOM + max]
    }
    /// Offload header followed by the packet's bytes.
    #[inline(always)]
    pub fn vnet_frame(&self, p: &Packet) -> &[u8] {
        let (a, max) = self.slot(p.id);
        &self.data[a + VNET_AT..a + HEADROOM + (p.len as usize).min(max)]
    }
    /// The packet's offload header (all zero: none).
    pub fn vnet(&self, p: &Packet) -> VnetHdr {
        let (a, _) = self.slot(p.id);
        VnetHdr::decode(&self.data[a + VNET_AT..a + HEADROOM])
    }
    pub fn set_vnet(&mut self, p: &Packet, h: &VnetHdr) {
        let (a, _) = self.slot(p.id);
        h.encode(&mut self.data[a + VNET_AT..a + HEADROOM]);
    }

    /// Bytes `p` puts on the wire: its length, or for a GSO super-packet the sum of its
    /// segments. Small slots never hold GSO packets, so those cost no buffer access.
    #[inline(always)]
    pub fn wire_len(&self, p: &Packet) -> u32 {
        if self.is_large(p) {
            self.vnet(p).wire_bytes(p.len)
        } else {
            p.len
        }
    }

    /// Finish a pending checksum offload in software, as the kernel's
    /// `skb_checksum_help` does: a frame with `VIRTIO_NET_HDR_F_NEEDS_CSUM` carries in
    /// its checksum field only the pseudo-header's sum, and the sum over
    /// `csum_start..` is still to be folded in. After this the frame carries its real
    /// checksum and no pending offload, so a plugin that changes bytes afterwards (the
    /// `corrupt` plugin) leaves a checksum that no longer matches: the receiver catches
    /// it, as on a real wire. A GSO frame of one segment becomes a plain frame (else
    /// the kernel would compute its checksum again, over the damage). Left alone:
    /// frames with no pending checksum, GSO super-packets of several segments (the
    /// kernel computes each segment's checksum when it splits them) and headers whose
    /// offsets lie outside the frame. Returns whether it finished one.
    pub fn finish_checksum(&mut self, p: &Packet) -> bool {
        let h = self.vnet(p);
        if h.flags & vnet::F_NEEDS_CSUM == 0 || (h.is_gso() && h.wire_bytes(p.len) != p.len) {
            return false;
        }
        let (start, field) = (
            h.csum_start as usize,
            h.csum_start as usize + h.csum_offset as usize,
        );
        let len = p.len as usize;
        if start >= len || field + 2 > len {
            return false;
        }
        let data = &mut self.buf_mut(p.id)[..len];
        let sum = synthnet_sdk::checksum::sum(&data[start..], 0) as u16;
        // As the kernel: a sum that folds to 0 is sent as 0xFFFF (UDP's "no checksum"
        // must not appear by accident).
        let c = match !sum {
            0 => 0xFFFF,
            c => c,
        };
        data[field..field + 2].copy_from_slice(&c.to_be_bytes());
        let plain = VnetHdr {
            flags: h.flags & !vnet::F_NEEDS_CSUM,
            ..VnetHdr::default()
        };
        self.set_vnet(p, &plain);
        true
    }

    /// Replace the first `old_prefix` bytes of `p` with `prefix`, keeping the rest. Fails
    /// (and changes nothing) if the result would not fit. An offload header's offsets
    /// move with the payload.
    pub fn replace_prefix(&mut self, p: &mut Packet, old_prefix: usize, prefix: &[u8]) -> bool {
        let len = p.len as usize;
        let old_prefix = old_prefix.min(len);
        let new_len = len - old_prefix + prefix.len();
        let (_, max) = self.slot(p.id);
        if new_len > max {
            return false;
        }
        let buf = self.buf_mut(p.id);
        if prefix.len() != old_prefix {
            buf.copy_within(old_prefix..len, prefix.len());
        }
        buf[..prefix.len()].copy_from_slice(prefix);
        p.len = new_len as u32;
        let delta = prefix.len() as i64 - old_prefix as i64;
        if delta != 0 {
            let mut h = self.vnet(p);
            if h != VnetHdr::default() {
                let shift = |v: u16| (v as i64 + delta).clamp(0, u16::MAX as i64) as u16;
                if h.csum_start != 0 {
                    h.csum_start = shift(h.csum_start);
                }
                if h.hdr_len != 0 {
                    h.hdr_len = shift(h.hdr_len);
                }
                self.set_vnet(p, &h);
            }
        }
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

    /// A UDP/IPv4 frame with a pending checksum (the pseudo-header sum in the field,
    /// as a sender with `tx-checksumming` on leaves it) gets the checksum a full
    /// computation gives, and no pending offload.
    #[test]
    fn a_pending_checksum_is_finished_in_software() {
        use synthnet_sdk::checksum;
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let payload = b"hello, checksum!!";
        let udp_len = 8 + payload.len() as u16;
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
        f.extend_from_slice(&ip);
        let mut udp = vec![0x30, 0x39, 0x00, 0x35, 0, 0, 0, 0];
        udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
        udp.extend_from_slice(payload);
        let mut pseudo = vec![10, 0, 0, 1, 10, 0, 0, 2, 0, 17];
        pseudo.extend_from_slice(&udp_len.to_be_bytes());
        let want = checksum::internet(&[pseudo.clone(), udp.clone()].concat());
        // The partial field: the folded pseudo-header sum, not inverted.
        udp[6..8].copy_from_slice(&(checksum::sum(&pseudo, 0) as u16).to_be_bytes());
        f.extend_from_slice(&udp);
        let mut pool = PacketPool::new(2, 256);
        let p = pool.alloc_from(&f, 0).unwrap();
        let h = VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        pool.set_vnet(&p, &h);
        assert!(pool.finish_checksum(&p));
        assert_eq!(&pool.data(&p)[40..42], &want.to_be_bytes());
        assert_eq!(pool.vnet(&p).flags, 0);
        assert!(!pool.finish_checksum(&p), "nothing pending any more");
        // A GSO frame of several segments is left to the kernel's segmentation; one of
        // a single segment becomes a plain frame with its checksum.
        let q = pool.alloc_from(&f, 0).unwrap();
        let gso = VnetHdr {
            gso_type: 3,
            gso_size: 8,
            hdr_len: 42,
            ..h
        };
        pool.set_vnet(&q, &gso);
        assert!(!pool.finish_checksum(&q));
        assert_eq!(pool.vnet(&q), gso);
        let one = VnetHdr {
            gso_size: 1000,
            ..gso
        };
        pool.set_vnet(&q, &one);
        assert!(pool.finish_checksum(&q));
        assert_eq!(pool.vnet(&q), VnetHdr::default());
        assert_eq!(&pool.data(&q)[40..42], &want.to_be_bytes());
    }

    #[test]
    fn two_classes_and_offload_headers() {
        let mut pool = PacketPool::with_large(2, 100, 1, 1000);
        let a = pool.alloc(100, 0).unwrap();
        let b = pool.alloc(101, 0).unwrap();
        assert!(!pool.is_large(&a) && pool.is_large(&b));
        assert!(pool.alloc(500, 0).is_none(), "the one large slot is taken");
        assert!(pool.alloc(1001, 0).is_none(), "fits no slot");
        let h = VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            gso_type: 1,
            hdr_len: 54,
            gso_size: 100,
            csum_start: 34,
            csum_offset: 16,
        };
        pool.set_vnet(&b, &h);
        assert_eq!(pool.vnet(&b), h);
        // 101 bytes = 54 of headers + 47 of payload: one segment.
        assert_eq!(pool.wire_len(&b), 101);
        pool.free(b);
        let big = pool.alloc_large(54 + 250, 0).unwrap();
        pool.set_vnet(&big, &h);
        // 250 bytes of payload in 100-byte segments: 3 segments, headers twice more.
        assert_eq!(pool.wire_len(&big), 304 + 2 * 54);
        assert_eq!(pool.clone_packet(&big), None, "no large slot left");
        pool.free(big);
        let c = pool.alloc(60, 0).unwrap();
        assert_eq!(
            pool.vnet(&c),
            VnetHdr::default(),
            "a fresh packet has no offload"
        );
        assert_eq!(pool.vnet_frame(&c).len(), VNET_HDR_LEN + 60);
    }
}
