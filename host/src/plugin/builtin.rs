//! The built-in plugins: compiled to wasm by `build.rs` and embedded in the binary, and
//! also linked natively (same source) for benchmarks and differential tests.

use super::native::NativeFactory;
use super::Factory;
use std::sync::Arc;

include!(concat!(env!("OUT_DIR"), "/builtin_wasm.rs"));

/// Names of the built-in plugins.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTIN_WASM.iter().map(|(n, _)| *n)
}

/// The embedded wasm module of built-in plugin `name`.
pub fn wasm(name: &str) -> Option<&'static [u8]> {
    BUILTIN_WASM
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
}

/// A native factory for built-in plugin `name` with `config` (JSON).
pub fn native(name: &str, config: &[u8]) -> Option<Arc<dyn Factory>> {
    use synthnet_plugin_corrupt::Corrupt;
    use synthnet_plugin_jitter::Jitter;
    use synthnet_plugin_latency::Latency;
    use synthnet_plugin_loss::Loss;
    use synthnet_plugin_rate::Rate;
    let f: Arc<dyn Factory> = match name {
        "latency" => Arc::new(NativeFactory::<Latency>::new(name, config)),
        "jitter" => Arc::new(NativeFactory::<Jitter>::new(name, config)),
        "rate" => Arc::new(NativeFactory::<Rate>::new(name, config)),
        "loss" => Arc::new(NativeFactory::<Loss>::new(name, config)),
        "corrupt" => Arc::new(NativeFactory::<Corrupt>::new(name, config)),
        _ => return None,
    };
    Some(f)
}
