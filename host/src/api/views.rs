//! What the API shows of the engine's publications: stats per direction and stage, and
//! the flow list, with rates derived from the latest two publications (off the packet
//! thread).

use crate::daemon::board::{DirectionFlows, Pair, Published};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::Duration;
use synthnet_config::apply::DirectionStats;
use synthnet_core::flow::FiveTuple;
use synthnet_core::flowtable::FlowStats;
use synthnet_core::Direction;

/// Seconds between the two publications (at least a nanosecond).
fn span_s(pair: &Pair) -> Option<(f64, &Published)> {
    let prev = pair.previous.as_deref()?;
    let ns = pair.latest.at_ns.saturating_sub(prev.at_ns).max(1);
    Some((ns as f64 / 1e9, prev))
}

fn rate(now: u64, before: u64, secs: f64) -> f64 {
    now.saturating_sub(before) as f64 / secs
}

/// `GET /api/v1/stats`: cumulative counters per direction and stage, and rates over
/// the last publication period.
pub fn stats(pair: &Pair, uptime: Duration) -> Value {
    let snap = &pair.latest.snapshot;
    let span = span_s(pair);
    let directions: Vec<Value> = snap
        .directions
        .iter()
        .map(|d| {
            let before: Option<(&DirectionStats, f64)> = span.and_then(|(secs, prev)| {
                let b = prev
                    .snapshot
                    .directions
                    .iter()
                    .find(|x| x.direction == d.direction)?;
                Some((b, secs))
            });
            let (rx_pps, tx_pps, tx_bps) = before
                .map(|(b, s)| {
                    (
                        rate(d.rx_packets, b.rx_packets, s),
                        rate(d.tx_packets, b.tx_packets, s),
                        rate(d.tx_bytes, b.tx_bytes, s) * 8.0,
                    )
                })
                .unwrap_or_default();
            let stages: Vec<Value> = d
                .stages
                .iter()
                .map(|st| {
                    let pc: Map<String, Value> = st
                        .plugin_counters
                        .iter()
                        .map(|(k, v)| (k.clone(), json!(v)))
                        .collect();
                    json!({
                        "id": st.id.to_string(),
                        "direction": st.id.chain.dir,
                        "flow": st.id.chain.flow,
                        "name": st.id.name,
                        "plugin": st.plugin,
                        "counters": st.counters,
                        "held": st.held,
                        "health": st.health,
                        "plugin_counters": pc,
                    })
                })
                .collect();
            json!({
                "direction": d.direction,
                "rx_packets": d.rx_packets,
                "rx_bytes": d.rx_bytes,
                "tx_packets": d.tx_packets,
                "tx_bytes": d.tx_bytes,
                "held": d.held,
                "drops": d.drops,
                "rx_pps": rx_pps,
                "tx_pps": tx_pps,
                "tx_bps": tx_bps,
                "stages": stages,
            })
        })
        .collect();
    json!({
        "generation": snap.generation,
        "uptime_s": uptime.as_secs_f64(),
        "at_s": pair.latest.at_ns as f64 / 1e9,
        "pool": {"capacity": snap.pool_capacity, "in_use": snap.pool_in_use},
        "directions": directions,
    })
}

/// Commands handed to plugins, per stage: `{stage: {"answered", "refused"}}`.
pub fn commands(counts: &crate::daemon::worker::CommandCounts) -> Value {
    let m: Map<String, Value> = counts
        .iter()
        .map(|(k, (ok, no))| (k.clone(), json!({"answered": ok, "refused": no})))
        .collect();
    Value::Object(m)
}

/// One flow of one direction, after impairment, with what entered for it.
pub struct FlowRow {
    pub direction: Direction,
    pub key: FiveTuple,
    pub sent: FlowStats,
    pub received: FlowStats,
    pub pps: f64,
    pub bps: f64,
}

/// The flows of the latest publication (`None` when accounting is off), each with its
/// rate since the one before.
pub fn flow_rows(pair: &Pair, direction: Option<Direction>) -> Option<Vec<FlowRow>> {
    let latest = pair.latest.flows.as_ref()?;
    let span = span_s(pair);
    let mut out = Vec::new();
    for (dir, f) in latest
        .iter()
        .filter(|(d, _)| direction.is_none_or(|x| x == *d))
    {
        let prev: HashMap<FiveTuple, FlowStats> = span
            .and_then(|(_, p)| p.flows.as_ref())
            .and_then(|fl| fl.iter().find(|(d, _)| d == dir))
            .map(|(_, pf): &(Direction, DirectionFlows)| pf.sent.rows.iter().copied().collect())
            .unwrap_or_default();
        let received: HashMap<FiveTuple, FlowStats> = f.received.rows.iter().copied().collect();
        let sent: HashMap<FiveTuple, FlowStats> = f.sent.rows.iter().copied().collect();
        // Flows that entered and never left (all dropped, or all still held) count too.
        let keys = sent
            .keys()
            .chain(received.keys().filter(|k| !sent.contains_key(k)));
        for &key in keys {
            let s = sent.get(&key).copied().unwrap_or_default();
            let (pps, bps) = match (span, prev.get(&key)) {
                (Some((secs, _)), Some(p)) => (
                    rate(s.packets, p.packets, secs),
                    rate(s.bytes, p.bytes, secs) * 8.0,
                ),
                (Some((secs, _)), None) => (s.packets as f64 / secs, s.bytes as f64 * 8.0 / secs),
                _ => (0.0, 0.0),
            };
            out.push(FlowRow {
                direction: *dir,
                key,
                sent: s,
                received: received.get(&key).copied().unwrap_or_default(),
                pps,
                bps,
            });
        }
    }
    Some(out)
}

/// `GET /api/v1/flows`: the `top` flows by current rate (then by bytes).
pub fn flows(pair: &Pair, direction: Option<Direction>, top: usize) -> Option<Value> {
    let mut rows = flow_rows(pair, direction)?;
    let tracked = rows.len();
    rows.sort_by(|a, b| {
        b.bps
            .total_cmp(&a.bps)
            .then(b.sent.bytes.cmp(&a.sent.bytes))
    });
    let now = pair.latest.at_ns;
    let list: Vec<Value> = rows
        .iter()
        .take(top)
        .map(|r| {
            let last = r.sent.last_ns.max(r.received.last_ns);
            json!({
                "direction": r.direction,
                "src": r.key.src.to_string(),
                "dst": r.key.dst.to_string(),
                "protocol": r.key.protocol,
                "src_port": r.key.src_port,
                "dst_port": r.key.dst_port,
                "packets": r.sent.packets,
                "bytes": r.sent.bytes,
                "rx_packets": r.received.packets,
                "rx_bytes": r.received.bytes,
                // Entered and did not leave: dropped, or still held by a delay.
                "undelivered": r.received.packets.saturating_sub(r.sent.packets),
                "pps": r.pps,
                "bps": r.bps,
                "last_seen_ms": now.saturating_sub(last) / 1_000_000,
            })
        })
        .collect();
    let fl = pair.latest.flows.as_ref()?;
    let capacity: usize = fl
        .iter()
        .filter(|(d, _)| direction.is_none_or(|x| x == *d))
        .map(|(_, f)| f.sent.capacity)
        .sum();
    let untracked: u64 = fl
        .iter()
        .filter(|(d, _)| direction.is_none_or(|x| x == *d))
        .map(|(_, f)| f.sent.untracked.packets)
        .sum();
    Some(json!({
        "flows": list,
        "tracked": tracked,
        "capacity": capacity,
        "untracked_packets": untracked,
    }))
}
