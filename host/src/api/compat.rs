//! synthetic-network's HTTP interface, so that its JS client and web UI work against
//! synthnet unmodified (`../shared/research/control-plane-and-docker.md` §1).
//!
//! - `GET /qos`: the running spec in its `{"default_link", "flows"}` shape, with only
//!   its six QoS keys (its client throws on any other). Any spec whose chains are made
//!   of the QoS built-ins (rate, loss, latency, jitter) projects onto it, whatever shape
//!   it was written in; one that uses other plugins cannot, and gets a 409 naming the
//!   stage.
//! - `POST /qos`: replace the spec (any shape); 200 `OK` once applied, a 422 JSON error
//!   naming the field when refused.
//! - `GET /top/ingress.profile`, `GET /top/egress.profile`: its per-flow counters in
//!   its binary layout: 2048 slots of 24 bytes, little-endian `packets`, `bits`, `id`
//!   with `id = port << 48 | protocol << 32 | ipv4` (the address with its first octet in
//!   the low byte), slot `fmix64(id) & 2047` (a collision overwrites, as there),
//!   `bits = (20 + max(len, 60) + 4) × 8` per packet (preamble and gap, the padded
//!   frame, FCS). Counted after impairment; ingress keyed by source, egress by
//!   destination; other than IPv4 counts under id 0, as there.

use super::{change, error_response, json_body, ApiError, Shared};
use crate::daemon::board::Pair;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;
use synthnet_config::plan::{Plan, Stage};
use synthnet_core::flow::FlowMatch;
use synthnet_core::Direction;
use synthnet_runtime::PluginRef;

/// Slots of a profile.
pub const PROFILE_SLOTS: usize = 2048;
/// Bytes of a slot: packets, bits, id.
pub const SLOT_BYTES: usize = 24;

pub async fn get_qos(State(api): State<Shared>) -> Response {
    match qos_of(&api.worker.spec().plan) {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn post_qos(State(api): State<Shared>, body: Bytes) -> Response {
    let v = match json_body(&body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    match change(&api, crate::daemon::worker::Change::Replace(v)).await {
        // synthetic-network answers `OK`; its client reads only the status.
        Ok(_) => (StatusCode::OK, "OK").into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn profile(State(api): State<Shared>, Path(file): Path<String>) -> Response {
    let dir = match file.as_str() {
        "ingress.profile" => Direction::Ingress,
        "egress.profile" => Direction::Egress,
        _ => {
            return error_response(
                StatusCode::NOT_FOUND,
                "the profiles are /top/ingress.profile and /top/egress.profile",
                None,
            )
        }
    };
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        profile_bytes(&api.board.read(), dir),
    )
        .into_response()
}

/// A stage as synthetic-network's QoS keys, or why it has none.
fn qos_keys(s: &Stage, q: &mut Map<String, Value>) -> Result<(), String> {
    use synthnet_builtins::{jitter, latency, loss, rate};
    let PluginRef::Builtin(name) = &s.plugin else {
        return Err(format!("stage {:?} runs a .wasm file", s.name));
    };
    // The stage's config read back through its plugin's own type: a renamed field
    // fails to compile here, not to answer.
    fn typed<C: serde::de::DeserializeOwned>(s: &Stage) -> Result<C, String> {
        serde_json::from_value(s.config.clone())
            .map_err(|e| format!("stage {:?} has a config its plugin refuses: {e}", s.name))
    }
    let cannot = || {
        format!(
            "stage {:?} runs plugin {name:?} as synthetic-network's QoS keys cannot say",
            s.name
        )
    };
    match name.as_str() {
        "loss" => {
            let c: loss::Config = typed(s)?;
            if c.model != loss::Model::Random || c.correlation_ratio != 0.0 {
                return Err(cannot());
            }
            if s.name == "blocked" && c.loss_ratio == 1.0 {
                // synthetic-network's `rate: 0`, as the spec reader writes it.
                q.insert("rate".into(), json!(0));
            } else {
                q.insert("loss".into(), json!(c.loss_ratio));
            }
        }
        "rate" => {
            let c: rate::Config = typed(s)?;
            q.insert("rate".into(), json!(c.rate_bps as f64));
        }
        "latency" => {
            let c: latency::Config = typed(s)?;
            q.insert("latency".into(), json!(c.delay_ms));
        }
        "jitter" => {
            let c: jitter::Config = typed(s)?;
            q.insert("jitter".into(), json!(c.jitter_ms));
            q.insert("jitter_strength".into(), json!(c.strength));
            q.insert("reorder_packets".into(), json!(c.reorder));
        }
        _ => return Err(cannot()),
    }
    Ok(())
}

fn qos(chain: &[Stage], at: &str) -> Result<Value, ApiError> {
    let mut q = Map::new();
    for s in chain {
        qos_keys(s, &mut q).map_err(|e| ApiError {
            status: StatusCode::CONFLICT,
            message: format!("the running spec does not fit synthetic-network's /qos shape: {e} (see GET /api/v1/spec)"),
            field: Some(at.into()),
        })?;
    }
    Ok(Value::Object(q))
}

/// synthetic-network's `flow` object for a matcher, or why there is none.
fn flow_of(m: &FlowMatch, at: &str) -> Result<Value, ApiError> {
    let ip = match m.prefix {
        None => 0,
        Some(p) => match p.addr {
            IpAddr::V4(a) if p.len == 32 => u32::from_le_bytes(a.octets()),
            _ => {
                return Err(ApiError {
                    status: StatusCode::CONFLICT,
                    message: format!("the running spec matches {p}, which synthetic-network's flow.ip (one IPv4 address) cannot say (see GET /api/v1/spec)"),
                    field: Some(format!("{at}.ip")),
                })
            }
        },
    };
    let (port_min, port_max) = m.ports.unwrap_or((0, u16::MAX));
    Ok(json!({
        "ip": ip,
        "protocol": m.protocol.unwrap_or(0),
        "port_min": port_min,
        "port_max": port_max,
    }))
}

/// The plan in synthetic-network's `{"default_link", "flows"}` shape.
pub fn qos_of(plan: &Plan) -> Result<Value, ApiError> {
    let mut flows: BTreeMap<usize, (String, Value, Map<String, Value>)> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for d in Direction::BOTH {
        for f in &plan.direction(d).flows {
            let at = format!("{d}.flows.{}", f.label);
            let i = match order.iter().position(|l| *l == f.label) {
                Some(i) => i,
                None => {
                    order.push(f.label.clone());
                    let flow = flow_of(&f.matcher, &at)?;
                    flows.insert(order.len() - 1, (f.label.clone(), flow, Map::new()));
                    order.len() - 1
                }
            };
            let q = qos(&f.chain, &at)?;
            if let Some(entry) = flows.get_mut(&i) {
                entry.2.insert(d.name().into(), q);
            }
        }
    }
    let flows: Vec<Value> = flows
        .into_values()
        .map(|(label, flow, mut link)| {
            for d in Direction::BOTH {
                link.entry(d.name()).or_insert_with(|| json!({}));
            }
            json!({"label": label, "flow": flow, "link": link})
        })
        .collect();
    Ok(json!({
        "default_link": {
            "ingress": qos(&plan.ingress.default, "ingress.default")?,
            "egress": qos(&plan.egress.default, "egress.default")?,
        },
        "flows": flows,
    }))
}

/// MurmurHash3's 64-bit finaliser, synthetic-network's slot hash.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The profile of direction `dir` from the latest publication (all zero when flow
/// accounting is off: their UI then shows no flows).
pub fn profile_bytes(pair: &Pair, dir: Direction) -> Vec<u8> {
    // Per id: packets, bits.
    let mut ids: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let sent = pair
        .latest
        .flows
        .iter()
        .flatten()
        .filter(|(d, _)| *d == dir)
        .flat_map(|(_, f)| &f.sent.rows);
    for (k, s) in sent {
        let (addr, port) = match dir {
            Direction::Ingress => (k.src, k.src_port),
            Direction::Egress => (k.dst, k.dst_port),
        };
        let id = match addr {
            IpAddr::V4(a) => {
                u64::from(port) << 48
                    | u64::from(k.protocol) << 32
                    | u64::from(u32::from_le_bytes(a.octets()))
            }
            IpAddr::V6(_) => 0,
        };
        let e = ids.entry(id).or_default();
        e.0 += s.packets;
        // Per packet: 20 bytes of preamble and gap, the frame padded to 60, the FCS.
        e.1 += (s.padded_bytes + 24 * s.packets) * 8;
    }
    let mut out = vec![0u8; PROFILE_SLOTS * SLOT_BYTES];
    for (id, (packets, bits)) in ids {
        let at = (fmix64(id) as usize & (PROFILE_SLOTS - 1)) * SLOT_BYTES;
        out[at..at + 8].copy_from_slice(&packets.to_le_bytes());
        out[at + 8..at + 16].copy_from_slice(&bits.to_le_bytes());
        out[at + 16..at + 24].copy_from_slice(&id.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path as FsPath;

    #[test]
    fn every_qos_spec_projects_back_onto_itself() {
        let text = r#"{"default_link": {"ingress": {"rate": 10000000, "loss": 0.01, "latency": 20, "jitter": 5, "jitter_strength": 0.3, "reorder_packets": true},
                                          "egress": {"rate": 0}},
                       "flows": [{"label": "dns", "flow": {"ip": 16777226, "protocol": 17, "port_min": 53, "port_max": 53},
                                  "link": {"ingress": {"latency": 100}, "egress": {}}}]}"#;
        let plan = synthnet_config::spec::parse(text, FsPath::new(".")).unwrap();
        let v = qos_of(&plan).unwrap();
        assert_eq!(
            v["default_link"]["ingress"],
            json!({"rate": 10000000.0, "loss": 0.01, "latency": 20.0, "jitter": 5.0, "jitter_strength": 0.3, "reorder_packets": true})
        );
        assert_eq!(v["default_link"]["egress"], json!({"rate": 0}));
        assert_eq!(v["flows"][0]["flow"]["ip"], json!(16777226));
        assert_eq!(v["flows"][0]["link"]["ingress"], json!({"latency": 100.0}));
        // And what it says reads back as the same plan.
        let again = synthnet_config::spec::parse(&v.to_string(), FsPath::new(".")).unwrap();
        assert_eq!(again.ingress, plan.ingress);
        assert_eq!(again.egress, plan.egress);
    }

    #[test]
    fn a_plugin_qos_cannot_say_is_a_conflict_naming_it() {
        let text = r#"{"ingress": [{"plugin": "corrupt", "config": {"ratio": 0.1}}]}"#;
        let plan = synthnet_config::spec::parse(text, FsPath::new(".")).unwrap();
        let e = qos_of(&plan).unwrap_err();
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert!(e.message.contains("corrupt"), "{}", e.message);
        // A loss model other than independent random loss has no `loss` key either:
        // answered as a conflict, not as `loss: 0`.
        let text = r#"{"ingress": [{"plugin": "loss", "config": {"model": "gilbert_elliott", "p_ratio": 0.01, "r_ratio": 0.3}}]}"#;
        let plan = synthnet_config::spec::parse(text, FsPath::new(".")).unwrap();
        let e = qos_of(&plan).unwrap_err();
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert!(e.message.contains("\"loss\""), "{}", e.message);
    }

    #[test]
    fn fmix64_is_murmur3s_finaliser() {
        assert_eq!(fmix64(0), 0);
        // Known value of MurmurHash3's fmix64.
        assert_eq!(fmix64(1), 0xb456_bcfc_34c2_cb2c);
    }
}
