//! Commands into running stages (link ABI 1.1 `synthnet_command`): how one is delivered
//! on the engine thread, between two breaths at the engine's `now`, and how it can fail.
//! The bridge (API, `synthnet ctl command`, schedules) and `synthnet replay --commands`
//! both deliver through [`send`], so a replay meets the same outcomes.

use serde::Serialize;
use serde_json::Value;
use synthnet_config::apply::CommandError;
use synthnet_config::plan::StageId;
use synthnet_config::Network;

/// Why a command was not answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum CommandFailure {
    /// No such stage runs now.
    UnknownStage(String),
    /// Over the link ABI's 64 KiB.
    TooLarge(String),
    /// The stage's plugin has no `synthnet_command` (it was never delivered).
    TakesNone(String),
    /// The plugin is down after a fault, waiting to restart (not delivered; try again).
    Down(String),
    /// The plugin refused it (delivered; its message).
    Refused(String),
    /// The plugin faulted on it, or answered with a reply that is not JSON (delivered).
    Failed(String),
}

impl CommandFailure {
    pub fn message(&self) -> &str {
        match self {
            CommandFailure::UnknownStage(m)
            | CommandFailure::TooLarge(m)
            | CommandFailure::TakesNone(m)
            | CommandFailure::Down(m)
            | CommandFailure::Refused(m)
            | CommandFailure::Failed(m) => m,
        }
    }

    /// Whether the plugin saw the command (then it is logged and replayed: a refusal
    /// or a fault may still have changed what the plugin keeps).
    pub fn delivered(&self) -> bool {
        matches!(self, CommandFailure::Refused(_) | CommandFailure::Failed(_))
    }
}

impl std::fmt::Display for CommandFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl From<CommandError> for CommandFailure {
    fn from(e: CommandError) -> Self {
        let m = e.to_string();
        match e {
            CommandError::UnknownStage { .. } => CommandFailure::UnknownStage(m),
            CommandError::TooLarge { .. } => CommandFailure::TooLarge(m),
            CommandError::NoCommands { .. } => CommandFailure::TakesNone(m),
            CommandError::Down { .. } => CommandFailure::Down(m),
            CommandError::Refused { .. } => CommandFailure::Refused(m),
            CommandError::Fault { .. } | CommandError::BadReply { .. } => CommandFailure::Failed(m),
        }
    }
}

/// Deliver `command` to `stage` at engine time `now_ns` (engine thread, between two
/// breaths): the plugin's reply, or why not.
pub fn send(
    net: &mut Network,
    stage: &StageId,
    now_ns: u64,
    command: &Value,
) -> Result<Value, CommandFailure> {
    net.command(stage, now_ns, command)
        .map_err(CommandFailure::from)
}
