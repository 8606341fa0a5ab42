//! A native test harness: run a [`Plugin`] with plain `cargo test`, through exactly the
//! batch encoding the host uses, on a clock the test controls.
//!
//! ```
//! use synthnet_sdk::{Harness, Plugin, Batch};
//! struct Pass;
//! impl Plugin for Pass {
//!     type Config = serde_json::Value;
//!     fn new(_: Self::Config, _: u64) -> Result<Self, String> { Ok(Pass) }
//! }
//! let mut h = Harness::<Pass>::new("{}", 1).unwrap();
//! h.push(&[0u8; 60], 0);
//! let out = h.run(1_000);
//! assert_eq!(out.len(), 1);
//! assert_eq!(out[0].port, Some(0));
//! ```

//!
//! ABI 1.1: [`Harness::command`] sends a command; packets the plugin parks wait in the
//! harness (as in the host) and come out, when released, as outputs with `input: None`,
//! their bytes, their port and the release time; outputs on port 1 (the
//! [`REVERSE`](crate::REVERSE) port) are outputs like any other.

use crate::abi::{self, RawDesc, RawVerdict};
use crate::guest::{Guest, Plugin};
use std::collections::VecDeque;

/// What became of one packet (or an injected one) after a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// Index of the input packet in this batch; `None` for an injected packet or a
    /// released parked one.
    pub input: Option<usize>,
    /// Output port, or `None` when dropped.
    pub port: Option<u16>,
    /// When the host would deliver it (≥ the batch's `now`).
    pub at_ns: u64,
    /// The packet's bytes as it leaves (empty for drops).
    pub bytes: Vec<u8>,
}

/// Runs one plugin instance natively.
pub struct Harness<P: Plugin> {
    guest: Guest<P>,
    pending: Vec<(Vec<u8>, u64)>,
    /// Parked packets (ABI 1.1), oldest first: their bytes and the port they leave on.
    parked: VecDeque<(Vec<u8>, u16)>,
    /// Outputs of commands, handed out by the next `run` or `take_outputs`.
    outbox: Vec<Output>,
}

impl<P: Plugin> Harness<P> {
    /// Build the plugin with `config_json`. Fails, as the host would, on a bad config
    /// or a plugin declaring more outputs than the host connects.
    pub fn new(config_json: &str, seed: u64) -> Result<Self, String> {
        let guest = Guest::<P>::new(config_json.as_bytes(), seed)?;
        let outs = guest.layout().n_outputs;
        if outs > abi::MAX_OUTPUTS {
            return Err(format!(
                "declares {outs} outputs; a stage has port 0 and at most the reverse port 1"
            ));
        }
        Ok(Harness {
            guest,
            pending: Vec::new(),
            parked: VecDeque::new(),
            outbox: Vec::new(),
        })
    }

    /// Send a command (JSON text) at `now_ns`, as the host does (a timer already due
    /// ticks first): `Ok` is the plugin's reply, `Err` its refusal (or why the JSON is
    /// bad). Packets it emits or releases
    /// come out of the next [`Harness::run`] first, or of [`Harness::take_outputs`].
    ///
    /// # Panics
    /// When the command's verdicts are ones the host would refuse.
    pub fn command(&mut self, json: &str, now_ns: u64) -> Result<serde_json::Value, String> {
        let lay = self.guest.layout().clone();
        let mut out = core::mem::take(&mut self.outbox);
        // As the host does: a timer already due ticks first, as it would have in the
        // breath before.
        if self.wake_at().is_some_and(|t| t <= now_ns) {
            let n = self.guest.process(0, now_ns);
            self.collect(&lay, &[], n, now_ns, &mut out);
        }
        let nv = self.guest.command(json.as_bytes(), now_ns);
        if let Ok(nv) = nv {
            self.collect(&lay, &[], nv, now_ns, &mut out);
        }
        self.outbox = out;
        nv?;
        serde_json::from_slice(self.guest.reply()).map_err(|e| format!("reply is not JSON: {e}"))
    }

    /// The outputs of commands not yet handed out by [`Harness::run`].
    pub fn take_outputs(&mut self) -> Vec<Output> {
        core::mem::take(&mut self.outbox)
    }

    /// How many packets are parked (ABI 1.1).
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    pub fn plugin(&self) -> &P {
        self.guest.plugin()
    }

    /// The plugin's state, as a hot swap would hand it over.
    pub fn snapshot(&mut self) -> Vec<u8> {
        self.guest.snapshot().to_vec()
    }

    /// Take over state from another instance's [`Harness::snapshot`].
    pub fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.guest.restore(state)
    }

    /// Queue a packet that arrived at `arrival_ns`.
    pub fn push(&mut self, bytes: &[u8], arrival_ns: u64) {
        self.pending.push((bytes.to_vec(), arrival_ns));
    }

    /// Counters the plugin publishes.
    pub fn counters(&mut self) -> Vec<(String, u64)> {
        let lay = self.guest.layout().clone();
        abi::read_counters(self.guest.region_mut(), &lay)
    }

    /// The time the plugin asked to be woken at, if any.
    pub fn wake_at(&mut self) -> Option<u64> {
        let w = abi::le::u64_at(self.guest.region_mut(), abi::hdr::WAKE_AT_NS)?;
        (w != abi::NO_WAKE).then_some(w)
    }

    /// Hand the queued packets to the plugin in batches at `now_ns` and return every
    /// verdict, in order, after the outputs of commands sent since the last run. As the
    /// host does, a timer that is due ticks first; with no packets queued the call is a
    /// tick whether or not a timer is due. A parked packet is no output until released.
    pub fn run(&mut self, now_ns: u64) -> Vec<Output> {
        let pending = core::mem::take(&mut self.pending);
        let lay = self.guest.layout().clone();
        let mut out = core::mem::take(&mut self.outbox);
        if pending.is_empty() || self.wake_at().is_some_and(|t| t <= now_ns) {
            let n = self.guest.process(0, now_ns);
            self.collect(&lay, &[], n, now_ns, &mut out);
        }
        for chunk in pending.chunks(lay.max_batch as usize) {
            let mem = self.guest.region_mut();
            for (i, (bytes, arrival)) in chunk.iter().enumerate() {
                let (data_off, cap) = if lay.access == abi::access::META {
                    (0, 0)
                } else {
                    let cap = bytes.len().min(lay.snap_len as usize);
                    let at = lay.slot_addr(i as u32) as usize;
                    mem[at..at + cap].copy_from_slice(&bytes[..cap]);
                    (at as u32, cap as u32)
                };
                let d = RawDesc {
                    id: i as u32,
                    wire_len: bytes.len() as u32,
                    data_off,
                    cap_len: cap,
                    in_port: 0,
                    flags: if (cap as usize) < bytes.len() && lay.access != abi::access::META {
                        abi::DF_TRUNCATED
                    } else {
                        0
                    },
                    arrival_ns: *arrival,
                };
                d.write(mem, &lay);
            }
            let n = self.guest.process(chunk.len() as u32, now_ns);
            self.collect(&lay, chunk, n, now_ns, &mut out);
        }
        out
    }

    /// # Panics
    /// When the batch's answer is one the host would refuse (a verdict naming a packet
    /// that is not in the batch, a port that does not exist, bytes outside the region…):
    /// the host's own check, so a plugin that passes here is not refused live.
    fn collect(
        &mut self,
        lay: &abi::Layout,
        chunk: &[(Vec<u8>, u64)],
        n: u32,
        now: u64,
        out: &mut Vec<Output>,
    ) {
        let mem = self.guest.region_mut();
        let parked = &mut self.parked;
        let mut refs = vec![0u32; chunk.len()];
        if let Err(e) = abi::validate(
            mem,
            lay,
            |i| chunk[i].0.len() as u32,
            chunk.len(),
            n,
            abi::MAX_PACKET_LEN,
            &mut refs,
        ) {
            panic!("the host would refuse this batch (and restart the plugin): {e}");
        }
        for j in 0..n.min(lay.max_verdicts) {
            let Some(v) = RawVerdict::read(mem, lay, j) else {
                break;
            };
            let at_ns = v.at_ns.max(now);
            let port = (v.port != abi::PORT_DROP).then_some(v.port);
            if v.id == abi::verdict::ID_PARKED {
                let k = match v.data_len {
                    0 => parked.len(),
                    m => (m as usize).min(parked.len()),
                };
                for (bytes, port) in parked.drain(..k) {
                    if v.port == 0 {
                        out.push(Output {
                            input: None,
                            port: Some(port),
                            at_ns,
                            bytes,
                        });
                    }
                }
                continue;
            }
            let park = v.flags & abi::VF_PARK != 0;
            if v.id == abi::ID_NEW {
                let bytes = v.bytes(mem, lay).map(<[u8]>::to_vec).unwrap_or_default();
                if park {
                    parked.push_back((bytes, v.port));
                    continue;
                }
                out.push(Output {
                    input: None,
                    port,
                    at_ns,
                    bytes,
                });
                continue;
            }
            let Some((orig, _)) = chunk.get(v.id as usize) else {
                continue;
            };
            let bytes = if port.is_none() {
                Vec::new()
            } else if v.flags & abi::VF_REPLACE != 0 {
                let cap = (orig.len()).min(lay.snap_len as usize);
                let mut b = v.bytes(mem, lay).map(<[u8]>::to_vec).unwrap_or_default();
                if lay.access != abi::access::META {
                    b.extend_from_slice(&orig[cap..]);
                }
                b
            } else {
                orig.clone()
            };
            if park {
                parked.push_back((bytes, v.port));
                continue;
            }
            out.push(Output {
                input: Some(v.id as usize),
                port,
                at_ns,
                bytes,
            });
        }
    }
}
