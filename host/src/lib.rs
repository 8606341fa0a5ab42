//! # synthnet: a userspace synthetic network
//!
//! synthnet sits between two network interfaces and passes every packet through chains
//! of *packet functions* — latency, jitter, rate limiting, loss, corruption, anything a
//! user writes — so applications can be tested under the networks they will meet. The
//! packet functions are WebAssembly plugins fed batches of packets through a shared-memory
//! link ABI; the native engine owns sockets, buffers, time and randomness.
//!
//! The layers, bottom up:
//!
//! - [`packet`]: frames live in buffers from a fixed [`packet::PacketPool`] and are named
//!   by a 32-bit id; no allocation per packet, and the pool bounds memory.
//! - [`link`]: a bounded ring of packet ids between two apps; full means drop and count.
//! - [`delay`]: the host-side delay lines where packets wait for their departure time.
//!   Plugins never hold packets, so a crash or a hot swap loses none.
//! - [`engine`]: apps joined by links, run one *breath* at a time at a `now` given by the
//!   caller: a monotonic clock live, a virtual clock in tests and replay.
//! - [`plugin`]: the host side of the link ABI (`docs/ABI.md`): wasm instances on
//!   wasmtime (bounded in memory and CPU, restarted with backoff after a fault), native
//!   instances of the same source for comparison, and the built-in plugins.
//! - [`apps`]: native helper apps (packet source and sink).
//! - [`spec`]: the JSON specs users write (synthetic-network's two shapes and the native
//!   form), validated into a [`spec::Plan`] with typed units; only a plan reaches the
//!   engine.
//! - [`network`]: a plan wired into an engine: plugin loading, per-instance seeds, the
//!   flow classifier (IPv4 and IPv6).
//! - [`replay`]: a spec run offline over a pcap/pcapng capture on a virtual clock.
//! - [`scaffold`]: `synthnet plugin new`.
//! - [`bench`](mod@bench): the in-memory engine benchmark behind `synthnet bench`.
//! - [`raw`]: AF_PACKET receive ring and batched transmit apps (the only module with
//!   `unsafe` code, each block with its reason; the rest of the crate denies it).
//! - [`bridge`]: `synthnet bridge`: two interfaces, the spec's chains between them,
//!   signals, hot reload, stats.
//! - [`netns`]: network namespaces and veth pairs for `synthnet demo`, the tests and the
//!   forwarding benchmark; [`traffic`]: UDP streams, verified TCP transfers and floods
//!   across them.

#![deny(unsafe_code)]

pub mod apps;
pub mod bench;
pub mod bridge;
pub mod delay;
pub mod demo;
pub mod engine;
pub mod fwdbench;
pub mod link;
pub mod netns;
pub mod network;
pub mod packet;
pub mod plugin;
#[allow(unsafe_code)]
pub mod raw;
pub mod replay;
pub mod scaffold;
pub mod spec;
pub mod traffic;
