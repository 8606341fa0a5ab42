//! `synthnet bench --json` prints one JSON object per case with the documented fields.
//! The binary under test is the default build, without the native plugin builds: the
//! native cases are skipped, and it says so.

use std::process::Command;

#[test]
fn bench_json_lines_have_the_documented_fields() {
    let out = Command::new(env!("CARGO_BIN_EXE_synthnet"))
        .args(["bench", "--json", "--seconds", "0.05", "--rounds", "1"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--features native"),
        "the skipped native cases are explained"
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    // passthrough, qos-chain and loss-only in wasm, at 64 and 1500 bytes.
    assert_eq!(lines.len(), 6);
    for l in &lines {
        for field in ["case", "runtime", "plugins", "packet_size", "mpps"] {
            assert!(l.get(field).is_some(), "{field} missing in {l}");
        }
        assert!(l["mpps"].as_f64().unwrap() > 0.0);
    }
    let chain = lines
        .iter()
        .find(|l| l["case"] == "qos-chain" && l["runtime"] == "wasm")
        .unwrap();
    assert_eq!(
        chain["plugins"],
        serde_json::json!(["rate", "loss", "latency", "jitter"])
    );
    assert!(lines.iter().all(|l| l["runtime"] != "native"));
    assert!(lines
        .iter()
        .any(|l| l["case"] == "qos-chain" && l["runtime"] == "wasm" && l["packet_size"] == 1500));
    assert!(lines
        .iter()
        .any(|l| l["case"] == "passthrough" && l["runtime"] == "none"));
}
