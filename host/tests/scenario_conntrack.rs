//! Seed 000 live (docs/scenarios/conntrack-race.md): an all-to-all UDP ping among four
//! namespaces through `synthnet bridge` running `conntrack-race`.
//!
//! Every pair must cross the bridge, and both directions of a pair must cross the same
//! stage (conntrack sees both in one table). So the hosts sit on one side, each in its
//! own subnet, and a router on the other side sends every packet back:
//!
//! ```text
//!  h1 10.9.1.2 ─┐
//!  h2 10.9.2.2 ─┤ br0 (ns "a") ── outer [synthnet] inner ── eth0 (ns "b", router:
//!  h3 10.9.3.2 ─┤                 ingress: conntrack-race        10.9.{1..4}.1, forwarding)
//!  h4 10.9.4.2 ─┘
//! ```
//!
//! hᵢ → hⱼ goes hᵢ → br0 → outer → (ingress: conntrack-race) → inner → router → inner →
//! (egress: nothing) → outer → br0 → hⱼ: the stage sees every packet of every pair once,
//! in both directions of each flow. Neighbours are pinned, redirects off.
//!
//! Runs, each host sending one ping from UDP port 7000 to port 7000 of every other host
//! (the seed's `allping`), a pong answering each ping:
//! 1. ICMP pings, all at once: none lost (ICMP is not tracked);
//! 2. UDP, all at once, fresh table: one ping of every pair lost (6 of 12);
//! 3. UDP again at once, right away: none lost (the entries live);
//! 4. after the (test-short) timeout, UDP spaced 100 ms in a common order: none lost;
//! 5. after the timeout again, UDP at once: 6 of 12 lost again;
//! 6. `status` through the HTTP API lists the 6 flows, `flush` (`conntrack -F`) empties
//!    the table, and UDP at once right after loses 6 of 12 again.
//!
//! The stage's counters, read through `GET /api/v1/stats`, must agree.
//!
//! Offline (no root): the same rounds from a capture through `synthnet replay` with a
//! command log that flushes the table, byte-identical across two runs.

mod common;

use common::bridge::BridgeProc;
use common::files::{SpecFile, TempDir};
use common::http::{published_counters, stage_command};
use common::replay::{replay_ingress, write_pcap};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use synthnet_testkit::netns::{self, Middle, Netns, Topology};
use synthnet_testkit::traffic::in_ns;

const N: usize = 4;
const PORT: u16 = 7000;
/// The race window: wide enough that pings sent "at once" by four threads on a busy
/// two-core machine land in it, far below the 100 ms spacing of the spaced run.
const WINDOW_US: u64 = 50_000;
const TIMEOUT_MS: u64 = 1000;
const STREAM_TIMEOUT_MS: u64 = 2000;

fn host_ip(i: usize) -> String {
    format!("10.9.{}.2", i + 1)
}

/// Dropped in this order: the bridge process, the hosts, the topology, the spec.
struct Lab {
    bridge: BridgeProc,
    hosts: Vec<Netns>,
    topo: Topology,
    _spec: SpecFile,
}

fn build(tag: &str, spec: &str) -> Lab {
    assert!(
        netns::is_root(),
        "this test needs root (network namespaces and raw sockets)"
    );
    let topo = Topology::create(tag, Middle::Synthnet).expect("topology");
    let (sw, rt) = (&topo.a, &topo.b);
    // The switch: A's eth0 (toward synthnet's outer) on a bridge, no address.
    sw.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
    sw.ip(&["addr", "flush", "dev", "eth0"]).unwrap();
    sw.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
    sw.ip(&["link", "set", "eth0", "master", "br0"]).unwrap();
    sw.ip(&["link", "set", "br0", "up"]).unwrap();
    // The router: one address per host subnet on its eth0 (toward inner).
    rt.sysctl("net.ipv4.ip_forward", "1").unwrap();
    for k in ["all", "default", "eth0"] {
        rt.sysctl(&format!("net.ipv4.conf.{k}.send_redirects"), "0")
            .unwrap();
        rt.sysctl(&format!("net.ipv4.conf.{k}.rp_filter"), "0")
            .unwrap();
    }
    rt.ip(&["addr", "flush", "dev", "eth0"]).unwrap();
    let mut hosts = Vec::new();
    for i in 0..N {
        let h = Netns::create(&netns::unique(&format!("{tag}h{i}"))).unwrap();
        h.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
        h.sysctl("net.ipv4.conf.all.accept_redirects", "0").unwrap();
        let port = format!("p{i}");
        sw.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &h.name,
        ])
        .unwrap();
        sw.ip(&["link", "set", &port, "master", "br0"]).unwrap();
        sw.ip(&["link", "set", &port, "up"]).unwrap();
        h.ip(&["addr", "add", &format!("{}/24", host_ip(i)), "dev", "eth0"])
            .unwrap();
        h.ip(&["link", "set", "eth0", "up"]).unwrap();
        let gw = format!("10.9.{}.1", i + 1);
        rt.ip(&["addr", "add", &format!("{gw}/24"), "dev", "eth0"])
            .unwrap();
        h.ip(&["route", "add", "default", "via", &gw]).unwrap();
        hosts.push(h);
    }
    let rmac = rt.mac("eth0").unwrap();
    for (i, h) in hosts.iter().enumerate() {
        let gw = format!("10.9.{}.1", i + 1);
        h.ip(&[
            "neigh",
            "replace",
            &gw,
            "lladdr",
            &rmac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])
        .unwrap();
        let hmac = h.mac("eth0").unwrap();
        rt.ip(&[
            "neigh",
            "replace",
            &host_ip(i),
            "lladdr",
            &hmac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])
        .unwrap();
    }
    let spec = SpecFile::new("ctr", spec);
    let bridge = BridgeProc::start(&topo, &spec.path, &["--stats", "0"]);
    Lab {
        bridge,
        hosts,
        topo,
        _spec: spec,
    }
}

/// One all-to-all run: every host sends a ping to every other host, to peer j at
/// `start + j × spacing`, and answers each ping with a pong. Returns the (from, to)
/// pairs whose ping got no pong.
fn all_to_all(lab: &Lab, spacing: Duration) -> BTreeSet<(usize, usize)> {
    let barrier = Arc::new(Barrier::new(N));
    let t0 = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let threads: Vec<_> = (0..N)
        .map(|me| {
            let (barrier, t0) = (barrier.clone(), t0.clone());
            in_ns(&lab.hosts[me].name, move || {
                let sock = UdpSocket::bind(("0.0.0.0", PORT))?;
                sock.set_read_timeout(Some(Duration::from_micros(500)))?;
                barrier.wait();
                let start = *t0
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| Instant::now() + Duration::from_millis(20));
                let peers: Vec<usize> = (0..N).filter(|j| *j != me).collect();
                let mut next = 0;
                let mut answered = BTreeSet::new();
                let end = start + spacing * N as u32 + Duration::from_millis(400);
                let mut buf = [0u8; 64];
                while Instant::now() < end {
                    while next < peers.len()
                        && Instant::now() >= start + spacing * peers[next] as u32
                    {
                        let to: SocketAddr =
                            format!("{}:{PORT}", host_ip(peers[next])).parse().unwrap();
                        sock.send_to(&[b'P', me as u8], to)?;
                        next += 1;
                    }
                    if let Ok((n, from)) = sock.recv_from(&mut buf) {
                        match (n, buf[0]) {
                            (2, b'P') => {
                                sock.send_to(&[b'R', me as u8], from)?;
                            }
                            (2, b'R') => {
                                answered.insert(buf[1] as usize);
                            }
                            _ => {}
                        }
                    }
                }
                Ok(peers
                    .into_iter()
                    .filter(|j| !answered.contains(j))
                    .map(|j| (me, j))
                    .collect::<Vec<_>>())
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("ping thread").expect("ping thread"))
        .collect()
}

/// ICMP: every host pings every other once, all processes started at once; the pairs
/// that got no reply.
fn icmp_all_to_all(lab: &Lab) -> Vec<(usize, usize)> {
    let mut children = Vec::new();
    for i in 0..N {
        for j in 0..N {
            if i != j {
                let c = lab.hosts[i]
                    .command("ping")
                    .args(["-n", "-q", "-c", "1", "-W", "2", &host_ip(j)])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("ping (iputils-ping)");
                children.push(((i, j), c));
            }
        }
    }
    children
        .into_iter()
        .filter_map(|(p, mut c)| (!c.wait().unwrap().success()).then_some(p))
        .collect()
}

/// The conntrack-race stage (`ingress/default/ct`).
const STAGE: &str = "ingress/default/ct";

/// The stage's reply to command `json`.
fn command(lab: &Lab, json: &str) -> Value {
    let a = stage_command(&lab.topo.middle().name, STAGE, json);
    assert_eq!(a.status, 200, "{json}: {}", a.text());
    a.json()
}

/// Root: namespaces, veths, bridges, a router and `synthnet bridge`.
#[test]
fn root_conntrack_race_all_to_all_udp_ping_seed_000() {
    let spec = format!(
        r#"{{"ingress": [{{"plugin": "conntrack-race", "name": "ct", "config": {{
             "race_window_us": {WINDOW_US}, "udp_timeout_ms": {TIMEOUT_MS},
             "udp_timeout_stream_ms": {STREAM_TIMEOUT_MS}}}}}],
            "egress": []}}"#
    );
    let lab = build("ctr", &spec);
    let wait_timeout = || std::thread::sleep(Duration::from_millis(STREAM_TIMEOUT_MS + 500));
    let pairs = N * (N - 1);

    let icmp = icmp_all_to_all(&lab);
    let run1 = all_to_all(&lab, Duration::ZERO);
    let run2 = all_to_all(&lab, Duration::ZERO);
    wait_timeout();
    let run3 = all_to_all(&lab, Duration::from_millis(100));
    wait_timeout();
    let run4 = all_to_all(&lab, Duration::ZERO);
    // `conntrack -L` and `conntrack -F` through the HTTP API: a flushed table races again.
    let status = command(&lab, r#"{"cmd": "status"}"#);
    let flushed = command(&lab, r#"{"cmd": "flush"}"#);
    let run5 = all_to_all(&lab, Duration::ZERO);
    let c = published_counters(&lab.topo.middle().name, STAGE);
    eprintln!(
        "seed 000 live, {N} hosts, {pairs} pings per run: icmp lost {}, fresh {} {:?}, \
         re-run {}, spaced 100 ms after timeout {}, after timeout {} {:?}, after flush {}; \
         counters {c}",
        icmp.len(),
        run1.len(),
        run1,
        run2.len(),
        run3.len(),
        run4.len(),
        run4,
        run5.len()
    );
    eprintln!(
        "status before the flush: {status}; flush: {flushed}; after it: {} lost",
        run5.len()
    );
    assert_eq!(status["entries"], (pairs / 2) as u64, "{status}");
    let flows = status["flows"].as_array().unwrap();
    assert_eq!(flows.len(), pairs / 2, "{status}");
    assert!(
        flows.iter().all(
            |f| f["state"] == "replied" && f["flow"].as_str().unwrap().starts_with("udp 10.9.")
        ),
        "{status}"
    );
    assert_eq!(flushed["flushed"], (pairs / 2) as u64, "{flushed}");
    assert!(icmp.is_empty(), "ICMP pings lost: {icmp:?}");
    // Fresh: exactly one ping of every pair is lost (the later of the two racing).
    for run in [&run1, &run4, &run5] {
        assert_eq!(run.len(), pairs / 2, "{run:?}");
        for i in 0..N {
            for j in i + 1..N {
                assert!(
                    run.contains(&(i, j)) != run.contains(&(j, i)),
                    "pair {i}-{j}: exactly one direction lost: {run:?}"
                );
            }
        }
    }
    assert!(run2.is_empty(), "immediate re-run lost {run2:?}");
    assert!(run3.is_empty(), "spaced run lost {run3:?}");
    let n = |k: &str| {
        c[k].as_u64()
            .unwrap_or_else(|| panic!("no counter {k} in {c}"))
    };
    assert_eq!(
        n("insert_failed"),
        (run1.len() + run4.len() + run5.len()) as u64
    );
    assert_eq!(n("drop"), n("insert_failed"));
    // Four fresh tables of 6 flows each (the fresh, spaced, after-timeout and flushed runs).
    assert_eq!(n("insert"), 4 * pairs as u64 / 2);
    assert!(n("expired") >= pairs as u64, "{c}");
    assert!(
        n("ignore") >= 2 * pairs as u64,
        "ICMP passes untracked: {c}"
    );
    assert!(
        lab.bridge.count("panicked") == 0,
        "{:?}",
        lab.bridge.lines()
    );
}

/// Seed 000 offline: a capture of three all-to-all rounds (every ping of the 4 hosts,
/// both directions of each pair within 10 µs; no pongs, a capture cannot answer)
/// replayed through conntrack-race with a command log that flushes the table between
/// rounds 2 and 3. Two replays write byte-identical files; round 1 loses 6 of 12, the
/// re-run none, and the round after the logged flush 6 again (none without the log).
#[test]
fn conntrack_race_replay_with_a_flush_in_the_command_log_is_byte_identical() {
    use pcap_file::pcap::PcapReader;
    use synthnet_testkit::apps::{udp_frame, UdpEnds};
    const MS: u64 = 1_000_000;
    let dir = TempDir::new("ctreplay");
    let t0 = 1_700_000_000_000_000_000u64;
    let mut frames = Vec::new();
    for (round, at) in [0, 500 * MS, 1500 * MS].into_iter().enumerate() {
        let mut k = 0;
        for i in 0..N as u8 {
            for j in 0..N as u8 {
                if i != j {
                    let mut f = udp_frame(
                        60,
                        &UdpEnds {
                            src_mac: [2, 0, 0, 0, 0, i],
                            dst_mac: [2, 0, 0, 0, 1, 0],
                            src: [10, 9, i + 1, 2],
                            dst: [10, 9, j + 1, 2],
                            sport: PORT,
                            dport: PORT,
                        },
                    );
                    f[42] = round as u8;
                    frames.push((t0 + at + k * 10_000, f));
                    k += 1;
                }
            }
        }
    }
    let input = dir.join("in.pcap");
    write_pcap(&input, &frames);
    let spec = dir.join("spec.json");
    std::fs::write(
        &spec,
        r#"{"ingress": [{"plugin": "conntrack-race", "name": "ct", "config": {}}], "egress": []}"#,
    )
    .unwrap();
    let log = dir.join("commands.jsonl");
    std::fs::write(
        &log,
        r#"{"at_ns": 1000000000, "stage": "ingress/default/ct", "command": {"cmd": "flush"}}"#,
    )
    .unwrap();
    let replay = |out: &str, commands: bool| -> Vec<u8> {
        let out = dir.join(out);
        replay_ingress(&spec, &input, &out, commands.then_some(&*log), None);
        std::fs::read(&out).unwrap()
    };
    let per_round = |bytes: &[u8]| -> [usize; 3] {
        let mut r = PcapReader::new(bytes).unwrap();
        let mut n = [0; 3];
        while let Some(p) = r.next_packet() {
            n[p.unwrap().data[42] as usize] += 1;
        }
        n
    };
    let (a, b, plain) = (
        replay("a.pcap", true),
        replay("b.pcap", true),
        replay("p.pcap", false),
    );
    assert_eq!(a, b, "two replays with the same command log differ");
    let pairs = N * (N - 1);
    assert_eq!(per_round(&a), [pairs / 2, pairs, pairs / 2]);
    assert_eq!(per_round(&plain), [pairs / 2, pairs, pairs]);
}
