//! The `corrupt` plugin on the live bridge, with the veths' offloads on (their default:
//! senders leave UDP and TCP checksums to the "hardware", so frames reach synthnet with
//! `VIRTIO_NET_HDR_F_NEEDS_CSUM`). The host finishes those checksums before the plugin
//! flips a bit, so the receiver's kernel must catch every corrupted datagram: it counts
//! it in `InCsumErrors` (or, for a bit in the IP header, as a header error) and never
//! hands it to the application. Without the finished checksum the receiver would take
//! a `CHECKSUM_PARTIAL` frame as valid and deliver the damage. **Needs root**
//! (namespaces, raw sockets); fails, never skips, without it. Namespaces are unique and
//! removed when the test ends, passing or failing.

mod common;

use common::bridge::pinned_topology;
use common::bridge::BridgeProc;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use synthnet_testkit::netns::{self, Netns};
use synthnet_testkit::traffic;

/// A spec file that lives as long as the value.
struct SpecFile(PathBuf);

impl SpecFile {
    fn new(json: &str) -> SpecFile {
        let dir = std::env::temp_dir().join(netns::unique("corrupt"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("spec.json");
        std::fs::write(&path, json).unwrap();
        SpecFile(path)
    }
}

impl Drop for SpecFile {
    fn drop(&mut self) {
        if let Some(d) = self.0.parent() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Counter `field` of the `proto` lines (`Udp`, `Tcp`, `Ip`) of the namespace's
/// /proc/net/snmp, or of `IpExt` in /proc/net/netstat.
fn snmp(ns: &Netns, file: &str, proto: &str, field: &str) -> u64 {
    let out = ns.command("cat").arg(file).output().expect("read snmp");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{proto}:")))
        .collect();
    assert_eq!(lines.len(), 2, "{proto} in {file}: {text}");
    let names = lines[0].split_whitespace();
    let values = lines[1].split_whitespace();
    names
        .zip(values)
        .find(|(n, _)| *n == field)
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or_else(|| panic!("no {proto} {field} in {file}"))
}

/// Every way the receiver's kernel throws a damaged IPv4/UDP datagram away, each
/// counted once: (UDP checksum errors, everything else). An IP header checksum error
/// counts in both `IpExt InCsumErrors` and `Ip InHdrErrors`: only the latter is taken;
/// a UDP checksum error also counts in `Udp InErrors`: taken out of it.
fn rejected(ns: &Netns) -> (u64, u64) {
    let udp = snmp(ns, "/proc/net/snmp", "Udp", "InCsumErrors");
    let ip = snmp(ns, "/proc/net/snmp", "Ip", "InHdrErrors")
        + snmp(ns, "/proc/net/netstat", "IpExt", "InTruncatedPkts")
        + snmp(ns, "/proc/net/snmp", "Ip", "InAddrErrors")
        + snmp(ns, "/proc/net/snmp", "Ip", "InUnknownProtos")
        + snmp(ns, "/proc/net/snmp", "Ip", "InDiscards")
        + snmp(ns, "/proc/net/snmp", "Udp", "NoPorts")
        + snmp(ns, "/proc/net/snmp", "Udp", "InErrors")
        - snmp(ns, "/proc/net/snmp", "Udp", "InCsumErrors");
    (udp, ip)
}

#[test]
fn root_corrupted_datagrams_fail_the_receivers_checksum_with_offloads_on() {
    let topo = pinned_topology("crp");
    let p = 0.1;
    let spec = SpecFile::new(&format!(
        r#"{{"seed": 11, "ingress": [{{"plugin": "corrupt", "config": {{"ratio": {p}}}}}], "egress": []}}"#
    ));
    let bridge = BridgeProc::start(&topo, &spec.0, &["--stats", "0"]);
    let before = rejected(&topo.b);
    let n = 4000u64;
    let dst = SocketAddr::new(netns::B_V4.parse::<IpAddr>().unwrap(), 7300);
    let r = traffic::udp_stream(
        &topo.a.name,
        &topo.b.name,
        dst,
        traffic::Stream {
            count: n,
            pps: 10_000,
            size: 1000,
            linger: Duration::from_millis(300),
        },
        |_| {},
    )
    .unwrap();
    let after = rejected(&topo.b);
    let (csum, other) = (after.0 - before.0, after.1 - before.1);
    let lost = r.lost();
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    eprintln!(
        "corrupt {p}: {lost} of {n} datagrams not delivered (expected {:.0} ± {:.0}); receiver: UDP InCsumErrors {csum}, other IP/UDP errors {other}",
        n as f64 * p,
        3.0 * sigma
    );
    // Every corrupted datagram was thrown away by a check of the receiver's kernel,
    // nearly all by the UDP checksum (the rest had the bit in the IP header)...
    assert!(
        (lost as f64 - n as f64 * p).abs() < 3.0 * sigma,
        "{lost} lost"
    );
    assert_eq!(csum + other, lost, "each lost datagram is a rejected one");
    assert!(
        csum as f64 >= 0.9 * lost as f64,
        "{csum} of {lost} by checksum"
    );
    // ...and none reached the application: every one delivered is intact, once.
    assert_eq!(r.duplicates(), 0);
    assert!(r.in_order());

    // TCP with checksum offload on but no super-packets from the sender (they would
    // pass intact, `gso_spared`): segments the plugin damages fail the
    // receiver's TCP checksum and are sent again; every byte arrives intact (checked
    // one by one).
    // (`gso_max_segs 1`: no super-packets; checksums stay offloaded.)
    topo.a
        .ip(&["link", "set", "dev", "eth0", "gso_max_segs", "1"])
        .expect("limit A's segmentation offload to one segment");
    let tcp_before = snmp(&topo.b, "/proc/net/snmp", "Tcp", "InCsumErrors");
    let t = traffic::tcp_transfer(
        &topo.a.name,
        &topo.b.name,
        SocketAddr::new(dst.ip(), 7301),
        16 << 20,
        None,
        true,
    )
    .unwrap();
    let tcp_csum = snmp(&topo.b, "/proc/net/snmp", "Tcp", "InCsumErrors") - tcp_before;
    eprintln!(
        "TCP through corrupt {p}: 16 MiB intact at {:.2} Gbit/s; receiver TCP InCsumErrors {tcp_csum}",
        t.gbit_s()
    );
    assert_eq!(t.bytes, 16 << 20);
    assert!(
        tcp_csum > 0,
        "the receiver's TCP checksum caught damaged segments"
    );
    drop(bridge);
}
