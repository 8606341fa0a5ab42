//! The plugin side of the link ABI: the [`Plugin`] trait a plugin author implements, the
//! [`Batch`] it reads and answers, and the [`Guest`] driver that owns the shared region.
//!
//! The same driver runs inside wasm (behind the exports that [`export_plugin!`] generates)
//! and natively (in the test [`Harness`](crate::Harness) and in the host's native runtime),
//! so a plugin's native and wasm builds see byte-for-byte the same batches.

use crate::abi::{self, access, desc, le, verdict, Layout};
use serde::de::DeserializeOwned;

/// How much of each packet a plugin wants to see. Copying bytes costs: ask for the least.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Descriptors only (length, arrival time, port).
    Meta,
    /// The first N bytes of each packet (e.g. 128 for L2–L4 headers).
    Headers(u32),
    /// The whole packet, up to [`abi::MAX_PACKET`] bytes.
    Full,
}

/// A packet function. Only `Config` and `new` are required; every other item has a
/// default, and the default `process` forwards every packet unchanged on port 0.
pub trait Plugin: Sized {
    /// Configuration, parsed from the JSON object the spec gives for this plugin. Derive
    /// `Deserialize` with `#[serde(deny_unknown_fields, default)]` for good errors.
    type Config: DeserializeOwned;

    /// What the plugin needs to see of each packet.
    const ACCESS: Access = Access::Meta;
    /// Largest batch the plugin accepts per call.
    const MAX_BATCH: u32 = 256;
    /// Verdicts per call: room for duplicates and injected packets.
    const MAX_VERDICTS: u32 = 2 * Self::MAX_BATCH;
    /// Bytes of room for replacement and injected packets per call.
    const EMIT_CAP: u32 = 0;
    /// Number of output ports: 1, or 2 for a plugin that answers the sender on
    /// [`REVERSE`](crate::REVERSE) (port 1, ABI 1.1). The host refuses more.
    const OUTPUTS: u16 = 1;
    /// Names of the plugin's counters, scraped by the host (see [`Batch::count`]).
    const COUNTERS: &'static [&'static str] = &[];
    /// Version of the bytes `snapshot` produces; 0 means "no state to hand over".
    const STATE_VERSION: u32 = 0;

    /// Build an instance. `seed` is this instance's seed for a [`Rng`](crate::Rng).
    fn new(config: Self::Config, seed: u64) -> Result<Self, String>;

    /// What this instance needs to see of each packet, when that depends on its config
    /// (the `loss` plugin reads headers only to mark ECN): asked once, after `new`.
    /// Defaults to [`Plugin::ACCESS`].
    fn access(&self) -> Access {
        Self::ACCESS
    }

    /// Answer one batch: give every packet a verdict (packets left without one are
    /// dropped by the host and counted as `no_verdict`).
    fn process(&mut self, batch: &mut Batch<'_>) {
        for i in 0..batch.len() {
            batch.forward(i);
        }
    }

    /// Called with an empty batch when the timer armed with [`Batch::wake_at`] is due:
    /// in the host's first breath at or after that time, before that breath's packets.
    /// The timer is disarmed before `tick` runs; arm it again here for a periodic one.
    fn tick(&mut self, _batch: &mut Batch<'_>) {}

    /// State to hand to a new instance on a hot swap (see `STATE_VERSION`).
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Take over state from [`Plugin::snapshot`] of an instance with the same
    /// `STATE_VERSION`.
    fn restore(&mut self, _state: &[u8]) -> Result<(), String> {
        Ok(())
    }

    /// Answer a command sent by the host (HTTP API, `synthnet ctl command`, a schedule).
    /// `batch` holds no packets; `batch.now_ns()` is the command's time on the engine
    /// clock. Through it the plugin may inject packets, release or drop parked packets
    /// and arm its timer, as in `tick`. The reply is any JSON value; an Err refuses the
    /// command (the host shows the message).
    fn command(
        &mut self,
        _cmd: &serde_json::Value,
        _batch: &mut Batch<'_>,
    ) -> Result<serde_json::Value, String> {
        Err("this plugin takes no commands".into())
    }
}

/// What the host knows of one packet of the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    /// Full length of the frame, bytes.
    pub wire_len: u32,
    /// Bytes of it visible in [`Batch::data`].
    pub cap_len: u32,
    pub in_port: u16,
    /// When the packet reached this plugin, ns on the host clock: when it entered
    /// synthnet, or the time an earlier stage scheduled it for. Compute delays from this,
    /// not from `now`, and a chain stays exact whatever the engine's breath timing.
    pub arrival_ns: u64,
    pub truncated: bool,
}

/// One batch of packets, in the shared region. Indices run `0..len()`.
pub struct Batch<'a> {
    /// The batch's descriptors (`len() × desc::LEN` bytes).
    descs: &'a [u8],
    /// The whole verdict area.
    verdicts: &'a mut [u8],
    /// The data slots (empty with `Access::Meta`).
    slots: &'a mut [u8],
    emit: &'a mut [u8],
    counters: &'a mut [u8],
    slot_size: usize,
    /// Addresses, as the host sees them, of the slots and the emit area.
    slots_addr: u32,
    emit_addr: u32,
    n: u32,
    now_ns: u64,
    n_verdicts: u32,
    emit_used: u32,
    wake_at_ns: u64,
    overflow: u64,
}

impl<'a> Batch<'a> {
    /// Split `region` (whose first byte is at host address `lay.header`) into the parts
    /// a batch of `n` uses. The parts lie in the region in this order, which the guest
    /// itself laid out.
    fn new(region: &'a mut [u8], lay: &Layout, n: u32, now_ns: u64) -> Self {
        let rel = |addr: u32| (addr - lay.header) as usize;
        let (head, rest) = region.split_at_mut(rel(lay.desc_off));
        let counters =
            &mut head[rel(lay.counters_off)..rel(lay.counters_off) + lay.n_counters as usize * 8];
        let (descs, rest) = rest.split_at_mut(lay.max_batch as usize * desc::LEN);
        let (verdicts, rest) = rest.split_at_mut(rel(lay.data_off) - rel(lay.verdict_off));
        let (slots, emit) = rest.split_at_mut(rel(lay.emit_off) - rel(lay.data_off));
        Batch {
            descs: &descs[..n as usize * desc::LEN],
            verdicts: &mut verdicts[..lay.max_verdicts as usize * verdict::LEN],
            slots,
            emit,
            counters,
            slot_size: lay.slot_size as usize,
            slots_addr: lay.data_off,
            emit_addr: lay.emit_off,
            n,
            now_ns,
            n_verdicts: 0,
            emit_used: 0,
            wake_at_ns: abi::NO_WAKE,
            overflow: 0,
        }
    }

    /// Packets in this batch (0 on a timer tick).
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.n as usize
    }
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    /// The host's clock for this batch, ns.
    #[inline(always)]
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    #[inline(always)]
    fn desc(&self, i: usize) -> &[u8; desc::LEN] {
        let d = self
            .descs
            .get(i * desc::LEN..i * desc::LEN + desc::LEN)
            .unwrap_or(&[0; desc::LEN]);
        d.try_into().unwrap_or(&[0; desc::LEN])
    }

    /// Frame length of packet `i`, bytes.
    #[inline(always)]
    pub fn wire_len(&self, i: usize) -> u32 {
        let d = self.desc(i);
        u32::from_le_bytes([d[4], d[5], d[6], d[7]])
    }

    /// When packet `i` reached this plugin, ns (see [`PacketMeta::arrival_ns`]).
    #[inline(always)]
    pub fn arrival_ns(&self, i: usize) -> u64 {
        let d = self.desc(i);
        u64::from_le_bytes([d[24], d[25], d[26], d[27], d[28], d[29], d[30], d[31]])
    }

    pub fn meta(&self, i: usize) -> PacketMeta {
        let d = self.desc(i);
        let flags = u16::from_le_bytes([d[desc::FLAGS], d[desc::FLAGS + 1]]);
        PacketMeta {
            wire_len: self.wire_len(i),
            cap_len: u32::from_le_bytes([d[12], d[13], d[14], d[15]]),
            in_port: u16::from_le_bytes([d[desc::IN_PORT], d[desc::IN_PORT + 1]]),
            arrival_ns: self.arrival_ns(i),
            truncated: flags & abi::DF_TRUNCATED != 0,
        }
    }

    fn data_range(&self, i: usize) -> core::ops::Range<usize> {
        if self.slot_size == 0 || i >= self.n as usize {
            return 0..0;
        }
        let start = i * self.slot_size;
        let cap = (self.meta(i).cap_len as usize).min(self.slot_size);
        start..start + cap
    }

    /// The captured bytes of packet `i` (empty with [`Access::Meta`]).
    pub fn data(&self, i: usize) -> &[u8] {
        self.slots.get(self.data_range(i)).unwrap_or(&[])
    }

    /// The captured bytes of packet `i`, to change in place; then answer with
    /// [`Batch::send_modified`].
    pub fn data_mut(&mut self, i: usize) -> &mut [u8] {
        let r = self.data_range(i);
        self.slots.get_mut(r).unwrap_or(&mut [])
    }

    #[inline(always)]
    fn push_verdict(&mut self, id: u32, port: u16, flags: u16, at_ns: u64, off: u32, len: u32) {
        let k = self.n_verdicts as usize;
        let Some(v) = self
            .verdicts
            .get_mut(k * verdict::LEN..k * verdict::LEN + verdict::LEN)
        else {
            self.overflow += 1;
            return;
        };
        v[0..4].copy_from_slice(&id.to_le_bytes());
        v[4..6].copy_from_slice(&port.to_le_bytes());
        v[6..8].copy_from_slice(&flags.to_le_bytes());
        v[8..16].copy_from_slice(&at_ns.to_le_bytes());
        v[16..20].copy_from_slice(&off.to_le_bytes());
        v[20..24].copy_from_slice(&len.to_le_bytes());
        self.n_verdicts += 1;
    }

    /// Forward packet `i` on port 0, now.
    #[inline(always)]
    pub fn forward(&mut self, i: usize) {
        self.push_verdict(i as u32, 0, 0, 0, 0, 0);
    }

    /// Send packet `i` on `port`, delivered at `at_ns` (now if in the past). The host
    /// holds the packet until then: the plugin keeps nothing. Sending the same packet
    /// twice duplicates it.
    #[inline(always)]
    pub fn send(&mut self, i: usize, port: u16, at_ns: u64) {
        self.push_verdict(i as u32, port, 0, at_ns, 0, 0);
    }

    /// Drop packet `i`.
    #[inline(always)]
    pub fn discard(&mut self, i: usize) {
        self.push_verdict(i as u32, abi::PORT_DROP, 0, 0, 0, 0);
    }

    /// Send packet `i` with its captured bytes as changed through [`Batch::data_mut`].
    pub fn send_modified(&mut self, i: usize, port: u16, at_ns: u64) {
        let r = self.data_range(i);
        let addr = self.slots_addr + r.start as u32;
        self.push_verdict(i as u32, port, abi::VF_REPLACE, at_ns, addr, r.len() as u32);
    }

    fn emit_bytes(&mut self, bytes: &[u8]) -> Option<u32> {
        let at = self.emit_used as usize;
        let Some(dst) = self.emit.get_mut(at..at + bytes.len()) else {
            self.overflow += 1;
            return None;
        };
        dst.copy_from_slice(bytes);
        self.emit_used += bytes.len() as u32;
        Some(self.emit_addr + at as u32)
    }

    /// Send packet `i` with its captured prefix replaced by `prefix` (which may be
    /// shorter or longer). Needs room in the emit area (`EMIT_CAP`).
    pub fn send_replaced(&mut self, i: usize, port: u16, at_ns: u64, prefix: &[u8]) {
        if let Some(addr) = self.emit_bytes(prefix) {
            self.push_verdict(
                i as u32,
                port,
                abi::VF_REPLACE,
                at_ns,
                addr,
                prefix.len() as u32,
            );
        }
    }

    /// Inject a new packet made of `bytes` on `port` at `at_ns`. Needs `EMIT_CAP`.
    pub fn inject(&mut self, port: u16, at_ns: u64, bytes: &[u8]) {
        if let Some(addr) = self.emit_bytes(bytes) {
            self.push_verdict(abi::ID_NEW, port, 0, at_ns, addr, bytes.len() as u32);
        }
    }

    /// Arm the plugin's timer: a [`Plugin::tick`] at `at_ns`. There is one timer, and
    /// it stays armed across later batches until it fires (or [`Batch::cancel_wake`]):
    ///
    /// - An earlier time than the armed one moves it earlier; a later one changes
    ///   nothing (the earliest request wins). To move it later, cancel it first.
    /// - A time at or before this batch's `now` is ignored: the host never calls back
    ///   for the past (a plugin could make the engine spin). Do that work now.
    /// - It fires in the host's first breath at or after `at_ns` (on the virtual clock
    ///   of `replay`, exactly at it), as a `tick` before that breath's packets, and is
    ///   disarmed before `tick` runs.
    /// - A restart after a fault or a hot swap starts with no timer (it is not part of
    ///   the state handed over): a plugin that needs one arms it at its next batch.
    pub fn wake_at(&mut self, at_ns: u64) {
        if at_ns > self.now_ns {
            self.wake_at_ns = self.wake_at_ns.min(at_ns);
        }
    }

    /// Disarm the timer (see [`Batch::wake_at`]).
    pub fn cancel_wake(&mut self) {
        self.wake_at_ns = abi::NO_WAKE;
    }

    /// When the armed timer fires, if one is armed.
    pub fn pending_wake(&self) -> Option<u64> {
        (self.wake_at_ns != abi::NO_WAKE).then_some(self.wake_at_ns)
    }

    /// Add `delta` to counter `idx` of [`Plugin::COUNTERS`].
    #[inline(always)]
    pub fn count(&mut self, idx: usize, delta: u64) {
        if let Some(c) = self.counters.get_mut(idx * 8..idx * 8 + 8) {
            let v = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
            c.copy_from_slice(&v.wrapping_add(delta).to_le_bytes());
        }
    }

    /// Tell the host counter values the plugin keeps itself, totals or gauges that may
    /// fall (`values[i]` is counter `i`): the host's counters only add, so each goes as
    /// its difference, wrapping, to what `told[i]` says the host has, and `told` is
    /// brought up to date. Keep `told` in the plugin, zeroed at `new`.
    pub fn publish(&mut self, values: &[u64], told: &mut [u64]) {
        for (i, (v, t)) in values.iter().zip(told.iter_mut()).enumerate() {
            let d = v.wrapping_sub(*t);
            if d != 0 {
                self.count(i, d);
                *t = *v;
            }
        }
    }

    /// Park packet `i` in the host (ABI 1.1): it waits in the stage's parked queue, in
    /// order, until [`Batch::release_parked`] or [`Batch::drop_parked`], then leaves on
    /// `port`. The host keeps it, so a fault, restart or hot swap of the plugin loses
    /// nothing; it counts against the stage's hold limit (over it, it is dropped as
    /// `hold_full`). The host does not say how many are parked: count them yourself.
    #[inline(always)]
    pub fn park(&mut self, i: usize, port: u16) {
        self.push_verdict(i as u32, port, abi::VF_PARK, 0, 0, 0);
    }

    /// Release the oldest `max` parked packets (0 = all), in the order they were
    /// parked, each on its own port, at `at_ns` (now if in the past).
    pub fn release_parked(&mut self, at_ns: u64, max: u32) {
        self.push_verdict(verdict::ID_PARKED, 0, 0, at_ns, 0, max);
    }

    /// Drop the oldest `max` parked packets (0 = all), counted as the plugin's drops.
    pub fn drop_parked(&mut self, max: u32) {
        self.push_verdict(verdict::ID_PARKED, abi::PORT_DROP, 0, 0, 0, max);
    }

    /// Write a raw verdict, unchecked. For tests of hosts only: the host must survive
    /// whatever this writes.
    #[doc(hidden)]
    pub fn raw_verdict(&mut self, id: u32, port: u16, flags: u16, at_ns: u64, off: u32, len: u32) {
        self.push_verdict(id, port, flags, at_ns, off, len);
    }
}

/// Counters the SDK itself keeps after the plugin's own.
const SDK_COUNTERS: [&str; 1] = ["sdk_overflow"];

/// Drives one plugin instance over its region. One per instance.
pub struct Guest<P: Plugin> {
    plugin: P,
    region: Vec<u8>,
    lay: Layout,
    base: u32,
    outbox: Vec<u8>,
    /// The last command's reply, `[len: u32 LE][UTF-8 JSON]`: one buffer, reused.
    reply: Vec<u8>,
    /// The armed timer ([`Batch::wake_at`]); `NO_WAKE` when none.
    wake_ns: u64,
}

fn align8(x: usize) -> usize {
    (x + 7) & !7
}

impl<P: Plugin> Guest<P> {
    /// Parse `config` (JSON; empty means `{}`) and build the plugin and its region.
    /// `base` is the address the host will see for the region's first byte: its real
    /// address inside wasm, 0 for a native host.
    pub fn new(config: &[u8], seed: u64) -> Result<Self, String> {
        let text: &[u8] = if config.iter().all(|b| b.is_ascii_whitespace()) {
            b"{}"
        } else {
            config
        };
        let cfg: P::Config =
            serde_json::from_slice(text).map_err(|e| format!("invalid config: {e}"))?;
        let plugin = P::new(cfg, seed)?;
        Ok(Self::with_plugin(plugin))
    }

    fn with_plugin(plugin: P) -> Self {
        let (access, snap, slot) = match plugin.access() {
            Access::Meta => (access::META, 0, 0),
            Access::Headers(n) => {
                let n = n.clamp(1, abi::MAX_PACKET);
                (access::HEADERS, n, n)
            }
            Access::Full => (access::FULL, abi::MAX_PACKET, abi::MAX_PACKET),
        };
        let max_batch = P::MAX_BATCH.clamp(1, abi::MAX_BATCH_LIMIT);
        let max_verdicts = P::MAX_VERDICTS.clamp(max_batch, 16 * abi::MAX_BATCH_LIMIT);
        let mut names = String::new();
        for n in P::COUNTERS.iter().chain(SDK_COUNTERS.iter()) {
            names.push_str(n);
            names.push('\n');
        }
        let n_counters = (P::COUNTERS.len() + SDK_COUNTERS.len()) as u32;
        // Region: header | counters | names | descriptors | verdicts | slots | emit.
        let counters = abi::hdr::LEN;
        let names_at = counters + n_counters as usize * 8;
        let descs = align8(names_at + names.len());
        let verdicts = descs + max_batch as usize * desc::LEN;
        let data = align8(verdicts + max_verdicts as usize * verdict::LEN);
        let emit = data + max_batch as usize * slot as usize;
        let end = emit + P::EMIT_CAP as usize;
        let mut region = vec![0u8; end];
        let base = if cfg!(target_arch = "wasm32") {
            region.as_ptr() as usize as u32
        } else {
            0
        };
        let lay = Layout {
            header: base,
            max_batch,
            max_verdicts,
            access,
            snap_len: snap,
            slot_size: slot,
            n_inputs: 1,
            n_outputs: P::OUTPUTS.max(1),
            desc_off: base + descs as u32,
            verdict_off: base + verdicts as u32,
            data_off: base + data as u32,
            emit_off: base + emit as u32,
            emit_cap: P::EMIT_CAP,
            counters_off: base + counters as u32,
            n_counters,
            names_off: base + names_at as u32,
            names_len: names.len() as u32,
            state_version: P::STATE_VERSION,
            region_len: end as u32,
        };
        lay.write_header(&mut region);
        region[names_at..names_at + names.len()].copy_from_slice(names.as_bytes());
        Guest {
            plugin,
            region,
            lay,
            base,
            outbox: Vec::new(),
            reply: Vec::new(),
            wake_ns: abi::NO_WAKE,
        }
    }

    /// Address of the header (what `synthnet_init` returns).
    pub fn header_addr(&self) -> u32 {
        self.base
    }

    pub fn layout(&self) -> &Layout {
        &self.lay
    }

    /// The region, for a native host to write batches into.
    pub fn region_mut(&mut self) -> &mut [u8] {
        &mut self.region
    }

    pub fn plugin(&self) -> &P {
        &self.plugin
    }

    /// One call of `synthnet_process`: answer `n` packets (0 = timer tick) at `now_ns`.
    pub fn process(&mut self, n: u32, now_ns: u64) -> u32 {
        let mut batch = Batch::new(
            &mut self.region,
            &self.lay,
            n.min(self.lay.max_batch),
            now_ns,
        );
        // The timer stays armed until the first call at or after its time, which the
        // host makes a tick; it is disarmed before the plugin runs.
        if self.wake_ns > now_ns {
            batch.wake_at_ns = self.wake_ns;
        }
        if batch.n == 0 {
            self.plugin.tick(&mut batch);
        } else {
            self.plugin.process(&mut batch);
        }
        let (nv, wake) = Self::close(batch);
        self.publish_wake(wake);
        nv
    }

    /// One call of `synthnet_command`: the command `cmd` (UTF-8 JSON) at `now_ns`, as an
    /// empty batch. `Ok` is the number of verdicts written, the reply in
    /// [`Guest::reply`]; `Err` refuses the command (bad JSON, or the plugin said no).
    pub fn command(&mut self, cmd: &[u8], now_ns: u64) -> Result<u32, String> {
        let cmd: serde_json::Value =
            serde_json::from_slice(cmd).map_err(|e| format!("invalid command JSON: {e}"))?;
        let mut batch = Batch::new(&mut self.region, &self.lay, 0, now_ns);
        // A command is not the timer's call: an armed timer stays armed.
        if self.wake_ns > now_ns {
            batch.wake_at_ns = self.wake_ns;
        }
        let answer = self.plugin.command(&cmd, &mut batch);
        let (nv, wake) = Self::close(batch);
        // A refused command changes nothing: the host applies none of its verdicts, and
        // the timer stays as it was.
        let reply = answer?;
        self.publish_wake(wake);
        let text = serde_json::to_vec(&reply).map_err(|e| format!("reply: {e}"))?;
        self.reply.clear();
        self.reply
            .extend_from_slice(&(text.len() as u32).to_le_bytes());
        self.reply.extend_from_slice(&text);
        Ok(nv)
    }

    /// The last command's reply as `[len: u32 LE][UTF-8 JSON]` (what `synthnet_reply`
    /// points at); empty before the first command.
    pub fn reply_framed(&self) -> &[u8] {
        &self.reply
    }

    /// The last command's reply, UTF-8 JSON.
    pub fn reply(&self) -> &[u8] {
        self.reply.get(4..).unwrap_or(&[])
    }

    /// After a call: count verdicts that did not fit; the verdicts written and the
    /// timer.
    fn close(mut batch: Batch<'_>) -> (u32, u64) {
        let (nv, wake, overflow) = (batch.n_verdicts, batch.wake_at_ns, batch.overflow);
        if overflow > 0 {
            // The SDK's own counter sits right after the plugin's.
            batch.count(P::COUNTERS.len(), overflow);
        }
        (nv, wake)
    }

    /// Keep the timer and publish it in the header, where the host reads it.
    fn publish_wake(&mut self, wake: u64) {
        self.wake_ns = wake;
        let _ = le::put_u64(&mut self.region, abi::hdr::WAKE_AT_NS, wake);
    }

    /// The plugin's state, prefixed by nothing: the host pairs it with STATE_VERSION.
    pub fn snapshot(&mut self) -> &[u8] {
        self.outbox = self.plugin.snapshot();
        &self.outbox
    }

    pub fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.plugin.restore(state)
    }
}
