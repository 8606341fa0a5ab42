//! Flows: which packets a spec's flow matches, and the classifier app that sends each
//! packet to the chain of the first flow it matches (else the default chain).
//!
//! A packet's [`FlowKey`] is the far side's address, the protocol and the far side's
//! port: the source on ingress (outer → inner), the destination on egress.

use crate::counters::Counters;
use crate::engine::{App, Ctx};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Which way packets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// outer → inner; flows match the source address and port.
    Ingress,
    /// inner → outer; flows match the destination address and port.
    Egress,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    pub const fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ingress" => Ok(Direction::Ingress),
            "egress" => Ok(Direction::Egress),
            _ => Err(format!("{s:?} is not a direction (ingress or egress)")),
        }
    }
}

/// An IP prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.len as u32)
                };
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.len as u32)
                };
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// What a flow matches. `None` fields match anything. Ports apply to the protocols
/// that have them ([`synthnet_sdk::flow::PORTED`]: TCP, UDP, UDP-Lite, SCTP, DCCP).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct FlowMatch {
    pub prefix: Option<Prefix>,
    pub protocol: Option<u8>,
    pub ports: Option<(u16, u16)>,
}

/// The fields flows match on, parsed from a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    pub addr: IpAddr,
    pub protocol: u8,
    /// Source port (ingress) or destination port (egress), for a protocol with ports.
    pub port: Option<u16>,
}

/// The addresses, protocol and ports of an IP frame: what per-flow accounting keys on
/// and what [`flow_key`] picks one side of. Ports are 0 for other protocols and for
/// fragments after the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

/// Parse the five-tuple of an Ethernet frame with the SDK's parser (the one the
/// plugins use: VLAN tags skipped, IPv6 extension headers walked, see
/// [`synthnet_sdk::flow::parse`]); only a first fragment has ports. `None` for non-IP
/// frames and truncated headers.
pub fn five_tuple(frame: &[u8]) -> Option<FiveTuple> {
    five_tuple_ports(frame).map(|(t, _)| t)
}

/// The five-tuple, and whether it has ports (TCP, UDP, UDP-Lite, SCTP or DCCP, with
/// the transport header there).
fn five_tuple_ports(frame: &[u8]) -> Option<(FiveTuple, bool)> {
    let p = synthnet_sdk::flow::parse(frame).ok()?;
    let ports = p.ports();
    let (src_port, dst_port) = ports.unwrap_or((0, 0));
    Some((
        FiveTuple {
            src: p.key.src_ip(),
            dst: p.key.dst_ip(),
            protocol: p.key.proto,
            src_port,
            dst_port,
        },
        ports.is_some(),
    ))
}

/// Parse the flow key of an Ethernet frame: the source side for ingress, the
/// destination side for egress (see [`five_tuple`] for what is walked).
pub fn flow_key(frame: &[u8], dir: Direction) -> Option<FlowKey> {
    let (t, has_ports) = five_tuple_ports(frame)?;
    let (addr, port) = match dir {
        Direction::Ingress => (t.src, t.src_port),
        Direction::Egress => (t.dst, t.dst_port),
    };
    Some(FlowKey {
        addr,
        protocol: t.protocol,
        port: has_ports.then_some(port),
    })
}

impl FlowMatch {
    pub fn matches(&self, k: &FlowKey) -> bool {
        self.prefix.is_none_or(|p| p.contains(k.addr))
            && self.protocol.is_none_or(|p| p == k.protocol)
            && self
                .ports
                .is_none_or(|(lo, hi)| k.port.is_some_and(|p| lo <= p && p <= hi))
    }
}

/// Sends each packet to the output of the first flow it matches, else to the last
/// output (the default chain). Non-IP frames take the default chain.
///
/// The flows are indexed by protocol and by single port, so a packet is compared with
/// the flows that could match it, not with every flow: ten thousand `udp port N` flows
/// cost an ICMP packet one look-up, and a UDP packet one hash probe. First match still
/// wins: each index keeps flows in spec order and the lowest match is taken.
pub struct Classifier {
    dir: Direction,
    flows: Vec<FlowMatch>,
    /// Flows with a protocol, by protocol; flows with none.
    by_protocol: std::collections::HashMap<u8, Candidates>,
    any_protocol: Candidates,
    counters: Counters,
}

/// Flows that share a protocol (or have none), in spec order.
#[derive(Default)]
struct Candidates {
    /// Flows with one port, by that port.
    by_port: std::collections::HashMap<u16, Vec<usize>>,
    /// The others: port ranges, or no port.
    rest: Vec<usize>,
}

impl Candidates {
    fn add(&mut self, i: usize, f: &FlowMatch) {
        match f.ports {
            Some((lo, hi)) if lo == hi => self.by_port.entry(lo).or_default().push(i),
            _ => self.rest.push(i),
        }
    }

    /// The first flow here that matches `k`, if it comes before `best`.
    fn first(&self, flows: &[FlowMatch], k: &FlowKey, best: usize) -> usize {
        let exact = k.port.and_then(|p| self.by_port.get(&p));
        let mut best = best;
        for list in exact.into_iter().chain([&self.rest]) {
            if let Some(&i) = list
                .iter()
                .take_while(|&&i| i < best)
                .find(|&&i| flows[i].matches(k))
            {
                best = i;
            }
        }
        best
    }
}

impl Classifier {
    pub fn new(dir: Direction, flows: Vec<FlowMatch>) -> Self {
        let mut by_protocol: std::collections::HashMap<u8, Candidates> = Default::default();
        let mut any_protocol = Candidates::default();
        for (i, f) in flows.iter().enumerate() {
            match f.protocol {
                Some(p) => by_protocol.entry(p).or_default().add(i, f),
                None => any_protocol.add(i, f),
            }
        }
        Classifier {
            dir,
            flows,
            by_protocol,
            any_protocol,
            counters: Counters::default(),
        }
    }

    /// The output for `frame`: the first matching flow's index, else the default's.
    pub fn classify(&self, frame: &[u8]) -> usize {
        let none = self.flows.len();
        let Some(k) = flow_key(frame, self.dir) else {
            return none;
        };
        let best = match self.by_protocol.get(&k.protocol) {
            Some(c) => c.first(&self.flows, &k, none),
            None => none,
        };
        self.any_protocol.first(&self.flows, &k, best)
    }
}

impl App for Classifier {
    fn breathe(&mut self, cx: &mut Ctx<'_>) {
        while let Some(p) = cx.receive(0) {
            self.counters.rx_packets += 1;
            self.counters.rx_bytes += p.len as u64;
            let out = self.classify(cx.pool.data(&p));
            cx.transmit(out, p, &mut self.counters);
        }
    }
    fn counters(&self) -> &Counters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10.0.0.1:1234 → 10.0.0.2:5678, UDP.
    fn udp_v4() -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&46u16.to_be_bytes());
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&1234u16.to_be_bytes());
        f[36..38].copy_from_slice(&5678u16.to_be_bytes());
        f
    }

    fn v6_udp(src: [u8; 16], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40 + 8];
        f[12..14].copy_from_slice(&0x86DDu16.to_be_bytes());
        f[14] = 0x60;
        f[14 + 6] = 17;
        f[14 + 8..14 + 24].copy_from_slice(&src);
        f[54..56].copy_from_slice(&sport.to_be_bytes());
        f[56..58].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn ipv4_and_ipv6_keys_by_direction() {
        let v4 = udp_v4(); // 10.0.0.1:1234 → 10.0.0.2:5678
        let k = flow_key(&v4, Direction::Ingress).unwrap();
        assert_eq!(
            (k.addr, k.protocol, k.port),
            ("10.0.0.1".parse().unwrap(), 17, Some(1234))
        );
        let k = flow_key(&v4, Direction::Egress).unwrap();
        assert_eq!((k.addr, k.port), ("10.0.0.2".parse().unwrap(), Some(5678)));
        let src: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
        let v6 = v6_udp(src.octets(), 53, 4000);
        let k = flow_key(&v6, Direction::Ingress).unwrap();
        assert_eq!((k.addr, k.port), (IpAddr::V6(src), Some(53)));
        assert_eq!(flow_key(&[0u8; 10], Direction::Ingress), None);
    }

    #[test]
    fn classifier_first_match_wins_else_default() {
        let c = Classifier::new(
            Direction::Ingress,
            vec![
                FlowMatch {
                    prefix: Some(Prefix {
                        addr: "2001:db8::".parse().unwrap(),
                        len: 32,
                    }),
                    protocol: None,
                    ports: None,
                },
                FlowMatch {
                    prefix: None,
                    protocol: Some(17),
                    ports: Some((1400, 2000)),
                },
                FlowMatch {
                    prefix: None,
                    protocol: Some(17),
                    ports: None,
                },
            ],
        );
        let src: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
        assert_eq!(c.classify(&v6_udp(src.octets(), 1500, 1)), 0);
        let other: std::net::Ipv6Addr = "2001:db9::7".parse().unwrap();
        assert_eq!(c.classify(&v6_udp(other.octets(), 1500, 1)), 1);
        assert_eq!(c.classify(&udp_v4()), 2); // sport 1234: not 1400-2000
        assert_eq!(c.classify(&[0u8; 60]), 3);
    }

    #[test]
    fn the_indexed_classifier_picks_what_a_scan_in_spec_order_picks() {
        // A small deterministic generator: flows over few protocols, ports and
        // prefixes, so that overlaps (and so the first-match rule) are common.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for round in 0..200 {
            let flows: Vec<FlowMatch> = (0..1 + next(40))
                .map(|_| FlowMatch {
                    prefix: (next(3) == 0).then(|| Prefix {
                        addr: IpAddr::from([10, 0, 0, next(4) as u8]),
                        len: [8, 24, 32][next(3) as usize],
                    }),
                    protocol: [None, Some(6), Some(17), Some(1)][next(4) as usize],
                    ports: match next(3) {
                        0 => None,
                        1 => Some((next(8) as u16, 0)).map(|(p, _)| (p, p)),
                        _ => {
                            let lo = next(8) as u16;
                            Some((lo, lo + next(4) as u16))
                        }
                    },
                })
                .collect();
            let c = Classifier::new(Direction::Ingress, flows.clone());
            for _ in 0..50 {
                let mut f = udp_v4();
                f[23] = [6u8, 17, 1, 47][next(4) as usize];
                f[29] = next(4) as u8; // source 10.0.0.0-3
                f[34..36].copy_from_slice(&(next(8) as u16).to_be_bytes());
                let k = flow_key(&f, Direction::Ingress).unwrap();
                let scan = flows
                    .iter()
                    .position(|m| m.matches(&k))
                    .unwrap_or(flows.len());
                assert_eq!(c.classify(&f), scan, "round {round}, key {k:?}");
            }
        }
    }

    #[test]
    fn vlan_tags_and_ipv6_extension_headers_are_walked() {
        let v4 = udp_v4();
        // 802.1Q, then QinQ (802.1ad outside 802.1Q): the same key as untagged.
        let tag = |f: &[u8], tpid: u16| {
            let mut t = f[..12].to_vec();
            t.extend_from_slice(&tpid.to_be_bytes());
            t.extend_from_slice(&[0x00, 0x07]);
            t.extend_from_slice(&f[12..]);
            t
        };
        let plain = flow_key(&v4, Direction::Ingress).unwrap();
        let q = tag(&v4, 0x8100);
        assert_eq!(flow_key(&q, Direction::Ingress), Some(plain));
        assert_eq!(flow_key(&tag(&q, 0x88A8), Direction::Ingress), Some(plain));
        // IPv6 + hop-by-hop (8 bytes) + fragment (first) → UDP 1500 → 53.
        let src: std::net::Ipv6Addr = "fd00::7".parse().unwrap();
        let mut f = vec![0u8; 14 + 40 + 8 + 8 + 8];
        f[12..14].copy_from_slice(&0x86DDu16.to_be_bytes());
        f[14] = 0x60;
        f[14 + 6] = 0; // hop-by-hop
        f[14 + 8..14 + 24].copy_from_slice(&src.octets());
        f[54] = 44; // → fragment
        f[62] = 17; // → UDP, offset 0
        f[70..72].copy_from_slice(&1500u16.to_be_bytes());
        f[72..74].copy_from_slice(&53u16.to_be_bytes());
        let k = flow_key(&f, Direction::Ingress).unwrap();
        assert_eq!((k.protocol, k.port), (17, Some(1500)));
        // A later fragment: UDP, but no ports.
        f[64..66].copy_from_slice(&(185u16 << 3).to_be_bytes());
        let k = flow_key(&f, Direction::Ingress).unwrap();
        assert_eq!((k.protocol, k.port), (17, None));
        // Truncated inside the extension headers: not classified, no panic.
        assert_eq!(flow_key(&f[..60], Direction::Ingress), None);
    }
}
