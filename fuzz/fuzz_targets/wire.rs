//! Fuzz target `wire`: any bytes through the SDK's header views. After `new_checked`
//! accepts a buffer no getter may panic (the module's promise), and the setters keep
//! their checksum promises: an IPv4 header filled, then given a new TTL, still verifies.
//! synthnet's one flow parser (`flow::parse`, which the classifier, the flow table and
//! the plugins share) never panics, points inside the frame, and has ports only for a
//! protocol that has them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::hint::black_box;
use synthnet_sdk::checksum;
use synthnet_sdk::flow;
use synthnet_sdk::wire::{EthernetFrame, Ipv4Packet, Ipv6Packet, TcpSegment, UdpDatagram};

fn udp(b: &[u8]) {
    if let Ok(u) = UdpDatagram::new_checked(b) {
        black_box((
            u.src_port(),
            u.dst_port(),
            u.len(),
            u.is_empty(),
            u.checksum(),
        ));
        black_box(u.payload());
    }
}

fn tcp(b: &[u8]) {
    if let Ok(t) = TcpSegment::new_checked(b) {
        black_box((t.src_port(), t.dst_port(), t.seq(), t.ack(), t.header_len()));
        black_box((t.flags(), t.window(), t.checksum()));
        black_box(t.payload());
    }
}

fn ipv4(b: &[u8]) {
    if let Ok(ip) = Ipv4Packet::new_checked(b) {
        black_box((
            ip.header_len(),
            ip.dscp_ecn(),
            ip.total_len(),
            ip.ident(),
            ip.ttl(),
        ));
        black_box((
            ip.protocol(),
            ip.checksum(),
            ip.src(),
            ip.dst(),
            ip.verify_checksum(),
        ));
        udp(ip.payload());
        tcp(ip.payload());
    }
}

fn ipv6(b: &[u8]) {
    if let Ok(ip) = Ipv6Packet::new_checked(b) {
        black_box((
            ip.payload_len(),
            ip.next_header(),
            ip.hop_limit(),
            ip.src(),
            ip.dst(),
        ));
        udp(ip.payload());
        tcp(ip.payload());
    }
}

fn flow_key(data: &[u8]) {
    if let Ok(p) = flow::parse(data) {
        assert!(p.l3_offset < data.len(), "the IP header starts inside the frame");
        if let Some(l4) = p.l4_offset {
            assert!(l4 <= data.len(), "the transport header starts inside the frame");
        }
        if p.ports().is_some() {
            assert!(flow::PORTED.contains(&p.key.proto));
        }
        let (c, side) = p.key.canonical();
        let (back, other) = p.key.reversed().canonical();
        assert_eq!(c, back, "both directions share a canonical key");
        assert!(side != other || p.key == p.key.reversed());
        black_box(p.key.to_string());
    }
}

fuzz_target!(|data: &[u8]| {
    flow_key(data);
    // Every view over the bytes as they are, at every layer.
    if let Ok(eth) = EthernetFrame::new_checked(data) {
        black_box((eth.dst(), eth.src(), eth.ethertype()));
        ipv4(eth.payload());
        ipv6(eth.payload());
    }
    ipv4(data);
    ipv6(data);
    udp(data);
    tcp(data);
    black_box((checksum::internet(data), checksum::sum(data, 0)));

    // The setters, on a copy.
    let mut buf = data.to_vec();
    if let Ok(mut eth) = EthernetFrame::new_checked(&mut buf[..]) {
        eth.set_dst([2, 0, 0, 0, 0, 1]);
        eth.set_src([2, 0, 0, 0, 0, 2]);
        let t = eth.ethertype();
        eth.set_ethertype(t);
        black_box(eth.payload_mut());
    }
    let mut buf = data.to_vec();
    if let Ok(mut ip) = Ipv4Packet::new_checked(&mut buf[..]) {
        ip.fill_checksum();
        assert!(ip.verify_checksum(), "a filled checksum verifies");
        let ttl = ip.ttl();
        ip.set_ttl(ttl.wrapping_sub(1));
        assert!(
            ip.verify_checksum(),
            "a TTL update keeps the checksum valid"
        );
        ip.set_checksum(0);
        black_box(ip.payload_mut());
    }
    let mut buf = data.to_vec();
    if let Ok(mut ip) = Ipv6Packet::new_checked(&mut buf[..]) {
        ip.set_hop_limit(1);
        black_box(ip.payload_mut());
    }
    let mut buf = data.to_vec();
    if let Ok(mut u) = UdpDatagram::new_checked(&mut buf[..]) {
        u.set_src_port(1);
        u.set_dst_port(2);
        u.set_checksum(0);
        black_box(u.payload_mut());
    }
    let mut buf = data.to_vec();
    if let Ok(mut t) = TcpSegment::new_checked(&mut buf[..]) {
        t.set_window(0xFFFF);
        t.set_checksum(0);
    }
});
