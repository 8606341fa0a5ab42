//! The subcommands other than `bridge` (which is [`crate::daemon`]).

pub mod bench;
pub mod bench_bridge;
pub mod check;
pub mod ctl;
pub mod demo;
pub mod replay;
pub mod scaffold;
pub mod takeover;
