//! `synthnet replay`: one direction of a spec over a capture, offline, on the virtual
//! clock: the capture's timestamps drive time, the same apply path as the bridge builds
//! the chains, and what leaves is written with its departure time. The engine only
//! ever sees virtual time, so the same seed and the same input give byte-identical
//! output. What a stage sends back toward the sender (the reverse port, link ABI 1.1)
//! is never mixed into the output: it is counted, and kept apart for `--reverse-out`.

use anyhow::{Context, Result};
use std::cell::RefCell;
use std::rc::Rc;
use synthnet_config::cmdlog;
pub use synthnet_config::offline::Why;
use synthnet_config::offline::{run_timed, trace_stages};
use synthnet_config::{Network, Plan, Ports};
use synthnet_core::clock::VirtualClock;
use synthnet_core::trace::Trace;
use synthnet_core::{Direction, DropCause, Engine};
use synthnet_io::pcap::{CaptureSink, CaptureSource, Frame, PcapStream};
use synthnet_runtime::{Loader, WasmRuntime};

/// What a replay did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub packets_in: u64,
    pub packets_out: u64,
    /// Packets stages sent back toward the sender (their reverse port).
    pub packets_reverse: u64,
    /// Those packets, in departure order (`--reverse-out`).
    #[serde(skip)]
    pub reverse: Vec<Frame>,
    /// Drops by cause, summed over every app.
    pub dropped: Vec<(DropCause, u64)>,
    /// What each stage's plugin counted (stage, counter, value), non-zero only.
    pub plugin_counters: Vec<(String, String, u64)>,
    /// Packets that left tied to their arrival (by identity: a copy to its original's,
    /// whatever their bytes; an injected packet to none), whose added delay is below.
    pub matched: u64,
    /// Commands handed to plugins (the schedule's and the command log's), and how many
    /// of them the plugins refused.
    pub commands: u64,
    pub commands_refused: u64,
    pub mean_delay_ms: f64,
    pub max_delay_ms: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "packets in: {}, out: {}{}",
            self.packets_in,
            self.packets_out,
            if self.packets_reverse > 0 {
                format!(", back to the sender: {}", self.packets_reverse)
            } else {
                String::new()
            }
        )?;
        if self.dropped.is_empty() {
            writeln!(f, "dropped: none")?;
        } else {
            let d: Vec<String> = self
                .dropped
                .iter()
                .map(|(k, v)| format!("{} {v}", k.name()))
                .collect();
            writeln!(f, "dropped: {}", d.join(", "))?;
        }
        for (stage, k, v) in &self.plugin_counters {
            writeln!(f, "{stage}: {k} {v}")?;
        }
        if self.commands > 0 {
            writeln!(
                f,
                "commands: {} ({} refused)",
                self.commands, self.commands_refused
            )?;
        }
        write!(
            f,
            "added delay: mean {:.3} ms, max {:.3} ms (over {} packets tied to their arrival)",
            self.mean_delay_ms, self.max_delay_ms, self.matched
        )
    }
}

/// Replay `frames` through direction `dir` of `plan`. Returns what left (in departure
/// order) and a summary.
pub fn replay(plan: &Plan, dir: Direction, frames: Vec<Frame>) -> Result<(Vec<Frame>, Summary)> {
    replay_with(plan, dir, frames, &mut Loader::new(WasmRuntime::new()?))
}

/// Replay `frames` (pulled as they are due, see [`synthnet_io::pcap::stream_capture`])
/// and write what left to `output` (pcapng with a comment per packet when its name
/// ends in `.pcapng`, else pcap), what stages sent back to `reverse_out` (pcap) and,
/// with `log`, why each packet there as JSON lines. Tracing is on only when one of
/// them asks for it.
///
/// Memory: a plain pcap output is written as packets leave, so the replay holds only
/// the packets in flight (and the arrival times of those not yet left). The trace
/// (pcapng comments, `--log`) is built from every event once the replay is over, so
/// with it what left is held until the end.
pub fn replay_and_write(
    plan: &Plan,
    dir: Direction,
    frames: impl Iterator<Item = Frame> + 'static,
    commands: &[cmdlog::Entry],
    output: &std::path::Path,
    log: Option<&std::path::Path>,
    reverse_out: Option<&std::path::Path>,
) -> Result<Summary> {
    let pcapng = output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("pcapng"));
    let mut loader = Loader::new(WasmRuntime::new()?);
    if !pcapng && log.is_none() {
        let out = Partial::new(output);
        let back = reverse_out.map(Partial::new);
        let to = Rc::new(RefCell::new(Tally {
            writer: Some(PcapStream::create(&out.writing)?),
            reverse_writer: back
                .as_ref()
                .map(|b| PcapStream::create(&b.writing))
                .transpose()?,
            ..Tally::default()
        }));
        let run = || -> Result<Summary> {
            let (_, summary, _) = drive(
                plan,
                dir,
                frames,
                commands,
                &mut loader,
                None,
                Some(to.clone()),
            )?;
            let mut t = to.borrow_mut();
            if let Some(e) = t.error.take() {
                return Err(e);
            }
            if let Some(w) = t.writer.take() {
                w.finish()?;
            }
            if let Some(w) = t.reverse_writer.take() {
                w.finish()?;
            }
            Ok(summary)
        };
        let res = run();
        let ok = res.is_ok();
        out.finish(ok)?;
        if let Some(b) = back {
            b.finish(ok)?;
        }
        return res;
    }
    let trace = Trace::new();
    let (out, summary, why) = drive(plan, dir, frames, commands, &mut loader, Some(&trace), None)?;
    let why = why.unwrap_or_default();
    if pcapng {
        synthnet_io::pcap::write_pcapng(output, &out, &why.comments)?;
    } else {
        synthnet_io::pcap::write_pcap(output, &out)?;
    }
    if let Some(path) = log {
        let mut text = why.lines.join("\n");
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(r) = reverse_out {
        synthnet_io::pcap::write_pcap(r, &summary.reverse)?;
    }
    Ok(summary)
}

/// A file written as a replay runs: a regular file is written beside its name and
/// renamed into place once the replay succeeded, so a replay that fails writes nothing
/// (a device, `/dev/null` say, is written in place).
struct Partial {
    path: std::path::PathBuf,
    writing: std::path::PathBuf,
}

impl Partial {
    fn new(path: &std::path::Path) -> Partial {
        let regular = std::fs::metadata(path).map_or(true, |m| m.is_file());
        let writing = if regular {
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(".partial");
            path.with_file_name(name)
        } else {
            path.to_path_buf()
        };
        Partial {
            path: path.to_path_buf(),
            writing,
        }
    }
    /// Move the file into place after a replay that succeeded; remove it after one that
    /// failed.
    fn finish(self, ok: bool) -> Result<()> {
        if self.writing == self.path {
            return Ok(());
        }
        if ok {
            std::fs::rename(&self.writing, &self.path)
                .with_context(|| format!("write {}", self.path.display()))
        } else {
            let _ = std::fs::remove_file(&self.writing);
            Ok(())
        }
    }
}

/// [`replay`] with `loader`'s compiled modules (many replays compile each plugin once).
pub fn replay_with(
    plan: &Plan,
    dir: Direction,
    frames: Vec<Frame>,
    loader: &mut Loader,
) -> Result<(Vec<Frame>, Summary)> {
    replay_logged(plan, dir, frames, &[], loader)
}

/// [`replay_with`], handing each command of `log` (a command log, in time order) to its
/// stage at exactly its `at_ns`, counted from the capture's first packet.
pub fn replay_logged(
    plan: &Plan,
    dir: Direction,
    frames: Vec<Frame>,
    log: &[cmdlog::Entry],
    loader: &mut Loader,
) -> Result<(Vec<Frame>, Summary)> {
    replay_traced(plan, dir, frames, log, loader, None).map(|(out, s, _)| (out, s))
}

/// [`replay_logged`], and with `trace` also why each packet (see [`Why`]).
pub fn replay_traced(
    plan: &Plan,
    dir: Direction,
    frames: Vec<Frame>,
    log: &[cmdlog::Entry],
    loader: &mut Loader,
    trace: Option<&Trace>,
) -> Result<(Vec<Frame>, Summary, Option<Why>)> {
    drive(plan, dir, frames.into_iter(), log, loader, trace, None)
}

/// Delays of packets that left, each tied to its arrival by identity (its buffer's
/// origin, which a copy inherits): a retransmission or a duplicate in the capture is
/// its own packet, whatever its bytes.
#[derive(Default)]
struct Matcher {
    n: u64,
    sum: u128,
    max: u64,
}

impl Matcher {
    fn depart(&mut self, ts: u64, arrived: u64) {
        let delay = ts.saturating_sub(arrived);
        self.n += 1;
        self.sum += delay as u128;
        self.max = self.max.max(delay);
    }
}

/// What a streaming replay writes as packets leave, and what it counts.
#[derive(Default)]
struct Tally {
    out: u64,
    reverse: u64,
    /// Packets past the bound (each way), counted and not written.
    limit: u64,
    overflow: u64,
    reverse_overflow: u64,
    writer: Option<PcapStream>,
    reverse_writer: Option<PcapStream>,
    /// The first write that failed (the replay runs on; the error is returned).
    error: Option<anyhow::Error>,
}

impl Tally {
    fn write(&mut self, reverse: bool, ts: u64, d: &[u8]) {
        let w = if reverse {
            if self.reverse >= self.limit {
                self.reverse_overflow += 1;
                return;
            }
            self.reverse += 1;
            &mut self.reverse_writer
        } else {
            if self.out >= self.limit {
                self.overflow += 1;
                return;
            }
            self.out += 1;
            &mut self.writer
        };
        if let Some(w) = w {
            if let Err(e) = w.write(ts, d) {
                self.error.get_or_insert(e);
            }
        }
    }
}

/// The offline driver: feed `frames` into direction `dir` of `plan` on the virtual
/// clock, hand over the schedule's and `log`'s commands at their instants, and collect
/// what left. With `stream`, what leaves is handed to it as it departs (and nothing is
/// kept: the returned frames are empty); without, it is kept, and returned in
/// departure order.
fn drive(
    plan: &Plan,
    dir: Direction,
    frames: impl Iterator<Item = Frame> + 'static,
    log: &[cmdlog::Entry],
    loader: &mut Loader,
    trace: Option<&Trace>,
    stream: Option<Rc<RefCell<Tally>>>,
) -> Result<(Vec<Frame>, Summary, Option<Why>)> {
    // The bridge's pool (a host capture has super-packets too).
    let mut engine = Engine::new(plan.limits.pool());
    let matcher = Rc::new(RefCell::new(Matcher::default()));
    // What leaves is kept in memory when not streamed: at most 16 times what comes in
    // (a plugin may duplicate and inject, within reason), and at least a million frames.
    let (lo, hi) = frames.size_hint();
    let limit = hi.unwrap_or(lo).saturating_mul(16).max(1 << 20);
    let src = CaptureSource::streaming(frames);
    let start = src.next_at().unwrap_or(0);
    let source = engine.add(Box::new(src));
    let (sink, back) = match &stream {
        Some(to) => {
            to.borrow_mut().limit = limit as u64;
            let (t, r) = (to.clone(), to.clone());
            let sink = CaptureSink::streaming(move |ts, d| t.borrow_mut().write(false, ts, d));
            let back = CaptureSink::streaming(move |ts, d| r.borrow_mut().write(true, ts, d));
            (sink, back)
        }
        None => (
            CaptureSink::with_limit(limit),
            CaptureSink::with_limit(limit),
        ),
    };
    let mut sink = sink;
    let m = matcher.clone();
    sink.set_on_depart(move |ts, arrived| m.borrow_mut().depart(ts, arrived));
    let (sink, back) = (engine.add(Box::new(sink)), engine.add(Box::new(back)));
    trace_ends(&mut engine, source, sink, trace);
    let mut net = Network::new(engine, [(dir, Ports { source, sink })]);
    net.set_reverse_sink(dir, back);
    let report = net.apply(plan.clone(), loader);
    if let synthnet_config::Outcome::Refused(e) = report.outcome {
        anyhow::bail!("invalid spec: {e}");
    }
    trace_stages(&mut net.engine, trace);
    // Breathe at every deadline until the capture is consumed and nothing is in
    // flight (a plugin's timer alone does not keep a replay going).
    let mut clock = VirtualClock::at(start);
    let done = |e: &Engine| {
        e.app_ref::<CaptureSource>(source)
            .is_none_or(|s| s.next_at().is_none())
            && e.packets_in_flight() == 0
    };
    let commands = run_timed(
        &mut net, &mut clock, start, dir, plan, log, loader, done, trace,
    )?;
    clock
        .run_until(&mut net.engine, u64::MAX, done)
        .context("replay")?;
    let packets_in = net
        .engine
        .app_ref::<CaptureSource>(source)
        .map_or(0, |s| s.fed());
    let snap = net.snapshot();
    let mut dropped: Vec<(DropCause, u64)> = snap
        .directions
        .iter()
        .flat_map(|d| d.drops.nonzero())
        .collect();
    dropped.sort_by_key(|(c, _)| *c as usize);
    let plugin_counters = snap
        .directions
        .iter()
        .flat_map(|d| &d.stages)
        .flat_map(|s| {
            s.plugin_counters
                .iter()
                .filter(|(_, v)| *v > 0)
                .map(|(k, v)| (s.id.to_string(), k.clone(), *v))
        })
        .collect();
    let mut take = |id| -> (Vec<Frame>, u64) {
        net.engine
            .app_mut::<CaptureSink>(id)
            .map(|s| {
                s.flush();
                (std::mem::take(&mut s.out), s.overflow)
            })
            .unwrap_or_default()
    };
    let (mut out, overflow) = take(sink);
    anyhow::ensure!(
        overflow == 0,
        "the chain made {} packets out of {packets_in}, more than the {limit} a replay keeps: a plugin multiplies packets without bound; nothing was written",
        out.len() as u64 + overflow
    );
    let (mut reverse, overflow) = take(back);
    anyhow::ensure!(
        overflow == 0,
        "the chain sent {} packets back out of {packets_in}, more than the {limit} a replay keeps: a plugin multiplies packets without bound; nothing was written",
        reverse.len() as u64 + overflow
    );
    let why = trace.map(|t| Why::from_events(t.take()));
    let why = sort_departures(&mut out, why);
    reverse.sort_by_key(|(ts, _)| *ts);
    let m = matcher.borrow();
    let (packets_out, packets_reverse) = match &stream {
        Some(t) => {
            let t = t.borrow();
            anyhow::ensure!(
                t.overflow == 0,
                "the chain made {} packets out of {packets_in}, more than the {limit} a replay keeps: a plugin multiplies packets without bound; nothing was written",
                t.out + t.overflow
            );
            anyhow::ensure!(
                t.reverse_overflow == 0,
                "the chain sent {} packets back out of {packets_in}, more than the {limit} a replay keeps: a plugin multiplies packets without bound; nothing was written",
                t.reverse + t.reverse_overflow
            );
            (t.out, t.reverse)
        }
        None => (out.len() as u64, reverse.len() as u64),
    };
    let summary = Summary {
        packets_in,
        packets_out,
        packets_reverse,
        reverse,
        dropped,
        plugin_counters,
        matched: m.n,
        commands: commands.0,
        commands_refused: commands.1,
        mean_delay_ms: if m.n > 0 {
            m.sum as f64 / m.n as f64 / 1e6
        } else {
            0.0
        },
        max_delay_ms: m.max as f64 / 1e6,
    };
    Ok((out, summary, why))
}

/// Record arrivals at `source` and departures at `sink` in `trace`.
fn trace_ends(
    engine: &mut Engine,
    source: synthnet_core::AppId,
    sink: synthnet_core::AppId,
    trace: Option<&Trace>,
) {
    if let Some(s) = engine.app_mut::<CaptureSource>(source) {
        s.set_trace(trace.cloned());
    }
    if let Some(s) = engine.app_mut::<CaptureSink>(sink) {
        s.trace = trace.cloned();
    }
}

/// Sort what left by departure time (stable: simultaneous departures keep their
/// order), and the comments with it.
fn sort_departures(out: &mut Vec<Frame>, why: Option<Why>) -> Option<Why> {
    let Some(mut why) = why else {
        out.sort_by_key(|(ts, _)| *ts);
        return None;
    };
    why.comments.resize(out.len(), String::new());
    let mut both: Vec<(Frame, String)> = std::mem::take(out)
        .into_iter()
        .zip(std::mem::take(&mut why.comments))
        .collect();
    both.sort_by_key(|((ts, _), _)| *ts);
    (*out, why.comments) = both.into_iter().unzip();
    Some(why)
}

/// Run one direction of a spec offline over a capture, on a virtual clock.
#[derive(clap::Args, Debug)]
#[command(
    after_long_help = "Examples:\n  synthnet replay --spec specs/native.json --direction ingress --in specs/sample.pcap --out out.pcapng\n  synthnet replay --spec - --direction egress --in cap.pcap --out out.pcap --log why.jsonl --seed 7"
)]
pub struct ReplayArgs {
    /// The spec (JSON); `-` for the built-in default spec.
    #[arg(long)]
    pub spec: std::path::PathBuf,
    /// Which chain to run: `ingress` (outer → inner) or `egress` (inner → outer).
    #[arg(long)]
    pub direction: Direction,
    /// pcap or pcapng capture (Ethernet).
    #[arg(long = "in")]
    pub input: std::path::PathBuf,
    /// Where to write what leaves: nanosecond pcap, or pcapng when the name ends in
    /// `.pcapng` (then each packet's comment says what every stage did to it).
    #[arg(long = "out")]
    pub output: std::path::PathBuf,
    /// Write why each packet to FILE: one JSON line per event (arrival, each
    /// stage's decision and its reason, departure).
    #[arg(long)]
    pub log: Option<std::path::PathBuf>,
    /// Where to write what stages send back toward the sender (their reverse port);
    /// without it those packets are only counted.
    #[arg(long = "reverse-out")]
    pub reverse_out: Option<std::path::PathBuf>,
    /// Override the spec's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// A command log (`synthnet bridge --command-log`): hand each command to its
    /// stage at exactly its `at_ns`, counted from the capture's first packet.
    #[arg(long, value_name = "FILE")]
    pub commands: Option<std::path::PathBuf>,
}

impl ReplayArgs {
    /// Replay, write what left, print the summary.
    pub fn run(self) -> Result<std::process::ExitCode> {
        // What it prints may go to `head`: a closed pipe ends it quietly.
        synthnet_io::process::die_on_broken_pipe();
        let mut plan = super::load_plan(&self.spec)?;
        if let Some(s) = self.seed {
            plan.seed = s;
        }
        let capture = synthnet_io::pcap::stream_capture(&self.input)?;
        for note in &capture.notes {
            eprintln!("synthnet: note: {note}");
        }
        let commands = match &self.commands {
            Some(f) => cmdlog::read(f).map_err(|e| anyhow::anyhow!("--commands {e}"))?,
            None => Vec::new(),
        };
        let summary = replay_and_write(
            &plan,
            self.direction,
            capture.frames,
            &commands,
            &self.output,
            self.log.as_deref(),
            self.reverse_out.as_deref(),
        )?;
        if self.json {
            println!("{}", serde_json::to_string(&summary)?);
        } else {
            println!("{summary}");
            println!("wrote {}", self.output.display());
        }
        Ok(std::process::ExitCode::SUCCESS)
    }
}
