//! `synthnet bench`: the in-memory engine benchmark. No sockets: a [`Source`] feeds a
//! chain on a virtual clock and a [`Sink`] frees what leaves, so what is measured is the
//! engine and the plugins alone, on one core, in wall-clock time.
//!
//! The virtual clock advances by one batch's worth of offered load per breath (1 Mpps
//! offered in virtual time), so delay lines hold a steady number of packets, as they
//! would live. The QoS chain is synthetic-network's order — rate, loss, latency, jitter —
//! with settings that make every stage work: 1% loss, 10 ms delay, up to 2 ms jitter on
//! half the packets, and a rate high enough never to queue.
//!
//! The native cases (the same plugin source compiled into the host: the wasm/native
//! ratio) need a binary built with `--features native`; without it they are skipped,
//! and the table says so.

use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use synthnet_core::delay::HoldShare;
use synthnet_core::{AppId, Engine, PacketPool};
use synthnet_runtime::{registry, Factory, PluginApp, PluginError, WasmFactory, WasmRuntime};
use synthnet_runtime::{DEFAULT_HOLD_LIMIT, DEFAULT_MEMORY_LIMIT};
use synthnet_testkit::apps::{Sink, Source};

/// The four QoS plugins with the benchmark's settings.
pub const QOS_CHAIN: [(&str, &str); 4] = [
    (
        "rate",
        r#"{"rate_bps": 100000000000, "burst_bytes": 65536}"#,
    ),
    ("loss", r#"{"loss_ratio": 0.01}"#),
    ("latency", r#"{"delay_ms": 10}"#),
    ("jitter", r#"{"jitter_ms": 2, "strength": 0.5}"#),
];

/// Every built-in plugin alone, in each of its models (`synthnet bench --plugins`):
/// (case, plugin, config). The settings make each model do its work at the offered
/// load (1 Mpps virtual): delays of 10 ± 2 ms, 1% loss, duplication and corruption,
/// shapers and links that are overloaded (400 Mbit/s, a trace of 10 opportunities per
/// ms), so their queues and AQMs decide. Packets are UDP over IPv4, not ECN-capable: a
/// `loss-ecn` event drops, after reading the headers.
pub const PLUGIN_CASES: &[(&str, &str, &str)] = &[
    (
        "delay-uniform",
        "delay",
        r#"{"delay_ms": 10, "jitter_ms": 2}"#,
    ),
    (
        "delay-normal",
        "delay",
        r#"{"delay_ms": 10, "jitter_ms": 2, "distribution": "normal"}"#,
    ),
    (
        "delay-pareto",
        "delay",
        r#"{"delay_ms": 10, "jitter_ms": 2, "distribution": "pareto"}"#,
    ),
    (
        "delay-paretonormal",
        "delay",
        r#"{"delay_ms": 10, "jitter_ms": 2, "distribution": "paretonormal"}"#,
    ),
    (
        "delay-table",
        "delay",
        r#"{"delay_ms": 10, "jitter_ms": 2, "distribution": "table", "table_samples": [1, 2, 2, 3, 3, 3, 4, 4, 5, 8, 13]}"#,
    ),
    (
        "delay-netemcorr",
        "delay",
        r#"{"delay_ms": 10, "jitter_ms": 2, "correlation_ratio": 0.25}"#,
    ),
    (
        "delay-ar1",
        "delay",
        r#"{"delay_ms": 10, "jitter_ms": 2, "distribution": "normal", "correlation_ratio": 0.25, "correlation": "ar1"}"#,
    ),
    (
        "delay-keeporder",
        "delay",
        r#"{"delay_ms": 10, "jitter_ms": 2, "keep_order": true}"#,
    ),
    (
        "delay-reorder",
        "delay",
        r#"{"delay_ms": 10, "reorder_ratio": 0.25, "reorder_gap_packets": 5}"#,
    ),
    ("loss-random", "loss", r#"{"loss_ratio": 0.01}"#),
    (
        "loss-correlated",
        "loss",
        r#"{"loss_ratio": 0.01, "correlation_ratio": 0.25}"#,
    ),
    (
        "loss-gemodel",
        "loss",
        r#"{"model": "gilbert_elliott", "p_ratio": 0.01, "r_ratio": 0.1, "bad_loss_ratio": 0.7, "good_loss_ratio": 0.001}"#,
    ),
    (
        "loss-4state",
        "loss",
        r#"{"model": "four_state", "p13_ratio": 0.01, "p31_ratio": 0.1, "p32_ratio": 0.7, "p23_ratio": 0.001}"#,
    ),
    ("loss-ecn", "loss", r#"{"loss_ratio": 0.01, "ecn": true}"#),
    ("duplicate", "duplicate", r#"{"duplicate_ratio": 0.01}"#),
    ("corrupt", "corrupt", r#"{"ratio": 0.01}"#),
    (
        "rate-droptail",
        "rate",
        r#"{"rate_bps": 400000000, "queue_bytes": 1000000}"#,
    ),
    (
        "rate-droptail-pk",
        "rate",
        r#"{"rate_bps": 400000000, "queue_bytes": 1000000, "queue_packets": 1000}"#,
    ),
    (
        "rate-codel",
        "rate",
        r#"{"rate_bps": 400000000, "queue_bytes": 1000000, "queue": "codel"}"#,
    ),
    (
        "rate-pie",
        "rate",
        r#"{"rate_bps": 400000000, "queue_bytes": 1000000, "queue": "pie"}"#,
    ),
    (
        "rate-drophead",
        "rate",
        r#"{"rate_bps": 400000000, "queue_bytes": 1000000, "queue": "drop_head"}"#,
    ),
    (
        "rate-infinite",
        "rate",
        r#"{"rate_bps": 400000000, "queue_bytes": 1000000, "queue": "infinite"}"#,
    ),
    (
        "rate-atm",
        "rate",
        r#"{"rate_bps": 400000000, "overhead_bytes": 8, "cell_bytes": 48, "cell_overhead_bytes": 5}"#,
    ),
    (
        "trace",
        "trace",
        r#"{"trace_ms": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], "queue": "drop_tail", "queue_packets": 1000}"#,
    ),
    (
        "trace-codel",
        "trace",
        r#"{"trace_ms": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], "queue": "codel", "queue_packets": 1000}"#,
    ),
    (
        "slot",
        "slot",
        r#"{"min_delay_ms": 0.8, "max_delay_ms": 10, "packets": 42, "bytes": 65536}"#,
    ),
    (
        "slot-pareto",
        "slot",
        r#"{"distribution": "pareto", "delay_ms": 1, "jitter_ms": 2, "packets": 42}"#,
    ),
    (
        "outage-onoff",
        "outage",
        r#"{"mode": "onoff", "mean_on_ms": 100, "mean_off_ms": 10}"#,
    ),
    (
        "outage-intermit",
        "outage",
        r#"{"mode": "intermittent", "on_ms": 100, "off_ms": 10}"#,
    ),
    (
        "outage-hold",
        "outage",
        r#"{"mode": "intermittent", "on_ms": 100, "off_ms": 10, "hold": true}"#,
    ),
    (
        "outage-blackout",
        "outage",
        r#"{"mode": "blackout", "blackouts": [{"at_ms": 100, "for_ms": 50}]}"#,
    ),
];

/// Offered load in virtual time: one packet per µs.
const VIRTUAL_INTERVAL_NS: u64 = 1_000;
const BATCH: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchRuntime {
    None,
    Wasm,
    Native,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub case: String,
    pub runtime: BenchRuntime,
    pub plugins: Vec<String>,
    pub packet_size: usize,
    /// Packets into the chain per wall-clock second, millions.
    pub mpps: f64,
    /// Packets out of the chain per wall-clock second, millions.
    pub delivered_mpps: f64,
    pub ns_per_packet: f64,
    pub packets: u64,
    pub seconds: f64,
}

/// Run one case for about `duration` of wall time.
pub fn run_case(
    case: &str,
    runtime: BenchRuntime,
    chain: &[(&str, &str)],
    packet_size: usize,
    duration: Duration,
    wasm: Option<&Arc<WasmRuntime>>,
) -> Result<BenchResult, PluginError> {
    let mut pool = PacketPool::new(1 << 16, 2048);
    let mut source = Source::new(packet_size, VIRTUAL_INTERVAL_NS, 0, u64::MAX, BATCH);
    // Fill every buffer with the frame once, as a NIC's DMA would: the source then
    // touches no packet memory and what is measured is the forwarding path.
    for id in 0..pool.capacity() as u32 {
        let t = source.template();
        pool.buf_mut(id)[..t.len()].copy_from_slice(t);
    }
    source.write = false;
    let mut engine = Engine::new(pool);
    let src = engine.add(Box::new(source));
    let mut ids = vec![src];
    let shares = vec![HoldShare::new(usize::MAX), HoldShare::new(usize::MAX)];
    for (i, (name, cfg)) in chain.iter().enumerate() {
        let factory: Arc<dyn Factory> = match runtime {
            BenchRuntime::Native => native(name, cfg.as_bytes())
                .ok_or_else(|| PluginError::new(*name, "no native build"))?,
            _ => {
                let rt = wasm.ok_or_else(|| PluginError::new(*name, "no wasm runtime"))?;
                let bytes = registry::wasm(name)
                    .ok_or_else(|| PluginError::new(*name, "not a built-in plugin"))?;
                Arc::new(WasmFactory::new(
                    rt.load(name, bytes)?,
                    cfg.as_bytes(),
                    DEFAULT_MEMORY_LIMIT,
                ))
            }
        };
        let mut app =
            PluginApp::instantiate(*name, factory, 0x5eed + i as u64, DEFAULT_HOLD_LIMIT)?;
        // As live: held packets count against the chain's and the direction's shares.
        app.set_shares(shares.clone());
        ids.push(engine.add(Box::new(app)));
    }
    let sink = engine.add(Box::new(Sink::new(false)));
    ids.push(sink);
    engine.chain(&ids);

    let breath_ns = BATCH as u64 * VIRTUAL_INTERVAL_NS;
    let mut now = 0u64;
    // Warm up until delay lines are in steady state (the chain's delays are ≤ 12 ms
    // virtual) and caches are hot.
    while now < 50_000_000 {
        now += breath_ns;
        engine.breathe(now);
    }
    let sent0 = sent(&engine, src);
    let got0 = received(&engine, sink);
    let t0 = Instant::now();
    let mut elapsed;
    loop {
        for _ in 0..64 {
            now += breath_ns;
            engine.breathe(now);
        }
        elapsed = t0.elapsed();
        if elapsed >= duration {
            break;
        }
    }
    let packets = sent(&engine, src) - sent0;
    let delivered = received(&engine, sink) - got0;
    let secs = elapsed.as_secs_f64();
    Ok(BenchResult {
        case: case.to_string(),
        runtime,
        plugins: chain.iter().map(|(n, _)| n.to_string()).collect(),
        packet_size,
        mpps: packets as f64 / secs / 1e6,
        delivered_mpps: delivered as f64 / secs / 1e6,
        ns_per_packet: secs * 1e9 / packets.max(1) as f64,
        packets,
        seconds: secs,
    })
}

fn sent(engine: &Engine, src: AppId) -> u64 {
    engine.app(src).map_or(0, |a| a.counters().rx_packets)
}

fn received(engine: &Engine, sink: AppId) -> u64 {
    engine.app(sink).map_or(0, |a| a.counters().rx_packets)
}

/// A native factory for built-in `name`, when this binary has the native builds.
fn native(name: &str, config: &[u8]) -> Option<Arc<dyn Factory>> {
    #[cfg(feature = "native")]
    return synthnet_native::factory(name, config);
    #[cfg(not(feature = "native"))]
    {
        let _ = (name, config);
        None
    }
}

/// Whether this binary can time the native cases.
pub const HAS_NATIVE: bool = cfg!(feature = "native");

/// Every case: passthrough, the QoS chain in wasm and native, each at 64 and 1500 bytes,
/// interleaved so drift on a shared machine hits all cases alike. A case is labelled
/// `case/runtime/size`, e.g. `qos-chain/wasm/64`.
/// Cases whose name contains `filter` (all when empty).
/// A case: name, runtime, chain of (plugin, config).
type Case<'a> = (&'a str, BenchRuntime, &'a [(&'a str, &'a str)]);

/// With a non-empty `custom` chain (built-in names), only that chain is timed. All cases
/// run `rounds` times, interleaved, and each reports its best round: on a shared machine
/// the neighbours only ever make a run slower, so the best is the least disturbed.
///
/// With `plugins`, the cases are [`PLUGIN_CASES`] instead: each built-in alone.
pub fn run_all(
    duration: Duration,
    rounds: usize,
    filter: &str,
    custom: &[String],
    plugins: bool,
    mut each: impl FnMut(&BenchResult),
) -> Result<Vec<BenchResult>, PluginError> {
    let rt = WasmRuntime::new()?;
    let mut out = Vec::new();
    let custom: Vec<(&str, &str)> = custom
        .iter()
        .map(|n| {
            QOS_CHAIN
                .iter()
                .find(|(q, _)| q == n)
                .copied()
                .ok_or_else(|| {
                    PluginError::new(n.as_str(), "not one of rate, loss, latency, jitter")
                })
        })
        .collect::<Result<_, _>>()?;
    let singles: Vec<[(&str, &str); 1]> = PLUGIN_CASES.iter().map(|&(_, p, c)| [(p, c)]).collect();
    let cases: Vec<Case> = if plugins {
        PLUGIN_CASES
            .iter()
            .zip(&singles)
            .flat_map(|(&(case, _, _), chain)| {
                [
                    (case, BenchRuntime::Wasm, &chain[..]),
                    (case, BenchRuntime::Native, &chain[..]),
                ]
            })
            .collect()
    } else if custom.is_empty() {
        vec![
            ("passthrough", BenchRuntime::None, &[][..]),
            ("qos-chain", BenchRuntime::Wasm, &QOS_CHAIN[..]),
            ("qos-chain", BenchRuntime::Native, &QOS_CHAIN[..]),
            ("loss-only", BenchRuntime::Wasm, &QOS_CHAIN[1..2]),
            ("loss-only", BenchRuntime::Native, &QOS_CHAIN[1..2]),
        ]
    } else {
        vec![
            ("custom", BenchRuntime::Wasm, &custom[..]),
            ("custom", BenchRuntime::Native, &custom[..]),
        ]
    };
    let mut best: Vec<BenchResult> = Vec::new();
    for round in 0..rounds.max(1) {
        let mut k = 0;
        for size in [64usize, 1500] {
            for &(case, runtime, chain) in &cases {
                let label = format!("{case}/{runtime:?}/{size}").to_lowercase();
                if !label.contains(&filter.to_lowercase())
                    || (runtime == BenchRuntime::Native && !HAS_NATIVE)
                {
                    continue;
                }
                let r = run_case(case, runtime, chain, size, duration, Some(&rt))?;
                if round == 0 {
                    best.push(r);
                } else if r.mpps > best[k].mpps {
                    best[k] = r;
                }
                k += 1;
            }
        }
    }
    for r in &best {
        each(r);
    }
    out.extend(best);
    Ok(out)
}

/// In-memory engine benchmark (no sockets, virtual clock, one core).
#[derive(clap::Args, Debug)]
#[command(
    after_long_help = "Examples:\n  synthnet bench\n  synthnet bench --only qos-chain --rounds 5\n  synthnet bench --chain latency,jitter --json"
)]
pub struct BenchArgs {
    /// One JSON object per line and case.
    #[arg(long)]
    pub json: bool,
    /// Wall-clock seconds per case and round.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Rounds over all cases, interleaved; each case reports its best round.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Only cases whose label (`case/runtime/size`, e.g. `qos-chain/wasm/64`)
    /// contains this.
    #[arg(long, default_value = "")]
    pub only: String,
    /// Instead of the standard cases, time this chain of built-in plugins (with the
    /// benchmark's settings), e.g. `latency,jitter`, in wasm and native.
    #[arg(long, value_delimiter = ',')]
    pub chain: Vec<String>,
    /// Instead of the standard cases, time every built-in plugin alone, in each of
    /// its models (distributions, loss models, queues), in wasm and native.
    #[arg(long)]
    pub plugins: bool,
}

impl BenchArgs {
    /// Run the cases, printing a table (or JSON lines) and the wasm/native ratios.
    pub fn run(self) -> anyhow::Result<std::process::ExitCode> {
        use anyhow::Context;
        // What it prints may go to `head`: a closed pipe ends it quietly.
        synthnet_io::process::die_on_broken_pipe();
        anyhow::ensure!(
            self.seconds > 0.0 && self.seconds.is_finite(),
            "--seconds must be a positive number"
        );
        if !HAS_NATIVE {
            eprintln!("(this binary has no native builds of the plugins: the native cases are skipped; build with `cargo build --release --features native` for the wasm/native ratio)");
        }
        let json = self.json;
        if !json {
            println!(
                "{:<18} {:<7} {:>6} {:>9} {:>9} {:>8}",
                "case", "runtime", "bytes", "Mpps", "out Mpps", "ns/pkt"
            );
        }
        let results = run_all(
            Duration::from_secs_f64(self.seconds),
            self.rounds,
            &self.only,
            &self.chain,
            self.plugins,
            |r| {
                if json {
                    println!("{}", serde_json::to_string(r).unwrap_or_default());
                } else {
                    println!(
                        "{:<18} {:<7} {:>6} {:>9.2} {:>9.2} {:>8.1}",
                        r.case,
                        format!("{:?}", r.runtime).to_lowercase(),
                        r.packet_size,
                        r.mpps,
                        r.delivered_mpps,
                        r.ns_per_packet
                    );
                }
            },
        )
        .context("benchmark failed")?;
        if !json {
            print_ratios(&results);
        }
        Ok(std::process::ExitCode::SUCCESS)
    }
}

/// One line per case and size timed in both runtimes: wasm's throughput over native's.
pub fn print_ratios(results: &[BenchResult]) {
    for w in results.iter().filter(|r| r.runtime == BenchRuntime::Wasm) {
        let native = results.iter().find(|n| {
            n.runtime == BenchRuntime::Native && n.case == w.case && n.packet_size == w.packet_size
        });
        if let Some(n) = native {
            println!(
                "{} {} B: wasm/native = {:.2}",
                w.case,
                w.packet_size,
                w.mpps / n.mpps
            );
        }
    }
}
