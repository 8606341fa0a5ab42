//! `corrupt`: the clumsy example. With probability `ratio` it flips one random bit of a
//! packet, past the first `skip_bytes` (by default the Ethernet header, so the frame
//! still reaches its receiver and the damage hits IP, transport or payload, where
//! checksums and applications must catch it). Like netem's `corrupt`.

use serde::Deserialize;
use synthnet_sdk::{export_plugin, Access, Batch, Chance, Plugin, Rng};

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Fraction of packets to damage, 0..=1.
    pub ratio: f64,
    /// Bytes at the start of the frame left intact.
    pub skip_bytes: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ratio: 0.0,
            skip_bytes: 14,
        }
    }
}

pub struct Corrupt {
    chance: Chance,
    skip: u32,
    rng: Rng,
}

impl Plugin for Corrupt {
    type Config = Config;
    const ACCESS: Access = Access::Full;
    // Full access copies whole packets: a smaller batch keeps the region small.
    const MAX_BATCH: u32 = 64;
    const COUNTERS: &'static [&'static str] = &["corrupted"];

    fn new(c: Config, seed: u64) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&c.ratio) {
            return Err(format!("ratio: must be within 0..=1, got {}", c.ratio));
        }
        Ok(Corrupt {
            chance: Chance::new(c.ratio),
            skip: c.skip_bytes,
            rng: Rng::new(seed),
        })
    }

    fn process(&mut self, batch: &mut Batch<'_>) {
        let mut n = 0;
        for i in 0..batch.len() {
            let len = batch.data(i).len() as u32;
            if len > self.skip && self.chance.roll(&mut self.rng) {
                let bit = self.rng.below((len - self.skip) * 8);
                let byte = (self.skip + bit / 8) as usize;
                batch.data_mut(i)[byte] ^= 1 << (bit % 8);
                batch.send_modified(i, 0, 0);
                n += 1;
            } else {
                batch.forward(i);
            }
        }
        batch.count(0, n);
    }
}

export_plugin!(Corrupt);

#[cfg(test)]
mod tests {
    use super::*;
    use synthnet_sdk::Harness;

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
            let flipped: u32 = o
                .bytes
                .iter()
                .zip(&pkt)
                .map(|(a, b)| (a ^ b).count_ones())
                .sum();
            assert_eq!(flipped, 1);
        }
    }

    #[test]
    fn ratio_zero_changes_nothing() {
        let mut h = Harness::<Corrupt>::new("{}", 5).unwrap();
        h.push(&[7u8; 80], 0);
        assert_eq!(h.run(0)[0].bytes, vec![7u8; 80]);
    }
}
