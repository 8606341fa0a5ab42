//! # synthnet-core: the engine and what it moves
//!
//! The bottom layer of synthnet. It knows packets, links, delay lines, apps and the
//! engine that breathes them; it knows nothing of wasm, sockets, files or JSON. It may
//! use `std` and the SDK's header views, nothing else, and no `unsafe` (forbidden below).
//!
//! - [`packet`]: frames live in buffers from a fixed [`packet::PacketPool`] and are named
//!   by a 16-byte handle; no allocation per packet, and the pool bounds memory.
//! - [`link`]: a bounded ring of packet handles between two apps; full means drop.
//! - [`delay`]: the host-side delay lines where packets wait for their departure time.
//!   Plugins never hold packets, so a crash or a hot swap loses none.
//! - [`engine`]: apps joined by links, run one *breath* at a time at a `now` given by
//!   the caller. The graph changes by add, connect and remove only.
//! - [`counters`]: what every app counts, drops by a typed cause.
//! - [`flow`]: directions, flow keys and matchers, the classifier app.
//! - [`flowtable`]: per-flow packet and byte counts, bounded, for the control plane.
//! - [`clock`]: the virtual clock that drives an engine offline (replay, tests).
//! - [`trace`]: why each packet: what every stage did to it, when someone asks.
//!
//! The layers above: `synthnet-runtime` (plugin host), `synthnet-config` (specs, plans,
//! the one apply path), `synthnet-io` (sockets and captures), `synthnet` (the binary).

#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod clock;
pub mod counters;
pub mod delay;
pub mod engine;
pub mod flow;
pub mod flowtable;
pub mod link;
pub mod packet;
pub mod trace;

pub use counters::{Counters, DropCause, Drops};
pub use engine::{App, AppId, Ctx, Engine, LinkId};
pub use flow::Direction;
pub use packet::{Packet, PacketPool};
