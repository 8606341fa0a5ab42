//! Compiles every built-in plugin's source natively, as a module of this crate: the
//! names come from `synthnet-runtime`'s build script (which found them by their
//! `[package.metadata.synthnet] builtin = true`), so no list of plugins is kept here.
//! A built-in's source may use `synthnet_sdk`, `synthnet_builtins`, `serde` and
//! `serde_json`, this crate's dependencies, and refers to its own items by plain paths
//! (not `crate::`).

use std::env;
use std::path::PathBuf;

fn main() {
    let names = env::var("DEP_SYNTHNET_BUILTINS_NAMES").expect("set by synthnet-runtime");
    let dir =
        PathBuf::from(env::var("DEP_SYNTHNET_BUILTINS_PLUGINS").expect("set by synthnet-runtime"));
    let mut code = String::new();
    let mut table = String::from(
        "/// Native factories of the built-in plugins, by name.\n\
         pub fn factory(name: &str, config: &[u8]) -> Option<std::sync::Arc<dyn Factory>> {\n    \
         Some(match name {\n",
    );
    for name in names.split(',').filter(|n| !n.is_empty()) {
        let src = dir.join(name).join("src").join("lib.rs");
        println!("cargo:rerun-if-changed={}", src.display());
        let module = name.replace('-', "_");
        code.push_str(&format!(
            "#[path = {:?}]\n#[allow(clippy::all, dead_code)]\npub mod {module};\n",
            src.display().to_string()
        ));
        table.push_str(&format!(
            "        {name:?} => std::sync::Arc::new(NativeFactory::<{module}::SynthnetPlugin>::new(name, config)),\n"
        ));
    }
    table.push_str("        _ => return None,\n    })\n}\n");
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    std::fs::write(out.join("builtins.rs"), code + &table).expect("write builtins.rs");
}
