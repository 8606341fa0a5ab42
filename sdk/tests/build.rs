//! `synthnet_sdk::build`: frames built with correct checksums, and the reset that
//! answers a segment per RFC 9293 §3.10.7.1, for IPv4 and IPv6. Checksums are verified
//! here with a from-scratch implementation (byte pairs summed in a u64 and folded once),
//! not with the SDK's `checksum` module the builder uses. That Linux accepts the reset
//! is shown live by `host/tests/scenario_lbhash.rs` (the client sees ECONNRESET).

use synthnet_sdk::build::{self, BuildError, Ether, Ip, Tcp, TCP_RST_MAX_LEN};
use synthnet_sdk::wire::tcpflags::{ACK, FIN, PSH, RST, SYN};

/// RFC 1071 from scratch: the one's-complement of the one's-complement sum.
fn ones_sum(parts: &[&[u8]]) -> u16 {
    let mut bytes = Vec::new();
    for p in parts {
        bytes.extend_from_slice(p);
    }
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut s: u64 = 0;
    for w in bytes.chunks(2) {
        s += ((w[0] as u64) << 8) | w[1] as u64;
    }
    while s > 0xFFFF {
        s = (s >> 16) + (s & 0xFFFF);
    }
    !(s as u16)
}

/// Offsets of IP and L4 in a frame, and whether it is IPv6.
fn layers(f: &[u8]) -> (usize, usize, bool) {
    let mut l3 = 14;
    let mut et = u16::from_be_bytes([f[12], f[13]]);
    if et == 0x8100 {
        et = u16::from_be_bytes([f[16], f[17]]);
        l3 = 18;
    }
    match et {
        0x0800 => (l3, l3 + (f[l3] & 0xF) as usize * 4, false),
        0x86DD => (l3, l3 + 40, true),
        _ => panic!("not IP"),
    }
}

/// Assert every checksum of an Ethernet/IP/TCP-or-UDP frame verifies (sums to 0) and
/// that the IP length fields match the frame.
fn assert_checksums(f: &[u8]) {
    let (l3, l4, v6) = layers(f);
    let l4_len = f.len() - l4;
    let proto;
    let pseudo: Vec<u8> = if v6 {
        assert_eq!(u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]) as usize, l4_len);
        proto = f[l3 + 6];
        let mut p = f[l3 + 8..l3 + 40].to_vec();
        p.extend_from_slice(&(l4_len as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, proto]);
        p
    } else {
        assert_eq!(ones_sum(&[&f[l3..l4]]), 0, "IPv4 header checksum");
        assert_eq!(
            u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]) as usize,
            f.len() - l3
        );
        proto = f[l3 + 9];
        let mut p = f[l3 + 12..l3 + 20].to_vec();
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&(l4_len as u16).to_be_bytes());
        p
    };
    assert_eq!(
        ones_sum(&[&pseudo, &f[l4..]]),
        0,
        "L4 checksum (proto {proto})"
    );
}

const MAC_C: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0C];
const MAC_S: [u8; 6] = [0x02, 0, 0, 0, 0, 0x05];
const V6_C: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0C,
];
const V6_S: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x05,
];

fn v4() -> Ip {
    Ip::V4 {
        src: [10, 0, 0, 12],
        dst: [10, 0, 0, 5],
        tos: 0x48,
        ttl: 63,
        ident: 0x1234,
    }
}

fn v6() -> Ip {
    Ip::V6 {
        src: V6_C,
        dst: V6_S,
        traffic_class: 0x48,
        flow_label: 0xABCDE,
        hop_limit: 63,
    }
}

fn eth(vlan: Option<u16>) -> Ether {
    Ether {
        src: MAC_C,
        dst: MAC_S,
        vlan_tci: vlan,
    }
}

/// A client segment as a frame: `seq`, `ack`, `flags`, `payload`.
fn segment(ip: Ip, vlan: Option<u16>, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 2048];
    let t = Tcp {
        src_port: 40001,
        dst_port: 5001,
        seq,
        ack,
        flags,
        window: 501,
    };
    let n = build::tcp(&mut out, &eth(vlan), &ip, &t, payload).unwrap();
    out.truncate(n);
    out
}

fn rst(frame: &[u8]) -> Vec<u8> {
    let mut out = [0u8; TCP_RST_MAX_LEN];
    let n = build::tcp_rst_for(frame, &mut out).unwrap();
    out[..n].to_vec()
}

/// (seq, ack, flags, src port, dst port) of the TCP header of a frame.
fn tcp_fields(f: &[u8]) -> (u32, u32, u8, u16, u16) {
    let (_, l4, _) = layers(f);
    let t = &f[l4..];
    (
        u32::from_be_bytes(t[4..8].try_into().unwrap()),
        u32::from_be_bytes(t[8..12].try_into().unwrap()),
        t[13],
        u16::from_be_bytes([t[0], t[1]]),
        u16::from_be_bytes([t[2], t[3]]),
    )
}

#[test]
fn built_tcp_and_udp_frames_have_valid_checksums() {
    for ip in [v4(), v6()] {
        for vlan in [None, Some(0x0064)] {
            // Odd and even payload lengths, and none.
            for payload in [&b""[..], b"x", b"hello world!", &[0xFF; 1001][..]] {
                assert_checksums(&segment(ip, vlan, 7, 9, ACK | PSH, payload));
                let mut out = [0u8; 1200];
                let n = build::udp(&mut out, &eth(vlan), &ip, 5353, 53, payload).unwrap();
                assert_checksums(&out[..n]);
            }
        }
    }
}

#[test]
fn ipv6_header_carries_traffic_class_and_flow_label() {
    let f = segment(v6(), None, 1, 2, ACK, b"");
    assert_eq!(&f[14..18], &[0x64, 0x8A, 0xBC, 0xDE]);
    assert_eq!(f[20], 6);
    assert_eq!(f[21], 63);
}

#[test]
fn reset_answering_an_ack_takes_its_ack_as_seq_and_has_no_ack() {
    for ip in [v4(), v6()] {
        let seg = segment(ip, None, 1_000_000, 3_000_000_000, ACK | PSH, b"some data");
        let r = rst(&seg);
        assert_checksums(&r);
        assert_eq!(tcp_fields(&r), (3_000_000_000, 0, RST, 5001, 40001));
        // MACs and addresses swapped.
        assert_eq!(&r[0..6], &MAC_C);
        assert_eq!(&r[6..12], &MAC_S);
        let (l3, _, v6) = layers(&r);
        if v6 {
            assert_eq!(&r[l3 + 8..l3 + 24], &V6_S);
            assert_eq!(&r[l3 + 24..l3 + 40], &V6_C);
        } else {
            assert_eq!(&r[l3 + 12..l3 + 16], &[10, 0, 0, 5]);
            assert_eq!(&r[l3 + 16..l3 + 20], &[10, 0, 0, 12]);
        }
    }
}

#[test]
fn reset_answering_a_syn_acks_seq_plus_one() {
    for ip in [v4(), v6()] {
        let r = rst(&segment(ip, None, 0xFFFF_FFFF, 0, SYN, b""));
        assert_checksums(&r);
        // SEG.SEQ + SEG.LEN wraps: the SYN counts one.
        assert_eq!(tcp_fields(&r), (0, 0, RST | ACK, 5001, 40001));
    }
}

#[test]
fn reset_answering_data_without_ack_counts_data_and_fin() {
    let r = rst(&segment(v4(), None, 100, 0, FIN, b"12345"));
    assert_eq!(tcp_fields(&r), (0, 106, RST | ACK, 5001, 40001));
    let r = rst(&segment(v6(), None, 100, 0, SYN | FIN, b"ab"));
    assert_eq!(tcp_fields(&r).1, 104);
}

#[test]
fn payload_length_comes_from_the_ip_header_not_the_captured_bytes() {
    // A plugin with Access::Headers sees only a prefix: the answer must not change.
    for ip in [v4(), v6()] {
        let seg = segment(ip, None, 500, 0, PSH, &[7; 900]);
        let (_, l4, _) = layers(&seg);
        assert_eq!(rst(&seg[..l4 + 20]), rst(&seg));
        assert_eq!(tcp_fields(&rst(&seg)).1, 1400);
    }
}

#[test]
fn reset_keeps_the_vlan_tag() {
    let r = rst(&segment(v4(), Some(0x2064), 1, 77, ACK, b""));
    assert_eq!(&r[12..16], &[0x81, 0x00, 0x20, 0x64]);
    assert_eq!(r.len(), 18 + 20 + 20);
    assert_checksums(&r);
    let r = rst(&segment(v6(), Some(5), 1, 77, ACK, b""));
    assert_eq!(r.len(), TCP_RST_MAX_LEN);
    assert_checksums(&r);
}

#[test]
fn resets_non_tcp_and_short_buffers_are_refused() {
    let mut out = [0u8; TCP_RST_MAX_LEN];
    let reset = segment(v4(), None, 1, 2, RST | ACK, b"");
    assert_eq!(
        build::tcp_rst_for(&reset, &mut out),
        Err(BuildError::IsReset)
    );
    let mut udp = [0u8; 100];
    let n = build::udp(&mut udp, &eth(None), &v4(), 1, 2, b"x").unwrap();
    assert_eq!(
        build::tcp_rst_for(&udp[..n], &mut out),
        Err(BuildError::NotTcp)
    );
    let seg = segment(v6(), None, 1, 2, ACK, b"");
    // Cut inside the TCP header.
    assert_eq!(
        build::tcp_rst_for(&seg[..14 + 40 + 10], &mut out),
        Err(BuildError::NotTcp)
    );
    assert_eq!(
        build::tcp_rst_for(&seg[..10], &mut out),
        Err(BuildError::NotTcp)
    );
    let mut small = [0u8; 40];
    assert_eq!(
        build::tcp_rst_for(&seg, &mut small),
        Err(BuildError::BufferTooSmall { need: 74 })
    );
    // A non-first IPv4 fragment carries no TCP header.
    let mut frag = segment(v4(), None, 1, 2, ACK, b"");
    frag[20] = 0x00;
    frag[21] = 0x10;
    assert_eq!(build::tcp_rst_for(&frag, &mut out), Err(BuildError::NotTcp));
}

#[test]
fn payload_too_long_is_refused() {
    let mut out = vec![0u8; 70_000];
    let big = vec![0u8; 65_516];
    let e = build::tcp(
        &mut out,
        &eth(None),
        &v4(),
        &Tcp {
            src_port: 1,
            dst_port: 2,
            seq: 0,
            ack: 0,
            flags: ACK,
            window: 0,
        },
        &big,
    );
    assert_eq!(e, Err(BuildError::PayloadTooLong));
}
