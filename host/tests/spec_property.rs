//! Property: anything `check` accepts runs. 100,000 specs from a seeded generator — all
//! three shapes, valid-ish and invalid values, extreme numbers (1e308, -0, 2^64, 8 bits/s,
//! a day and a day plus one ms), colliding names and labels, up to hundreds of flows —
//! go through `spec::parse`; each one it accepts is built into the graph `synthnet check`
//! builds (the one apply path into a network without interfaces, plugins instantiated
//! with their configs); and a sample of those `check` accepts is replayed over a small
//! capture (frames of every kind and size, up to a 64 KiB super-packet). Nothing may
//! panic or abort, and every replay of an accepted spec must succeed.
//!
//! What is replayed: every accepted spec of the first 2,000 generated (every shape and
//! kind of value is among them), then one in 4 of the accepted ones after that: about
//! 4,558 replays of the 17,189 specs `check` accepts. Replaying all of them took 61 s
//! (all passed, `REPLAY_EVERY = 1`), too long for every test run; this takes about
//! 30 s. The same seed gives the same specs, so a failure names the
//! spec's index and text and reproduces.

use serde_json::{json, Map, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use synthnet::commands::replay::replay_with;
use synthnet_config::{spec, Outcome, Plan};
use synthnet_core::Direction;
use synthnet_runtime::{Loader, WasmRuntime};

const SPECS: u64 = 100_000;
const SEED: u64 = 0x5EED_0009;
/// Replay every accepted spec among the first this many, then one in `REPLAY_EVERY`.
const REPLAY_ALL_BELOW: u64 = 2_000;
const REPLAY_EVERY: u64 = 4;

/// splitmix64: small, seeded, no dependency.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        synthnet_sdk::rng::splitmix64(&mut self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_100: u64) -> bool {
        self.below(100) < per_100
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }

    /// A number as a spec might carry one: sensible, at an edge, or absurd.
    fn number(&mut self, typical: f64) -> Value {
        match self.below(40) {
            0..=24 => json!(typical * (self.below(2001) as f64 / 1000.0)),
            25..=27 => json!(self.below(1000)),
            28..=30 => json!(*self.pick(&[
                0.0,
                -0.0,
                -1.0,
                0.5,
                1.0,
                1.5,
                7.0,
                8.0,
                1e-300,
                86_400_000.0,
                86_400_000.001,
                1e12,
                1.4e12,
                9e15,
                1e308,
                -1e308,
            ])),
            31..=33 => json!(*self.pick(&[
                0u64,
                1,
                u32::MAX as u64,
                1 << 32,
                1 << 34,
                (1 << 34) + 1,
                i64::MAX as u64,
                u64::MAX,
            ])),
            34 => json!(-(self.below(1 << 40) as i64)),
            35 => self.odd_value(),
            _ => json!(typical),
        }
    }

    /// Values of the wrong type.
    fn odd_value(&mut self) -> Value {
        match self.below(7) {
            0 => Value::Null,
            1 => json!(true),
            2 => json!("12"),
            3 => json!([]),
            4 => json!({}),
            5 => json!("NaN"),
            _ => json!(f64::MAX),
        }
    }

    /// A name or label: valid, reserved, colliding, empty, too long, with control
    /// characters or non-ASCII.
    fn name(&mut self) -> String {
        match self.below(24) {
            0..=14 => (*self.pick(&["a", "b", "dns", "web", "x-1", "flow_2"])).to_string(),
            15..=16 => (*self.pick(&["rate", "loss", "latency", "jitter", "corrupt"])).to_string(),
            17 => "default".into(),
            18 => String::new(),
            19 => "n".repeat(64),
            20 => "n".repeat(65),
            21 => "bad\nname\u{1b}[31m".into(),
            22 => "ümlaut".into(),
            _ => format!("f{}", self.below(10_000)),
        }
    }

    fn qos(&mut self) -> Value {
        let mut q = Map::new();
        for (k, typical) in [
            ("rate", 1e7),
            ("loss", 0.05),
            ("latency", 40.0),
            ("jitter", 8.0),
            ("jitter_strength", 0.5),
        ] {
            if self.chance(50) {
                q.insert(k.into(), self.number(typical));
            }
        }
        if self.chance(30) {
            q.insert(
                "reorder_packets".into(),
                if self.chance(90) {
                    json!(self.chance(50))
                } else {
                    self.odd_value()
                },
            );
        }
        if self.chance(3) {
            q.insert("bandwidth".into(), json!(1));
        }
        Value::Object(q)
    }

    fn link(&mut self) -> Value {
        let mut l = Map::new();
        if self.chance(80) {
            l.insert("ingress".into(), self.qos());
        }
        if self.chance(80) {
            l.insert("egress".into(), self.qos());
        }
        Value::Object(l)
    }

    /// How many flows: mostly a few, sometimes hundreds.
    fn n_flows(&mut self) -> u64 {
        match self.below(100) {
            0 => 100 + self.below(200),
            1..=5 => 10 + self.below(40),
            _ => self.below(5),
        }
    }

    fn compat_simple(&mut self) -> Value {
        self.link()
    }

    fn compat_flows(&mut self) -> Value {
        let mut spec = Map::new();
        if self.chance(85) {
            spec.insert("default_link".into(), self.link());
        }
        let unique = self.chance(60);
        let flows: Vec<Value> = (0..self.n_flows())
            .map(|j| {
                let ip = match self.below(8) {
                    0 => json!(0),
                    1 => json!(16_777_226u32),
                    2 => json!(self.next() as u32),
                    3 => json!("10.0.0.0/8"),
                    4 => json!("2001:db8::/33"),
                    5 => json!("10.0.0.1/33"),
                    6 => json!(-1),
                    _ => json!("not an address"),
                };
                let mut m = Map::new();
                if self.chance(90) {
                    m.insert("ip".into(), ip);
                }
                m.insert(
                    "protocol".into(),
                    json!(*self.pick(&[0i64, 6, 17, 1, 58, 255, 256, -1])),
                );
                if self.chance(60) {
                    m.insert("port_min".into(), json!(self.below(70_000)));
                }
                if self.chance(60) {
                    m.insert("port_max".into(), json!(self.below(70_000)));
                }
                let mut f = Map::new();
                if self.chance(99) {
                    let label = if unique { format!("f{j}") } else { self.name() };
                    f.insert("label".into(), json!(label));
                }
                f.insert("flow".into(), Value::Object(m));
                if self.chance(90) {
                    f.insert("link".into(), self.link());
                }
                Value::Object(f)
            })
            .collect();
        if self.chance(95) {
            spec.insert("flows".into(), Value::Array(flows));
        }
        Value::Object(spec)
    }

    /// A plugin config: the plugin's own fields with any values, sometimes a stranger.
    fn config(&mut self, plugin: &str) -> Value {
        let fields: &[(&str, f64)] = match plugin {
            "latency" => &[("delay_ms", 40.0)],
            "jitter" => &[("jitter_ms", 8.0), ("strength", 0.5)],
            "loss" => &[("loss_ratio", 0.05)],
            "corrupt" => &[("ratio", 0.01), ("skip_bytes", 14.0)],
            "rate" => &[
                ("rate_bps", 1e7),
                ("burst_bytes", 3000.0),
                ("queue_bytes", 250_000.0),
                ("overhead_bytes", 24.0),
            ],
            _ => &[("anything", 1.0)],
        };
        let mut c = Map::new();
        for (k, typical) in fields {
            if self.chance(75) {
                c.insert((*k).into(), self.number(*typical));
            }
        }
        if plugin == "jitter" && self.chance(50) {
            c.insert("reorder".into(), json!(self.chance(50)));
        }
        if self.chance(3) {
            c.insert("unknown_field".into(), json!(1));
        }
        match self.below(40) {
            0 => Value::Null,
            1 => json!([1, 2]),
            _ => Value::Object(c),
        }
    }

    fn chain(&mut self) -> Value {
        let n = match self.below(20) {
            0 => 10 + self.below(20),
            _ => self.below(5),
        };
        let stages: Vec<Value> = (0..n)
            .map(|_| {
                let plugin = if self.chance(4) {
                    *self.pick(&["missing.wasm", "/dev/zero.wasm", "nonsense"])
                } else {
                    *self.pick(&["latency", "jitter", "loss", "corrupt", "rate"])
                }
                .to_string();
                let mut s = Map::new();
                s.insert("config".into(), self.config(&plugin));
                s.insert("plugin".into(), json!(plugin));
                if self.chance(30) {
                    s.insert("name".into(), json!(self.name()));
                }
                Value::Object(s)
            })
            .collect();
        Value::Array(stages)
    }

    fn native(&mut self) -> Value {
        let mut spec = Map::new();
        if self.chance(60) {
            let seed = match self.below(4) {
                0 => json!(u64::MAX),
                1 => json!(-1),
                2 => json!(1.5),
                _ => json!(self.next()),
            };
            spec.insert("seed".into(), seed);
        }
        if self.chance(40) {
            let mut l = Map::new();
            for (k, lo, hi) in [
                ("pool_packets", 1024u64, 1 << 22),
                ("pool_large_packets", 16, 65_536),
                ("hold_packets", 1, 1 << 24),
                ("plugin_memory_mib", 1, 4096),
            ] {
                if self.chance(40) {
                    let v = match self.below(6) {
                        0 => json!(lo),
                        1 => json!(hi),
                        2 => json!(lo - 1),
                        3 => json!(hi + 1),
                        4 => json!(lo + self.below(hi.min(1 << 16) - lo + 1)),
                        _ => self.number(lo as f64),
                    };
                    l.insert(k.into(), v);
                }
            }
            spec.insert("limits".into(), Value::Object(l));
        }
        if self.chance(85) {
            spec.insert("ingress".into(), self.chain());
        }
        if self.chance(70) {
            spec.insert("egress".into(), self.chain());
        }
        if self.chance(50) {
            let unique = self.chance(60);
            let flows: Vec<Value> = (0..self.n_flows())
                .map(|j| {
                    let mut m = Map::new();
                    if self.chance(50) {
                        let ip = *self.pick(&[
                            "10.0.0.0/8",
                            "10.0.0.1",
                            "2001:db8::/32",
                            "::/0",
                            "0.0.0.0/0",
                            "300.1.1.1",
                            "10.0.0.0/40",
                        ]);
                        m.insert("ip".into(), json!(ip));
                    }
                    if self.chance(60) {
                        let p = match self.below(5) {
                            0 => json!("tcp"),
                            1 => json!("UDP"),
                            2 => json!("sctp"),
                            3 => json!(0),
                            _ => json!(self.below(300)),
                        };
                        m.insert("protocol".into(), p);
                    }
                    if self.chance(40) {
                        m.insert("port_min".into(), json!(self.below(70_000)));
                    }
                    if self.chance(40) {
                        m.insert("port_max".into(), json!(self.below(70_000)));
                    }
                    let mut f = Map::new();
                    let label = if unique { format!("f{j}") } else { self.name() };
                    f.insert("label".into(), json!(label));
                    f.insert("match".into(), Value::Object(m));
                    if self.chance(70) {
                        f.insert("ingress".into(), self.chain());
                    }
                    if self.chance(50) {
                        f.insert("egress".into(), self.chain());
                    }
                    Value::Object(f)
                })
                .collect();
            spec.insert("flows".into(), Value::Array(flows));
        }
        Value::Object(spec)
    }

    /// One spec's text: one of the three shapes, sometimes cut short or not JSON.
    fn spec(&mut self) -> String {
        let v = match self.below(10) {
            0..=1 => self.compat_simple(),
            2..=4 => self.compat_flows(),
            _ => self.native(),
        };
        let text = v.to_string();
        match self.below(100) {
            0 => text[..text.len() / 2].to_string(),
            1 => "[1, 2, 3]".into(),
            _ => text,
        }
    }
}

/// What `synthnet check` does (the config layer's dry run), with a shared loader so
/// each plugin is compiled once for the whole test.
fn check(plan: &Plan, loader: &mut Loader) -> Result<(), String> {
    match synthnet_config::dry_run(plan.clone(), loader).outcome {
        Outcome::Applied(_) => Ok(()),
        Outcome::Refused(e) => Err(e.to_string()),
    }
}

/// A small capture with a bit of everything the classifier and plugins look at: UDP and
/// TCP over IPv4 and IPv6, a VLAN tag, DNS, frames from 60 bytes to a 64 KiB
/// super-packet, two at the same instant, 10 ms in all.
fn capture() -> Vec<(u64, Vec<u8>)> {
    let t0 = 1_700_000_000_000_000_000u64;
    let mut out = Vec::new();
    for k in 0..40u64 {
        let size = [60usize, 98, 590, 1514, 9000, 65_536][k as usize % 6];
        let mut f = synthnet_testkit::apps::udp_template(size);
        f[42..50].copy_from_slice(&k.to_le_bytes());
        match k % 5 {
            // DNS: destination port 53.
            1 => f[36..38].copy_from_slice(&53u16.to_be_bytes()),
            // TCP (the checksum is not checked by anything here).
            2 => f[23] = 6,
            // IPv6 next header UDP, in place of IPv4.
            3 => {
                f[12..14].copy_from_slice(&0x86DDu16.to_be_bytes());
                f[14] = 0x60;
                f[20] = 17;
            }
            // An 802.1Q tag in front of IPv4.
            4 => {
                f.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
                f.truncate(size);
            }
            _ => {}
        }
        out.push((t0 + k / 2 * 500_000, f));
    }
    out
}

#[test]
fn every_spec_check_accepts_replays_without_a_panic() {
    let base = std::env::temp_dir().join(format!("synthnet-spec-property-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    let mut loader = Loader::new(WasmRuntime::new().expect("wasmtime starts"));
    let frames = capture();
    let mut gen = Gen(SEED);
    let (mut parsed, mut checked, mut replayed) = (0u64, 0u64, 0u64);
    let mut shapes = [0u64; 3];
    let started = std::time::Instant::now();
    for i in 0..SPECS {
        let text = gen.spec();
        let replay_this = i < REPLAY_ALL_BELOW || gen.below(REPLAY_EVERY) == 0;
        let dir = if gen.chance(50) {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<[bool; 3], String> {
            let Ok(plan) = spec::parse(&text, Path::new(&base)) else {
                return Ok([false; 3]);
            };
            let _ = synthnet_config::describe(&plan);
            shapes[plan.shape as usize] += 1;
            if check(&plan, &mut loader).is_err() {
                return Ok([true, false, false]);
            }
            if !replay_this {
                return Ok([true, true, false]);
            }
            replay_with(&plan, dir, frames.clone(), &mut loader)
                .map_err(|e| format!("check accepted it, replay failed: {e:#}"))?;
            Ok([true, true, true])
        }));
        match outcome {
            Ok(Ok([p, c, r])) => {
                parsed += p as u64;
                checked += c as u64;
                replayed += r as u64;
            }
            Ok(Err(e)) => panic!("spec {i} ({dir}): {e}\n{text}"),
            Err(_) => panic!("spec {i} ({dir}) panicked (message above)\n{text}"),
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    eprintln!(
        "{SPECS} specs: {parsed} parsed (simple {}, flows {}, native {}), {checked} accepted by check, {replayed} replayed, in {:.1} s",
        shapes[0],
        shapes[1],
        shapes[2],
        started.elapsed().as_secs_f64()
    );
    // The generator must reach every stage, or the property says little.
    assert!(shapes.iter().all(|&n| n > 1_000), "shapes {shapes:?}");
    assert!(checked > 10_000, "only {checked} specs accepted");
    assert!(replayed > 2_000, "only {replayed} replayed");
}
