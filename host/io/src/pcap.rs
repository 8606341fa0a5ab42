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
use std::collections::VecDeque;
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

/// What restoring snapped frames to their original lengths would take, counted frame by
/// frame (so a capture read as a stream decides as one read whole does).
#[derive(Debug, Default)]
struct Restore {
    n: u64,
    bytes: u64,
    too_long: u64,
}

impl Restore {
    fn add(&mut self, caplen: usize, orig: u32) {
        if orig as usize > caplen {
            if orig > MAX_RESTORED_LEN {
                self.too_long += 1;
            } else {
                self.n += 1;
                self.bytes += (orig as usize - caplen) as u64;
            }
        }
    }
    /// Frames a snap length cut short get their original length back, the missing bytes
    /// as zeros, so a frame costs a shaper (and leaves with) what it was on the wire. All
    /// or none: if the capture would grow past [`MAX_RESTORED_BYTES`], none is, and a
    /// note says so, as it says what was restored. Returns whether to restore.
    fn decide(&self, name: &str, notes: &mut Vec<String>) -> bool {
        let Restore { n, bytes, too_long } = *self;
        if too_long > 0 {
            notes.push(format!(
                "{name}: {too_long} frames say they were longer than {MAX_RESTORED_LEN} bytes on the wire; they are replayed as captured"
            ));
        }
        if n == 0 {
            return false;
        }
        if bytes > MAX_RESTORED_BYTES {
            notes.push(format!(
                "{name}: {n} frames were cut short by the capture's snap length; restoring their original lengths would take {bytes} bytes, more than {MAX_RESTORED_BYTES}, so they are replayed as captured (a rate charges their captured length)"
            ));
            return false;
        }
        notes.push(format!(
            "{name}: {n} frames were cut short by the capture's snap length; they are replayed with their original length (the missing bytes are zeros), so a rate charges what was on the wire"
        ));
        true
    }
}

/// Grow a snapped frame back to its original length (see [`Restore::decide`]).
fn restore(f: &mut Vec<u8>, orig: u32) {
    if orig as usize > f.len() && orig <= MAX_RESTORED_LEN {
        f.resize(orig as usize, 0);
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
pub fn read_capture_from(name: &str, r: impl Read) -> Result<Capture> {
    let mut cap = Capture::default();
    let mut orig = Vec::new();
    let mut reader = FrameReader::new(r).with_context(|| format!("reading {name}"))?;
    let mut res = Ok(());
    while let Some(f) = reader.next_frame() {
        match f {
            Ok((ts, data, o)) => {
                orig.push(o);
                cap.frames.push((ts, data));
            }
            Err(e) => {
                res = Err(e);
                break;
            }
        }
    }
    if let Err(e) = res {
        if cap.frames.is_empty() {
            return Err(e).with_context(|| format!("reading {name}"));
        }
        cap.notes.push(format!(
            "{name}: read {} complete frames, then: {e:#} (the rest is ignored)",
            cap.frames.len()
        ));
    }
    let mut r = Restore::default();
    for ((_, f), &o) in cap.frames.iter().zip(&orig) {
        r.add(f.len(), o);
    }
    if r.decide(name, &mut cap.notes) {
        for ((_, f), &o) in cap.frames.iter_mut().zip(&orig) {
            restore(f, o);
        }
    }
    let late = cap.frames.windows(2).filter(|w| w[1].0 < w[0].0).count();
    if late > 0 {
        cap.frames.sort_by_key(|(ts, _)| *ts);
        cap.notes.push(format!(
            "{name}: {late} frames were out of time order; replayed in time order"
        ));
    }
    Ok(cap)
}

/// A capture file's frames as a stream: what [`read_capture`] reads, with the same
/// notes, but pulled one frame at a time, so a capture larger than memory replays in
/// bounded memory. The file is read twice: once to count its complete frames, check
/// their order and decide the snap-length restore (all or none), then as the frames
/// are pulled. A capture out of time order must be sorted, so it is read whole.
pub struct CaptureStream {
    pub frames: Box<dyn Iterator<Item = Frame>>,
    pub notes: Vec<String>,
}

/// Open `path` as a [`CaptureStream`].
pub fn stream_capture(path: &Path) -> Result<CaptureStream> {
    let name = path.display().to_string();
    let open = || -> Result<FrameReader<BufReader<std::fs::File>>> {
        let f =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        FrameReader::new(BufReader::new(f)).with_context(|| format!("reading {name}"))
    };
    let mut reader = open()?;
    let (mut count, mut late, mut last) = (0usize, 0usize, None::<u64>);
    let mut r = Restore::default();
    let mut notes = Vec::new();
    while let Some(f) = reader.next_frame() {
        match f {
            Ok((ts, data, o)) => {
                count += 1;
                late += usize::from(last.is_some_and(|l| ts < l));
                last = Some(ts);
                r.add(data.len(), o);
            }
            Err(e) if count == 0 => return Err(e).with_context(|| format!("reading {name}")),
            Err(e) => {
                notes.push(format!(
                    "{name}: read {count} complete frames, then: {e:#} (the rest is ignored)"
                ));
                break;
            }
        }
    }
    if late > 0 {
        let cap = read_capture(path)?;
        return Ok(CaptureStream {
            frames: Box::new(cap.frames.into_iter()),
            notes: cap.notes,
        });
    }
    let grow = r.decide(&name, &mut notes);
    let mut reader = open()?;
    let frames = std::iter::from_fn(move || reader.next_frame()?.ok())
        .take(count)
        .map(move |(ts, mut data, o)| {
            if grow {
                restore(&mut data, o);
            }
            (ts, data)
        });
    Ok(CaptureStream {
        frames: Box::new(frames),
        notes,
    })
}

/// Reads a pcap or pcapng file's frames one at a time: (time, bytes, original length).
struct FrameReader<R: Read> {
    inner: Inner<R>,
}

#[allow(clippy::large_enum_variant)]
enum Inner<R: Read> {
    Pcap {
        reader: PcapReader<std::io::Chain<std::io::Cursor<[u8; 4]>, R>>,
        frac_ns: u64,
    },
    PcapNg {
        reader: PcapNgReader<std::io::Chain<std::io::Cursor<[u8; 4]>, R>>,
        /// Per interface: link type and units per second of its timestamps.
        ifaces: Vec<(DataLink, u64)>,
        /// The time of the frame before (a Simple Packet Block arrives with it).
        last_ts: u64,
    },
}

type Record = (u64, Vec<u8>, u32);

impl<R: Read> FrameReader<R> {
    fn new(mut r: R) -> Result<Self> {
        let mut magic = [0u8; 4];
        r.read_exact(&mut magic)
            .context("too short to be a capture")?;
        let r = std::io::Cursor::new(magic).chain(r);
        let inner = if magic == [0x0A, 0x0D, 0x0D, 0x0A] {
            Inner::PcapNg {
                reader: PcapNgReader::new(r).context("not a pcapng file")?,
                ifaces: Vec::new(),
                last_ts: 0,
            }
        } else {
            let reader = PcapReader::new(r).context("not a pcap or pcapng file")?;
            let header = reader.header();
            if header.datalink != DataLink::ETHERNET {
                bail!("link type {:?} is not Ethernet", header.datalink);
            }
            let frac_ns = match header.ts_resolution {
                TsResolution::MicroSecond => 1_000,
                TsResolution::NanoSecond => 1,
            };
            Inner::Pcap { reader, frac_ns }
        };
        Ok(FrameReader { inner })
    }

    fn next_frame(&mut self) -> Option<Result<Record>> {
        match &mut self.inner {
            Inner::Pcap { reader, frac_ns } => {
                // Raw records, checked here: pcap-file refuses a record whose original
                // length exceeds the file's snap length, which is every frame
                // `tcpdump -s 96` cut short.
                let p = match reader.next_raw_packet()? {
                    Ok(p) => p,
                    Err(e) => return Some(Err(e).context("corrupt packet record")),
                };
                let ts = p.ts_sec as u64 * 1_000_000_000 + p.ts_frac as u64 * *frac_ns;
                Some(Ok((ts, p.data.into_owned(), p.orig_len)))
            }
            Inner::PcapNg {
                reader,
                ifaces,
                last_ts,
            } => loop {
                let r = next_pcapng(reader, ifaces, *last_ts)?;
                match r {
                    Ok(Some(rec)) => {
                        *last_ts = rec.0;
                        return Some(Ok(rec));
                    }
                    Ok(None) => continue,
                    Err(e) => return Some(Err(e)),
                }
            },
        }
    }
}

/// The next block of a pcapng file: a frame, `Ok(None)` for a block that is not one,
/// `None` at the end.
fn next_pcapng<R: Read>(
    reader: &mut PcapNgReader<R>,
    ifaces: &mut Vec<(DataLink, u64)>,
    last_ts: u64,
) -> Option<Result<Option<Record>>> {
    let ethernet = |ifaces: &[(DataLink, u64)], id: u32| -> Result<u64> {
        let Some(&(link, per_sec)) = ifaces.get(id as usize) else {
            bail!("packet on undeclared interface {id}");
        };
        if link != DataLink::ETHERNET {
            bail!("interface {id} has link type {link:?}, not Ethernet");
        }
        Ok(per_sec)
    };
    let b = match reader.next_block()? {
        Ok(b) => b,
        Err(e) => return Some(Err(e).context("corrupt pcapng block")),
    };
    let rec = (|| -> Result<Option<Record>> {
        Ok(match b {
            Block::InterfaceDescription(idb) => {
                let mut per_sec = 1_000_000u64;
                for o in &idb.options {
                    if let pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption::IfTsResol(r) = o {
                        per_sec = if r & 0x80 == 0 { 10u64.saturating_pow((*r & 0x7F) as u32) } else { 1u64 << (*r & 0x7F).min(63) };
                    }
                }
                ifaces.push((idb.linktype, per_sec.max(1)));
                None
            }
            Block::EnhancedPacket(epb) => {
                let per_sec = ethernet(ifaces, epb.interface_id)?;
                // pcap-file hands over the raw timestamp units as "nanoseconds".
                let units = epb.timestamp.as_nanos();
                let ns = units * 1_000_000_000 / per_sec as u128;
                Some((
                    u64::try_from(ns).unwrap_or(u64::MAX),
                    epb.data.into_owned(),
                    epb.original_len,
                ))
            }
            // The obsolete Packet Block: like an enhanced one.
            Block::Packet(pb) => {
                let per_sec = ethernet(ifaces, pb.interface_id as u32)?;
                let ns = pb.timestamp as u128 * 1_000_000_000 / per_sec as u128;
                Some((
                    u64::try_from(ns).unwrap_or(u64::MAX),
                    pb.data.into_owned(),
                    pb.original_len,
                ))
            }
            // A Simple Packet Block has no timestamp: it arrives with the frame before it.
            Block::SimplePacket(spb) => {
                ethernet(ifaces, 0)?;
                Some((last_ts, spb.data.into_owned(), spb.original_len))
            }
            Block::SectionHeader(_) => {
                ifaces.clear();
                None
            }
            _ => None,
        })
    })();
    Some(rec)
}

/// Writes frames to a nanosecond pcap one at a time, as they leave.
pub struct PcapStream {
    w: PcapWriter<BufWriter<std::fs::File>>,
    path: std::path::PathBuf,
    written: u64,
}

impl PcapStream {
    pub fn create(path: &Path) -> Result<Self> {
        let f = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let header = PcapHeader {
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::NanoSecond,
            snaplen: 262_144,
            ..Default::default()
        };
        Ok(PcapStream {
            w: PcapWriter::with_header(BufWriter::new(f), header)?,
            path: path.to_path_buf(),
            written: 0,
        })
    }
    pub fn write(&mut self, ts: u64, data: &[u8]) -> Result<()> {
        if ts / 1_000_000_000 > u32::MAX as u64 {
            bail!(
                "{}: packet {} leaves at {ts} ns since 1970, after 2106, which a pcap file cannot hold",
                self.path.display(),
                self.written
            );
        }
        self.w.write_packet(&PcapPacket::new(
            Duration::from_nanos(ts),
            data.len() as u32,
            data,
        ))?;
        self.written += 1;
        Ok(())
    }
    /// Flush what is buffered to the file.
    pub fn finish(self) -> Result<()> {
        use std::io::Write;
        self.w
            .into_writer()
            .flush()
            .with_context(|| format!("write {}", self.path.display()))
    }
}

/// Write frames as a nanosecond pcap.
pub fn write_pcap(path: &Path, frames: &[Frame]) -> Result<()> {
    let mut w = PcapStream::create(path)?;
    for (ts, data) in frames {
        w.write(*ts, data)?;
    }
    w.finish()
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

/// Told a frame: its time and bytes.
type OnFrame = Box<dyn FnMut(u64, &[u8])>;

/// Feeds captured frames into the engine at their capture times, pulled one at a time
/// from a vector or a stream ([`stream_capture`]).
pub struct CaptureSource {
    frames: Box<dyn Iterator<Item = Frame>>,
    next: Option<Frame>,
    counters: Counters,
    /// Number of the next frame, from 0; and where arrivals are recorded, if anywhere.
    index: u64,
    trace: Option<Trace>,
}

impl CaptureSource {
    pub fn new(frames: Vec<Frame>) -> Self {
        Self::streaming(frames.into_iter())
    }
    /// Feed the frames `frames` yields, in their order (time order).
    pub fn streaming(frames: impl Iterator<Item = Frame> + 'static) -> Self {
        let mut frames: Box<dyn Iterator<Item = Frame>> = Box::new(frames);
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
    /// Frames fed so far.
    pub fn fed(&self) -> u64 {
        self.index
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
                    // Its arrival time goes with the buffer (and its copies) to the sink.
                    cx.pool.set_origin(&p, ts);
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
/// counted in `overflow` and freed. Or, with [`CaptureSink::streaming`], hands each
/// frame on in departure order as soon as that order is known, keeping only the frames
/// not yet handed on.
pub struct CaptureSink {
    pub out: Vec<Frame>,
    pub limit: usize,
    pub overflow: u64,
    counters: Counters,
    /// Where departures of the frames kept are recorded, if anywhere (in `out`'s order).
    pub trace: Option<Trace>,
    /// Streaming: where frames go, and those that left at or after the current instant
    /// (more may still leave at that instant), sorted by time, stably.
    stream: Option<OnFrame>,
    held: VecDeque<Frame>,
    /// Told each packet that leaves and was fed by a [`CaptureSource`] (a copy of one
    /// too): its departure and arrival times.
    on_depart: Option<Box<dyn FnMut(u64, u64)>>,
    /// Frames that reached the sink with a departure time before one already handed on
    /// (handed on as they came).
    pub late: u64,
    handed_until: u64,
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
            stream: None,
            held: VecDeque::new(),
            on_depart: None,
            late: 0,
            handed_until: 0,
        }
    }
    /// Hand each frame that leaves to `f`, in departure order (stable: simultaneous
    /// departures in the order they reached the sink). A frame is held only until the
    /// virtual clock passes its departure time; [`CaptureSink::flush`] hands on the rest.
    pub fn streaming(f: impl FnMut(u64, &[u8]) + 'static) -> Self {
        CaptureSink {
            stream: Some(Box::new(f)),
            ..CaptureSink::with_limit(0)
        }
    }
    /// Call `f` with the departure and arrival times of each packet that leaves and
    /// came from a [`CaptureSource`] (by identity: a copy has its original's arrival,
    /// an injected packet none).
    pub fn set_on_depart(&mut self, f: impl FnMut(u64, u64) + 'static) {
        self.on_depart = Some(Box::new(f));
    }
    /// Hand on every frame held with a departure time before `until`.
    fn hand_on(&mut self, until: u64) {
        let Some(f) = &mut self.stream else { return };
        while self.held.front().is_some_and(|(ts, _)| *ts < until) {
            if let Some((ts, data)) = self.held.pop_front() {
                f(ts, &data);
                self.handed_until = self.handed_until.max(ts);
            }
        }
    }
    /// Hand on every frame held (the replay is over).
    pub fn flush(&mut self) {
        let Some(f) = &mut self.stream else { return };
        for (ts, data) in self.held.drain(..) {
            f(ts, &data);
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
        self.hand_on(cx.now_ns);
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
        if let (Some(f), Some(arrived)) = (&mut self.on_depart, cx.pool.origin(&p)) {
            f(p.ts_ns, arrived);
        }
        if self.stream.is_some() {
            let data = cx.pool.data(&p).to_vec();
            if p.ts_ns < self.handed_until {
                self.late += 1;
                if let Some(f) = &mut self.stream {
                    f(p.ts_ns, &data);
                }
            } else {
                let at = self.held.partition_point(|(ts, _)| *ts <= p.ts_ns);
                self.held.insert(at, (p.ts_ns, data));
            }
        } else if self.out.len() < self.limit {
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
