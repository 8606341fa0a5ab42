//! `loss`: drop packets by one of netem's loss models. Decisions come from the seeded
//! RNG: same seed and same input give the same drops.
//!
//! - `random` (the default; netem `loss random P [CORR]`): each packet is lost with
//!   probability `loss_ratio`, independently — or, with `correlation_ratio` ρ > 0, by
//!   netem's own approximation of correlation: the uniform draw is mixed with the
//!   previous one, `u = (1 − ρ)·U + ρ·u_prev`, and the packet is lost when `u <
//!   loss_ratio`. As netem's manual says, this is not a true statistical correlation:
//!   it makes losses come in runs, and it also pulls the loss ratio towards 0 or 1
//!   (the mixed draw is no longer uniform). netem calls it deprecated; it is here so
//!   a `loss 1% 25%` line means what it means there.
//! - `gilbert_elliott` (netem `loss gemodel p r 1-h 1-k`): a good and a bad state;
//!   each packet first moves good → bad with `p_ratio` (bad → good with `r_ratio`,
//!   default 1 − p), then is lost with the loss ratio of the state it was in
//!   (`bad_loss_ratio`, netem's 1-h, default 1; `good_loss_ratio`, netem's 1-k,
//!   default 0) — two draws per packet, as the kernel does.
//! - `four_state` (netem `loss state p13 p31 p32 p23 p14`): the 4-state Markov model
//!   (1 transmitted in a gap, 2 transmitted in a burst, 3 lost in a burst, 4 an
//!   isolated loss); a packet is lost when the chain enters state 3 or 4. Defaults as
//!   netem's: p31 = 1 − p13, p32 = 0, p23 = 1, p14 = 0.
//!
//! With `ecn: true` (netem's `loss … ecn`), a loss event *marks* an ECN-capable packet
//! instead of dropping it: ECT(0) or ECT(1) becomes CE (IPv4: the TOS byte's ECN bits,
//! the header checksum updated incrementally; IPv6: the traffic class's), an already
//! CE-marked packet passes as it is, and a packet that is not ECN-capable (Not-ECT, or
//! not IP) is dropped, as netem does when `INET_ECN_set_ce` fails. Marked packets are
//! counted `ecn_marked`, drops `lost`. Only with `ecn` does the plugin read each
//! packet's first 42 bytes (Ethernet, two VLAN tags, the IPv4 header up to its
//! checksum); without it, it sees descriptors only (copying headers cost ~4 ns a
//! packet, a fifth of the plugin).

use synthnet_sdk::wire::{self, Ecn};
use synthnet_sdk::{export_plugin, state, Access, Batch, Plugin, Rng};

use synthnet_builtins::loss::Resolved;
pub use synthnet_builtins::loss::{Config, Model};

/// A validated model with its state.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Chain {
    Random {
        p: f64,
        rho: f64,
        last: f64,
    },
    GilbertElliott {
        p: f64,
        r: f64,
        bad_loss: f64,
        good_loss: f64,
        bad: bool,
    },
    FourState {
        p13: f64,
        p31: f64,
        p32: f64,
        p23: f64,
        p14: f64,
        state: u8,
    },
}

impl Chain {
    /// Is the next packet lost?
    #[inline]
    fn lost(&mut self, rng: &mut Rng) -> bool {
        match self {
            Chain::Random { p, rho, last } => {
                let u = rng.next_f64();
                if *rho == 0.0 {
                    return u < *p;
                }
                let v = (1.0 - *rho) * u + *rho * *last;
                *last = v;
                v < *p
            }
            Chain::GilbertElliott {
                p,
                r,
                bad_loss,
                good_loss,
                bad,
            } => {
                let (move_to, loss) = if *bad {
                    (rng.next_f64() < *r, *bad_loss)
                } else {
                    (rng.next_f64() < *p, *good_loss)
                };
                if move_to {
                    *bad = !*bad;
                }
                rng.next_f64() < loss
            }
            Chain::FourState {
                p13,
                p31,
                p32,
                p23,
                p14,
                state,
            } => {
                let u = rng.next_f64();
                let (next, lost) = match *state {
                    1 if u < *p14 => (4, true),
                    1 if u < *p13 + *p14 => (3, true),
                    1 => (1, false),
                    2 if u < *p23 => (3, true),
                    2 => (2, false),
                    3 if u < *p32 => (2, false),
                    3 if u < *p31 + *p32 => (1, false),
                    3 => (3, true),
                    _ => (1, false),
                };
                *state = next;
                lost
            }
        }
    }

    /// The state to hand over: one byte of discrete state and the last draw.
    fn state(&self) -> (u8, f64) {
        match *self {
            Chain::Random { last, .. } => (0, last),
            Chain::GilbertElliott { bad, .. } => (bad as u8, 0.0),
            Chain::FourState { state, .. } => (state, 0.0),
        }
    }

    fn set_state(&mut self, s: u8, v: f64) -> Result<(), String> {
        match self {
            Chain::Random { last, .. } if s == 0 && (0.0..=1.0).contains(&v) => *last = v,
            Chain::GilbertElliott { bad, .. } if s <= 1 => *bad = s == 1,
            Chain::FourState { state, .. } if (1..=4).contains(&s) => *state = s,
            _ => return Err(format!("loss state {s}/{v} does not fit the model")),
        }
        Ok(())
    }
}

/// The model's state machine, from its checked probabilities.
fn chain(c: &Config) -> Result<Chain, String> {
    Ok(match c.resolve()? {
        Resolved::Random { p, rho } => Chain::Random { p, rho, last: 0.0 },
        Resolved::GilbertElliott {
            p,
            r,
            bad_loss,
            good_loss,
        } => Chain::GilbertElliott {
            p,
            r,
            bad_loss,
            good_loss,
            bad: false,
        },
        Resolved::FourState {
            p13,
            p31,
            p32,
            p23,
            p14,
        } => Chain::FourState {
            p13,
            p31,
            p32,
            p23,
            p14,
            state: 1,
        },
    })
}

pub struct Loss {
    chain: Chain,
    rng: Rng,
    ecn: bool,
}

impl Plugin for Loss {
    type Config = Config;
    const COUNTERS: &'static [&'static str] = &["lost", "ecn_marked"];
    const STATE_VERSION: u32 = 2;

    fn new(config: Config, seed: u64) -> Result<Self, String> {
        Ok(Loss {
            chain: chain(&config)?,
            rng: Rng::new(seed),
            ecn: config.ecn,
        })
    }

    fn access(&self) -> Access {
        if self.ecn {
            // Enough for `wire::mark_ce`: Ethernet, two VLAN tags, IPv4 up to its
            // checksum.
            Access::Headers(42)
        } else {
            Access::Meta
        }
    }

    fn process(&mut self, batch: &mut Batch<'_>) {
        let (mut lost, mut marked) = (0, 0);
        for i in 0..batch.len() {
            if !self.chain.lost(&mut self.rng) {
                batch.forward(i);
                continue;
            }
            if self.ecn {
                match wire::mark_ce(batch.data_mut(i)) {
                    Ecn::Marked => {
                        batch.send_modified(i, 0, 0);
                        marked += 1;
                        continue;
                    }
                    Ecn::AlreadyCe => {
                        batch.forward(i);
                        marked += 1;
                        continue;
                    }
                    Ecn::NotEct => {}
                }
            }
            batch.discard(i);
            lost += 1;
        }
        batch.count(0, lost);
        batch.count(1, marked);
    }

    /// The RNG, the model's discrete state and its last draw, as words.
    fn snapshot(&self) -> Vec<u8> {
        let [a, b, c, d] = self.rng.state();
        let (s, v) = self.chain.state();
        state::encode(&[a, b, c, d, u64::from(s), v.to_bits()])
    }

    fn restore(&mut self, st: &[u8]) -> Result<(), String> {
        let [a, b, c, d, s, v] = state::decode::<6>(st, "loss")?;
        self.chain
            .set_state(u8::try_from(s).unwrap_or(u8::MAX), f64::from_bits(v))?;
        self.rng = Rng::from_state([a, b, c, d]);
        Ok(())
    }
}

export_plugin!(Loss);

#[cfg(test)]
mod tests {
    use super::*;
    use synthnet_sdk::Harness;

    /// Which of `n` packets are lost under `config`.
    fn losses(config: &str, n: usize) -> Vec<bool> {
        let mut h = Harness::<Loss>::new(config, 42).unwrap();
        for t in 0..n {
            h.push(&[0; 60], t as u64);
        }
        h.run(n as u64).iter().map(|o| o.port.is_none()).collect()
    }

    /// Lengths of the runs of consecutive losses.
    fn bursts(lost: &[bool]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut run = 0;
        for &l in lost {
            if l {
                run += 1;
            } else if run > 0 {
                out.push(run);
                run = 0;
            }
        }
        out
    }

    fn within_3_sigma(count: usize, n: usize, p: f64) -> bool {
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        (count as f64 - p * n as f64).abs() < 3.0 * sigma
    }

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

    /// Lag-1 autocorrelation of the loss indicator.
    fn lag1(lost: &[bool]) -> f64 {
        let x: Vec<f64> = lost.iter().map(|&l| l as u8 as f64).collect();
        let mean = x.iter().sum::<f64>() / x.len() as f64;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>();
        let cov = x
            .windows(2)
            .map(|w| (w[0] - mean) * (w[1] - mean))
            .sum::<f64>();
        cov / var
    }

    #[test]
    fn correlation_makes_losses_come_in_runs() {
        let n = 200_000;
        let plain = losses(r#"{"loss_ratio": 0.2}"#, n);
        let corr = losses(r#"{"loss_ratio": 0.2, "correlation_ratio": 0.75}"#, n);
        // Independent: no lag-1 autocorrelation (within 3/sqrt(n)); correlated: clearly
        // positive, and runs of losses longer than independent ones (1/(1-p) = 1.25).
        assert!(
            lag1(&plain).abs() < 3.0 / (n as f64).sqrt(),
            "{}",
            lag1(&plain)
        );
        assert!(lag1(&corr) > 0.1, "{}", lag1(&corr));
        let mean = |l: &[bool]| {
            let b = bursts(l);
            b.iter().sum::<usize>() as f64 / b.len().max(1) as f64
        };
        assert!((mean(&plain) - 1.25).abs() < 0.03, "{}", mean(&plain));
        assert!(mean(&corr) > mean(&plain) + 0.05, "{}", mean(&corr));
    }

    #[test]
    fn gilbert_elliott_matches_its_stationary_loss_and_geometric_bursts() {
        // Simple Gilbert: loss only (and always) in the bad state.
        let (p, r) = (0.01, 0.25);
        let n = 400_000;
        let lost = losses(
            &format!(r#"{{"model": "gilbert_elliott", "p_ratio": {p}, "r_ratio": {r}}}"#),
            n,
        );
        let count = lost.iter().filter(|&&l| l).count();
        let stationary = p / (p + r);
        // Losses are correlated, so the binomial sigma understates the spread: allow
        // 3 sigma of the burst process (bursts ~ Poisson count, each of mean 1/r).
        let bursts = bursts(&lost);
        let mean_burst = bursts.iter().sum::<usize>() as f64 / bursts.len() as f64;
        eprintln!(
            "figures: gilbert_elliott p {p} r {r}: loss {:.5} (stationary {:.5}), mean burst {mean_burst:.3} (model {:.3})",
            lost.iter().filter(|&&l| l).count() as f64 / n as f64,
            p / (p + r),
            1.0 / r
        );
        assert!(
            (mean_burst - 1.0 / r).abs() / (1.0 / r) < 0.05,
            "mean burst {mean_burst}, model {}",
            1.0 / r
        );
        let expected = stationary * n as f64;
        let sigma = (bursts.len() as f64).sqrt() * (1.0 / r) * 2.0_f64.sqrt();
        assert!(
            (count as f64 - expected).abs() < 3.0 * sigma,
            "{count} lost, stationary {expected:.0} ± {sigma:.0}"
        );
    }

    #[test]
    fn gilbert_elliott_losses_in_good_state_too() {
        // With 1-h = 0.5 and 1-k = 0.02, stationary loss = πg·0.02 + πb·0.5.
        let (p, r) = (0.05, 0.2);
        let n = 400_000;
        let config = format!(
            r#"{{"model": "gilbert_elliott", "p_ratio": {p}, "r_ratio": {r}, "bad_loss_ratio": 0.5, "good_loss_ratio": 0.02}}"#
        );
        let count = losses(&config, n).iter().filter(|&&l| l).count();
        let pb = p / (p + r);
        let expected = (1.0 - pb) * 0.02 + pb * 0.5;
        let ratio = count as f64 / n as f64;
        assert!((ratio - expected).abs() < 0.01, "{ratio} vs {expected}");
    }

    #[test]
    fn four_state_matches_its_stationary_loss_and_burst_length() {
        let (p13, p31, p32, p23, p14) = (0.02, 0.3, 0.1, 0.05, 0.0);
        let n = 400_000;
        let config = format!(
            r#"{{"model": "four_state", "p13_ratio": {p13}, "p31_ratio": {p31}, "p32_ratio": {p32}, "p23_ratio": {p23}, "p14_ratio": {p14}}}"#
        );
        let lost = losses(&config, n);
        // Stationary distribution by iterating the chain's matrix.
        let m = [
            [1.0 - p13 - p14, 0.0, p13, p14],
            [0.0, 1.0 - p23, p23, 0.0],
            [p31, p32, 1.0 - p31 - p32, 0.0],
            [1.0, 0.0, 0.0, 0.0],
        ];
        let mut pi = [1.0, 0.0, 0.0, 0.0];
        for _ in 0..100_000 {
            let mut next = [0.0; 4];
            for (i, row) in m.iter().enumerate() {
                for (j, x) in row.iter().enumerate() {
                    next[j] += pi[i] * x;
                }
            }
            pi = next;
        }
        let loss = pi[2] + pi[3];
        let count = lost.iter().filter(|&&l| l).count();
        let ratio = count as f64 / n as f64;
        // Runs of losses: a stay in state 3, geometric with mean 1/(p31 + p32).
        let b = bursts(&lost);
        let mean = b.iter().sum::<usize>() as f64 / b.len() as f64;
        let model = 1.0 / (p31 + p32);
        // Losses come in runs: 3σ of the run process (a Poisson number of runs, each
        // geometric), as for Gilbert-Elliott.
        let sigma = (b.len() as f64).sqrt() * model * 2.0_f64.sqrt();
        assert!(
            (count as f64 - loss * n as f64).abs() < 3.0 * sigma,
            "{ratio} vs {loss} (3σ {})",
            3.0 * sigma / n as f64
        );
        eprintln!(
            "figures: four_state: loss {ratio:.5} (stationary {loss:.5}), mean burst {mean:.3} (model {model:.3})"
        );
        assert!((mean - model).abs() / model < 0.05, "{mean} vs {model}");
    }

    #[test]
    fn four_state_with_p13_alone_is_bernoulli() {
        // netem's defaults: p31 = 1 - p13, p32 = 0: losses independent with p13.
        let n = 200_000;
        let count = losses(r#"{"model": "four_state", "p13_ratio": 0.1}"#, n)
            .iter()
            .filter(|&&l| l)
            .count();
        assert!(within_3_sigma(count, n, 0.1), "{count}");
    }

    /// Ethernet + IPv4 + UDP with ECN field `ecn` and a valid header checksum.
    fn udp4(ecn: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8 + 18];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14..34].copy_from_slice(&[
            0x45, ecn, 0, 46, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        let c = synthnet_sdk::checksum::internet(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    }

    /// `ecn`: ECT(0)/ECT(1) packets hit by a loss event come out marked CE (counts
    /// within 3σ of the loss ratio, IPv4 checksum valid), none is dropped; Not-ECT
    /// packets under the same model are dropped at the same ratio.
    #[test]
    fn ecn_marks_capable_packets_and_drops_the_others() {
        let n = 100_000u64;
        let p = 0.05;
        let cfg = format!(r#"{{"loss_ratio": {p}, "ecn": true}}"#);
        let mut h = Harness::<Loss>::new(&cfg, 4).unwrap();
        for t in 0..n {
            h.push(&udp4(if t % 2 == 0 { 2 } else { 1 }), t);
        }
        let out = h.run(n);
        assert!(out.iter().all(|o| o.port == Some(0)), "nothing dropped");
        let marked = out.iter().filter(|o| o.bytes[15] & 3 == 3).count();
        assert!(within_3_sigma(marked, n as usize, p), "{marked} marked");
        for o in &out {
            let ip = synthnet_sdk::wire::Ipv4Packet::new_checked(&o.bytes[14..]).unwrap();
            assert!(ip.verify_checksum());
        }
        assert_eq!(h.counters()[1], ("ecn_marked".to_string(), marked as u64));
        assert_eq!(h.counters()[0], ("lost".to_string(), 0));
        // Not-ECT: dropped as without ecn.
        let mut h = Harness::<Loss>::new(&cfg, 4).unwrap();
        for t in 0..n {
            h.push(&udp4(0), t);
        }
        let out = h.run(n);
        let dropped = out.iter().filter(|o| o.port.is_none()).count();
        assert!(within_3_sigma(dropped, n as usize, p), "{dropped} dropped");
        assert!(out
            .iter()
            .filter(|o| o.port.is_some())
            .all(|o| o.bytes == udp4(0)));
        // Already CE: passes unchanged, counted as marked.
        let mut h = Harness::<Loss>::new(r#"{"loss_ratio": 1, "ecn": true}"#, 4).unwrap();
        h.push(&udp4(3), 0);
        assert_eq!(h.run(0)[0].bytes, udp4(3));
    }

    #[test]
    fn bad_configs_are_refused_naming_the_field() {
        for (config, field) in [
            (r#"{"loss_ratio": 1.5}"#, "loss_ratio"),
            (r#"{"model": "gilbert_elliott"}"#, "p_ratio"),
            (
                r#"{"model": "gilbert_elliott", "p_ratio": 0.1, "r_ratio": 2}"#,
                "r_ratio",
            ),
            (
                r#"{"model": "four_state", "p13_ratio": 0.5, "p14_ratio": 0.6}"#,
                "p14_ratio",
            ),
            (r#"{"p_ratio": 0.1}"#, "p_ratio"),
            (
                r#"{"model": "four_state", "p13_ratio": 0.1, "loss_ratio": 0.1}"#,
                "loss_ratio",
            ),
        ] {
            let e = Harness::<Loss>::new(config, 1).err().unwrap();
            assert!(e.contains(field), "{config}: {e}");
        }
    }

    #[test]
    fn state_hands_over() {
        let config = || Config {
            model: Model::GilbertElliott,
            p_ratio: Some(0.3),
            r_ratio: Some(0.1),
            ..Config::default()
        };
        let mut a = Loss::new(config(), 5).unwrap();
        let mut rng = Rng::new(1);
        for _ in 0..50 {
            a.chain.lost(&mut rng);
        }
        let mut b = Loss::new(config(), 9).unwrap();
        b.restore(&a.snapshot()).unwrap();
        assert_eq!(a.chain, b.chain);
        assert_eq!(a.rng.state(), b.rng.state());
        assert!(b.restore(&[0; 32]).is_err());
    }
}
