//! Fuzz target `spec`: any bytes as a spec. `spec::parse` must answer without
//! panicking, `describe` must describe what it accepts, and an accepted plan goes
//! through the one apply path into a network without interfaces — the graph `synthnet
//! check` builds, plugins compiled (once, cached) and instantiated with their configs.
//! Refusals are fine; a panic or an abort is a bug.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::path::Path;
use synthnet_config::spec;
use synthnet_runtime::{Loader, WasmRuntime};

thread_local! {
    // One loader for the whole run: compiling the built-ins for every input would leave
    // no time for inputs.
    static LOADER: RefCell<Option<Loader>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Relative plugin paths resolve into a directory that does not exist.
    let Ok(plan) = spec::parse(text, Path::new("/nonexistent/synthnet-fuzz")) else {
        return;
    };
    let _ = synthnet_config::describe(&plan);
    LOADER.with(|l| {
        let mut l = l.borrow_mut();
        let loader =
            l.get_or_insert_with(|| Loader::new(WasmRuntime::new().expect("wasmtime starts")));
        let _ = synthnet_config::dry_run(plan, loader);
    });
});
