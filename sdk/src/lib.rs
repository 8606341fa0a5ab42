//! # synthnet-sdk: write synthnet packet functions in Rust
//!
//! A plugin is a type implementing [`Plugin`], exported with [`export_plugin!`] and
//! compiled to `wasm32-unknown-unknown`. The host hands it *batches* of packets through a
//! shared region of its linear memory (the link ABI in [`abi`], explained in
//! `docs/ABI.md`) and the plugin answers each packet with a verdict: forward on a port,
//! deliver at a later time, drop, duplicate, rewrite, or inject new packets. The host
//! keeps the packets: a delayed packet sits in a host delay line, not in the plugin.
//!
//! Time and randomness come only from the host: every batch carries `now`, every
//! instance gets a seed for its [`Rng`]. So a plugin is deterministic, runs unchanged on a
//! virtual clock, and its native build (tested with the [`Harness`]) gives exactly the
//! verdicts of its wasm build.
//!
//! ABI 1.1 adds three optional things: [`Plugin::command`] (a control channel into a
//! running instance), parking ([`Batch::park`]: the host holds packets until the plugin
//! releases them) and the [`REVERSE`] port (answer the sender).
//!
//! - [`wire`]: zero-copy header views (Ethernet, IPv4, IPv6, UDP, TCP);
//! - [`flow`]: flow keys (5-tuples) from a packet's bytes, and their bidirectional
//!   canonical form;
//! - [`flowmap`]: a fixed-capacity per-flow state map with idle expiry and a documented
//!   eviction rule, for stateful plugins (conntrack, NAT, load balancers);
//! - [`checksum`]: internet checksum and incremental updates;
//! - [`config`]: the checks a config's fields share (ratios, durations in ms);
//! - [`build`]: Ethernet + IPv4/IPv6 + TCP/UDP frames to inject, and the TCP reset
//!   that answers a segment, written into the caller's buffer;
//! - [`dist`]: netem's delay distributions (its tables, and tables from samples);
//! - [`rng`]: the seeded PRNG, integer-only on the hot path;
//! - [`state`]: hand-over state as 64-bit words;
//! - [`queue`]: queue disciplines (drop-tail, CoDel, PIE) for plugins that hand out
//!   departure times.

#![deny(unsafe_code)]
#![warn(unreachable_pub)]

pub mod abi;
pub mod build;
pub mod checksum;
pub mod config;
pub mod dist;
pub mod export;
pub mod flow;
pub mod flowmap;
mod guest;
mod harness;
pub mod queue;
pub mod rng;
pub mod state;
pub mod wire;

pub use guest::{Access, Batch, Guest, PacketMeta, Plugin};
pub use harness::{Harness, Output};
pub use rng::{Chance, Rng};

/// The reverse port (ABI 1.1): with `const OUTPUTS: u16 = 2`, a packet sent on port 1
/// leaves through the interface its direction reads from, back toward its sender,
/// straight to that interface's transmit side. For a TCP RST or an ICMP error.
pub use abi::PORT_REVERSE as REVERSE;

pub use config::{duration_ms, ms_to_ns, MAX_DELAY_MS, NS_PER_MS};
