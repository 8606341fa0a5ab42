//! # synthnet-runtime: the plugin host
//!
//! The host side of the link ABI (`docs/ABI.md`), above `synthnet-core` and below the
//! configuration layer. It may use the core, the SDK's ABI definitions and wasmtime; it
//! knows nothing of specs, sockets or files other than plugin modules, and has no
//! `unsafe` but one documented exception ([`precompiled`]: loading a module compiled
//! earlier, after verifying it).
//!
//! - [`instance`]: the [`Instance`] and [`Factory`] traits every runtime implements.
//! - [`wasm`]: wasm instances on wasmtime, one `Store` each, bounded in memory and CPU.
//! - [`app`]: [`PluginApp`], the engine app around an instance: batches out, verdicts
//!   validated and applied, held packets kept in the host.
//! - [`supervisor`]: faults, restarts with a backoff that decays.
//! - [`loader`]: the module cache; [`registry`]: the built-in plugins.
//! - [`precompiled`]: compiled modules sealed for, and loaded from, the on-disk cache.

// Denied, not forbidden: `precompiled` is the one documented exception (loading a
// compiled module from the cache), and scripts/check-unsafe allows no other.
#![deny(unsafe_code)]
#![warn(unreachable_pub)]

pub mod app;
pub mod instance;
pub mod loader;
#[allow(unsafe_code)]
pub mod precompiled;
pub mod registry;
pub mod supervisor;
pub mod wasm;

pub use app::{CommandError, Handover, PluginApp, DEFAULT_HOLD_LIMIT};
pub use instance::{fingerprint, Answer, Factory, Instance, PluginError};
pub use loader::{CompileCheck, Loader, PluginRef};
pub use supervisor::Health;
pub use wasm::{WasmFactory, WasmRuntime, DEFAULT_MEMORY_LIMIT};
