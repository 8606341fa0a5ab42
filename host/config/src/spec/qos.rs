//! synthetic-network's two shapes: `{"ingress": QoS, "egress": QoS}` and
//! `{"default_link": {..}, "flows": [..]}`. A [`QoS`] object maps onto the built-in
//! plugins in synthetic-network's order: rate, loss, latency, jitter ([`qos_chain`]),
//! each stage's config a typed value of `synthnet-builtins`.

use super::fields::{builtin, check_label, non_negative, parse_prefix, ratio, typed};
use crate::plan::{err, DirectionPlan, FlowPlan, Limits, Plan, Shape, SpecError, Stage};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::IpAddr;
use synthnet_builtins::{jitter, latency, loss, rate};
use synthnet_core::flow::{FlowMatch, Prefix};
use synthnet_sdk::MAX_DELAY_MS;

/// synthetic-network's QoS object. Every field is optional: left out means no
/// impairment of that kind.
#[derive(Deserialize, Serialize, Debug, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QoS {
    /// bits per second; absent = unlimited, 0 = blocked (synthetic-network's meaning).
    pub rate: Option<f64>,
    /// ratio 0..=1.
    pub loss: Option<f64>,
    /// ms.
    pub latency: Option<f64>,
    /// ms.
    pub jitter: Option<f64>,
    /// ratio 0..=1 of packets jittered; absent with a jitter means 1.
    pub jitter_strength: Option<f64>,
    pub reorder_packets: Option<bool>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
struct CompatLink {
    #[serde(default)]
    ingress: QoS,
    #[serde(default)]
    egress: QoS,
}

/// synthetic-network's flow: IPv4 address (0 = any), protocol (0 = any), port range
/// (only for TCP and UDP).
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct CompatFlowMatch {
    #[serde(default)]
    ip: IpField,
    #[serde(default)]
    protocol: u8,
    #[serde(default)]
    port_min: u16,
    #[serde(default = "max_port")]
    port_max: u16,
}

fn max_port() -> u16 {
    u16::MAX
}

/// An address given as synthetic-network's u32 (IPv4 with the first octet in the low
/// byte: 10.0.0.1 is 16777226; 0 = any) or
/// as a string (`"10.0.0.1"`, `"10.0.0.0/8"`, `"2001:db8::/32"`).
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(untagged)]
enum IpField {
    #[default]
    Any,
    Number(u32),
    Text(String),
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct CompatFlow {
    label: String,
    flow: CompatFlowMatch,
    #[serde(default)]
    link: CompatLink,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct CompatFlows {
    #[serde(default)]
    default_link: CompatLink,
    #[serde(default)]
    flows: Vec<CompatFlow>,
}

/// The fastest rate a QoS object may ask for: 1 Tbit/s (its shaper's queue of 100 ms then
/// stays within what the rate plugin accepts).
const MAX_COMPAT_RATE_BPS: f64 = 1e12;

/// A QoS object as a chain of built-in plugins (rate, loss, latency, jitter), leaving
/// out what it does not ask for.
pub fn qos_chain(q: &QoS, at: &str) -> Result<Vec<Stage>, SpecError> {
    let blocked = q.rate == Some(0.0);
    let rate = non_negative(q.rate, &format!("{at}.rate"), "bits/s")?;
    let loss = ratio(q.loss, &format!("{at}.loss"))?;
    let latency = non_negative(q.latency, &format!("{at}.latency"), "ms")?;
    let jitter = non_negative(q.jitter, &format!("{at}.jitter"), "ms")?;
    let strength = ratio(
        Some(q.jitter_strength.unwrap_or(1.0)),
        &format!("{at}.jitter_strength"),
    )?;
    if rate > 0.0 && rate < 8.0 {
        return Err(err(
            format!("{at}.rate"),
            format!("must be 0 (unlimited) or at least 8 bits/s, got {rate}"),
        ));
    }
    // What the plugins take, said in the user's own field names.
    if rate > MAX_COMPAT_RATE_BPS {
        return Err(err(
            format!("{at}.rate"),
            format!("must be at most {MAX_COMPAT_RATE_BPS} bits/s (1 Tbit/s), got {rate}"),
        ));
    }
    for (field, v) in [("latency", latency), ("jitter", jitter)] {
        if v > MAX_DELAY_MS {
            return Err(err(
                format!("{at}.{field}"),
                format!("must be at most {MAX_DELAY_MS} ms (a day), got {v}"),
            ));
        }
    }
    let mut chain = Vec::new();
    if blocked {
        // synthetic-network's `rate: 0`: nothing gets through.
        let all = loss::Config {
            loss_ratio: 1.0,
            ..Default::default()
        };
        chain.push(builtin("blocked", &all, at)?);
    }
    if rate > 0.0 {
        let rate_bps = rate.round() as u64;
        // A bucket of 1 ms of traffic (at least one full frame) and a queue of 100 ms
        // (at least 64 KiB): what a home router's shaper gives.
        let shaper = rate::Config {
            rate_bps,
            burst_bytes: (rate_bps / 8 / 1000).max(1514),
            queue_bytes: (rate_bps / 8 / 10).max(64 * 1024),
            ..Default::default()
        };
        chain.push(builtin("rate", &shaper, at)?);
    }
    if loss > 0.0 {
        let c = loss::Config {
            loss_ratio: loss,
            ..Default::default()
        };
        chain.push(builtin("loss", &c, at)?);
    }
    if latency > 0.0 {
        let c = latency::Config { delay_ms: latency };
        chain.push(builtin("latency", &c, at)?);
    }
    if jitter > 0.0 && strength > 0.0 {
        let c = jitter::Config {
            jitter_ms: jitter,
            strength,
            reorder: q.reorder_packets.unwrap_or(false),
        };
        chain.push(builtin("jitter", &c, at)?);
    }
    Ok(chain)
}

/// synthetic-network's `{"default_link", "flows"}` shape as a plan.
pub(crate) fn flows_plan(value: &Value) -> Result<Plan, SpecError> {
    let spec: CompatFlows = typed(value)?;
    let mut flows = (Vec::new(), Vec::new());
    let mut labels = std::collections::HashSet::new();
    for (i, f) in spec.flows.iter().enumerate() {
        let at = format!("flows[{i}]");
        check_label(&f.label, &format!("{at}.label"), &mut labels)?;
        let prefix = match &f.flow.ip {
            IpField::Any | IpField::Number(0) => None,
            // The first octet is the low byte, as synthetic-network writes it.
            IpField::Number(n) => Some(Prefix {
                addr: IpAddr::V4(n.to_le_bytes().into()),
                len: 32,
            }),
            IpField::Text(t) => Some(parse_prefix(t, &format!("{at}.flow.ip"))?),
        };
        let protocol = (f.flow.protocol != 0).then_some(f.flow.protocol);
        if f.flow.port_min > f.flow.port_max {
            return Err(err(
                format!("{at}.flow.port_min"),
                format!("{} is above port_max {}", f.flow.port_min, f.flow.port_max),
            ));
        }
        let ports = (matches!(protocol, Some(6) | Some(17))
            && (f.flow.port_min, f.flow.port_max) != (0, u16::MAX))
            .then_some((f.flow.port_min, f.flow.port_max));
        let matcher = FlowMatch {
            prefix,
            protocol,
            ports,
        };
        let ing = qos_chain(&f.link.ingress, &format!("{at}.link.ingress"))?;
        let eg = qos_chain(&f.link.egress, &format!("{at}.link.egress"))?;
        flows.0.push(FlowPlan {
            label: f.label.clone(),
            matcher: matcher.clone(),
            chain: ing,
        });
        flows.1.push(FlowPlan {
            label: f.label.clone(),
            matcher,
            chain: eg,
        });
    }
    Ok(Plan {
        shape: Shape::SyntheticNetworkFlows,
        seed: 0,
        limits: Limits::default(),
        ingress: DirectionPlan {
            default: qos_chain(&spec.default_link.ingress, "default_link.ingress")?,
            flows: flows.0,
        },
        egress: DirectionPlan {
            default: qos_chain(&spec.default_link.egress, "default_link.egress")?,
            flows: flows.1,
        },
        schedule: Vec::new(),
    })
}

/// synthetic-network's `{"ingress", "egress"}` shape as a plan.
pub(crate) fn simple_plan(value: &Value) -> Result<Plan, SpecError> {
    let spec: CompatLink = typed(value)?;
    Ok(Plan {
        shape: Shape::SyntheticNetworkSimple,
        seed: 0,
        limits: Limits::default(),
        ingress: DirectionPlan {
            default: qos_chain(&spec.ingress, "ingress")?,
            flows: vec![],
        },
        egress: DirectionPlan {
            default: qos_chain(&spec.egress, "egress")?,
            flows: vec![],
        },
        schedule: Vec::new(),
    })
}
