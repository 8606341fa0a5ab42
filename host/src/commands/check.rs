//! `synthnet check`: a spec validated exactly as the bridge and replay would run it.
//!
//! The plan goes through the one apply path into a network with no interfaces (a source
//! and a sink per direction that never see a packet): every plugin is compiled and
//! instantiated with its config (the plugin's own validation runs), and the graph is
//! built as it would be live. What `check` accepts, `bridge` and `replay` run.

use anyhow::Result;
use synthnet_config::{dry_run, Outcome, Plan};
use synthnet_runtime::{Loader, WasmRuntime};

/// Build `plan` the way the bridge would, without interfaces. `Err` says why not.
pub fn check(plan: &Plan) -> Result<()> {
    let mut loader = Loader::new(WasmRuntime::new()?);
    match dry_run(plan.clone(), &mut loader).outcome {
        Outcome::Applied(_) => Ok(()),
        Outcome::Refused(e) => Err(e.into()),
    }
}
