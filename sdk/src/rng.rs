//! Seeded pseudo-random numbers for plugins: xoshiro256++ seeded through splitmix64.
//!
//! The host hands every plugin instance a 64-bit seed, so a run can be reproduced exactly.
//! Everything here is 64-bit integer math: wasm32 has no native 128-bit multiply, and one
//! `u128` in a range reduction halved a plugin's throughput when we measured it.

/// splitmix64 step: a good way to expand one seed into many independent words.
#[inline]
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256++ (Blackman & Vigna): fast, small state, passes BigCrush.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Rng { s }
    }

    /// The internal state, for snapshots.
    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    /// Rebuild from [`Rng::state`]. An all-zero state is invalid for xoshiro and is
    /// replaced by a seeded one.
    pub fn from_state(s: [u64; 4]) -> Self {
        if s == [0; 4] {
            Rng::new(0)
        } else {
            Rng { s }
        }
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let result = (self.s[0].wrapping_add(self.s[3]))
            .rotate_left(23)
            .wrapping_add(self.s[0]);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)` for `n <= 2^32` by a 32×32→64 multiply (Lemire's reduction
    /// without the rejection step: bias below 2^-32 × n, far under any test's resolution).
    #[inline]
    pub fn below(&mut self, n: u32) -> u32 {
        ((self.next_u32() as u64 * n as u64) >> 32) as u32
    }

    /// Uniform in `[0, n]` for any `n` (used for nanosecond delays).
    #[inline]
    pub fn up_to(&mut self, n: u64) -> u64 {
        if n < u32::MAX as u64 {
            // The common case (under 4.29 s in ns): a 32×32→64 multiply, no float.
            return (self.next_u32() as u64 * (n + 1)) >> 32;
        }
        // Floating point keeps this free of 128-bit math; f64 has 53 bits, enough for
        // delays up to ~104 days at nanosecond resolution.
        let x = (self.next_f64() * (n as f64 + 1.0)) as u64;
        x.min(n)
    }

    /// Standard normal deviate (Box–Muller; one of the pair is discarded for simplicity
    /// and so that every call consumes exactly two words, which keeps replays aligned).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        sqrt(-2.0 * ln(u1)) * cos(2.0 * core::f64::consts::PI * u2)
    }
}

// The transcendental functions come from the `libm` crate on every target, so a plugin
// compiled natively (the SDK's harness, the host's native twins) and the same plugin
// compiled to wasm draw the same values to the last bit: std's `ln`/`cos` call the
// platform's libm natively (glibc here) and a Rust port of musl's on wasm32, which need
// not agree in the last ulp. (`sqrt` is correctly rounded by IEEE 754 everywhere.)
#[inline]
fn ln(x: f64) -> f64 {
    libm::log(x)
}
#[inline]
fn cos(x: f64) -> f64 {
    libm::cos(x)
}
#[inline]
fn sqrt(x: f64) -> f64 {
    libm::sqrt(x)
}

/// A Bernoulli trial with probability `p`, precomputed as an integer threshold so the
/// per-packet cost is one RNG step and one compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chance {
    threshold: u64,
    always: bool,
}

impl Chance {
    /// `p` is clamped to `[0, 1]`; NaN means never.
    pub fn new(p: f64) -> Self {
        if p.is_nan() || p <= 0.0 {
            Chance {
                threshold: 0,
                always: false,
            }
        } else if p >= 1.0 {
            Chance {
                threshold: u64::MAX,
                always: true,
            }
        } else {
            // 2^64 as f64 is exact; the product is < 2^64 so the cast cannot saturate.
            Chance {
                threshold: (p * 18_446_744_073_709_551_616.0) as u64,
                always: false,
            }
        }
    }

    #[inline]
    pub fn roll(&self, rng: &mut Rng) -> bool {
        let x = rng.next_u64();
        self.always || x < self.threshold
    }

    pub fn is_never(&self) -> bool {
        self.threshold == 0 && !self.always
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_different_seed_differs() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let mut c = Rng::new(43);
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..100).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn chance_frequency_within_three_sigma() {
        let mut rng = Rng::new(7);
        let p = 0.1;
        let n = 200_000;
        let c = Chance::new(p);
        let hits = (0..n).filter(|_| c.roll(&mut rng)).count() as f64;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        assert!((hits - n as f64 * p).abs() < 3.0 * sigma, "hits {hits}");
        assert!(Chance::new(1.0).roll(&mut rng));
        assert!(!Chance::new(0.0).roll(&mut rng));
    }

    #[test]
    fn below_and_up_to_stay_in_range() {
        let mut rng = Rng::new(1);
        for _ in 0..10_000 {
            assert!(rng.below(10) < 10);
            assert!(rng.up_to(5) <= 5);
        }
        let mean = (0..100_000).map(|_| rng.next_f64()).sum::<f64>() / 100_000.0;
        assert!((mean - 0.5).abs() < 0.01);
    }
}
