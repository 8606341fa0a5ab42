//! Offline replay on a virtual clock driven by a capture's timestamps.

mod common;
use common::replay::replay_ingress;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::{DataLink, TsResolution};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MS: u64 = 1_000_000;

fn workdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("synthnet-replay-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `n` UDP frames of `size` bytes, one every `gap_ns` from t0, each with its index.
fn frames(n: u64, size: usize, gap_ns: u64) -> Vec<(u64, Vec<u8>)> {
    let t0 = 1_700_000_000_000_000_000u64;
    (0..n)
        .map(|k| {
            let mut f = synthnet_testkit::apps::udp_template(size);
            f[42..50].copy_from_slice(&k.to_le_bytes());
            (t0 + k * gap_ns, f)
        })
        .collect()
}

fn write(path: &Path, frames: &[(u64, Vec<u8>)], res: TsResolution) {
    let f = std::fs::File::create(path).unwrap();
    let h = PcapHeader {
        datalink: DataLink::ETHERNET,
        ts_resolution: res,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(f, h).unwrap();
    for (ts, d) in frames {
        w.write_packet(&PcapPacket::new(
            Duration::from_nanos(*ts),
            d.len() as u32,
            d,
        ))
        .unwrap();
    }
}

fn read(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let mut r = PcapReader::new(std::fs::File::open(path).unwrap()).unwrap();
    assert_eq!(r.header().ts_resolution, TsResolution::NanoSecond);
    let mut out = vec![];
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        out.push((p.timestamp.as_nanos() as u64, p.data.into_owned()));
    }
    out
}

fn replay(dir: &Path, spec: &str, input: &Path, out: &str, seed: Option<u64>) -> (PathBuf, String) {
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, spec).unwrap();
    let out_path = dir.join(out);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_synthnet"));
    cmd.args(["replay", "--direction", "ingress", "--spec"])
        .arg(&spec_path)
        .arg("--in")
        .arg(input)
        .arg("--out")
        .arg(&out_path);
    if let Some(s) = seed {
        cmd.args(["--seed", &s.to_string()]);
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (out_path, String::from_utf8_lossy(&o.stdout).into_owned())
}

fn index(f: &[u8]) -> u64 {
    u64::from_le_bytes(f[42..50].try_into().unwrap())
}

#[test]
fn latency_exact_and_loss_within_three_sigma() {
    let dir = workdir("latloss");
    let input = frames(20_000, 100, 250_000);
    let pcap = dir.join("in.pcap");
    write(&pcap, &input, TsResolution::NanoSecond);
    let (out, summary) = replay(
        &dir,
        r#"{"ingress": {"latency": 20, "loss": 0.1}}"#,
        &pcap,
        "out.pcap",
        None,
    );
    let got = read(&out);
    for (ts, f) in &got {
        let k = index(f) as usize;
        assert_eq!(
            *ts,
            input[k].0 + 20 * MS,
            "packet {k} leaves exactly 20 ms after it arrived"
        );
        assert_eq!(f, &input[k].1, "bytes unchanged");
    }
    let lost = (input.len() - got.len()) as f64;
    let n = input.len() as f64;
    let sigma = (n * 0.1 * 0.9).sqrt();
    assert!((lost - n * 0.1).abs() < 3.0 * sigma, "lost {lost}");
    assert!(
        summary.contains("mean 20.000 ms, max 20.000 ms"),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("dropped: plugin {}", lost as u64)),
        "{summary}"
    );
}

#[test]
fn rate_limit_within_one_percent_while_backlogged() {
    let dir = workdir("rate");
    // 1250-byte frames every 0.5 ms: 20 Mbit/s offered into 10 Mbit/s for 2 s.
    let input = frames(4_000, 1250, 500_000);
    let pcap = dir.join("in.pcap");
    write(&pcap, &input, TsResolution::NanoSecond);
    let (out, _) = replay(
        &dir,
        r#"{"ingress": {"rate": 10000000}}"#,
        &pcap,
        "out.pcap",
        None,
    );
    let got = read(&out);
    // Backlogged from the first packets until the offered load stops (t0 + 2 s): over
    // that window the output is the rate.
    let t0 = input[0].0;
    let window: Vec<_> = got
        .iter()
        .filter(|(ts, _)| *ts >= t0 + 100 * MS && *ts < t0 + 1_900 * MS)
        .collect();
    let bits: u64 = window[1..].iter().map(|(_, f)| f.len() as u64 * 8).sum();
    let secs = (window.last().unwrap().0 - window[0].0) as f64 / 1e9;
    let rate = bits as f64 / secs;
    assert!((rate / 10e6 - 1.0).abs() < 0.01, "measured {rate} bit/s");
}

#[test]
fn same_seed_same_bytes_different_seed_different_drops() {
    let dir = workdir("seed");
    let input = frames(5_000, 80, 100_000);
    let pcap = dir.join("in.pcap");
    write(&pcap, &input, TsResolution::MicroSecond);
    let spec = r#"{"seed": 7, "ingress": [{"plugin": "loss", "config": {"loss_ratio": 0.2}}, {"plugin": "jitter", "config": {"jitter_ms": 3, "strength": 0.5}}]}"#;
    let (a, _) = replay(&dir, spec, &pcap, "a.pcap", None);
    let (b, _) = replay(&dir, spec, &pcap, "b.pcap", None);
    let (c, _) = replay(&dir, spec, &pcap, "c.pcap", Some(8));
    let (fa, fb, fc) = (
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        std::fs::read(&c).unwrap(),
    );
    assert_eq!(fa, fb, "same seed and input: byte-identical output");
    let kept = |p: &Path| {
        read(p)
            .iter()
            .map(|(_, f)| index(f))
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_ne!(kept(&a), kept(&c), "another seed drops other packets");
    assert_ne!(fa, fc);
}

#[test]
fn pcapng_with_its_timestamp_resolution_is_read() {
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::{
        InterfaceDescriptionBlock, InterfaceDescriptionOption,
    };
    use pcap_file::pcapng::PcapNgWriter;
    let dir = workdir("ng");
    let input = frames(100, 90, 1_000_000);
    let ng = dir.join("in.pcapng");
    let mut w = PcapNgWriter::new(std::fs::File::create(&ng).unwrap()).unwrap();
    // Nanosecond interface (if_tsresol = 9).
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    })
    .unwrap();
    for (ts, d) in &input {
        // pcap-file stores the Duration's nanoseconds as the raw timestamp units.
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_nanos(*ts),
            original_len: d.len() as u32,
            data: d.clone().into(),
            options: vec![],
        };
        w.write_pcapng_block(epb).unwrap();
    }
    drop(w);
    let (out, _) = replay(
        &dir,
        r#"{"ingress": {"latency": 1.5}}"#,
        &ng,
        "out.pcap",
        None,
    );
    let got = read(&out);
    assert_eq!(got.len(), 100);
    assert!(got
        .iter()
        .zip(&input)
        .all(|((t, f), (ti, fi))| *t == ti + 1_500_000 && f == fi));
}

#[test]
fn flows_split_a_capture() {
    let dir = workdir("flows");
    let mut input = frames(1000, 100, 1_000_000);
    // Every other packet from source port 53.
    for (k, (_, f)) in input.iter_mut().enumerate() {
        if k.is_multiple_of(2) {
            f[34..36].copy_from_slice(&53u16.to_be_bytes());
        }
    }
    let pcap = dir.join("in.pcap");
    write(&pcap, &input, TsResolution::NanoSecond);
    let spec = r#"{"default_link": {"ingress": {"latency": 5}},
                   "flows": [{"label": "dns", "flow": {"protocol": 17, "port_min": 53, "port_max": 53}, "link": {"ingress": {"latency": 50}}}]}"#;
    let (out, _) = replay(&dir, spec, &pcap, "out.pcap", None);
    for (ts, f) in read(&out) {
        let k = index(&f) as usize;
        let want = if k.is_multiple_of(2) { 50 } else { 5 };
        assert_eq!(ts - input[k].0, want * MS, "packet {k}");
    }
}

/// A capture cut mid-record keeps its complete frames (and says so); frames out of time
/// order are replayed in time order (and it says so); identical payloads are matched
/// to their own arrivals.
#[test]
fn truncated_and_unordered_captures_are_read_and_said() {
    let dir = workdir("messy");
    let mut fs = frames(50, 200, MS);
    // Every frame the same bytes: delays must still be matched one to one.
    for f in fs.iter_mut() {
        f.1[42..50].fill(0);
    }
    // The second half first (mergecap -a of two captures).
    fs.rotate_left(25);
    let input = dir.join("in.pcap");
    write(&input, &fs, TsResolution::NanoSecond);
    let whole = std::fs::read(&input).unwrap();
    std::fs::write(&input, &whole[..whole.len() - 100]).unwrap(); // cut the last record
    let spec = r#"{"ingress": [{"plugin": "latency", "config": {"delay_ms": 10}}], "egress": []}"#;
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, spec).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_synthnet"))
        .args(["replay", "--direction", "ingress", "--spec"])
        .arg(&spec_path)
        .arg("--in")
        .arg(&input)
        .arg("--out")
        .arg(dir.join("out.pcap"))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("read 49 complete frames"), "{stderr}");
    assert!(stderr.contains("out of time order"), "{stderr}");
    assert!(stdout.contains("packets in: 49, out: 49"), "{stdout}");
    assert!(stdout.contains("mean 10.000 ms, max 10.000 ms"), "{stdout}");
    let out = read(&dir.join("out.pcap"));
    assert!(out.windows(2).all(|w| w[0].0 <= w[1].0));
}

/// A plugin that asks for a wake-up in the past (every call) does not stall a replay.
#[test]
fn a_timer_in_the_past_does_not_stall() {
    let dir = workdir("wake");
    let input = dir.join("in.pcap");
    write(&input, &frames(100, 100, MS), TsResolution::NanoSecond);
    let testbed = synthnet_runtime::registry::test_only_path("testbed").unwrap();
    let spec = format!(
        r#"{{"ingress": [{{"plugin": {testbed:?}, "config": {{"mode": "wake_past"}}}}], "egress": []}}"#
    );
    let (_, summary) = replay(&dir, &spec, &input, "out.pcap", None);
    assert!(summary.contains("packets in: 100, out: 100"), "{summary}");
}

/// The reliability report's F11 (snap length): a capture made with `-s 96` of 1500-byte
/// frames is replayed with the frames' original length, so the rate shaper charges 1500
/// bytes a frame, not 96; the output says 1500 too.
#[test]
fn a_snapped_capture_is_charged_its_original_length() {
    let dir = workdir("origlen");
    let input = dir.join("in.pcap");
    // 10 frames of 1500 bytes at the same instant, 96 of each captured.
    let full = frames(10, 1500, 0);
    let f = std::fs::File::create(&input).unwrap();
    let h = PcapHeader {
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::NanoSecond,
        snaplen: 96,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(f, h).unwrap();
    for (ts, d) in &full {
        w.write_packet(&PcapPacket {
            timestamp: Duration::from_nanos(*ts),
            orig_len: 1500,
            data: d[..96].into(),
        })
        .unwrap();
    }
    drop(w);
    // 10 Mbit/s: 1500 bytes take 1.2 ms, 96 bytes 76.8 µs. A bucket of one full frame.
    let spec = r#"{"ingress": [{"plugin": "rate", "config": {"rate_bps": 10000000, "burst_bytes": 1500, "queue_bytes": 100000}}]}"#;
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, spec).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_synthnet"))
        .args(["replay", "--direction", "ingress", "--spec"])
        .arg(&spec_path)
        .arg("--in")
        .arg(&input)
        .arg("--out")
        .arg(dir.join("out.pcap"))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("10 frames were cut short by the capture's snap length"),
        "{stderr}"
    );
    let out = read(&dir.join("out.pcap"));
    assert_eq!(out.len(), 10, "{stdout}");
    let t0 = full[0].0;
    for (k, (ts, f)) in out.iter().enumerate() {
        assert_eq!(f.len(), 1500, "frame {k} leaves with its original length");
        assert_eq!(f[..96], full[k].1[..96], "its captured bytes unchanged");
        assert!(
            f[96..].iter().all(|&b| b == 0),
            "the missing bytes are zeros"
        );
        // The first fits the bucket; each later one waits 1.2 ms more.
        assert_eq!(*ts - t0, k as u64 * 1_200_000, "frame {k}");
    }
    assert!(stdout.contains("max 10.800 ms"), "{stdout}");
}

/// The host's own guard for the F8 case, below the SDK (whose `wake_at` ignores the
/// past, so the testbed's `wake_past` never reaches the host): a hand-written module
/// that forwards every packet and writes `wake_at_ns` = 0, then 1, after every call.
/// A wake-up at or before `now` is no timer: the replay ends, every packet through.
#[test]
fn a_raw_wake_in_the_past_is_no_timer() {
    // Header at 1024: max_batch 4, max_verdicts 4, metadata only, one input and one
    // output, descriptors at 1120, verdicts at 1248, region 320 bytes.
    let words: [u32; 20] = [
        u32::from_le_bytes(*b"SNP1"),
        1, // major 1, minor 0
        0,
        4,
        4,
        0,
        0,
        0,
        1 | 1 << 16,
        1120,
        1248,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        320,
    ];
    let header: String = words
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .map(|b| format!("\\{b:02x}"))
        .collect();
    for wake in [0u64, 1] {
        let wat = format!(
            r#"(module
  (memory (export "memory") 1)
  (data (i32.const 1024) "{header}")
  (data (i32.const 2048) "\00\00\00\00")
  (func (export "synthnet_abi_v1") (result i32) i32.const 0)
  (func (export "synthnet_alloc") (param i32) (result i32) i32.const 4096)
  (func (export "synthnet_init") (param i32 i32 i64) (result i32)
    (i64.store (i32.const 1104) (i64.const -1))
    i32.const 1024)
  (func (export "synthnet_error") (result i32) i32.const 2048)
  (func (export "synthnet_process") (param $n i32) (param $now i64) (result i32)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        ;; verdict i: id i, port 0, flags 0, now, no bytes
        (i32.store (i32.add (i32.const 1248) (i32.mul (local.get $i) (i32.const 24))) (local.get $i))
        (i32.store (i32.add (i32.const 1252) (i32.mul (local.get $i) (i32.const 24))) (i32.const 0))
        (i64.store (i32.add (i32.const 1256) (i32.mul (local.get $i) (i32.const 24))) (i64.const 0))
        (i64.store (i32.add (i32.const 1264) (i32.mul (local.get $i) (i32.const 24))) (i64.const 0))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i64.store (i32.const 1104) (i64.const {wake}))
    local.get $n))"#
        );
        let dir = workdir(&format!("rawwake{wake}"));
        let plugin = dir.join("wake.wasm");
        std::fs::write(&plugin, wat::parse_str(&wat).unwrap()).unwrap();
        let input = dir.join("in.pcap");
        write(&input, &frames(100, 100, MS), TsResolution::NanoSecond);
        let spec = format!(r#"{{"ingress": [{{"plugin": {plugin:?}}}], "egress": []}}"#);
        let (_, summary) = replay(&dir, &spec, &input, "out.pcap", None);
        assert!(
            summary.contains("packets in: 100, out: 100"),
            "wake {wake}: {summary}"
        );
    }
}

/// A 3-step schedule changes the latency at exactly the configured virtual times: every
/// packet arriving before 1 s takes 10 ms, from 1 s 20 ms, from 2 s 30 ms, from 3 s
/// 40 ms (a packet every ms, so some arrive at the exact instants).
#[test]
fn a_schedule_changes_at_exact_virtual_times() {
    let dir = workdir("schedule");
    let input = frames(4_000, 100, MS);
    let pcap = dir.join("in.pcap");
    write(&pcap, &input, TsResolution::NanoSecond);
    let spec = r#"{"ingress": {"latency": 10}, "egress": {},
        "schedule": [{"at_s": 1, "spec": {"ingress": {"latency": 20}, "egress": {}}},
                     {"at_s": 2, "spec": {"ingress": {"latency": 30}, "egress": {}}},
                     {"at_s": 3, "spec": {"ingress": {"latency": 40}, "egress": {}}}]}"#;
    let (out, _) = replay(&dir, spec, &pcap, "out.pcap", None);
    let got = read(&out);
    assert_eq!(got.len(), input.len(), "nothing lost across the changes");
    let t0 = input[0].0;
    for (ts, f) in &got {
        let k = index(f) as usize;
        let arrived = input[k].0 - t0;
        let want = 10 + 10 * (arrived / 1_000_000_000);
        assert_eq!(
            *ts - input[k].0,
            want * MS,
            "packet {k} arrived at {arrived} ns"
        );
    }
    // A ramp: from 40 ms to 80 ms over 1 s, in 100 ms steps.
    let spec = r#"{"ingress": {"latency": 40}, "egress": {},
        "schedule": [{"at_s": 1, "ramp_s": 1, "spec": {"ingress": {"latency": 80}, "egress": {}}}]}"#;
    let (out, _) = replay(&dir, spec, &pcap, "ramp.pcap", None);
    for (ts, f) in read(&out) {
        let k = index(&f) as usize;
        let arrived_ms = (input[k].0 - t0) / MS;
        let steps = (arrived_ms.saturating_sub(1000) / 100).min(10);
        assert_eq!(
            (ts - input[k].0) / MS,
            40 + 4 * steps,
            "packet {k} at {arrived_ms} ms"
        );
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/repro")
        .join(name)
}

fn replay_files(spec: &Path, input: &Path, out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_synthnet"))
        .args(["replay", "--direction", "ingress", "--spec"])
        .arg(spec)
        .arg("--in")
        .arg(input)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

/// F2 of the review: the largest pool with a 64 KiB frame aborted replay (SIGABRT on a
/// 256 GB allocation). Replay now uses the bridge's two-class pool and runs it.
#[test]
fn the_largest_pool_and_a_64k_frame_replay() {
    let dir = workdir("f2");
    let out = dir.join("o.pcap");
    let o = replay_files(
        &fixture("02_pool_max.json"),
        &fixture("02_big_frame.pcap"),
        &out,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut r = PcapReader::new(std::fs::File::open(&out).unwrap()).unwrap();
    let len = r
        .next_packet()
        .expect("the big frame left")
        .unwrap()
        .data
        .len();
    assert!(len > 60_000, "{len}");
}

/// F3 of the review: a plugin injecting 16,384 packets a call grew replay without
/// bound (13 M packets, 1.65 GB). Now replay stops at its bound, says why, and writes
/// nothing.
#[test]
fn a_plugin_that_multiplies_packets_is_stopped_with_a_message() {
    let dir = workdir("f3");
    std::fs::copy(fixture("03_amplify.json"), dir.join("spec.json")).unwrap();
    let wasm = wat::parse_file(fixture("03_inject16k.wat")).unwrap();
    std::fs::write(dir.join("03_inject16k.wasm"), wasm).unwrap();
    let input = frames(100, 100, MS);
    let pcap = dir.join("in.pcap");
    write(&pcap, &input, TsResolution::NanoSecond);
    let out = dir.join("o.pcap");
    let o = replay_files(&dir.join("spec.json"), &pcap, &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("multiplies packets without bound"), "{err}");
    assert!(!out.exists(), "nothing is written");
}

/// F4 of the review (its second half): a departure past 2106 cannot be written to a pcap
/// file; replay says so, naming the packet, instead of failing obscurely.
#[test]
fn a_departure_past_2106_is_a_clear_error() {
    let dir = workdir("f4");
    // One frame a second before the end of 2106's u32 seconds, delayed by a day.
    let t = (u32::MAX as u64 - 1) * 1_000_000_000;
    let input = vec![(t, synthnet_testkit::apps::udp_template(100))];
    let pcap = dir.join("in.pcap");
    write(&pcap, &input, TsResolution::NanoSecond);
    std::fs::write(
        dir.join("spec.json"),
        r#"{"ingress": [{"plugin": "latency", "config": {"delay_ms": 86400000}}], "egress": []}"#,
    )
    .unwrap();
    let out = dir.join("o.pcap");
    let o = replay_files(&dir.join("spec.json"), &pcap, &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("packet 0") && err.contains("after 2106"),
        "{err}"
    );
}

/// `--log` and a `.pcapng` `--out`: one JSON line per event, naming the stage and the
/// reason, that accounts for every packet (each arrives once and ends departed or
/// dropped, drops as many as the summary counts, each delay ending at the departure
/// written); and in the pcapng each packet's comment tells its story.
#[test]
fn why_each_packet_in_a_log_and_in_pcapng_comments() {
    let dir = workdir("why");
    let input = dir.join("in.pcap");
    let n = 2000u64;
    write(&input, &frames(n, 200, MS / 2), TsResolution::NanoSecond);
    let spec = r#"{"seed": 5, "ingress": [
        {"plugin": "duplicate", "config": {"duplicate_ratio": 0.1}},
        {"plugin": "loss", "config": {"loss_ratio": 0.1}},
        {"netem": "delay 10ms 2ms"}], "egress": []}"#;
    std::fs::write(dir.join("spec.json"), spec).unwrap();
    let (out, log) = (dir.join("out.pcapng"), dir.join("why.jsonl"));
    let o = Command::new(env!("CARGO_BIN_EXE_synthnet"))
        .args(["replay", "--direction", "ingress", "--json", "--spec"])
        .arg(dir.join("spec.json"))
        .arg("--in")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--log")
        .arg(&log)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let count = |event: &str| lines.iter().filter(|l| l["event"] == event).count() as u64;
    assert_eq!(count("arrived"), n);
    assert_eq!(count("lost"), 0);
    assert_eq!(count("departed"), summary["packets_out"].as_u64().unwrap());
    let plugin_drops = summary["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d[0] == "plugin")
        .map_or(0, |d| d[1].as_u64().unwrap());
    assert_eq!(count("dropped"), plugin_drops);
    assert!(lines
        .iter()
        .filter(|l| l["event"] == "dropped")
        .all(|l| l["stage"] == "ingress/default/loss" && l["cause"] == "plugin"));
    assert_eq!(count("copied"), count("departed") + count("dropped") - n);
    // A delayed packet departs exactly when its delay said.
    let mut until = std::collections::HashMap::new();
    for l in &lines {
        let p = l["packet"].as_str().unwrap().to_string();
        match l["event"].as_str().unwrap() {
            "delayed" => {
                assert_eq!(l["stage"], "ingress/default/netem-delay");
                until.insert(p, l["until_ns"].as_u64().unwrap());
            }
            "departed" => assert_eq!(until.get(&p), l["t_ns"].as_u64().as_ref(), "{l}"),
            _ => {}
        }
    }
    // The pcapng: every packet with its comment, in departure order.
    let mut r = pcap_file::pcapng::PcapNgReader::new(std::fs::File::open(&out).unwrap()).unwrap();
    let mut comments = Vec::new();
    let mut last = 0;
    while let Some(b) = r.next_block() {
        if let pcap_file::pcapng::Block::EnhancedPacket(p) = b.unwrap() {
            let ts = p.timestamp.as_nanos() as u64;
            assert!(ts >= last);
            last = ts;
            for o in &p.options {
                if let pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption::Comment(
                    c,
                ) = o
                {
                    comments.push(c.to_string());
                }
            }
        }
    }
    assert_eq!(comments.len() as u64, count("departed"));
    assert!(comments
        .iter()
        .all(|c| c.starts_with("ingress/default/duplicate: ")
            && c.contains(
                "; ingress/default/loss: forwarded; ingress/default/netem-delay: delayed "
            )));
    assert_eq!(
        comments.iter().filter(|c| c.contains(": a copy")).count() as u64,
        count("copied")
            - lines
                .iter()
                .filter(
                    |l| l["event"] == "dropped" && l["packet"].as_str().unwrap().contains("copy")
                )
                .count() as u64
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `drop_head` on the host's real parking (link ABI 1.1): a burst of 10 frames into a
/// rate with room for 3 waiting keeps the one in service and the newest three, which
/// leave 1 ms apart; nothing stays parked, and the log names the pushed-out ones.
#[test]
fn drop_head_keeps_the_newest_of_a_burst() {
    let dir = workdir("drophead");
    let input = dir.join("in.pcap");
    let burst = frames(10, 1000, 0);
    let t0 = burst[0].0;
    write(&input, &burst, TsResolution::NanoSecond);
    let spec = r#"{"ingress": [{"plugin": "rate", "config": {"rate_bps": 8000000, "burst_bytes": 1, "queue_packets": 3, "queue": "drop_head"}}], "egress": []}"#;
    let (out, summary) = replay(&dir, spec, &input, "out.pcap", None);
    let got: Vec<(u64, u64)> = read(&out)
        .iter()
        .map(|(ts, f)| (index(f), ts - t0))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, MS - 1000),
            (7, 2 * MS - 1000),
            (8, 3 * MS - 1000),
            (9, 4 * MS - 1000)
        ],
        "{summary}"
    );
    assert!(summary.contains("queue_drops 6"), "{summary}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A replay with a command log hands each command to its stage at exactly its `at_ns`:
/// two runs write byte-identical files, and the commands change the output (the testbed
/// plugin parks the first 40 packets; the log releases 10 of them at 20 ms, injects a
/// packet and releases the rest at 50 ms, and the schedule drops nothing it should not).
#[test]
fn a_replay_with_a_command_log_is_byte_identical_and_the_commands_count() {
    let dir = workdir("commands");
    let testbed = synthnet_runtime::registry::test_only_path("testbed").unwrap();
    let spec = dir.join("spec.json");
    std::fs::write(
        &spec,
        format!(
            r#"{{"ingress": [{{"plugin": {testbed:?}, "name": "tb", "config": {{"park": 40, "commands": true}}}},
                            {{"plugin": "latency", "config": {{"delay_ms": 1}}}}], "egress": []}}"#
        ),
    )
    .unwrap();
    let input = frames(100, 100, MS);
    let pcap = dir.join("in.pcap");
    write(&pcap, &input, TsResolution::NanoSecond);
    let log = dir.join("commands.jsonl");
    std::fs::write(
        &log,
        [
            r#"{"at_ns": 20000000, "stage": "ingress/default/tb", "command": {"release": 10}}"#,
            r#"{"at_ns": 20000000, "stage": "ingress/default/tb", "command": {"inject": {"len": 77}}, "unix_ns": 1}"#,
            r#"{"at_ns": 30000000, "stage": "ingress/default/tb", "command": {"nonsense": 1}, "refused": "unknown command"}"#,
            // Sent by a schedule live: the spec's schedule sends it in a replay, not the log.
            r#"{"at_ns": 40000000, "stage": "ingress/default/tb", "command": {"drop": 0}, "source": "schedule"}"#,
            r#"{"at_ns": 50000000, "stage": "ingress/default/tb", "command": {"release": 0}}"#,
            // The other direction's stages are not in an ingress replay.
            r#"{"at_ns": 50000000, "stage": "egress/default/tb", "command": {"release": 0}}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let (a, b, plain) = (dir.join("a.pcap"), dir.join("b.pcap"), dir.join("p.pcap"));
    let summary = replay_ingress(&spec, &pcap, &a, Some(&log), None);
    replay_ingress(&spec, &pcap, &b, Some(&log), None);
    replay_ingress(&spec, &pcap, &plain, None, None);
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "two replays with the same command log differ"
    );
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&plain).unwrap());
    assert!(summary.contains("commands: 4 (1 refused)"), "{summary}");
    let out = read(&a);
    // Every packet leaves (the parked ones released), plus the injected one.
    assert_eq!(out.len(), 101, "{summary}");
    assert_eq!(
        read(&plain).len(),
        60,
        "without the log the parked ones stay"
    );
    let injected: Vec<&(u64, Vec<u8>)> = out.iter().filter(|(_, f)| f.len() == 77).collect();
    assert_eq!(injected.len(), 1);
    let t0 = input[0].0;
    assert_eq!(
        injected[0].0,
        t0 + 21 * MS,
        "injected at 20 ms, 1 ms latency"
    );
    // Released exactly at their command's time (+1 ms latency): 10 at 20 ms, 30 at 50.
    let released_at = |k: u64| {
        out.iter()
            .find(|(_, f)| f.len() == 100 && index(f) == k)
            .map(|(ts, _)| ts - t0)
            .unwrap()
    };
    assert_eq!(released_at(0), 21 * MS);
    assert_eq!(released_at(9), 21 * MS);
    assert_eq!(released_at(10), 51 * MS);
    assert_eq!(released_at(39), 51 * MS);
    assert_eq!(released_at(40), 41 * MS, "not parked: 1 ms latency");

    // A bad line is refused, naming its number.
    std::fs::write(
        &log,
        "{\"at_ns\": 1, \"stage\": \"ingress/default/tb\", \"command\": {}}\n\n{\"at_ns\": \"soon\"}\n",
    )
    .unwrap();
    let o = replay_files_commands(&spec, &pcap, &dir.join("x.pcap"), &log);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("line 3"), "{err}");
    // So is a command for a stage the plan does not have.
    std::fs::write(
        &log,
        "{\"at_ns\": 1, \"stage\": \"ingress/default/nope\", \"command\": {}}\n",
    )
    .unwrap();
    let o = replay_files_commands(&spec, &pcap, &dir.join("x.pcap"), &log);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("logged command 1") && err.contains("nope"),
        "{err}"
    );
}

fn replay_files_commands(
    spec: &Path,
    input: &Path,
    out: &Path,
    log: &Path,
) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_synthnet"))
        .args(["replay", "--direction", "ingress", "--spec"])
        .arg(spec)
        .arg("--in")
        .arg(input)
        .arg("--out")
        .arg(out)
        .arg("--commands")
        .arg(log)
        .output()
        .unwrap()
}

/// A schedule's commands reach their stage at their exact virtual times too (after the
/// entry's spec, when it has one).
#[test]
fn a_schedules_commands_run_at_exact_virtual_times() {
    let dir = workdir("schedcmd");
    let testbed = synthnet_runtime::registry::test_only_path("testbed").unwrap();
    let tb = |park: u64| {
        format!(
            r#"[{{"plugin": {testbed:?}, "name": "tb", "config": {{"park": {park}, "commands": true}}}}]"#
        )
    };
    let spec = dir.join("spec.json");
    std::fs::write(
        &spec,
        format!(
            r#"{{"ingress": {}, "egress": [],
                "schedule": [{{"at_s": 0.02, "command": {{"stage": "ingress/default/tb", "command": {{"release": 5}}}}}},
                             {{"at_s": 0.06, "spec": {{"ingress": {}, "egress": []}},
                               "command": {{"stage": "ingress/default/tb", "command": {{"release": 0}}}}}}]}}"#,
            tb(20),
            tb(21)
        ),
    )
    .unwrap();
    let input = frames(100, 100, MS);
    let pcap = dir.join("in.pcap");
    write(&pcap, &input, TsResolution::NanoSecond);
    let out = dir.join("o.pcap");
    let summary = replay_ingress(&spec, &pcap, &out, None, None);
    assert!(summary.contains("commands: 2 (0 refused)"), "{summary}");
    let got = read(&out);
    let t0 = input[0].0;
    let at = |k: u64| got.iter().find(|(_, f)| index(f) == k).map(|p| p.0 - t0);
    assert_eq!((at(0), at(4)), (Some(20 * MS), Some(20 * MS)));
    // The swap at 60 ms keeps the parked packets; the command after it releases them.
    assert_eq!((at(5), at(19)), (Some(60 * MS), Some(60 * MS)));
    assert_eq!(at(20), Some(20 * MS), "not parked");
    // The new instance parks the 21 arriving from 60 ms on (the step comes first).
    assert_eq!(at(59), Some(59 * MS));
    assert!((60..=80).all(|k| at(k).is_none()));
    assert_eq!(at(81), Some(81 * MS));
    assert_eq!(got.len(), 79, "{summary}");
}

/// Issue 24: captures are read and written as streams, so a capture larger than memory
/// replays in bounded memory. A 2 GB capture (1.4 M frames of 1500 bytes, written here
/// as a stream) through a latency stage leaves whole, every frame 10 ms later, and the
/// replay's peak resident memory (its VmHWM, read while it runs) stays under 200 MiB.
#[test]
fn a_2gb_capture_replays_in_bounded_memory() {
    let t0 = std::time::Instant::now();
    let dir = workdir("stream");
    // 4 GB of files: removed however the test ends.
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _remove = Remove(dir.clone());
    let spec = dir.join("spec.json");
    std::fs::write(
        &spec,
        r#"{"seed": 1, "ingress": [{"plugin": "latency", "config": {"delay_ms": 10}}], "egress": []}"#,
    )
    .unwrap();
    let input = dir.join("in.pcap");
    const N: u64 = 1_400_000;
    const GAP: u64 = 10_000; // 1500 bytes every 10 µs: 1.2 Gb/s, 1000 frames in flight
    {
        let f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        let h = PcapHeader {
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::NanoSecond,
            ..Default::default()
        };
        let mut w = PcapWriter::with_header(f, h).unwrap();
        let mut f = synthnet_testkit::apps::udp_template(1500);
        let t = 1_700_000_000_000_000_000u64;
        for k in 0..N {
            f[42..50].copy_from_slice(&k.to_le_bytes());
            w.write_packet(&PcapPacket::new(
                Duration::from_nanos(t + k * GAP),
                1500,
                &f,
            ))
            .unwrap();
        }
    }
    let in_len = std::fs::metadata(&input).unwrap().len();
    assert!(in_len > 2_000_000_000, "{in_len}");
    let out = dir.join("out.pcap");
    let mut child = Command::new(env!("CARGO_BIN_EXE_synthnet"))
        .args(["replay", "--direction", "ingress", "--json", "--spec"])
        .arg(&spec)
        .arg("--in")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Peak resident memory, read from /proc while the replay runs (its last reading is
    // the peak over the whole run, up to the last 20 ms).
    let status = format!("/proc/{}/status", child.id());
    let mut hwm_kib = 0u64;
    let exit = loop {
        if let Ok(s) = std::fs::read_to_string(&status) {
            if let Some(v) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            {
                hwm_kib = hwm_kib.max(v);
            }
        }
        if let Some(e) = child.try_wait().unwrap() {
            break e;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(exit.success(), "{stdout}");
    let s: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(s["packets_in"], N, "{s}");
    assert_eq!(s["packets_out"], N, "{s}");
    assert_eq!(s["matched"], N, "{s}");
    assert!(
        (s["mean_delay_ms"].as_f64().unwrap() - 10.0).abs() < 1e-6,
        "{s}"
    );
    // Same frames, same record sizes: the output is as long as the input.
    assert_eq!(std::fs::metadata(&out).unwrap().len(), in_len);
    eprintln!("peak RSS {} MiB", hwm_kib / 1024);
    assert!(hwm_kib > 0, "VmHWM was read");
    assert!(hwm_kib < 200 * 1024, "peak RSS {} MiB", hwm_kib / 1024);
    common::within_budget(t0, Duration::from_secs(90));
}

/// Issue 24: departures are tied to arrivals by identity, not by content. Two identical
/// frames 10 ms apart through netem's `delay 50ms reorder 100% gap 2`: the first waits
/// 50 ms, the second leaves at once, so it leaves first. Matched by content, the first
/// to leave would be tied to the first to arrive (delays 10 and 40 ms); by identity the
/// delays are 0 and 50 ms.
#[test]
fn identical_frames_delayed_differently_are_told_apart() {
    let dir = workdir("identity");
    let mut fs = frames(2, 200, 10 * MS);
    for f in fs.iter_mut() {
        f.1[42..50].fill(0);
    }
    assert_eq!(fs[0].1, fs[1].1);
    let input = dir.join("in.pcap");
    write(&input, &fs, TsResolution::NanoSecond);
    let spec = r#"{"ingress": [{"plugin": "delay", "config": {"delay_ms": 50, "reorder_ratio": 1.0, "reorder_gap_packets": 2}}], "egress": []}"#;
    let (_, summary) = replay(&dir, spec, &input, "out.pcap", None);
    assert!(summary.contains("packets in: 2, out: 2"), "{summary}");
    let out = read(&dir.join("out.pcap"));
    assert_eq!(
        out.iter().map(|(ts, _)| ts - fs[0].0).collect::<Vec<_>>(),
        [10 * MS, 50 * MS],
        "the second frame left first"
    );
    assert!(
        summary.contains("mean 25.000 ms, max 50.000 ms (over 2 packets"),
        "{summary}"
    );
}
