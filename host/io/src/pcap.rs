//! Captures: pcap (micro- and nanosecond) and pcapng (any `if_tsresol`) files of
//! Ethernet frames, read and written, and the engine apps that feed a capture into a
//! chain at its own timestamps ([`CaptureSource`]) and keep what leaves with its
//! departure time ([`CaptureSink`]). Offline replay drives them on a virtual clock.

use anyhow::{bail, Context, Result};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, TsResolution};
use std::io::{BufReader, BufWriter, Read};
use std::path::Path;
use std::time::Duration;
use synthnet_core::{App, Counters, Ctx, DropCause, Packet};

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
pub struct CaptureSource {
    frames: std::vec::IntoIter<Frame>,
    next: Option<Frame>,
    counters: Counters,
}

impl CaptureSource {
    pub fn new(frames: Vec<Frame>) -> Self {
        let mut frames = frames.into_iter();
        let next = frames.next();
        CaptureSource {
            frames,
            next,
            counters: Counters::default(),
        }
    }
    /// The time of the next frame to feed; `None` once all are in.
    pub fn next_at(&self) -> Option<u64> {
        self.next.as_ref().map(|(ts, _)| *ts)
    }
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
}

/// Keeps every frame that leaves, with its departure time.
#[derive(Default)]
pub struct CaptureSink {
    pub out: Vec<Frame>,
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
}

impl CaptureSink {
    fn keep(&mut self, cx: &mut Ctx<'_>, p: Packet) {
        // What reaches the capture has left the network: received and sent.
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += p.len as u64;
        self.counters.tx_packets += 1;
        self.counters.tx_bytes += p.len as u64;
        self.out.push((p.ts_ns, cx.pool.data(&p).to_vec()));
        cx.pool.free(p);
    }
}
