//! Native vs wasm: every built-in plugin, built from one source, must give exactly the
//! same verdicts (ids, ports, flags, times, bytes), counters and timers for the same seed
//! and input, batch after batch.

mod common;
use synthnet_runtime::Instance;
use synthnet_sdk::abi::{self, access, RawDesc, RawVerdict};
use synthnet_sdk::Rng;

/// What one call produced, with addresses made relative to the region.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    verdicts: Vec<(u32, u16, u16, u64, Vec<u8>)>,
    wake_at: u64,
    counters: Vec<(String, u64)>,
}

fn call(inst: &mut dyn Instance, packets: &[(Vec<u8>, u64)], now: u64) -> Answer {
    let lay = inst.layout().clone();
    let mem = inst.memory();
    for (i, (bytes, arrival)) in packets.iter().enumerate() {
        let (mut off, mut cap) = (0, 0);
        if lay.access != access::META {
            cap = (bytes.len() as u32).min(lay.snap_len);
            off = lay.slot_addr(i as u32);
            mem[off as usize..(off + cap) as usize].copy_from_slice(&bytes[..cap as usize]);
        }
        let d = RawDesc {
            id: i as u32,
            wire_len: bytes.len() as u32,
            data_off: off,
            cap_len: cap,
            in_port: 0,
            flags: 0,
            arrival_ns: *arrival,
        };
        d.write(mem, &lay).unwrap();
    }
    let nv = inst.process(packets.len() as u32, now).expect("no fault");
    let mem = inst.memory();
    let verdicts = (0..nv)
        .map(|j| {
            let v = RawVerdict::read(mem, &lay, j).unwrap();
            // A parked-queue control verdict's length is a count, not bytes.
            let bytes = if v.id == abi::verdict::ID_PARKED {
                v.data_len.to_le_bytes().to_vec()
            } else if v.data_len > 0 {
                v.bytes(mem, &lay).unwrap().to_vec()
            } else {
                vec![]
            };
            (v.id, v.port, v.flags, v.at_ns, bytes)
        })
        .collect();
    let wake_at = abi::le::u64_at(mem, lay.header as usize + abi::hdr::WAKE_AT_NS).unwrap();
    Answer {
        verdicts,
        wake_at,
        counters: abi::read_counters(mem, &lay),
    }
}

fn compare(name: &str, config: &str) {
    let native = common::native(name, config);
    let wasm = common::wasm(name, config);
    for seed in [1u64, 0xDEADBEEF] {
        let mut n = native.instantiate(seed).unwrap();
        let mut w = wasm.instantiate(seed).unwrap();
        let mut rng = Rng::new(seed ^ 77);
        let mut t = 0u64;
        let mut total = 0;
        for batch in 0..40 {
            let max = n.layout().max_batch;
            let count = if batch % 7 == 6 {
                0
            } else {
                1 + rng.below(max) as usize
            };
            let packets: Vec<(Vec<u8>, u64)> = (0..count)
                .map(|_| {
                    t += rng.below(200_000) as u64;
                    let len = 60 + rng.below(1440) as usize;
                    let mut f: Vec<u8> = (0..len).map(|_| rng.next_u32() as u8).collect();
                    // Half the frames IPv4 (with a random TOS, so ECN-capable or not),
                    // the rest random: header-reading plugins take both paths.
                    if rng.below(2) == 0 {
                        f[12..14].copy_from_slice(&[0x08, 0x00]);
                        f[14] = 0x45;
                    }
                    (f, t)
                })
                .collect();
            let a = call(n.as_mut(), &packets, t);
            let b = call(w.as_mut(), &packets, t);
            assert_eq!(
                a, b,
                "{name}: batch {batch} differs between native and wasm"
            );
            total += a.verdicts.len();
        }
        assert!(
            total > 1000,
            "{name}: the comparison saw real work ({total} verdicts)"
        );
        assert_eq!(
            n.snapshot().unwrap(),
            w.snapshot().unwrap(),
            "{name}: state differs"
        );
    }
}

/// Configurations each built-in is compared under. A built-in missing here fails
/// [`every_built_in_native_equals_wasm`] by name.
const CONFIGS: &[(&str, &[&str])] = &[
    ("latency", &[r#"{"delay_ms": 7.5}"#]),
    (
        "lb-hash",
        &[
            r#"{"targets": ["a", "b", "c"]}"#,
            r#"{"targets": ["a", "b", "c"], "algorithm": "resilient", "hash_dscp": true}"#,
        ],
    ),
    (
        "jitter",
        &[
            r#"{"jitter_ms": 3, "strength": 0.4}"#,
            r#"{"jitter_ms": 3, "strength": 0.4, "reorder": true}"#,
        ],
    ),
    (
        "rate",
        &[
            r#"{"rate_bps": 20000000, "burst_bytes": 4000, "queue_bytes": 30000}"#,
            r#"{"rate_bps": 100000, "overhead_bytes": 24}"#,
            r#"{"rate_bps": 1000000, "cell_bytes": 48, "cell_overhead_bytes": 5}"#,
            r#"{"rate_bps": 1000000, "queue": "codel", "queue_bytes": 100000}"#,
            r#"{"rate_bps": 1000000, "queue": "pie", "qdelay_ref_ms": 5, "max_burst_ms": 20}"#,
            r#"{"rate_bps": 1000000, "queue_packets": 10}"#,
            r#"{"rate_bps": 1000000, "queue": "drop_head", "queue_packets": 5}"#,
        ],
    ),
    (
        "loss",
        &[
            r#"{"loss_ratio": 0.2}"#,
            r#"{"loss_ratio": 0.2, "correlation_ratio": 0.5}"#,
            r#"{"model": "gilbert_elliott", "p_ratio": 0.05, "r_ratio": 0.3, "bad_loss_ratio": 0.9, "good_loss_ratio": 0.01}"#,
            r#"{"model": "four_state", "p13_ratio": 0.05, "p31_ratio": 0.4, "p32_ratio": 0.2, "p23_ratio": 0.1, "p14_ratio": 0.01}"#,
            r#"{"loss_ratio": 0.2, "ecn": true}"#,
        ],
    ),
    (
        "corrupt",
        &[
            r#"{"ratio": 0.3}"#,
            r#"{"ratio": 0.3, "correlation_ratio": 0.5, "skip_bytes": 0}"#,
        ],
    ),
    (
        "trace",
        &[
            r#"{"trace_ms": [1, 1, 2, 5, 5, 5, 9]}"#,
            r#"{"trace_ms": [1, 3, 4], "once": true, "queue": "drop_tail", "queue_packets": 20}"#,
            r#"{"trace_ms": [1, 2, 3, 4], "queue": "codel", "target_ms": 1, "interval_ms": 10}"#,
        ],
    ),
    (
        "slot",
        &[
            r#"{"min_delay_ms": 1, "max_delay_ms": 3, "packets": 4}"#,
            r#"{"distribution": "normal", "delay_ms": 2, "jitter_ms": 1, "bytes": 3000}"#,
        ],
    ),
    (
        "outage",
        &[
            r#"{"mode": "onoff", "mean_on_ms": 5, "mean_off_ms": 2}"#,
            r#"{"mode": "intermittent", "on_ms": 3, "off_ms": 1, "hold": true}"#,
            r#"{"mode": "blackout", "blackouts": [{"at_ms": 2, "for_ms": 3}]}"#,
        ],
    ),
    (
        "duplicate",
        &[
            r#"{"duplicate_ratio": 0.2}"#,
            r#"{"duplicate_ratio": 0.2, "correlation_ratio": 0.5}"#,
        ],
    ),
    (
        "delay",
        &[
            r#"{"delay_ms": 5, "jitter_ms": 2}"#,
            r#"{"delay_ms": 5, "jitter_ms": 2, "distribution": "normal", "correlation_ratio": 0.3}"#,
            r#"{"delay_ms": 5, "jitter_ms": 2, "distribution": "pareto", "keep_order": true}"#,
            r#"{"delay_ms": 5, "jitter_ms": 2, "distribution": "paretonormal", "correlation_ratio": 0.6, "correlation": "ar1"}"#,
            r#"{"delay_ms": 5, "jitter_ms": 1, "distribution": "table", "table_samples": [1, 2, 2, 3, 3, 3, 10]}"#,
            r#"{"delay_ms": 10, "reorder_ratio": 0.25, "reorder_correlation_ratio": 0.5, "reorder_gap_packets": 5}"#,
        ],
    ),
    (
        "conntrack-race",
        &[
            r#"{}"#,
            r#"{"protocols": ["udp", "tcp", "icmp"], "clash": "any", "clash_probability": 0.5, "max_entries": 16}"#,
        ],
    ),
    (
        "tx-stall",
        &[
            r#"{"after_bytes": 200000, "backlog_packets": 500, "watchdog_ms": 1}"#,
            r#"{"after_bytes": 100000, "on_reset": "drop"}"#,
        ],
    ),
];

/// Every built-in the registry has (generated from the plugins' own metadata), native
/// against wasm.
#[test]
fn every_built_in_native_equals_wasm() {
    for name in synthnet_runtime::registry::names() {
        let configs = CONFIGS
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("built-in {name:?} has no configuration in CONFIGS"))
            .1;
        for config in configs {
            compare(name, config);
        }
    }
}
