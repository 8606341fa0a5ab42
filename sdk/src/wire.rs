//! Zero-copy views of packet headers: Ethernet, IPv4, IPv6, UDP, TCP.
//!
//! In the style of smoltcp's `wire`: a view wraps any `T: AsRef<[u8]>`; `new_checked`
//! verifies the buffer is long enough for the fixed header (and for IPv4 the header
//! length field), after which no getter can panic. Setters exist only for
//! `T: AsMut<[u8]>`. Getters return host-order values; checksums are left to the caller
//! (see [`crate::checksum`]).

/// The buffer is too short (or claims a header length it does not hold).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncated;

impl core::fmt::Display for Truncated {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("buffer too short for header")
    }
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
#[inline(always)]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
#[inline(always)]
fn set_be16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// EtherType values we look at.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86DD;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
}

/// IP protocol numbers we look at.
pub mod ipproto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// An Ethernet II frame.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    pub const HEADER_LEN: usize = 14;

    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        if buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(Truncated);
        }
        Ok(EthernetFrame { buffer })
    }
    pub fn dst(&self) -> [u8; 6] {
        self.buffer.as_ref()[0..6].try_into().unwrap_or([0; 6])
    }
    pub fn src(&self) -> [u8; 6] {
        self.buffer.as_ref()[6..12].try_into().unwrap_or([0; 6])
    }
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), 12)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[0..6].copy_from_slice(&mac);
    }
    pub fn set_src(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[6..12].copy_from_slice(&mac);
    }
    pub fn set_ethertype(&mut self, t: u16) {
        set_be16(self.buffer.as_mut(), 12, t);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[Self::HEADER_LEN..]
    }
}

/// An IPv4 header (and what follows it in the buffer).
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    pub const MIN_HEADER_LEN: usize = 20;

    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        let b = buffer.as_ref();
        if b.len() < Self::MIN_HEADER_LEN || b[0] >> 4 != 4 {
            return Err(Truncated);
        }
        let ihl = (b[0] & 0x0F) as usize * 4;
        if ihl < Self::MIN_HEADER_LEN || b.len() < ihl {
            return Err(Truncated);
        }
        Ok(Ipv4Packet { buffer })
    }
    pub fn header_len(&self) -> usize {
        (self.buffer.as_ref()[0] & 0x0F) as usize * 4
    }
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[1]
    }
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[8]
    }
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[9]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 10)
    }
    pub fn src(&self) -> [u8; 4] {
        self.buffer.as_ref()[12..16].try_into().unwrap_or([0; 4])
    }
    pub fn dst(&self) -> [u8; 4] {
        self.buffer.as_ref()[16..20].try_into().unwrap_or([0; 4])
    }
    /// Whether the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        crate::checksum::internet(&self.buffer.as_ref()[..self.header_len()]) == 0
    }
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Set the TTL and patch the header checksum incrementally (RFC 1624).
    pub fn set_ttl(&mut self, ttl: u8) {
        let b = self.buffer.as_mut();
        let old = be16(b, 8);
        b[8] = ttl;
        let new = be16(b, 8);
        let c = crate::checksum::update16(be16(b, 10), old, new);
        set_be16(b, 10, c);
    }
    pub fn set_checksum(&mut self, c: u16) {
        set_be16(self.buffer.as_mut(), 10, c);
    }
    /// Recompute the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let b = self.buffer.as_mut();
        set_be16(b, 10, 0);
        let c = crate::checksum::internet(&b[..hl]);
        set_be16(b, 10, c);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }
}

/// An IPv6 fixed header (extension headers are not walked).
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub const HEADER_LEN: usize = 40;

    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        let b = buffer.as_ref();
        if b.len() < Self::HEADER_LEN || b[0] >> 4 != 6 {
            return Err(Truncated);
        }
        Ok(Ipv6Packet { buffer })
    }
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[6]
    }
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[7]
    }
    pub fn src(&self) -> [u8; 16] {
        self.buffer.as_ref()[8..24].try_into().unwrap_or([0; 16])
    }
    pub fn dst(&self) -> [u8; 16] {
        self.buffer.as_ref()[24..40].try_into().unwrap_or([0; 16])
    }
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    pub fn set_hop_limit(&mut self, h: u8) {
        self.buffer.as_mut()[7] = h;
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[Self::HEADER_LEN..]
    }
}

/// A UDP header.
#[derive(Debug, Clone)]
pub struct UdpDatagram<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpDatagram<T> {
    pub const HEADER_LEN: usize = 8;

    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        if buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(Truncated);
        }
        Ok(UdpDatagram { buffer })
    }
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }
    pub fn is_empty(&self) -> bool {
        self.len() as usize <= Self::HEADER_LEN
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpDatagram<T> {
    pub fn set_src_port(&mut self, p: u16) {
        set_be16(self.buffer.as_mut(), 0, p);
    }
    pub fn set_dst_port(&mut self, p: u16) {
        set_be16(self.buffer.as_mut(), 2, p);
    }
    pub fn set_checksum(&mut self, c: u16) {
        set_be16(self.buffer.as_mut(), 6, c);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[Self::HEADER_LEN..]
    }
}

/// A TCP header.
#[derive(Debug, Clone)]
pub struct TcpSegment<T: AsRef<[u8]>> {
    buffer: T,
}

/// TCP flag bits (in the low byte of the flags field).
pub mod tcpflags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    pub const MIN_HEADER_LEN: usize = 20;

    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        let b = buffer.as_ref();
        if b.len() < Self::MIN_HEADER_LEN {
            return Err(Truncated);
        }
        let off = (b[12] >> 4) as usize * 4;
        if off < Self::MIN_HEADER_LEN || b.len() < off {
            return Err(Truncated);
        }
        Ok(TcpSegment { buffer })
    }
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }
    pub fn seq(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }
    pub fn ack(&self) -> u32 {
        be32(self.buffer.as_ref(), 8)
    }
    pub fn header_len(&self) -> usize {
        (self.buffer.as_ref()[12] >> 4) as usize * 4
    }
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[13]
    }
    pub fn window(&self) -> u16 {
        be16(self.buffer.as_ref(), 14)
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 16)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpSegment<T> {
    /// Set the window and patch the checksum incrementally.
    pub fn set_window(&mut self, w: u16) {
        let b = self.buffer.as_mut();
        let old = be16(b, 14);
        set_be16(b, 14, w);
        let c = crate::checksum::update16(be16(b, 16), old, w);
        set_be16(b, 16, c);
    }
    pub fn set_checksum(&mut self, c: u16) {
        set_be16(self.buffer.as_mut(), 16, c);
    }
}

/// What [`mark_ce`] did to a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ecn {
    /// The packet was ECN-capable (ECT(0) or ECT(1)) and is now marked CE.
    Marked,
    /// It was already marked CE: nothing changed, and it counts as marked.
    AlreadyCe,
    /// Not ECN-capable (Not-ECT), or not IPv4/IPv6: nothing changed.
    NotEct,
}

/// The 802.1Q and 802.1ad tag types [`mark_ce`] looks through.
const QINQ: u16 = 0x88A8;

/// Mark an ECN-capable packet Congestion Experienced, as the kernel's
/// `INET_ECN_set_ce` does for netem's `ecn`: Ethernet, up to two VLAN tags, then IPv4
/// (the ECN bits of the TOS byte, the header checksum updated incrementally, RFC 1624)
/// or IPv6 (the ECN bits of the traffic class; IPv6 has no header checksum). Transport
/// checksums do not cover these bits, so they stay valid. Needs the frame's first
/// bytes up to the IPv4 checksum: 34 bytes untagged, 42 with two tags; a shorter
/// buffer is treated as not ECN-capable.
pub fn mark_ce(frame: &mut [u8]) -> Ecn {
    let mut at = 12;
    let mut ty = match frame.get(at..at + 2) {
        Some(_) => be16(frame, at),
        None => return Ecn::NotEct,
    };
    for _ in 0..2 {
        if ty != ethertype::VLAN && ty != QINQ {
            break;
        }
        at += 4;
        ty = match frame.get(at..at + 2) {
            Some(_) => be16(frame, at),
            None => return Ecn::NotEct,
        };
    }
    let ip = at + 2;
    match ty {
        ethertype::IPV4 => {
            let Some(h) = frame.get_mut(ip..ip + 12) else {
                return Ecn::NotEct;
            };
            if h[0] >> 4 != 4 {
                return Ecn::NotEct;
            }
            match h[1] & 3 {
                0 => Ecn::NotEct,
                3 => Ecn::AlreadyCe,
                _ => {
                    let old = be16(h, 0);
                    h[1] |= 3;
                    let new = be16(h, 0);
                    let c = crate::checksum::update16(be16(h, 10), old, new);
                    set_be16(h, 10, c);
                    Ecn::Marked
                }
            }
        }
        ethertype::IPV6 => {
            let Some(h) = frame.get_mut(ip..ip + 2) else {
                return Ecn::NotEct;
            };
            if h[0] >> 4 != 6 {
                return Ecn::NotEct;
            }
            // Traffic class: the low 4 bits of byte 0 and the high 4 of byte 1; its
            // ECN field is bits 4–5 of byte 1.
            match (h[1] >> 4) & 3 {
                0 => Ecn::NotEct,
                3 => Ecn::AlreadyCe,
                _ => {
                    h[1] |= 0x30;
                    Ecn::Marked
                }
            }
        }
        _ => Ecn::NotEct,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet + IPv4 + UDP, 42 bytes, checksums valid (from a real capture).
    const UDP4: [u8; 46] = [
        0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00, // eth
        0x45, 0x00, 0x00, 0x20, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, // ip ..
        10, 0, 0, 1, 10, 0, 0, 2, // src, dst
        0x30, 0x39, 0x00, 0x35, 0x00, 0x0C, 0x00, 0x00, // udp 12345 -> 53
        b'p', b'i', b'n', b'g',
    ];

    #[test]
    fn parse_udp_over_ipv4() {
        let mut buf = UDP4;
        Ipv4Packet::new_checked(&mut buf[14..])
            .unwrap()
            .fill_checksum();
        let eth = EthernetFrame::new_checked(&buf[..]).unwrap();
        assert_eq!(eth.ethertype(), ethertype::IPV4);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.protocol(), ipproto::UDP);
        assert_eq!(ip.src(), [10, 0, 0, 1]);
        let udp = UdpDatagram::new_checked(ip.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (12345, 53));
        assert_eq!(udp.payload(), b"ping");
    }

    #[test]
    fn incremental_ttl_update_keeps_checksum_valid() {
        let mut buf = UDP4;
        let mut ip = Ipv4Packet::new_checked(&mut buf[14..]).unwrap();
        ip.fill_checksum();
        for ttl in [63, 1, 255, 0] {
            ip.set_ttl(ttl);
            assert!(ip.verify_checksum(), "ttl {ttl}");
        }
    }

    #[test]
    fn mark_ce_sets_the_ecn_bits_and_keeps_the_ipv4_checksum_valid() {
        for ecn in 0..4u8 {
            let mut buf = UDP4;
            buf[15] = 0xB8 | ecn; // DSCP EF and the ECN field
            Ipv4Packet::new_checked(&mut buf[14..])
                .unwrap()
                .fill_checksum();
            let want = [Ecn::NotEct, Ecn::Marked, Ecn::Marked, Ecn::AlreadyCe][ecn as usize];
            assert_eq!(mark_ce(&mut buf), want, "ECN {ecn}");
            let ip = Ipv4Packet::new_checked(&buf[14..]).unwrap();
            assert!(ip.verify_checksum(), "ECN {ecn}");
            let ce = if ecn == 0 { 0 } else { 3 };
            assert_eq!(ip.dscp_ecn(), 0xB8 | ce, "DSCP kept, ECN {ecn}");
        }
        // Behind a VLAN tag.
        let mut tagged = [&UDP4[..12], &[0x81, 0x00, 0x00, 0x05], &UDP4[12..]].concat();
        tagged[19] = 0x02; // ECT(0)
        Ipv4Packet::new_checked(&mut tagged[18..])
            .unwrap()
            .fill_checksum();
        assert_eq!(mark_ce(&mut tagged), Ecn::Marked);
        assert!(Ipv4Packet::new_checked(&tagged[18..])
            .unwrap()
            .verify_checksum());
        assert_eq!(tagged[19], 0x03);
        // IPv6: traffic class 0xB9 = DSCP EF, ECT(1).
        let mut v6 = [0u8; 14 + 40];
        v6[12..14].copy_from_slice(&[0x86, 0xDD]);
        v6[14] = 0x60 | 0x0B;
        v6[15] = 0x90;
        assert_eq!(mark_ce(&mut v6), Ecn::Marked);
        assert_eq!((v6[14], v6[15]), (0x6B, 0xB0));
        v6[15] = 0x80; // Not-ECT
        assert_eq!(mark_ce(&mut v6), Ecn::NotEct);
        // Not IP, and too short: untouched.
        let mut arp = [0u8; 60];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(mark_ce(&mut arp), Ecn::NotEct);
        let mut short = UDP4;
        assert_eq!(mark_ce(&mut short[..20]), Ecn::NotEct);
    }

    #[test]
    fn truncated_buffers_are_refused() {
        assert_eq!(
            EthernetFrame::new_checked(&UDP4[..13]).err(),
            Some(Truncated)
        );
        assert!(Ipv4Packet::new_checked(&UDP4[14..30]).is_err());
        assert!(Ipv6Packet::new_checked(&UDP4[14..]).is_err()); // version 4
        let mut bad = UDP4;
        bad[14] = 0x4F; // IHL 60 bytes > buffer
        assert!(Ipv4Packet::new_checked(&bad[14..]).is_err());
        assert!(TcpSegment::new_checked(&[0u8; 19][..]).is_err());
    }
}
