//! The plan: what the engine runs, the bottom of the config layer. A [`Plan`] is a
//! validated spec with typed units: per direction, flows (each a matcher and a chain of
//! [`Stage`]s) and a default chain, resource [`Limits`], a seed and a schedule of
//! [`Step`]s. Stages are known by a typed [`StageId`] (their [`ChainId`] and name):
//! configuration changes are diffed by it. [`SpecError`] names the spec's field.
//!
//! Nothing here knows how a spec is written: the shapes users write (synthetic-network's
//! QoS objects, the native chains, netem lines) live in [`crate::spec`], above this
//! file, and build plans out of these types.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use synthnet_core::flow::FlowMatch;
use synthnet_core::Direction;
use synthnet_runtime::PluginRef;

/// A spec error: the field (a path like `flows[0].link.ingress.rate`) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    pub field: String,
    pub reason: String,
}

pub(crate) fn err(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        reason: reason.into(),
    }
}
/// Resource bounds. Units in the names; every field optional.
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Packet buffers in flight across the whole engine (each up to 64 KiB + headroom
    /// virtual, touched only as far as used). Bounds memory under any flood.
    pub pool_packets: usize,
    /// Large buffers (64 KiB each) for GSO/GRO super-packets, within the bridge's pool.
    pub pool_large_packets: usize,
    /// Packets one plugin may hold in its delay line.
    pub hold_packets: usize,
    /// Linear memory cap per plugin instance, MiB.
    pub plugin_memory_mib: usize,
    /// Flows a spec may have (each direction's classifier tells them apart).
    pub max_flows: usize,
    /// Stages (plugin instances) over both directions and every chain: what the
    /// configuration costs in memory, about [`STAGE_COST_BYTES`] each.
    pub max_stages: usize,
}

/// What a stage costs when it starts, measured: its instance's touched linear memory
/// and wasmtime's store, the host's batch buffers and two links (`check` adds it up).
/// The plugin may grow its memory later, up to `plugin_memory_mib`.
pub const STAGE_COST_BYTES: usize = 96 << 10;
/// What a bridge costs with no stage (code, wasmtime, receive rings, the pool as far
/// as an idle link touches it): measured 35 MiB, with margin.
pub const BASE_COST_BYTES: usize = 48 << 20;

impl Limits {
    /// The packet pool these limits allow: MTU-sized slots, and a few large ones for
    /// super-packets (GSO/GRO, a host capture); a frame larger still is `too_big`. The
    /// one constructor the bridge and replay both build their engine's pool with.
    pub fn pool(&self) -> synthnet_core::PacketPool {
        use synthnet_core::packet::{LARGE_FRAME, SMALL_FRAME};
        synthnet_core::PacketPool::with_large(
            self.pool_packets,
            SMALL_FRAME,
            self.pool_large_packets,
            LARGE_FRAME,
        )
    }
}

impl Plan {
    /// Resident memory a bridge running this plan takes at start, about (see
    /// [`STAGE_COST_BYTES`]): what `check` prints.
    pub fn memory_at_start(&self) -> usize {
        BASE_COST_BYTES + self.stage_count() * STAGE_COST_BYTES
    }
}
/// The most any spec may raise `max_flows` and `max_stages` to.
pub const MAX_FLOWS_CEILING: usize = 65_536;
pub const MAX_STAGES_CEILING: usize = 65_536;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pool_packets: 65_536,
            pool_large_packets: 512,
            hold_packets: 65_536,
            plugin_memory_mib: 64,
            max_flows: 4_096,
            max_stages: 4_096,
        }
    }
}

/// One resolved plugin instance of a chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    /// Unique within its chain: the stage's identity there (defaults to the plugin's
    /// name).
    pub name: String,
    pub plugin: PluginRef,
    pub config: Value,
}

/// A chain's place: its direction and its flow (`None`: the default chain).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ChainId {
    pub dir: Direction,
    pub flow: Option<String>,
}

/// A stage's identity: its chain and its name there. Configuration changes are diffed
/// by it: a stage with the same id keeps running (or is swapped in place, keeping its
/// held packets), whatever else moved around it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StageId {
    pub chain: ChainId,
    pub name: String,
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.dir,
            self.flow.as_deref().unwrap_or("default")
        )
    }
}

/// Serialized as it is written in logs and URLs: `ingress/default/latency`.
impl Serialize for StageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `DIRECTION/FLOW/NAME` (the flow `default` is the default chain), as [`StageId`]
/// displays.
impl std::str::FromStr for StageId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let [dir, flow, name] = parts[..] else {
            return Err(format!(
                "{s:?} is not a stage: DIRECTION/FLOW/NAME, e.g. ingress/default/latency"
            ));
        };
        let dir: Direction = dir.parse()?;
        for (what, v) in [("flow", flow), ("stage name", name)] {
            if v.is_empty() || v.len() > 64 || !v.chars().all(is_name_char) {
                return Err(format!(
                    "{s:?}: the {what} must be 1 to 64 letters, digits, '_' or '-'"
                ));
            }
        }
        Ok(StageId {
            chain: ChainId {
                dir,
                flow: (flow != "default").then(|| flow.to_string()),
            },
            name: name.to_string(),
        })
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.chain, self.name)
    }
}

/// A flow of one direction: its label, what it matches and its chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowPlan {
    pub label: String,
    pub matcher: FlowMatch,
    pub chain: Vec<Stage>,
}

/// One direction: flows tried in order (first match wins), else the default chain.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DirectionPlan {
    pub default: Vec<Stage>,
    pub flows: Vec<FlowPlan>,
}

/// Which shape the spec was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Shape {
    SyntheticNetworkSimple,
    SyntheticNetworkFlows,
    Native,
}

/// A validated spec, ready for the engine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub shape: Shape,
    pub seed: u64,
    pub limits: Limits,
    pub ingress: DirectionPlan,
    pub egress: DirectionPlan,
    /// Changes at set times after this plan is applied (ramps already cut into steps),
    /// in time order. Their plans have no schedule of their own.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<Step>,
}

/// One scheduled change: at `at_ns` after the plan that carries it was applied, `plan`
/// (if any) replaces the running one through the one apply path, then `command` (if
/// any) is sent to its stage, at the same instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub at_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Box<Plan>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<StageCommand>,
}

/// A command for one running stage (ABI 1.1 `synthnet_command`): any JSON value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageCommand {
    pub stage: StageId,
    pub command: Value,
}

/// The largest command, serialized (the link ABI's limit).
pub const MAX_COMMAND_BYTES: usize = 64 << 10;

/// A command's size within [`MAX_COMMAND_BYTES`], or why not.
pub fn check_command(command: &Value) -> Result<(), String> {
    let n = serde_json::to_vec(command).map_or(usize::MAX, |v| v.len());
    if n > MAX_COMMAND_BYTES {
        return Err(format!(
            "a command is at most {MAX_COMMAND_BYTES} bytes of JSON, got {n}"
        ));
    }
    Ok(())
}

impl Plan {
    pub fn direction(&self, d: Direction) -> &DirectionPlan {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// Direction `d`'s chains in classifier order: one per flow, then the default.
    pub fn chains(&self, d: Direction) -> impl Iterator<Item = (ChainId, &[Stage])> {
        let dp = self.direction(d);
        dp.flows
            .iter()
            .map(move |f| {
                let id = ChainId {
                    dir: d,
                    flow: Some(f.label.clone()),
                };
                (id, &f.chain[..])
            })
            .chain(std::iter::once((
                ChainId { dir: d, flow: None },
                &dp.default[..],
            )))
    }

    /// Every stage of direction `d`, with its id, in chain order.
    pub fn stages(&self, d: Direction) -> impl Iterator<Item = (StageId, &Stage)> {
        self.chains(d).flat_map(|(chain, stages)| {
            stages.iter().map(move |s| {
                let id = StageId {
                    chain: chain.clone(),
                    name: s.name.clone(),
                };
                (id, s)
            })
        })
    }

    /// Stages over both directions and every chain.
    pub fn stage_count(&self) -> usize {
        [&self.ingress, &self.egress]
            .iter()
            .map(|d| d.default.len() + d.flows.iter().map(|f| f.chain.len()).sum::<usize>())
            .sum()
    }
}

/// The seed of one plugin instance: the spec's seed mixed with the stage's identity.
pub fn seed_for(seed: u64, id: &StageId) -> u64 {
    let flow = id.chain.flow.as_deref().unwrap_or("");
    let mut h = synthnet_runtime::fingerprint(&[
        &seed.to_le_bytes(),
        id.chain.dir.name().as_bytes(),
        flow.as_bytes(),
        id.name.as_bytes(),
    ]);
    synthnet_sdk::rng::splitmix64(&mut h)
}

pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// A flow label or stage name: 1 to 64 letters, digits, '_' or '-' (they appear in
/// logs, metrics and URLs).
pub(crate) fn check_name(name: &str, at: &str) -> Result<(), SpecError> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(is_name_char) {
        return Err(err(
            at,
            format!("{name:?} must be 1 to 64 letters, digits, '_' or '-'"),
        ));
    }
    Ok(())
}
