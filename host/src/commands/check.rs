//! `synthnet check`: a spec validated exactly as the bridge and replay would run it.
//!
//! The plan goes through the one apply path into a network with no interfaces (a source
//! and a sink per direction that never see a packet): every plugin is compiled and
//! instantiated with its config (the plugin's own validation runs), and the graph is
//! built as it would be live. What `check` accepts, `bridge` and `replay` run.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use synthnet_config::{dry_run, Outcome, Plan};
use synthnet_runtime::{Loader, WasmRuntime};

use crate::daemon::timing::Timing;

/// Validate a spec and print the resolved plan (every chain, setting and unit).
#[derive(clap::Args, Debug)]
#[command(
    after_long_help = "Examples:\n  synthnet check specs/native.json\n  synthnet check specs/*.json\n  synthnet check -          # the built-in default spec"
)]
pub struct CheckArgs {
    /// The specs (JSON), checked one after another; `-` for the built-in default
    /// spec. Fails if any is invalid, naming it.
    #[arg(required = true, num_args = 1..)]
    pub spec: Vec<PathBuf>,
    /// The bridge's `--timing` setting to state the promise of (departure accuracy
    /// against CPU).
    #[arg(long, value_enum, default_value_t = Timing::default(), value_name = "SETTING")]
    pub timing: Timing,
}

impl CheckArgs {
    /// Check every spec in turn, printing each plan; the first invalid one ends it.
    pub fn run(self) -> Result<ExitCode> {
        // What it prints may go to `head`: a closed pipe ends it quietly.
        synthnet_io::process::die_on_broken_pipe();
        // Held packets leave as the timing setting promises (the spec's delays are the
        // least a packet waits; this is what may come on top).
        println!("timing {}: {}", self.timing, self.timing.promise());
        let many = self.spec.len() > 1;
        for spec in &self.spec {
            if many {
                println!("== {}", spec.display());
            }
            let plan = super::load_plan(spec)?;
            check(&plan).with_context(|| format!("invalid spec {}", spec.display()))?;
            print!("{}", synthnet_config::describe(&plan));
            println!("ok");
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Build `plan` the way the bridge would, without interfaces. `Err` says why not.
pub fn check(plan: &Plan) -> Result<()> {
    let mut loader = Loader::new(WasmRuntime::new()?);
    match dry_run(plan.clone(), &mut loader).outcome {
        Outcome::Applied(_) => Ok(()),
        Outcome::Refused(e) => Err(e.into()),
    }
}
