//! Flow keys from a packet's bytes: the 5-tuple a stateful plugin keys its state by
//! ([`FlowKey`]), and its bidirectional canonical form ([`FlowKey::canonical`]), which
//! maps both directions of a conversation to one key and says which side a packet came
//! from — what conntrack, a NAT or a load balancer keys by.
//!
//! [`parse`] reads an Ethernet frame: up to eight VLAN tags ([`VLAN_TPIDS`]: 802.1Q
//! `0x8100`, 802.1ad `0x88A8` and the older QinQ `0x9100`), then IPv4 or IPv6 (walking
//! IPv6's hop-by-hop, routing, fragment, destination-options and authentication
//! headers), then the ports of the protocols that have them ([`PORTED`]: TCP, UDP,
//! UDP-Lite, SCTP and DCCP). This is synthnet's one flow parser: the host's classifier
//! and flow table use it too, so a spec's flow, the API's flow list and a plugin see the
//! same flow in a packet.
//! ICMP and ICMPv6 have no ports; their key is built so that an echo request and its
//! reply share one canonical key (see [`FlowKey`]). A non-first fragment carries no L4
//! header: its ports are 0 and [`Parsed::fragment`] says so. Nothing here allocates or
//! panics on any input; a plugin asks for `Access::Headers(128)` (Ethernet, two tags, an
//! IPv6 header with a few extension headers and TCP fit).

use crate::wire::{ethertype, ipproto, EthernetFrame, Ipv4Packet, Ipv6Packet};

/// Address family of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

/// A directed flow: protocol, addresses and ports, as the packet carries them.
///
/// IPv4 addresses sit in the last 4 bytes of `src`/`dst` (the first 12 are zero), so a
/// key is one fixed-size value for both families; [`FlowKey::src_ip`] gives a
/// `core::net::IpAddr`.
///
/// Ports: TCP, UDP, UDP-Lite, SCTP and DCCP carry theirs. ICMP echo request and reply
/// (and ICMPv6's) put the echo identifier in both ports, so a request and its reply have
/// the same canonical key, as conntrack pairs them; other ICMP messages put
/// `type << 8 | code` in `src_port` and 0 in `dst_port`. Other protocols, and non-first
/// fragments, have ports 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub family: Family,
    /// IP protocol number (IPv6: the upper-layer header after the extension headers).
    pub proto: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
}

/// Which end of a conversation a packet came from, relative to a canonical key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// From the lower endpoint (the canonical key's `src`): the packet's key is the
    /// canonical key.
    A,
    /// From the higher endpoint: the packet's key is the canonical key reversed.
    B,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    /// 0 for A, 1 for B: an index into per-side arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl FlowKey {
    /// The key of the reply direction: addresses and ports swapped.
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            ..*self
        }
    }

    /// The bidirectional form: the key with the lower (address, port) endpoint as `src`,
    /// and the side this key's packet came from. Both directions of a flow get the same
    /// canonical key and opposite sides. A flow to itself (same address and port at both
    /// ends) is side A both ways.
    pub fn canonical(&self) -> (FlowKey, Side) {
        if (self.src, self.src_port) <= (self.dst, self.dst_port) {
            (*self, Side::A)
        } else {
            (self.reversed(), Side::B)
        }
    }

    pub fn src_ip(&self) -> core::net::IpAddr {
        ip(self.family, &self.src)
    }

    pub fn dst_ip(&self) -> core::net::IpAddr {
        ip(self.family, &self.dst)
    }
}

fn ip(f: Family, a: &[u8; 16]) -> core::net::IpAddr {
    match f {
        Family::V4 => core::net::IpAddr::from([a[12], a[13], a[14], a[15]]),
        Family::V6 => core::net::IpAddr::from(*a),
    }
}

impl core::fmt::Display for FlowKey {
    /// `udp 10.0.0.1:5000 > 10.0.0.2:5000`; IPv6 addresses in brackets.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let name = match self.proto {
            ipproto::TCP => "tcp",
            ipproto::UDP => "udp",
            ipproto::ICMP => "icmp",
            ipproto::ICMPV6 => "icmpv6",
            _ => "",
        };
        if name.is_empty() {
            write!(f, "proto{}", self.proto)?;
        } else {
            f.write_str(name)?;
        }
        let (s, d) = (self.src_ip(), self.dst_ip());
        match self.family {
            Family::V4 => write!(f, " {s}:{} > {d}:{}", self.src_port, self.dst_port),
            Family::V6 => write!(f, " [{s}]:{} > [{d}]:{}", self.src_port, self.dst_port),
        }
    }
}

/// What [`parse`] found besides the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub key: FlowKey,
    /// VLAN id of the outermost tag, if tagged.
    pub vlan: Option<u16>,
    /// Offset of the IP header in the frame.
    pub l3_offset: usize,
    /// Offset of the transport header, when the packet has one in the captured bytes.
    pub l4_offset: Option<usize>,
    /// A fragment: `First` carries the L4 header (and ports), `Later` does not.
    pub fragment: Fragment,
    /// ICMP/ICMPv6 type and code.
    pub icmp: Option<(u8, u8)>,
}

impl Parsed {
    /// Source and destination port, for a protocol that has them ([`PORTED`]) when the
    /// transport header was there to read (not in a later fragment or a short packet).
    pub fn ports(&self) -> Option<(u16, u16)> {
        (PORTED.contains(&self.key.proto) && self.l4_offset.is_some())
            .then_some((self.key.src_port, self.key.dst_port))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    No,
    First,
    Later,
}

/// Why a frame has no flow key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotFlow {
    /// Not IP (ARP, LLDP…): the EtherType after any VLAN tags.
    NotIp(u16),
    /// Too short for the headers it announces (or a bad IP version/length field).
    Truncated,
}

#[cfg(test)]
const QINQ: u16 = 0x88A8;
/// VLAN tag protocol identifiers: 802.1Q, 802.1ad (QinQ outer), and the older QinQ one.
pub const VLAN_TPIDS: [u16; 3] = [0x8100, 0x88A8, 0x9100];
/// Tags walked at most (a frame with more is not IP as far as a key goes).
const MAX_TAGS: usize = 8;
/// Protocols whose first 4 bytes are source and destination port: TCP, UDP, DCCP,
/// SCTP, UDP-Lite. A spec's `port_min`/`port_max` match these.
pub const PORTED: [u8; 5] = [ipproto::TCP, ipproto::UDP, 33, 132, 136];
/// IPv6 authentication header (length in 4-octet units, plus 2).
const AUTH: u8 = 51;
/// IPv6 extension headers walked to find the upper layer.
const HOPOPT: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DSTOPTS: u8 = 60;
/// More extension headers than this is not a packet worth a key.
const MAX_EXT_HEADERS: usize = 8;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The flow key of an Ethernet frame (see the module docs).
pub fn parse(frame: &[u8]) -> Result<Parsed, NotFlow> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| NotFlow::Truncated)?;
    let mut et = eth.ethertype();
    let mut off = EthernetFrame::<&[u8]>::HEADER_LEN;
    let mut vlan = None;
    for _ in 0..MAX_TAGS {
        if !VLAN_TPIDS.contains(&et) {
            break;
        }
        let tci = be16(frame, off).ok_or(NotFlow::Truncated)?;
        vlan.get_or_insert(tci & 0x0FFF);
        et = be16(frame, off + 2).ok_or(NotFlow::Truncated)?;
        off += 4;
    }
    let l3 = &frame[off..];
    let (key, l4, fragment) = match et {
        ethertype::IPV4 => {
            let ip = Ipv4Packet::new_checked(l3).map_err(|_| NotFlow::Truncated)?;
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src[12..].copy_from_slice(&ip.src());
            dst[12..].copy_from_slice(&ip.dst());
            let frag = be16(l3, 6).unwrap_or(0);
            let (more, offset) = (frag & 0x2000 != 0, frag & 0x1FFF);
            let fragment = match (offset, more) {
                (0, false) => Fragment::No,
                (0, true) => Fragment::First,
                _ => Fragment::Later,
            };
            let key = FlowKey {
                family: Family::V4,
                proto: ip.protocol(),
                src,
                dst,
                src_port: 0,
                dst_port: 0,
            };
            (key, off + ip.header_len(), fragment)
        }
        ethertype::IPV6 => {
            let ip = Ipv6Packet::new_checked(l3).map_err(|_| NotFlow::Truncated)?;
            let mut next = ip.next_header();
            let mut at = Ipv6Packet::<&[u8]>::HEADER_LEN;
            let mut fragment = Fragment::No;
            for _ in 0..MAX_EXT_HEADERS {
                match next {
                    HOPOPT | ROUTING | DSTOPTS => {
                        let len = *l3.get(at + 1).ok_or(NotFlow::Truncated)? as usize;
                        next = *l3.get(at).ok_or(NotFlow::Truncated)?;
                        at += (len + 1) * 8;
                    }
                    AUTH => {
                        let len = *l3.get(at + 1).ok_or(NotFlow::Truncated)? as usize;
                        next = *l3.get(at).ok_or(NotFlow::Truncated)?;
                        at += (len + 2) * 4;
                    }
                    FRAGMENT => {
                        let fo = be16(l3, at + 2).ok_or(NotFlow::Truncated)?;
                        fragment = match (fo >> 3, fo & 1 != 0) {
                            (0, false) => Fragment::No,
                            (0, true) => Fragment::First,
                            _ => Fragment::Later,
                        };
                        next = *l3.get(at).ok_or(NotFlow::Truncated)?;
                        at += 8;
                        if fragment == Fragment::Later {
                            // What follows is the middle of the datagram, not headers:
                            // the key's protocol is what the fragment header names.
                            break;
                        }
                    }
                    _ => break,
                }
            }
            let key = FlowKey {
                family: Family::V6,
                proto: next,
                src: ip.src(),
                dst: ip.dst(),
                src_port: 0,
                dst_port: 0,
            };
            (key, off + at, fragment)
        }
        other => return Err(NotFlow::NotIp(other)),
    };
    let mut p = Parsed {
        key,
        vlan,
        l3_offset: off,
        l4_offset: None,
        fragment,
        icmp: None,
    };
    if fragment == Fragment::Later {
        return Ok(p);
    }
    let l4 = match frame.get(l4..) {
        Some(b) if b.len() >= 4 => (l4, b),
        _ => return Ok(p),
    };
    let proto = p.key.proto;
    if PORTED.contains(&proto) {
        p.key.src_port = be16(l4.1, 0).unwrap_or(0);
        p.key.dst_port = be16(l4.1, 2).unwrap_or(0);
        p.l4_offset = Some(l4.0);
    } else if proto == ipproto::ICMP || proto == ipproto::ICMPV6 {
        let (ty, code) = (l4.1[0], l4.1[1]);
        p.icmp = Some((ty, code));
        p.l4_offset = Some(l4.0);
        let echo = match proto {
            ipproto::ICMP => ty == 8 || ty == 0,
            _ => ty == 128 || ty == 129,
        };
        if echo {
            let id = be16(l4.1, 4).unwrap_or(0);
            p.key.src_port = id;
            p.key.dst_port = id;
        } else {
            p.key.src_port = (ty as u16) << 8 | code as u16;
        }
    }
    Ok(p)
}

/// [`parse`] packet `i` of a batch: its captured bytes. The plugin must capture the
/// headers (`Access::Headers(128)` or `Access::Full`); with `Access::Meta` nothing is
/// captured and every packet is [`NotFlow::Truncated`].
pub fn of(batch: &crate::Batch<'_>, i: usize) -> Result<Parsed, NotFlow> {
    parse(batch.data(i))
}

/// Just the key of an Ethernet frame; `None` for non-IP or truncated frames.
pub fn key(frame: &[u8]) -> Option<FlowKey> {
    parse(frame).ok().map(|p| p.key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ethertype: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    fn v4(proto: u8, src: [u8; 4], dst: [u8; 4], frag: u16, l4: &[u8]) -> Vec<u8> {
        let mut f = eth(ethertype::IPV4);
        let total = 20 + l4.len() as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 1]);
        f.extend_from_slice(&frag.to_be_bytes());
        f.extend_from_slice(&[64, proto, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(l4);
        f
    }

    fn ports(s: u16, d: u16) -> Vec<u8> {
        let mut p = s.to_be_bytes().to_vec();
        p.extend_from_slice(&d.to_be_bytes());
        p.extend_from_slice(&[0, 8, 0, 0]);
        p
    }

    #[test]
    fn udp_over_ipv4_and_its_reply_share_a_canonical_key() {
        let a = v4(17, [10, 0, 0, 2], [10, 0, 0, 1], 0, &ports(5000, 6000));
        let p = parse(&a).unwrap();
        assert_eq!(p.key.proto, 17);
        assert_eq!((p.key.src_port, p.key.dst_port), (5000, 6000));
        assert_eq!(p.key.src_ip().to_string(), "10.0.0.2");
        assert_eq!(p.l4_offset, Some(34));
        assert_eq!(p.key.to_string(), "udp 10.0.0.2:5000 > 10.0.0.1:6000");
        let b = v4(17, [10, 0, 0, 1], [10, 0, 0, 2], 0, &ports(6000, 5000));
        let q = parse(&b).unwrap();
        assert_eq!(q.key, p.key.reversed());
        let (ca, sa) = p.key.canonical();
        let (cb, sb) = q.key.canonical();
        assert_eq!(ca, cb);
        assert_eq!((sa, sb), (Side::B, Side::A));
        assert_eq!(ca.src_ip().to_string(), "10.0.0.1");
        assert_eq!(sa.other(), sb);
    }

    #[test]
    fn equal_addresses_are_ordered_by_port() {
        let k = key(&v4(17, [10, 0, 0, 1], [10, 0, 0, 1], 0, &ports(9, 7))).unwrap();
        let (c, s) = k.canonical();
        assert_eq!((c.src_port, c.dst_port, s), (7, 9, Side::B));
        let same = key(&v4(17, [10, 0, 0, 1], [10, 0, 0, 1], 0, &ports(7, 7))).unwrap();
        assert_eq!(same.canonical(), (same, Side::A));
        assert_eq!(same.reversed().canonical(), (same, Side::A));
    }

    #[test]
    fn vlan_tags_are_skipped_and_the_outer_id_reported() {
        let inner = v4(
            6,
            [1, 2, 3, 4],
            [5, 6, 7, 8],
            0,
            &[0, 80, 1, 187, 0, 0, 0, 0],
        );
        let mut f = eth(QINQ);
        f.extend_from_slice(&[0x20, 0x64, 0x81, 0x00]); // pcp 1, vid 100; then 802.1Q
        f.extend_from_slice(&[0x00, 0x07, 0x08, 0x00]); // vid 7; then IPv4
        f.extend_from_slice(&inner[14..]);
        let p = parse(&f).unwrap();
        assert_eq!(p.vlan, Some(100));
        assert_eq!(p.l3_offset, 22);
        assert_eq!((p.key.proto, p.key.src_port, p.key.dst_port), (6, 80, 443));
        assert_eq!(parse(&f[..20]), Err(NotFlow::Truncated));
    }

    #[test]
    fn icmp_echo_request_and_reply_pair_up_other_icmp_keys_by_type() {
        let req = v4(
            1,
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            0,
            &[8, 0, 0, 0, 0x12, 0x34, 0, 1],
        );
        let rep = v4(
            1,
            [10, 0, 0, 2],
            [10, 0, 0, 1],
            0,
            &[0, 0, 0, 0, 0x12, 0x34, 0, 1],
        );
        let (a, b) = (parse(&req).unwrap(), parse(&rep).unwrap());
        assert_eq!(a.icmp, Some((8, 0)));
        assert_eq!((a.key.src_port, a.key.dst_port), (0x1234, 0x1234));
        assert_eq!(a.key.canonical().0, b.key.canonical().0);
        assert_ne!(a.key.canonical().1, b.key.canonical().1);
        let unreach = v4(
            1,
            [10, 0, 0, 2],
            [10, 0, 0, 1],
            0,
            &[3, 3, 0, 0, 0, 0, 0, 0],
        );
        let u = parse(&unreach).unwrap().key;
        assert_eq!((u.src_port, u.dst_port), (0x0303, 0));
    }

    #[test]
    fn later_fragments_have_no_ports() {
        let first = v4(17, [1, 1, 1, 1], [2, 2, 2, 2], 0x2000, &ports(1, 2));
        let later = v4(17, [1, 1, 1, 1], [2, 2, 2, 2], 0x0010, &ports(1, 2));
        let f = parse(&first).unwrap();
        assert_eq!((f.fragment, f.key.src_port), (Fragment::First, 1));
        let l = parse(&later).unwrap();
        assert_eq!(
            (l.fragment, l.key.src_port, l.l4_offset),
            (Fragment::Later, 0, None)
        );
    }

    /// A later IPv6 fragment's bytes are the middle of a datagram: they were walked as
    /// extension headers when the fragment header named one (destination options
    /// before the upper layer), and a valid fragment came out truncated.
    #[test]
    fn a_later_ipv6_fragments_payload_is_not_walked_as_headers() {
        // Fragment header: next = destination options, offset 8 (later), more.
        let ext = [DSTOPTS, 0, 0, 0x41, 0, 0, 0, 9];
        // Payload that reads as a routing header of 2 KiB.
        let payload = [ROUTING, 255, 0, 0, 0, 0, 0, 0];
        let p = parse(&v6(FRAGMENT, &ext, &payload)).unwrap();
        assert_eq!(p.fragment, Fragment::Later);
        assert_eq!(
            (p.key.proto, p.key.src_port, p.l4_offset),
            (DSTOPTS, 0, None)
        );
    }

    fn v6(next: u8, ext: &[u8], l4: &[u8]) -> Vec<u8> {
        let mut f = eth(ethertype::IPV6);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[next, 64]);
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        a[15] = 1;
        f.extend_from_slice(&a);
        a[15] = 2;
        f.extend_from_slice(&a);
        f.extend_from_slice(ext);
        f.extend_from_slice(l4);
        f
    }

    #[test]
    fn ipv6_extension_headers_are_walked() {
        // Hop-by-hop (8 bytes) → fragment (first) → UDP.
        let ext = [FRAGMENT, 0, 1, 4, 0, 0, 0, 0, 17, 0, 0, 1, 0, 0, 0, 9];
        let p = parse(&v6(HOPOPT, &ext, &ports(53, 4000))).unwrap();
        assert_eq!(p.key.family, Family::V6);
        assert_eq!(
            (p.key.proto, p.key.src_port, p.key.dst_port),
            (17, 53, 4000)
        );
        assert_eq!(p.fragment, Fragment::First);
        assert_eq!(p.l4_offset, Some(14 + 40 + 16));
        assert_eq!(p.key.src_ip().to_string(), "fd00::1");
        assert_eq!(p.key.to_string(), "udp [fd00::1]:53 > [fd00::2]:4000");
        let echo = parse(&v6(58, &[], &[128, 0, 0, 0, 0, 7, 0, 1])).unwrap();
        assert_eq!((echo.key.src_port, echo.icmp), (7, Some((128, 0))));
        // A hop-by-hop header claiming more bytes than captured: ports unknown, no panic.
        let p = parse(&v6(HOPOPT, &[17, 200], &[])).unwrap();
        assert_eq!((p.key.src_port, p.l4_offset), (0, None));
    }

    #[test]
    fn non_ip_and_garbage_have_no_key() {
        let mut arp = eth(ethertype::ARP);
        arp.extend_from_slice(&[0; 28]);
        assert_eq!(parse(&arp), Err(NotFlow::NotIp(ethertype::ARP)));
        assert_eq!(key(&[0; 5]), None);
        let mut bad = v4(17, [1; 4], [2; 4], 0, &ports(1, 2));
        bad[14] = 0x65; // version 6 in an IPv4 EtherType
        assert_eq!(parse(&bad), Err(NotFlow::Truncated));
        // Every prefix of every sample parses or fails without panicking.
        let samples = [
            v4(17, [1; 4], [2; 4], 0, &ports(1, 2)),
            v6(
                HOPOPT,
                &[FRAGMENT, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 1, 0, 0, 0, 0],
                &ports(1, 2),
            ),
        ];
        for s in &samples {
            for n in 0..s.len() {
                let _ = parse(&s[..n]);
            }
        }
    }
}
