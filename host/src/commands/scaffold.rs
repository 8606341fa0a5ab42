//! `synthnet plugin new NAME`: a ready-to-build plugin crate that forwards every packet.
//!
//! The crate carries a copy of this synthnet's SDK (under `vendor/synthnet-sdk`), so it
//! builds anywhere with only crates.io, and always speaks the link ABI of the binary
//! that made it.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Every source file of the SDK (a test checks none is missing).
const SDK_FILES: [(&str, &str); 15] = [
    ("src/lib.rs", include_str!("../../../sdk/src/lib.rs")),
    ("src/abi.rs", include_str!("../../../sdk/src/abi.rs")),
    ("src/guest.rs", include_str!("../../../sdk/src/guest.rs")),
    (
        "src/harness.rs",
        include_str!("../../../sdk/src/harness.rs"),
    ),
    ("src/export.rs", include_str!("../../../sdk/src/export.rs")),
    ("src/rng.rs", include_str!("../../../sdk/src/rng.rs")),
    ("src/wire.rs", include_str!("../../../sdk/src/wire.rs")),
    (
        "src/checksum.rs",
        include_str!("../../../sdk/src/checksum.rs"),
    ),
    ("src/config.rs", include_str!("../../../sdk/src/config.rs")),
    ("src/dist.rs", include_str!("../../../sdk/src/dist.rs")),
    ("src/queue.rs", include_str!("../../../sdk/src/queue.rs")),
    ("src/state.rs", include_str!("../../../sdk/src/state.rs")),
    ("src/build.rs", include_str!("../../../sdk/src/build.rs")),
    ("src/flow.rs", include_str!("../../../sdk/src/flow.rs")),
    (
        "src/flowmap.rs",
        include_str!("../../../sdk/src/flowmap.rs"),
    ),
];

/// Whether `name` works as a crate name and a file name.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        bail!("plugin name {name:?}: use lowercase letters, digits, '-' or '_', starting with a letter");
    }
    Ok(())
}

fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Write the crate into `dir/NAME`; returns its path.
pub fn new_plugin(name: &str, dir: &Path) -> Result<PathBuf> {
    check_name(name)?;
    let root = dir.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    let sdk = root.join("vendor/synthnet-sdk");
    std::fs::create_dir_all(sdk.join("src"))
        .with_context(|| format!("cannot create {}", root.display()))?;
    std::fs::create_dir_all(root.join("src"))?;
    let version = env!("CARGO_PKG_VERSION");
    std::fs::write(
        sdk.join("Cargo.toml"),
        format!(
            r#"[package]
name = "synthnet-sdk"
version = "{version}"
edition = "2021"
description = "synthnet plugin SDK (copied by `synthnet plugin new`)"

[dependencies]
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"
"#
        ),
    )?;
    for (file, text) in SDK_FILES {
        std::fs::write(sdk.join(file), text)?;
    }
    let crate_name = name.replace('-', "_");
    let ty = type_name(name);
    std::fs::write(
        root.join("Cargo.toml"),
        format!(
            r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
synthnet-sdk = {{ path = "vendor/synthnet-sdk" }}
serde = {{ version = "1", features = ["derive"] }}

# A crate of its own, even when created inside another workspace.
[workspace]

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"
strip = true
"#
        ),
    )?;
    std::fs::write(
        root.join("src/lib.rs"),
        format!(
            r#"//! `{name}`: a synthnet packet function. It forwards every packet unchanged; change
//! `process` to make it do something (see the SDK docs: `Batch` has `forward`, `send`
//! (deliver later), `discard`, `data`/`data_mut` + `send_modified`, `inject`).

use serde::Deserialize;
use synthnet_sdk::{{export_plugin, Batch, Plugin}};

/// The plugin's configuration: the `config` object of its entry in a spec.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {{}}

pub struct {ty};

impl Plugin for {ty} {{
    type Config = Config;

    fn new(_config: Config, _seed: u64) -> Result<Self, String> {{
        Ok({ty})
    }}

    fn process(&mut self, batch: &mut Batch<'_>) {{
        for i in 0..batch.len() {{
            batch.forward(i);
        }}
    }}
}}

export_plugin!({ty});

#[cfg(test)]
mod tests {{
    use super::*;
    use synthnet_sdk::Harness;

    /// Three packets of different lengths, as the host would hand them over.
    fn run() -> Vec<synthnet_sdk::Output> {{
        let mut h = Harness::<{ty}>::new("{{}}", 1).unwrap();
        h.push(&[1u8; 60], 0);
        h.push(&[2u8; 61], 5);
        h.push(&[3u8; 1500], 7);
        h.run(10)
    }}

    /// The contract every plugin keeps, whatever it does: each packet is answered
    /// (sent on, now or later, or dropped); nothing leaves before it arrived; a packet
    /// sent on unmodified keeps its bytes.
    #[test]
    fn every_packet_is_answered() {{
        let out = run();
        for i in 0..3 {{
            assert!(
                out.iter().any(|o| o.input == Some(i)),
                "packet {{i}} got no verdict: {{out:?}}"
            );
        }}
        for o in out.iter().filter(|o| o.port.is_some()) {{
            assert!(o.at_ns >= 10, "a departure in the past: {{o:?}}");
            assert!(!o.bytes.is_empty());
        }}
    }}

    /// Same seed, same input: same answers (plugins are deterministic).
    #[test]
    fn same_input_same_answers() {{
        let (a, b) = (run(), run());
        assert_eq!(format!("{{a:?}}"), format!("{{b:?}}"));
    }}
}}
"#
        ),
    )?;
    std::fs::write(
        root.join("README.md"),
        format!(
            r#"# {name}

A synthnet plugin. It forwards every packet unchanged until you make it do more.

Build it (once: `rustup target add wasm32-unknown-unknown`):

    cargo build --release --target wasm32-unknown-unknown

The plugin is `target/wasm32-unknown-unknown/release/{crate_name}.wasm`. Name it in a
native spec (paths are relative to the spec file):

    {{"ingress": [{{"plugin": "{name}/target/wasm32-unknown-unknown/release/{crate_name}.wasm", "config": {{}}}}]}}

Try it offline on a capture before you touch an interface:

    synthnet replay --spec spec.json --direction ingress --in capture.pcap --out out.pcap

Unit-test it natively, with the SDK's harness:

    cargo test
"#
        ),
    )?;
    std::fs::write(root.join(".gitignore"), "/target\n")?;
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_types_derived() {
        assert!(check_name("odd-drop").is_ok());
        assert!(check_name("Odd").is_err());
        assert!(check_name("../x").is_err());
        assert_eq!(type_name("odd-drop_v2"), "OddDropV2");
    }

    #[test]
    fn the_vendored_sdk_has_every_source_file() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/src");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| format!("src/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = SDK_FILES.iter().map(|(f, _)| f.to_string()).collect();
        listed.sort();
        assert_eq!(listed, on_disk, "SDK_FILES must list every file of sdk/src");
    }
}
