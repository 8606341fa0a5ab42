//! `synthnet check`: accepts every example spec and both synthetic-network shapes,
//! rejects impossible values and misspelt fields with a message naming the field.

use std::process::Command;

fn check(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_synthnet"))
        .arg("check")
        .arg(path)
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn check_text(text: &str) -> (bool, String) {
    let dir = tempdir();
    let p = dir.join("spec.json");
    std::fs::write(&p, text).unwrap();
    check(&p)
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "synthnet-spec-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn every_example_spec_is_accepted() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            let (ok, out) = check(&p);
            assert!(ok, "{}: {out}", p.display());
            assert!(out.contains("ingress (outer → inner)"), "{out}");
            n += 1;
        }
    }
    assert!(n >= 5);
}

/// The scenario pages check their specs with one command:
/// `synthnet check specs/scenarios/*.json` (it took one spec only).
#[test]
fn check_takes_several_specs_and_names_the_bad_one() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/scenarios");
    let mut specs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    specs.sort();
    assert!(specs.len() >= 5, "{specs:?}");
    let run = |specs: &[std::path::PathBuf]| {
        let out = Command::new(env!("CARGO_BIN_EXE_synthnet"))
            .arg("check")
            .args(specs)
            .output()
            .expect("runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = run(&specs);
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().filter(|l| *l == "ok").count(),
        specs.len(),
        "{out}"
    );
    let bad = tempdir().join("bad.json");
    std::fs::write(&bad, r#"{"ingress": {"loss": 1.5}, "egress": {}}"#).unwrap();
    specs.push(bad.clone());
    let (ok, out) = run(&specs);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("invalid spec {}", bad.display())) && out.contains("loss"),
        "{out}"
    );
}

#[test]
fn both_synthetic_network_shapes_are_accepted() {
    let (ok, out) = check_text(
        r#"{"ingress": {"rate": 1000000, "loss": 0.1, "latency": 20, "jitter": 5, "jitter_strength": 0.5, "reorder_packets": true}, "egress": {}}"#,
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("rate_bps=1000000 bit/s") && out.contains("delay_ms=20.0 ms"),
        "{out}"
    );
    let (ok, out) = check_text(
        r#"{"default_link": {"ingress": {"latency": 10}, "egress": {"latency": 10}},
            "flows": [{"label": "dns", "flow": {"ip": 16777226, "protocol": 17, "port_min": 53, "port_max": 53},
                       "link": {"ingress": {"loss": 0.5}, "egress": {}}}]}"#,
    );
    assert!(ok, "{out}");
    assert!(
        out.contains(r#"flow "dns" (source 10.0.0.1/32, udp, source port 53)"#),
        "{out}"
    );
    assert!(
        out.contains(r#"flow "dns" (destination 10.0.0.1/32, udp, destination port 53)"#),
        "{out}"
    );
}

#[test]
fn bad_specs_are_refused_naming_the_field() {
    for (spec, field) in [
        (
            r#"{"ingress": {"loss": 1.5}}"#,
            "ingress.loss: must be within 0..=1, got 1.5",
        ),
        (
            r#"{"egress": {"latency": -20}}"#,
            "egress.latency: must be a number ≥ 0",
        ),
        (
            r#"{"ingress": {"latnecy": 20}}"#,
            "ingress.latnecy: unknown field `latnecy`",
        ),
        (
            r#"{"ingress": [{"plugin": "latency", "config": {"delay": 5}}]}"#,
            "unknown field `delay`",
        ),
        (
            r#"{"ingress": [{"plugin": "missing.wasm"}]}"#,
            "missing.wasm: cannot read",
        ),
    ] {
        let (ok, out) = check_text(spec);
        assert!(!ok, "{spec} was accepted");
        assert!(out.contains(field), "{spec}: {out}");
    }
}

/// Files that block or never end are refused with a message, never read forever.
#[test]
fn fifos_and_devices_are_refused_without_blocking() {
    let dir = tempdir();
    let fifo = dir.join("spec.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let t = std::time::Instant::now();
    let (ok, out) = check(&fifo);
    assert!(!ok && out.contains("not a regular file"), "{out}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    let (ok, out) = check(std::path::Path::new("/dev/zero"));
    assert!(!ok && out.contains("not a regular file"), "{out}");
    let (ok, out) = check_text(r#"{"ingress": [{"plugin": "/dev/zero.wasm"}], "egress": []}"#);
    assert!(!ok && out.contains("cannot read"), "{out}");
    let zero = dir.join("zero.wasm");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let spec = format!(r#"{{"ingress": [{{"plugin": {:?}}}], "egress": []}}"#, zero);
    let (ok, out) = check_text(&spec);
    assert!(!ok && out.contains("not a regular file"), "{out}");
}

/// Values so large they would wrap are refused, naming the field the user wrote.
#[test]
fn huge_delays_are_refused_not_wrapped() {
    for (spec, field) in [
        (r#"{"ingress": {"latency": 1e308}}"#, "ingress.latency"),
        (r#"{"ingress": {"rate": 1.4e12}}"#, "ingress.rate"),
        (
            r#"{"ingress": [{"plugin": "latency", "config": {"delay_ms": 1e13}}], "egress": []}"#,
            "delay_ms",
        ),
    ] {
        let (ok, out) = check_text(spec);
        assert!(!ok && out.contains(field), "{spec}: {out}");
    }
}

/// `synthnet check … | head`: a reader that goes away ends the command quietly (as
/// `cat` or `grep`), by SIGPIPE, never a panic in `println!` (exit 101 and a backtrace
/// message before the fix).
#[test]
fn a_closed_stdout_ends_check_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut child = Command::new(env!("CARGO_BIN_EXE_synthnet"))
        .arg("check")
        .args(
            [
                "default.json",
                "native.json",
                "synthetic-network-flows.json",
            ]
            .map(|s| root.join("specs").join(s)),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    // Close the read end before the child writes: its first line meets a closed pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("waits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "check panicked: {stderr}");
    assert_eq!(
        out.status.signal(),
        Some(libc_sigpipe()),
        "check should end by SIGPIPE, got {:?}: {stderr}",
        out.status
    );
}

/// SIGPIPE's number on Linux.
fn libc_sigpipe() -> i32 {
    13
}
