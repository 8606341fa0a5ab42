//! The one apply path on a virtual clock: every kind of change — unchanged, swapped,
//! added, removed, reordered, a flow added and removed — under a steady stream, with
//! no packet lost and order kept; counters that never run backwards; and a plugin whose
//! init is slow does not hold up the engine thread.

mod common;

use std::time::{Duration, Instant};
use synthnet_config::plan::Plan;
use synthnet_config::spec;
use synthnet_config::{prepare, Changes, Network, Outcome, Ports, Report, StageId};
use synthnet_core::clock::VirtualClock;
use synthnet_core::{Direction, Engine, PacketPool};
use synthnet_runtime::{registry, Handover, Loader};
use synthnet_testkit::apps::{Sink, Source};

const MS: u64 = 1_000_000;
/// One packet every 100 µs.
const INTERVAL: u64 = 100_000;

fn plan_of(json: &str) -> Plan {
    spec::parse(json, std::path::Path::new(".")).expect("a valid spec")
}

/// A network with an ingress direction from a source of `count` UDP packets to a
/// recording sink.
fn network(count: u64) -> (Network, Loader) {
    let mut engine = Engine::new(PacketPool::new(1 << 16, 2048));
    let source = engine.add(Box::new(Source::new(64, INTERVAL, 0, count, 256)));
    let sink = engine.add(Box::new(Sink::new(true)));
    let net = Network::new(engine, [(Direction::Ingress, Ports { source, sink })]);
    (net, Loader::new(common::runtime()))
}

fn applied(r: Report) -> Changes {
    match r.outcome {
        Outcome::Applied(c) => c,
        Outcome::Refused(e) => panic!("refused: {e}"),
    }
}

fn id(flow: Option<&str>, name: &str) -> StageId {
    StageId {
        chain: synthnet_config::ChainId {
            dir: Direction::Ingress,
            flow: flow.map(str::to_string),
        },
        name: name.to_string(),
    }
}

fn latency(ms: u64) -> String {
    format!(r#"{{"plugin": "latency", "config": {{"delay_ms": {ms}}}}}"#)
}
const RATE: &str =
    r#"{"plugin": "rate", "config": {"rate_bps": 10000000000, "burst_bytes": 100000}}"#;

fn chain(stages: &[&str]) -> String {
    format!(r#"{{"ingress": [{}], "egress": []}}"#, stages.join(", "))
}

#[test]
fn every_kind_of_change_loses_nothing_and_keeps_order() {
    let count = 20_000; // 2 s of traffic
    let (mut net, mut loader) = network(count);
    let mut clock = VirtualClock::default();
    let l100 = latency(100);
    let l101 = latency(101);
    let flows = format!(
        r#"{{"ingress": [{l101}], "egress": [],
            "flows": [{{"label": "udp", "match": {{"protocol": "udp"}}, "ingress": [{l101}]}}]}}"#
    );
    // Startup: from nothing to one 100 ms stage.
    let c = applied(net.apply(plan_of(&chain(&[&l100])), &mut loader));
    assert_eq!(c.added, [id(None, "latency")]);
    assert_eq!(net.generation(), 1);
    let mut step = |net: &mut Network, at_ms: u64, spec: &str| -> Changes {
        clock.run(&mut net.engine, at_ms * MS).expect("progress");
        let held = net.engine.packets_in_flight();
        assert!(held > 0, "packets are in flight at {at_ms} ms");
        applied(net.apply(plan_of(spec), &mut loader))
    };
    // Unchanged: nothing is touched.
    let c = step(&mut net, 200, &chain(&[&l100]));
    assert_eq!((c.kept.len(), c.swapped.len()), (1, 0));
    assert!(c.relinked.is_empty() && c.added.is_empty() && c.removed.is_empty());
    // Swapped in place, state handed over: 100 → 101 ms.
    let c = step(&mut net, 400, &chain(&[&l101]));
    assert_eq!(c.swapped, [(id(None, "latency"), Handover::State)]);
    assert!(c.relinked.is_empty());
    // Added in front.
    let c = step(&mut net, 600, &chain(&[RATE, &l101]));
    assert_eq!((c.added.clone(), c.kept.len()), (vec![id(None, "rate")], 1));
    assert_eq!(c.relinked, [Direction::Ingress]);
    // Reordered: both kept, relinked; the latency stage's held packets stay in it.
    let c = step(&mut net, 800, &chain(&[&l101, RATE]));
    assert_eq!((c.kept.len(), c.added.len(), c.removed.len()), (2, 0, 0));
    assert_eq!(c.relinked, [Direction::Ingress]);
    // Removed: the shaper goes.
    let c = step(&mut net, 1000, &chain(&[&l101]));
    assert_eq!(c.removed, [id(None, "rate")]);
    // A flow added: its stage is new, the default chain's stage is kept.
    let c = step(&mut net, 1200, &flows);
    assert_eq!(c.added, [id(Some("udp"), "latency")]);
    assert_eq!(c.kept, [id(None, "latency")]);
    // …and removed again: its held packets go on to the sink.
    let c = step(&mut net, 1400, &chain(&[&l101]));
    assert_eq!(c.removed, [id(Some("udp"), "latency")]);
    assert!(c.moved_packets > 0, "the flow's stage held packets");
    assert_eq!(net.generation(), 8);

    clock.run(&mut net.engine, 3_000 * MS).expect("progress");
    let sink = net
        .engine
        .app_mut::<Sink>(net.ports(Direction::Ingress).unwrap().sink);
    let got = &sink.unwrap().received;
    assert_eq!(got.len() as u64, count, "no packet lost across 7 changes");
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq), "order kept");
    // The first packets had 100 ms, the last 101 ms.
    assert_eq!(got[0].ts_ns - got[0].seq * INTERVAL, 100 * MS);
    let last = got.last().unwrap();
    assert_eq!(last.ts_ns - last.seq * INTERVAL, 101 * MS);
    let snap = net.snapshot();
    let d = &snap.directions[0];
    assert_eq!(
        (d.rx_packets, d.tx_packets, d.drops.total()),
        (count, count, 0)
    );
}

#[test]
fn counters_stay_cumulative_when_a_stage_goes() {
    let count = 5_000;
    let (mut net, mut loader) = network(count);
    let mut clock = VirtualClock::default();
    let lossy = r#"{"ingress": [{"plugin": "loss", "config": {"loss_ratio": 0.5}}], "egress": []}"#;
    applied(net.apply(plan_of(lossy), &mut loader));
    clock.run(&mut net.engine, 250 * MS).unwrap();
    let before = net.snapshot().directions[0].drops.total();
    assert!(before > 1000, "the loss stage dropped {before}");
    let c = applied(net.apply(plan_of(r#"{"ingress": [], "egress": []}"#), &mut loader));
    assert_eq!(c.removed.len(), 1);
    clock.run(&mut net.engine, 1_000 * MS).unwrap();
    let d = &net.snapshot().directions[0];
    assert_eq!(
        d.drops.total(),
        before,
        "the removed stage's drops still count"
    );
    assert_eq!(d.rx_packets, count);
    assert_eq!(d.tx_packets + d.drops.total(), count);
}

#[test]
fn a_refused_change_changes_nothing() {
    let (mut net, mut loader) = network(1000);
    applied(net.apply(plan_of(&chain(&[&latency(5)])), &mut loader));
    let bad =
        r#"{"ingress": [{"plugin": "latency", "config": {"delay_ms": "soon"}}], "egress": []}"#;
    let r = net.apply(plan_of(bad), &mut loader);
    match &r.outcome {
        Outcome::Refused(e) => {
            assert_eq!(e.field.as_deref(), Some("ingress/default/latency"));
            assert!(e.message.contains("invalid config"), "{e}");
        }
        Outcome::Applied(_) => panic!("a bad config was applied"),
    }
    assert_eq!(r.generation, 1, "the running generation is unchanged");
    VirtualClock::default()
        .run(&mut net.engine, 500 * MS)
        .unwrap();
    let sink = net.ports(Direction::Ingress).unwrap().sink;
    let got = &net.engine.app_mut::<Sink>(sink).unwrap().received;
    assert_eq!(got.len(), 1000);
    assert!(got.iter().all(|r| r.ts_ns - r.seq * INTERVAL == 5 * MS));
}

#[test]
fn stage_names_may_repeat_across_chains() {
    // The review's R3: a default-chain stage and a flow's stage of the same name (and
    // with compat shapes, the same plugin in every flow) are different stages.
    let spec = r#"{"ingress": [{"plugin": "latency", "name": "dns", "config": {"delay_ms": 1}}], "egress": [],
        "flows": [{"label": "dns", "match": {"protocol": "udp"},
                   "ingress": [{"plugin": "latency", "name": "dns", "config": {"delay_ms": 2}}]}]}"#;
    let (mut net, mut loader) = network(100);
    let c = applied(net.apply(plan_of(spec), &mut loader));
    assert_eq!(c.added.len(), 2);
    VirtualClock::default()
        .run(&mut net.engine, 100 * MS)
        .unwrap();
    let sink = net.ports(Direction::Ingress).unwrap().sink;
    let got = &net.engine.app_mut::<Sink>(sink).unwrap().received;
    assert_eq!(got.len(), 100);
    // Every packet is UDP: the flow's 2 ms.
    assert!(got.iter().all(|r| r.ts_ns - r.seq * INTERVAL == 2 * MS));
}

/// A plugin whose init takes ≥ 50 ms is prepared on another thread while the engine
/// thread keeps breathing: no breath waits for it, and the commit is quick.
#[test]
fn a_slow_init_does_not_hold_up_the_engine_thread() {
    let testbed = registry::test_only_path("testbed").expect("testbed is built");
    let (mut net, mut loader) = network(u64::MAX);
    applied(net.apply(plan_of(&chain(&[&latency(1)])), &mut loader));
    // How much work makes init take ≥ 50 ms here: time instances (after a first
    // prepare that compiles the module, so only init is timed).
    let spin = 20_000_000u64;
    let spec = |spin: u64| {
        format!(
            r#"{{"ingress": [{}, {{"plugin": {testbed:?}, "config": {{"init_spin": {spin}}}}}], "egress": []}}"#,
            latency(1)
        )
    };
    prepare(&net.view(), plan_of(&spec(0)), &mut loader).expect("prepares");
    let mut spin_needed = spin;
    loop {
        let t = Instant::now();
        let p = prepare(&net.view(), plan_of(&spec(spin_needed)), &mut loader).expect("prepares");
        drop(p);
        if t.elapsed() >= Duration::from_millis(60) {
            break;
        }
        spin_needed *= 2;
        assert!(spin_needed < 1 << 40, "init never got slow");
    }
    let view = net.view();
    let plan = plan_of(&spec(spin_needed));
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let t = Instant::now();
        let p = prepare(&view, plan, &mut loader);
        tx.send(()).unwrap();
        (p, t.elapsed())
    });
    // The engine thread: breathe at virtual time, 1 ms per breath, and time each breath.
    let mut now = 0;
    let mut worst = Duration::ZERO;
    let mut breaths = 0;
    while rx.try_recv().is_err() {
        now += MS;
        let t = Instant::now();
        net.engine.breathe(now);
        worst = worst.max(t.elapsed());
        breaths += 1;
    }
    let (prepared, took) = worker.join().unwrap();
    let prepared = prepared.expect("the slow plugin is valid");
    assert!(took >= Duration::from_millis(50), "init took {took:?}");
    let t = Instant::now();
    let c = applied(net.commit(prepared));
    let commit = t.elapsed();
    assert_eq!(c.added.len(), 1);
    eprintln!("prepare {took:?} while the engine breathed {breaths} times (worst breath {worst:?}); commit {commit:?}");
    assert!(breaths > 10, "the engine kept breathing: {breaths}");
    assert!(worst < Duration::from_millis(20), "worst breath {worst:?}");
    assert!(commit < Duration::from_millis(20), "commit took {commit:?}");
}

/// The reliability report's F1: a chain holding packets (100 s of delay under a flood)
/// cannot take the pool from an unimpaired flow, nor from the other direction.
#[test]
fn a_holding_chain_cannot_starve_other_flows_or_the_other_direction() {
    use synthnet_io::pcap::{CaptureSink, CaptureSource};
    let frame = |sport: u16, seq: u64| {
        let mut f = synthnet_testkit::apps::udp_template(60);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[42..50].copy_from_slice(&seq.to_le_bytes());
        f
    };
    // Ingress: 70,000 packets from port 443 within 70 ms, then 100 DNS packets (port 53).
    let mut ingress: Vec<(u64, Vec<u8>)> =
        (0..70_000).map(|k| (k * 1_000, frame(443, k))).collect();
    ingress.extend((0..100).map(|k| (100 * MS + k * MS, frame(53, k))));
    // Egress: 100 packets meanwhile.
    let egress: Vec<(u64, Vec<u8>)> = (0..100).map(|k| (k * MS, frame(5678, k))).collect();
    let mut engine = Engine::new(PacketPool::with_large(65_536, 2032, 512, 65_600));
    let mut ports = vec![];
    for (dir, frames) in [(Direction::Ingress, ingress), (Direction::Egress, egress)] {
        let source = engine.add(Box::new(CaptureSource::new(frames)));
        let sink = engine.add(Box::new(CaptureSink::default()));
        ports.push((dir, Ports { source, sink }));
    }
    let mut net = Network::new(engine, ports);
    let mut loader = Loader::new(common::runtime());
    let spec = r#"{"ingress": [{"plugin": "latency", "config": {"delay_ms": 100000}}], "egress": [],
        "flows": [{"label": "dns", "match": {"protocol": "udp", "port_min": 53, "port_max": 53}}]}"#;
    applied(net.apply(plan_of(spec), &mut loader));
    VirtualClock::default()
        .run(&mut net.engine, 300 * MS)
        .unwrap();
    let out = |net: &mut Network, d| {
        let sink = net.ports(d).unwrap().sink;
        std::mem::take(&mut net.engine.app_mut::<CaptureSink>(sink).unwrap().out)
    };
    let dns = out(&mut net, Direction::Ingress)
        .iter()
        .filter(|(_, f)| f[34..36] == 53u16.to_be_bytes())
        .count();
    assert_eq!(dns, 100, "every packet of the unimpaired flow");
    assert_eq!(
        out(&mut net, Direction::Egress).len(),
        100,
        "the other direction"
    );
    let snap = net.snapshot();
    let held = snap.directions[0].held;
    assert!(
        held > 20_000 && held < 30_000,
        "the delayed chain holds its share: {held}"
    );
    assert!(
        snap.directions[0]
            .drops
            .get(synthnet_core::DropCause::HoldFull)
            > 0
    );
}

/// F9 of the review: a plugin whose snapshot fails made every later reload of it be
/// refused ("snapshot of the running instance failed"). Now the change applies, and the
/// report says the state could not be handed over.
#[test]
fn a_snapshot_that_fails_never_blocks_a_change() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repro");
    let dir = std::env::temp_dir().join(format!("synthnet-f9-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wasm = dir.join("p.wasm");
    let spec = format!(
        r#"{{"ingress": [{{"plugin": "{}", "config": {{}}}}]}}"#,
        wasm.display()
    );
    let (mut net, mut loader) = network(0);
    for (file, round) in [
        ("09_state_ok.wat", 0),
        ("09_snap_huge.wat", 1),
        ("09_state_ok.wat", 2),
    ] {
        std::fs::write(&wasm, wat::parse_file(fixtures.join(file)).unwrap()).unwrap();
        let c = applied(net.apply(plan_of(&spec), &mut loader));
        if round == 2 {
            // The running (snap_huge) instance cannot give its state: the new one starts
            // without it, and the change goes through.
            assert!(
                c.swapped
                    .iter()
                    .any(|(_, h)| matches!(h, Handover::Failed(_))),
                "{c:?}"
            );
        }
    }
    assert_eq!(net.generation(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}
