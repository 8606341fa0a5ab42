//! What a refused change or an unanswered command says: [`ApplyError`] and
//! [`CommandError`], the one error type of a command, from the plugin host's answer to
//! the HTTP API's status and the command log (re-exported by [`crate::apply`]).

use serde::Serialize;

/// Why [`crate::apply::Network::command`] gave no reply. Each names the stage (and plugin); the
/// running configuration and every packet in flight are untouched by all but `Fault`,
/// which restarts the stage's instance as a batch's fault does (its held and parked
/// packets stay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum CommandError {
    #[error("no stage {stage} runs (running: {running})")]
    UnknownStage { stage: String, running: String },
    #[error("a command of {len_bytes} bytes, more than the {max_bytes} a command may have")]
    TooLarge { len_bytes: usize, max_bytes: usize },
    #[error("stage {stage} (plugin {plugin}) takes no commands")]
    NoCommands { stage: String, plugin: String },
    #[error("stage {stage} (plugin {plugin}) refused the command: {message}")]
    Refused {
        stage: String,
        plugin: String,
        message: String,
    },
    #[error("stage {stage} (plugin {plugin}) faulted on the command: {message}; it restarts")]
    Fault {
        stage: String,
        plugin: String,
        message: String,
    },
    #[error("stage {stage} (plugin {plugin}) is down after a fault ({message}); try again")]
    Down {
        stage: String,
        plugin: String,
        message: String,
    },
    #[error("stage {stage} (plugin {plugin}) answered with a reply that is not JSON: {message}")]
    BadReply {
        stage: String,
        plugin: String,
        message: String,
    },
}

impl CommandError {
    /// The runtime's answer for one plugin instance, said for the stage that runs it
    /// (the one place the runtime's error becomes this one).
    pub fn of_plugin(stage: String, plugin: String, e: synthnet_runtime::CommandError) -> Self {
        use synthnet_runtime::CommandError as E;
        match e {
            E::NoCommands => CommandError::NoCommands { stage, plugin },
            E::Refused(message) => CommandError::Refused {
                stage,
                plugin,
                message,
            },
            E::Fault(message) => CommandError::Fault {
                stage,
                plugin,
                message,
            },
            E::Down(message) => CommandError::Down {
                stage,
                plugin,
                message,
            },
        }
    }

    /// Whether the plugin saw the command (then it is logged and replayed: a refusal,
    /// a fault or a reply that is not JSON may still have changed what the plugin
    /// keeps).
    pub fn delivered(&self) -> bool {
        matches!(
            self,
            CommandError::Refused { .. }
                | CommandError::Fault { .. }
                | CommandError::BadReply { .. }
        )
    }
}

/// A refused change: the field or stage it concerns (when known) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}{message}", field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct ApplyError {
    pub field: Option<String>,
    pub message: String,
}

impl ApplyError {
    pub(crate) fn at(field: impl Into<String>, e: impl std::fmt::Display) -> Self {
        ApplyError {
            field: Some(field.into()),
            message: e.to_string(),
        }
    }
}

impl From<crate::plan::SpecError> for ApplyError {
    fn from(e: crate::plan::SpecError) -> Self {
        ApplyError {
            field: Some(e.field),
            message: e.reason,
        }
    }
}
