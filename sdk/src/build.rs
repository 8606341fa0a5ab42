//! Building packets to inject: Ethernet + IPv4/IPv6 + TCP/UDP with correct checksums,
//! and the TCP reset that answers a segment ([`tcp_rst_for`]).
//!
//! Everything writes into a buffer the caller owns and returns the frame's length, so a
//! plugin builds on its hot path without allocating: keep a `[u8; N]` in the plugin (or
//! a stack array) and hand the written prefix to [`Batch::inject`](crate::Batch::inject).
//! The frames carry no IP options and no TCP options; IPv4 headers set DF. Checksums are
//! computed in full (IPv4 header, and the TCP/UDP checksum over the pseudo-header), so
//! the frame is valid on any interface, whatever its offloads.

use crate::checksum;
use crate::wire::{
    ethertype, ipproto, tcpflags, EthernetFrame, Ipv4Packet, Ipv6Packet, TcpSegment,
};

/// Why a frame could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The output buffer holds fewer bytes than the frame needs (`need`).
    BufferTooSmall { need: usize },
    /// The payload does not fit the IP length field.
    PayloadTooLong,
    /// The segment to answer is not a TCP segment over IPv4/IPv6 in Ethernet II (with
    /// at most one 802.1Q tag), or its headers are cut short.
    NotTcp,
    /// The segment to answer is itself a reset: RFC 9293 §3.10.7.1 says a reset is
    /// never answered (two stacks would otherwise reset each other forever).
    IsReset,
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BuildError::BufferTooSmall { need } => {
                write!(f, "output buffer too small: the frame needs {need} bytes")
            }
            BuildError::PayloadTooLong => f.write_str("payload too long for the IP length field"),
            BuildError::NotTcp => f.write_str("not a whole TCP header over IPv4/IPv6 in Ethernet"),
            BuildError::IsReset => f.write_str("a reset is never answered with a reset"),
        }
    }
}

/// The IP layer of a frame to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ip {
    V4 {
        src: [u8; 4],
        dst: [u8; 4],
        /// The whole TOS byte: DSCP << 2 | ECN.
        tos: u8,
        ttl: u8,
        ident: u16,
    },
    V6 {
        src: [u8; 16],
        dst: [u8; 16],
        /// DSCP << 2 | ECN.
        traffic_class: u8,
        /// 20 bits; higher bits are ignored.
        flow_label: u32,
        hop_limit: u8,
    },
}

impl Ip {
    fn header_len(&self) -> usize {
        match self {
            Ip::V4 { .. } => 20,
            Ip::V6 { .. } => 40,
        }
    }

    /// Sum of the TCP/UDP pseudo-header (RFC 793 §3.1, RFC 8200 §8.1), not inverted.
    fn pseudo_sum(&self, proto: u8, l4_len: usize) -> u32 {
        match self {
            Ip::V4 { src, dst, .. } => {
                let s = checksum::sum(src, 0);
                let s = checksum::sum(dst, s);
                checksum::fold(s as u64 + proto as u64 + l4_len as u64)
            }
            Ip::V6 { src, dst, .. } => {
                let s = checksum::sum(src, 0);
                let s = checksum::sum(dst, s);
                checksum::fold(
                    s as u64 + (l4_len as u64 >> 16) + (l4_len as u64 & 0xFFFF) + proto as u64,
                )
            }
        }
    }

    /// Write the IP header for `l4_len` bytes of protocol `proto` at `out[..header_len]`.
    fn write(&self, out: &mut [u8], proto: u8, l4_len: usize) {
        match *self {
            Ip::V4 {
                src,
                dst,
                tos,
                ttl,
                ident,
            } => {
                let h = &mut out[..20];
                h[0] = 0x45;
                h[1] = tos;
                h[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
                h[4..6].copy_from_slice(&ident.to_be_bytes());
                h[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF, offset 0
                h[8] = ttl;
                h[9] = proto;
                h[10..12].copy_from_slice(&[0, 0]);
                h[12..16].copy_from_slice(&src);
                h[16..20].copy_from_slice(&dst);
                let c = checksum::internet(h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
            }
            Ip::V6 {
                src,
                dst,
                traffic_class,
                flow_label,
                hop_limit,
            } => {
                let h = &mut out[..40];
                let first = 6u32 << 28 | (traffic_class as u32) << 20 | (flow_label & 0xF_FFFF);
                h[0..4].copy_from_slice(&first.to_be_bytes());
                h[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
                h[6] = proto;
                h[7] = hop_limit;
                h[8..24].copy_from_slice(&src);
                h[24..40].copy_from_slice(&dst);
            }
        }
    }

    fn ethertype(&self) -> u16 {
        match self {
            Ip::V4 { .. } => ethertype::IPV4,
            Ip::V6 { .. } => ethertype::IPV6,
        }
    }

    fn max_l4_len(&self) -> usize {
        match self {
            Ip::V4 { .. } => 0xFFFF - 20,
            Ip::V6 { .. } => 0xFFFF,
        }
    }
}

/// The Ethernet layer: addresses, and an optional 802.1Q tag (its 16-bit TCI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ether {
    pub src: [u8; 6],
    pub dst: [u8; 6],
    pub vlan_tci: Option<u16>,
}

impl Ether {
    fn header_len(&self) -> usize {
        if self.vlan_tci.is_some() {
            18
        } else {
            14
        }
    }

    fn write(&self, out: &mut [u8], ethertype: u16) {
        out[0..6].copy_from_slice(&self.dst);
        out[6..12].copy_from_slice(&self.src);
        match self.vlan_tci {
            Some(tci) => {
                out[12..14].copy_from_slice(&ethertype::VLAN.to_be_bytes());
                out[14..16].copy_from_slice(&tci.to_be_bytes());
                out[16..18].copy_from_slice(&ethertype.to_be_bytes());
            }
            None => out[12..14].copy_from_slice(&ethertype.to_be_bytes()),
        }
    }
}

/// A TCP header without options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tcp {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    /// [`tcpflags`] bits.
    pub flags: u8,
    pub window: u16,
}

/// The longest frame [`tcp_rst_for`] writes: Ethernet with a VLAN tag, IPv6, TCP.
pub const TCP_RST_MAX_LEN: usize = 18 + 40 + 20;

/// Write the Ethernet and IP headers of a frame carrying `l4_len` bytes of `proto` into
/// `out`: the transport part of the frame (to fill in), and the frame's length.
fn headers<'o>(
    out: &'o mut [u8],
    eth: &Ether,
    ip: &Ip,
    proto: u8,
    l4_len: usize,
) -> Result<(&'o mut [u8], usize), BuildError> {
    if l4_len > ip.max_l4_len() {
        return Err(BuildError::PayloadTooLong);
    }
    let (el, il) = (eth.header_len(), ip.header_len());
    let need = el + il + l4_len;
    let out = out
        .get_mut(..need)
        .ok_or(BuildError::BufferTooSmall { need })?;
    eth.write(out, ip.ethertype());
    ip.write(&mut out[el..], proto, l4_len);
    Ok((&mut out[el + il..], need))
}

/// Build Ethernet + IP + TCP + `payload` into `out`; returns the frame's length.
pub fn tcp(
    out: &mut [u8],
    eth: &Ether,
    ip: &Ip,
    tcp: &Tcp,
    payload: &[u8],
) -> Result<usize, BuildError> {
    let l4_len = 20 + payload.len();
    let (t, need) = headers(out, eth, ip, ipproto::TCP, l4_len)?;
    t[0..2].copy_from_slice(&tcp.src_port.to_be_bytes());
    t[2..4].copy_from_slice(&tcp.dst_port.to_be_bytes());
    t[4..8].copy_from_slice(&tcp.seq.to_be_bytes());
    t[8..12].copy_from_slice(&tcp.ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = tcp.flags;
    t[14..16].copy_from_slice(&tcp.window.to_be_bytes());
    t[16..20].copy_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    t[20..].copy_from_slice(payload);
    let c = !(checksum::sum(t, ip.pseudo_sum(ipproto::TCP, l4_len)) as u16);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    Ok(need)
}

/// Build Ethernet + IP + UDP + `payload` into `out`; returns the frame's length.
pub fn udp(
    out: &mut [u8],
    eth: &Ether,
    ip: &Ip,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> Result<usize, BuildError> {
    let l4_len = 8 + payload.len();
    let (u, need) = headers(out, eth, ip, ipproto::UDP, l4_len)?;
    u[0..2].copy_from_slice(&src_port.to_be_bytes());
    u[2..4].copy_from_slice(&dst_port.to_be_bytes());
    u[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    u[6..8].copy_from_slice(&[0, 0]);
    u[8..].copy_from_slice(payload);
    let mut c = !(checksum::sum(u, ip.pseudo_sum(ipproto::UDP, l4_len)) as u16);
    if c == 0 {
        // RFC 768: a computed 0 is sent as all ones (0 means "no checksum").
        c = 0xFFFF;
    }
    u[6..8].copy_from_slice(&c.to_be_bytes());
    Ok(need)
}

/// The parts of a TCP segment a reset answers, read from its headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub eth: Ether,
    pub ip: Ip,
    pub tcp: Tcp,
    /// SEG.LEN of RFC 9293: payload bytes, plus one for SYN and one for FIN.
    pub seg_len: u32,
}

/// Read the headers of a TCP segment in an Ethernet frame (with at most one 802.1Q
/// tag). Only the headers need to be present: the payload length comes from the IP
/// length field, so a plugin with `Access::Headers` can answer any segment. (An IPv4
/// total length of 0, as a TSO super-packet may carry, falls back to the bytes given.)
pub fn parse_tcp(frame: &[u8]) -> Result<SegmentInfo, BuildError> {
    let e = EthernetFrame::new_checked(frame).map_err(|_| BuildError::NotTcp)?;
    let (mut etype, mut l3) = (e.ethertype(), e.payload());
    let mut vlan_tci = None;
    if etype == ethertype::VLAN {
        if l3.len() < 4 {
            return Err(BuildError::NotTcp);
        }
        vlan_tci = Some(u16::from_be_bytes([l3[0], l3[1]]));
        etype = u16::from_be_bytes([l3[2], l3[3]]);
        l3 = &l3[4..];
    }
    let eth = Ether {
        src: e.src(),
        dst: e.dst(),
        vlan_tci,
    };
    let (ip, l4, l4_len) = match etype {
        ethertype::IPV4 => {
            let p = Ipv4Packet::new_checked(l3).map_err(|_| BuildError::NotTcp)?;
            let frag = u16::from_be_bytes([l3[6], l3[7]]) & 0x1FFF;
            if p.protocol() != ipproto::TCP || frag != 0 {
                return Err(BuildError::NotTcp);
            }
            let hl = p.header_len();
            let total = match p.total_len() as usize {
                0 => l3.len(),
                t => t,
            };
            let ip = Ip::V4 {
                src: p.src(),
                dst: p.dst(),
                tos: p.dscp_ecn(),
                ttl: p.ttl(),
                ident: p.ident(),
            };
            (ip, &l3[hl..], total.saturating_sub(hl))
        }
        ethertype::IPV6 => {
            let p = Ipv6Packet::new_checked(l3).map_err(|_| BuildError::NotTcp)?;
            if p.next_header() != ipproto::TCP {
                return Err(BuildError::NotTcp);
            }
            let first = u32::from_be_bytes([l3[0], l3[1], l3[2], l3[3]]);
            let ip = Ip::V6 {
                src: p.src(),
                dst: p.dst(),
                traffic_class: (first >> 20) as u8,
                flow_label: first & 0xF_FFFF,
                hop_limit: p.hop_limit(),
            };
            (ip, &l3[40..], p.payload_len() as usize)
        }
        _ => return Err(BuildError::NotTcp),
    };
    let t = TcpSegment::new_checked(l4).map_err(|_| BuildError::NotTcp)?;
    let flags = t.flags();
    let data = l4_len.saturating_sub(t.header_len()) as u32;
    let seg_len = data
        .wrapping_add((flags & tcpflags::SYN != 0) as u32)
        .wrapping_add((flags & tcpflags::FIN != 0) as u32);
    Ok(SegmentInfo {
        eth,
        ip,
        tcp: Tcp {
            src_port: t.src_port(),
            dst_port: t.dst_port(),
            seq: t.seq(),
            ack: t.ack(),
            flags,
            window: t.window(),
        },
        seg_len,
    })
}

/// Write into `out` the reset a TCP with no connection sends in answer to the segment
/// in `frame` (RFC 9293 §3.10.7.1, as RFC 793 had it): MACs, addresses and ports
/// swapped; if the segment has ACK, `<SEQ=SEG.ACK><CTL=RST>`; else
/// `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`. Returns the frame's length (at most
/// [`TCP_RST_MAX_LEN`]).
///
/// The answer to an ACK carries exactly the sequence number the sender expects next,
/// so Linux accepts it at once (RFC 5961's exact-match check) and the application sees
/// `ECONNRESET`. TTL / hop limit 64; the VLAN tag, if any, is kept.
pub fn tcp_rst_for(frame: &[u8], out: &mut [u8]) -> Result<usize, BuildError> {
    let s = parse_tcp(frame)?;
    if s.tcp.flags & tcpflags::RST != 0 {
        return Err(BuildError::IsReset);
    }
    let eth = Ether {
        src: s.eth.dst,
        dst: s.eth.src,
        vlan_tci: s.eth.vlan_tci,
    };
    let ip = match s.ip {
        Ip::V4 { src, dst, .. } => Ip::V4 {
            src: dst,
            dst: src,
            tos: 0,
            ttl: 64,
            ident: 0,
        },
        Ip::V6 { src, dst, .. } => Ip::V6 {
            src: dst,
            dst: src,
            traffic_class: 0,
            flow_label: 0,
            hop_limit: 64,
        },
    };
    let (seq, ack, flags) = if s.tcp.flags & tcpflags::ACK != 0 {
        (s.tcp.ack, 0, tcpflags::RST)
    } else {
        (
            0,
            s.tcp.seq.wrapping_add(s.seg_len),
            tcpflags::RST | tcpflags::ACK,
        )
    };
    let t = Tcp {
        src_port: s.tcp.dst_port,
        dst_port: s.tcp.src_port,
        seq,
        ack,
        flags,
        window: 0,
    };
    tcp(out, &eth, &ip, &t, &[])
}
