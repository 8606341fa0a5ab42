//! `synthnet __compile-check` (hidden): the child process in which the bridge compiles
//! a plugin file within its compile budget ([`crate::daemon::compile`]).

use std::path::PathBuf;
use std::process::ExitCode;

/// Internal: compile the plugin module on standard input within CPU_SECS (the
/// bridge's compile budget; see `--compile-budget`).
#[derive(clap::Args, Debug)]
pub struct CompileCheckArgs {
    /// CPU seconds the compile may take.
    pub cpu_secs: u64,
    /// The plugin's name, for messages.
    pub name: String,
    /// The module's entry point, if not the default.
    pub entry: Option<PathBuf>,
}

impl CompileCheckArgs {
    /// Compile and say how it went (the exit code and a line on standard output).
    pub fn run(self) -> ExitCode {
        crate::daemon::compile::child(self.cpu_secs, &self.name, self.entry.as_deref())
    }
}
