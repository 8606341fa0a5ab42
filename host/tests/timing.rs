//! The `--timing` settings keep their promises: under each, held packets leave in order,
//! never early, and late by at most what the setting adds
//! ([`Timing::added_bound_ns`]) on top of the OS's own wake-up lateness — and a
//! scheduled step likewise.
//!
//! The bridge's loop is run here on a simulated clock: the engine (a wasm latency and
//! jitter chain) breathes as the bridge's does, the [`Pacer`] decides when to sleep
//! and when to breathe on, and every sleep ends late by a seeded, heavy-tailed amount
//! shaped like the wake-ups measured on a busy 2-core VM (mostly 12–40 µs, a quarter
//! up to 150 µs, one in twenty a stall of 0.5–3 ms). That tests the behaviour — which
//! wake-ups the loop asks for and what it does with a late one — without depending on
//! this machine's timer; the accuracy reached on real interfaces is
//! `synthnet bench-bridge --sweep`'s to show.

mod common;

use common::{wasm, within_budget, Line};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use synthnet::daemon::timing::{Pacer, Timing, Wake, LEAN_GRID_NS};

/// Time one breath takes on the simulated clock.
const BREATH_NS: u64 = 2_000;

/// A seeded lateness source (xorshift64*), shaped like the measured wake-ups.
struct Lateness(u64);

impl Lateness {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn sample(&mut self) -> u64 {
        let pick = self.next() % 100;
        let r = self.next();
        match pick {
            0..70 => 12_000 + r % 28_000,
            70..95 => 40_000 + r % 110_000,
            _ => 500_000 + r % 2_500_000,
        }
    }
}

/// What a simulated run saw.
struct Run {
    /// (sequence number, due time, departure time) in the order packets left.
    departures: Vec<(u64, u64, u64)>,
    /// For each breath's time, the lateness of the wake-up that led to it.
    wake_late: HashMap<u64, u64>,
    /// Every injected lateness.
    injected: Vec<u64>,
}

/// The bridge's loop over a 1 ms ± 1 ms chain, `count` packets `interval_ns` apart.
fn simulate(timing: Timing, interval_ns: u64, count: u64, seed: u64) -> Run {
    let mut line = Line::new(
        vec![
            ("latency", wasm("latency", r#"{"delay_ms": 1}"#)),
            (
                "jitter",
                wasm("jitter", r#"{"jitter_ms": 1, "strength": 1.0}"#),
            ),
        ],
        200,
        interval_ns,
        count,
    );
    let mut pacer = Pacer::new(timing);
    let mut late = Lateness(seed | 1);
    let mut now = 0u64;
    let mut last_late = 0u64;
    let mut wake_late = HashMap::new();
    let mut injected = Vec::new();
    loop {
        wake_late.insert(now, last_late);
        line.engine.breathe(now);
        if line.engine.links_busy() {
            now += BREATH_NS;
            continue;
        }
        let Some(deadline) = line.engine.next_deadline() else {
            break;
        };
        match pacer.plan(now, deadline, false) {
            Wake::Now => now += BREATH_NS,
            Wake::At(target) => {
                assert!(target > now, "{timing}: a sleep into the past");
                let l = late.sample();
                injected.push(l);
                now = target + l;
                last_late = l;
                pacer.woke(target, now);
            }
        }
    }
    let departures = line
        .received()
        .iter()
        .map(|r| (r.seq, r.ts_ns, r.now_ns))
        .collect();
    Run {
        departures,
        wake_late,
        injected,
    }
}

fn mean(v: impl Iterator<Item = u64>) -> f64 {
    let (s, n) = v.fold((0u64, 0u64), |(s, n), x| (s + x, n + 1));
    s as f64 / n.max(1) as f64
}

#[test]
fn every_timing_keeps_departures_in_order_and_within_its_bound() {
    let t0 = Instant::now();
    // 1 kpps and 10 kpps: departures a millisecond apart, and many within one slot.
    for (interval_ns, count) in [(1_000_000, 2_000), (100_000, 5_000)] {
        for timing in Timing::ALL {
            let run = simulate(timing, interval_ns, count, 0x5eed + interval_ns);
            assert_eq!(
                run.departures.len() as u64,
                count,
                "{timing}: every packet leaves"
            );
            // In order: the chain does not reorder, so neither may the loop.
            for w in run.departures.windows(2) {
                assert!(
                    w[0].0 < w[1].0 && w[0].1 <= w[1].1,
                    "{timing}: out of order: {w:?}"
                );
            }
            for &(seq, due, left) in &run.departures {
                assert!(left >= due, "{timing}: packet {seq} left early");
                let allowed = timing.added_bound_ns() + run.wake_late[&left] + BREATH_NS;
                assert!(
                    left - due <= allowed,
                    "{timing}: packet {seq} left {} ns late, more than the {} ns promised",
                    left - due,
                    allowed
                );
            }
            // Away from the OS's stalls (which hold back every departure due meanwhile,
            // whatever the setting), waking early makes up for part of the lateness.
            let fair = 150_000;
            let lateness = mean(
                run.departures
                    .iter()
                    .filter(|&&(_, _, left)| run.wake_late[&left] < fair)
                    .map(|&(_, due, left)| left - due),
            );
            let os = mean(run.injected.iter().copied().filter(|&l| l < fair));
            eprintln!(
                "{timing} at {} kpps: {} wake-ups, departures late by {:.1} µs on average (wake-ups {:.1} µs; stalls left out)",
                1_000_000 / interval_ns,
                run.injected.len(),
                lateness / 1e3,
                os / 1e3
            );
            match timing {
                Timing::Precise | Timing::Balanced => assert!(
                    lateness < os,
                    "{timing}: departures no earlier than the wake-ups ({lateness} ≥ {os} ns)"
                ),
                Timing::Lean => {}
            }
        }
    }
    within_budget(t0, Duration::from_secs(60));
}

#[test]
fn lean_shares_wake_ups_that_balanced_takes_one_by_one() {
    let t0 = Instant::now();
    // 10 kpps: about 2.5 departures per 250 µs slot.
    let lean = simulate(Timing::Lean, 100_000, 5_000, 7);
    let balanced = simulate(Timing::Balanced, 100_000, 5_000, 7);
    assert!(
        (lean.injected.len() as f64) < 0.7 * balanced.injected.len() as f64,
        "lean woke {} times, balanced {}",
        lean.injected.len(),
        balanced.injected.len()
    );
    // And stays within its slot plus the OS's lateness, which keeps it within 1 ms
    // unless the OS stalls.
    let worst_fair = lean
        .departures
        .iter()
        .filter(|&&(_, _, left)| lean.wake_late[&left] < 150_000)
        .map(|&(_, due, left)| left - due)
        .max()
        .unwrap_or(0);
    assert!(
        worst_fair <= LEAN_GRID_NS + 150_000 + BREATH_NS,
        "{worst_fair} ns"
    );
    within_budget(t0, Duration::from_secs(30));
}

#[test]
fn a_scheduled_step_is_taken_on_time_under_every_timing() {
    let t0 = Instant::now();
    let mut late = Lateness(99);
    for timing in Timing::ALL {
        let mut pacer = Pacer::new(timing);
        for k in 0..500u64 {
            // A step 1–50 ms ahead, nothing else due.
            let start = k * 100_000_000;
            let due = start + 1_000_000 + (late.next() % 49_000_000);
            let mut now = start;
            let mut last = 0;
            while now < due {
                match pacer.plan(now, due, true) {
                    Wake::Now => now += BREATH_NS,
                    Wake::At(t) => {
                        last = late.sample();
                        now = t + last;
                        pacer.woke(t, now);
                    }
                }
            }
            assert!(
                now - due <= last + BREATH_NS,
                "{timing}: a step {} ns late after a wake-up {last} ns late",
                now - due
            );
        }
    }
    within_budget(t0, Duration::from_secs(10));
}
