//! `testbed`: misbehaves on purpose, so host tests can prove the host survives it.
//! Not shipped in the binary. It forwards the first `after` packets it sees, then does
//! what `mode` says in the batch that crosses that count. A restarted instance counts
//! from zero again.

use serde::Deserialize;
use synthnet_sdk::{abi, export_plugin, Access, Batch, Plugin};

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
}

pub struct Testbed {
    mode: Mode,
    after: u64,
    seen: u64,
    hoard: Vec<Vec<u8>>,
}

impl Plugin for Testbed {
    type Config = Config;
    const ACCESS: Access = Access::Headers(64);
    const EMIT_CAP: u32 = 4096;

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
        })
    }

    fn process(&mut self, batch: &mut Batch<'_>) {
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
