//! `synthnet check`'s description of a plan: one line per stage, with every setting
//! and its unit.

use crate::plan::{Plan, Shape, Stage, BASE_COST_BYTES, STAGE_COST_BYTES};
use serde_json::Value;
use synthnet_core::flow::FlowMatch;

/// One line per stage, with every setting and its unit, for `synthnet check`.
pub fn describe(plan: &Plan) -> String {
    let mut out = String::new();
    let shape = match plan.shape {
        Shape::SyntheticNetworkSimple => "synthetic-network {ingress, egress}",
        Shape::SyntheticNetworkFlows => "synthetic-network {default_link, flows}",
        Shape::Native => "native",
    };
    out.push_str(&format!("shape: {shape}\nseed: {}\n", plan.seed));
    let l = &plan.limits;
    out.push_str(&format!(
        "limits: pool_packets={} packets (+{} large), hold_packets={} packets per plugin, plugin_memory_mib={} MiB, max_flows={}, max_stages={}\n",
        l.pool_packets, l.pool_large_packets, l.hold_packets, l.plugin_memory_mib, l.max_flows, l.max_stages
    ));
    let stages = plan.stage_count();
    out.push_str(&format!(
        "memory: about {} MiB at start ({} MiB + {stages} stages × {} KiB, {} flows); each plugin may grow to {} MiB\n",
        plan.memory_at_start().div_ceil(1 << 20),
        BASE_COST_BYTES >> 20,
        STAGE_COST_BYTES >> 10,
        plan.ingress.flows.len(),
        l.plugin_memory_mib
    ));
    for (dir, d, key) in [
        ("ingress (outer → inner)", &plan.ingress, "source"),
        ("egress (inner → outer)", &plan.egress, "destination"),
    ] {
        out.push_str(&format!("{dir}:\n"));
        for f in &d.flows {
            out.push_str(&format!(
                "  flow {:?} ({}): {}\n",
                f.label,
                describe_match(&f.matcher, key),
                describe_chain(&f.chain)
            ));
        }
        let what = if d.flows.is_empty() {
            "all packets"
        } else {
            "default"
        };
        out.push_str(&format!("  {what}: {}\n", describe_chain(&d.default)));
    }
    if let (Some(first), Some(last)) = (plan.schedule.first(), plan.schedule.last()) {
        out.push_str(&format!(
            "schedule: {} changes from {:.3} s to {:.3} s after this spec is applied\n",
            plan.schedule.len(),
            first.at_ns as f64 / 1e9,
            last.at_ns as f64 / 1e9
        ));
        for step in plan.schedule.iter().take(20) {
            let at = step.at_ns as f64 / 1e9;
            if let Some(p) = &step.plan {
                for (dir, d) in [("ingress", &p.ingress), ("egress", &p.egress)] {
                    out.push_str(&format!(
                        "  at {at:.3} s, {dir}: {}\n",
                        describe_chain(&d.default)
                    ));
                }
            }
            if let Some(c) = &step.command {
                let mut text = c.command.to_string();
                if text.len() > 200 {
                    let cut = (0..=200).rev().find(|&i| text.is_char_boundary(i));
                    text.truncate(cut.unwrap_or(0));
                    text.push('…');
                }
                out.push_str(&format!("  at {at:.3} s, command to {}: {text}\n", c.stage));
            }
        }
        if plan.schedule.len() > 20 {
            out.push_str(&format!("  … and {} more\n", plan.schedule.len() - 20));
        }
    }
    out
}

fn describe_match(m: &FlowMatch, key: &str) -> String {
    let mut parts = vec![];
    if let Some(p) = m.prefix {
        parts.push(format!("{key} {p}"));
    }
    if let Some(p) = m.protocol {
        parts.push(match p {
            6 => "tcp".into(),
            17 => "udp".into(),
            1 => "icmp".into(),
            58 => "icmpv6".into(),
            n => format!("protocol {n}"),
        });
    }
    if let Some((lo, hi)) = m.ports {
        parts.push(if lo == hi {
            format!("{key} port {lo}")
        } else {
            format!("{key} ports {lo}-{hi}")
        });
    }
    if parts.is_empty() {
        "everything".into()
    } else {
        parts.join(", ")
    }
}

fn describe_chain(chain: &[Stage]) -> String {
    if chain.is_empty() {
        return "no impairment (forwarded unchanged)".into();
    }
    chain
        .iter()
        .map(|s| {
            let settings = match &s.config {
                Value::Object(m) if !m.is_empty() => m
                    .iter()
                    .map(|(k, v)| format!("{k}={v}{}", unit_of(k)))
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => "defaults".into(),
            };
            let name = if s.name == s.plugin.to_string() {
                s.name.clone()
            } else {
                format!("{} [{}]", s.name, s.plugin)
            };
            format!("{name}({settings})")
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

/// The unit a field name carries, spelled out.
fn unit_of(field: &str) -> &'static str {
    match field.rsplit('_').next() {
        Some("ms") => " ms",
        Some("bps") => " bit/s",
        Some("bytes") => " B",
        Some("ratio") => " (ratio)",
        Some("packets") => " packets",
        _ if field == "strength" => " (ratio)",
        _ => "",
    }
}
