//! `corrupt`: netem's `corrupt P [CORR]`. With probability `ratio` it flips exactly one
//! bit of a packet, at a uniformly random position past the first `skip_bytes` (by
//! default the Ethernet header, so the frame still reaches its receiver and the damage
//! hits IP, transport or payload, where checksums and applications must catch it;
//! netem's own lines set 0, as netem flips a bit anywhere in the frame).
//!
//! - **Correlation** (`correlation_ratio` ρ): netem's approximation, as in `duplicate`
//!   and `loss`: the uniform draw is mixed with the previous one, `u = (1 − ρ)·U +
//!   ρ·u_prev`, and the packet is corrupted when `u < ratio`. Not a true correlation
//!   (netem's manual says so): corruptions come in runs.
//! - **Seeded**: the decision *and* the bit's position come from the instance's seed
//!   (netem draws the position from an unseeded generator).
//! - **Checksums**: the host finishes a pending checksum offload (a frame that arrived
//!   with `VIRTIO_NET_HDR_F_NEEDS_CSUM`, TCP and UDP with the interfaces' offloads on)
//!   in software before a full-access plugin such as this one sees the packet, as netem
//!   does (`skb_checksum_help`). So the flipped bit meets a finished checksum and the
//!   receiver's transport checksum catches it, as on a real wire.
//! - **GSO super-packets** (TCP with TSO/GRO on, on the bridge: one frame standing for
//!   many segments, its `wire_len` larger than its bytes) are **not** corrupted: the
//!   kernel computes each segment's checksum when it splits the frame, after us, so a
//!   flipped bit there would reach the receiver with a valid checksum — silent damage
//!   no wire produces. netem segments such a frame first and corrupts the first
//!   segment; synthnet does not segment. A super-packet drawn for corruption is
//!   forwarded intact and counted `gso_spared`. To corrupt TCP with offloads on, turn
//!   segmentation off on the sending side (`ethtool -K DEV tso off gso off`) and GRO
//!   off on the bridged interfaces (`ethtool -K DEV gro off`); UDP datagrams are single
//!   frames and are corrupted either way.

use synthnet_sdk::{export_plugin, state, Access, Batch, Plugin, Rng};

pub use synthnet_builtins::corrupt::Config;
use synthnet_builtins::Builtin;

pub struct Corrupt {
    p: f64,
    rho: f64,
    last: f64,
    skip: u32,
    rng: Rng,
}

impl Corrupt {
    /// Is the next packet drawn for corruption? One draw per packet, whatever the
    /// packet, so the sequence of decisions depends on the seed alone.
    #[inline]
    fn drawn(&mut self) -> bool {
        let mut u = self.rng.next_f64();
        if self.rho > 0.0 {
            u = (1.0 - self.rho) * u + self.rho * self.last;
            self.last = u;
        }
        u < self.p
    }
}

impl Plugin for Corrupt {
    type Config = Config;
    const ACCESS: Access = Access::Full;
    // Full access copies whole packets: a smaller batch keeps the region small.
    const MAX_BATCH: u32 = 64;
    const COUNTERS: &'static [&'static str] = &["corrupted", "gso_spared"];
    const STATE_VERSION: u32 = 1;

    fn new(c: Config, seed: u64) -> Result<Self, String> {
        c.validate()?;
        Ok(Corrupt {
            p: c.ratio,
            rho: c.correlation_ratio,
            last: 0.0,
            skip: c.skip_bytes,
            rng: Rng::new(seed),
        })
    }

    fn process(&mut self, batch: &mut Batch<'_>) {
        let (mut n, mut spared) = (0, 0);
        for i in 0..batch.len() {
            if !self.drawn() {
                batch.forward(i);
                continue;
            }
            let len = batch.data(i).len() as u32;
            // A frame standing for several segments: see the module's docs.
            if batch.wire_len(i) > len {
                batch.forward(i);
                spared += 1;
                continue;
            }
            if len <= self.skip {
                batch.forward(i);
                continue;
            }
            let bit = self.rng.below((len - self.skip) * 8);
            let byte = (self.skip + bit / 8) as usize;
            batch.data_mut(i)[byte] ^= 1 << (bit % 8);
            batch.send_modified(i, 0, 0);
            n += 1;
        }
        batch.count(0, n);
        batch.count(1, spared);
    }

    fn snapshot(&self) -> Vec<u8> {
        let [a, b, c, d] = self.rng.state();
        state::encode(&[a, b, c, d, self.last.to_bits()])
    }

    fn restore(&mut self, st: &[u8]) -> Result<(), String> {
        let [a, b, c, d, last] = state::decode::<5>(st, "corrupt")?;
        self.rng = Rng::from_state([a, b, c, d]);
        self.last = f64::from_bits(last);
        Ok(())
    }
}

export_plugin!(Corrupt);

#[cfg(test)]
mod tests {
    use super::*;
    use synthnet_sdk::Harness;

    fn flipped_bits(a: &[u8], b: &[u8]) -> u32 {
        a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
    }

    #[test]
    fn flips_exactly_one_bit_past_the_header() {
        let mut h = Harness::<Corrupt>::new(r#"{"ratio": 1}"#, 5).unwrap();
        let pkt: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
        for _ in 0..100 {
            h.push(&pkt, 0);
        }
        for o in h.run(0) {
            assert_eq!(o.bytes.len(), pkt.len());
            assert_eq!(&o.bytes[..14], &pkt[..14]);
            assert_eq!(flipped_bits(&o.bytes, &pkt), 1);
        }
    }

    /// 100,000 packets at 10%: every packet is either intact or differs in exactly
    /// one bit, the corrupted count is within 3σ of 10%, and every bit position of the
    /// frame is hit (netem's `skip_bytes: 0`).
    #[test]
    fn one_bit_per_corrupted_packet_and_the_ratio_within_three_sigma() {
        let mut h = Harness::<Corrupt>::new(r#"{"ratio": 0.1, "skip_bytes": 0}"#, 9).unwrap();
        let pkt: Vec<u8> = (0..64u32).map(|i| (i * 7) as u8).collect();
        let n = 100_000u64;
        let mut hit = vec![0u32; pkt.len() * 8];
        let mut corrupted = 0u64;
        for round in 0..n / 1000 {
            for _ in 0..1000 {
                h.push(&pkt, round);
            }
            for o in h.run(round) {
                match flipped_bits(&o.bytes, &pkt) {
                    0 => {}
                    1 => {
                        corrupted += 1;
                        let byte = o.bytes.iter().zip(&pkt).position(|(a, b)| a != b).unwrap();
                        let bit = (o.bytes[byte] ^ pkt[byte]).trailing_zeros() as usize;
                        hit[byte * 8 + bit] += 1;
                    }
                    k => panic!("{k} bits flipped in one packet"),
                }
            }
        }
        let sigma = (n as f64 * 0.1 * 0.9).sqrt();
        eprintln!(
            "figures: corrupt 10%: {corrupted} of {n} ({:.4}; 3σ {:.4}), each exactly one bit",
            corrupted as f64 / n as f64,
            3.0 * sigma / n as f64
        );
        assert!(
            (corrupted as f64 - 0.1 * n as f64).abs() < 3.0 * sigma,
            "{corrupted} of {n}"
        );
        assert_eq!(h.counters()[0], ("corrupted".to_string(), corrupted));
        assert!(
            hit.iter().all(|&k| k > 0),
            "every bit position is reachable"
        );
    }

    #[test]
    fn correlation_makes_corruption_come_in_runs() {
        let run = |cfg: &str| -> Vec<bool> {
            let mut h = Harness::<Corrupt>::new(cfg, 3).unwrap();
            for _ in 0..100_000 {
                h.push(&[0u8; 60], 0);
            }
            h.run(0).iter().map(|o| o.bytes != [0u8; 60]).collect()
        };
        let lag1 = |x: &[bool]| {
            let x: Vec<f64> = x.iter().map(|&b| b as u8 as f64).collect();
            let m = x.iter().sum::<f64>() / x.len() as f64;
            let var = x.iter().map(|v| (v - m).powi(2)).sum::<f64>();
            x.windows(2).map(|w| (w[0] - m) * (w[1] - m)).sum::<f64>() / var
        };
        let plain = run(r#"{"ratio": 0.3}"#);
        let corr = run(r#"{"ratio": 0.3, "correlation_ratio": 0.7}"#);
        assert!(
            lag1(&plain).abs() < 3.0 / (1e5f64).sqrt(),
            "{}",
            lag1(&plain)
        );
        assert!(lag1(&corr) > 0.1, "{}", lag1(&corr));
    }

    #[test]
    fn ratio_zero_changes_nothing_and_bad_fields_are_named() {
        let mut h = Harness::<Corrupt>::new("{}", 5).unwrap();
        h.push(&[7u8; 80], 0);
        assert_eq!(h.run(0)[0].bytes, vec![7u8; 80]);
        for (cfg, field) in [
            (r#"{"ratio": 1.5}"#, "ratio"),
            (
                r#"{"ratio": 0.1, "correlation_ratio": -1}"#,
                "correlation_ratio",
            ),
        ] {
            let e = Harness::<Corrupt>::new(cfg, 1).err().unwrap();
            assert!(e.contains(field), "{cfg}: {e}");
        }
    }

    #[test]
    fn state_hands_over() {
        let cfg = r#"{"ratio": 0.5, "correlation_ratio": 0.5}"#;
        let mut a = Harness::<Corrupt>::new(cfg, 1).unwrap();
        for _ in 0..33 {
            a.push(&[1u8; 40], 0);
        }
        a.run(0);
        let mut b = Harness::<Corrupt>::new(cfg, 2).unwrap();
        b.restore(&a.snapshot()).unwrap();
        for h in [&mut a, &mut b] {
            for _ in 0..50 {
                h.push(&[1u8; 40], 1);
            }
        }
        assert_eq!(a.run(1), b.run(1));
    }
}
