//! `duplicate`: netem's `duplicate P [CORR]`. Each packet is sent twice with
//! probability `duplicate_ratio`; with `correlation_ratio` ρ the uniform draws are
//! mixed as netem mixes them (`u = (1 − ρ)·U + ρ·u_prev`, an approximation, not a true
//! correlation). The copy goes down the rest of the chain on its own, as netem's copy
//! is enqueued again at the root: a `delay` after this stage draws it its own delay, so
//! the copy may arrive before or after the original. A copy is never duplicated again
//! here (each packet is looked at once).

use synthnet_sdk::{export_plugin, state, Batch, Plugin, Rng};

pub use synthnet_builtins::duplicate::Config;
use synthnet_builtins::Builtin;

pub struct Duplicate {
    p: f64,
    rho: f64,
    last: f64,
    rng: Rng,
}

impl Plugin for Duplicate {
    type Config = Config;
    const COUNTERS: &'static [&'static str] = &["duplicated"];
    const STATE_VERSION: u32 = 1;

    fn new(c: Config, seed: u64) -> Result<Self, String> {
        c.validate()?;
        Ok(Duplicate {
            p: c.duplicate_ratio,
            rho: c.correlation_ratio,
            last: 0.0,
            rng: Rng::new(seed),
        })
    }

    fn process(&mut self, batch: &mut Batch<'_>) {
        let mut copies = 0;
        for i in 0..batch.len() {
            let mut u = self.rng.next_f64();
            if self.rho > 0.0 {
                u = (1.0 - self.rho) * u + self.rho * self.last;
                self.last = u;
            }
            batch.forward(i);
            if u < self.p {
                // A second verdict for the same packet: the host makes the copy.
                batch.forward(i);
                copies += 1;
            }
        }
        batch.count(0, copies);
    }

    fn snapshot(&self) -> Vec<u8> {
        let [a, b, c, d] = self.rng.state();
        state::encode(&[a, b, c, d, self.last.to_bits()])
    }

    fn restore(&mut self, st: &[u8]) -> Result<(), String> {
        let [a, b, c, d, last] = state::decode::<5>(st, "duplicate")?;
        self.rng = Rng::from_state([a, b, c, d]);
        self.last = f64::from_bits(last);
        Ok(())
    }
}

export_plugin!(Duplicate);

#[cfg(test)]
mod tests {
    use super::*;
    use synthnet_sdk::Harness;

    /// How many times each of `n` packets came out.
    fn copies(cfg: &str, n: usize) -> Vec<usize> {
        let mut h = Harness::<Duplicate>::new(cfg, 11).unwrap();
        for t in 0..n {
            h.push(&[t as u8; 60], t as u64);
        }
        let out = h.run(0);
        let mut k = vec![0; n];
        let mut at = 0;
        // Verdicts come in input order: a duplicated packet's two are adjacent.
        for o in &out {
            while o.bytes[0] != at as u8 {
                at += 1;
            }
            k[at] += 1;
        }
        k
    }

    #[test]
    fn duplicate_ratio_within_three_sigma() {
        let n = 100_000;
        let k = copies(r#"{"duplicate_ratio": 0.1}"#, n);
        assert!(k.iter().all(|&c| c == 1 || c == 2));
        let dup = k.iter().filter(|&&c| c == 2).count() as f64;
        let sigma = (n as f64 * 0.1 * 0.9).sqrt();
        eprintln!(
            "figures: duplicate 10%: {dup} of {n} ({:.4}; 3σ {:.4})",
            dup / n as f64,
            3.0 * sigma / n as f64
        );
        assert!((dup - 0.1 * n as f64).abs() < 3.0 * sigma, "{dup}");
    }

    #[test]
    fn correlation_clusters_the_copies() {
        let n = 100_000;
        let lag1 = |k: &[usize]| {
            let x: Vec<f64> = k.iter().map(|&c| (c - 1) as f64).collect();
            let m = x.iter().sum::<f64>() / n as f64;
            let var = x.iter().map(|v| (v - m).powi(2)).sum::<f64>();
            x.windows(2).map(|w| (w[0] - m) * (w[1] - m)).sum::<f64>() / var
        };
        let plain = copies(r#"{"duplicate_ratio": 0.3}"#, n);
        let corr = copies(r#"{"duplicate_ratio": 0.3, "correlation_ratio": 0.7}"#, n);
        assert!(
            lag1(&plain).abs() < 3.0 / (n as f64).sqrt(),
            "{}",
            lag1(&plain)
        );
        assert!(lag1(&corr) > 0.1, "{}", lag1(&corr));
    }

    #[test]
    fn out_of_range_is_refused_naming_the_field() {
        let e = Harness::<Duplicate>::new(r#"{"duplicate_ratio": 2}"#, 1)
            .err()
            .unwrap();
        assert!(e.contains("duplicate_ratio"), "{e}");
    }
}
