//! Finds the built-in plugins and compiles them to wasm32-unknown-unknown, to embed them
//! in the `synthnet` binary, so a user needs nothing but the binary.
//!
//! A plugin crate under `plugins/` is built in when its `Cargo.toml` says
//! `[package.metadata.synthnet] builtin = true`, and built for the host's tests only
//! (its path exported as `SYNTHNET_<NAME>_WASM`, not embedded) with
//! `builtin = "test-only"`. That line is the one place a built-in is declared: the
//! names go on to `synthnet-native` (through `links` metadata) for its native builds.
//!
//! The nested cargo uses its own target directory, so it never waits on the outer
//! build's lock. If the wasm target is missing it is installed with rustup; where that
//! is impossible the build stops and says what to run.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";

/// What a plugin's `Cargo.toml` says about itself.
#[derive(serde::Deserialize)]
struct Manifest {
    package: Package,
}
#[derive(serde::Deserialize)]
struct Package {
    name: String,
    #[serde(default)]
    metadata: Option<Metadata>,
}
#[derive(serde::Deserialize)]
struct Metadata {
    synthnet: Option<SynthnetMeta>,
}
#[derive(serde::Deserialize)]
struct SynthnetMeta {
    builtin: toml::Value,
}

/// The plugin crates under `plugins/`, sorted: (shipped, test-only) names.
fn find_plugins(plugins: &Path) -> (Vec<String>, Vec<String>) {
    let (mut shipped, mut test_only) = (Vec::new(), Vec::new());
    let dirs =
        std::fs::read_dir(plugins).unwrap_or_else(|e| fail(&format!("{}: {e}", plugins.display())));
    for dir in dirs.flatten() {
        let toml_path = dir.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&toml_path) else {
            continue;
        };
        let m: Manifest = toml::from_str(&text)
            .unwrap_or_else(|e| fail(&format!("{}: {e}", toml_path.display())));
        let Some(meta) = m.package.metadata.and_then(|m| m.synthnet) else {
            continue;
        };
        let name = dir.file_name().to_string_lossy().into_owned();
        if m.package.name != format!("synthnet-plugin-{name}") {
            fail(&format!(
                "{}: a built-in plugin in plugins/{name} must be the package synthnet-plugin-{name}",
                toml_path.display()
            ));
        }
        match &meta.builtin {
            toml::Value::Boolean(true) => shipped.push(name),
            toml::Value::String(s) if s == "test-only" => test_only.push(name),
            toml::Value::Boolean(false) => {}
            other => fail(&format!(
                "{}: metadata.synthnet.builtin must be true, false or \"test-only\", got {other:?}",
                toml_path.display()
            )),
        }
    }
    shipped.sort();
    test_only.sort();
    (shipped, test_only)
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let ws = manifest
        .ancestors()
        .nth(2)
        .expect("host/runtime lives two levels below the workspace root")
        .to_path_buf();
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    for dir in ["sdk/src", "sdk/Cargo.toml", "plugins", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", ws.join(dir).display());
    }
    let (shipped, test_only) = find_plugins(&ws.join("plugins"));
    // For synthnet-native's build script (DEP_SYNTHNET_BUILTINS_*).
    println!("cargo::metadata=names={}", shipped.join(","));
    println!("cargo::metadata=plugins={}", ws.join("plugins").display());
    println!("cargo:rerun-if-env-changed=SYNTHNET_WASM_TARGET_DIR");

    ensure_wasm_target();
    let target_dir = env::var_os("SYNTHNET_WASM_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("target").join("wasm-plugins"));
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&ws)
        .args(["build", "--profile", "wasm-plugin", "--target", TARGET])
        .env("CARGO_TARGET_DIR", &target_dir)
        // Flags meant for the host build must not leak into the wasm build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    for p in shipped.iter().chain(&test_only) {
        cmd.args(["-p", &format!("synthnet-plugin-{p}")]);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| fail(&format!("could not run cargo: {e}")));
    if !status.success() {
        fail("building the built-in plugins for wasm32-unknown-unknown failed (see above)");
    }
    let built = target_dir.join(TARGET).join("wasm-plugin");
    let mut table = String::from("/// Built-in plugins: (name, wasm bytes).\npub static BUILTIN_WASM: &[(&str, &[u8])] = &[\n");
    for p in &shipped {
        // Cargo names a crate's artifact with `-` turned into `_` (plugins/tx-stall).
        let src = built.join(format!("synthnet_plugin_{}.wasm", p.replace('-', "_")));
        let dst = out.join(format!("{p}.wasm"));
        std::fs::copy(&src, &dst).unwrap_or_else(|e| fail(&format!("{}: {e}", src.display())));
        table.push_str(&format!(
            "    ({p:?}, include_bytes!({:?})),\n",
            dst.display().to_string()
        ));
    }
    table.push_str("];\n\n/// Plugins built for tests only: (name, path of the wasm file).\npub static TEST_ONLY_WASM: &[(&str, &str)] = &[\n");
    for p in &test_only {
        let src = built.join(format!("synthnet_plugin_{}.wasm", p.replace('-', "_")));
        let dst = out.join(format!("{p}.wasm"));
        std::fs::copy(&src, &dst).unwrap_or_else(|e| fail(&format!("{}: {e}", src.display())));
        table.push_str(&format!("    ({p:?}, {:?}),\n", dst.display().to_string()));
    }
    table.push_str("];\n");
    std::fs::write(out.join("builtin_wasm.rs"), table).unwrap_or_else(|e| fail(&e.to_string()));
}

fn ensure_wasm_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let has = |root: &str| Path::new(root).join("lib/rustlib").join(TARGET).exists();
    if has(&sysroot) {
        return;
    }
    println!("cargo:warning=installing the {TARGET} target with rustup (needed for the built-in plugins)");
    let ok = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok || !has(&sysroot) {
        fail(&format!(
            "the Rust target {TARGET} is missing. Run:  rustup target add {TARGET}"
        ));
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1);
}
