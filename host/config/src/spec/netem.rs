//! netem's words: a chain entry `{"netem": "delay 100ms 10ms 25% distribution normal
//! loss gemodel 1% 10% 70% 0.1% rate 10mbit"}` in tc-netem(8)'s grammar, expanded into
//! the built-in plugins that do the same.
//!
//! ```text
//! [limit PACKETS] [delay TIME [JITTER [CORRELATION]] [distribution uniform|normal|pareto|paretonormal]]
//! [loss [random] PERCENT [CORRELATION] | loss state P13 [P31 [P32 [P23 [P14]]]]
//!       | loss gemodel P [R [1-H [1-K]]] [ecn]] [corrupt PERCENT [CORRELATION]]
//! [duplicate PERCENT [CORRELATION]] [reorder PERCENT [CORRELATION] [gap DISTANCE]]
//! [rate RATE [PACKETOVERHEAD [CELLSIZE [CELLOVERHEAD]]]]
//! [slot MIN_DELAY [MAX_DELAY] | slot distribution D DELAY JITTER [packets N] [bytes N]]
//! [seed VALUE]
//! ```
//!
//! Units as tc reads them: times `s`, `ms`, `us`, `ns` (a bare number is µs); percents
//! with or without `%` (a bare number is a percent too); rates `bit`, `kbit`, `mbit`,
//! `gbit`, `tbit`, their `ibit` (×1024) forms and `bps`, `kbps`, … in bytes (a bare
//! number is bits/s). The expansion, in the order a packet meets it:
//! `duplicate` → `loss` → `corrupt` → `delay` (with reorder and limit) → `rate` →
//! `slot`.
//!
//! Deliberate differences from the kernel, each also in `specs/README.md`:
//! - the chain is the plugins one after another, so a duplicate meets loss on its own
//!   (in netem one loss event removes one of the two copies), and `rate` queues after
//!   the delay instead of adding its serialisation time to it;
//! - `limit` (default 1000, as tc sets it) bounds the packets waiting in the delay
//!   stage; the rate stage's queue is bounded to `limit` full-size frames in bytes;
//! - correlation picks table entries by the correlated value, not its low bits (see
//!   the `delay` plugin), and `seed` seeds what netem leaves unseeded too (the
//!   correlated generators' first value, slot times, the corrupted bit's position);
//! - `corrupt` leaves GSO super-packets intact (counted `gso_spared`) where netem
//!   segments them and corrupts the first segment; a pending checksum is finished
//!   before corruption in both (see the `corrupt` plugin).
//!
//! `ecn` (anywhere on the line, as tc reads it) makes the loss stage mark ECN-capable
//! packets CE instead of dropping them (`"ecn": true` on `loss`); without a loss model
//! it is refused, as tc refuses it.

use super::fields::builtin;
use crate::plan::{SpecError, Stage};
use synthnet_builtins::{corrupt, delay, duplicate, loss, rate, slot};
use synthnet_sdk::dist::Distribution;

fn err(at: &str, msg: impl Into<String>) -> SpecError {
    SpecError {
        field: at.to_string(),
        reason: msg.into(),
    }
}

/// A netem time in ms.
fn time_ms(at: &str, what: &str, s: &str) -> Result<f64, SpecError> {
    let (num, unit) = split_unit(s);
    let v: f64 = num.parse().map_err(|_| {
        err(
            at,
            format!("{what}: {s:?} is not a time (e.g. 100ms, 10us, 1s)"),
        )
    })?;
    let scale = match unit {
        "s" | "sec" | "secs" => 1e3,
        "ms" | "msec" | "msecs" => 1.0,
        "" | "us" | "usec" | "usecs" => 1e-3,
        "ns" | "nsec" | "nsecs" => 1e-6,
        _ => return Err(err(at, format!("{what}: unknown time unit in {s:?}"))),
    };
    if !(v.is_finite() && v >= 0.0) {
        return Err(err(at, format!("{what}: must be a time ≥ 0, got {s:?}")));
    }
    Ok(v * scale)
}

/// A netem percent as a ratio 0..=1.
fn percent(at: &str, what: &str, s: &str) -> Result<f64, SpecError> {
    let num = s.strip_suffix('%').unwrap_or(s);
    let v: f64 = num.parse().map_err(|_| {
        err(
            at,
            format!("{what}: {s:?} is not a percentage (e.g. 1%, 0.5%)"),
        )
    })?;
    if !(0.0..=100.0).contains(&v) {
        return Err(err(
            at,
            format!("{what}: must be within 0%..=100%, got {s:?}"),
        ));
    }
    Ok(v / 100.0)
}

/// A tc rate in bits/s.
fn rate_bps(at: &str, s: &str) -> Result<u64, SpecError> {
    let (num, unit) = split_unit(s);
    let v: f64 = num
        .parse()
        .map_err(|_| err(at, format!("rate: {s:?} is not a rate (e.g. 10mbit)")))?;
    let lower = unit.to_ascii_lowercase();
    let scale = match lower.as_str() {
        "" | "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "tbit" => 1e12,
        "kibit" => 1024.0,
        "mibit" => 1024.0 * 1024.0,
        "gibit" => 1024.0 * 1024.0 * 1024.0,
        "tibit" => 1024.0f64.powi(4),
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        "tbps" => 8e12,
        "kibps" => 8.0 * 1024.0,
        "mibps" => 8.0 * 1024.0 * 1024.0,
        "gibps" => 8.0 * 1024.0f64.powi(3),
        "tibps" => 8.0 * 1024.0f64.powi(4),
        _ => return Err(err(at, format!("rate: unknown rate unit in {s:?}"))),
    };
    let bps = v * scale;
    if !(8.0..=1e13).contains(&bps) {
        return Err(err(
            at,
            format!("rate: must be within 8 bit/s and 10 Tbit/s, got {s:?}"),
        ));
    }
    Ok(bps.round() as u64)
}

/// A number and the unit after it (`"10ms"` → `("10", "ms")`).
fn split_unit(s: &str) -> (&str, &str) {
    let i = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(s.len());
    s.split_at(i)
}

fn integer<T: std::str::FromStr>(at: &str, what: &str, s: &str) -> Result<T, SpecError> {
    s.parse()
        .map_err(|_| err(at, format!("{what}: {s:?} is not a whole number")))
}

/// A tc size in bytes (`64k`, `1m`, `1500`, `2kb`).
fn size_bytes(at: &str, s: &str) -> Result<u64, SpecError> {
    let (num, unit) = split_unit(s);
    let v: f64 = num
        .parse()
        .map_err(|_| err(at, format!("slot bytes: {s:?} is not a size (e.g. 64k)")))?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1024.0,
        "m" | "mb" => 1024.0 * 1024.0,
        "g" | "gb" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(err(at, format!("slot bytes: unknown size unit in {s:?}"))),
    };
    if !(1.0..=1e12).contains(&(v * scale)) {
        return Err(err(
            at,
            format!("slot bytes: must be at least 1 byte, got {s:?}"),
        ));
    }
    Ok((v * scale) as u64)
}

/// `slot`'s arguments: `MIN [MAX]` or `distribution D DELAY JITTER`, then `packets N`
/// and `bytes SIZE` in any order.
fn slot(at: &str, a: &[&str]) -> Result<slot::Config, SpecError> {
    let mut m = slot::Config::default();
    let mut rest: &[&str] = if a.first() == Some(&"distribution") {
        if a.len() < 4 {
            return Err(err(
                at,
                "slot distribution: needs a name, a delay and a jitter",
            ));
        }
        let Some(d) = distribution(a[1]) else {
            return Err(err(
                at,
                format!(
                    "slot distribution: {:?} is not one of uniform, normal, pareto, paretonormal",
                    a[1]
                ),
            ));
        };
        m.distribution = Some(d);
        m.delay_ms = time_ms(at, "slot delay", a[2])?;
        m.jitter_ms = time_ms(at, "slot jitter", a[3])?;
        &a[4..]
    } else {
        let Some(min) = a.first() else {
            return Err(err(at, "slot: needs a delay (e.g. slot 800us 10ms)"));
        };
        m.min_delay_ms = time_ms(at, "slot", min)?;
        match a.get(1) {
            Some(max) if !["packets", "bytes"].contains(max) => {
                m.max_delay_ms = Some(time_ms(at, "slot", max)?);
                &a[2..]
            }
            _ => &a[1..],
        }
    };
    while let [word, value, more @ ..] = rest {
        match *word {
            "packets" => m.packets = Some(integer::<u32>(at, "slot packets", value)?),
            "bytes" => m.bytes = Some(size_bytes(at, value)?),
            other => return Err(err(at, format!("slot: unexpected {other:?}"))),
        };
        rest = more;
    }
    if let Some(w) = rest.first() {
        return Err(err(at, format!("slot: {w:?} needs a value")));
    }
    Ok(m)
}

/// One of netem's four distribution names.
fn distribution(name: &str) -> Option<Distribution> {
    Some(match name {
        "uniform" => Distribution::Uniform,
        "normal" => Distribution::Normal,
        "pareto" => Distribution::Pareto,
        "paretonormal" => Distribution::Paretonormal,
        _ => return None,
    })
}

/// The words netem options start with.
const KEYWORDS: &[&str] = &[
    "limit",
    "delay",
    "latency",
    "distribution",
    "loss",
    "drop",
    "corrupt",
    "duplicate",
    "reorder",
    "gap",
    "rate",
    "slot",
    "ecn",
    "seed",
];

/// What a netem line asks for.
#[derive(Debug, Default)]
struct Netem {
    limit: Option<u32>,
    delay: Option<delay::Config>,
    /// Whether the delay gave a jitter (a distribution needs one).
    jitter: bool,
    loss: Option<loss::Config>,
    corrupt: Option<corrupt::Config>,
    duplicate: Option<duplicate::Config>,
    reorder: Option<(f64, f64, Option<u32>)>,
    distribution: Option<Distribution>,
    rate: Option<rate::Config>,
    slot: Option<slot::Config>,
    seed: Option<u64>,
    ecn: bool,
}

/// Expand the netem line `text` into stages; stage names are `prefix-plugin`
/// (`netem-delay`, …). `at` names the entry in errors. Also returns the `seed`, if
/// the line gives one.
pub fn expand(text: &str, prefix: &str, at: &str) -> Result<(Vec<Stage>, Option<u64>), SpecError> {
    let words: Vec<&str> = text.split_whitespace().collect();
    // tc allows the command before the options: skip "tc qdisc … netem".
    let start = words
        .iter()
        .position(|w| *w == "netem")
        .map_or(0, |i| i + 1);
    let words = &words[start..];
    let mut n = Netem::default();
    let mut i = 0;
    // The optional arguments after a keyword: words until the next keyword.
    let args = |i: usize| -> Vec<&str> {
        words[i + 1..]
            .iter()
            .take_while(|w| !KEYWORDS.contains(w))
            .copied()
            .collect()
    };
    while i < words.len() {
        let word = words[i];
        // `slot distribution …`: there "distribution" belongs to slot.
        let a = if word == "slot" && words.get(i + 1) == Some(&"distribution") {
            let mut a = vec!["distribution"];
            a.extend(args(i + 1));
            a
        } else {
            args(i)
        };
        let need = |k: usize, what: &str| -> Result<(), SpecError> {
            if a.len() < k {
                Err(err(at, format!("{word}: needs {what}")))
            } else {
                Ok(())
            }
        };
        let too_many = |max: usize| -> Result<(), SpecError> {
            if a.len() > max {
                Err(err(at, format!("{word}: unexpected {:?}", a[max])))
            } else {
                Ok(())
            }
        };
        match word {
            "limit" => {
                need(1, "a number of packets")?;
                too_many(1)?;
                let l: u32 = integer(at, "limit", a[0])?;
                if l == 0 {
                    return Err(err(at, "limit: must be at least 1 packet"));
                }
                n.limit = Some(l);
            }
            "delay" | "latency" => {
                need(1, "a time (e.g. delay 100ms)")?;
                too_many(3)?;
                let mut m = delay::Config {
                    delay_ms: time_ms(at, "delay", a[0])?,
                    ..Default::default()
                };
                n.jitter = false;
                if let Some(j) = a.get(1) {
                    m.jitter_ms = time_ms(at, "jitter", j)?;
                    n.jitter = true;
                }
                if let Some(c) = a.get(2) {
                    let c = percent(at, "delay correlation", c)?;
                    // netem: a correlation of 100% would freeze the draw; our plugin
                    // takes ρ < 1.
                    m.correlation_ratio = c.min(0.999);
                }
                n.delay = Some(m);
            }
            "distribution" => {
                need(1, "a name: uniform, normal, pareto or paretonormal")?;
                too_many(1)?;
                match distribution(a[0]) {
                    Some(d) => n.distribution = Some(d),
                    None => {
                        return Err(err(
                            at,
                            format!("distribution: {:?} is not one of uniform, normal, pareto, paretonormal (a table of your own: the delay plugin's \"table_samples\")", a[0]),
                        ))
                    }
                }
            }
            "loss" | "drop" => {
                need(1, "a percentage or a model (random, state, gemodel)")?;
                let (model, rest) = match a[0] {
                    "random" => (loss::Model::Random, &a[1..]),
                    "state" => (loss::Model::FourState, &a[1..]),
                    "gemodel" => (loss::Model::GilbertElliott, &a[1..]),
                    _ => (loss::Model::Random, &a[..]),
                };
                // How many numbers each model takes, in the order netem takes them.
                let max = match model {
                    loss::Model::Random => 2,
                    loss::Model::FourState => 5,
                    loss::Model::GilbertElliott => 4,
                };
                if rest.is_empty() {
                    return Err(err(at, format!("loss {}: needs a percentage", a[0])));
                }
                if rest.len() > max {
                    return Err(err(at, format!("loss: unexpected {:?}", rest[max])));
                }
                let v = rest
                    .iter()
                    .map(|v| percent(at, "loss", v))
                    .collect::<Result<Vec<f64>, _>>()?;
                let given = |i: usize| v.get(i).copied();
                let mut m = loss::Config {
                    model,
                    ..Default::default()
                };
                match model {
                    loss::Model::Random => {
                        m.loss_ratio = v[0];
                        m.correlation_ratio = given(1).unwrap_or(0.0);
                    }
                    loss::Model::FourState => {
                        [m.p13_ratio, m.p31_ratio, m.p32_ratio, m.p23_ratio, m.p14_ratio] =
                            std::array::from_fn(given);
                    }
                    loss::Model::GilbertElliott => {
                        [m.p_ratio, m.r_ratio, m.bad_loss_ratio, m.good_loss_ratio] =
                            std::array::from_fn(given);
                    }
                }
                n.loss = Some(m);
            }
            "corrupt" => {
                need(1, "a percentage")?;
                too_many(2)?;
                n.corrupt = Some(corrupt::Config {
                    ratio: percent(at, "corrupt", a[0])?,
                    correlation_ratio: a
                        .get(1)
                        .map(|c| percent(at, "corrupt correlation", c))
                        .transpose()?
                        .unwrap_or(0.0),
                    // netem flips a bit anywhere in the frame, headers included.
                    skip_bytes: 0,
                });
            }
            "duplicate" => {
                need(1, "a percentage")?;
                too_many(2)?;
                n.duplicate = Some(duplicate::Config {
                    duplicate_ratio: percent(at, "duplicate", a[0])?,
                    correlation_ratio: a
                        .get(1)
                        .map(|c| percent(at, "duplicate correlation", c))
                        .transpose()?
                        .unwrap_or(0.0),
                });
            }
            "reorder" => {
                need(1, "a percentage")?;
                too_many(2)?;
                let p = percent(at, "reorder", a[0])?;
                let c = a
                    .get(1)
                    .map(|c| percent(at, "reorder correlation", c))
                    .transpose()?
                    .unwrap_or(0.0);
                let gap = n.reorder.and_then(|r| r.2);
                n.reorder = Some((p, c, gap));
            }
            "gap" => {
                need(1, "a distance in packets")?;
                too_many(1)?;
                let g: u32 = integer(at, "gap", a[0])?;
                let (p, c, _) = n.reorder.unwrap_or((-1.0, 0.0, None));
                n.reorder = Some((p, c, Some(g)));
            }
            "rate" => {
                need(1, "a rate (e.g. rate 10mbit)")?;
                too_many(4)?;
                let mut m = rate::Config {
                    rate_bps: rate_bps(at, a[0])?,
                    // netem has no bucket: every packet takes its own serialisation time.
                    burst_bytes: 1,
                    ..Default::default()
                };
                if let Some(o) = a.get(1) {
                    m.overhead_bytes = integer(at, "rate PACKETOVERHEAD", o)?;
                }
                if let Some(c) = a.get(2) {
                    m.cell_bytes = integer(at, "rate CELLSIZE", c)?;
                }
                if let Some(c) = a.get(3) {
                    m.cell_overhead_bytes = integer(at, "rate CELLOVERHEAD", c)?;
                }
                n.rate = Some(m);
            }
            "seed" => {
                need(1, "a number")?;
                too_many(1)?;
                n.seed = Some(integer(at, "seed", a[0])?);
            }
            "slot" => n.slot = Some(slot(at, &a)?),
            "ecn" => {
                too_many(0)?;
                n.ecn = true;
            }
            other => {
                return Err(err(
                    at,
                    format!("{other:?} is not a netem option (tc-netem(8): limit, delay, distribution, loss, ecn, corrupt, duplicate, reorder, gap, rate, slot, seed)"),
                ))
            }
        }
        i += 1 + a.len();
    }
    // netem's own consistency rules.
    if n.distribution.is_some() && !(n.delay.is_some() && n.jitter) {
        return Err(err(at, "distribution: needs a delay with a jitter (netem: distribution specified but no latency and jitter values)"));
    }
    if n.ecn {
        let l = n.loss.as_mut().ok_or_else(|| {
            err(
                at,
                "ecn: needs a loss model (netem: ecn requested without loss model)",
            )
        })?;
        l.ecn = true;
    }
    let mut delay = n.delay.take();
    if let Some((p, c, gap)) = n.reorder {
        if p < 0.0 {
            return Err(err(
                at,
                "gap: needs reorder (netem: gap specified without reorder probability)",
            ));
        }
        let d = delay.as_mut().filter(|d| d.delay_ms != 0.0).ok_or_else(|| {
            err(at, "reorder: needs a delay (netem: reordering not possible without specifying some delay)")
        })?;
        d.reorder_ratio = p;
        d.reorder_correlation_ratio = c;
        d.reorder_gap_packets = Some(gap.unwrap_or(1).max(1));
    }
    // tc sets a limit of 1000 packets when none is given.
    let limit = n.limit.unwrap_or(1000);
    if let Some(d) = delay.as_mut() {
        if let Some(dist) = n.distribution {
            d.distribution = dist;
        }
        d.limit_packets = Some(limit);
    }
    if let Some(r) = n.rate.as_mut() {
        r.queue_bytes = u64::from(limit) * 1514;
    }
    // In the order a packet meets them.
    let mut stages = Vec::new();
    let name = |plugin: &str| format!("{prefix}-{plugin}");
    if let Some(c) = &n.duplicate {
        stages.push(builtin(&name("duplicate"), c, at)?);
    }
    if let Some(c) = &n.loss {
        stages.push(builtin(&name("loss"), c, at)?);
    }
    if let Some(c) = &n.corrupt {
        stages.push(builtin(&name("corrupt"), c, at)?);
    }
    if let Some(c) = &delay {
        stages.push(builtin(&name("delay"), c, at)?);
    }
    if let Some(c) = &n.rate {
        stages.push(builtin(&name("rate"), c, at)?);
    }
    if let Some(c) = &n.slot {
        stages.push(builtin(&name("slot"), c, at)?);
    }
    Ok((stages, n.seed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn configs(line: &str) -> Vec<(String, Value)> {
        expand(line, "netem", "ingress[0]")
            .unwrap_or_else(|e| panic!("{line}: {e}"))
            .0
            .into_iter()
            .map(|s| (s.name, s.config))
            .collect()
    }

    /// Every example line of tc-netem(8) (the EXAMPLES section, and the option
    /// descriptions' examples), with what it expands to.
    #[test]
    fn the_man_pages_examples_expand_as_documented() {
        let delay = |extra: Value| {
            let mut m = json!({"delay_ms": 100.0, "limit_packets": 1000});
            for (k, v) in extra.as_object().unwrap() {
                m[k] = v.clone();
            }
            m
        };
        let cases: Vec<(&str, Vec<(&str, Value)>)> = vec![
            (
                "tc qdisc add dev eth0 root netem delay 100ms",
                vec![("netem-delay", delay(json!({})))],
            ),
            (
                "netem delay 100ms 10ms",
                vec![("netem-delay", delay(json!({"jitter_ms": 10.0})))],
            ),
            (
                "netem delay 100ms 10ms 25%",
                vec![(
                    "netem-delay",
                    delay(json!({"jitter_ms": 10.0, "correlation_ratio": 0.25})),
                )],
            ),
            (
                "netem delay 100ms 20ms distribution normal",
                vec![(
                    "netem-delay",
                    delay(json!({"jitter_ms": 20.0, "distribution": "normal"})),
                )],
            ),
            (
                "netem loss 0.1%",
                vec![("netem-loss", json!({"loss_ratio": 0.001}))],
            ),
            (
                "netem loss 0.3% 25%",
                vec![(
                    "netem-loss",
                    json!({"loss_ratio": 0.003, "correlation_ratio": 0.25}),
                )],
            ),
            (
                "netem duplicate 1%",
                vec![("netem-duplicate", json!({"duplicate_ratio": 0.01}))],
            ),
            (
                "netem corrupt 0.1%",
                vec![("netem-corrupt", json!({"ratio": 0.001, "skip_bytes": 0}))],
            ),
            (
                "netem corrupt 5% 25%",
                vec![(
                    "netem-corrupt",
                    json!({"ratio": 0.05, "correlation_ratio": 0.25, "skip_bytes": 0}),
                )],
            ),
            (
                "netem loss 1% ecn",
                vec![("netem-loss", json!({"loss_ratio": 0.01, "ecn": true}))],
            ),
            (
                "netem ecn loss gemodel 1% 10%",
                vec![(
                    "netem-loss",
                    json!({"model": "gilbert_elliott", "p_ratio": 0.01, "r_ratio": 0.1, "ecn": true}),
                )],
            ),
            (
                "netem delay 10ms reorder 25% 50%",
                vec![(
                    "netem-delay",
                    json!({"delay_ms": 10.0, "limit_packets": 1000, "reorder_ratio": 0.25, "reorder_correlation_ratio": 0.5, "reorder_gap_packets": 1}),
                )],
            ),
            (
                "netem reorder 25% gap 5 delay 10ms",
                vec![(
                    "netem-delay",
                    json!({"delay_ms": 10.0, "limit_packets": 1000, "reorder_ratio": 0.25, "reorder_gap_packets": 5}),
                )],
            ),
            (
                "netem rate 5kbit 20 100 5",
                vec![(
                    "netem-rate",
                    json!({"rate_bps": 5000, "burst_bytes": 1, "overhead_bytes": 20, "cell_bytes": 100, "cell_overhead_bytes": 5, "queue_bytes": 1514000}),
                )],
            ),
            (
                "netem loss state 1% 10% 70% 0.1%",
                vec![(
                    "netem-loss",
                    json!({"model": "four_state", "p13_ratio": 0.01, "p31_ratio": 0.1, "p32_ratio": 0.7, "p23_ratio": 0.001}),
                )],
            ),
            (
                "netem loss gemodel 1% 10% 70% 0.1%",
                vec![(
                    "netem-loss",
                    json!({"model": "gilbert_elliott", "p_ratio": 0.01, "r_ratio": 0.1, "bad_loss_ratio": 0.7, "good_loss_ratio": 0.001}),
                )],
            ),
            (
                "delay 100ms 10ms 25% distribution normal loss gemodel 1% 10% 70% 0.1% rate 10mbit",
                vec![
                    (
                        "netem-loss",
                        json!({"model": "gilbert_elliott", "p_ratio": 0.01, "r_ratio": 0.1, "bad_loss_ratio": 0.7, "good_loss_ratio": 0.001}),
                    ),
                    (
                        "netem-delay",
                        delay(
                            json!({"jitter_ms": 10.0, "correlation_ratio": 0.25, "distribution": "normal"}),
                        ),
                    ),
                    (
                        "netem-rate",
                        json!({"rate_bps": 10_000_000, "burst_bytes": 1, "queue_bytes": 1514000}),
                    ),
                ],
            ),
            (
                "limit 10000 delay 20ms rate 200mbit duplicate 2% 25%",
                vec![
                    (
                        "netem-duplicate",
                        json!({"duplicate_ratio": 0.02, "correlation_ratio": 0.25}),
                    ),
                    (
                        "netem-delay",
                        json!({"delay_ms": 20.0, "limit_packets": 10000}),
                    ),
                    (
                        "netem-rate",
                        json!({"rate_bps": 200_000_000, "burst_bytes": 1, "queue_bytes": 15_140_000}),
                    ),
                ],
            ),
        ];
        for (line, want) in cases {
            let got = configs(line);
            let want: Vec<(String, Value)> =
                want.into_iter().map(|(n, v)| (n.to_string(), v)).collect();
            assert_eq!(got, want, "{line}");
        }
        // The slot examples of the netem commit that added slots.
        assert_eq!(
            configs("delay 200us slot 800us 10ms bytes 64k packets 42 limit 512"),
            vec![
                (
                    "netem-delay".to_string(),
                    json!({"delay_ms": 0.2, "limit_packets": 512})
                ),
                (
                    "netem-slot".to_string(),
                    json!({"min_delay_ms": 0.8, "max_delay_ms": 10.0, "bytes": 65536, "packets": 42})
                ),
            ]
        );
        assert_eq!(
            configs("slot distribution pareto 1ms 2ms packets 4"),
            vec![(
                "netem-slot".to_string(),
                json!({"distribution": "pareto", "delay_ms": 1.0, "jitter_ms": 2.0, "packets": 4})
            )]
        );
        let (_, seed) = expand("delay 1ms seed 42", "netem", "x").unwrap();
        assert_eq!(seed, Some(42));
    }

    #[test]
    fn units_read_as_tc_reads_them() {
        assert_eq!(time_ms("x", "delay", "1s").unwrap(), 1000.0);
        assert_eq!(time_ms("x", "delay", "250us").unwrap(), 0.25);
        assert_eq!(time_ms("x", "delay", "100").unwrap(), 0.1);
        assert_eq!(percent("x", "loss", "5").unwrap(), 0.05);
        assert_eq!(rate_bps("x", "1mbps").unwrap(), 8_000_000);
        assert_eq!(rate_bps("x", "100kbit").unwrap(), 100_000);
        assert_eq!(rate_bps("x", "2kibit").unwrap(), 2048);
    }

    #[test]
    fn unknown_and_unsupported_words_are_named() {
        for (line, word) in [
            ("delay 10ms jiggle 5", "jiggle"),
            ("delay 10 parsecs", "parsecs"),
            ("slot 800us 10ms packets", "packets"),
            ("slot distribution gamma 1ms 1ms", "gamma"),
            ("delay 10ms ecn", "ecn"),
            ("loss 1% ecn 5", "5"),
            ("delay 10ms distribution gamma", "gamma"),
            ("distribution normal delay 10ms", "distribution"),
            ("gap 5 delay 10ms", "gap"),
            ("reorder 25%", "reorder"),
            ("loss 200%", "loss"),
            ("rate 10furlongs", "rate"),
            ("loss gemodel 1% 2% 3% 4% 5%", "5%"),
        ] {
            let e = expand(line, "netem", "ingress[0]").unwrap_err();
            assert!(e.reason.contains(word), "{line}: {e}");
            assert_eq!(e.field, "ingress[0]");
        }
    }
}
