//! The module cache: loads plugin modules (built-in or from files) and makes factories.
//! Built-in modules are compiled once; a `.wasm` file is read again on every load and
//! recompiled only when its bytes changed, so a reload picks up a rebuilt plugin and
//! leaves the others alone.

use crate::instance::{fingerprint, Factory, PluginError};
use crate::registry;
use crate::wasm::{WasmFactory, WasmModule, WasmRuntime};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a plugin comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginRef {
    /// A built-in plugin, by name.
    Builtin(String),
    /// A `.wasm` file.
    File(PathBuf),
}

impl fmt::Display for PluginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginRef::Builtin(n) => f.write_str(n),
            PluginRef::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Compiles modules once and hands out factories.
pub struct Loader {
    rt: Arc<WasmRuntime>,
    modules: HashMap<PluginRef, (u64, Arc<WasmModule>)>,
}

impl Loader {
    pub fn new(rt: Arc<WasmRuntime>) -> Self {
        Loader {
            rt,
            modules: HashMap::new(),
        }
    }

    pub fn runtime(&self) -> &Arc<WasmRuntime> {
        &self.rt
    }

    /// The compiled module of `plugin` (compiling it if new or changed).
    pub fn module(&mut self, plugin: &PluginRef) -> Result<Arc<WasmModule>, PluginError> {
        let (hash, m) = match plugin {
            PluginRef::Builtin(name) => {
                if let Some((_, m)) = self.modules.get(plugin) {
                    return Ok(m.clone());
                }
                let bytes = registry::wasm(name)
                    .ok_or_else(|| PluginError::new(name, "not a built-in plugin"))?;
                (0, self.rt.load(name, bytes)?)
            }
            PluginRef::File(path) => {
                let shown = path.display().to_string();
                let bytes = std::fs::read(path)
                    .map_err(|e| PluginError::new(&shown, format!("cannot read: {e}")))?;
                let hash = fingerprint(&[&bytes]);
                if let Some((h, m)) = self.modules.get(plugin) {
                    if *h == hash {
                        return Ok(m.clone());
                    }
                }
                (hash, self.rt.load(&shown, &bytes)?)
            }
        };
        self.modules.insert(plugin.clone(), (hash, m.clone()));
        Ok(m)
    }

    /// A factory for `plugin` with `config` (JSON bytes) and a linear-memory cap.
    pub fn factory(
        &mut self,
        plugin: &PluginRef,
        config: &[u8],
        memory_limit: usize,
    ) -> Result<Arc<dyn Factory>, PluginError> {
        let module = self.module(plugin)?;
        Ok(Arc::new(WasmFactory::new(module, config, memory_limit)))
    }
}
