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

/// The CPU time the calling thread has used.
fn thread_cpu() -> std::time::Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(std::time::Duration::from)
        .unwrap()
}

/// A call's deadline is CPU the plugin used, not time that passed: a valid plugin whose
/// init needs ~0.3 s of CPU, run on a CPU shared with four busy threads (so it takes
/// ~1.5 s of wall time, past the 1 s setup deadline), still starts. Without CPU
/// accounting this failed with "ran past its CPU deadline" on any loaded machine.
#[test]
fn a_valid_plugin_on_a_crowded_cpu_is_not_cut_off() {
    use nix::sched::{sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    // Measure the init's speed alone: rounds per CPU millisecond (the module compiled
    // first, outside the measurement).
    let probe = 20_000_000u64;
    let factory = testbed(&format!(r#"{{"mode": "pass", "init_spin": {probe}}}"#));
    let t0 = thread_cpu();
    factory.instantiate(1).expect("a short init starts");
    let per_ms = probe as f64 / (thread_cpu() - t0).as_secs_f64() / 1e3;
    let rounds = (per_ms * 300.0) as u64;
    // Everything on one CPU: this thread and four spinners.
    let mut one = CpuSet::new();
    one.set(0).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                sched_setaffinity(Pid::from_raw(0), &one).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    sched_setaffinity(Pid::from_raw(0), &one).unwrap();
    let (wall, cpu) = (Instant::now(), thread_cpu());
    let r = testbed(&format!(r#"{{"mode": "pass", "init_spin": {rounds}}}"#)).instantiate(2);
    let (wall, cpu) = (wall.elapsed(), thread_cpu() - cpu);
    stop.store(true, Ordering::Relaxed);
    for s in spinners {
        s.join().unwrap();
    }
    assert!(
        wall > Duration::from_millis(1000),
        "the CPU was not crowded enough to test anything: {wall:?} of wall time for {cpu:?} of CPU"
    );
    if let Err(e) = r {
        panic!("a valid init ({cpu:?} of CPU, {wall:?} of wall time) was cut off: {e}");
    }
    // A plugin that never stops is still cut off after its budget of CPU (the loop
    // tests above), and so is an init that needs more than the budget.
    let t0 = thread_cpu();
    let e = testbed(&format!(
        r#"{{"mode": "pass", "init_spin": {}}}"#,
        (per_ms * 3000.0) as u64
    ))
    .instantiate(3)
    .err()
    .expect("an init needing 3 s of CPU is cut off at 1 s");
    let used = thread_cpu() - t0;
    assert!(
        used < Duration::from_millis(1500),
        "cut off only after {used:?} of CPU"
    );
    assert!(e.to_string().contains("CPU deadline"), "{e}");
}
