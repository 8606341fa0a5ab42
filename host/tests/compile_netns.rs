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
