//! What the plugin host runs: an [`Instance`] of a plugin, made by a [`Factory`] that
//! holds one plugin with one configuration. wasm instances live in [`crate::wasm`]; the
//! same plugin source compiled natively (crate `synthnet-native`) implements the same
//! traits, for benchmarks and differential tests.

use synthnet_sdk::abi::Layout;

/// Why a plugin could not be loaded, configured or instantiated.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("plugin {plugin}: {message}")]
pub struct PluginError {
    pub plugin: String,
    pub message: String,
}

impl PluginError {
    pub fn new(plugin: impl Into<String>, message: impl Into<String>) -> Self {
        PluginError {
            plugin: plugin.into(),
            message: message.into(),
        }
    }
}

/// How an instance answered a command (link ABI 1.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Accepted: `verdicts` were written (as by a tick), and the reply is JSON text.
    Reply { verdicts: u32, reply: Vec<u8> },
    /// The plugin refused the command, with its message.
    Refused(String),
    /// The module exports no `synthnet_command`.
    NoCommands,
}

/// One live plugin instance.
pub trait Instance: Send {
    /// The validated region layout.
    fn layout(&self) -> &Layout;
    /// The memory the layout's addresses refer to.
    fn memory(&mut self) -> &mut [u8];
    /// `synthnet_process(n, now_ns)`: the number of verdicts, or why the call failed.
    fn process(&mut self, n: u32, now_ns: u64) -> Result<u32, String>;
    /// The plugin's state for a hand-over (empty if it keeps none).
    fn snapshot(&mut self) -> Result<Vec<u8>, String>;
    fn restore(&mut self, state: &[u8]) -> Result<(), String>;
    /// `synthnet_command(cmd, now_ns)` and its reply; `Err` when the call failed (a
    /// trap, the CPU deadline: a fault, as in `process`). An instance without the
    /// export takes no commands.
    fn command(&mut self, _cmd: &[u8], _now_ns: u64) -> Result<Answer, String> {
        Ok(Answer::NoCommands)
    }
}

/// Makes instances of one plugin with one configuration.
pub trait Factory: Send + Sync {
    /// The plugin's name (built-in name or file path).
    fn plugin(&self) -> &str;
    /// A fresh, initialised instance. Runs the plugin's init: call it off the packet
    /// thread.
    fn instantiate(&self, seed: u64) -> Result<Box<dyn Instance>, PluginError>;
    /// Identity of code + config, to tell whether a change changed anything.
    fn fingerprint(&self) -> u64;
}

/// FNV-1a over several byte strings: a stable identity for code + config.
pub fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(&[0xFF]) {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}
