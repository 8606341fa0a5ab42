//! The timer (`Batch::wake_at`), through the `Harness` (the host's call order: a due
//! timer ticks before that breath's packets): a timer stays armed across batches until
//! it fires; the earliest request wins; the past and `now` are ignored; `cancel_wake`
//! disarms; it is disarmed before `tick`, which may arm it again; and what the plugin
//! leaves in the header's `wake_at_ns` is what the host reads.

use synthnet_sdk::{Access, Batch, Harness, Plugin};

/// Each packet is a command: byte 0 is 1 = arm at the u64 in bytes 1..9, 2 = cancel,
/// anything else = nothing. Ticks are recorded; with `period_ns` a tick re-arms.
struct Timer {
    ticks: Vec<u64>,
    period_ns: u64,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Config {
    period_ns: u64,
}

impl Plugin for Timer {
    type Config = Config;
    const ACCESS: Access = Access::Headers(16);

    fn new(c: Config, _: u64) -> Result<Self, String> {
        Ok(Timer {
            ticks: Vec::new(),
            period_ns: c.period_ns,
        })
    }

    fn process(&mut self, batch: &mut Batch<'_>) {
        for i in 0..batch.len() {
            let d = batch.data(i);
            let at = u64::from_le_bytes(d[1..9].try_into().unwrap());
            match d[0] {
                1 => batch.wake_at(at),
                2 => batch.cancel_wake(),
                _ => {}
            }
            batch.forward(i);
        }
    }

    fn tick(&mut self, batch: &mut Batch<'_>) {
        assert_eq!(batch.pending_wake(), None, "disarmed before tick");
        self.ticks.push(batch.now_ns());
        if self.period_ns > 0 {
            batch.wake_at(batch.now_ns() + self.period_ns);
        }
    }
}

fn cmd(op: u8, at: u64) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0] = op;
    f[1..9].copy_from_slice(&at.to_le_bytes());
    f
}

fn harness(config: &str) -> Harness<Timer> {
    Harness::<Timer>::new(config, 1).unwrap()
}

#[test]
fn an_armed_timer_survives_later_batches_until_it_fires() {
    let mut h = harness("{}");
    h.push(&cmd(1, 1_000), 0);
    h.run(0);
    assert_eq!(h.wake_at(), Some(1_000));
    // Batches that say nothing of the timer leave it armed.
    for now in [100, 200, 999] {
        h.push(&cmd(0, 0), now);
        h.run(now);
        assert_eq!(h.wake_at(), Some(1_000), "at {now}");
    }
    assert!(h.plugin().ticks.is_empty());
    // Due: it ticks (before the breath's packets), once, and is then disarmed.
    h.push(&cmd(0, 0), 1_000);
    h.run(1_000);
    assert_eq!(h.plugin().ticks, vec![1_000]);
    assert_eq!(h.wake_at(), None);
    h.run(5_000);
    assert_eq!(
        h.plugin().ticks,
        vec![1_000, 5_000],
        "an explicit tick still ticks"
    );
    assert_eq!(h.wake_at(), None);
}

#[test]
fn the_earliest_request_wins_and_cancel_disarms() {
    let mut h = harness("{}");
    h.push(&cmd(1, 5_000), 0);
    h.push(&cmd(1, 3_000), 0);
    h.push(&cmd(1, 9_000), 0);
    h.run(0);
    assert_eq!(h.wake_at(), Some(3_000));
    // A later request in a later batch does not postpone it either.
    h.push(&cmd(1, 4_000), 10);
    h.run(10);
    assert_eq!(h.wake_at(), Some(3_000));
    // Cancel, then arm later: the way to postpone.
    h.push(&cmd(2, 0), 20);
    h.push(&cmd(1, 8_000), 20);
    h.run(20);
    assert_eq!(h.wake_at(), Some(8_000));
    h.push(&cmd(2, 0), 30);
    h.run(30);
    assert_eq!(h.wake_at(), None);
    h.push(&cmd(0, 0), 9_000);
    h.run(9_000);
    assert!(h.plugin().ticks.is_empty(), "a cancelled timer never fires");
}

#[test]
fn a_time_at_or_before_now_is_ignored() {
    let mut h = harness("{}");
    for at in [0, 1, 499, 500] {
        h.push(&cmd(1, at), 500);
    }
    h.run(500);
    assert_eq!(h.wake_at(), None, "no timer for the past or for now");
    // An armed timer is not disturbed by a request for the past.
    h.push(&cmd(1, 900), 600);
    h.push(&cmd(1, 100), 600);
    h.run(600);
    assert_eq!(h.wake_at(), Some(900));
}

#[test]
fn a_tick_may_arm_the_next_one() {
    let mut h = harness(r#"{"period_ns": 1000}"#);
    h.push(&cmd(1, 1_000), 0);
    h.run(0);
    // Packets arrive every 700 ns; the timer fires at the first breath at or after each
    // period, and re-arms from there.
    for now in (1..=7).map(|k| k * 700) {
        h.push(&cmd(0, 0), now);
        h.run(now);
    }
    assert_eq!(h.plugin().ticks, vec![1_400, 2_800, 4_200]);
    assert_eq!(h.wake_at(), Some(5_200));
}
