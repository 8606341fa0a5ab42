//! `loss`: drop packets at random, independently, with probability `loss_ratio`
//! (netem's `loss random`). Decisions come from the seeded RNG: same seed and same
//! input give the same drops.

use serde::Deserialize;
use synthnet_sdk::{export_plugin, Batch, Chance, Plugin, Rng};

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Probability that a packet is lost, 0..=1.
    pub loss_ratio: f64,
}

pub struct Loss {
    chance: Chance,
    rng: Rng,
}

impl Plugin for Loss {
    type Config = Config;
    const COUNTERS: &'static [&'static str] = &["lost"];
    const STATE_VERSION: u32 = 1;

    fn new(config: Config, seed: u64) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&config.loss_ratio) {
            return Err(format!(
                "loss_ratio: must be within 0..=1, got {}",
                config.loss_ratio
            ));
        }
        Ok(Loss {
            chance: Chance::new(config.loss_ratio),
            rng: Rng::new(seed),
        })
    }

    fn process(&mut self, batch: &mut Batch<'_>) {
        let mut lost = 0;
        for i in 0..batch.len() {
            if self.chance.roll(&mut self.rng) {
                batch.discard(i);
                lost += 1;
            } else {
                batch.forward(i);
            }
        }
        batch.count(0, lost);
    }

    fn snapshot(&self) -> Vec<u8> {
        self.rng
            .state()
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.rng = synthnet_sdk::rng::Rng::from_state(words(state)?);
        Ok(())
    }
}

fn words(state: &[u8]) -> Result<[u64; 4], String> {
    if state.len() != 32 {
        return Err("loss state must be 32 bytes".into());
    }
    let mut w = [0u64; 4];
    for (i, c) in state.chunks_exact(8).enumerate() {
        w[i] = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
    }
    Ok(w)
}

export_plugin!(Loss);

#[cfg(test)]
mod tests {
    use super::*;
    use synthnet_sdk::Harness;

    #[test]
    fn loss_ratio_within_three_sigma() {
        let mut h = Harness::<Loss>::new(r#"{"loss_ratio": 0.1}"#, 42).unwrap();
        let n = 100_000;
        for t in 0..n {
            h.push(&[0; 60], t);
        }
        let dropped = h.run(n).iter().filter(|o| o.port.is_none()).count() as f64;
        let sigma = (n as f64 * 0.1 * 0.9).sqrt();
        assert!(
            (dropped - 0.1 * n as f64).abs() < 3.0 * sigma,
            "dropped {dropped}"
        );
        assert_eq!(h.counters()[0], ("lost".to_string(), dropped as u64));
    }

    #[test]
    fn out_of_range_ratio_is_refused() {
        let e = Harness::<Loss>::new(r#"{"loss_ratio": 1.5}"#, 1)
            .err()
            .unwrap();
        assert!(e.contains("loss_ratio"), "{e}");
    }
}
