//! `jitter`: random extra delay, synthetic-network's model. With probability
//! `strength` a packet is delayed by a uniform random time in `[0, jitter_ms]`. Without
//! `reorder`, packets leave in the order they came (a delayed packet holds back the ones
//! behind it, as in a FIFO); with `reorder`, undelayed packets overtake delayed ones.

use synthnet_sdk::{export_plugin, ms_to_ns, state, Batch, Chance, Plugin, Rng};

pub use synthnet_builtins::jitter::Config;
use synthnet_builtins::Builtin;

pub struct Jitter {
    max_ns: u64,
    chance: Chance,
    reorder: bool,
    rng: Rng,
    last_departure_ns: u64,
}

impl Plugin for Jitter {
    type Config = Config;
    const COUNTERS: &'static [&'static str] = &["jittered"];
    const STATE_VERSION: u32 = 1;

    fn new(c: Config, seed: u64) -> Result<Self, String> {
        c.validate()?;
        let max_ns = ms_to_ns(c.jitter_ms);
        Ok(Jitter {
            max_ns,
            chance: Chance::new(c.strength),
            reorder: c.reorder,
            rng: Rng::new(seed),
            last_departure_ns: 0,
        })
    }

    fn process(&mut self, batch: &mut Batch<'_>) {
        let mut jittered = 0;
        for i in 0..batch.len() {
            let arrival = batch.arrival_ns(i);
            let extra = if self.chance.roll(&mut self.rng) {
                jittered += 1;
                self.rng.up_to(self.max_ns)
            } else {
                0
            };
            let mut at = arrival.saturating_add(extra);
            if !self.reorder {
                at = at.max(self.last_departure_ns);
                self.last_departure_ns = at;
            }
            batch.send(i, 0, at);
        }
        batch.count(0, jittered);
    }

    fn snapshot(&self) -> Vec<u8> {
        let [a, b, c, d] = self.rng.state();
        state::encode(&[a, b, c, d, self.last_departure_ns])
    }

    fn restore(&mut self, st: &[u8]) -> Result<(), String> {
        let [a, b, c, d, last] = state::decode::<5>(st, "jitter")?;
        self.rng = Rng::from_state([a, b, c, d]);
        self.last_departure_ns = last;
        Ok(())
    }
}

export_plugin!(Jitter);

#[cfg(test)]
mod tests {
    use super::*;
    use synthnet_sdk::Harness;

    #[test]
    fn without_reorder_departures_never_decrease() {
        let mut h = Harness::<Jitter>::new(r#"{"jitter_ms": 5, "strength": 0.5}"#, 3).unwrap();
        for t in 0..10_000u64 {
            h.push(&[0; 60], t * 10_000);
        }
        let out = h.run(0);
        assert!(out.windows(2).all(|w| w[0].at_ns <= w[1].at_ns));
        assert!(out
            .iter()
            .enumerate()
            .all(|(i, o)| o.at_ns >= i as u64 * 10_000));
    }

    #[test]
    fn strength_fraction_and_bound_with_reorder() {
        let cfg = r#"{"jitter_ms": 2, "strength": 0.3, "reorder": true}"#;
        let mut h = Harness::<Jitter>::new(cfg, 9).unwrap();
        let n = 50_000u64;
        for t in 0..n {
            h.push(&[0; 60], t * 1000);
        }
        let out = h.run(0);
        let delayed = out
            .iter()
            .enumerate()
            .filter(|(i, o)| o.at_ns > *i as u64 * 1000)
            .count();
        assert!(out
            .iter()
            .enumerate()
            .all(|(i, o)| o.at_ns - i as u64 * 1000 <= 2_000_000));
        let sigma = (n as f64 * 0.3 * 0.7).sqrt();
        assert!(
            (delayed as f64 - 0.3 * n as f64).abs() < 3.0 * sigma,
            "delayed {delayed}"
        );
    }
}
