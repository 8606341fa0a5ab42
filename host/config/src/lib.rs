//! # synthnet-config: from what a user writes to what the engine runs
//!
//! The layer above the core and the plugin host (which it uses) and below the binary.
//! No `unsafe` (forbidden below), no sockets. Its modules, bottom up (each uses only
//! those before it):
//!
//! - [`plan`]: what the engine runs: a validated [`plan::Plan`] with typed units, typed
//!   stage identities ([`plan::StageId`]) and resolved plugins, and [`plan::SpecError`].
//! - [`cmdlog`]: the command log's file format (one JSON line per command a stage was
//!   handed), written by the bridge and read by `replay`.
//! - [`describe`]: the `synthnet check` description of a plan.
//! - [`spec`]: the JSON specs users write (synthetic-network's two shapes, the native
//!   form, tc-netem(8) lines, schedules), validated into a plan; only a plan reaches the
//!   engine.
//! - [`apply`]: the one path every change takes, startup included: [`apply::prepare`]
//!   off the packet thread, [`apply::Network::commit`] on it, a typed
//!   [`apply::Report`] at the end.

#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod apply;
pub mod cmdlog;
pub mod describe;
pub mod errors;
pub mod offline;
pub mod plan;
pub mod spec;

pub use apply::{
    dry_run, prepare, ApplyError, Changes, Network, Outcome, Ports, Prepared, Report, RunningView,
    Snapshot,
};
pub use describe::describe;
pub use plan::{ChainId, Plan, SpecError, StageId};
