//! Seed 003 live (docs/scenarios/tx-stall.md): a transmit path that hangs after a byte
//! count, through `synthnet bridge` with `tx-stall` on the egress direction (B → A),
//! its trigger the report's 360 GB at a scale of 1/360,000 (1 MB).
//!
//! 1. B streams 3000 datagrams of 1042-byte frames to A while A streams 1000 to B: A
//!    gets exactly the first 960 (the one that reaches 1 MB still leaves), then
//!    nothing; B gets all of A's (the other direction keeps working).
//! 2. `GET /api/v1/stats`: the stage holds exactly 1000 packets (`backlog_packets`,
//!    the qdisc's `backlog 1000p`), dropped the other 1040, is `stalled`, and its
//!    watchdog counted `tx_timeout`s; `synthnet ctl command … status` says `stalled`.
//!    200 more datagrams: A gets none.
//! 3. A reload that changes the stage (`generation`, SIGHUP): the new instance sends
//!    the 1000 parked datagrams, in order, at its first packet, which follows them.
//! 4. Traffic until the next stall (the count starts again), then
//!    `POST /api/v1/stages/egress/default/stall/command {"cmd": "reset"}`: the parked
//!    datagrams reach A, in order, and new traffic flows again.
//!
//! Offline (no root): a capture through `synthnet replay` with a command log that
//! resets the stage, byte-identical across two runs.

mod common;

use common::bridge::pinned_topology;
use common::bridge::{ctl, BridgeProc};
use common::files::TempDir;
use common::http::{published_counters, stage_command};
use common::replay::{replay_ingress, write_pcap};
use nix::sys::socket::{setsockopt, sockopt};
use serde_json::Value;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use synthnet_testkit::netns::{A_V4, B_V4};
use synthnet_testkit::traffic::in_ns;

/// 1000 bytes of payload: 1042-byte frames.
const PAYLOAD: usize = 1000;
const FRAME: u64 = 1042;
const TRIGGER_BYTES: u64 = 1_000_000;

/// A receiver in `ns` on `addr`, recording the sequence numbers until stopped.
struct Receiver {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<Vec<u64>>>,
}

impl Receiver {
    fn start(ns: &str, addr: SocketAddr) -> Receiver {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = in_ns(ns, move || {
            let sock = UdpSocket::bind(addr)?;
            // A flushed backlog arrives as one burst of 1 MB.
            setsockopt(&sock, sockopt::RcvBufForce, &(16 << 20))?;
            sock.set_read_timeout(Some(Duration::from_millis(10)))?;
            ready_tx.send(()).ok();
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::SeqCst) {
                if let Ok(n) = sock.recv(&mut buf) {
                    if n >= 8 {
                        got.push(u64::from_be_bytes(buf[..8].try_into().unwrap()));
                    }
                }
            }
            Ok(got)
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("receiver started");
        Receiver { stop, thread }
    }

    fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("receiver").expect("receiver")
    }
}

/// Send datagrams `seqs` from `ns` to `dst` at `pps`.
fn send(ns: &str, dst: SocketAddr, seqs: std::ops::Range<u64>, pps: u64) {
    in_ns(ns, move || {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        let start = Instant::now();
        let mut payload = vec![0u8; PAYLOAD];
        for (k, seq) in seqs.enumerate() {
            let due = start + Duration::from_nanos(k as u64 * 1_000_000_000 / pps);
            while Instant::now() < due {
                std::thread::sleep(Duration::from_micros(50));
            }
            payload[..8].copy_from_slice(&seq.to_be_bytes());
            sock.send_to(&payload, dst)?;
        }
        Ok(())
    })
    .join()
    .expect("sender")
    .expect("sender");
}

/// The stall stage's counters, once published.
fn stage_counters(ns: &str) -> Value {
    published_counters(ns, "egress/default/stall")
}

/// Root: namespaces, veths and `synthnet bridge`.
#[test]
fn root_tx_stall_stops_one_direction_until_reset_seed_003() {
    let topo = pinned_topology("txs");
    // No IPv6 chatter (router solicitations, MLD) to count toward the trigger.
    for ns in [&topo.a, &topo.b] {
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
        ns.sysctl("net.ipv6.conf.eth0.disable_ipv6", "1").unwrap();
    }
    let dir = TempDir::new("txs");
    let spec = dir.join("spec.json");
    let spec_of = |generation: u32| {
        format!(
            r#"{{"ingress": [],
                "egress": [{{"plugin": "tx-stall", "name": "stall", "config": {{
                    "after_bytes": 360000000000, "byte_scale": 360000,
                    "backlog_packets": 1000, "watchdog_ms": 500,
                    "generation": {generation}}}}}]}}"#
        )
    };
    std::fs::write(&spec, spec_of(0)).unwrap();
    let bridge = BridgeProc::start(&topo, &spec, &["--stats", "0"]);
    let mid = topo.middle().name.clone();
    let (a, b) = (topo.a.name.clone(), topo.b.name.clone());
    let to_a: SocketAddr = format!("{A_V4}:7100").parse().unwrap();
    let to_b: SocketAddr = format!("{B_V4}:7101").parse().unwrap();
    let settle = || std::thread::sleep(Duration::from_millis(300));

    // 1. Until the trigger, then nothing; the other direction flows.
    let at_a = Receiver::start(&a, to_a);
    let at_b = Receiver::start(&b, to_b);
    let other = {
        let a = a.clone();
        std::thread::spawn(move || send(&a, to_b, 0..1000, 5000))
    };
    send(&b, to_a, 0..3000, 10_000);
    other.join().unwrap();
    settle();
    let passed = TRIGGER_BYTES.div_ceil(FRAME);
    let got_b = at_b.finish();
    assert_eq!(got_b, (0..1000).collect::<Vec<_>>(), "A → B keeps flowing");

    // 2. The stage's counters; and 200 more: none leave.
    let c = stage_counters(&mid);
    let n = |k: &str| {
        c[k].as_u64()
            .unwrap_or_else(|| panic!("no counter {k} in {c}"))
    };
    eprintln!("seed 003 live, after 3000 datagrams of {FRAME} B: counters {c}");
    assert_eq!(n("sent_packets"), passed);
    assert_eq!(n("sent_bytes"), passed * FRAME);
    assert_eq!(n("backlog_packets"), 1000, "the qdisc's backlog 1000p");
    assert_eq!(n("backlog_bytes"), 1000 * FRAME);
    assert_eq!(n("dropped"), 3000 - passed - 1000);
    assert_eq!((n("stalled"), n("stalls")), (1, 1));
    assert!(n("tx_timeout") >= 2, "the watchdog fires every 500 ms: {c}");
    // The same through `synthnet ctl command` (the scenario page's command line).
    let o = ctl(
        topo.middle(),
        &["command", "egress/default/stall", r#"{"cmd": "status"}"#],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let st: Value = serde_json::from_slice(&o.stdout).expect("ctl prints the reply as JSON");
    assert_eq!(st["state"], "stalled", "{st}");
    assert_eq!(st["backlog_packets"], 1000, "{st}");
    assert_eq!(st["bytes_until_stall"], 0, "{st}");
    send(&b, to_a, 3000..3200, 10_000);
    settle();
    let c2 = stage_counters(&mid);
    assert_eq!(
        c2["sent_packets"], c["sent_packets"],
        "0 packets left: {c2}"
    );
    assert_eq!(c2["dropped"].as_u64(), Some(n("dropped") + 200));

    // 3. A reload that replaces the stage resets it: its first packet flushes.
    let applied = bridge.count(": applied (");
    std::fs::write(&spec, spec_of(1)).unwrap();
    bridge.signal(nix::sys::signal::Signal::SIGHUP);
    let t = Instant::now();
    while bridge.count(": applied (") == applied {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the reload was not applied: {:?}",
            bridge.lines()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    send(&b, to_a, 5000..5010, 10_000);
    settle();

    // 4. The count starts again: the next stall, then a reset through the HTTP API.
    send(&b, to_a, 6000..7500, 10_000);
    settle();
    let passed2 = passed - 10;
    let parked2 = 1500 - passed2;
    let before_reset = stage_counters(&mid);
    eprintln!("seed 003 live, stalled again after the reload: counters {before_reset}");
    assert_eq!(before_reset["backlog_packets"].as_u64(), Some(parked2));
    assert_eq!(before_reset["stalled"], 1);
    let r = stage_command(&mid, "egress/default/stall", r#"{"cmd": "reset"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let reply = r.json();
    eprintln!("seed 003 live, reset: {reply}");
    assert_eq!(reply["was"], "stalled", "{reply}");
    assert_eq!(reply["flushed_packets"].as_u64(), Some(parked2), "{reply}");
    settle();
    send(&b, to_a, 8000..8500, 10_000);
    settle();
    let got_a = at_a.finish();
    let want: Vec<u64> = (0..passed + 1000)
        .chain(5000..5010)
        .chain(6000..7500)
        .chain(8000..8500)
        .collect();
    eprintln!(
        "seed 003 live: A received {} datagrams: {passed} before the stall, 1000 flushed by \
         the reload, 10, {passed2} until the next stall, {parked2} flushed by the reset, 500",
        got_a.len()
    );
    assert_eq!(got_a.len(), want.len());
    assert_eq!(got_a, want, "A's view, in order");
    let c3 = stage_counters(&mid);
    assert_eq!(c3["backlog_packets"], 0, "{c3}");
    assert_eq!(c3["stalled"], 0, "{c3}");
    assert_eq!(bridge.count("panicked"), 0, "{:?}", bridge.lines());
}

/// Seed 003 offline: 4000 frames of 1042 bytes, one every 100 µs, replayed through
/// tx-stall (1 MB) with a command log that resets it at 250.05 ms. Two replays write
/// byte-identical files: the first 960 leave on time, the 1000 parked leave at exactly
/// 250.05 ms in their order, the 541 after them (to frame 2500) were dropped, and from
/// then on frames
/// leave again until the next megabyte (960 more) stalls it anew.
#[test]
fn tx_stall_replay_with_a_reset_in_the_command_log_is_byte_identical() {
    use pcap_file::pcap::PcapReader;
    const MS: u64 = 1_000_000;
    let dir = TempDir::new("txreplay");
    let t0 = 1_700_000_000_000_000_000u64;
    let input = dir.join("in.pcap");
    let frames: Vec<(u64, Vec<u8>)> = (0..4000u64)
        .map(|k| {
            let mut f = synthnet_testkit::apps::udp_template(FRAME as usize);
            f[42..50].copy_from_slice(&k.to_be_bytes());
            (t0 + k * 100_000, f)
        })
        .collect();
    write_pcap(&input, &frames);
    let spec = dir.join("spec.json");
    std::fs::write(
        &spec,
        r#"{"ingress": [{"plugin": "tx-stall", "name": "stall", "config": {
            "after_bytes": 1000000, "watchdog_ms": 0}}], "egress": []}"#,
    )
    .unwrap();
    let log = dir.join("commands.jsonl");
    std::fs::write(
        &log,
        r#"{"at_ns": 250050000, "stage": "ingress/default/stall", "command": {"cmd": "reset"}}"#,
    )
    .unwrap();
    let replay = |out: &str| -> Vec<u8> {
        let out = dir.join(out);
        replay_ingress(&spec, &input, &out, Some(&log), None);
        std::fs::read(&out).unwrap()
    };
    let (a, b) = (replay("a.pcap"), replay("b.pcap"));
    assert_eq!(a, b, "two replays with the same command log differ");
    let mut r = PcapReader::new(&a[..]).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        let seq = u64::from_be_bytes(p.data[42..50].try_into().unwrap());
        out.push((p.timestamp.as_nanos() as u64 - t0, seq));
    }
    let passed = TRIGGER_BYTES.div_ceil(FRAME);
    // Before the stall: on time.
    assert!(out[..passed as usize]
        .iter()
        .enumerate()
        .all(|(k, &(t, s))| s == k as u64 && t == k as u64 * 100_000));
    // The backlog, at the reset, in order.
    let flushed: Vec<u64> = out
        .iter()
        .filter(|(t, _)| *t == 250 * MS + 50_000)
        .map(|x| x.1)
        .collect();
    assert!(
        flushed == (passed..passed + 1000).collect::<Vec<_>>(),
        "flushed at the reset: {} frames from {:?}",
        flushed.len(),
        flushed.first()
    );
    // After the reset (between frames 2500 and 2501): the next megabyte, then stalled.
    let after: Vec<u64> = out.iter().map(|x| x.1).filter(|s| *s > 2500).collect();
    assert!(
        after == (2501..2501 + passed).collect::<Vec<_>>(),
        "after the reset: {} frames from {:?}",
        after.len(),
        after.first()
    );
    assert_eq!(out.len() as u64, passed + 1000 + passed);
}
