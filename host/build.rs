//! Compiles the built-in plugins (`plugins/*`) to wasm32-unknown-unknown and embeds them
//! in the `synthnet` binary, so a user needs nothing but the binary. Also builds the
//! `testbed` plugin for the host's tests (its path is exported, it is not embedded).
//!
//! The nested cargo uses its own target directory, so it never waits on the outer
//! build's lock. If the wasm target is missing it is installed with rustup; where that
//! is impossible the build stops and says what to run.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const SHIPPED: [&str; 5] = ["latency", "jitter", "rate", "loss", "corrupt"];
const TEST_ONLY: [&str; 1] = ["testbed"];
const TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let ws = manifest
        .parent()
        .expect("host/ lives in the workspace")
        .to_path_buf();
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    for dir in ["sdk/src", "sdk/Cargo.toml", "plugins", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", ws.join(dir).display());
    }
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
    for p in SHIPPED.iter().chain(TEST_ONLY.iter()) {
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
    for p in SHIPPED {
        let src = built.join(format!("synthnet_plugin_{p}.wasm"));
        let dst = out.join(format!("{p}.wasm"));
        std::fs::copy(&src, &dst).unwrap_or_else(|e| fail(&format!("{}: {e}", src.display())));
        table.push_str(&format!(
            "    ({p:?}, include_bytes!({:?})),\n",
            dst.display().to_string()
        ));
    }
    table.push_str("];\n");
    std::fs::write(out.join("builtin_wasm.rs"), table).unwrap_or_else(|e| fail(&e.to_string()));
    for p in TEST_ONLY {
        let src = built.join(format!("synthnet_plugin_{p}.wasm"));
        let dst = out.join(format!("{p}.wasm"));
        std::fs::copy(&src, &dst).unwrap_or_else(|e| fail(&format!("{}: {e}", src.display())));
        println!(
            "cargo:rustc-env=SYNTHNET_{}_WASM={}",
            p.to_uppercase(),
            dst.display()
        );
    }
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
