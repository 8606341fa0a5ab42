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
    assert!(e.to_string().contains("exceeded its table limit"), "{e}");
    // Within the cap; init fails without a message (0), or with one outside memory.
    let e = make(&module(1_000, 0)).instantiate(1).err().unwrap();
    assert!(e.to_string().contains("failed without a message"), "{e}");
    let e = make(&module(1_000, 0x7fff_0000))
        .instantiate(1)
        .err()
        .unwrap();
    assert!(e.to_string().contains("outside its memory"), "{e}");
}

/// Memory growth past the cap stops the plugin with a message naming the cap (known from
/// the limiter's own record, whatever wasmtime's wording); growth past the module's own
/// declared maximum is refused the way the wasm spec says: `memory.grow` answers -1 and
/// the plugin goes on. The test plugin's init answers 0 (no header: "failed without a
/// message") when its growth worked, and 1 (a header the host cannot read) when
/// `memory.grow` answered -1.
#[test]
fn memory_past_the_cap_stops_the_plugin_and_says_so() {
    let module = |max: &str, pages: u32| {
        wat::parse_str(format!(
            r#"(module (memory (export "memory") 1 {max})
            (func (export "synthnet_abi_v1") (result i32) i32.const 0)
            (func (export "synthnet_alloc") (param i32) (result i32) i32.const 16)
            (func (export "synthnet_init") (param i32 i32 i64) (result i32)
                (i32.eq (memory.grow (i32.const {pages})) (i32.const -1)))
            (func (export "synthnet_process") (param i32 i64) (result i32) i32.const 0)
            (func (export "synthnet_error") (result i32) i32.const 0))"#
        ))
        .unwrap()
    };
    let rt = runtime();
    use synthnet_runtime::Factory;
    let make = |bytes: &[u8]| {
        let m = rt.load("t.wasm", bytes).expect("compiles");
        synthnet_runtime::WasmFactory::new(m, b"{}", 16 << 20)
    };
    // 1,000 pages = 64 MiB, past the 16 MiB cap: a trap that names the cap.
    let e = make(&module("", 1_000)).instantiate(1).err().unwrap();
    let e = e.to_string();
    assert!(
        e.contains("exceeded its memory limit") && e.contains(&(16u32 << 20).to_string()),
        "{e}"
    );
    // Within the cap: it grew.
    let e = make(&module("", 10))
        .instantiate(1)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("failed without a message"), "{e}");
    // Past the module's own maximum (2 pages) but within the cap: -1, no trap.
    let e = make(&module("2", 10))
        .instantiate(1)
        .err()
        .unwrap()
        .to_string();
    assert!(
        !e.contains("failed without a message") && !e.contains("limit") && !e.contains("trapped"),
        "{e}"
    );
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

// ---- Link ABI 1.1: commands, parking, the reverse port, versions ----

use serde_json::{json, Value};
use synthnet_config::apply::CommandError;
use synthnet_config::plan;
use synthnet_config::{ChainId, Network, Outcome, Ports, StageId};
use synthnet_core::clock::VirtualClock;
use synthnet_core::{Direction, DropCause, Engine, PacketPool};
use synthnet_runtime::Loader;
use synthnet_testkit::apps::{Sink, Source};

/// One packet every 100 µs.
const EVERY: u64 = 100_000;

fn testbed_path() -> &'static str {
    synthnet_runtime::registry::test_only_path("testbed").expect("testbed is a test-only plugin")
}

/// A stage of the testbed named `name` with `config`.
fn tb(name: &str, config: &str) -> String {
    format!(
        r#"{{"plugin": "{}", "name": "{name}", "config": {config}}}"#,
        testbed_path()
    )
}

fn latency_stage(name: &str, ms: u64) -> String {
    format!(r#"{{"plugin": "latency", "name": "{name}", "config": {{"delay_ms": {ms}}}}}"#)
}

fn spec(ingress: &[String], egress: &[String]) -> plan::Plan {
    let s = format!(
        r#"{{"ingress": [{}], "egress": [{}]}}"#,
        ingress.join(", "),
        egress.join(", ")
    );
    synthnet_config::spec::parse(&s, std::path::Path::new(".")).expect("a valid spec")
}

fn stage(dir: Direction, name: &str) -> StageId {
    StageId {
        chain: ChainId { dir, flow: None },
        name: name.to_string(),
    }
}

/// Both directions: `n_in` packets into ingress and `n_eg` into egress, one every 100
/// µs from 0, each to a recording sink (the other direction's sink is each one's
/// reverse sink).
struct TwoWay {
    net: Network,
    loader: Loader,
    clock: VirtualClock,
}

impl TwoWay {
    fn new(n_in: u64, n_eg: u64, ingress: &[String], egress: &[String]) -> TwoWay {
        let mut engine = Engine::new(PacketPool::new(1 << 14, 2048));
        let mut ports = vec![];
        for (dir, n) in [(Direction::Ingress, n_in), (Direction::Egress, n_eg)] {
            let source = engine.add(Box::new(Source::new(64, EVERY, 0, n, 256)));
            let sink = engine.add(Box::new(Sink::new(true)));
            ports.push((dir, Ports { source, sink }));
        }
        let mut t = TwoWay {
            net: Network::new(engine, ports),
            loader: Loader::new(runtime()),
            clock: VirtualClock::default(),
        };
        t.apply(ingress, egress);
        t
    }

    fn apply(&mut self, ingress: &[String], egress: &[String]) -> synthnet_config::Changes {
        match self
            .net
            .apply(spec(ingress, egress), &mut self.loader)
            .outcome
        {
            Outcome::Applied(c) => c,
            Outcome::Refused(e) => panic!("refused: {e}"),
        }
    }

    fn run(&mut self, until_ns: u64) {
        self.clock.run(&mut self.net.engine, until_ns).unwrap();
    }

    fn now(&self) -> u64 {
        self.clock.now_ns
    }

    fn command(&mut self, dir: Direction, name: &str, cmd: Value) -> Result<Value, CommandError> {
        let now = self.now();
        self.net.command(&stage(dir, name), now, &cmd)
    }

    fn sink(&mut self, dir: Direction) -> &mut Sink {
        let id = self.net.ports(dir).unwrap().sink;
        self.net.engine.app_mut::<Sink>(id).unwrap()
    }

    fn held(&mut self, dir: Direction) -> usize {
        let snap = self.net.snapshot();
        snap.directions
            .iter()
            .find(|d| d.direction == dir)
            .unwrap()
            .held
    }

    fn drops(&mut self, dir: Direction, cause: DropCause) -> u64 {
        let snap = self.net.snapshot();
        let d = snap.directions.iter().find(|d| d.direction == dir).unwrap();
        d.drops.get(cause)
    }

    fn plugin_counter(&mut self, dir: Direction, name: &str, counter: &str) -> u64 {
        let snap = self.net.snapshot();
        let d = snap.directions.iter().find(|d| d.direction == dir).unwrap();
        let s = d.stages.iter().find(|s| s.id.name == name).unwrap();
        s.plugin_counters
            .iter()
            .find(|(k, _)| k == counter)
            .map_or(0, |(_, v)| *v)
    }
}

const IN: Direction = Direction::Ingress;
const EG: Direction = Direction::Egress;

#[test]
fn commands_are_answered_and_every_refusal_names_the_stage_and_why() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repro");
    let dir = std::env::temp_dir().join(format!("synthnet-abi11-cmd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A 1.0 module (minor 0, no synthnet_command): it loads and runs, and takes no
    // commands.
    let old = dir.join("old.wasm");
    std::fs::write(
        &old,
        wat::parse_file(fixtures.join("09_state_ok.wat")).unwrap(),
    )
    .unwrap();
    let old_stage = format!(
        r#"{{"plugin": "{}", "name": "old", "config": {{}}}}"#,
        old.display()
    );
    let mut t = TwoWay::new(
        30,
        0,
        &[
            tb("tb", r#"{"commands": true}"#),
            latency_stage("lat", 1),
            old_stage,
        ],
        &[],
    );
    t.run(5 * MS);
    let r = t.command(IN, "tb", json!({"echo": [1, "x"]})).unwrap();
    assert_eq!(r, json!({"echo": [1, "x"], "now_ns": t.now(), "parked": 0}));

    let e = t.command(IN, "tb", json!({"frobnicate": 1})).unwrap_err();
    assert!(
        matches!(&e, CommandError::Refused { message, .. } if message == r#"unknown command {"frobnicate":1}"#),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("stage ingress/default/tb (plugin "),
        "{e}"
    );

    let e = t.command(IN, "lat", json!({})).unwrap_err();
    assert_eq!(
        e.to_string(),
        "stage ingress/default/lat (plugin latency) refused the command: this plugin takes no commands"
    );
    let e = t.command(IN, "old", json!({})).unwrap_err();
    assert!(matches!(e, CommandError::NoCommands { .. }), "{e:?}");
    assert!(
        e.to_string().ends_with("old.wasm) takes no commands"),
        "{e}"
    );

    let e = t.command(EG, "tb", json!({})).unwrap_err();
    assert!(matches!(e, CommandError::UnknownStage { .. }), "{e:?}");
    assert!(e.to_string().contains("no stage egress/default/tb runs (running: ingress/default/lat, ingress/default/old, ingress/default/tb)"), "{e}");

    let big = json!({"echo": "x".repeat(70_000)});
    let e = t.command(IN, "tb", big).unwrap_err();
    assert!(
        matches!(
            e,
            CommandError::TooLarge {
                max_bytes: 65536,
                ..
            }
        ),
        "{e:?}"
    );

    // A trap and a garbage verdict are faults: the instance restarts (after its
    // backoff), the packets keep flowing.
    let e = t.command(IN, "tb", json!({"trap": true})).unwrap_err();
    assert!(matches!(e, CommandError::Fault { .. }), "{e:?}");
    assert!(e.to_string().contains("trapped"), "{e}");
    let e = t.command(IN, "tb", json!({"echo": 1})).unwrap_err();
    assert!(matches!(e, CommandError::Down { .. }), "{e:?}");
    t.run(8 * MS);
    assert_eq!(t.command(IN, "tb", json!({"echo": 2})).unwrap()["echo"], 2);
    let e = t.command(IN, "tb", json!({"bad": true})).unwrap_err();
    assert!(e.to_string().contains("garbage verdict"), "{e}");
    t.run(100 * MS);
    let snap = t.net.snapshot();
    let tb = &snap.directions[0]
        .stages
        .iter()
        .find(|s| s.id.name == "tb")
        .unwrap();
    assert_eq!(tb.health.faults, 2);
    assert_eq!(tb.health.restarts, 2);
    assert_eq!(t.sink(IN).received.len(), 30);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_module_declaring_a_newer_minor_version_is_refused_naming_it() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repro");
    let text = std::fs::read_to_string(fixtures.join("09_state_ok.wat")).unwrap();
    let rt = runtime();
    let make = |text: &str| {
        let m = rt
            .load("future.wasm", &wat::parse_str(text).unwrap())
            .expect("compiles");
        synthnet_runtime::WasmFactory::new(m, b"{}", 16 << 20)
    };
    use synthnet_runtime::Factory;
    // The version export says 1.2.
    let v = text.replace(
        r#"(func (export "synthnet_abi_v1") (result i32) i32.const 0)"#,
        r#"(func (export "synthnet_abi_v1") (result i32) i32.const 2)"#,
    );
    assert_ne!(v, text);
    let e = make(&v).instantiate(1).err().unwrap();
    assert!(
        e.to_string()
            .contains("built for link ABI 1.2, but this synthnet speaks 1.0 to 1.1"),
        "{e}"
    );
    // The header says 1.2 (bytes 4..8 of the header: major 1, minor 2).
    let h = text.replacen(
        r#"\53\4e\50\31\01\00\00\00"#,
        r#"\53\4e\50\31\01\00\02\00"#,
        1,
    );
    assert_ne!(h, text);
    let e = make(&h).instantiate(1).err().unwrap();
    assert!(
        e.to_string()
            .contains("plugin header speaks ABI 1.2; this synthnet speaks 1.1"),
        "{e}"
    );
    // Minor 1 and minor 0 load.
    let one = text.replace(
        r#"(func (export "synthnet_abi_v1") (result i32) i32.const 0)"#,
        r#"(func (export "synthnet_abi_v1") (result i32) i32.const 1)"#,
    );
    make(&one).instantiate(1).expect("1.1 loads");
    make(&text).instantiate(1).expect("1.0 loads");
    // synthnet_command comes with synthnet_reply.
    let half = one.replace(
        r#"(func (export "synthnet_error")"#,
        r#"(func (export "synthnet_command") (param i32 i32 i64) (result i32) i32.const 0)
           (func (export "synthnet_error")"#,
    );
    assert_ne!(half, one);
    let e = make(&half).instantiate(1).err().unwrap();
    assert!(
        e.to_string()
            .contains("exports `synthnet_command` without `synthnet_reply`"),
        "{e}"
    );
}

#[test]
fn parked_packets_wait_for_their_release_and_survive_a_fault_and_a_swap() {
    let cfg = r#"{"commands": true, "park": 100}"#;
    let mut t = TwoWay::new(300, 0, &[tb("tb", cfg)], &[]);
    t.run(50 * MS);
    // The first 100 are parked, the other 200 went on.
    assert_eq!(t.sink(IN).received.len(), 200);
    assert!(t.sink(IN).received.iter().all(|r| r.seq >= 100));
    assert_eq!(t.held(IN), 100);
    assert_eq!(
        t.command(IN, "tb", json!({"echo": 0})).unwrap()["parked"],
        100
    );
    // A fault: the instance goes, the parked packets stay.
    assert!(t.command(IN, "tb", json!({"trap": 1})).is_err());
    assert_eq!(t.held(IN), 100);
    t.run(60 * MS);
    // A hot swap to a new instance of the same stage (a different config): they stay
    // parked for it, and it can release them.
    let c = t.apply(&[tb("tb", r#"{"commands": true, "after": 1}"#)], &[]);
    assert_eq!(c.swapped.len(), 1, "{c:?}");
    assert!(c.relinked.is_empty());
    assert_eq!(t.held(IN), 100);
    // Release 60 for 10 ms from now: they leave then, in the order they came.
    let at = t.now() + 10 * MS;
    t.command(IN, "tb", json!({"release": 60, "at_ns": at}))
        .unwrap();
    t.run(at - 1);
    assert_eq!(t.sink(IN).received.len(), 200);
    t.run(at + MS);
    let got = t.sink(IN).received[200..].to_vec();
    assert_eq!(
        got.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (0..60).collect::<Vec<_>>()
    );
    assert!(
        got.iter().all(|r| r.ts_ns == at),
        "stamped with the release time"
    );
    // Release 10 "now" (a time in the past): they leave with the command's time.
    let now = t.now();
    t.command(IN, "tb", json!({"release": 10, "at_ns": 1}))
        .unwrap();
    t.run(now + MS);
    let got = t.sink(IN).received[260..].to_vec();
    assert_eq!(
        got.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (60..70).collect::<Vec<_>>()
    );
    assert!(got.iter().all(|r| r.ts_ns == now));
    // Drop the rest: plugin drops.
    t.command(IN, "tb", json!({"drop": 0})).unwrap();
    assert_eq!(t.held(IN), 0);
    assert_eq!(t.drops(IN, DropCause::Plugin), 30);
    assert_eq!(t.drops(IN, DropCause::PluginFault), 0);
}

/// A stage's hold limit bounds its parked packets and both its delay lines together.
#[test]
fn parking_and_both_delay_lines_share_the_hold_limit() {
    for (cfg, parked, delayed) in [
        (r#"{"commands": true, "park": 100}"#, 40, 0),
        (
            r#"{"commands": true, "park": 30, "hold_ns": 100000000}"#,
            30,
            10,
        ),
        (
            r#"{"commands": true, "park": 10, "hold_ns": 100000000, "reverse": 1}"#,
            10,
            30,
        ),
    ] {
        let s = format!(
            r#"{{"limits": {{"hold_packets": 40}}, "ingress": [{}], "egress": []}}"#,
            tb("tb", cfg)
        );
        let mut t = TwoWay::new(100, 0, &[], &[]);
        let plan = synthnet_config::spec::parse(&s, std::path::Path::new(".")).unwrap();
        assert!(t.net.apply(plan, &mut t.loader).is_applied());
        t.run(20 * MS);
        assert_eq!(t.held(IN), 40, "{cfg}");
        assert_eq!(t.drops(IN, DropCause::HoldFull), 60, "{cfg}");
        // Releasing the parked packets makes room: they leave, and the line takes more.
        t.command(IN, "tb", json!({"release": 0})).unwrap();
        t.run(200 * MS);
        let (fwd, back) = (t.sink(IN).received.len(), t.sink(EG).received.len());
        assert_eq!(
            (fwd, back),
            if cfg.contains("reverse") {
                (parked, delayed)
            } else {
                (parked + delayed, 0)
            },
            "{cfg}"
        );
        assert_eq!(t.held(IN), 0);
    }
}

#[test]
fn a_command_arms_the_timer_and_its_injected_packets_go_out() {
    let mut t = TwoWay::new(0, 0, &[tb("tb", r#"{"commands": true}"#)], &[]);
    t.run(MS);
    let at = 7 * MS;
    let r = t.command(IN, "tb", json!({"wake_at_ns": at})).unwrap();
    assert_eq!(r, json!({"armed": at}));
    assert_eq!(t.net.engine.next_deadline(), Some(at));
    t.command(IN, "tb", json!({"inject": {"len": 80, "port": 0}}))
        .unwrap();
    t.command(IN, "tb", json!({"inject": {"len": 90, "port": 1}}))
        .unwrap();
    assert!(
        t.net.engine.links_busy(),
        "waiting on links for the next breath"
    );
    t.run(10 * MS);
    assert_eq!(t.plugin_counter(IN, "tb", "ticks"), 1);
    let fwd = &t.sink(IN).received;
    assert_eq!(
        (fwd.len(), fwd[0].len, fwd[0].ts_ns),
        (1, 80, 0),
        "made at the command's time"
    );
    let back = &t.sink(EG).received;
    assert_eq!(
        (back.len(), back[0].len),
        (1, 90),
        "port 1: the other direction's sink"
    );
}

/// The reverse port of each direction leads to the other direction's sink; relinking
/// one direction (a stage added, then removed) with packets held in both never loses
/// a packet or strands the other direction's reverse links.
#[test]
fn the_reverse_port_answers_the_sender_across_relinks_of_either_direction() {
    let n = 2_000; // 200 ms each way
    let ing = |extra: bool| {
        let mut v = vec![latency_stage("lat", 20), tb("rev", r#"{"reverse": 1}"#)];
        if extra {
            v.insert(0, latency_stage("front", 1));
        }
        v
    };
    let eg = |extra: bool| {
        let mut v = vec![latency_stage("lat", 30), tb("rev", r#"{"reverse": 1}"#)];
        if extra {
            v.push(latency_stage("back", 2));
        }
        v
    };
    let mut t = TwoWay::new(n, n, &ing(false), &eg(false));
    for (k, (a, b)) in [(true, false), (true, true), (false, true), (false, false)]
        .into_iter()
        .enumerate()
    {
        t.run((k as u64 + 1) * 40 * MS);
        assert!(t.held(IN) > 0 && t.held(EG) > 0, "packets in flight");
        let c = t.apply(&ing(a), &eg(b));
        assert_eq!(c.relinked.len(), 1, "one direction relinked: {c:?}");
    }
    t.run(1_000 * MS);
    // Every ingress packet came back on the egress sink and the other way round, with
    // its addresses swapped, each after its direction's latency.
    for (dir, delay) in [(EG, 20 * MS), (IN, 30 * MS)] {
        let got = t.sink(dir).received.clone();
        assert_eq!(got.len() as u64, n, "{dir}");
        assert!(
            got.windows(2).all(|w| w[0].seq < w[1].seq),
            "{dir}: order kept"
        );
        assert!(got.iter().all(|r| r.ts_ns >= r.seq * EVERY + delay));
        let template = synthnet_testkit::apps::udp_template(64);
        assert_eq!(got[0].head[0..6], template[6..12], "MACs swapped");
        assert_eq!(got[0].head[26..30], template[30..34], "IPs swapped");
    }
    assert_eq!(
        t.drops(IN, DropCause::LinkFull) + t.drops(EG, DropCause::LinkFull),
        0
    );
}

/// Packets parked for the reverse port of a stage a reload removes still go back toward
/// their sender (they used to go on toward the receiver with the stage's other packets).
#[test]
fn a_removed_stages_packets_parked_for_the_reverse_port_go_back() {
    let parking = tb("p", r#"{"park": 30, "park_reverse": true}"#);
    let mut t = TwoWay::new(100, 0, &[parking], &[]);
    t.run(20 * MS);
    assert_eq!((t.held(IN), t.sink(IN).received.len()), (30, 70));
    t.apply(&[], &[]);
    t.run(40 * MS);
    assert_eq!(t.sink(IN).received.len(), 70, "none went on");
    assert_eq!(t.sink(EG).received.len(), 30, "all went back");
}

/// A stage swapped in place between a plugin without and one with a reverse port gets
/// its port 1 linked (and unlinked) although the chain's shape is the same.
#[test]
fn swapping_in_a_reverse_port_relinks_the_direction() {
    let mut t = TwoWay::new(1_000, 0, &[latency_stage("s", 1)], &[]);
    t.run(30 * MS);
    let c = t.apply(&[tb("s", r#"{"reverse": 1}"#)], &[]);
    assert_eq!((c.swapped.len(), c.relinked.clone()), (1, vec![IN]));
    t.run(60 * MS);
    let c = t.apply(&[latency_stage("s", 1)], &[]);
    assert_eq!((c.swapped.len(), c.relinked.clone()), (1, vec![IN]));
    t.run(200 * MS);
    let fwd = t.sink(IN).received.len();
    let back = t.sink(EG).received.len();
    assert_eq!(fwd + back, 1_000);
    assert!(
        (250..=350).contains(&back),
        "{back} answered while the reverse stage ran"
    );
}

/// `replay` runs one direction: what a stage sends back on its reverse port is counted
/// and written apart (`--reverse-out`), never mixed into the output.
#[test]
fn replay_counts_the_reverse_port_and_writes_it_apart() {
    let frames: Vec<(u64, Vec<u8>)> = (0..100u64)
        .map(|k| {
            let mut f = synthnet_testkit::apps::udp_template(64);
            f[42..50].copy_from_slice(&k.to_le_bytes());
            (k * MS, f)
        })
        .collect();
    let plan = spec(&[tb("rev", r#"{"reverse": 4}"#)], &[]);
    let mut loader = Loader::new(runtime());
    let (out, summary) =
        synthnet::commands::replay::replay_with(&plan, IN, frames.clone(), &mut loader).unwrap();
    assert_eq!((out.len(), summary.packets_out), (75, 75));
    assert_eq!(summary.packets_reverse, 25);
    let seqs: Vec<u64> = summary
        .reverse
        .iter()
        .map(|(_, f)| u64::from_le_bytes(f[42..50].try_into().unwrap()))
        .collect();
    assert_eq!(seqs, (0..25).map(|k| 4 * k + 3).collect::<Vec<_>>());
    assert!(summary.reverse.iter().all(|(ts, f)| {
        let seq = u64::from_le_bytes(f[42..50].try_into().unwrap());
        *ts == seq * MS && f[0..6] == frames[0].1[6..12]
    }));
    assert!(
        summary.to_string().contains("back to the sender: 25"),
        "{summary}"
    );

    // The command line: --reverse-out writes them; --out has only what went on.
    let dir = std::env::temp_dir().join(format!("synthnet-abi11-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (input, output, back, spec_file) = (
        dir.join("in.pcap"),
        dir.join("out.pcap"),
        dir.join("back.pcap"),
        dir.join("spec.json"),
    );
    synthnet_io::pcap::write_pcap(&input, &frames).unwrap();
    std::fs::write(
        &spec_file,
        format!(r#"{{"ingress": [{}]}}"#, tb("rev", r#"{"reverse": 4}"#)),
    )
    .unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_synthnet"))
        .args(["replay", "--direction", "ingress", "--json", "--spec"])
        .arg(&spec_file)
        .arg("--in")
        .arg(&input)
        .arg("--out")
        .arg(&output)
        .arg("--reverse-out")
        .arg(&back)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let json: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(
        (
            json["packets_out"].as_u64(),
            json["packets_reverse"].as_u64()
        ),
        (Some(75), Some(25))
    );
    let read = |p: &std::path::Path| synthnet_io::pcap::read_capture(p).unwrap().frames;
    assert_eq!(read(&output), out);
    assert_eq!(read(&back), summary.reverse);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Packets held in the delay line and packets parked are host packets: a fault, the
/// restart after it and a hot swap lose none, and each leaves when it should.
#[test]
fn held_and_parked_packets_survive_a_fault_restart_and_a_hot_swap() {
    let cfg = r#"{"commands": true, "park": 50, "hold_ns": 100000000}"#;
    let mut t = TwoWay::new(100, 0, &[tb("tb", cfg)], &[]);
    t.run(20 * MS);
    assert_eq!(t.held(IN), 100, "50 parked, 50 held for 100 ms");
    assert!(t.command(IN, "tb", json!({"trap": true})).is_err());
    t.run(30 * MS);
    let c = t.apply(
        &[tb(
            "tb",
            r#"{"commands": true, "hold_ns": 100000000, "after": 1}"#,
        )],
        &[],
    );
    assert_eq!(c.swapped.len(), 1);
    let snap = t.net.snapshot();
    let h = &snap.directions[0].stages[0].health;
    assert_eq!((h.faults, h.restarts, h.swaps), (1, 1, 1));
    assert_eq!(t.held(IN), 100);
    t.run(150 * MS);
    let got = t.sink(IN).received.clone();
    assert_eq!(got.len(), 50);
    assert!(got
        .iter()
        .enumerate()
        .all(|(k, r)| r.seq == 50 + k as u64 && r.ts_ns == r.seq * EVERY + 100 * MS));
    t.command(IN, "tb", json!({"release": 0})).unwrap();
    t.run(200 * MS);
    let got = t.sink(IN).received.clone();
    assert_eq!(got.len(), 100);
    assert_eq!(
        got[50..].iter().map(|r| r.seq).collect::<Vec<_>>(),
        (0..50).collect::<Vec<_>>()
    );
    assert_eq!(t.held(IN), 0);
    let snap = t.net.snapshot();
    assert_eq!(snap.directions[0].drops.total(), 0);
}
