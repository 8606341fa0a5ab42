//! Offline replay: run a direction of a spec over a capture on a virtual clock driven by
//! the capture's timestamps, and write what leaves, stamped with its departure time.
//!
//! Reads pcap (micro- and nanosecond) and pcapng (any `if_tsresol`), Ethernet link type.
//! Writes nanosecond pcap. The engine only ever sees virtual time, so the same seed and
//! the same input give byte-identical output.

use crate::engine::{App, Counters, Ctx, DropCause, Engine};
use crate::network::{self, Loader};
use crate::packet::{Packet, PacketPool};
use crate::plugin::wasm::WasmRuntime;
use crate::spec::{Direction, Plan};
use anyhow::{bail, Context, Result};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, TsResolution};
use std::any::Any;
use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read};
use std::path::Path;
use std::time::Duration;

/// One captured frame: capture time (ns since the epoch) and bytes.
pub type Frame = (u64, Vec<u8>);

/// Read a pcap or pcapng file of Ethernet frames, in file order.
pub fn read_capture(path: &Path) -> Result<Vec<Frame>> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic)
        .with_context(|| format!("{}: too short to be a capture", path.display()))?;
    let f = std::fs::File::open(path)?;
    let frames = if magic == [0x0A, 0x0D, 0x0D, 0x0A] {
        read_pcapng(BufReader::new(f))
    } else {
        read_pcap(BufReader::new(f))
    };
    frames.with_context(|| format!("reading {}", path.display()))
}

fn read_pcap(r: impl Read) -> Result<Vec<Frame>> {
    let mut reader = PcapReader::new(r).context("not a pcap or pcapng file")?;
    let link = reader.header().datalink;
    if link != DataLink::ETHERNET {
        bail!("link type {link:?} is not Ethernet");
    }
    let mut out = Vec::new();
    while let Some(p) = reader.next_packet() {
        let p = p.context("corrupt packet record")?;
        out.push((p.timestamp.as_nanos() as u64, p.data.into_owned()));
    }
    Ok(out)
}

fn read_pcapng(r: impl Read) -> Result<Vec<Frame>> {
    let mut reader = PcapNgReader::new(r).context("not a pcapng file")?;
    // Per interface: link type and units per second of its timestamps.
    let mut ifaces: Vec<(DataLink, u64)> = Vec::new();
    let mut out = Vec::new();
    while let Some(b) = reader.next_block() {
        match b.context("corrupt pcapng block")? {
            Block::InterfaceDescription(idb) => {
                let mut per_sec = 1_000_000u64;
                for o in &idb.options {
                    if let pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption::IfTsResol(r) = o {
                        per_sec = if r & 0x80 == 0 { 10u64.saturating_pow((*r & 0x7F) as u32) } else { 1u64 << (*r & 0x7F).min(63) };
                    }
                }
                ifaces.push((idb.linktype, per_sec.max(1)));
            }
            Block::EnhancedPacket(epb) => {
                let Some(&(link, per_sec)) = ifaces.get(epb.interface_id as usize) else {
                    bail!("packet on undeclared interface {}", epb.interface_id);
                };
                if link != DataLink::ETHERNET {
                    bail!(
                        "interface {} has link type {link:?}, not Ethernet",
                        epb.interface_id
                    );
                }
                // pcap-file hands over the raw timestamp units as "nanoseconds".
                let units = epb.timestamp.as_nanos();
                let ns = units * 1_000_000_000 / per_sec as u128;
                out.push((ns as u64, epb.data.into_owned()));
            }
            Block::SectionHeader(_) => ifaces.clear(),
            _ => {}
        }
    }
    Ok(out)
}

/// Write frames as a nanosecond pcap.
pub fn write_pcap(path: &Path, frames: &[Frame]) -> Result<()> {
    let f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::NanoSecond,
        snaplen: 262_144,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(BufWriter::new(f), header)?;
    for (ts, data) in frames {
        w.write_packet(&PcapPacket::new(
            Duration::from_nanos(*ts),
            data.len() as u32,
            data,
        ))?;
    }
    Ok(())
}

/// Feeds captured frames into the engine at their capture times.
struct CaptureSource {
    frames: std::vec::IntoIter<Frame>,
    next: Option<Frame>,
    counters: Counters,
}

impl App for CaptureSource {
    fn breathe(&mut self, cx: &mut Ctx<'_>) {
        let mut budget = 256.min(cx.room(0));
        while budget > 0 {
            let Some((ts, _)) = &self.next else { break };
            if *ts > cx.now_ns {
                break;
            }
            let Some((ts, data)) = self.next.take() else {
                break;
            };
            self.next = self.frames.next();
            budget -= 1;
            self.counters.rx_packets += 1;
            self.counters.rx_bytes += data.len() as u64;
            match cx.pool.alloc_from(&data, ts) {
                Some(p) => cx.transmit(0, p, &mut self.counters),
                None => self.counters.drop(
                    if data.len() > cx.pool.max_len() {
                        DropCause::TooBig
                    } else {
                        DropCause::PoolEmpty
                    },
                    1,
                ),
            }
        }
    }
    fn next_deadline(&self) -> Option<u64> {
        self.next.as_ref().map(|(ts, _)| *ts)
    }
    fn counters(&self) -> &Counters {
        &self.counters
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Keeps every frame that leaves, with its departure time.
struct CaptureSink {
    out: Vec<Frame>,
    counters: Counters,
}

impl App for CaptureSink {
    fn breathe(&mut self, cx: &mut Ctx<'_>) {
        for port in 0..cx.n_inputs() {
            while let Some(p) = cx.receive(port) {
                self.keep(cx, p);
            }
        }
    }
    fn counters(&self) -> &Counters {
        &self.counters
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl CaptureSink {
    fn keep(&mut self, cx: &mut Ctx<'_>, p: Packet) {
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += p.len as u64;
        self.out.push((p.ts_ns, cx.pool.data(&p).to_vec()));
        cx.pool.free(p);
    }
}

/// What a replay did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub packets_in: u64,
    pub packets_out: u64,
    /// Drops by cause, summed over every app.
    pub dropped: Vec<(String, u64)>,
    /// Added delay of packets that left unchanged (matched to their input by content).
    pub matched: u64,
    pub mean_delay_ms: f64,
    pub max_delay_ms: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "packets in: {}, out: {}",
            self.packets_in, self.packets_out
        )?;
        if self.dropped.is_empty() {
            writeln!(f, "dropped: none")?;
        } else {
            let d: Vec<String> = self
                .dropped
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(f, "dropped: {}", d.join(", "))?;
        }
        write!(
            f,
            "added delay: mean {:.3} ms, max {:.3} ms (over {} packets left unchanged)",
            self.mean_delay_ms, self.max_delay_ms, self.matched
        )
    }
}

/// Replay `frames` through direction `dir` of `plan`. Returns what left (in departure
/// order) and a summary.
pub fn replay(plan: &Plan, dir: Direction, frames: Vec<Frame>) -> Result<(Vec<Frame>, Summary)> {
    let max_len = frames.iter().map(|(_, d)| d.len()).max().unwrap_or(0);
    let slot = max_len.clamp(2048, 65_536 + 4096);
    let mut engine = Engine::new(PacketPool::new(plan.limits.pool_packets, slot));
    let arrivals: HashMap<u64, u64> = frames.iter().map(|(ts, d)| (hash(d), *ts)).collect();
    let packets_in = frames.len() as u64;
    let mut it = frames.into_iter();
    let next = it.next();
    let start = next.as_ref().map_or(0, |(ts, _)| *ts);
    let src = engine.add(
        "capture",
        Box::new(CaptureSource {
            frames: it,
            next,
            counters: Counters::default(),
        }),
    );
    let sink = engine.add(
        "output",
        Box::new(CaptureSink {
            out: Vec::new(),
            counters: Counters::default(),
        }),
    );
    let mut loader = Loader::new(WasmRuntime::new()?);
    network::wire(&mut engine, plan, dir, src, sink, &mut loader)?;
    // Breathe at every deadline until the capture is consumed and nothing is in
    // flight (a plugin's timer alone does not keep a replay going).
    let mut now = start;
    let mut idle_breaths = 0;
    while let Some(t) = engine.next_deadline() {
        let done = engine.app(src).next_deadline().is_none() && engine.packets_in_flight() == 0;
        if done {
            break;
        }
        if t > now {
            now = t;
            idle_breaths = 0;
        } else {
            idle_breaths += 1;
            if idle_breaths > 1000 {
                bail!("replay made no progress at t = {now} ns (a link stays full)");
            }
        }
        engine.breathe(now);
    }
    while engine.links_busy() {
        engine.breathe(now);
    }
    let mut dropped: HashMap<&'static str, u64> = HashMap::new();
    for r in engine.report() {
        for (k, v) in r.drops {
            *dropped.entry(k).or_default() += v;
        }
    }
    let mut dropped: Vec<(String, u64)> = dropped
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    dropped.sort();
    let sink_app = engine
        .app_mut::<CaptureSink>(sink)
        .map(|s| std::mem::take(&mut s.out))
        .unwrap_or_default();
    let mut out = sink_app;
    out.sort_by_key(|(ts, _)| *ts);
    let (mut n, mut sum, mut max) = (0u64, 0u128, 0u64);
    for (ts, d) in &out {
        if let Some(a) = arrivals.get(&hash(d)) {
            let delay = ts.saturating_sub(*a);
            n += 1;
            sum += delay as u128;
            max = max.max(delay);
        }
    }
    let summary = Summary {
        packets_in,
        packets_out: out.len() as u64,
        dropped,
        matched: n,
        mean_delay_ms: if n > 0 {
            sum as f64 / n as f64 / 1e6
        } else {
            0.0
        },
        max_delay_ms: max as f64 / 1e6,
    };
    Ok((out, summary))
}

fn hash(d: &[u8]) -> u64 {
    crate::plugin::fingerprint(&[d])
}
