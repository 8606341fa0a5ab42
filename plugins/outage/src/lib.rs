//! `outage`: a link that goes down and comes back, as Mahimahi's `mm-onoff` and
//! `mm-intermittent`, or at scheduled times.
//!
//! - `mode: "onoff"`: up for an exponentially distributed time of mean `mean_on_ms`,
//!   down for one of mean `mean_off_ms`, and so on (Mahimahi's `mm-onoff`).
//! - `mode: "intermittent"`: up `on_ms`, down `off_ms`, periodically (Mahimahi's
//!   `mm-intermittent`).
//! - `mode: "blackout"`: down during each `[at_ms, at_ms + for_ms)` of `blackouts`.
//!
//! Times count from the stage's first batch. The link starts up. While it is down,
//! packets are dropped (as Mahimahi does), or with `hold: true` they wait and leave the
//! moment it is up again (a link that buffers; the host's hold limits bound it).

use serde::Deserialize;
use synthnet_sdk::{export_plugin, Batch, Plugin, Rng, MAX_DELAY_MS};

#[derive(Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Onoff,
    Intermittent,
    Blackout,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Blackout {
    pub at_ms: f64,
    pub for_ms: f64,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub mode: Mode,
    pub mean_on_ms: f64,
    pub mean_off_ms: f64,
    pub on_ms: f64,
    pub off_ms: f64,
    pub blackouts: Vec<Blackout>,
    pub hold: bool,
}

pub struct Outage {
    mode: Mode,
    /// onoff means / intermittent durations, ns.
    on_ns: f64,
    off_ns: f64,
    /// Blackouts as [start, end) ns, sorted.
    blackouts: Vec<(u64, u64)>,
    hold: bool,
    rng: Rng,
    start_ns: Option<u64>,
    /// onoff: whether the link is up, and when it next switches (ns since start).
    up: bool,
    switch_ns: u64,
}

fn ms(field: &str, v: f64, positive: bool) -> Result<f64, String> {
    if (0.0..=MAX_DELAY_MS).contains(&v) && (!positive || v > 0.0) {
        Ok(v * 1e6)
    } else {
        Err(format!(
            "{field}: must be a time in ms{} up to a day, got {v}",
            if positive { " above 0" } else { " ≥ 0" }
        ))
    }
}

impl Outage {
    /// An exponential draw of mean `mean` ns (at least 1 ns).
    fn exp(&mut self, mean: f64) -> u64 {
        let u = self.rng.next_f64();
        ((-(1.0 - u).ln() * mean) as u64).max(1)
    }

    /// When the link is up again at or after `t` (ns since start); `t` itself when up.
    fn up_at(&mut self, t: u64) -> u64 {
        match self.mode {
            Mode::Onoff => {
                // Switch states until the current period covers t.
                while self.switch_ns <= t {
                    self.up = !self.up;
                    let mean = if self.up { self.on_ns } else { self.off_ns };
                    self.switch_ns += self.exp(mean);
                }
                if self.up {
                    t
                } else {
                    self.switch_ns
                }
            }
            Mode::Intermittent => {
                let period = (self.on_ns + self.off_ns) as u64;
                let within = t % period;
                if within < self.on_ns as u64 {
                    t
                } else {
                    t - within + period
                }
            }
            Mode::Blackout => {
                let mut at = t;
                for &(s, e) in &self.blackouts {
                    if s <= at && at < e {
                        at = e;
                    }
                }
                at
            }
        }
    }
}

impl Plugin for Outage {
    type Config = Config;
    const COUNTERS: &'static [&'static str] = &["dropped_down", "held_down"];
    const STATE_VERSION: u32 = 1;

    fn new(c: Config, seed: u64) -> Result<Self, String> {
        let (on_ns, off_ns) = match c.mode {
            Mode::Onoff => (
                ms("mean_on_ms", c.mean_on_ms, true)?,
                ms("mean_off_ms", c.mean_off_ms, true)?,
            ),
            Mode::Intermittent => (ms("on_ms", c.on_ms, true)?, ms("off_ms", c.off_ms, true)?),
            Mode::Blackout => (0.0, 0.0),
        };
        let mut blackouts = Vec::new();
        for (i, b) in c.blackouts.iter().enumerate() {
            let s = ms(&format!("blackouts[{i}].at_ms"), b.at_ms, false)? as u64;
            let d = ms(&format!("blackouts[{i}].for_ms"), b.for_ms, true)? as u64;
            blackouts.push((s, s + d));
        }
        if c.mode == Mode::Blackout && blackouts.is_empty() {
            return Err("blackouts: the blackout mode needs at least one".into());
        }
        if c.mode != Mode::Blackout && !blackouts.is_empty() {
            return Err("blackouts: only for mode \"blackout\"".into());
        }
        blackouts.sort_unstable();
        let mut o = Outage {
            mode: c.mode,
            on_ns,
            off_ns,
            blackouts,
            hold: c.hold,
            rng: Rng::new(seed),
            start_ns: None,
            up: true,
            switch_ns: 0,
        };
        if o.mode == Mode::Onoff {
            o.switch_ns = o.exp(on_ns);
        }
        Ok(o)
    }

    fn process(&mut self, batch: &mut Batch<'_>) {
        let start = *self.start_ns.get_or_insert(batch.now_ns());
        let (mut dropped, mut held) = (0, 0);
        for i in 0..batch.len() {
            let t = batch.arrival_ns(i).saturating_sub(start);
            let up = self.up_at(t);
            if up == t {
                batch.forward(i);
            } else if self.hold {
                held += 1;
                batch.send(i, 0, start.saturating_add(up));
            } else {
                dropped += 1;
                batch.discard(i);
            }
        }
        batch.count(0, dropped);
        batch.count(1, held);
    }
}

export_plugin!(Outage);

#[cfg(test)]
mod tests {
    use super::*;
    use synthnet_sdk::Harness;

    /// Up (true) or down for packets every ms over `n` ms.
    fn ups(cfg: &str, n: u64) -> Vec<bool> {
        let mut h = Harness::<Outage>::new(cfg, 5).unwrap();
        for t in 0..n {
            h.push(&[0; 60], t * 1_000_000);
        }
        h.run(0).iter().map(|o| o.port.is_some()).collect()
    }

    #[test]
    fn intermittent_is_periodic() {
        let u = ups(
            r#"{"mode": "intermittent", "on_ms": 30, "off_ms": 20}"#,
            200,
        );
        for (t, up) in u.iter().enumerate() {
            assert_eq!(*up, t % 50 < 30, "t={t} ms");
        }
    }

    #[test]
    fn onoff_periods_are_exponential_with_their_means() {
        let u = ups(
            r#"{"mode": "onoff", "mean_on_ms": 200, "mean_off_ms": 50}"#,
            600_000,
        );
        // Run lengths of up and down (ms), mean within 5 % of the configured.
        let (mut on, mut off, mut run) = (Vec::new(), Vec::new(), 1usize);
        for w in u.windows(2) {
            if w[0] == w[1] {
                run += 1;
            } else {
                if w[0] {
                    on.push(run)
                } else {
                    off.push(run)
                }
                run = 1;
            }
        }
        let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len() as f64;
        // A ms grid rounds each period up by half a ms on average.
        assert!((mean(&on) - 200.5).abs() / 200.0 < 0.05, "{}", mean(&on));
        assert!((mean(&off) - 50.5).abs() / 50.0 < 0.05, "{}", mean(&off));
        let down = u.iter().filter(|x| !**x).count() as f64 / u.len() as f64;
        assert!((down - 0.2).abs() < 0.02, "{down}");
    }

    #[test]
    fn blackouts_drop_or_hold() {
        let cfg = r#"{"mode": "blackout", "blackouts": [{"at_ms": 10, "for_ms": 5}, {"at_ms": 40, "for_ms": 1}]}"#;
        let u = ups(cfg, 50);
        for (t, up) in u.iter().enumerate() {
            assert_eq!(*up, !((10..15).contains(&t) || t == 40), "t={t}");
        }
        let held = cfg.replace("\"blackout\",", "\"blackout\", \"hold\": true,");
        let mut h = Harness::<Outage>::new(&held, 1).unwrap();
        for t in 0..20u64 {
            h.push(&[0; 60], t * 1_000_000);
        }
        let out = h.run(0);
        assert!(out.iter().all(|o| o.port.is_some()));
        assert_eq!(out[12].at_ns, 15_000_000);
        assert_eq!(out[16].at_ns, 0);
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (c, f) in [
            (
                r#"{"mode": "onoff", "mean_on_ms": 0, "mean_off_ms": 1}"#,
                "mean_on_ms",
            ),
            (r#"{"mode": "intermittent", "on_ms": 5}"#, "off_ms"),
            (r#"{"mode": "blackout"}"#, "blackouts"),
            (
                r#"{"mode": "blackout", "blackouts": [{"at_ms": -1, "for_ms": 1}]}"#,
                "blackouts[0].at_ms",
            ),
        ] {
            let e = Harness::<Outage>::new(c, 1).err().unwrap();
            assert!(e.contains(f), "{c}: {e}");
        }
    }
}
