//! `delay`: netem's `delay TIME [JITTER [CORRELATION]] [distribution NAME]` — a
//! constant delay plus a random one drawn from a distribution, seeded.
//!
//! - `delay_ms` is netem's TIME (μ), `jitter_ms` its JITTER (σ).
//! - `distribution`: `uniform` (the default, as netem without a table: uniform in
//!   [μ − σ, μ + σ)), `normal`, `pareto`, `paretonormal` (netem's shipped tables,
//!   rebuilt here the way iproute2's generators build them: 4096 entries of an inverse
//!   CDF scaled by 8192 and clamped to 16 bits, so a draw is μ + σ·t/8192), or `table`
//!   with `table_samples`: measured delays (any unit) turned into a table the way
//!   netem's `maketable` does — normalised to mean 0 and deviation 1, then its inverse
//!   CDF — so μ and σ still say where and how wide.
//! - `correlation_ratio` ρ with `correlation`: `netem` (the default) mixes each
//!   uniform draw with the previous one, `u = (1 − ρ)·U + ρ·u_prev`, as netem's
//!   `get_crandom` does — an approximation, not a true correlation (it also narrows
//!   the distribution). One deliberate difference: netem picks the table entry (or
//!   the uniform offset) from the *low* bits of the mixed value (`rnd % size`), which
//!   throws most of the correlation away; here the entry is picked by the mixed
//!   value's magnitude, so ρ > 0 really gives neighbouring packets similar delays.
//!   `ar1` is a true first-order autoregression of the standardised draw,
//!   `z = ρ·z_prev + √(1 − ρ²)·ε`, which keeps the distribution's mean and variance.
//! - Packets leave at their own times, so a packet drawn a shorter delay overtakes the
//!   one before it (netem's time-sorted queue); `keep_order: true` keeps their order
//!   instead (a packet never leaves before the one ahead of it).
//! - netem's `reorder P [CORR] [gap N]`: `reorder_ratio` P, `reorder_correlation_ratio`,
//!   `reorder_gap_packets` N (default 1). As the kernel does: once at least N − 1
//!   packets in a row were delayed, a packet is sent at once (no delay) with
//!   probability P, and the count starts again; every other packet takes the delay.
//!   So `delay 10ms reorder 100% gap 5` sends every fifth packet at once.
//!
//! - `limit_packets`: netem's `limit` — a packet that finds this many packets still
//!   waiting in this stage is dropped (counted as `limit_drops`). Left out: no limit
//!   here beyond the host's `hold_packets`. (The count of waiting packets starts again
//!   after a swap; the packets themselves are kept.)
//!
//! A draw below zero delays by zero (a packet never leaves before it arrived).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use synthnet_sdk::dist::{moments, shipped_table, table_from_samples, Distribution, DIST_SCALE};
use synthnet_sdk::{export_plugin, ms_to_ns, state, Batch, Plugin, Rng};

pub use synthnet_builtins::delay::{Config, Correlation};
use synthnet_builtins::Builtin;

pub struct Delay {
    mu_ns: f64,
    sigma_ns: f64,
    table: Option<Vec<i16>>,
    /// Mean and deviation of the table's entries (in σ units), for `ar1`.
    table_mean: f64,
    table_sd: f64,
    rho: f64,
    correlation: Correlation,
    keep_order: bool,
    /// netem's reorder: probability, correlation, gap, and its state (the packets
    /// delayed since the last one sent at once, the last mixed draw).
    reorder: f64,
    reorder_rho: f64,
    gap: u32,
    counter: u32,
    reorder_last: f64,
    /// netem's limit, and the departure times of the packets still waiting.
    limit: Option<usize>,
    waiting: BinaryHeap<Reverse<u64>>,
    rng: Rng,
    /// The previous mixed uniform draw (netem) or standardised value (ar1).
    last: f64,
    last_departure_ns: u64,
}

impl Delay {
    /// netem's reorder rule: is this packet sent at once? Only once `gap − 1` packets
    /// in a row took the delay, then with probability `reorder` (correlated as netem).
    fn sent_at_once(&mut self) -> bool {
        if self.gap == 0 || self.counter < self.gap - 1 {
            self.counter = self.counter.saturating_add(1);
            return false;
        }
        let mut u = self.rng.next_f64();
        if self.reorder_rho > 0.0 {
            u = (1.0 - self.reorder_rho) * u + self.reorder_rho * self.reorder_last;
            self.reorder_last = u;
        }
        if u < self.reorder {
            self.counter = 0;
            true
        } else {
            self.counter = self.counter.saturating_add(1);
            false
        }
    }

    /// One uniform draw in [0, 1), mixed with the previous one (netem's correlation).
    fn uniform(&mut self) -> f64 {
        let u = self.rng.next_f64();
        if self.rho == 0.0 || self.correlation == Correlation::Ar1 {
            return u;
        }
        let v = (1.0 - self.rho) * u + self.rho * self.last;
        self.last = v;
        v
    }

    /// The distribution's value for uniform `u`, in σ units.
    fn value(&self, u: f64) -> f64 {
        match &self.table {
            None => 2.0 * u - 1.0,
            Some(t) => t[((u * t.len() as f64) as usize).min(t.len() - 1)] as f64 / DIST_SCALE,
        }
    }

    /// The next delay, ns (may be negative before clamping).
    fn draw(&mut self) -> f64 {
        let u = self.uniform();
        let mut x = self.value(u);
        if self.correlation == Correlation::Ar1 && self.rho > 0.0 {
            // Standardise, autoregress, and put the table's own mean and spread back.
            let eps = (x - self.table_mean) / self.table_sd;
            let z = self.rho * self.last + (1.0 - self.rho * self.rho).sqrt() * eps;
            self.last = z;
            x = self.table_mean + self.table_sd * z;
        }
        self.mu_ns + self.sigma_ns * x
    }
}

impl Plugin for Delay {
    type Config = Config;
    const COUNTERS: &'static [&'static str] = &["delayed", "reordered", "limit_drops"];
    const STATE_VERSION: u32 = 1;

    fn new(c: Config, seed: u64) -> Result<Self, String> {
        c.validate()?;
        let mu = ms_to_ns(c.delay_ms) as f64;
        let sigma = ms_to_ns(c.jitter_ms) as f64;
        let table = match c.distribution {
            Distribution::Table => Some(table_from_samples(&c.table_samples)?),
            d => shipped_table(d),
        };
        let (table_mean, table_sd) = moments(table.as_deref());
        let gap = c.reorder_gap()?;
        Ok(Delay {
            mu_ns: mu,
            sigma_ns: sigma,
            table,
            table_mean,
            table_sd,
            rho: c.correlation_ratio,
            correlation: c.correlation,
            keep_order: c.keep_order,
            reorder: c.reorder_ratio,
            reorder_rho: c.reorder_correlation_ratio,
            gap,
            counter: 0,
            reorder_last: 0.0,
            limit: c.limit_packets.map(|l| l as usize),
            waiting: BinaryHeap::new(),
            rng: Rng::new(seed),
            last: 0.0,
            last_departure_ns: 0,
        })
    }

    fn process(&mut self, batch: &mut Batch<'_>) {
        let (mut at_once, mut over) = (0, 0);
        for i in 0..batch.len() {
            let arrival = batch.arrival_ns(i);
            if let Some(limit) = self.limit {
                while self.waiting.peek().is_some_and(|Reverse(t)| *t <= arrival) {
                    self.waiting.pop();
                }
                if self.waiting.len() >= limit {
                    over += 1;
                    batch.discard(i);
                    continue;
                }
            }
            if self.sent_at_once() {
                at_once += 1;
                batch.send(i, 0, arrival);
                continue;
            }
            let d = self.draw().max(0.0) as u64;
            let mut at = arrival.saturating_add(d);
            if self.keep_order {
                at = at.max(self.last_departure_ns);
                self.last_departure_ns = at;
            }
            if self.limit.is_some() && at > arrival {
                self.waiting.push(Reverse(at));
            }
            batch.send(i, 0, at);
        }
        let n = batch.len() as u64;
        batch.count(0, n - at_once - over);
        batch.count(1, at_once);
        batch.count(2, over);
    }

    fn snapshot(&self) -> Vec<u8> {
        let [a, b, c, d] = self.rng.state();
        state::encode(&[
            a,
            b,
            c,
            d,
            self.last.to_bits(),
            self.last_departure_ns,
            self.reorder_last.to_bits(),
            u64::from(self.counter),
        ])
    }

    fn restore(&mut self, st: &[u8]) -> Result<(), String> {
        let [a, b, c, d, last, departure, reorder_last, counter] = state::decode::<8>(st, "delay")?;
        self.rng = Rng::from_state([a, b, c, d]);
        self.last = f64::from_bits(last);
        self.last_departure_ns = departure;
        self.reorder_last = f64::from_bits(reorder_last);
        self.counter = u32::try_from(counter).unwrap_or(u32::MAX);
        Ok(())
    }
}

export_plugin!(Delay);

#[cfg(test)]
mod tests {
    use super::*;
    use synthnet_sdk::Harness;

    /// The added delays (ns) of `n` packets 1 ms apart.
    fn delays(config: &str, n: u64) -> Vec<f64> {
        let mut h = Harness::<Delay>::new(config, 7).unwrap();
        for t in 0..n {
            h.push(&[0; 60], t * 1_000_000);
        }
        // Verdicts come in input order.
        h.run(0)
            .iter()
            .enumerate()
            .map(|(i, o)| o.at_ns as f64 - i as f64 * 1e6)
            .collect()
    }

    #[test]
    fn keep_order_never_reorders_and_reorder_does() {
        let cfg = r#"{"delay_ms": 10, "jitter_ms": 5, "keep_order": true}"#;
        let mut h = Harness::<Delay>::new(cfg, 3).unwrap();
        for t in 0..5000u64 {
            h.push(&[0; 60], t * 100_000);
        }
        let out = h.run(0);
        assert!(out.windows(2).all(|w| w[0].at_ns <= w[1].at_ns));
        let cfg = r#"{"delay_ms": 10, "jitter_ms": 5}"#;
        let mut h = Harness::<Delay>::new(cfg, 3).unwrap();
        for t in 0..5000u64 {
            h.push(&[0; 60], t * 100_000);
        }
        let out = h.run(0);
        assert!(out.windows(2).any(|w| w[0].at_ns > w[1].at_ns));
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (cfg, field) in [
            (r#"{"delay_ms": -1}"#, "delay_ms"),
            (
                r#"{"jitter_ms": 1, "correlation_ratio": 1.5}"#,
                "correlation_ratio",
            ),
            (r#"{"distribution": "table"}"#, "table_samples"),
            (
                r#"{"distribution": "normal", "table_samples": [1, 2]}"#,
                "table_samples",
            ),
        ] {
            let e = Harness::<Delay>::new(cfg, 1).err().unwrap();
            assert!(e.contains(field), "{cfg}: {e}");
        }
        let e = Harness::<Delay>::new(r#"{"distribution": "gamma"}"#, 1)
            .err()
            .unwrap();
        assert!(e.contains("gamma") || e.contains("distribution"), "{e}");
    }

    #[test]
    fn state_hands_over() {
        let cfg = r#"{"delay_ms": 10, "jitter_ms": 5, "correlation_ratio": 0.5}"#;
        let a = delays(cfg, 100);
        assert_eq!(a.len(), 100);
        let mut x = Harness::<Delay>::new(cfg, 7).unwrap();
        x.push(&[0; 60], 0);
        x.run(0);
        let mut y = Harness::<Delay>::new(cfg, 8).unwrap();
        let state = x.snapshot();
        y.restore(&state).unwrap();
        assert_eq!(x.plugin().last.to_bits(), y.plugin().last.to_bits());
    }

    /// Mean, variance and lag-1 autocorrelation of `x`.
    fn stats(x: &[f64]) -> (f64, f64, f64) {
        let n = x.len() as f64;
        let m = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n;
        let cov = x.windows(2).map(|w| (w[0] - m) * (w[1] - m)).sum::<f64>() / n;
        (m, var, cov / var)
    }

    /// The fourth central moment of a table (σ units); uniform on [-1, 1): 1/5.
    fn fourth(table: Option<&[i16]>) -> f64 {
        let (m, _) = moments(table);
        match table {
            None => 0.2,
            Some(t) => {
                t.iter()
                    .map(|&v| (v as f64 / DIST_SCALE - m).powi(4))
                    .sum::<f64>()
                    / t.len() as f64
            }
        }
    }

    #[test]
    fn every_distribution_has_its_tables_mean_and_deviation() {
        let (mu, sigma) = (100e6, 10e6);
        let n = 100_000;
        let samples: Vec<f64> = (1..=2000)
            .map(|i| -(1.0 - i as f64 / 2001.0f64).ln())
            .collect();
        let custom = table_from_samples(&samples).unwrap();
        let sample_list = samples
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(",");
        for (name, table) in [
            ("uniform", None),
            ("normal", shipped_table(Distribution::Normal)),
            ("pareto", shipped_table(Distribution::Pareto)),
            ("paretonormal", shipped_table(Distribution::Paretonormal)),
            ("table", Some(custom.clone())),
        ] {
            let extra = if name == "table" {
                format!(r#", "table_samples": [{sample_list}]"#)
            } else {
                String::new()
            };
            let cfg =
                format!(r#"{{"delay_ms": 100, "jitter_ms": 10, "distribution": "{name}"{extra}}}"#);
            let d = delays(&cfg, n);
            let (m, var, lag1) = stats(&d);
            let (tm, tsd) = moments(table.as_deref());
            let want_m = mu + sigma * tm;
            let want_var = (sigma * tsd).powi(2);
            let se_m = sigma * tsd / (n as f64).sqrt();
            let mu4 = fourth(table.as_deref()) * sigma.powi(4);
            let se_var = ((mu4 - want_var * want_var) / n as f64).sqrt();
            eprintln!(
                "figures: delay {name} over {n}: mean {:.4} ms (table {:.4} ± {:.4}), sd {:.4} ms (table {:.4}), lag-1 {lag1:+.4}",
                m / 1e6,
                want_m / 1e6,
                3.0 * se_m / 1e6,
                var.sqrt() / 1e6,
                want_var.sqrt() / 1e6
            );
            assert!(
                (m - want_m).abs() < 3.0 * se_m,
                "{name}: mean {m} vs {want_m} ± {se_m}"
            );
            assert!(
                (var - want_var).abs() < 3.0 * se_var,
                "{name}: deviation {} vs {}",
                var.sqrt(),
                want_var.sqrt()
            );
            assert!(lag1.abs() < 3.0 / (n as f64).sqrt(), "{name}: lag-1 {lag1}");
        }
    }

    #[test]
    fn correlation_raises_the_lag_one_autocorrelation() {
        let n = 100_000;
        for dist in ["uniform", "normal"] {
            let netem = delays(
                &format!(
                    r#"{{"delay_ms": 100, "jitter_ms": 10, "distribution": "{dist}", "correlation_ratio": 0.5}}"#
                ),
                n,
            );
            let (_, _, lag1) = stats(&netem);
            eprintln!(
                "figures: delay {dist} correlation 0.5 (netem's): lag-1 {lag1:+.4} (0 without)"
            );
            assert!(lag1 > 0.3, "{dist}, netem's correlation: lag-1 {lag1}");
            // A true AR(1): lag-1 is ρ, and mean and deviation are kept.
            let ar1 = delays(
                &format!(
                    r#"{{"delay_ms": 100, "jitter_ms": 10, "distribution": "{dist}", "correlation_ratio": 0.5, "correlation": "ar1"}}"#
                ),
                n,
            );
            let (m, var, lag1) = stats(&ar1);
            eprintln!(
                "figures: delay {dist} correlation 0.5 (ar1): lag-1 {lag1:+.4}, mean {:.4} ms, sd {:.4} ms",
                m / 1e6,
                var.sqrt() / 1e6
            );
            assert!((lag1 - 0.5).abs() < 0.02, "{dist}, ar1: lag-1 {lag1}");
            let table = shipped_table(if dist == "normal" {
                Distribution::Normal
            } else {
                Distribution::Uniform
            });
            let (tm, tsd) = moments(table.as_deref());
            // Correlated samples: the effective count is n(1 - ρ)/(1 + ρ).
            let eff = n as f64 / 3.0;
            let se = 10e6 * tsd / eff.sqrt();
            assert!(
                (m - (100e6 + 10e6 * tm)).abs() < 3.0 * se,
                "{dist}: mean {m}"
            );
            assert!(
                (var.sqrt() / (10e6 * tsd) - 1.0).abs() < 0.03,
                "{dist}: deviation {}",
                var.sqrt()
            );
        }
    }

    /// Which of `n` packets 1 ms apart were sent at once under `cfg`.
    fn at_once(cfg: &str, n: u64) -> Vec<bool> {
        delays(cfg, n).iter().map(|&d| d == 0.0).collect()
    }

    #[test]
    fn reorder_gap_5_at_100_percent_sends_every_fifth_at_once() {
        let sent = at_once(
            r#"{"delay_ms": 10, "reorder_ratio": 1, "reorder_gap_packets": 5}"#,
            1000,
        );
        for (i, s) in sent.iter().enumerate() {
            assert_eq!(*s, i % 5 == 4, "packet {i}");
        }
    }

    #[test]
    fn reorder_25_percent_gap_5_follows_netems_rule() {
        let n = 100_000;
        let sent = at_once(
            r#"{"delay_ms": 10, "reorder_ratio": 0.25, "reorder_gap_packets": 5}"#,
            n,
        );
        // After a packet sent at once (and at the start) come at least four delayed.
        let mut since = 0;
        let mut eligible = 0;
        let mut hits = 0;
        for s in &sent {
            if since >= 4 {
                eligible += 1;
                hits += *s as usize;
            } else {
                assert!(!s, "sent at once inside the gap");
            }
            since = if *s { 0 } else { since + 1 };
        }
        // Of the packets that could go at once, 25 % did.
        let sigma = (eligible as f64 * 0.25 * 0.75).sqrt();
        eprintln!(
            "figures: reorder 25% gap 5: {hits} of {eligible} eligible sent at once ({:.4}; 3σ {:.4}), none inside a gap",
            hits as f64 / eligible as f64,
            3.0 * sigma / eligible as f64
        );
        assert!(
            (hits as f64 - 0.25 * eligible as f64).abs() < 3.0 * sigma,
            "{hits} of {eligible}"
        );
        // And the delayed ones took exactly the delay: they are overtaken.
        assert!(delays(
            r#"{"delay_ms": 10, "reorder_ratio": 0.25, "reorder_gap_packets": 5}"#,
            100
        )
        .iter()
        .all(|&d| d == 0.0 || d == 10e6));
    }

    #[test]
    fn reorder_needs_a_delay_and_gap_needs_reorder() {
        for (cfg, field) in [
            (r#"{"reorder_ratio": 0.5}"#, "delay_ms"),
            (
                r#"{"delay_ms": 10, "reorder_gap_packets": 5}"#,
                "reorder_ratio",
            ),
            (
                r#"{"delay_ms": 10, "reorder_ratio": 0.5, "reorder_gap_packets": 0}"#,
                "reorder_gap_packets",
            ),
        ] {
            let e = Harness::<Delay>::new(cfg, 1).err().unwrap();
            assert!(e.contains(field), "{cfg}: {e}");
        }
    }

    #[test]
    fn limit_drops_what_finds_the_queue_full() {
        // 1 packet per ms into 10 ms: 10 waiting at any time; a limit of 5 lets half
        // through once the queue has filled.
        let mut h = Harness::<Delay>::new(r#"{"delay_ms": 10, "limit_packets": 5}"#, 1).unwrap();
        for t in 0..1000u64 {
            h.push(&[0; 60], t * 1_000_000);
        }
        let out = h.run(0);
        let passed = out.iter().filter(|o| o.port.is_some()).count();
        assert!((495..=505).contains(&passed), "{passed}");
        assert_eq!(h.counters()[2].1, 1000 - passed as u64);
    }
}
