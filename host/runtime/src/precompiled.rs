//! Modules compiled earlier — by a child process within a compile budget, or on an
//! earlier start — and kept in an on-disk cache, loaded without compiling again.
//!
//! This is the one place outside `host/io` with `unsafe` code (`scripts/check-unsafe`
//! knows it): `wasmtime::Module::deserialize` trusts its bytes to be wasmtime's own
//! compiled code, and running altered native code is not sandboxed. So an entry is
//! only ever trusted after [`unseal`] has verified it:
//!
//! - an entry is `MAGIC`, the SHA-256 of the wasm module it was compiled from, the
//!   SHA-256 of the artifact, then the artifact ([`seal`]);
//! - [`unseal`] checks the magic, that the module hash is the one of the bytes being
//!   loaded now, and the artifact's hash: a truncated, corrupted, foreign or stale
//!   entry is refused (and recompiled by the caller);
//! - wasmtime itself refuses an artifact of another wasmtime version, target or
//!   setting ([`artifact_tag`] also keys the cache by them).
//!
//! Entries are written and read only in a directory private to this user (the caller
//! checks it), through files made with `O_EXCL | O_NOFOLLOW`.

use crate::instance::PluginError;
use crate::wasm::{WasmModule, WasmRuntime};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

const MAGIC: &[u8; 16] = b"synthnet-cwasm1\n";
const HEADER: usize = MAGIC.len() + 32 + 32;

/// The SHA-256 of `bytes`, in hex (the cache key of a module's bytes).
pub fn content_key(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the artifacts of this build depend on besides the module: wasmtime's version,
/// the target and the engine's settings, as 16 hex digits.
pub fn artifact_tag() -> Result<String, PluginError> {
    let engine = wasmtime::Engine::new(&WasmRuntime::config())
        .map_err(|e| PluginError::new("wasmtime", format!("{e:#}")))?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    Ok(format!("{:016x}", h.finish()))
}

/// A cache entry for `artifact`, compiled from `wasm`.
pub fn seal(wasm: &[u8], artifact: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + artifact.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&Sha256::digest(wasm));
    out.extend_from_slice(&Sha256::digest(artifact));
    out.extend_from_slice(artifact);
    out
}

/// The artifact in `entry`, if `entry` is whole and was compiled from `wasm`.
pub fn unseal<'a>(entry: &'a [u8], wasm: &[u8]) -> Result<&'a [u8], String> {
    if entry.len() < HEADER || &entry[..MAGIC.len()] != MAGIC {
        return Err("not a synthnet cache entry".into());
    }
    let (module_hash, rest) = entry[MAGIC.len()..].split_at(32);
    let (artifact_hash, artifact) = rest.split_at(32);
    if module_hash != Sha256::digest(wasm).as_slice() {
        return Err("compiled from another module".into());
    }
    if artifact_hash != Sha256::digest(artifact).as_slice() {
        return Err("corrupt (its checksum does not match)".into());
    }
    Ok(artifact)
}

impl WasmRuntime {
    /// Load module `wasm` from a cache `entry`, without compiling: `Err` when the entry
    /// fails [`unseal`] or wasmtime refuses it (then compile it again), or when the
    /// module is not a plugin.
    pub fn load_precompiled(
        self: &Arc<Self>,
        name: &str,
        wasm: &[u8],
        entry: &[u8],
    ) -> Result<Arc<WasmModule>, PluginError> {
        let artifact = unseal(entry, wasm).map_err(|e| PluginError::new(name, e))?;
        // SAFETY: `Module::deserialize` requires bytes produced by
        // `Engine::precompile_module` (or `Module::serialize`) and not altered since.
        // `unseal` has checked the SHA-256 recorded when the entry was sealed right
        // after `precompile_module` returned, so the artifact is byte for byte what a
        // synthnet compiled; entries live in a directory only this user can write;
        // and wasmtime checks its own header (version, target, settings) and refuses
        // an artifact of another engine.
        let module = unsafe { wasmtime::Module::deserialize(self.engine(), artifact) }
            .map_err(|e| PluginError::new(name, format!("cannot load its compiled form: {e:#}")))?;
        self.finish(name, module, wasm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_trusted_only_whole_and_for_its_module() {
        let rt = WasmRuntime::new().unwrap();
        let wasm = crate::registry::wasm("latency").unwrap();
        let artifact = rt.precompile("latency", wasm).unwrap();
        let entry = seal(wasm, &artifact);
        assert!(rt.load_precompiled("latency", wasm, &entry).is_ok());
        // Another module's bytes, one flipped bit, a truncation: refused before wasmtime.
        let other = crate::registry::wasm("jitter").unwrap();
        assert!(unseal(&entry, other).is_err());
        let mut bad = entry.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(unseal(&bad, wasm).unwrap_err().contains("corrupt"));
        assert!(unseal(&entry[..entry.len() - 10], wasm).is_err());
        assert!(unseal(b"short", wasm).is_err());
        assert_eq!(artifact_tag().unwrap(), artifact_tag().unwrap());
    }
}
