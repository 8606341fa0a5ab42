//! `testbed`: misbehaves on purpose, so host tests can prove the host survives it.
//! Not shipped in the binary. It forwards the first `after` packets it sees, then does
//! what `mode` says in the batch that crosses that count. A restarted instance counts
//! from zero again.
//!
//! ABI 1.1 switches: `park` parks the first N packets (the rest go on; for the reverse
//! port with `park_reverse`); `reverse: n`
//! answers every n-th packet (1: every one) on the reverse port (Ethernet, IPv4 and
//! UDP/TCP addresses swapped, so it goes back to its sender as a valid packet) instead
//! of forwarding it; `hold_ns` holds what it forwards or answers for that long;
//! `commands` answers commands (else they are refused with the SDK's default message):
//!
//! - `{"echo": v}` → `{"echo": v, "now_ns": t, "parked": n}`;
//! - `{"release": n, "at_ns": t}`, `{"drop": n}`: release or drop the oldest n parked
//!   packets (0 = all);
//! - `{"inject": {"len": n, "port": p}}`: a new packet of n bytes of 0xCD on port p;
//! - `{"wake_at_ns": t}`: arm the timer (ticks are counted in the `ticks` counter);
//! - `{"trap": true}`: panic; `{"bad": true}`: write a verdict the host refuses;
//! - anything else is refused, naming it.
//!
//! It always declares two outputs (port 1 is the reverse port), which a host that does
//! not connect port 1 tolerates as long as nothing is sent there.

use serde::Deserialize;
use serde_json::{json, Value};
use synthnet_sdk::{abi, export_plugin, Access, Batch, Plugin, REVERSE};

#[derive(Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Forward everything (the default).
    #[default]
    Pass,
    /// Trap (a Rust panic: `unreachable` in wasm).
    Trap,
    /// Spin forever.
    Loop,
    /// Allocate without bound.
    Grow,
    /// Answer with an id that is not in the batch.
    BadId,
    /// Answer with an output port that does not exist.
    BadPort,
    /// Point replacement bytes outside the region.
    BadOffset,
    /// Send every packet twice.
    Duplicate,
    /// Inject one extra 60-byte packet per batch, then forward.
    Inject,
    /// Rewrite the first captured byte of every packet to 0xEE.
    Rewrite,
    /// Forward everything, and ask to be woken at time 0 (in the past) every call.
    WakePast,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub mode: Mode,
    pub after: u64,
    /// Rounds of busy work in `new` (a plugin whose init is slow).
    pub init_spin: u64,
    /// Park the first this many packets.
    pub park: u64,
    /// Park them for the reverse port (port 1) rather than port 0.
    pub park_reverse: bool,
    /// Answer every this-many-th packet on the reverse port instead of forwarding it
    /// (0: none).
    pub reverse: u64,
    /// Answer commands.
    pub commands: bool,
    /// Send what is forwarded or answered (not parked) this long after its arrival.
    pub hold_ns: u64,
}

pub struct Testbed {
    mode: Mode,
    after: u64,
    seen: u64,
    hoard: Vec<Vec<u8>>,
    park: u64,
    park_port: u16,
    parked_total: u64,
    /// Packets parked and not yet released or dropped (this instance's view).
    parked_now: u64,
    reverse: u64,
    reverse_seen: u64,
    commands: bool,
    hold_ns: u64,
}

/// Swap source and destination of the Ethernet, IPv4 and UDP/TCP headers in `f`: the
/// checksums stay valid (their sums do not depend on the order).
fn swap_ends(f: &mut [u8]) {
    if f.len() < 14 {
        return;
    }
    for k in 0..6 {
        f.swap(k, 6 + k);
    }
    if f.len() < 34 || f[12..14] != [0x08, 0x00] {
        return;
    }
    for k in 0..4 {
        f.swap(26 + k, 30 + k);
    }
    let l4 = 14 + 4 * (f[14] & 0x0F) as usize;
    if matches!(f[23], 6 | 17) && f.len() >= l4 + 4 {
        f.swap(l4, l4 + 2);
        f.swap(l4 + 1, l4 + 3);
    }
}

impl Testbed {
    fn take_parked(&mut self, n: u64) -> u64 {
        let k = if n == 0 {
            self.parked_now
        } else {
            n.min(self.parked_now)
        };
        self.parked_now -= k;
        k
    }
}

impl Plugin for Testbed {
    type Config = Config;
    const ACCESS: Access = Access::Headers(64);
    const EMIT_CAP: u32 = 4096;
    const OUTPUTS: u16 = 2;
    const COUNTERS: &'static [&'static str] = &["ticks"];

    fn new(c: Config, _seed: u64) -> Result<Self, String> {
        let mut x = 1u64;
        for _ in 0..c.init_spin {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        std::hint::black_box(x);
        Ok(Testbed {
            mode: c.mode,
            after: c.after,
            seen: 0,
            hoard: Vec::new(),
            park: c.park,
            park_port: if c.park_reverse { REVERSE } else { 0 },
            parked_total: 0,
            parked_now: 0,
            reverse: c.reverse,
            reverse_seen: 0,
            commands: c.commands,
            hold_ns: c.hold_ns,
        })
    }

    fn tick(&mut self, batch: &mut Batch<'_>) {
        batch.count(0, 1);
    }

    fn command(&mut self, cmd: &Value, batch: &mut Batch<'_>) -> Result<Value, String> {
        if !self.commands {
            return Err("this plugin takes no commands".into());
        }
        let n = |k: &str| cmd.get(k).and_then(Value::as_u64);
        if let Some(v) = cmd.get("echo") {
            Ok(json!({"echo": v, "now_ns": batch.now_ns(), "parked": self.parked_now}))
        } else if let Some(max) = n("release") {
            batch.release_parked(n("at_ns").unwrap_or(0), max as u32);
            Ok(json!({"released": self.take_parked(max)}))
        } else if let Some(max) = n("drop") {
            batch.drop_parked(max as u32);
            Ok(json!({"dropped": self.take_parked(max)}))
        } else if let Some(i) = cmd.get("inject") {
            let len = i.get("len").and_then(Value::as_u64).unwrap_or(60) as usize;
            let port = i.get("port").and_then(Value::as_u64).unwrap_or(0) as u16;
            batch.inject(port, 0, &vec![0xCD; len.min(4096)]);
            Ok(json!("injected"))
        } else if let Some(t) = n("wake_at_ns") {
            batch.wake_at(t);
            Ok(json!({"armed": batch.pending_wake()}))
        } else if cmd.get("trap").is_some() {
            panic!("testbed: trap on command");
        } else if cmd.get("bad").is_some() {
            batch.raw_verdict(abi::verdict::ID_PARKED, 0, 1, 0, 0, 0);
            Ok(json!("bad"))
        } else {
            Err(format!("unknown command {cmd}"))
        }
    }

    fn process(&mut self, batch: &mut Batch<'_>) {
        if self.park > self.parked_total || self.reverse > 0 || self.hold_ns > 0 {
            for i in 0..batch.len() {
                if self.parked_total < self.park {
                    self.parked_total += 1;
                    self.parked_now += 1;
                    batch.park(i, self.park_port);
                    continue;
                }
                self.reverse_seen += 1;
                let at = if self.hold_ns > 0 {
                    batch.arrival_ns(i) + self.hold_ns
                } else {
                    0
                };
                if self.reverse > 0 && self.reverse_seen.is_multiple_of(self.reverse) {
                    swap_ends(batch.data_mut(i));
                    batch.send_modified(i, REVERSE, at);
                } else {
                    batch.send(i, 0, at);
                }
            }
            return;
        }
        self.seen += batch.len() as u64;
        if self.seen <= self.after {
            for i in 0..batch.len() {
                batch.forward(i);
            }
            return;
        }
        match self.mode {
            Mode::Pass => {
                for i in 0..batch.len() {
                    batch.forward(i);
                }
            }
            Mode::Trap => panic!("testbed: trap after {} packets", self.seen),
            Mode::Loop => {
                let mut x = self.seen;
                while std::hint::black_box(x) != 0 {
                    x = std::hint::black_box(x | 1);
                }
            }
            Mode::Grow => loop {
                self.hoard.push(vec![1u8; 1 << 20]);
            },
            Mode::BadId => batch.raw_verdict(batch.len() as u32 + 7, 0, 0, 0, 0, 0),
            Mode::BadPort => batch.raw_verdict(0, 9, 0, 0, 0, 0),
            Mode::BadOffset => batch.raw_verdict(0, 0, abi::VF_REPLACE, 0, 0xFFFF_0000, 64),
            Mode::Duplicate => {
                for i in 0..batch.len() {
                    batch.forward(i);
                    batch.forward(i);
                }
            }
            Mode::Inject => {
                batch.inject(0, 0, &[0xAB; 60]);
                for i in 0..batch.len() {
                    batch.forward(i);
                }
            }
            Mode::WakePast => {
                for i in 0..batch.len() {
                    batch.forward(i);
                }
                batch.wake_at(0);
            }
            Mode::Rewrite => {
                for i in 0..batch.len() {
                    if let Some(b) = batch.data_mut(i).first_mut() {
                        *b = 0xEE;
                    }
                    batch.send_modified(i, 0, 0);
                }
            }
        }
    }
}

export_plugin!(Testbed);
