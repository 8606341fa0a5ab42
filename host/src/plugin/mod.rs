//! Plugins: the host side of the link ABI.
//!
//! A [`Factory`] makes [`Instance`]s of one plugin with one configuration: from a wasm
//! module ([`wasm`]) or from the same plugin source compiled natively ([`native`], for
//! benchmarks and the native-vs-wasm differential tests). A [`PluginApp`] is the engine
//! app around an instance: it writes batches into the instance's memory, makes one call
//! per batch, validates every verdict before applying any, and keeps held packets in its
//! own [`DelayLine`] — so packets survive an instance that traps, loops, eats memory or
//! answers garbage (the batch is dropped and counted, the instance is restarted with
//! backoff), and survive a hot swap to a new instance.

pub mod builtin;
pub mod native;
pub mod wasm;

use crate::delay::DelayLine;
use crate::engine::{App, Counters, Ctx, DropCause};
use crate::packet::Packet;
use std::any::Any;
use std::sync::Arc;
use synthnet_sdk::abi::{self, access, Layout, RawDesc, RawVerdict};

/// Why a plugin could not be loaded, configured or instantiated.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("plugin {plugin}: {message}")]
pub struct PluginError {
    pub plugin: String,
    pub message: String,
}

impl PluginError {
    pub fn new(plugin: impl Into<String>, message: impl Into<String>) -> Self {
        PluginError {
            plugin: plugin.into(),
            message: message.into(),
        }
    }
}

/// Which runtime an instance runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Wasm,
    Native,
}

/// One live plugin instance.
pub trait Instance: Send {
    /// The validated region layout.
    fn layout(&self) -> &Layout;
    /// The memory the layout's addresses refer to.
    fn memory(&mut self) -> &mut [u8];
    /// `synthnet_process(n, now_ns)`: the number of verdicts, or why the call failed.
    fn process(&mut self, n: u32, now_ns: u64) -> Result<u32, String>;
    /// The plugin's state for a hand-over (empty if it keeps none).
    fn snapshot(&mut self) -> Result<Vec<u8>, String>;
    fn restore(&mut self, state: &[u8]) -> Result<(), String>;
    fn runtime(&self) -> Runtime;
}

/// Makes instances of one plugin with one configuration.
pub trait Factory: Send + Sync {
    /// The plugin's name (built-in name or file path).
    fn plugin(&self) -> &str;
    fn runtime(&self) -> Runtime;
    /// A fresh, initialised instance.
    fn instantiate(&self, seed: u64) -> Result<Box<dyn Instance>, PluginError>;
    /// Identity of code + config, to tell whether a reload changed anything.
    fn fingerprint(&self) -> u64;
}

/// Backoff before restarting a faulted instance: 1 ms, doubling to 5 s.
const BACKOFF_MIN_NS: u64 = 1_000_000;
const BACKOFF_MAX_NS: u64 = 5_000_000_000;

/// Fault and restart bookkeeping of a [`PluginApp`].
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Health {
    pub faults: u64,
    pub restarts: u64,
    pub swaps: u64,
    pub last_error: Option<String>,
    #[serde(skip)]
    backoff_ns: u64,
    #[serde(skip)]
    retry_at_ns: u64,
}

/// A new instance ready to replace a running one ([`PluginApp::prepare_swap`]).
pub struct PreparedSwap {
    inst: Box<dyn Instance>,
    factory: Arc<dyn Factory>,
    seed: u64,
    handed_over: bool,
}

/// The engine app that runs one plugin instance.
pub struct PluginApp {
    name: String,
    factory: Arc<dyn Factory>,
    seed: u64,
    inst: Option<Box<dyn Instance>>,
    lay: Layout,
    wake_at_ns: u64,
    delay: DelayLine,
    batch: Vec<Packet>,
    refs: Vec<u32>,
    /// Packets for port 0, now: sent in one go at the end of a batch.
    staged: Vec<Packet>,
    counters: Counters,
    health: Health,
}

/// Default bound on the packets one plugin app may hold in its delay line.
pub const DEFAULT_HOLD_LIMIT: usize = 1 << 16;

impl PluginApp {
    /// Instantiate `factory` now; an error here is a configuration error.
    pub fn new(
        name: impl Into<String>,
        factory: Arc<dyn Factory>,
        seed: u64,
        hold_limit: usize,
    ) -> Result<Self, PluginError> {
        let inst = factory.instantiate(seed)?;
        let lay = inst.layout().clone();
        Ok(PluginApp {
            name: name.into(),
            factory,
            seed,
            inst: Some(inst),
            lay,
            wake_at_ns: abi::NO_WAKE,
            delay: DelayLine::new(hold_limit),
            batch: vec![Packet::default(); abi::MAX_BATCH_LIMIT as usize],
            refs: vec![0; abi::MAX_BATCH_LIMIT as usize],
            staged: Vec::with_capacity(4 * abi::MAX_BATCH_LIMIT as usize),
            counters: Counters::default(),
            health: Health::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn factory(&self) -> &Arc<dyn Factory> {
        &self.factory
    }
    pub fn health(&self) -> &Health {
        &self.health
    }
    pub fn is_up(&self) -> bool {
        self.inst.is_some()
    }

    /// Replace the instance with one from `factory`, keeping every held packet. State is
    /// handed over when old and new declare the same non-zero state version. On error
    /// the running instance is untouched. Call between breaths.
    pub fn swap(&mut self, factory: Arc<dyn Factory>, seed: u64) -> Result<(), PluginError> {
        let prepared = self.prepare_swap(factory, seed)?;
        self.commit_swap(prepared);
        Ok(())
    }

    /// The fallible half of [`PluginApp::swap`]: a new instance, with the running one's
    /// state handed over when both support it. Changes nothing here, so a reload can
    /// prepare every swap first and commit them all or none.
    pub fn prepare_swap(
        &mut self,
        factory: Arc<dyn Factory>,
        seed: u64,
    ) -> Result<PreparedSwap, PluginError> {
        let mut new = factory.instantiate(seed)?;
        let new_ver = new.layout().state_version;
        let mut handed_over = false;
        if let Some(old) = self.inst.as_mut() {
            if new_ver != 0 && old.layout().state_version == new_ver {
                let state = old.snapshot().map_err(|e| {
                    PluginError::new(
                        factory.plugin(),
                        format!("snapshot of the running instance failed: {e}"),
                    )
                })?;
                new.restore(&state).map_err(|e| {
                    PluginError::new(factory.plugin(), format!("restoring state failed: {e}"))
                })?;
                handed_over = true;
            }
        }
        Ok(PreparedSwap {
            inst: new,
            factory,
            seed,
            handed_over,
        })
    }

    /// The infallible half of [`PluginApp::swap`]. Returns whether state was handed over.
    pub fn commit_swap(&mut self, p: PreparedSwap) -> bool {
        self.lay = p.inst.layout().clone();
        self.inst = Some(p.inst);
        self.factory = p.factory;
        self.seed = p.seed;
        self.wake_at_ns = abi::NO_WAKE;
        self.health.swaps += 1;
        self.health.backoff_ns = 0;
        p.handed_over
    }

    /// The seed the running instance was made with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn fault(&mut self, now_ns: u64, msg: String) {
        log::warn!("plugin app {}: {msg}; restarting", self.name);
        self.inst = None;
        self.health.faults += 1;
        self.health.last_error = Some(msg);
        self.health.backoff_ns = (self.health.backoff_ns * 2).clamp(BACKOFF_MIN_NS, BACKOFF_MAX_NS);
        self.health.retry_at_ns = now_ns.saturating_add(self.health.backoff_ns);
        self.wake_at_ns = abi::NO_WAKE;
    }

    fn try_restart(&mut self, now_ns: u64) {
        if self.inst.is_some() || now_ns < self.health.retry_at_ns {
            return;
        }
        match self.factory.instantiate(self.seed) {
            Ok(i) => {
                self.lay = i.layout().clone();
                self.inst = Some(i);
                self.health.restarts += 1;
            }
            Err(e) => self.fault(now_ns, format!("restart failed: {}", e.message)),
        }
    }

    /// Move due packets from the delay line to their output ports, while there is room.
    /// Port 0 (every built-in plugin's only port) goes out in one bulk transmit.
    fn release(&mut self, cx: &mut Ctx<'_>) {
        let room0 = cx.room(0);
        let (counters, staged) = (&mut self.counters, &mut self.staged);
        self.delay.release(cx.now_ns, |port, p| {
            if port == 0 {
                if staged.len() >= room0 {
                    return false;
                }
                staged.push(p);
            } else {
                if cx.room(port as usize) == 0 {
                    return false;
                }
                cx.transmit(port as usize, p, counters);
            }
            true
        });
        cx.transmit_all(0, staged, counters);
        staged.clear();
    }

    /// Run one batch of `n` packets (0 = timer tick) through the instance.
    fn run_batch(&mut self, cx: &mut Ctx<'_>, n: usize) {
        // The instance is out of its slot during the call; it goes back unless it faulted.
        let Some(mut inst) = self.inst.take() else {
            return;
        };
        let lay = self.lay.clone();
        let now = cx.now_ns;
        let n = cx.receive_into(0, &mut self.batch[..n]);
        self.counters.rx_packets += n as u64;
        self.counters.rx_bytes += self.batch[..n].iter().map(|p| p.len as u64).sum::<u64>();
        let mem = inst.memory();
        if lay.access != access::META {
            for (i, p) in self.batch[..n].iter().enumerate() {
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
        let mem = inst.memory();
        self.wake_at_ns = abi::le::u64_at(mem, lay.header as usize + abi::hdr::WAKE_AT_NS)
            .unwrap_or(abi::NO_WAKE);
        match validate(
            mem,
            &lay,
            &self.batch[..n],
            nv,
            cx.pool.max_len(),
            &mut self.refs,
        ) {
            Ok(true) => self.apply_in_order(cx, mem, &lay, n),
            Ok(false) => self.apply(cx, mem, &lay, n, nv),
            Err(e) => {
                self.drop_batch(cx, n, DropCause::BadVerdict);
                self.fault(now, format!("garbage verdict: {e}"));
                return;
            }
        }
        self.inst = Some(inst);
    }

    /// [`PluginApp::apply`] for the common shape: verdict `j` is packet `j`'s only one.
    fn apply_in_order(&mut self, cx: &mut Ctx<'_>, mem: &[u8], lay: &Layout, n: usize) {
        let now = cx.now_ns;
        let Some(chunks) = abi::verdict_chunks(mem, lay, n as u32) else {
            return;
        };
        let mut dropped = 0;
        let Self {
            batch,
            staged,
            delay,
            counters,
            ..
        } = self;
        let room0 = if delay.next_at().is_some_and(|t| t <= now) {
            0
        } else {
            cx.room(0)
        };
        let mut out = Out {
            staged,
            delay,
            counters,
            dropped: &mut dropped,
            room0,
        };
        for (c, &p) in chunks.zip(&batch[..n]) {
            let Ok(c) = c.try_into() else { continue };
            let v = RawVerdict::decode(c);
            out.place(cx, now, v.port, v.at_ns, p);
        }
        self.counters.drop(DropCause::Plugin, dropped);
        cx.transmit_all(0, &self.staged, &mut self.counters);
        self.staged.clear();
    }

    /// Carry out the batch's `nv` verdicts, already validated.
    fn apply(&mut self, cx: &mut Ctx<'_>, mem: &[u8], lay: &Layout, n: usize, nv: u32) {
        let now = cx.now_ns;
        // Packets nobody claimed.
        for i in 0..n {
            if self.refs[i] == 0 {
                cx.pool.free(self.batch[i]);
                self.counters.drop(DropCause::NoVerdict, 1);
            }
        }
        let Some(chunks) = abi::verdict_chunks(mem, lay, nv) else {
            return;
        };
        let mut dropped = 0;
        for c in chunks {
            let Ok(c) = c.try_into() else { continue };
            let v = RawVerdict::decode(c);
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
            let room0 = if self.delay.next_at().is_some_and(|t| t <= now) {
                0
            } else {
                cx.room(0)
            };
            Out {
                staged: &mut self.staged,
                delay: &mut self.delay,
                counters: &mut self.counters,
                dropped: &mut dropped,
                room0,
            }
            .place(cx, now, v.port, v.at_ns, p);
        }
        self.counters.drop(DropCause::Plugin, dropped);
        cx.transmit_all(0, &self.staged, &mut self.counters);
        self.staged.clear();
    }

    fn drop_batch(&mut self, cx: &mut Ctx<'_>, n: usize, cause: DropCause) {
        for &p in &self.batch[..n] {
            cx.pool.free(p);
        }
        self.counters.drop(cause, n as u64);
    }

    /// Packets held in the delay line.
    pub fn held_packets(&self) -> usize {
        self.delay.len()
    }

    /// The plugin's own counters (names from its header).
    pub fn plugin_counters(&mut self) -> Vec<(String, u64)> {
        let lay = self.lay.clone();
        match self.inst.as_mut() {
            Some(i) => abi::read_counters(i.memory(), &lay),
            None => Vec::new(),
        }
    }
}

/// Where a verdict's packet goes: staged for port 0, another port, the delay line, or
/// dropped.
struct Out<'a> {
    staged: &'a mut Vec<Packet>,
    delay: &'a mut DelayLine,
    counters: &'a mut Counters,
    dropped: &'a mut u64,
    /// Room on output 0 for this batch: beyond it (or behind packets already due in
    /// the delay line), packets due now wait in the delay line instead of being dropped
    /// on a full link — a stalled engine catching up loses nothing.
    room0: usize,
}

impl Out<'_> {
    /// Send, hold or drop one packet per its verdict. Packets for port 0 due now are
    /// staged and go out in one bulk transmit.
    #[inline(always)]
    fn place(&mut self, cx: &mut Ctx<'_>, now: u64, port: u16, at_ns: u64, mut p: Packet) {
        if port == abi::PORT_DROP {
            cx.pool.free(p);
            *self.dropped += 1;
        } else if at_ns <= now && (port != 0 || self.staged.len() < self.room0) {
            p.ts_ns = p.ts_ns.max(at_ns);
            if port == 0 {
                self.staged.push(p);
            } else {
                cx.transmit(port as usize, p, self.counters);
            }
        } else if let Err(p) = self.delay.push(at_ns, port, p) {
            cx.pool.free(p);
            self.counters.drop(DropCause::HoldFull, 1);
        }
    }
}

/// Check every verdict of a batch before any is applied, and count in `refs` how many
/// verdicts name each packet. `Ok(true)` when the answer is the common shape — verdict
/// `j` names packet `j`, one each, nothing replaced — which [`PluginApp::apply`] takes on
/// a fast path.
fn validate(
    mem: &[u8],
    lay: &Layout,
    batch: &[Packet],
    nv: u32,
    max_len: usize,
    refs: &mut [u32],
) -> Result<bool, String> {
    if nv > lay.max_verdicts {
        return Err(format!(
            "{nv} verdicts, more than the {} the header allows",
            lay.max_verdicts
        ));
    }
    let n = batch.len();
    refs[..n].fill(0);
    let mut in_order = nv as usize == n;
    let chunks = abi::verdict_chunks(mem, lay, nv).ok_or("verdict array lies outside memory")?;
    for (j, c) in chunks.enumerate() {
        let v = RawVerdict::decode(c.try_into().map_err(|_| "short verdict")?);
        in_order &= v.id as usize == j && v.flags == 0;
        if v.flags & !abi::VF_KNOWN != 0 {
            return Err(format!("verdict {j} sets reserved flags {:#x}", v.flags));
        }
        if v.port != abi::PORT_DROP && v.port >= lay.n_outputs {
            return Err(format!(
                "verdict {j} names output port {} of {}",
                v.port, lay.n_outputs
            ));
        }
        let replaces = v.flags & abi::VF_REPLACE != 0;
        if v.id == abi::ID_NEW || replaces {
            let bytes = v.bytes(mem, lay).ok_or_else(|| {
                format!(
                    "verdict {j} points at bytes {:#x}+{} outside the plugin's region",
                    v.data_off, v.data_len
                )
            })?;
            if v.id == abi::ID_NEW && (bytes.is_empty() || bytes.len() > max_len) {
                return Err(format!(
                    "verdict {j} injects a packet of {} bytes",
                    bytes.len()
                ));
            }
        }
        if v.id != abi::ID_NEW {
            let i = v.id as usize;
            let Some(p) = batch.get(i) else {
                return Err(format!(
                    "verdict {j} names packet {} of a batch of {n}",
                    v.id
                ));
            };
            if replaces {
                let cap = if lay.access == access::META {
                    0
                } else {
                    p.len.min(lay.snap_len)
                };
                let new_len = p.len as u64 - cap as u64 + v.data_len as u64;
                if new_len > max_len as u64 {
                    return Err(format!("verdict {j} grows packet {i} to {new_len} bytes"));
                }
            }
            refs[i] += 1;
        }
    }
    Ok(in_order)
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
        let retry = self.inst.is_none().then_some(self.health.retry_at_ns);
        [self.delay.next_at(), wake, retry]
            .into_iter()
            .flatten()
            .min()
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn extra_counters(&self) -> Vec<(String, u64)> {
        vec![
            ("faults".into(), self.health.faults),
            ("restarts".into(), self.health.restarts),
            ("swaps".into(), self.health.swaps),
        ]
    }

    fn held(&self) -> usize {
        self.delay.len()
    }

    fn drain_held(&mut self) -> Vec<Packet> {
        self.delay.drain()
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// FNV-1a over several byte strings: a stable identity for code + config.
pub fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(&[0xFF]) {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}
