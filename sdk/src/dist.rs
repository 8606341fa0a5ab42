//! netem's delay distributions, for plugins that draw times: the tables iproute2 ships
//! (`normal`, `pareto`, `paretonormal`), rebuilt the way its generators build them —
//! 4096 entries of an inverse CDF scaled by 8192 and clamped to 16 bits, so a draw is
//! μ + σ·t/8192 — and tables made from samples the way its `maketable` makes them.

use serde::{Deserialize, Serialize};

/// netem's table scale: a table value of 8192 is one σ.
pub const DIST_SCALE: f64 = 8192.0;
/// Entries of the shipped tables.
pub const TABLE_SIZE: usize = 4096;

#[derive(Deserialize, Serialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    #[default]
    Uniform,
    Normal,
    Pareto,
    Paretonormal,
    Table,
}

/// The standard normal's inverse CDF (Acklam's rational approximation, relative error
/// below 1.2e-9: far finer than a table step of 1/8192).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * libm::log(p)).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * libm::log(1.0 - p)).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

fn clamp16(v: f64) -> i16 {
    v.round().clamp(i16::MIN as f64, i16::MAX as f64) as i16
}

/// iproute2's pareto generator (a = 3): entry `k` of 4096, before clamping.
fn pareto_value(k: usize) -> f64 {
    let u = (65536 - 16 * k) as f64 / 65536.0;
    (1.0 / libm::pow(u, 1.0 / 3.0) - 1.5) * (4.0 / 3.0) * DIST_SCALE
}

/// netem's normal table: entry `k` is where the CDF reaches (4k + ½)/16384.
fn normal_value(k: usize) -> f64 {
    normal_quantile((4 * k) as f64 / 16384.0 + 0.5 / 16384.0) * DIST_SCALE
}

/// The table of a shipped distribution (`None` for uniform).
pub fn shipped_table(d: Distribution) -> Option<Vec<i16>> {
    let f: fn(usize) -> i16 = match d {
        Distribution::Uniform | Distribution::Table => return None,
        Distribution::Normal => |k| clamp16(normal_value(k)),
        Distribution::Pareto => |k| clamp16(pareto_value(k).min(32767.0)),
        // iproute2's paretonormal: (normal + 3·pareto) / 4, each rounded first.
        Distribution::Paretonormal => |k| {
            let n = normal_value(k).round();
            let p = pareto_value(4 * k / 16).min(32767.0).round();
            clamp16(((n + 3.0 * p) / 4.0).trunc())
        },
    };
    Some((0..TABLE_SIZE).map(f).collect())
}

/// A table from measured samples, as netem's `maketable`: normalised to mean 0 and
/// deviation 1, then its inverse CDF at 4096 evenly spaced quantiles.
pub fn table_from_samples(samples: &[f64]) -> Result<Vec<i16>, String> {
    if samples.len() < 2 || samples.iter().any(|s| !s.is_finite()) {
        return Err("table_samples: needs at least 2 finite numbers".into());
    }
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let sd = (samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
    if sd == 0.0 {
        return Err("table_samples: all the same: no spread to make a table of".into());
    }
    let mut z: Vec<f64> = samples.iter().map(|s| (s - mean) / sd).collect();
    z.sort_by(f64::total_cmp);
    Ok((0..TABLE_SIZE)
        .map(|k| {
            let q = (k as f64 + 0.5) / TABLE_SIZE as f64;
            clamp16(z[((q * n) as usize).min(z.len() - 1)] * DIST_SCALE)
        })
        .collect())
}

/// Mean and standard deviation of a table's entries in σ units (of `2u − 1` for
/// uniform).
pub fn moments(table: Option<&[i16]>) -> (f64, f64) {
    match table {
        None => (0.0, (1.0f64 / 3.0).sqrt()),
        Some(t) => {
            let n = t.len() as f64;
            let m = t.iter().map(|&v| v as f64 / DIST_SCALE).sum::<f64>() / n;
            let var = t
                .iter()
                .map(|&v| (v as f64 / DIST_SCALE - m).powi(2))
                .sum::<f64>()
                / n;
            (m, var.sqrt())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_normal_table_is_netems() {
        let t = shipped_table(Distribution::Normal).unwrap();
        // As iproute2's generator: entry 0 is where the CDF reaches ½/16384, about
        // -4.01σ, clamped to 16 bits; the middle entry is about 0.
        assert_eq!(t.len(), 4096);
        assert_eq!(t[0], -32768);
        assert!(t[2048].abs() <= 2, "{}", t[2048]);
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
        // Pareto (a = 3), shifted by its mean 1.5 and scaled by 4/3: its first entry is
        // (1 - 1.5)·4/3·8192.
        let p = shipped_table(Distribution::Pareto).unwrap();
        assert_eq!(p[0], -5461);
        assert_eq!(*p.last().unwrap(), 32767);
    }

    #[test]
    fn quantile_is_accurate() {
        assert!(normal_quantile(0.5).abs() < 1e-12);
        assert!((normal_quantile(0.975) - 1.959_963_985).abs() < 1e-8);
        assert!((normal_quantile(0.001) + 3.090_232_306).abs() < 1e-8);
    }

    #[test]
    fn table_from_samples_has_unit_spread() {
        let samples: Vec<f64> = (0..1000).map(|i| (i % 10) as f64).collect();
        let t = table_from_samples(&samples).unwrap();
        let (m, sd) = moments(Some(&t));
        assert!(m.abs() < 0.01 && (sd - 1.0).abs() < 0.02, "{m} {sd}");
        assert!(table_from_samples(&[1.0, 1.0]).is_err());
    }
}
