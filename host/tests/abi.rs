//! The link ABI through the real host: duplicates, injected packets, rewritten bytes,
//! refusal of modules that are not (or not this version of) synthnet plugins, and hot
//! swaps that keep every held packet.

mod common;
use common::{runtime, swap, testbed, wasm, Line};

const MS: u64 = 1_000_000;

#[test]
fn duplicate_verdicts_send_copies() {
    let mut line = Line::new(
        vec![("dup", testbed(r#"{"mode": "duplicate"}"#))],
        100,
        1000,
        300,
    );
    line.run_until(MS);
    let got = line.received();
    assert_eq!(got.len(), 600);
    assert!(got
        .chunks(2)
        .enumerate()
        .all(|(k, pair)| pair[0].seq == k as u64
            && pair[1].seq == k as u64
            && pair[0].head == pair[1].head));
}

#[test]
fn injected_packets_come_out_with_their_bytes() {
    let mut line = Line::new(
        vec![("inj", testbed(r#"{"mode": "inject"}"#))],
        100,
        1000,
        1000,
    );
    line.run_until(10 * MS);
    let got = line.received();
    let injected: Vec<_> = got
        .iter()
        .filter(|r| r.len == 60 && r.head.iter().all(|b| *b == 0xAB))
        .collect();
    assert!(!injected.is_empty());
    assert_eq!(
        got.len() - injected.len(),
        1000,
        "every original is still there"
    );
}

#[test]
fn rewritten_prefix_replaces_bytes_and_keeps_the_tail() {
    let mut line = Line::new(
        vec![("rw", testbed(r#"{"mode": "rewrite"}"#))],
        200,
        1000,
        10,
    );
    line.run_until(MS);
    let got = line.received().to_vec();
    assert_eq!(got.len(), 10);
    for r in got {
        assert_eq!(r.len, 200, "length kept (only 64 bytes were captured)");
        assert_eq!(r.head[0], 0xEE);
        assert_eq!(r.head[12..14], [0x08, 0x00], "the rest is untouched");
    }
}

#[test]
fn corrupt_plugin_flips_bits_through_the_host() {
    let mut line = Line::new(
        vec![("corrupt", wasm("corrupt", r#"{"ratio": 1}"#))],
        300,
        1000,
        100,
    );
    line.run_until(MS);
    let template = synthnet_testkit::apps::udp_template(300);
    let got = line.received().to_vec();
    assert_eq!(got.len(), 100);
    // Each packet differs from the template by exactly one bit somewhere after byte 14
    // (its sequence number also differs; compare the header part only when the flip
    // landed there).
    let flipped_in_header = got
        .iter()
        .filter(|r| r.head[14..42] != template[14..42])
        .count();
    assert!(flipped_in_header > 0 && flipped_in_header < 100);
    assert!(got.iter().all(|r| r.head[..14] == template[..14]));
}

#[test]
fn modules_that_are_not_v1_plugins_are_refused_clearly() {
    let rt = runtime();
    let e = rt.load("junk.wasm", b"not wasm at all").err().unwrap();
    assert!(
        e.to_string()
            .contains("not a wasm module: it does not start with"),
        "{e}"
    );
    let e = rt.load("cut.wasm", b"\0asm\x01\0\0\0\x01").err().unwrap();
    assert!(e.to_string().contains("not a valid wasm module"), "{e}");
    let no_marker = wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap();
    let e = rt.load("plain.wasm", &no_marker).err().unwrap();
    assert!(e.to_string().contains("no `synthnet_abi_v1` export"), "{e}");
    let v2 = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "synthnet_abi_v2") (result i32) i32.const 0))"#).unwrap();
    let e = rt.load("future.wasm", &v2).err().unwrap();
    assert!(
        e.to_string()
            .contains("built for link ABI v2, but this synthnet speaks v1"),
        "{e}"
    );
    let imports = wat::parse_str(
        r#"(module (import "env" "now" (func)) (memory (export "memory") 1)
            (func (export "synthnet_abi_v1") (result i32) i32.const 0)
            (func (export "synthnet_alloc") (param i32) (result i32) i32.const 0)
            (func (export "synthnet_init") (param i32 i32 i64) (result i32) i32.const 0)
            (func (export "synthnet_process") (param i32 i64) (result i32) i32.const 0)
            (func (export "synthnet_error") (result i32) i32.const 0))"#,
    )
    .unwrap();
    let e = rt.load("clock.wasm", &imports).err().unwrap();
    assert!(
        e.to_string().contains("may import only synthnet.log"),
        "{e}"
    );
}

#[test]
fn a_bad_config_is_refused_with_the_field_named() {
    let f = wasm("latency", r#"{"delay_ms": -3}"#);
    let e = f.instantiate(1).err().unwrap();
    assert!(e.to_string().contains("delay_ms"), "{e}");
    let f = wasm("loss", r#"{"loss": 0.1}"#);
    let e = f.instantiate(1).err().unwrap();
    assert!(e.to_string().contains("unknown field `loss`"), "{e}");
}

#[test]
fn hot_swap_keeps_held_packets_and_hands_over_state() {
    let interval = 100_000;
    let mut line = Line::new(
        vec![("latency", wasm("latency", r#"{"delay_ms": 100}"#))],
        64,
        interval,
        10_000,
    );
    line.run_until(300 * MS);
    let held = synthnet_core::App::held(line.plugin(0));
    assert!(held > 900, "packets are in flight: {held}");
    // Change 100 → 101 ms under traffic, then later 101 → 50 ms.
    swap(
        line.plugin(0),
        wasm("latency", r#"{"delay_ms": 101}"#),
        1000,
    )
    .unwrap();
    line.run_until(600 * MS);
    swap(line.plugin(0), wasm("latency", r#"{"delay_ms": 50}"#), 1000).unwrap();
    line.run_until(3_000 * MS);
    let got = line.received().to_vec();
    assert_eq!(got.len(), 10_000, "no packet lost across two swaps");
    assert!(
        got.windows(2)
            .all(|w| w[0].seq < w[1].seq && w[0].ts_ns <= w[1].ts_ns),
        "order kept"
    );
    let delay = |r: &synthnet_testkit::apps::Received| r.ts_ns - r.seq * interval;
    assert_eq!(delay(&got[0]), 100 * MS);
    assert_eq!(delay(&got[5_000]), 101 * MS);
    assert_eq!(delay(&got[9_999]), 50 * MS);
    assert_eq!(line.plugin(0).health().swaps, 2);
}

#[test]
fn a_failed_swap_leaves_the_running_instance() {
    let mut line = Line::new(
        vec![("latency", wasm("latency", r#"{"delay_ms": 5}"#))],
        64,
        100_000,
        1_000,
    );
    line.run_until(50 * MS);
    let e = swap(
        line.plugin(0),
        wasm("latency", r#"{"delay_ms": "soon"}"#),
        1,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("invalid config"), "{e}");
    line.run_until(1_000 * MS);
    let got = line.received();
    assert_eq!(got.len(), 1_000);
    assert!(got.iter().all(|r| r.ts_ns - r.seq * 100_000 == 5 * MS));
}

/// Tables are capped like memory (a plugin growing a table took a process to 24 GB), and
/// a plugin's failure always comes with a message, even when it gives none.
#[test]
fn tables_are_capped_and_failures_always_say_something() {
    let module = |table: u32, err_ptr: i32| {
        wat::parse_str(format!(
            r#"(module (memory (export "memory") 1) (table {table} funcref)
            (func (export "synthnet_abi_v1") (result i32) i32.const 0)
            (func (export "synthnet_alloc") (param i32) (result i32) i32.const 16)
            (func (export "synthnet_init") (param i32 i32 i64) (result i32) i32.const 0)
            (func (export "synthnet_process") (param i32 i64) (result i32) i32.const 0)
            (func (export "synthnet_error") (result i32) i32.const {err_ptr}))"#
        ))
        .unwrap()
    };
    let rt = runtime();
    let make = |bytes: &[u8]| {
        let m = rt.load("t.wasm", bytes).expect("compiles");
        synthnet_runtime::WasmFactory::new(m, b"{}", 16 << 20)
    };
    use synthnet_runtime::Factory;
    let e = make(&module(10_000_000, 0)).instantiate(1).err().unwrap();
    assert!(e.to_string().contains("table"), "{e}");
    // Within the cap; init fails without a message (0), or with one outside memory.
    let e = make(&module(1_000, 0)).instantiate(1).err().unwrap();
    assert!(e.to_string().contains("failed without a message"), "{e}");
    let e = make(&module(1_000, 0x7fff_0000))
        .instantiate(1)
        .err()
        .unwrap();
    assert!(e.to_string().contains("outside its memory"), "{e}");
}

/// A compile bomb (many functions, or one huge one) is refused before it is compiled.
#[test]
fn compile_bombs_are_refused_before_compiling() {
    let rt = runtime();
    let mut many = String::from("(module (memory (export \"memory\") 1)");
    for _ in 0..20_001 {
        many.push_str(" (func)");
    }
    many.push(')');
    let t = std::time::Instant::now();
    let e = rt
        .load("many.wasm", &wat::parse_str(&many).unwrap())
        .err()
        .unwrap();
    assert!(e.to_string().contains("20001 functions"), "{e}");
    let mut big = String::from("(module (memory (export \"memory\") 1) (func");
    for _ in 0..600_000 {
        big.push_str(" nop");
    }
    big.push_str("))");
    let e = rt
        .load("big.wasm", &wat::parse_str(&big).unwrap())
        .err()
        .unwrap();
    assert!(e.to_string().contains("a function of"), "{e}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
}
