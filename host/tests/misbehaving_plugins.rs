//! A plugin that traps, loops forever, grows memory without bound or answers garbage
//! never takes the host down: its batch is dropped and counted, the instance is
//! restarted with backoff, and the other traffic keeps flowing.

mod common;
use common::{testbed, wasm};
use synthnet_core::clock::VirtualClock;
use synthnet_core::PacketPool;
use synthnet_core::{DropCause, Engine};
use synthnet_runtime::PluginApp;
use synthnet_testkit::apps::{Sink, Source};

const MS: u64 = 1_000_000;

/// Two lines in one engine: A through a testbed plugin in `mode`, B through a healthy
/// latency plugin. 300 ms of virtual time, one packet per 100 µs on each.
fn run(mode: &str, expect: DropCause) {
    let mut e = Engine::new(PacketPool::new(1 << 14, 2048));
    let n = 3_000;
    let src_a = e.add(Box::new(Source::new(100, 100_000, 0, n, 64)));
    let bad = PluginApp::instantiate(
        "bad",
        testbed(&format!(r#"{{"mode": "{mode}", "after": 500}}"#)),
        1,
        1 << 16,
    )
    .unwrap();
    let bad = e.add(Box::new(bad));
    let sink_a = e.add(Box::new(Sink::new(false)));
    e.chain(&[src_a, bad, sink_a]);
    let src_b = e.add(Box::new(Source::new(100, 100_000, 0, n, 64)));
    let good =
        PluginApp::instantiate("good", wasm("latency", r#"{"delay_ms": 1}"#), 2, 1 << 16).unwrap();
    let good = e.add(Box::new(good));
    let sink_b = e.add(Box::new(Sink::new(false)));
    e.chain(&[src_b, good, sink_b]);

    VirtualClock::default()
        .run(&mut e, 400 * MS)
        .expect("the engine makes progress");

    assert_eq!(
        e.app(sink_b).unwrap().counters().rx_packets,
        n,
        "{mode}: the healthy line lost nothing"
    );
    let app = e.app_mut::<PluginApp>(bad).unwrap();
    let health = app.health().clone();
    assert!(health.faults >= 2, "{mode}: faults {}", health.faults);
    assert!(health.restarts >= 1, "{mode}: restarted");
    let err = health.last_error.clone().unwrap_or_default();
    let counters = *e.app(bad).unwrap().counters();
    assert!(
        counters.dropped(expect) > 0,
        "{mode}: drops counted as {expect:?}: {counters:?}"
    );
    let delivered = e.app(sink_a).unwrap().counters().rx_packets;
    // Each fresh instance forwards 500 packets before misbehaving again.
    assert!(
        delivered >= 1000,
        "{mode}: forwarding resumed after restart ({delivered}); last error: {err}"
    );
    let accounted = delivered + counters.drops.total() + e.app(bad).unwrap().held() as u64;
    assert_eq!(accounted, n, "{mode}: every packet is delivered or counted");
    eprintln!(
        "{mode}: faults {} restarts {} delivered {delivered}; last error: {err}",
        health.faults, health.restarts
    );
}

#[test]
fn trap() {
    run("trap", DropCause::PluginFault);
}

#[test]
fn endless_loop_hits_the_cpu_deadline() {
    run("loop", DropCause::PluginFault);
}

#[test]
fn unbounded_memory_growth_hits_the_cap() {
    run("grow", DropCause::PluginFault);
}

#[test]
fn garbage_unknown_packet_id() {
    run("bad_id", DropCause::BadVerdict);
}

#[test]
fn garbage_output_port() {
    run("bad_port", DropCause::BadVerdict);
}

#[test]
fn garbage_offset_outside_the_region() {
    run("bad_offset", DropCause::BadVerdict);
}
