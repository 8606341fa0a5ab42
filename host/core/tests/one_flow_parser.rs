//! synthnet has one flow parser (the SDK's `flow::parse`): a spec's flow match (the
//! classifier), the API's flow list (the flow table) and the plugins (which call the
//! SDK) see the same flow in a packet, for VLAN tags of every TPID and for every
//! protocol with ports.

use std::net::IpAddr;
use synthnet_core::flow::{five_tuple, Classifier, Direction, FlowMatch, Prefix};
use synthnet_core::flowtable::FlowTable;

/// Ethernet, then each VLAN tag in `tags` (TPID, id), then `ethertype` and `l3`.
fn frame(tags: &[(u16, u16)], ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    for &(tpid, id) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

/// An IPv4 header (no options) for `proto` from 10.1.0.7 to 10.2.0.9, then `l4`.
fn v4(proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0, 10, 1, 0, 7, 10, 2, 0, 9,
    ];
    let len = (20 + l4.len()) as u16;
    ip[2..4].copy_from_slice(&len.to_be_bytes());
    ip.extend_from_slice(l4);
    ip
}

/// An IPv6 header from fd00::7 to fd00::9 with an authentication header, then `proto`.
fn v6_ah(proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x60, 0, 0, 0, 0, 0, 51, 64];
    ip[4..6].copy_from_slice(&((12 + l4.len()) as u16).to_be_bytes());
    let src: std::net::Ipv6Addr = "fd00::7".parse().unwrap();
    let dst: std::net::Ipv6Addr = "fd00::9".parse().unwrap();
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    // AH: next header, length 1 (= (1 + 2) * 4 = 12 bytes), reserved, SPI, sequence.
    ip.extend_from_slice(&[proto, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
    ip.extend_from_slice(l4);
    ip
}

/// The first bytes of a transport header with ports (SCTP, DCCP, UDP-Lite, …).
fn ports(src: u16, dst: u16) -> Vec<u8> {
    let mut l4 = src.to_be_bytes().to_vec();
    l4.extend_from_slice(&dst.to_be_bytes());
    l4.extend_from_slice(&[0; 12]);
    l4
}

#[test]
fn classifier_flow_table_and_plugins_see_the_same_flow() {
    const SCTP: u8 = 132;
    const DCCP: u8 = 33;
    const UDPLITE: u8 = 136;
    let cases = [
        // Old-style QinQ outside 802.1Q, then SCTP.
        frame(
            &[(0x9100, 7), (0x8100, 100)],
            0x0800,
            &v4(SCTP, &ports(5000, 6000)),
        ),
        // Three tags, DCCP.
        frame(
            &[(0x88A8, 1), (0x8100, 2), (0x9100, 3)],
            0x0800,
            &v4(DCCP, &ports(5000, 6000)),
        ),
        // IPv6 with an authentication header, then UDP-Lite, tagged 0x9100.
        frame(&[(0x9100, 9)], 0x86DD, &v6_ah(UDPLITE, &ports(5000, 6000))),
    ];
    for (i, f) in cases.iter().enumerate() {
        // The plugins' view: the SDK's parser, which every plugin compiles in.
        let p = synthnet_sdk::flow::parse(f).unwrap_or_else(|e| panic!("case {i}: {e:?}"));
        assert_eq!(p.ports(), Some((5000, 6000)), "case {i}");
        // The flow table's (what /api/v1/flows and /top list).
        let t = five_tuple(f).expect("a five-tuple");
        assert_eq!(
            (t.src, t.dst, t.protocol, t.src_port, t.dst_port),
            (p.key.src_ip(), p.key.dst_ip(), p.key.proto, 5000, 6000),
            "case {i}"
        );
        let mut table = FlowTable::new(16);
        table.record(f, f.len() as u32, 0);
        assert_eq!(table.get(&t).map(|s| s.packets), Some(1), "case {i}");
        // The classifier's: a spec flow on the protocol and the source port (ingress),
        // behind one on another port, and one on the destination port (egress).
        let m = |port: u16| FlowMatch {
            prefix: Some(Prefix {
                addr: p.key.src_ip(),
                len: if p.key.src_ip().is_ipv4() { 32 } else { 128 },
            }),
            protocol: Some(p.key.proto),
            ports: Some((port, port)),
        };
        let ingress = Classifier::new(Direction::Ingress, vec![m(4999), m(5000)]);
        assert_eq!(ingress.classify(f), 1, "case {i}: ingress, by source port");
        let mut to = m(6000);
        to.prefix = Some(Prefix {
            addr: p.key.dst_ip(),
            len: 0,
        });
        let egress = Classifier::new(Direction::Egress, vec![m(4999), to]);
        assert_eq!(
            egress.classify(f),
            1,
            "case {i}: egress, by destination port"
        );
        assert!(matches!(t.src, IpAddr::V4(_) | IpAddr::V6(_)));
    }
}
