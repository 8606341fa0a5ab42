//! A plugin made by `synthnet plugin new`, built with the documented command, named in a
//! spec and replayed, passes every packet unchanged.

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::{DataLink, TsResolution};
use std::process::Command;
use std::time::Duration;

#[test]
fn scaffolded_plugin_builds_loads_and_passes_all_packets() {
    let dir = std::env::temp_dir().join(format!("synthnet-plugin-new-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let synthnet = env!("CARGO_BIN_EXE_synthnet");

    // The SDK is unpacked under XDG_DATA_HOME (here the test's own directory), once.
    let data = dir.join("data");
    let new = |name: &str| {
        let o = Command::new(synthnet)
            .args(["plugin", "new", name, "--dir"])
            .arg(&dir)
            .env("XDG_DATA_HOME", &data)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    new("pass-all");
    new("second");
    let sdks: Vec<_> = std::fs::read_dir(data.join("synthnet/sdk"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(sdks.len(), 1, "one SDK for two plugins: {sdks:?}");
    let root = dir.join("pass-all");
    assert!(
        !root.join("vendor").exists(),
        "the plugin carries its own SDK copy"
    );
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let second = std::fs::read_to_string(dir.join("second/Cargo.toml")).unwrap();
    let dep = format!("synthnet-sdk = {{ path = \"{}\" }}", sdks[0].display());
    assert!(
        manifest.contains(&dep) && second.contains(&dep),
        "{manifest}"
    );
    let abi = format!(
        "abi = \"{}.{}\"",
        synthnet_sdk::abi::ABI_MAJOR,
        synthnet_sdk::abi::ABI_MINOR
    );
    assert!(
        manifest.contains("[package.metadata.synthnet]")
            && manifest.contains(&format!("sdk = \"{}\"", env!("CARGO_PKG_VERSION")))
            && manifest.contains(&abi),
        "the scaffold records the SDK and ABI versions: {manifest}"
    );
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let build = "cargo build --release --target wasm32-unknown-unknown";
    assert!(readme.contains(build));

    // The documented build command, as a user would run it (own target dir, no flags
    // from this test's cargo).
    let o = Command::new("cargo")
        .args(build.split(' ').skip(1))
        .current_dir(&root)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "build failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let wasm = root.join("target/wasm32-unknown-unknown/release/pass_all.wasm");
    assert!(wasm.exists());

    // Its own unit test runs natively with plain cargo test.
    let cargo_test = |when: &str| {
        let o = Command::new("cargo")
            .arg("test")
            .current_dir(&root)
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "cargo test {when} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    cargo_test("as made");

    // The tutorial's edit (docs/more.md: drop every packet of odd length): its own tests keep
    // passing, because they check the contract, not a hard-coded pass-through.
    let lib = root.join("src/lib.rs");
    let src = std::fs::read_to_string(&lib).unwrap();
    let forward_all =
        "        for i in 0..batch.len() {\n            batch.forward(i);\n        }\n";
    assert!(
        src.contains(forward_all),
        "the template's process changed: {src}"
    );
    let odd_drop = "        for i in 0..batch.len() {\n            if batch.wire_len(i) % 2 == 1 {\n                batch.discard(i);\n            } else {\n                batch.forward(i);\n            }\n        }\n";
    let tutorial =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/more.md")).unwrap();
    assert!(
        tutorial.contains("if batch.wire_len(i) % 2 == 1 {"),
        "the tutorial in docs/more.md changed: update this test"
    );
    std::fs::write(&lib, src.replace(forward_all, odd_drop)).unwrap();
    cargo_test("after the tutorial edit");
    std::fs::write(&lib, src).unwrap();

    // Named in a spec, the way its README says.
    let spec = dir.join("spec.json");
    std::fs::write(&spec, r#"{"ingress": [{"plugin": "pass-all/target/wasm32-unknown-unknown/release/pass_all.wasm", "config": {}}]}"#).unwrap();
    let o = Command::new(synthnet)
        .arg("check")
        .arg(&spec)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let input: Vec<(u64, Vec<u8>)> = (0..500u64)
        .map(|k| {
            let mut f = synthnet_testkit::apps::udp_template(64 + (k as usize % 700));
            f[42..50].copy_from_slice(&k.to_le_bytes());
            (1_000_000_000 + k * 123_457, f)
        })
        .collect();
    let pcap = dir.join("in.pcap");
    let h = PcapHeader {
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::NanoSecond,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(std::fs::File::create(&pcap).unwrap(), h).unwrap();
    for (ts, d) in &input {
        w.write_packet(&PcapPacket::new(
            Duration::from_nanos(*ts),
            d.len() as u32,
            d,
        ))
        .unwrap();
    }
    drop(w);
    let out = dir.join("out.pcap");
    let o = Command::new(synthnet)
        .args(["replay", "--direction", "ingress", "--spec"])
        .arg(&spec)
        .arg("--in")
        .arg(&pcap)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut r = PcapReader::new(std::fs::File::open(&out).unwrap()).unwrap();
    let mut got = vec![];
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        got.push((p.timestamp.as_nanos() as u64, p.data.into_owned()));
    }
    assert_eq!(got, input, "every packet, unchanged, at its own time");
    let _ = std::fs::remove_dir_all(&dir);
}
