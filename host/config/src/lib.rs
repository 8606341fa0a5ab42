//! # synthnet-config: from what a user writes to what the engine runs
//!
//! The layer above the core and the plugin host (which it uses) and below the binary.
//! No `unsafe` (forbidden below), no sockets.
//!
//! - [`plan`]: the JSON specs users write (synthetic-network's two shapes and the native
//!   form), validated into a [`plan::Plan`] with typed units, typed stage identities
//!   ([`plan::StageId`]) and resolved plugins; only a plan reaches the engine. Also the
//!   `synthnet check` description.
//! - [`netem`]: tc-netem(8)'s option grammar, expanded into built-in plugins (a native
//!   chain entry `{"netem": "delay 100ms 10ms loss 1%"}`).
//! - [`apply`]: the one path every change takes, startup included: [`apply::prepare`]
//!   off the packet thread, [`apply::Network::commit`] on it, a typed
//!   [`apply::Report`] at the end.

#![forbid(unsafe_code)]

pub mod apply;
pub mod netem;
pub mod plan;

pub use apply::{
    dry_run, prepare, ApplyError, Changes, Network, Outcome, Ports, Prepared, Report, RunningView,
    Snapshot,
};
pub use plan::{ChainId, Plan, SpecError, StageId};
