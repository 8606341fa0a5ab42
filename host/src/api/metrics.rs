//! `GET /metrics`: every counter of the latest publication in the OpenMetrics text
//! format, encoded by `prometheus-client` from a [`Collector`] that reads the board at
//! scrape time (the engine never calls metrics code). Labels are directions, stages and
//! drop causes — never flows or addresses, whose number has no bound (they are in
//! `/api/v1/flows` and `/top/*.profile`).

use super::Shared;
use crate::daemon::board::Board;
use crate::daemon::worker::Handle;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use synthnet_config::apply::DirectionStats;
use synthnet_core::DropCause;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry `/metrics` encodes: one collector over the board.
pub fn registry(board: Arc<Board>, worker: Handle) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(BoardCollector { board, worker }));
    r
}

pub async fn serve(State(api): State<Shared>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &api.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => super::error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("encoding metrics: {e}"),
            None,
        ),
    }
}

struct BoardCollector {
    board: Arc<Board>,
    worker: Handle,
}

impl std::fmt::Debug for BoardCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BoardCollector")
    }
}

/// Label names and values of one series.
type Labels = Vec<(&'static str, String)>;

/// One value of a metric of type `kind`.
fn value(m: MetricEncoder<'_>, kind: MetricType, v: u64) -> std::fmt::Result {
    match kind {
        MetricType::Counter => ConstCounter::new(v).encode(m),
        _ => ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(m),
    }
}

/// One metric family: its name, help, type and labelled values.
fn family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    values: &[(Labels, u64)],
) -> std::fmt::Result {
    let mut fam = enc.encode_descriptor(name, help, None, kind)?;
    if let [(labels, v)] = values {
        if labels.is_empty() {
            return value(fam, kind, *v);
        }
    }
    for (labels, v) in values {
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        value(fam.encode_family(&labels)?, kind, *v)?;
    }
    Ok(())
}

impl Collector for BoardCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        use MetricType::{Counter, Gauge};
        let pair = self.board.read();
        let snap = &pair.latest.snapshot;
        let version = vec![("version", env!("CARGO_PKG_VERSION").to_string())];
        family(
            &mut enc,
            "synthnet_build_info",
            "synthnet's version",
            Gauge,
            &[(version, 1)],
        )?;
        let generation = self.worker.spec().generation;
        let help = "The configuration generation that runs";
        family(
            &mut enc,
            "synthnet_generation",
            help,
            Gauge,
            &[(vec![], generation)],
        )?;
        let dir = |d: &DirectionStats| vec![("direction", d.direction.name().to_string())];
        let per_dir = |f: fn(&DirectionStats) -> u64| -> Vec<(Labels, u64)> {
            snap.directions.iter().map(|d| (dir(d), f(d))).collect()
        };
        for (name, help, kind, f) in [
            (
                "synthnet_received_packets",
                "Packets received at a direction's source interface",
                Counter,
                (|d| d.rx_packets) as fn(&DirectionStats) -> u64,
            ),
            (
                "synthnet_received_bytes",
                "Bytes received at a direction's source interface",
                Counter,
                |d| d.rx_bytes,
            ),
            (
                "synthnet_sent_packets",
                "Packets sent by a direction's sink interface",
                Counter,
                |d| d.tx_packets,
            ),
            (
                "synthnet_sent_bytes",
                "Bytes sent by a direction's sink interface",
                Counter,
                |d| d.tx_bytes,
            ),
            (
                "synthnet_held_packets",
                "Packets a direction holds (delay lines, queues)",
                Gauge,
                |d| d.held as u64,
            ),
        ] {
            family(&mut enc, name, help, kind, &per_dir(f))?;
        }
        let mut drops = Vec::new();
        for d in &snap.directions {
            for c in DropCause::ALL {
                let mut l = dir(d);
                l.push(("cause", c.name().to_string()));
                drops.push((l, d.drops.get(c)));
            }
        }
        let help = "Packets dropped anywhere in a direction, by cause";
        family(&mut enc, "synthnet_dropped_packets", help, Counter, &drops)?;
        // Per stage: what went in, out, is held, was dropped, and what the plugin counts.
        let (mut stage_in, mut stage_out, mut stage_held, mut stage_drops, mut plugin) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for s in snap.directions.iter().flat_map(|d| &d.stages) {
            let l: Labels = vec![
                ("direction", s.id.chain.dir.name().to_string()),
                (
                    "flow",
                    s.id.chain.flow.clone().unwrap_or_else(|| "default".into()),
                ),
                ("stage", s.id.name.clone()),
            ];
            stage_in.push((l.clone(), s.counters.rx_packets));
            stage_out.push((l.clone(), s.counters.tx_packets));
            stage_held.push((l.clone(), s.held as u64));
            for c in DropCause::ALL {
                let mut lc = l.clone();
                lc.push(("cause", c.name().to_string()));
                stage_drops.push((lc, s.counters.drops.get(c)));
            }
            for (k, v) in &s.plugin_counters {
                let mut lc = l.clone();
                lc.push(("counter", k.clone()));
                plugin.push((lc, *v));
            }
        }
        for (name, help, kind, values) in [
            (
                "synthnet_stage_received_packets",
                "Packets a stage took in",
                Counter,
                stage_in,
            ),
            (
                "synthnet_stage_sent_packets",
                "Packets a stage passed on",
                Counter,
                stage_out,
            ),
            (
                "synthnet_stage_held_packets",
                "Packets a stage holds",
                Gauge,
                stage_held,
            ),
            (
                "synthnet_stage_dropped_packets",
                "Packets a stage dropped, by cause",
                Counter,
                stage_drops,
            ),
            (
                "synthnet_plugin_counter",
                "Counters a plugin publishes itself",
                Counter,
                plugin,
            ),
        ] {
            family(&mut enc, name, help, kind, &values)?;
        }
        // Commands handed to plugins, per stage and outcome (stages that got none have
        // no series).
        let mut commands = Vec::new();
        for (id, (ok, refused)) in self.worker.command_counts() {
            let mut parts = id.splitn(3, '/');
            let (d, f, n) = (parts.next(), parts.next(), parts.next());
            let (Some(d), Some(f), Some(n)) = (d, f, n) else {
                continue;
            };
            let l = |result: &str| -> Labels {
                vec![
                    ("direction", d.to_string()),
                    ("flow", f.to_string()),
                    ("stage", n.to_string()),
                    ("result", result.to_string()),
                ]
            };
            commands.push((l("answered"), ok));
            commands.push((l("refused"), refused));
        }
        if !commands.is_empty() {
            let help = "Commands handed to a stage's plugin, by whether it answered or refused";
            family(
                &mut enc,
                "synthnet_stage_commands",
                help,
                Counter,
                &commands,
            )?;
        }
        let pool = [
            (
                "synthnet_pool_packets",
                "Packet buffers of the pool",
                snap.pool_capacity,
            ),
            (
                "synthnet_pool_in_use_packets",
                "Packet buffers in use",
                snap.pool_in_use,
            ),
        ];
        for (name, help, n) in pool {
            family(&mut enc, name, help, Gauge, &[(vec![], n as u64)])?;
        }
        Ok(())
    }
}
