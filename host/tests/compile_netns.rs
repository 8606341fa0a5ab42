//! Compiling a plugin cannot hold the control plane (issue 22, N4): a module whose
//! compile takes longer than `--compile-budget` is refused at the budget, naming it,
//! its compile stopped; a change sent after it is applied right after, in order.
//! **These tests need root** (namespaces, raw sockets); each says so in its name.

mod common;

use common::rig::Rig;
use common::serial;
use serde_json::json;
use std::time::{Duration, Instant};

const START: &str = r#"{"ingress":{"latency":5},"egress":{}}"#;
const BUDGET_S: f64 = 2.0;

/// A module like the review's `fatfuncs` (one add repeated 72,000 times per
/// function, 504 KB each, within every size limit), with `funcs` functions: each takes
/// seconds of Cranelift time.
fn fat_module(funcs: usize) -> Vec<u8> {
    let body = "(local.set 0 (i32.add (local.get 0) (i32.const 1)))".repeat(72_000);
    let mut text = String::from("(module (memory (export \"memory\") 1)");
    for i in 0..funcs {
        text.push_str(&format!(
            "(func $h{i} (export \"h{i}\") (param i32) (result i32) {body} (local.get 0))"
        ));
    }
    text.push(')');
    wat::parse_str(&text).expect("the module assembles")
}

/// Children of `pid` whose command line says `__compile-check`.
fn compile_children(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            let p = e.path();
            let cmd = std::fs::read(p.join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            ppid == Some(pid) && String::from_utf8_lossy(&cmd).contains("__compile-check")
        })
        .count()
}

#[test]
fn root_a_slow_compile_is_refused_at_the_budget_and_changes_keep_their_order() {
    let _s = serial();
    let t0 = Instant::now();
    let budget = BUDGET_S.to_string();
    let rig = Rig::start("cmp1", START, &["--compile-budget", &budget]);
    let pid = rig.bridge.child.id();
    let dir = rig.spec_file.path.parent().unwrap().to_path_buf();
    let fat = dir.join("fatfuncs.wasm");
    std::fs::write(&fat, fat_module(6)).unwrap();
    let g = rig.spec()["generation"].as_u64().unwrap();

    // The slow one, then 1 s later a small change.
    let ns = rig.topo.middle().name.clone();
    let big = json!({"ingress": [{"plugin": fat.display().to_string()}], "egress": []});
    let big_put = std::thread::spawn(move || {
        let t = Instant::now();
        let a = common::http::request(
            &ns,
            common::http::API,
            "PUT",
            "/api/v1/spec",
            &[("Content-Type", "application/json")],
            big.to_string().as_bytes(),
        );
        (a, t.elapsed())
    });
    std::thread::sleep(Duration::from_secs(1));
    let compiling = compile_children(pid);
    let t = Instant::now();
    let small = rig.call(
        "PUT",
        "/api/v1/spec",
        &json!({"ingress": {"latency": 9}, "egress": {}}).to_string(),
    );
    let small_took = t.elapsed();
    let (big, big_took) = big_put.join().expect("the big PUT");

    assert_eq!(big.status, 422, "{}", big.text());
    let msg = big.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains("fatfuncs.wasm") && msg.contains("compile budget"),
        "{msg}"
    );
    assert!(
        big_took < Duration::from_secs_f64(BUDGET_S + 1.5),
        "refused after {big_took:?} (budget {BUDGET_S} s)"
    );
    assert_eq!(small.status, 200, "{}", small.text());
    assert!(
        small_took < Duration::from_secs_f64(BUDGET_S + 2.0),
        "the small change sent 1 s after waited {small_took:?}"
    );
    let spec = rig.spec();
    assert_eq!(spec["generation"].as_u64().unwrap(), g + 1);
    assert_eq!(spec["spec"]["ingress"]["latency"], 9);
    assert_eq!(compiling, 1, "no compile child while the module compiled");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        compile_children(pid),
        0,
        "a compile child outlived its budget"
    );

    // A module that compiles in time passes through the same check and applies.
    let ok = dir.join("ok.wasm");
    std::fs::write(
        &ok,
        synthnet_runtime::registry::wasm("latency").expect("the built-in latency"),
    )
    .unwrap();
    let t = Instant::now();
    let a = rig.call(
        "PUT",
        "/api/v1/spec",
        &json!({"ingress": [{"plugin": ok.display().to_string(), "config": {"delay_ms": 3}}], "egress": []})
            .to_string(),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    println!(
        "6 × 504 KB functions under a {BUDGET_S} s budget: refused after {big_took:?}; small change 1 s later answered in {small_took:?}; a built-in as a file applied in {:?}; test took {:.1} s",
        t.elapsed(),
        t0.elapsed().as_secs_f64()
    );
}

/// `wasm` with a custom section of `payload` appended: the same plugin, other bytes
/// (so a cache key no earlier run has used).
fn with_custom_section(wasm: &[u8], payload: &[u8]) -> Vec<u8> {
    let name = b"synthnet-test";
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(payload);
    assert!(body.len() < 128, "one-byte LEB128 size");
    let mut out = wasm.to_vec();
    out.push(0);
    out.push(body.len() as u8);
    out.extend_from_slice(&body);
    out
}

/// A plugin file is compiled once per machine: a second bridge loads it from the
/// on-disk cache without compiling; a corrupt entry is found out, compiled again and
/// replaced.
#[test]
fn root_compiled_plugins_are_cached_and_a_corrupt_entry_is_compiled_again() {
    use common::bridge::{pinned_topology, BridgeProc};
    use common::files::SpecFile;
    use common::http::{request, API};
    use synthnet_runtime::precompiled::{artifact_tag, content_key, unseal};
    let _s = serial();
    let t0 = Instant::now();
    let topo = pinned_topology("cmp2");
    let ns = topo.middle().name.clone();
    let spec = SpecFile::new("cmp2", START);
    let unique = format!("{}-{:?}", std::process::id(), std::time::SystemTime::now());
    let wasm = with_custom_section(
        synthnet_runtime::registry::wasm("latency").expect("the built-in latency"),
        unique.as_bytes(),
    );
    let plugin = spec.path.parent().unwrap().join("mine.wasm");
    std::fs::write(&plugin, &wasm).unwrap();
    let entry = std::path::PathBuf::from(format!(
        "/var/cache/synthnet/modules/{}-{}.cwasm",
        content_key(&wasm),
        artifact_tag().unwrap()
    ));
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _entry_removed = Remove(entry.clone());
    assert!(!entry.exists());
    let put_plugin = |delay_ms: u32| {
        let t = Instant::now();
        let a = request(
            &ns,
            API,
            "PUT",
            "/api/v1/spec",
            &[("Content-Type", "application/json")],
            json!({"ingress": [{"plugin": plugin.display().to_string(), "config": {"delay_ms": delay_ms}}], "egress": []})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(a.status, 200, "{}", a.text());
        t.elapsed()
    };
    let args = ["--stats", "0"];

    // 1. Compiled (in a child) and cached.
    let b = BridgeProc::start(&topo, &spec.path, &args);
    let first = put_plugin(3);
    let sealed = std::fs::read(&entry).expect("a cache entry after the first compile");
    assert!(unseal(&sealed, &wasm).is_ok());
    b.stop();
    std::fs::write(&spec.path, START).unwrap();

    // 2. A second bridge loads it from the cache.
    let b = BridgeProc::start(&topo, &spec.path, &args);
    let second = put_plugin(4);
    assert!(
        b.count("compiling it again") == 0,
        "{}",
        b.lines().join("\n")
    );
    b.stop();
    std::fs::write(&spec.path, START).unwrap();

    // 3. One bit flipped in the entry: found out, compiled again, replaced.
    let mut bad = sealed.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&entry, &bad).unwrap();
    let b = BridgeProc::start(&topo, &spec.path, &args);
    let third = put_plugin(5);
    b.wait_for("compiling it again", Duration::from_secs(2));
    let again = std::fs::read(&entry).unwrap();
    assert!(
        unseal(&again, &wasm).is_ok(),
        "the corrupt entry was not replaced"
    );
    b.stop();
    assert!(
        second < Duration::from_millis(150),
        "a cached module took {second:?} to apply (compiled: {first:?})"
    );
    println!(
        "latency.wasm as a file: first PUT (compiled in a child) {first:?}, after a restart (cache) {second:?}, after corrupting the entry {third:?}; test took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
