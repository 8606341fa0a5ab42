//! # synthnet: the binary's layer
//!
//! The top of the stack: it may use every layer below (`synthnet-core`,
//! `synthnet-runtime`, `synthnet-config`, `synthnet-io`) and, with the default feature
//! `tools` only, the test kit (for the demo and the forwarding benchmark; the shipped
//! image is built without it). It has no `unsafe` (forbidden below).
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
//! - [`commands`]: every subcommand, each with its flags (a `clap::Args` struct) and
//!   its `run`: `bridge`, the front doors `run`, `attach` and `takeover`, `ctl`,
//!   `check`, `replay`, `plugin new`, and the tools `demo`, `bench`, `bench-bridge`.
//!
//! `main.rs` only dispatches to them.

#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod api;
pub mod commands;
pub mod daemon;
