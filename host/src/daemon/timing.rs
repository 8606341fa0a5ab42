//! How the engine thread waits for its next deadline (a held packet's departure, a
//! plugin timer, a scheduled step): the `--timing` knob ([`Timing`]) and the [`Pacer`]
//! that turns "the next deadline is at T" into "breathe again now" or "sleep until T′".
//!
//! Where the time goes. A timer wake-up on this kind of machine (a VM, `haltpoll` idle
//! driver, TSC clock, timer slack 1 ns) comes 15–40 µs after its time at the median,
//! whichever way the sleep is asked for (`ppoll` with a relative timeout, a `timerfd`
//! armed with `TFD_TIMER_ABSTIME`, `clock_nanosleep(TIMER_ABSTIME)`), and just as late
//! when the CPU is kept out of idle by a spinning neighbour: the cost is the virtual
//! timer interrupt's path into the guest, not the sleep call and not the idle exit.
//! On top of that floor come the scheduler's delays on a busy machine (p99 in the
//! milliseconds with two compilers running on two cores), which no choice of timer
//! removes. Each wake-up also costs 13–23 µs of CPU. (Measured with a small C program
//! sleeping 50 µs, 200 µs and 1 ms 2,000 times each way; see the issue 23 report.)
//!
//! So the pacer sleeps on an absolute time (a `timerfd` in the same `ppoll` as the
//! rings: no drift from the time spent between reading the clock and sleeping), wakes
//! early by a measure of the lateness, and breathes (spins) the rest of the way only
//! when the deadline is closer than a wake-up could make. The three settings differ in
//! which measure of lateness they trust, and in whether departures close together share
//! one wake-up:
//!
//! - [`Timing::Precise`]: wakes early by the *mean* lateness (a moving average, at most
//!   [`PRECISE_MAX_EARLY_NS`]) and spins the rest; a scheduled step is woken for
//!   [`PRECISE_STEP_WAKE_NS`] early besides. Departures leave within one breath of their
//!   time whenever the wake-up is no later than usual; it spins longest.
//! - [`Timing::Balanced`] (default): wakes early by the *median* lateness of the last
//!   [`WINDOW`] wake-ups (at most [`BALANCED_MAX_EARLY_NS`]), so it spins at most that
//!   long, and half the wake-ups spin not at all; a departure is late by what the
//!   wake-up's lateness exceeds that median by.
//! - [`Timing::Lean`]: never wakes early. A deadline is rounded up to the next multiple
//!   of [`LEAN_GRID_NS`], so departures due within one slot share one wake-up; it spins
//!   only when the deadline is closer than the least lateness seen (a sleep would cost
//!   more CPU and come later than breathing).
//!
//! Every setting keeps departures in order and never sends one early (the engine
//! releases a packet only once the clock has passed its time). What a setting adds to
//! the OS's own lateness is at most [`Timing::added_bound_ns`]; `host/tests/timing.rs`
//! checks that on a simulated clock whose wake-ups come late by a seeded, heavy-tailed
//! amount.

/// Wake-ups remembered for the lateness measures.
pub const WINDOW: usize = 32;
/// `precise`: the most a wake-up is moved forward (the rest is spent breathing).
pub const PRECISE_MAX_EARLY_NS: u64 = 500_000;
/// `precise`: how long before a scheduled step the engine stops sleeping and breathes
/// until its time (besides waking early by the timer's measured lateness): a thread that
/// is already running takes the step on time. Short on purpose: on a busy machine the
/// scheduler takes the CPU from a thread that spins long (2 ms of spinning made steps up
/// to 2.8 ms late under a load of 9 on 2 cores; 300 µs kept them under 0.4 ms).
pub const PRECISE_STEP_WAKE_NS: u64 = 300_000;
/// `balanced`: the most a wake-up is moved forward. Twice the slowest median lateness
/// measured here under load: a median above it is the scheduler's, not the timer's, and
/// spinning against it would only give the CPU away.
pub const BALANCED_MAX_EARLY_NS: u64 = 100_000;
/// `lean`: deadlines are rounded up to a multiple of this, so departures within one
/// slot share a wake-up. With the OS's lateness (median 15–40 µs here) a departure
/// stays well within 1 ms of its time.
pub const LEAN_GRID_NS: u64 = 250_000;
/// `lean`: the most lateness it spins against (a deadline closer than the least
/// lateness seen is breathed towards, never longer than this).
pub const LEAN_MAX_SPIN_NS: u64 = 50_000;

/// The longest a sleep may leave the receive rings unwatched: a 4096-frame ring holds
/// 2 ms of 2 Mpps, more than the bridge forwards.
pub const DEAF_MAX_NS: u64 = 2_000_000;
/// What an unwatched sleep keeps clear of the least hold: room for the wake-up's own
/// lateness (its median here is 15–40 µs).
pub const DEAF_MARGIN_NS: u64 = 100_000;

/// The least time every packet arriving now is held before anything leaves the chains
/// it enters, over every chain of both directions (ns): the sum of the `latency` stages
/// a chain starts with (among leading `latency` and `jitter` stages, which time a
/// packet from its arrival stamp and only ever hold it). 0 when a chain starts with
/// anything else: then a packet may leave at once.
pub fn min_hold_ns(plan: &synthnet_config::Plan) -> u64 {
    use synthnet_runtime::PluginRef;
    synthnet_core::Direction::BOTH
        .iter()
        .flat_map(|&d| plan.chains(d).map(|(_, stages)| stages))
        .map(|stages| {
            let mut hold = 0u64;
            for s in stages {
                match &s.plugin {
                    PluginRef::Builtin(n) if n == "latency" => {
                        let ms = s.config.get("delay_ms").and_then(|v| v.as_f64());
                        match ms {
                            Some(ms) if ms >= 0.0 => hold += (ms * 1e6) as u64,
                            _ => break,
                        }
                    }
                    PluginRef::Builtin(n) if n == "jitter" => {}
                    _ => break,
                }
            }
            hold
        })
        .min()
        .unwrap_or(0)
}

/// How hard the engine works to send packets at exactly their time.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Timing {
    /// Spin up to 500 µs before each deadline: on time even when wake-ups are late.
    Precise,
    /// Spin at most the median wake-up lateness (≤ 100 µs): on time within tens of µs.
    #[default]
    Balanced,
    /// Never spin to be early; departures within 250 µs share a wake-up (within 1 ms).
    Lean,
}

impl Timing {
    pub const ALL: [Timing; 3] = [Timing::Precise, Timing::Balanced, Timing::Lean];

    pub fn name(self) -> &'static str {
        match self {
            Timing::Precise => "precise",
            Timing::Balanced => "balanced",
            Timing::Lean => "lean",
        }
    }

    /// The most this setting adds to a departure's lateness beyond the OS's own
    /// wake-up lateness (and one breath).
    pub fn added_bound_ns(self) -> u64 {
        match self {
            Timing::Precise | Timing::Balanced => 0,
            Timing::Lean => LEAN_GRID_NS,
        }
    }

    /// What the setting promises, in one line (for `check` and the startup log).
    pub fn promise(self) -> &'static str {
        match self {
            Timing::Precise => {
                "wakes early by the mean timer lateness (≤ 500 µs; steps 300 µs more) and spins to each deadline: departures within a breath of their time unless a wake-up is later than usual; most CPU"
            }
            Timing::Balanced => {
                "wakes early by the median timer lateness (≤ 100 µs) and spins at most that: departures late only by a wake-up's lateness beyond the median (tens of µs here); the default"
            }
            Timing::Lean => {
                "never wakes early; departures due within the same 250 µs share one wake-up: late by ≤ 250 µs plus the OS's wake-up lateness, within 1 ms unless the machine is overloaded; least CPU"
            }
        }
    }
}

impl std::fmt::Display for Timing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What to do about the next deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Breathe again at once: the deadline is closer than a sleep could make it.
    Now,
    /// Sleep until this engine time (ns) unless a packet or a control message comes first.
    At(u64),
}

/// The wake-up policy of one [`Timing`] setting, and what it has measured of this
/// machine's timer lateness.
#[derive(Clone, Debug)]
pub struct Pacer {
    timing: Timing,
    /// Lateness of the last [`WINDOW`] timer wake-ups (ns), oldest overwritten first.
    late: [u64; WINDOW],
    /// Samples taken (the first `min(taken, WINDOW)` of `late` are valid).
    taken: usize,
    /// `precise`: the moving average of lateness.
    mean_ns: u64,
    /// How early the next wake-up is set, from the samples.
    early_ns: u64,
    /// The least lateness in the window: closer deadlines are breathed towards.
    floor_ns: u64,
}

impl Pacer {
    pub fn new(timing: Timing) -> Pacer {
        // Before any measurement: the floor measured here, 15 µs.
        let first = 15_000;
        let mut p = Pacer {
            timing,
            late: [first; WINDOW],
            taken: 0,
            mean_ns: 50_000,
            early_ns: 0,
            floor_ns: first,
        };
        p.update();
        p
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// How early wake-ups are set now (ns).
    pub fn early_ns(&self) -> u64 {
        self.early_ns
    }

    /// The next deadline is `deadline` (engine ns; a scheduled step's if `step`), it is
    /// `now`: breathe again, or sleep until when?
    pub fn plan(&self, now: u64, deadline: u64, step: bool) -> Wake {
        match self.timing {
            Timing::Precise => {
                let deadline = if step {
                    deadline.saturating_sub(PRECISE_STEP_WAKE_NS)
                } else {
                    deadline
                };
                if deadline <= now.saturating_add(self.early_ns) {
                    Wake::Now
                } else {
                    Wake::At(deadline - self.early_ns)
                }
            }
            Timing::Balanced => {
                if deadline <= now.saturating_add(self.early_ns.max(self.floor_ns)) {
                    Wake::Now
                } else {
                    Wake::At(deadline - self.early_ns)
                }
            }
            Timing::Lean => {
                if deadline <= now.saturating_add(self.floor_ns.min(LEAN_MAX_SPIN_NS)) {
                    return Wake::Now;
                }
                // A step is taken at its time, not a slot later.
                if step {
                    return Wake::At(deadline);
                }
                Wake::At(deadline.div_ceil(LEAN_GRID_NS).saturating_mul(LEAN_GRID_NS))
            }
        }
    }

    /// Whether a sleep from `now` until `target` may leave the receive rings unwatched,
    /// when every arriving packet is held at least `hold_ns` ([`min_hold_ns`]): a packet
    /// that comes meanwhile is read at the wake-up, before it is due, and timed from its
    /// arrival stamp as if read at once. One wake-up fewer per packet; `precise` keeps
    /// watching (today's behaviour).
    pub fn may_ignore_arrivals(&self, now: u64, target: u64, hold_ns: u64) -> bool {
        self.timing != Timing::Precise
            && target.saturating_sub(now) <= hold_ns.saturating_sub(DEAF_MARGIN_NS).min(DEAF_MAX_NS)
    }

    /// A sleep set for `target` ended by its timer at `now`: learn how late it came.
    pub fn woke(&mut self, target: u64, now: u64) {
        // Beyond the largest early any setting uses, a wake-up measures the scheduler's
        // mood, not the timer: cap it so one stall does not move the estimate for long.
        let late = now.saturating_sub(target).min(PRECISE_MAX_EARLY_NS);
        self.late[self.taken % WINDOW] = late;
        self.taken += 1;
        self.mean_ns = (self.mean_ns * 7 + late) / 8;
        self.update();
    }

    fn update(&mut self) {
        let n = self.taken.clamp(1, WINDOW);
        let mut w = self.late;
        let w = &mut w[..n];
        w.sort_unstable();
        self.floor_ns = w[0];
        let median = w[n / 2];
        self.early_ns = match self.timing {
            Timing::Precise => self.mean_ns.min(PRECISE_MAX_EARLY_NS),
            Timing::Balanced => median.min(BALANCED_MAX_EARLY_NS),
            Timing::Lean => 0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_wakes_early_by_the_median_and_spins_no_longer() {
        let mut p = Pacer::new(Timing::Balanced);
        for l in [20_000, 30_000, 25_000, 900_000, 22_000] {
            p.woke(1_000_000, 1_000_000 + l);
        }
        // Median of the five: 25 µs; the 900 µs stall does not move it.
        assert_eq!(p.early_ns(), 25_000);
        assert_eq!(p.plan(0, 1_000_000, false), Wake::At(975_000));
        assert_eq!(p.plan(980_000, 1_000_000, false), Wake::Now);
    }

    #[test]
    fn balanced_early_is_capped() {
        let mut p = Pacer::new(Timing::Balanced);
        for _ in 0..WINDOW {
            p.woke(0, 400_000);
        }
        assert_eq!(p.early_ns(), BALANCED_MAX_EARLY_NS);
    }

    #[test]
    fn lean_shares_a_slot_and_never_wakes_early() {
        let p = Pacer::new(Timing::Lean);
        assert_eq!(p.plan(0, 1_000_001, false), Wake::At(1_250_000));
        assert_eq!(p.plan(0, 1_200_000, false), Wake::At(1_250_000));
        assert_eq!(p.plan(0, 1_250_000, false), Wake::At(1_250_000));
        // A step at its time.
        assert_eq!(p.plan(0, 1_000_001, true), Wake::At(1_000_001));
        // Closer than the least lateness: breathe.
        assert_eq!(p.plan(1_000_000, 1_010_000, false), Wake::Now);
    }

    #[test]
    fn precise_is_the_old_loop() {
        let mut p = Pacer::new(Timing::Precise);
        assert_eq!(p.early_ns(), 50_000);
        p.woke(0, 10_000_000);
        // (50 · 7 + 500) / 8 µs: a stall counts as 500 µs.
        assert_eq!(p.early_ns(), 106_250);
        assert_eq!(p.plan(0, 1_000_000, false), Wake::At(1_000_000 - 106_250));
        assert_eq!(
            p.plan(0, 1_000_000, true),
            Wake::At(1_000_000 - PRECISE_STEP_WAKE_NS - 106_250)
        );
    }
}
