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

/// The largest plugin module accepted (the built-ins are 60–200 KiB).
pub const MAX_MODULE_BYTES: u64 = 16 << 20;

/// Read a regular file of at most `max` bytes. Anything else — a FIFO, a device such as
/// `/dev/zero`, a directory, a file too large — is refused with a message, without
/// blocking or reading without end.
pub fn read_file(path: &std::path::Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("cannot read: not a regular file".into());
    }
    if meta.len() > max {
        return Err(format!(
            "cannot read: {} bytes, more than the {max} allowed",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("cannot read: more than the {max} bytes allowed"));
    }
    Ok(bytes)
}

/// How a plugin file's module is compiled instead of here: given the name to show and
/// the module's bytes, `Err(message)` refuses it, `Ok(Some(entry))` is its compiled
/// form sealed by [`crate::precompiled::seal`] (loaded without compiling), `Ok(None)`
/// lets it compile here. The bridge compiles it in a child process with a CPU and wall
/// budget, so that a module that takes too long to compile is refused at the budget
/// and its compile is stopped (wasmtime cannot stop a compile in its own thread), and
/// keeps the result in an on-disk cache.
pub type CompileCheck = Arc<dyn Fn(&str, &[u8]) -> Result<Option<Vec<u8>>, String> + Send + Sync>;

/// Compiles modules once and hands out factories.
pub struct Loader {
    rt: Arc<WasmRuntime>,
    modules: HashMap<PluginRef, (u64, Arc<WasmModule>)>,
    check: Option<CompileCheck>,
}

impl Loader {
    pub fn new(rt: Arc<WasmRuntime>) -> Self {
        Loader {
            rt,
            modules: HashMap::new(),
            check: None,
        }
    }

    /// Pass every new or changed plugin file through `check` before compiling it
    /// (built-ins are ours, and not checked).
    pub fn set_compile_check(&mut self, check: CompileCheck) {
        self.check = Some(check);
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
                let bytes =
                    read_file(path, MAX_MODULE_BYTES).map_err(|e| PluginError::new(&shown, e))?;
                let hash = fingerprint(&[&bytes]);
                if let Some((h, m)) = self.modules.get(plugin) {
                    if *h == hash {
                        return Ok(m.clone());
                    }
                }
                let entry = match &self.check {
                    Some(check) => {
                        check(&shown, &bytes).map_err(|e| PluginError::new(&shown, e))?
                    }
                    None => None,
                };
                match entry {
                    Some(entry) => (hash, self.rt.load_precompiled(&shown, &bytes, &entry)?),
                    None => (hash, self.rt.load(&shown, &bytes)?),
                }
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
