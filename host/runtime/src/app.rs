//! The plugin app: the engine app around one plugin instance.
//!
//! It writes each batch into the instance's memory, makes one call per batch, validates
//! every verdict before applying any, and keeps held packets in its own [`DelayLine`], so
//! packets survive an instance that traps, loops, eats memory or answers garbage (the
//! batch is dropped and counted, the instance restarted with backoff by its
//! [`Health`]), and survive a hot swap to a new instance. Instances arrive ready-made:
//! compiling and running a plugin's init happen off the packet thread, and
//! [`PluginApp::commit_swap`] only hands state over and takes the new instance in.
//!
//! Link ABI 1.1: packets the plugin parks wait in a [`ParkedQueue`] here (host packets
//! too: faults, restarts and swaps lose none), counted with the delay lines against the
//! stage's hold limit; the plugin releases or drops the oldest with an `ID_PARKED`
//! verdict. A plugin with two outputs sends on port 1, the reverse port, which has its
//! own delay line. [`PluginApp::command`] delivers a command between breaths and
//! applies its verdicts as a tick's.

use crate::instance::{Answer, Factory, Instance, PluginError};
use crate::supervisor::Health;
use std::rc::Rc;
use std::sync::Arc;
use synthnet_core::delay::{DelayLine, HoldShare, ParkedQueue};
use synthnet_core::trace::{Event, Trace, What};
use synthnet_core::{App, Counters, Ctx, DropCause, Packet};
use synthnet_sdk::abi::{self, access, Layout, RawDesc, RawVerdict};

/// What became of a running instance's state at a swap.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Handover {
    /// The new instance starts fresh (no state, or a different state version).
    Fresh,
    /// The running instance's state was handed to the new one.
    State,
    /// Handing state over failed; the new instance runs with what it has, and why is
    /// said here (a broken snapshot never blocks a change).
    Failed(String),
}

/// The engine app that runs one plugin instance.
pub struct PluginApp {
    /// Who this is in log lines (the stage's place, e.g. `ingress/default/latency`).
    label: Arc<str>,
    factory: Arc<dyn Factory>,
    seed: u64,
    inst: Option<Box<dyn Instance>>,
    lay: Layout,
    wake_at_ns: u64,
    delay: DelayLine,
    /// Held packets for port 1, the reverse port.
    delay_rev: DelayLine,
    parked: ParkedQueue,
    /// The stage's hold limit, over both delay lines and the parked queue. The port 0
    /// line's own limit is kept at what the others leave of it ([`PluginApp::fit`]), so
    /// the hot path checks nothing more than it did before ABI 1.1.
    hold_limit: usize,
    batch: Vec<Packet>,
    refs: Vec<u32>,
    /// Packets for port 0, now: sent in one go at the end of a batch.
    staged: Vec<Packet>,
    /// The same for port 1.
    staged_rev: Vec<Packet>,
    counters: Counters,
    health: Health,
    /// Why each packet (`replay --log`): checked once per batch; `None` live.
    trace: Option<Trace>,
}

/// Why a command was not answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The plugin exports no `synthnet_command`.
    #[error("takes no commands")]
    NoCommands,
    /// The plugin refused it; its message.
    #[error("refused the command: {0}")]
    Refused(String),
    /// The call trapped, ran past its deadline or answered garbage: the instance was
    /// restarted, as after a batch's fault.
    #[error("faulted on the command ({0}); restarting")]
    Fault(String),
    /// The instance is down, waiting to restart after a fault.
    #[error("is down after a fault ({0}); try again")]
    Down(String),
}

/// Default bound on the packets one plugin app may hold in its delay line.
pub const DEFAULT_HOLD_LIMIT: usize = 1 << 16;

/// Refuse what a stage cannot run: synthnet connects one input and one output per stage,
/// and the reverse port (ABI 1.1) as a second output.
pub fn check_ports(plugin: &str, lay: &Layout) -> Result<(), PluginError> {
    if lay.n_inputs != 1 || !(1..=abi::MAX_OUTPUTS).contains(&lay.n_outputs) {
        return Err(PluginError::new(
            plugin,
            format!(
                "declares {} inputs and {} outputs, but a stage has exactly one input and one output, or two with the reverse port",
                lay.n_inputs, lay.n_outputs
            ),
        ));
    }
    Ok(())
}

impl PluginApp {
    /// A plugin app around `inst`, an instance `factory` made with `seed`.
    pub fn new(
        label: impl Into<Arc<str>>,
        inst: Box<dyn Instance>,
        factory: Arc<dyn Factory>,
        seed: u64,
        hold_limit: usize,
    ) -> Result<Self, PluginError> {
        let lay = inst.layout().clone();
        check_ports(factory.plugin(), &lay)?;
        Ok(PluginApp {
            label: label.into(),
            factory,
            seed,
            inst: Some(inst),
            lay,
            wake_at_ns: abi::NO_WAKE,
            delay: DelayLine::new(hold_limit),
            delay_rev: DelayLine::new(hold_limit),
            parked: ParkedQueue::default(),
            hold_limit,
            // Grown to the batches that come (`run_batch`): an idle stage of ten
            // thousand costs no batch buffers.
            batch: Vec::new(),
            refs: Vec::new(),
            staged: Vec::new(),
            staged_rev: Vec::new(),
            counters: Counters::default(),
            health: Health::default(),
            trace: None,
        })
    }

    /// Record what this stage does to each packet in `trace` (`None`: stop).
    pub fn set_trace(&mut self, trace: Option<Trace>) {
        self.trace = trace;
    }

    /// Instantiate `factory` here and now (tools and tests; the bridge instantiates off
    /// its packet thread and uses [`PluginApp::new`]).
    pub fn instantiate(
        label: impl Into<Arc<str>>,
        factory: Arc<dyn Factory>,
        seed: u64,
        hold_limit: usize,
    ) -> Result<Self, PluginError> {
        let inst = factory.instantiate(seed)?;
        Self::new(label, inst, factory, seed, hold_limit)
    }

    pub fn factory(&self) -> &Arc<dyn Factory> {
        &self.factory
    }
    pub fn health(&self) -> &Health {
        &self.health
    }
    /// Count the packets this stage holds against `shares` of the pool (its chain's and
    /// its direction's).
    pub fn set_shares(&mut self, shares: Vec<Rc<HoldShare>>) {
        self.delay.set_shares(shares.clone());
        self.delay_rev.set_shares(shares.clone());
        self.parked.set_shares(shares);
    }

    /// Share the stage's hold limit out again after the parked queue or the reverse
    /// port's line changed: each line may take what the other two leave.
    fn fit(&mut self) {
        let (d, r, p) = (self.delay.len(), self.delay_rev.len(), self.parked.len());
        self.delay.set_limit(self.hold_limit.saturating_sub(r + p));
        self.delay_rev
            .set_limit(self.hold_limit.saturating_sub(d + p));
    }

    /// Output ports of the running plugin: 1, or 2 with the reverse port.
    pub fn outputs(&self) -> u16 {
        self.lay.n_outputs
    }

    /// Packets parked (ABI 1.1), waiting for the plugin to release them.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// Give up the packets held or parked for the reverse port (the stage is being
    /// removed: they still go back toward their sender, not on toward the receiver).
    pub fn drain_reverse(&mut self) -> Vec<Packet> {
        let mut ps = self.parked.take_port(1);
        ps.extend(self.delay_rev.drain());
        ps
    }

    /// The seed the running instance was made with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Replace the instance with `inst` (made by `factory` with `seed`, off the packet
    /// thread), keeping every held packet. State is handed over when old and new declare
    /// the same non-zero state version. Call between breaths.
    pub fn commit_swap(
        &mut self,
        mut inst: Box<dyn Instance>,
        factory: Arc<dyn Factory>,
        seed: u64,
    ) -> Handover {
        let new_ver = inst.layout().state_version;
        let handover = match self.inst.as_mut() {
            Some(old) if new_ver != 0 && old.layout().state_version == new_ver => {
                match old.snapshot().and_then(|s| inst.restore(&s)) {
                    Ok(()) => Handover::State,
                    Err(e) => {
                        log::warn!("{}: state not handed over: {e}", self.label);
                        Handover::Failed(e)
                    }
                }
            }
            _ => Handover::Fresh,
        };
        self.lay = inst.layout().clone();
        self.inst = Some(inst);
        self.factory = factory;
        self.seed = seed;
        self.wake_at_ns = abi::NO_WAKE;
        self.health.swapped();
        handover
    }

    fn fault(&mut self, now_ns: u64, msg: String) {
        log::warn!("{}: {msg}; restarting", self.label);
        self.inst = None;
        self.health.fault(now_ns, msg);
        self.wake_at_ns = abi::NO_WAKE;
    }

    fn try_restart(&mut self, now_ns: u64) {
        if self.inst.is_some() || now_ns < self.health.retry_at_ns() {
            return;
        }
        let made = self.factory.instantiate(self.seed).and_then(|i| {
            check_ports(self.factory.plugin(), i.layout())?;
            Ok(i)
        });
        match made {
            Ok(i) => {
                self.lay = i.layout().clone();
                self.inst = Some(i);
                self.health.restarted();
            }
            Err(e) => self.fault(now_ns, format!("restart failed: {}", e.message)),
        }
    }

    /// Move due packets from the delay line to the output while there is room, in one
    /// bulk transmit.
    fn release(&mut self, cx: &mut Ctx<'_>) {
        let room0 = cx.room(0);
        let staged = &mut self.staged;
        self.delay.release(cx.now_ns, |p| {
            if staged.len() >= room0 {
                return false;
            }
            staged.push(p);
            true
        });
        cx.transmit_all(0, staged, &mut self.counters);
        staged.clear();
        if !self.delay_rev.is_empty() {
            let room1 = reverse_room(cx);
            let staged = &mut self.staged_rev;
            self.delay_rev.release(cx.now_ns, |p| {
                if staged.len() >= room1 {
                    return false;
                }
                staged.push(p);
                true
            });
            cx.transmit_all(1, staged, &mut self.counters);
            staged.clear();
            self.fit();
        }
    }

    /// Run one batch of `n` packets (0 = timer tick) through the instance.
    fn run_batch(&mut self, cx: &mut Ctx<'_>, n: usize) {
        // The instance is out of its slot during the call; it goes back unless it faulted.
        let Some(mut inst) = self.inst.take() else {
            return;
        };
        let lay = self.lay.clone();
        let now = cx.now_ns;
        if self.batch.len() < n {
            let room = n
                .next_power_of_two()
                .min(abi::MAX_BATCH_LIMIT as usize)
                .max(n);
            self.batch.resize(room, Packet::default());
            self.refs.resize(room, 0);
        }
        let n = cx.receive_into(0, &mut self.batch[..n]);
        self.counters.rx_packets += n as u64;
        self.counters.rx_bytes += self.batch[..n].iter().map(|p| p.len as u64).sum::<u64>();
        let mem = inst.memory();
        if lay.access != access::META {
            for (i, p) in self.batch[..n].iter().enumerate() {
                // A plugin that sees the whole packet may change any byte of it: a
                // pending checksum is finished first, so the change shows (see
                // `PacketPool::finish_checksum`).
                if lay.access == access::FULL {
                    cx.pool.finish_checksum(p);
                }
                let cap = p.len.min(lay.snap_len) as usize;
                let at = lay.slot_addr(i as u32) as usize;
                if let Some(dst) = mem.get_mut(at..at + cap) {
                    dst.copy_from_slice(&cx.pool.data(p)[..cap]);
                }
            }
        }
        let Some(descs) = abi::desc_chunks(mem, &lay, n as u32) else {
            // Cannot happen: the layout was validated against this memory.
            self.drop_batch(cx, n, DropCause::PluginFault);
            self.fault(now, "descriptor array outside memory".into());
            return;
        };
        for ((i, p), d) in self.batch[..n].iter().enumerate().zip(descs) {
            let (mut data_off, mut cap, mut flags) = (0, 0, 0);
            if lay.access != access::META {
                cap = p.len.min(lay.snap_len);
                data_off = lay.slot_addr(i as u32);
                if cap < p.len {
                    flags = abi::DF_TRUNCATED;
                }
            }
            let desc = RawDesc {
                id: i as u32,
                wire_len: cx.pool.wire_len(p),
                data_off,
                cap_len: cap,
                in_port: 0,
                flags,
                arrival_ns: p.ts_ns,
            };
            if let Ok(d) = d.try_into() {
                desc.encode(d);
            }
        }
        let nv = match inst.process(n as u32, now) {
            Ok(nv) => nv,
            Err(e) => {
                self.drop_batch(cx, n, DropCause::PluginFault);
                self.fault(now, format!("fault: {e}"));
                return;
            }
        };
        if self.answer(cx, inst, n, nv).is_err() {
            self.drop_batch(cx, n, DropCause::BadVerdict);
        }
    }

    /// Read the timer and carry out the `nv` verdicts `inst` wrote for a batch of `n`
    /// (0: a tick or a command), after checking them all. The instance goes back in its
    /// slot, unless the verdicts are garbage: then it faults, and the message is
    /// returned (the caller drops the batch).
    fn answer(
        &mut self,
        cx: &mut Ctx<'_>,
        mut inst: Box<dyn Instance>,
        n: usize,
        nv: u32,
    ) -> Result<(), String> {
        let lay = self.lay.clone();
        let now = cx.now_ns;
        let mem = inst.memory();
        // A wake-up at or before this call's `now` asks for nothing this call did not
        // already do: it is no timer (or a plugin could make the engine spin).
        self.wake_at_ns = abi::le::u64_at(mem, lay.header as usize + abi::hdr::WAKE_AT_NS)
            .filter(|&t| t > now)
            .unwrap_or(abi::NO_WAKE);
        let batch = &self.batch[..n];
        match abi::validate(
            mem,
            &lay,
            |i| batch[i].len,
            n,
            nv,
            cx.pool.max_len(),
            &mut self.refs,
        ) {
            Ok(true) => self.apply_in_order(cx, mem, &lay, n),
            Ok(false) => self.apply(cx, mem, &lay, n, nv),
            Err(e) => {
                let msg = format!("garbage verdict: {e}");
                self.fault(now, msg.clone());
                return Err(msg);
            }
        }
        self.inst = Some(inst);
        Ok(())
    }

    /// Deliver command `cmd` (JSON text) at `cx.now_ns`, between breaths: the plugin
    /// answers it as a tick, and the verdicts it writes are applied as a tick's. A
    /// timer already due ticks first, as it would in the next breath. A stage that is
    /// down tries its restart first.
    pub fn command(&mut self, cx: &mut Ctx<'_>, cmd: &[u8]) -> Result<Vec<u8>, CommandError> {
        let now = cx.now_ns;
        if self.inst.is_none() {
            self.try_restart(now);
        }
        if self.inst.is_some() && self.wake_at_ns <= now {
            self.run_batch(cx, 0);
        }
        let Some(mut inst) = self.inst.take() else {
            let why = self.health.last_error.clone().unwrap_or_default();
            return Err(CommandError::Down(why));
        };
        match inst.command(cmd, now) {
            Ok(Answer::Reply { verdicts, reply }) => {
                self.answer(cx, inst, 0, verdicts)
                    .map_err(CommandError::Fault)?;
                Ok(reply)
            }
            Ok(Answer::Refused(msg)) => {
                self.inst = Some(inst);
                Err(CommandError::Refused(msg))
            }
            Ok(Answer::NoCommands) => {
                self.inst = Some(inst);
                Err(CommandError::NoCommands)
            }
            Err(e) => {
                let msg = format!("fault: {e}");
                self.fault(now, msg.clone());
                Err(CommandError::Fault(msg))
            }
        }
    }

    /// [`PluginApp::apply`] for the common shape: verdict `j` is packet `j`'s only one.
    fn apply_in_order(&mut self, cx: &mut Ctx<'_>, mem: &[u8], lay: &Layout, n: usize) {
        let now = cx.now_ns;
        let Some(chunks) = abi::verdict_chunks(mem, lay, n as u32) else {
            return;
        };
        let mut dropped = 0;
        let mut out = self.out(cx, now, &mut dropped);
        for (c, &p) in chunks.zip(&out.batch[..n]) {
            let Ok(c) = c.try_into() else { continue };
            let v = RawVerdict::decode(c);
            out.place(cx, now, v.port, v.at_ns, p);
        }
        if let Some(t) = &self.trace {
            trace_in_order(t, &self.label, now, mem, lay, &self.batch[..n]);
        }
        self.counters.drop(DropCause::Plugin, dropped);
        self.flush(cx);
    }

    /// Where the verdicts of a batch at `now` put packets.
    fn out<'s>(&'s mut self, cx: &Ctx<'_>, now: u64, dropped: &'s mut u64) -> Out<'s> {
        Out {
            room0: room_now(&self.delay, cx, now),
            room1: if self.delay_rev.next_at().is_some_and(|t| t <= now) {
                0
            } else {
                reverse_room(cx)
            },
            hold_limit: self.hold_limit,
            parked: self.parked.len(),
            batch: &self.batch,
            staged: &mut self.staged,
            staged_rev: &mut self.staged_rev,
            delay: &mut self.delay,
            delay_rev: &mut self.delay_rev,
            counters: &mut self.counters,
            dropped,
        }
    }

    /// Send what the batch staged for now, in one bulk transmit per port.
    fn flush(&mut self, cx: &mut Ctx<'_>) {
        cx.transmit_all(0, &self.staged, &mut self.counters);
        self.staged.clear();
        if !self.staged_rev.is_empty() {
            cx.transmit_all(1, &self.staged_rev, &mut self.counters);
            self.staged_rev.clear();
        }
    }

    /// Carry out the batch's `nv` verdicts, already validated.
    fn apply(&mut self, cx: &mut Ctx<'_>, mem: &[u8], lay: &Layout, n: usize, nv: u32) {
        let now = cx.now_ns;
        // Packets nobody claimed.
        for i in 0..n {
            if self.refs[i] == 0 {
                cx.pool.free(self.batch[i]);
                self.counters.drop(DropCause::NoVerdict, 1);
                if let Some(t) = &self.trace {
                    t.record([event(
                        &self.label,
                        now,
                        self.batch[i].id,
                        What::Dropped {
                            cause: "no_verdict",
                        },
                        false,
                    )]);
                }
            }
        }
        let Some(chunks) = abi::verdict_chunks(mem, lay, nv) else {
            return;
        };
        let mut dropped = 0;
        for c in chunks {
            let Ok(c) = c.try_into() else { continue };
            let v = RawVerdict::decode(c);
            if v.id == abi::verdict::ID_PARKED {
                let ps = self.parked.take(v.data_len as usize);
                self.fit();
                if let Some(t) = &self.trace {
                    let what = Trace::verdict(now, v.port, v.at_ns.max(now), abi::PORT_DROP);
                    t.record(
                        ps.iter()
                            .map(|(p, _)| event(&self.label, now, p.id, what.clone(), false)),
                    );
                }
                if v.port == abi::PORT_DROP {
                    dropped += ps.len() as u64;
                    for (p, _) in ps {
                        cx.pool.free(p);
                    }
                    continue;
                }
                // Released packets leave no earlier than now: the time they waited
                // parked is part of their way through this stage.
                let at = v.at_ns.max(now);
                let outputs = lay.n_outputs;
                let mut out = self.out(cx, now, &mut dropped);
                for (p, port) in ps {
                    // Parked by an instance with a reverse port that a swap took away.
                    let port = if port < outputs { port } else { 0 };
                    out.place(cx, now, port, at, p);
                }
                continue;
            }
            let mut p = if v.id == abi::ID_NEW {
                if v.port == abi::PORT_DROP {
                    continue;
                }
                match cx.pool.alloc_from(v.bytes(mem, lay).unwrap_or(&[]), now) {
                    Some(p) => p,
                    None => {
                        self.counters.drop(DropCause::PoolEmpty, 1);
                        continue;
                    }
                }
            } else {
                // Every verdict naming a packet gets the packet as it arrived: all but
                // the last get a copy, the last gets the original.
                let i = v.id as usize;
                self.refs[i] -= 1;
                if self.refs[i] == 0 {
                    self.batch[i]
                } else {
                    match cx.pool.clone_packet(&self.batch[i]) {
                        Some(p) => p,
                        None => {
                            self.counters.drop(DropCause::PoolEmpty, 1);
                            continue;
                        }
                    }
                }
            };
            if v.flags & abi::VF_REPLACE != 0 && v.id != abi::ID_NEW && v.port != abi::PORT_DROP {
                let old = if lay.access == access::META {
                    0
                } else {
                    p.len.min(lay.snap_len) as usize
                };
                if !cx
                    .pool
                    .replace_prefix(&mut p, old, v.bytes(mem, lay).unwrap_or(&[]))
                {
                    cx.pool.free(p);
                    self.counters.drop(DropCause::TooBig, 1);
                    continue;
                }
            }
            if let Some(t) = &self.trace {
                let made = if v.id == abi::ID_NEW {
                    Some(What::Injected)
                } else if p.id != self.batch[v.id as usize].id {
                    Some(What::Copied {
                        of: self.batch[v.id as usize].id,
                    })
                } else {
                    None
                };
                let modified = v.flags & abi::VF_REPLACE != 0;
                let what = if v.flags & abi::VF_PARK != 0 {
                    What::Parked
                } else {
                    Trace::verdict(now, v.port, v.at_ns, abi::PORT_DROP)
                };
                t.record(
                    made.map(|m| event(&self.label, now, p.id, m, false))
                        .into_iter()
                        .chain([event(&self.label, now, p.id, what, modified)]),
                );
            }
            if v.flags & abi::VF_PARK != 0 {
                let held = self.delay.len() + self.delay_rev.len() + self.parked.len();
                let parked = if held < self.hold_limit {
                    self.parked.push(p, v.port)
                } else {
                    Err(p)
                };
                if let Err(p) = parked {
                    cx.pool.free(p);
                    self.counters.drop(DropCause::HoldFull, 1);
                }
                self.fit();
                continue;
            }
            self.out(cx, now, &mut dropped)
                .place(cx, now, v.port, v.at_ns, p);
        }
        self.counters.drop(DropCause::Plugin, dropped);
        self.flush(cx);
    }

    fn drop_batch(&mut self, cx: &mut Ctx<'_>, n: usize, cause: DropCause) {
        for &p in &self.batch[..n] {
            cx.pool.free(p);
        }
        if let Some(t) = &self.trace {
            let what = What::Dropped {
                cause: cause.name(),
            };
            t.record(
                self.batch[..n]
                    .iter()
                    .map(|p| event(&self.label, cx.now_ns, p.id, what.clone(), false)),
            );
        }
        self.counters.drop(cause, n as u64);
    }

    /// The counters the plugin publishes (names from its header); empty while it is
    /// down.
    pub fn plugin_counters(&mut self) -> Vec<(String, u64)> {
        let lay = self.lay.clone();
        match self.inst.as_mut() {
            Some(i) => abi::read_counters(i.memory(), &lay),
            None => Vec::new(),
        }
    }
}

/// A trace event of this stage.
fn event(label: &Arc<str>, now: u64, packet: u32, what: What, modified: bool) -> Event {
    Event {
        at_ns: now,
        packet,
        stage: Some(label.clone()),
        what,
        modified,
    }
}

/// Trace a batch whose verdict `j` was packet `j`'s only one (the common shape).
fn trace_in_order(
    t: &Trace,
    label: &Arc<str>,
    now: u64,
    mem: &[u8],
    lay: &Layout,
    batch: &[Packet],
) {
    let Some(chunks) = abi::verdict_chunks(mem, lay, batch.len() as u32) else {
        return;
    };
    t.record(chunks.zip(batch).filter_map(|(c, p)| {
        let v = RawVerdict::decode(c.try_into().ok()?);
        let what = Trace::verdict(now, v.port, v.at_ns, abi::PORT_DROP);
        Some(event(label, now, p.id, what, false))
    }));
}

/// Room on the output for packets due now: none while held packets are already due
/// (they leave first, in order), else what the output link has free.
#[inline(always)]
fn room_now(delay: &DelayLine, cx: &Ctx<'_>, now: u64) -> usize {
    if delay.next_at().is_some_and(|t| t <= now) {
        0
    } else {
        cx.room(0)
    }
}

/// Room on the reverse port (1): what its link has free, or no limit when it is not
/// connected (then what is sent there is dropped as `link_full` at once, rather than
/// piling up in the delay line).
#[inline]
fn reverse_room(cx: &Ctx<'_>) -> usize {
    if cx.n_outputs() > 1 {
        cx.room(1)
    } else {
        usize::MAX
    }
}

/// Where a verdict's packet goes: staged for an output, a delay line, or dropped.
struct Out<'a> {
    hold_limit: usize,
    /// Packets parked (the reverse port's line fits its limit around them).
    parked: usize,
    batch: &'a [Packet],
    staged: &'a mut Vec<Packet>,
    staged_rev: &'a mut Vec<Packet>,
    delay: &'a mut DelayLine,
    delay_rev: &'a mut DelayLine,
    counters: &'a mut Counters,
    dropped: &'a mut u64,
    /// Room on output 0 for this batch: beyond it (or behind packets already due in
    /// the delay line), packets due now wait in the delay line instead of being dropped
    /// on a full link — a stalled engine catching up loses nothing.
    room0: usize,
    /// The same for the reverse port.
    room1: usize,
}

impl Out<'_> {
    /// Send, hold or drop one packet per its verdict (validated: the port is 0, 1 on a
    /// plugin with a reverse port, or drop). Packets due now are staged and go out in
    /// one bulk transmit.
    #[inline(always)]
    fn place(&mut self, cx: &mut Ctx<'_>, now: u64, port: u16, at_ns: u64, mut p: Packet) {
        let (staged, room) = match port {
            0 => (&mut *self.staged, self.room0),
            abi::PORT_DROP => {
                cx.pool.free(p);
                *self.dropped += 1;
                return;
            }
            _ => (&mut *self.staged_rev, self.room1),
        };
        if at_ns <= now && staged.len() < room {
            p.ts_ns = p.ts_ns.max(at_ns);
            staged.push(p);
            return;
        }
        let held = if port == 0 {
            self.delay.push(at_ns, p)
        } else {
            // The reverse port, off the hot path: its line takes what the port 0 line
            // and the parked queue leave of the stage's limit, and the port 0 line
            // gives up what it takes.
            let others = self.delay.len() + self.parked;
            self.delay_rev
                .set_limit(self.hold_limit.saturating_sub(others));
            let held = self.delay_rev.push(at_ns, p);
            self.delay.set_limit(
                self.hold_limit
                    .saturating_sub(self.delay_rev.len() + self.parked),
            );
            held
        };
        if let Err(p) = held {
            cx.pool.free(p);
            self.counters.drop(DropCause::HoldFull, 1);
        }
    }
}

impl App for PluginApp {
    fn breathe(&mut self, cx: &mut Ctx<'_>) {
        self.release(cx);
        if self.inst.is_none() {
            self.try_restart(cx.now_ns);
        }
        if self.inst.is_none() {
            let mut dropped = 0;
            while let Some(p) = cx.receive(0) {
                cx.pool.free(p);
                dropped += 1;
                if let Some(t) = &self.trace {
                    t.record([event(
                        &self.label,
                        cx.now_ns,
                        p.id,
                        What::Dropped {
                            cause: "plugin_down",
                        },
                        false,
                    )]);
                }
            }
            self.counters.drop(DropCause::PluginDown, dropped);
            return;
        }
        if self.wake_at_ns <= cx.now_ns {
            self.run_batch(cx, 0);
        }
        loop {
            let n = cx.pending(0).min(self.lay.max_batch as usize);
            if n == 0 || self.inst.is_none() {
                break;
            }
            self.run_batch(cx, n);
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        let wake = (self.wake_at_ns != abi::NO_WAKE).then_some(self.wake_at_ns);
        let retry = self.inst.is_none().then_some(self.health.retry_at_ns());
        [self.delay.next_at(), self.delay_rev.next_at(), wake, retry]
            .into_iter()
            .flatten()
            .min()
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn held(&self) -> usize {
        self.delay.len() + self.delay_rev.len() + self.parked.len()
    }

    /// Held packets, then parked ones (oldest first), then those held for the reverse
    /// port (unless [`PluginApp::drain_reverse`] took them).
    fn drain_held(&mut self) -> Vec<Packet> {
        let mut ps = self.delay.drain();
        ps.extend(self.parked.take(0).into_iter().map(|(p, _)| p));
        ps.extend(self.delay_rev.drain());
        ps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The review's R2: a plugin declaring a second output (which no stage connects)
    /// wedged its stage; it is refused when it loads, naming the counts.
    #[test]
    fn plugins_with_more_than_one_input_or_output_are_refused() {
        let lay = |n_inputs, n_outputs| Layout {
            header: 0,
            max_batch: 1,
            max_verdicts: 1,
            access: access::META,
            snap_len: 0,
            slot_size: 0,
            n_inputs,
            n_outputs,
            desc_off: 0,
            verdict_off: 0,
            data_off: 0,
            emit_off: 0,
            emit_cap: 0,
            counters_off: 0,
            n_counters: 0,
            names_off: 0,
            names_len: 0,
            state_version: 0,
            region_len: 0,
        };
        assert!(check_ports("p", &lay(1, 1)).is_ok());
        assert!(check_ports("p", &lay(1, 2)).is_ok(), "the reverse port");
        let e = check_ports("p", &lay(1, 3)).unwrap_err();
        assert!(e.to_string().contains("1 inputs and 3 outputs"), "{e}");
        assert!(check_ports("p", &lay(2, 1)).is_err());
        assert!(check_ports("p", &lay(1, 0)).is_err());
    }
}
