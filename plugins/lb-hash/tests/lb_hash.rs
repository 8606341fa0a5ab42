//! `lb-hash` through the SDK's `Harness` (the host's batch encoding and command path):
//! the share of flows a membership change breaks per algorithm, `predict` naming exactly
//! the flows that break, the resets (on the reverse port, answering the segment), the
//! DSCP re-hash trigger, blackholing, determinism, and errors that name their field.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use synthnet_plugin_lb_hash::LbHash;
use synthnet_sdk::build::{self, Ether, Ip, Tcp};
use synthnet_sdk::wire::tcpflags::{ACK, PSH, RST, SYN};
use synthnet_sdk::{Harness, Output, REVERSE};

const MS: u64 = 1_000_000;

/// Flow `i`: client 10.1.x.y:(10000 + i % 50000) → 10.2.0.1:5001 (or IPv6).
fn client(i: u32, v6: bool, dscp: u8) -> (Ip, u16) {
    let port = 10_000 + (i % 50_000) as u16;
    let ip = if v6 {
        let mut src = [0u8; 16];
        src[..2].copy_from_slice(&[0x20, 0x01]);
        src[12..16].copy_from_slice(&i.to_be_bytes());
        let mut dst = [0u8; 16];
        dst[..2].copy_from_slice(&[0x20, 0x01]);
        dst[15] = 1;
        Ip::V6 {
            src,
            dst,
            traffic_class: dscp << 2,
            flow_label: 0x12345,
            hop_limit: 64,
        }
    } else {
        Ip::V4 {
            src: [10, 1, (i / 250) as u8, (i % 250) as u8 + 1],
            dst: [10, 2, 0, 1],
            tos: dscp << 2,
            ttl: 64,
            ident: 0,
        }
    };
    (ip, port)
}

fn segment(i: u32, v6: bool, dscp: u8, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    let (ip, port) = client(i, v6, dscp);
    let eth = Ether {
        src: [2, 0, 0, 0, 0, 1],
        dst: [2, 0, 0, 0, 0, 2],
        vlan_tci: None,
    };
    let t = Tcp {
        src_port: port,
        dst_port: 5001,
        seq,
        ack,
        flags,
        window: 1000,
    };
    let mut out = vec![0u8; 200];
    let n = build::tcp(&mut out, &eth, &ip, &t, b"payload").unwrap();
    out.truncate(n);
    out
}

fn udp(i: u32) -> Vec<u8> {
    let (ip, port) = client(i, false, 0);
    let eth = Ether {
        src: [2, 0, 0, 0, 0, 1],
        dst: [2, 0, 0, 0, 0, 2],
        vlan_tci: None,
    };
    let mut out = vec![0u8; 200];
    let n = build::udp(&mut out, &eth, &ip, port, 5001, b"x").unwrap();
    out.truncate(n);
    out
}

fn targets(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("t{i}")).collect()
}

fn lb(extra: Value) -> Harness<LbHash> {
    let mut cfg = json!({"targets": targets(10)});
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    Harness::new(&cfg.to_string(), 1).unwrap()
}

/// Open `n` flows (a SYN each) at `t` ms; all pass.
fn open(h: &mut Harness<LbHash>, n: u32, v6: bool, t: u64) {
    for i in 0..n {
        h.push(&segment(i, v6, 0, SYN, 1000 + i, 0), t * MS);
    }
    let out = h.run(t * MS);
    assert_eq!(out.len(), n as usize);
    assert!(
        out.iter().all(|o| o.port == Some(0)),
        "a SYN was not passed"
    );
}

/// Send one ACK on each of `n` flows at `t` ms; the indices of flows answered with a
/// reset (and dropped), checking each reset against its segment.
fn probe(h: &mut Harness<LbHash>, n: u32, v6: bool, t: u64) -> BTreeSet<u32> {
    let mut broken = BTreeSet::new();
    let mut reset = BTreeSet::new();
    // One batch at a time: an output's `input` is its index in its batch.
    for start in (0..n).step_by(256) {
        for i in start..(start + 256).min(n) {
            h.push(
                &segment(i, v6, 0, ACK | PSH, 5000 + i, 7_000_000 + i),
                t * MS,
            );
        }
        for o in h.run(t * MS) {
            match (o.input, o.port) {
                (Some(_), Some(0)) => {}
                (Some(i), None) => {
                    broken.insert(start + i as u32);
                }
                (None, Some(p)) => {
                    assert_eq!(p, REVERSE);
                    reset.insert(check_reset(&o));
                }
                other => panic!("unexpected output {other:?}"),
            }
        }
    }
    assert_eq!(reset, broken, "one reset per misrouted segment");
    broken
}

/// A reset answers an ACK with seq = its ack, addresses and ports swapped; the flow
/// index it answers.
fn check_reset(o: &Output) -> u32 {
    let r = &o.bytes;
    let (l4, v6) = match u16::from_be_bytes([r[12], r[13]]) {
        0x0800 => (34, false),
        0x86DD => (54, true),
        e => panic!("ethertype {e:#x}"),
    };
    assert_eq!(r[l4 + 13], RST);
    assert_eq!(
        u16::from_be_bytes([r[l4], r[l4 + 1]]),
        5001,
        "from the server port"
    );
    let dport = u16::from_be_bytes([r[l4 + 2], r[l4 + 3]]);
    let i = (dport - 10_000) as u32;
    let seq = u32::from_be_bytes(r[l4 + 4..l4 + 8].try_into().unwrap());
    assert_eq!(seq, 7_000_000 + i, "seq = the segment's ack");
    if !v6 {
        assert_eq!(&r[26..30], &[10, 2, 0, 1]);
    }
    i
}

fn predicted(h: &mut Harness<LbHash>, change: Value, t: u64) -> BTreeSet<u32> {
    let r = h
        .command(
            &json!({"op": "predict", "change": change, "limit": 100_000}).to_string(),
            t * MS,
        )
        .unwrap();
    let list = r["flows_broken"].as_array().unwrap();
    assert_eq!(r["breaks"].as_u64().unwrap() as usize, list.len());
    list.iter()
        .map(|f| f["src_port"].as_u64().unwrap() as u32 - 10_000)
        .collect()
}

/// Open `n` flows, predict `change`, apply it, probe: (predicted, broken).
fn experiment(cfg: Value, n: u32, change: Value) -> (BTreeSet<u32>, BTreeSet<u32>) {
    let mut h = lb(cfg);
    open(&mut h, n, false, 0);
    assert!(
        probe(&mut h, n, false, 1).is_empty(),
        "no change, nothing broken"
    );
    let p = predicted(&mut h, change.clone(), 2);
    let r = h.command(&change.to_string(), 2 * MS).unwrap();
    assert_eq!(r["broken"].as_u64().unwrap() as usize, p.len());
    let b = probe(&mut h, n, false, 3);
    (p, b)
}

fn share(s: &BTreeSet<u32>, n: u32) -> f64 {
    s.len() as f64 / n as f64
}

const N: u32 = 5000;

#[test]
fn hash_threshold_removing_first_or_last_breaks_half_and_predict_is_exact() {
    for t in ["t1", "t10"] {
        let (p, b) = experiment(json!({}), N, json!({"op": "remove", "target": t}));
        assert_eq!(p, b, "predict names exactly the flows that break ({t})");
        let f = share(&b, N);
        eprintln!("hash_threshold remove {t}: {f:.3} of {N} flows broken");
        assert!((0.45..0.55).contains(&f), "remove {t}: {f}");
    }
}

#[test]
fn hash_threshold_adding_a_target_breaks_half() {
    let (p, b) = experiment(json!({}), N, json!({"op": "add", "target": "t11"}));
    assert_eq!(p, b);
    let f = share(&b, N);
    eprintln!("hash_threshold add t11: {f:.3}");
    assert!((0.45..0.55).contains(&f), "{f}");
}

/// Removing target k (0-based) of n keeps, for each other target, the overlap of its old
/// and new hash ranges: ½ − k(n−1−k)/(n(n−1)) of the flows move (the module docs).
#[test]
fn hash_threshold_removing_any_target_breaks_what_the_ranges_predict() {
    let n = 10.0;
    for k in 0..10 {
        let t = format!("t{}", k + 1);
        let (p, b) = experiment(json!({}), N, json!({"op": "remove", "target": t}));
        assert_eq!(p, b);
        let f = share(&b, N);
        let k = k as f64;
        let model = 0.5 - k * (n - 1.0 - k) / (n * (n - 1.0));
        eprintln!("hash_threshold remove {t}: {f:.3} (model {model:.3})");
        assert!((f - model).abs() < 0.03, "remove {t}: {f}, model {model}");
    }
}

#[test]
fn modulo_breaks_most_flows() {
    let (p, b) = experiment(
        json!({"algorithm": "modulo"}),
        N,
        json!({"op": "remove", "target": "t10"}),
    );
    assert_eq!(p, b);
    let f = share(&b, N);
    eprintln!("modulo remove t10: {f:.3}");
    assert!((0.85..0.95).contains(&f), "{f}");
}

#[test]
fn consistent_and_resilient_break_only_the_removed_targets_flows() {
    for algo in ["consistent", "resilient"] {
        for t in ["t1", "t5", "t10"] {
            let mut h = lb(json!({"algorithm": algo}));
            open(&mut h, N, false, 0);
            let homes = h.command(r#"{"op": "status"}"#, MS).unwrap();
            let on_t = homes["flows_by_home"][t].as_u64().unwrap() as usize;
            let p = predicted(&mut h, json!({"op": "remove", "target": t}), 2);
            h.command(&json!({"op": "remove", "target": t}).to_string(), 2 * MS)
                .unwrap();
            let b = probe(&mut h, N, false, 3);
            assert_eq!(p, b, "{algo} remove {t}");
            assert_eq!(b.len(), on_t, "{algo}: exactly the flows homed on {t}");
            let f = share(&b, N);
            eprintln!("{algo} remove {t}: {f:.3}");
            assert!((0.06..0.14).contains(&f), "{algo} remove {t}: {f}");
        }
    }
}

#[test]
fn consistent_add_moves_one_in_n_plus_one_resilient_add_breaks_no_active_flow() {
    let (p, b) = experiment(
        json!({"algorithm": "consistent"}),
        N,
        json!({"op": "add", "target": "t11"}),
    );
    assert_eq!(p, b);
    let f = share(&b, N);
    eprintln!("consistent add t11: {f:.3}");
    assert!((0.05..0.14).contains(&f), "{f}");
    // Resilient: every bucket is active (used within idle_timer_ms), so none moves.
    let (p, b) = experiment(
        json!({"algorithm": "resilient"}),
        N,
        json!({"op": "add", "target": "t11"}),
    );
    assert_eq!((p.len(), b.len()), (0, 0));
    // With a 0 ms idle timer every bucket may move at once: ≈ 1/11 of the flows.
    let (p, b) = experiment(
        json!({"algorithm": "resilient", "idle_timer_ms": 0}),
        N,
        json!({"op": "add", "target": "t11"}),
    );
    assert_eq!(p, b);
    let f = share(&b, N);
    eprintln!("resilient (idle 0) add t11: {f:.3}");
    assert!((0.05..0.14).contains(&f), "{f}");
}

#[test]
fn resilient_rebalances_buckets_once_idle() {
    let mut h = lb(json!({"algorithm": "resilient", "idle_timer_ms": 1000}));
    open(&mut h, N, false, 0);
    h.command(r#"{"op": "add", "target": "t11"}"#, 10 * MS)
        .unwrap();
    assert!(h.command(r#"{"op": "status"}"#, 10 * MS).unwrap()["unbalanced"] == true);
    // Flows keep talking: no bucket is idle, nothing moves, nothing breaks.
    assert!(probe(&mut h, N, false, 500).is_empty());
    // After 2 s of silence the upkeep moves idle buckets to t11: the (idle) flows on
    // them break when they talk again, as with Linux's resilient groups.
    h.push(&udp(999_999), 2600 * MS);
    h.run(2600 * MS);
    let st = h.command(r#"{"op": "status"}"#, 2600 * MS).unwrap();
    assert_eq!(st["unbalanced"], false);
    let broken = probe(&mut h, N, false, 2700);
    let f = share(&broken, N);
    eprintln!("resilient: idle flows broken after rebalancing: {f:.3}");
    assert!((0.05..0.14).contains(&f), "{f}");
}

#[test]
fn ipv6_flows_are_balanced_and_reset_too() {
    let mut h = lb(json!({}));
    open(&mut h, 2000, true, 0);
    let p = predicted(&mut h, json!({"op": "remove", "target": "t1"}), 1);
    h.command(r#"{"op": "remove", "target": "t1"}"#, MS)
        .unwrap();
    let b = probe(&mut h, 2000, true, 2);
    assert_eq!(p, b);
    assert!((0.45..0.55).contains(&share(&b, 2000)));
}

#[test]
fn re_adding_the_target_heals_the_flows() {
    let mut h = lb(json!({}));
    open(&mut h, 1000, false, 0);
    h.command(r#"{"op": "remove", "target": "t10"}"#, MS)
        .unwrap();
    assert!(!probe(&mut h, 1000, false, 2).is_empty());
    h.command(r#"{"op": "add", "target": "t10"}"#, 3 * MS)
        .unwrap();
    assert!(probe(&mut h, 1000, false, 4).is_empty());
    // And `set` to the same list changes nothing.
    let r = h
        .command(
            &json!({"op": "set", "targets": targets(10)}).to_string(),
            5 * MS,
        )
        .unwrap();
    assert_eq!(r["broken"], 0);
}

#[test]
fn a_syn_on_a_broken_flows_tuple_starts_a_new_connection() {
    let mut h = lb(json!({}));
    open(&mut h, 1000, false, 0);
    h.command(r#"{"op": "remove", "target": "t1"}"#, MS)
        .unwrap();
    let b = probe(&mut h, 1000, false, 2);
    assert!(!b.is_empty());
    // The clients reconnect from the same ports: every SYN passes, and the new
    // connections stay up.
    open(&mut h, 1000, false, 3);
    assert!(probe(&mut h, 1000, false, 4).is_empty());
}

#[test]
fn dscp_change_rehashes_the_flow_when_hashed() {
    // The IPv6 ssh variant: the session changes its DSCP after setup (af21 → cs1 here).
    for (hash_dscp, moves, lo, hi) in [
        (true, false, 0.85, 0.95),
        (false, false, 0.0, 0.0),
        // rehash_moves: every re-hashed flow breaks.
        (true, true, 1.0, 1.0),
    ] {
        let mut h = lb(json!({"hash_dscp": hash_dscp, "rehash_moves": moves}));
        for i in 0..N {
            h.push(&segment(i, true, 18, SYN, 1, 0), 0);
        }
        h.run(0);
        for i in 0..N {
            h.push(&segment(i, true, 8, ACK, 2, 7_000_000 + i), MS);
        }
        let out = h.run(MS);
        let resets = out.iter().filter(|o| o.port == Some(REVERSE)).count();
        let f = resets as f64 / N as f64;
        eprintln!("hash_dscp {hash_dscp}, rehash_moves {moves}: DSCP change broke {f:.3}");
        assert!(f >= lo && f <= hi, "{f}");
        let c = h.counters();
        let rehashed = c.iter().find(|(n, _)| n == "rehashed").unwrap().1;
        assert_eq!(rehashed, if hash_dscp { N as u64 } else { 0 });
    }
}

#[test]
fn blackhole_drops_without_a_reset_and_udp_is_never_reset() {
    let mut h = lb(json!({"on_misroute": "blackhole"}));
    open(&mut h, 1000, false, 0);
    h.command(r#"{"op": "remove", "target": "t10"}"#, MS)
        .unwrap();
    for i in 0..1000 {
        h.push(&segment(i, false, 0, ACK, 1, 2), 2 * MS);
    }
    let out = h.run(2 * MS);
    assert!(out.iter().all(|o| o.input.is_some()), "no reset injected");
    let dropped = out.iter().filter(|o| o.port.is_none()).count();
    assert!((400..600).contains(&dropped), "{dropped}");

    let mut h = lb(json!({}));
    for i in 0..1000 {
        h.push(&udp(i), 0);
    }
    h.run(0);
    h.command(r#"{"op": "remove", "target": "t10"}"#, MS)
        .unwrap();
    for i in 0..1000 {
        h.push(&udp(i), 2 * MS);
    }
    let out = h.run(2 * MS);
    assert!(out.iter().all(|o| o.input.is_some()));
    let dropped = out.iter().filter(|o| o.port.is_none()).count();
    assert!((400..600).contains(&dropped), "{dropped}");
}

#[test]
fn dst_ports_limit_what_is_balanced() {
    let mut h = lb(json!({"dst_ports": [80, 443]}));
    open(&mut h, 1000, false, 0);
    h.command(r#"{"op": "remove", "target": "t10"}"#, MS)
        .unwrap();
    assert!(
        probe(&mut h, 1000, false, 2).is_empty(),
        "port 5001 is not balanced"
    );
    let st = h.command(r#"{"op": "status"}"#, 2 * MS).unwrap();
    assert_eq!(st["flows"], 0);
}

#[test]
fn a_full_flow_table_leaves_new_flows_untracked_never_broken() {
    let mut h = lb(json!({"max_flows": 64}));
    open(&mut h, 1000, false, 0);
    let st = h.command(r#"{"op": "status"}"#, MS).unwrap();
    assert!(st["flows"].as_u64().unwrap() <= 64);
    h.command(r#"{"op": "remove", "target": "t10"}"#, MS)
        .unwrap();
    let b = probe(&mut h, 1000, false, 2);
    assert!(b.len() <= 64, "{}", b.len());
    let c = h.counters();
    assert!(c.iter().find(|(n, _)| n == "flows_untracked").unwrap().1 >= 936);
}

#[test]
fn idle_flows_are_forgotten() {
    let mut h = lb(json!({"flow_idle_ms": 100}));
    open(&mut h, 100, false, 0);
    let st = h.command(r#"{"op": "status"}"#, 50 * MS).unwrap();
    assert_eq!(st["flows"], 100);
    let st = h.command(r#"{"op": "status"}"#, 200 * MS).unwrap();
    assert_eq!(st["flows"], 0);
}

#[test]
fn runs_are_deterministic() {
    let run = || {
        let mut h = lb(json!({"algorithm": "consistent"}));
        open(&mut h, 2000, false, 0);
        let p = h
            .command(
                r#"{"op": "predict", "change": {"op": "remove", "target": "t3"}}"#,
                MS,
            )
            .unwrap();
        h.command(r#"{"op": "remove", "target": "t3"}"#, MS)
            .unwrap();
        for i in 0..2000 {
            h.push(&segment(i, false, 0, ACK, 1, 2), 2 * MS);
        }
        (p, h.run(2 * MS))
    };
    assert_eq!(run(), run());
}

#[test]
fn predict_changes_nothing() {
    let mut h = lb(json!({}));
    open(&mut h, 1000, false, 0);
    let before = h.command(r#"{"op": "status"}"#, MS).unwrap();
    let p = predicted(&mut h, json!({"op": "remove", "target": "t1"}), 1);
    assert!(!p.is_empty());
    assert_eq!(h.command(r#"{"op": "status"}"#, MS).unwrap(), before);
    assert!(probe(&mut h, 1000, false, 2).is_empty());
}

#[test]
fn bad_commands_are_refused_naming_the_field_and_change_nothing() {
    let mut h = lb(json!({}));
    open(&mut h, 100, false, 0);
    let before = h.command(r#"{"op": "status"}"#, MS).unwrap();
    for (cmd, needle) in [
        (json!({"op": "drop"}), "op:"),
        (json!({}), "op: missing"),
        (json!("remove"), "command:"),
        (
            json!({"op": "remove", "target": "t99"}),
            "target: \"t99\" is not a member",
        ),
        (json!({"op": "remove"}), "target: missing"),
        (json!({"op": "add", "target": "t3"}), "already a member"),
        (json!({"op": "add", "target": ""}), "target:"),
        (
            json!({"op": "add", "target": "t11", "position": 12}),
            "position:",
        ),
        (
            json!({"op": "add", "target": "t11", "weight": 2}),
            "weight: unknown field",
        ),
        (
            json!({"op": "set", "targets": []}),
            "targets: the change would leave no target",
        ),
        (json!({"op": "set", "targets": ["a", "a"]}), "targets[1]:"),
        (json!({"op": "set", "targets": [1]}), "targets[0]:"),
        (json!({"op": "predict"}), "change: missing"),
        (
            json!({"op": "predict", "change": {"op": "remove", "target": "x"}}),
            "change.target:",
        ),
        (
            json!({"op": "predict", "change": {"op": "add", "target": "x"}, "limit": -1}),
            "limit:",
        ),
    ] {
        let e = h.command(&cmd.to_string(), MS).unwrap_err();
        assert!(e.contains(needle), "{cmd}: {e:?} lacks {needle:?}");
    }
    assert_eq!(h.command(r#"{"op": "status"}"#, MS).unwrap(), before);
    let mut one = Harness::<LbHash>::new(r#"{"targets": ["only"]}"#, 1).unwrap();
    let e = one
        .command(r#"{"op": "remove", "target": "only"}"#, 0)
        .unwrap_err();
    assert!(e.contains("no target"), "{e}");
}

#[test]
fn bad_configs_are_refused_naming_the_field() {
    for (cfg, needle) in [
        (json!({}), "targets:"),
        (json!({"targets": ["a", "a"]}), "targets[1]:"),
        (
            json!({"targets": ["a"], "algorithm": "maglev"}),
            "unknown variant",
        ),
        (
            json!({"targets": ["a"], "algorithm": "consistent", "vnodes": 0}),
            "vnodes:",
        ),
        (
            json!({"targets": ["a"], "algorithm": "resilient", "buckets": 0}),
            "buckets:",
        ),
        (
            json!({"targets": ["a", "b"], "algorithm": "resilient", "buckets": 1}),
            "buckets:",
        ),
        (
            json!({"targets": ["a"], "idle_timer_ms": -1}),
            "idle_timer_ms:",
        ),
        (
            json!({"targets": ["a"], "flow_idle_ms": 0}),
            "flow_idle_ms:",
        ),
        (json!({"targets": ["a"], "max_flows": 0}), "max_flows:"),
        (json!({"targets": ["a"], "dst_ports": [0]}), "dst_ports:"),
        (
            json!({"targets": ["a"], "rehash_moves": true}),
            "rehash_moves:",
        ),
        (
            json!({"targets": ["a"], "target": "a"}),
            "unknown field `target`",
        ),
    ] {
        let e = Harness::<LbHash>::new(&cfg.to_string(), 1).err().unwrap();
        assert!(e.contains(needle), "{cfg}: {e:?} lacks {needle:?}");
    }
}
