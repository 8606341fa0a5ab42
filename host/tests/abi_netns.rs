//! The reverse port of link ABI 1.1 on real veths in real network namespaces, through
//! the real `synthnet bridge`. **Needs root** (namespaces, raw sockets): the test says
//! so in its name and fails — never skips — without it. Its namespaces have unique
//! names and are removed when it ends, passing or failing.

mod common;

use common::bridge::pinned_topology;
use common::bridge::BridgeProc;
use common::files::TempDir;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use synthnet_testkit::netns;
use synthnet_testkit::traffic::in_ns;

/// Where a datagram came from, and its payload.
type Datagram = (SocketAddr, Vec<u8>);

/// Send `n` datagrams from `from` to `to` in namespace `ns`, and collect what comes back
/// to `from` within a second of the last one: (source, payload) of each.
fn send_and_collect(
    ns: &str,
    from: SocketAddr,
    to: SocketAddr,
    n: usize,
) -> std::thread::JoinHandle<anyhow::Result<Vec<Datagram>>> {
    in_ns(ns, move || {
        let sock = UdpSocket::bind(from)?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        for k in 0..n {
            sock.send_to(format!("hello {k}").as_bytes(), to)?;
        }
        let mut got = Vec::new();
        let end = Instant::now() + Duration::from_secs(1);
        let mut buf = [0u8; 2048];
        while got.len() < n && Instant::now() < end {
            if let Ok((len, src)) = sock.recv_from(&mut buf) {
                got.push((src, buf[..len].to_vec()));
            }
        }
        Ok(got)
    })
}

/// Count what arrives at `at` in namespace `ns` for `wait`.
fn listen(
    ns: &str,
    at: SocketAddr,
    wait: Duration,
) -> std::thread::JoinHandle<anyhow::Result<usize>> {
    in_ns(ns, move || {
        let sock = UdpSocket::bind(at)?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let end = Instant::now() + wait;
        let (mut n, mut buf) = (0, [0u8; 2048]);
        while Instant::now() < end {
            if sock.recv_from(&mut buf).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    })
}

/// Both chains answer every packet on their reverse port (the testbed swaps the
/// Ethernet, IP and UDP ends): a datagram that enters on the outer interface leaves
/// again out of the outer interface, back to its sender, and the same on the inner
/// side; nothing crosses.
#[test]
fn root_the_reverse_port_answers_out_of_the_interface_the_packet_came_in() {
    let topo = pinned_topology("rev");
    let dir = TempDir::new("abi11");
    let spec = dir.join("spec.json");
    let testbed = synthnet_runtime::registry::test_only_path("testbed").expect("testbed");
    let stage =
        format!(r#"[{{"plugin": "{testbed}", "name": "rev", "config": {{"reverse": 1}}}}]"#);
    std::fs::write(
        &spec,
        format!(r#"{{"ingress": {stage}, "egress": {stage}}}"#),
    )
    .unwrap();
    let mut bridge = BridgeProc::start(&topo, &spec, &["--stats", "0"]);
    let (a_ip, b_ip) = (netns::A_V4.parse().unwrap(), netns::B_V4.parse().unwrap());
    for (from_ns, to_ns, from, to) in [
        (
            &topo.a.name,
            &topo.b.name,
            SocketAddr::new(a_ip, 7100),
            SocketAddr::new(b_ip, 7101),
        ),
        (
            &topo.b.name,
            &topo.a.name,
            SocketAddr::new(b_ip, 7200),
            SocketAddr::new(a_ip, 7201),
        ),
    ] {
        let far = listen(to_ns, to, Duration::from_millis(1500));
        std::thread::sleep(Duration::from_millis(100));
        let got = send_and_collect(from_ns, from, to, 20)
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(
            got.len(),
            20,
            "{from} → {to}: every datagram answered: {got:?}"
        );
        for (k, (src, payload)) in got.iter().enumerate() {
            assert_eq!(*src, to, "answered as if by {to}");
            assert_eq!(payload, format!("hello {k}").as_bytes(), "in order");
        }
        assert_eq!(far.join().unwrap().unwrap(), 0, "nothing crossed to {to}");
    }
    assert!(bridge.alive());
    assert!(bridge.stop().success(), "clean exit on SIGTERM");
}
