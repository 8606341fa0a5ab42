//! The built-in QoS plugins, in wasm, through the real engine on a virtual clock:
//! their statistics must match their configuration.

mod common;
use common::{wasm, within_3_sigma, Line};

const MS: u64 = 1_000_000;

#[test]
fn latency_is_exact_and_keeps_order() {
    let interval = 100_000;
    let mut line = Line::new(
        vec![("latency", wasm("latency", r#"{"delay_ms": 20}"#))],
        64,
        interval,
        10_000,
    );
    line.run_until(2_000 * MS);
    let got = line.received().to_vec();
    assert_eq!(got.len(), 10_000);
    for (k, r) in got.iter().enumerate() {
        assert_eq!(r.seq, k as u64, "order kept");
        assert_eq!(
            r.ts_ns,
            k as u64 * interval + 20 * MS,
            "packet {k} delayed exactly 20 ms"
        );
        assert_eq!(
            r.now_ns, r.ts_ns,
            "delivered in the breath at its departure time"
        );
    }
}

#[test]
fn loss_ratio_within_three_sigma() {
    let n = 100_000;
    let mut line = Line::new(
        vec![("loss", wasm("loss", r#"{"loss_ratio": 0.1}"#))],
        64,
        1_000,
        n,
    );
    line.run_until(1_000 * MS);
    let delivered = line.received().len() as u64;
    let lost = n - delivered;
    assert!(within_3_sigma(lost, n, 0.1), "lost {lost} of {n}");
    let counters = line.plugin(0).plugin_counters();
    assert_eq!(
        counters.iter().find(|(k, _)| k == "lost").map(|(_, v)| *v),
        Some(lost)
    );
}

#[test]
fn shaper_holds_the_rate_without_a_startup_burst() {
    // 1000-byte frames offered at 20 Mbit/s into a 10 Mbit/s shaper with a 3000-byte
    // bucket and a queue big enough never to drop.
    let (rate_bps, burst) = (10_000_000u64, 3000u64);
    let cfg =
        format!(r#"{{"rate_bps": {rate_bps}, "burst_bytes": {burst}, "queue_bytes": 100000000}}"#);
    let mut line = Line::new(vec![("rate", wasm("rate", &cfg))], 1000, 400_000, 5_000);
    line.run_until(10_000 * MS);
    let got = line.received().to_vec();
    assert_eq!(got.len(), 5_000, "a shaper queues, it does not drop");
    // Never more than the bucket ahead of the rate: bytes(≤ t) ≤ burst + rate·t.
    let mut bytes = 0u64;
    for r in &got {
        bytes += r.len as u64;
        let allowed = burst as f64 + rate_bps as f64 / 8.0 * r.ts_ns as f64 / 1e9;
        assert!(
            bytes as f64 <= allowed + 1.0,
            "{bytes} bytes by {} ns > {allowed}",
            r.ts_ns
        );
    }
    // Backlogged from the start: measure from the 10th packet to the last.
    let (a, b) = (&got[10], &got[got.len() - 1]);
    let bits = (got[11..].iter().map(|r| r.len as u64).sum::<u64>() * 8) as f64;
    let rate = bits / ((b.ts_ns - a.ts_ns) as f64 / 1e9);
    assert!(
        (rate / rate_bps as f64 - 1.0).abs() < 0.01,
        "measured {rate} bit/s"
    );
    // Order is kept.
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[test]
fn shaper_queue_bound_drops_the_excess() {
    // 10 000 bytes of queue at 1 Mbit/s is 80 ms of waiting; offer 4× the rate.
    let cfg = r#"{"rate_bps": 1000000, "burst_bytes": 1500, "queue_bytes": 10000}"#;
    let mut line = Line::new(vec![("rate", wasm("rate", cfg))], 500, 1_000_000, 2_000);
    line.run_until(20_000 * MS);
    let delivered = line.received().len() as u64;
    let drops = line
        .plugin(0)
        .plugin_counters()
        .iter()
        .find(|(k, _)| k == "queue_drops")
        .map(|(_, v)| *v)
        .unwrap();
    assert!(
        drops > 0 && drops + delivered == 2_000,
        "drops {drops}, delivered {delivered}"
    );
    // No packet waited longer than the queue bound allows (80 ms + one frame).
    for r in line.received() {
        let wait = r.ts_ns - r.seq * 1_000_000;
        assert!(wait <= 84 * MS, "packet {} waited {wait} ns", r.seq);
    }
}

#[test]
fn jitter_strength_fraction_within_three_sigma() {
    let n = 50_000;
    let cfg = r#"{"jitter_ms": 5, "strength": 0.3, "reorder": true}"#;
    let mut line = Line::new(vec![("jitter", wasm("jitter", cfg))], 64, 10_000, n);
    line.run_until(2_000 * MS);
    let got = line.received().to_vec();
    assert_eq!(got.len() as u64, n);
    let mut delayed = 0;
    for r in &got {
        let extra = r.ts_ns - r.seq * 10_000;
        assert!(extra <= 5 * MS);
        delayed += (extra > 0) as u64;
    }
    assert!(within_3_sigma(delayed, n, 0.3), "delayed {delayed} of {n}");
    assert!(
        got.windows(2).any(|w| w[0].seq > w[1].seq),
        "reorder on lets packets overtake"
    );
}

#[test]
fn without_reorder_the_whole_chain_keeps_input_order() {
    let chain = vec![
        (
            "rate",
            wasm("rate", r#"{"rate_bps": 50000000, "queue_bytes": 10000000}"#),
        ),
        ("loss", wasm("loss", r#"{"loss_ratio": 0.05}"#)),
        ("latency", wasm("latency", r#"{"delay_ms": 10}"#)),
        (
            "jitter",
            wasm("jitter", r#"{"jitter_ms": 8, "strength": 0.5}"#),
        ),
    ];
    let mut line = Line::new(chain, 200, 20_000, 20_000);
    line.run_until(5_000 * MS);
    let got = line.received();
    assert!(got.len() > 18_000);
    assert!(
        got.windows(2).all(|w| w[0].seq < w[1].seq),
        "output order equals input order"
    );
    assert!(got.iter().all(|r| r.ts_ns >= r.seq * 20_000 + 10 * MS));
}

/// An engine that stalled (a starved bridge) catches up: packets whose departure time
/// has already passed, more than the output link holds, wait in the delay line and
/// leave on the next breaths, in order — none is dropped on the full link.
#[test]
fn a_stalled_engine_catches_up_without_drops() {
    use synthnet_core::Engine;
    use synthnet_core::PacketPool;
    use synthnet_testkit::apps::Source;
    let mut engine = Engine::new(PacketPool::new(1 << 16, 2048));
    // One packet every µs from t = 0; up to 2048 per breath.
    let source = engine.add(Box::new(Source::new(64, 1_000, 0, 6_000, 2048)));
    let mut line = Line::finish(
        engine,
        source,
        vec![("latency", wasm("latency", r#"{"delay_ms": 1}"#))],
    );
    // At 0.5 ms: 500 packets go into the 1 ms delay line.
    line.engine.breathe(MS / 2);
    // The engine stalls until 10 ms: the 500 are due, and 2048 more arrive already
    // late. Together they are more than the 2048-packet output link takes in one go.
    let mut now = 10 * MS;
    for _ in 0..64 {
        line.engine.breathe(now);
        now += 1_000;
    }
    line.now = now;
    line.run_until(100 * MS);
    let got = line.received().to_vec();
    assert_eq!(got.len(), 6_000, "every packet arrives");
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq), "in order");
    for (id, app) in line.engine.apps() {
        assert_eq!(app.counters().drops.total(), 0, "{id:?} dropped packets");
    }
}
