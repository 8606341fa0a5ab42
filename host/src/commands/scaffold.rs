//! `synthnet plugin new NAME`: a ready-to-build plugin crate that forwards every packet.
//!
//! The SDK travels inside this binary. It is unpacked once per SDK version and content
//! into a shared place (`$XDG_DATA_HOME/synthnet/sdk/`, else `~/.local/share/...`), and
//! every new plugin depends on that copy by path: it builds with only crates.io, speaks
//! the link ABI of the binary that made it, and ten plugins share one SDK instead of
//! carrying ten copies. The plugin's `Cargo.toml` records the SDK and ABI versions.

use anyhow::{bail, Context, Result};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use synthnet_sdk::abi::{ABI_MAJOR, ABI_MINOR};

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

/// The SDK's `Cargo.toml` as unpacked (the workspace's own inherits from the workspace).
fn sdk_manifest() -> String {
    let version = env!("CARGO_PKG_VERSION");
    format!(
        r#"[package]
name = "synthnet-sdk"
version = "{version}"
edition = "2021"
description = "synthnet plugin SDK (unpacked by `synthnet plugin new`; link ABI {ABI_MAJOR}.{ABI_MINOR})"

[dependencies]
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"
libm = "0.2"
"#
    )
}

/// Where this binary's SDK is unpacked: one directory per SDK version and content, so
/// a changed SDK never overwrites one that plugins already build against.
fn sdk_dir(data_home: &Path) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    sdk_manifest().hash(&mut h);
    SDK_FILES.hash(&mut h);
    data_home.join(format!(
        "synthnet/sdk/synthnet-sdk-{}-{:012x}",
        env!("CARGO_PKG_VERSION"),
        h.finish() & 0xffff_ffff_ffff
    ))
}

/// `$XDG_DATA_HOME`, else `~/.local/share`.
fn data_home() -> Result<PathBuf> {
    std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
        .context("neither XDG_DATA_HOME nor HOME is set: set one to say where `synthnet plugin new` may unpack its SDK")
}

/// Whether `dir` holds exactly this binary's SDK.
fn sdk_is_whole(dir: &Path) -> bool {
    let same = |f: &Path, text: &str| std::fs::read(f).is_ok_and(|b| b == text.as_bytes());
    same(&dir.join("Cargo.toml"), &sdk_manifest())
        && SDK_FILES.iter().all(|(f, text)| same(&dir.join(f), text))
}

/// The SDK unpacked under `data_home`, once: a whole copy is reused; a missing or
/// damaged one is written to a temporary directory and renamed into place, so two
/// `plugin new` at once, or one interrupted, never leave a half SDK behind.
pub fn unpack_sdk(data_home: &Path) -> Result<PathBuf> {
    let dir = sdk_dir(data_home);
    if sdk_is_whole(&dir) {
        return Ok(dir);
    }
    let parent = dir.parent().expect("sdk_dir has a parent");
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = parent.join(format!(".unpacking-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("src"))
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    std::fs::write(tmp.join("Cargo.toml"), sdk_manifest())?;
    for (file, text) in SDK_FILES {
        std::fs::write(tmp.join(file), text)?;
    }
    // A damaged copy (edited, half-deleted) makes way for a whole one.
    if dir.exists() && !sdk_is_whole(&dir) {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if let Err(e) = std::fs::rename(&tmp, &dir) {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another `plugin new` put a whole copy there first.
        if !sdk_is_whole(&dir) {
            return Err(e).with_context(|| format!("cannot unpack the SDK to {}", dir.display()));
        }
    }
    Ok(dir)
}

/// Write the crate into `dir/NAME`; returns its path.
pub fn new_plugin(name: &str, dir: &Path) -> Result<PathBuf> {
    check_name(name)?;
    let root = dir.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    let sdk = unpack_sdk(&data_home()?)?;
    // TOML basic strings escape `\` and `"`.
    let sdk_path = sdk
        .to_str()
        .with_context(|| format!("the SDK's path {} is not UTF-8", sdk.display()))?
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    std::fs::create_dir_all(root.join("src"))
        .with_context(|| format!("cannot create {}", root.display()))?;
    let version = env!("CARGO_PKG_VERSION");
    let sdk_display = sdk.display();
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
# This synthnet's SDK, unpacked once and shared by every plugin made with it
# (`synthnet plugin new` unpacks it again if it is gone).
synthnet-sdk = {{ path = "{sdk_path}" }}
serde = {{ version = "1", features = ["derive"] }}

# What made this crate: the SDK it was written against and the link ABI it speaks.
[package.metadata.synthnet]
sdk = "{version}"
abi = "{ABI_MAJOR}.{ABI_MINOR}"

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

It builds against synthnet {version}'s SDK (link ABI {ABI_MAJOR}.{ABI_MINOR}), unpacked at
`{sdk_display}` and shared by every plugin made with it; if that directory is
gone, any `synthnet plugin new` of the same synthnet puts it back.
"#
        ),
    )?;
    std::fs::write(root.join(".gitignore"), "/target\n")?;
    Ok(root)
}

/// Plugin authoring: a new plugin crate, ready to build.
#[derive(clap::Args, Debug)]
pub struct PluginArgs {
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// `synthnet plugin`'s subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum PluginCommand {
    /// Write a ready-to-build plugin crate that forwards every packet.
    #[command(
        after_long_help = "Examples:\n  synthnet plugin new odd-drop\n  cd odd-drop && cargo build --release --target wasm32-unknown-unknown"
    )]
    New {
        /// The plugin's name: letters, digits, '-' and '_' (the crate is
        /// `NAME`, the wasm file `NAME.wasm` with '-' as '_').
        name: String,
        /// Directory to create it in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

impl PluginArgs {
    /// Write the crate and say how to build it.
    pub fn run(self) -> Result<std::process::ExitCode> {
        let PluginCommand::New { name, dir } = self.command;
        let root = new_plugin(&name, &dir)?;
        println!("created {}", root.display());
        println!(
            "build it:  cd {} && cargo build --release --target wasm32-unknown-unknown",
            root.display()
        );
        println!(
            "then name target/wasm32-unknown-unknown/release/{}.wasm in a spec (see its README.md)",
            name.replace('-', "_")
        );
        Ok(std::process::ExitCode::SUCCESS)
    }
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

    /// The SDK is unpacked once: a second call reuses the copy (same files, untouched),
    /// and a damaged copy is made whole again.
    #[test]
    fn the_sdk_is_unpacked_once_and_repaired_when_damaged() {
        let home = std::env::temp_dir().join(format!("synthnet-sdk-home-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        let a = unpack_sdk(&home).unwrap();
        assert!(a.starts_with(home.join("synthnet/sdk")), "{}", a.display());
        assert!(sdk_is_whole(&a));
        let lib = a.join("src/lib.rs");
        let t0 = std::fs::metadata(&lib).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(unpack_sdk(&home).unwrap(), a);
        assert_eq!(
            std::fs::metadata(&lib).unwrap().modified().unwrap(),
            t0,
            "rewritten"
        );
        std::fs::write(&lib, "// edited").unwrap();
        std::fs::remove_file(a.join("src/rng.rs")).unwrap();
        assert!(!sdk_is_whole(&a));
        assert_eq!(unpack_sdk(&home).unwrap(), a);
        assert!(sdk_is_whole(&a));
        // No temporary directory left behind.
        let left: Vec<_> = std::fs::read_dir(home.join("synthnet/sdk"))
            .unwrap()
            .collect();
        assert_eq!(left.len(), 1);
        let _ = std::fs::remove_dir_all(&home);
    }

    #[test]
    fn the_unpacked_sdk_has_every_source_file() {
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
