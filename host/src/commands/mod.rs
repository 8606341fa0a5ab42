//! The subcommands: each owns its flags (a `clap::Args` struct, whose doc comment is the
//! command's description) and its `run`; `bridge` serves the engine of
//! [`crate::daemon`], and every front door ends in it. `main.rs` only dispatches.
//!
//! `demo`, `bench` and `bench-bridge` are test tooling (they use `synthnet-testkit`,
//! which shells out to `ip`): they are built with the default feature `tools` only, and
//! the Docker image's binary leaves them out.

pub mod attach;
#[cfg(feature = "tools")]
pub mod bench;
#[cfg(feature = "tools")]
pub mod bench_bridge;
pub mod bridge;
pub mod check;
pub mod child;
pub mod compile_check;
pub mod ctl;
#[cfg(feature = "tools")]
pub mod demo;
pub mod replay;
pub mod run;
pub mod scaffold;
pub mod status;
pub mod takeover;

use std::path::Path;
use synthnet_config::Plan;

/// The spec named on the command line: a file, or `-` for the built-in default.
pub fn load_plan(path: &Path) -> anyhow::Result<Plan> {
    crate::daemon::load_plan((path.as_os_str() != "-").then_some(path))
}

/// Where `cmd`'s help falls short, one line each: a visible argument without a
/// description, a command that does something without an `Examples:` section. The
/// binary's test walks its whole command line with this.
#[doc(hidden)]
pub fn undescribed(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
    let here = format!("{path} {}", cmd.get_name()).trim().to_string();
    for a in cmd.get_arguments() {
        let builtin = matches!(a.get_id().as_str(), "help" | "version");
        if !builtin && !a.is_hide_set() && a.get_help().is_none() {
            missing.push(format!(
                "{here}: argument {} has no description",
                a.get_id()
            ));
        }
    }
    let subs: Vec<_> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    let is_leaf = subs.is_empty() || cmd.get_name() == "ctl";
    let examples = cmd
        .get_after_long_help()
        .or(cmd.get_after_help())
        .is_some_and(|h| h.to_string().contains("Examples:"));
    if !path.is_empty() && is_leaf && !examples && cmd.get_name() != "help" {
        missing.push(format!("{here}: no Examples: section"));
    }
    for s in subs {
        undescribed(s, &here, missing);
    }
}
