//! # synthnet: the binary's layer
//!
//! The top of the stack: it may use every layer below (`synthnet-core`,
//! `synthnet-runtime`, `synthnet-config`, `synthnet-io`) and the test kit (for the demo
//! and the forwarding benchmark). It has no `unsafe` (forbidden below).
//!
//! - [`daemon`]: `synthnet bridge`: the engine thread's run loop and sleep (when to wake
//!   for a deadline is the `--timing` setting's [`daemon::timing::Pacer`]), the
//!   [`daemon::control`] flags and wake pipe (signals registered once), the
//!   [`daemon::worker`] thread that prepares every configuration change off the packet
//!   thread (a schedule's steps ahead of their times) and passes commands on to running
//!   plugins (logged by [`synthnet_config::cmdlog`]), and the
//!   [`daemon::stats`] line.
//! - [`api`]: the control plane the bridge serves: REST API, web UI, Prometheus
//!   metrics, synthetic-network's `/qos` and `/top` profiles.
//! - [`commands`]: the other subcommands: `check`, `replay`, `demo`, `bench`,
//!   `bench-bridge`, `plugin new`.
//!
//! `main.rs` is a thin clap layer over this.

#![forbid(unsafe_code)]

pub mod api;
pub mod commands;
pub mod daemon;
