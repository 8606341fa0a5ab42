//! The built-in plugins: every crate under `plugins/` whose `Cargo.toml` says
//! `[package.metadata.synthnet] builtin = true`, found and compiled to wasm by
//! `build.rs` and embedded in the binary. That metadata line is the only place a
//! built-in is declared; this table, `synthnet-native`'s and the tests that walk every
//! built-in are generated from it.

include!(concat!(env!("OUT_DIR"), "/builtin_wasm.rs"));

/// Names of the built-in plugins, sorted.
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

/// The wasm file of test-only plugin `name` (e.g. `testbed`, which misbehaves on purpose).
pub fn test_only_path(name: &str) -> Option<&'static str> {
    TEST_ONLY_WASM
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| *p)
}
