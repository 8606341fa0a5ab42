//! Captures: pcap (micro- and nanosecond) and pcapng (any `if_tsresol`) files of
//! Ethernet frames, read and written, and the engine apps that feed a capture into a
//! chain at its own timestamps ([`CaptureSource`]) and keep what leaves with its
//! departure time ([`CaptureSink`]). Offline replay drives them on a virtual clock.
//! A frame a capture's snap length cut short is replayed with its original length (its
//! missing bytes zeros): a shaper charges what was on the wire.

use anyhow::{bail, Context, Result};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, TsResolution};
use std::io::{BufReader, BufWriter, Read};
use std::path::Path;
use std::time::Duration;
use synthnet_core::trace::{Event, Trace, What};
use synthnet_core::{App, Counters, Ctx, DropCause, Packet};

/// One captured frame: capture time (ns since the epoch) and bytes.
pub type Frame = (u64, Vec<u8>);

/// The longest frame a capture's original length is restored to (the host's largest
/// packet buffer: a 64 KiB super-packet and its headers).
pub const MAX_RESTORED_LEN: u32 = synthnet_core::packet::LARGE_FRAME as u32;

/// Most bytes a capture's frames are grown by, in all, to restore their original
/// lengths (a hostile capture could claim 64 KiB for every 16-byte record).
pub const MAX_RESTORED_BYTES: u64 = 1 << 30;

/// The original length of each frame read, in order.
#[derive(Debug, Default)]
struct OrigLens(Vec<u32>);

impl OrigLens {
    /// Frames a snap length cut short get their original length back, the missing bytes
    /// as zeros, so a frame costs a shaper (and leaves with) what it was on the wire. All
    /// or none: if the capture would grow past [`MAX_RESTORED_BYTES`], none is, and a
    /// note says so, as it says what was restored.
    fn restore(&self, name: &str, frames: &mut [Frame], notes: &mut Vec<String>) {
        let (mut n, mut bytes, mut too_long) = (0u64, 0u64, 0u64);
        for ((_, f), &orig) in frames.iter().zip(&self.0) {
            if orig as usize > f.len() {
                if orig > MAX_RESTORED_LEN {
                    too_long += 1;
                } else {
                    n += 1;
                    bytes += (orig as usize - f.len()) as u64;
                }
            }
        }
        if too_long > 0 {
            notes.push(format!(
                "{name}: {too_long} frames say they were longer than {MAX_RESTORED_LEN} bytes on the wire; they are replayed as captured"
            ));
        }
        if n == 0 {
            return;
        }
        if bytes > MAX_RESTORED_BYTES {
            notes.push(format!(
                "{name}: {n} frames were cut short by the capture's snap length; restoring their original lengths would take {bytes} bytes, more than {MAX_RESTORED_BYTES}, so they are replayed as captured (a rate charges their captured length)"
            ));
            return;
        }
        for ((_, f), &orig) in frames.iter_mut().zip(&self.0) {
            if orig as usize > f.len() && orig <= MAX_RESTORED_LEN {
                f.resize(orig as usize, 0);
            }
        }
        notes.push(format!(
            "{name}: {n} frames were cut short by the capture's snap length; they are replayed with their original length (the missing bytes are zeros), so a rate charges what was on the wire"
        ));
    }
}

/// A capture read from a file: its frames in time order, and what was wrong with it.
#[derive(Debug, Default)]
pub struct Capture {
    pub frames: Vec<Frame>,
    /// Said to the user, not fatal: a truncated end, frames out of time order, frames
    /// cut short by a snap length.
    pub notes: Vec<String>,
}

/// Read a pcap or pcapng file of Ethernet frames. Frames out of time order (a capture
/// concatenated with `mergecap -a`, say) are sorted by time, stably, and a note says how
/// many moved; a file cut short keeps its complete frames, and a note says so.
pub fn read_capture(path: &Path) -> Result<Capture> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    read_capture_from(&path.display().to_string(), BufReader::new(f))
}

/// [`read_capture`] from bytes in memory; `name` is what messages call them.
pub fn read_capture_bytes(name: &str, data: &[u8]) -> Result<Capture> {
    read_capture_from(name, data)
}

/// [`read_capture`] from any reader; `name` is what messages call it.
pub fn read_capture_from(name: &str, mut r: impl Read) -> Result<Capture> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)
        .with_context(|| format!("{name}: too short to be a capture"))?;
    let r = std::io::Cursor::new(magic).chain(r);
    let mut cap = Capture::default();
    let mut orig = OrigLens::default();
    let res = if magic == [0x0A, 0x0D, 0x0D, 0x0A] {
        read_pcapng(r, &mut cap.frames, &mut orig)
    } else {
        read_pcap(r, &mut cap.frames, &mut orig)
    };
    if let Err(e) = res {
        if cap.frames.is_empty() {
            return Err(e).with_context(|| format!("reading {name}"));
        }
        cap.notes.push(format!(
            "{name}: read {} complete frames, then: {e:#} (the rest is ignored)",
            cap.frames.len()
        ));
    }
    orig.restore(name, &mut cap.frames, &mut cap.notes);
    let late = cap.frames.windows(2).filter(|w| w[1].0 < w[0].0).count();
    if late > 0 {
        cap.frames.sort_by_key(|(ts, _)| *ts);
        cap.notes.push(format!(
            "{name}: {late} frames were out of time order; replayed in time order"
        ));
    }
    Ok(cap)
}

fn read_pcap(r: impl Read, out: &mut Vec<Frame>, orig: &mut OrigLens) -> Result<()> {
    let mut reader = PcapReader::new(r).context("not a pcap or pcapng file")?;
    let header = reader.header();
    if header.datalink != DataLink::ETHERNET {
        bail!("link type {:?} is not Ethernet", header.datalink);
    }
    let frac_ns = match header.ts_resolution {
        TsResolution::MicroSecond => 1_000,
        TsResolution::NanoSecond => 1,
    };
    // Raw records, checked here: pcap-file refuses a record whose original length
    // exceeds the file's snap length, which is every frame `tcpdump -s 96` cut short.
    while let Some(p) = reader.next_raw_packet() {
        let p = p.context("corrupt packet record")?;
        let ts = p.ts_sec as u64 * 1_000_000_000 + p.ts_frac as u64 * frac_ns;
        orig.0.push(p.orig_len);
        out.push((ts, p.data.into_owned()));
    }
    Ok(())
}

fn read_pcapng(r: impl Read, out: &mut Vec<Frame>, orig: &mut OrigLens) -> Result<()> {
    let mut reader = PcapNgReader::new(r).context("not a pcapng file")?;
    // Per interface: link type and units per second of its timestamps.
    let mut ifaces: Vec<(DataLink, u64)> = Vec::new();
    let ethernet = |ifaces: &[(DataLink, u64)], id: u32| -> Result<u64> {
        let Some(&(link, per_sec)) = ifaces.get(id as usize) else {
            bail!("packet on undeclared interface {id}");
        };
        if link != DataLink::ETHERNET {
            bail!("interface {id} has link type {link:?}, not Ethernet");
        }
        Ok(per_sec)
    };
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
                let per_sec = ethernet(&ifaces, epb.interface_id)?;
                // pcap-file hands over the raw timestamp units as "nanoseconds".
                let units = epb.timestamp.as_nanos();
                let ns = units * 1_000_000_000 / per_sec as u128;
                orig.0.push(epb.original_len);
                out.push((u64::try_from(ns).unwrap_or(u64::MAX), epb.data.into_owned()));
            }
            // The obsolete Packet Block: like an enhanced one.
            Block::Packet(pb) => {
                let per_sec = ethernet(&ifaces, pb.interface_id as u32)?;
                let ns = pb.timestamp as u128 * 1_000_000_000 / per_sec as u128;
                orig.0.push(pb.original_len);
                out.push((u64::try_from(ns).unwrap_or(u64::MAX), pb.data.into_owned()));
            }
            // A Simple Packet Block has no timestamp: it arrives with the frame before it.
            Block::SimplePacket(spb) => {
                ethernet(&ifaces, 0)?;
                let ts = out.last().map_or(0, |(ts, _)| *ts);
                orig.0.push(spb.original_len);
                out.push((ts, spb.data.into_owned()));
            }
            Block::SectionHeader(_) => ifaces.clear(),
            _ => {}
        }
    }
    Ok(())
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
    for (i, (ts, data)) in frames.iter().enumerate() {
        if ts / 1_000_000_000 > u32::MAX as u64 {
            bail!(
                "{}: packet {i} leaves at {ts} ns since 1970, after 2106, which a pcap file cannot hold",
                path.display()
            );
        }
        w.write_packet(&PcapPacket::new(
            Duration::from_nanos(*ts),
            data.len() as u32,
            data,
        ))?;
    }
    Ok(())
}

/// Write `frames` as pcapng (nanosecond timestamps), each with its comment
/// (`opt_comment`) when `comments` has a non-empty one for it.
pub fn write_pcapng(path: &Path, frames: &[Frame], comments: &[String]) -> Result<()> {
    use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
    use pcap_file::pcapng::blocks::interface_description::{
        InterfaceDescriptionBlock, InterfaceDescriptionOption,
    };
    use pcap_file::pcapng::PcapNgWriter;
    use std::borrow::Cow;
    let f = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut w = PcapNgWriter::new(BufWriter::new(f))
        .with_context(|| format!("write {}", path.display()))?;
    let idb = InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    };
    w.write_pcapng_block(idb)
        .with_context(|| format!("write {}", path.display()))?;
    for (k, (ts, data)) in frames.iter().enumerate() {
        let options = match comments.get(k) {
            Some(c) if !c.is_empty() => vec![EnhancedPacketOption::Comment(Cow::Borrowed(c))],
            _ => Vec::new(),
        };
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_nanos(*ts),
            original_len: data.len() as u32,
            data: Cow::Borrowed(data),
            options,
        };
        w.write_pcapng_block(epb)
            .with_context(|| format!("write {}", path.display()))?;
    }
    w.into_inner()
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Feeds captured frames into the engine at their capture times.
pub struct CaptureSource {
    frames: std::vec::IntoIter<Frame>,
    next: Option<Frame>,
    counters: Counters,
    /// Number of the next frame, from 0; and where arrivals are recorded, if anywhere.
    index: u64,
    trace: Option<Trace>,
}

impl CaptureSource {
    pub fn new(frames: Vec<Frame>) -> Self {
        let mut frames = frames.into_iter();
        let next = frames.next();
        CaptureSource {
            frames,
            next,
            counters: Counters::default(),
            index: 0,
            trace: None,
        }
    }
    /// Record each frame's arrival in `trace` (see [`synthnet_core::trace`]).
    pub fn set_trace(&mut self, trace: Option<Trace>) {
        self.trace = trace;
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
            let frame = self.index;
            self.index += 1;
            budget -= 1;
            self.counters.rx_packets += 1;
            self.counters.rx_bytes += data.len() as u64;
            match cx.pool.alloc_from(&data, ts) {
                Some(p) => {
                    if let Some(t) = &self.trace {
                        t.record([Event {
                            at_ns: ts,
                            packet: p.id,
                            stage: None,
                            what: What::Arrived { frame },
                            modified: false,
                        }]);
                    }
                    cx.transmit(0, p, &mut self.counters)
                }
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

/// Keeps every frame that leaves, with its departure time, up to a limit (a plugin
/// that multiplies packets cannot make it grow without bound): beyond it, frames are
/// counted in `overflow` and freed.
pub struct CaptureSink {
    pub out: Vec<Frame>,
    pub limit: usize,
    pub overflow: u64,
    counters: Counters,
    /// Where departures of the frames kept are recorded, if anywhere (in `out`'s order).
    pub trace: Option<Trace>,
}

impl Default for CaptureSink {
    fn default() -> Self {
        CaptureSink::with_limit(usize::MAX)
    }
}

impl CaptureSink {
    pub fn with_limit(limit: usize) -> Self {
        CaptureSink {
            out: Vec::new(),
            limit,
            overflow: 0,
            counters: Counters::default(),
            trace: None,
        }
    }
}

impl App for CaptureSink {
    fn breathe(&mut self, cx: &mut Ctx<'_>) {
        let mut port = 0;
        while let Some(at) = cx.next_input(port) {
            while let Some(p) = cx.receive(at) {
                self.keep(cx, p);
            }
            port = at + 1;
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
        if self.out.len() < self.limit {
            self.out.push((p.ts_ns, cx.pool.data(&p).to_vec()));
            if let Some(t) = &self.trace {
                t.record([Event {
                    at_ns: p.ts_ns,
                    packet: p.id,
                    stage: None,
                    what: What::Departed,
                    modified: false,
                }]);
            }
        } else {
            self.overflow += 1;
        }
        cx.pool.free(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A microsecond pcap whose records each hold `caplen` bytes of a frame `orig_len`
    /// long.
    fn pcap(records: usize, caplen: usize, orig_len: u32) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 96, 1] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for k in 0..records as u32 {
            for v in [1, k, caplen as u32, orig_len] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend(std::iter::repeat_n(0xAB, caplen));
        }
        b
    }

    #[test]
    fn snapped_frames_get_their_original_length_back() {
        let cap = read_capture_bytes("t", &pcap(3, 96, 1500)).unwrap();
        assert!(cap.frames.iter().all(|(_, f)| f.len() == 1500));
        assert!(cap.frames[0].1[..96].iter().all(|&b| b == 0xAB));
        assert!(cap.frames[0].1[96..].iter().all(|&b| b == 0));
        assert!(
            cap.notes[0].contains("3 frames were cut short"),
            "{:?}",
            cap.notes
        );
    }

    #[test]
    fn an_absurd_original_length_is_not_restored() {
        let cap = read_capture_bytes("t", &pcap(2, 60, u32::MAX)).unwrap();
        assert!(cap.frames.iter().all(|(_, f)| f.len() == 60));
        assert!(
            cap.notes[0].contains("longer than 65600"),
            "{:?}",
            cap.notes
        );
    }

    #[test]
    fn restoring_stops_at_a_bound_all_or_none() {
        // 16,500 records of 60 bytes, each claiming 65,600: over 1 GiB to restore.
        let cap = read_capture_bytes("t", &pcap(16_500, 60, MAX_RESTORED_LEN)).unwrap();
        assert_eq!(cap.frames.len(), 16_500);
        assert!(cap.frames.iter().all(|(_, f)| f.len() == 60));
        assert!(
            cap.notes[0].contains("replayed as captured"),
            "{:?}",
            cap.notes
        );
    }
}
