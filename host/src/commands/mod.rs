//! The subcommands: each owns its flags and its run; `bridge` serves the engine of
//! [`crate::daemon`], and every front door ends in it.

pub mod attach;
pub mod bench;
pub mod bench_bridge;
pub mod bridge;
pub mod check;
pub mod child;
pub mod ctl;
pub mod demo;
pub mod replay;
pub mod run;
pub mod scaffold;
pub mod status;
pub mod takeover;
