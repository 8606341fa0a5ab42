//! Specs: the JSON a user writes, parsed and validated into a [`Plan`].
//!
//! Three shapes are accepted (see `specs/README.md`):
//!
//! - synthetic-network's `{"ingress": QoS, "egress": QoS}`;
//! - synthetic-network's `{"default_link": {"ingress": QoS, "egress": QoS}, "flows": [..]}`;
//! - the native form: a plugin chain per direction (`"ingress": [..]`, `"egress": [..]`),
//!   each plugin built in or a `.wasm` path with its own config, a `seed`, memory and
//!   hold limits, and flows matching IPv4/IPv6 prefixes, protocols and port ranges.
//!
//! A QoS object maps onto the built-in plugins in synthetic-network's order: rate, loss,
//! latency, jitter. Unknown fields and impossible values are errors naming the field
//! (`ingress.loss: must be within 0..=1, got 1.5`). Only a [`Plan`] reaches the engine.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use synthnet_core::flow::{FlowMatch, Prefix};
use synthnet_core::Direction;
use synthnet_runtime::{registry, PluginRef};

/// A spec error: the field (a path like `flows[0].link.ingress.rate`) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    pub field: String,
    pub reason: String,
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        reason: reason.into(),
    }
}

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

/// One entry of a native chain: a plugin with its config, or a netem line.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct NativeStage {
    /// A built-in name (`latency`, `delay`, `jitter`, `rate`, `loss`, `duplicate`,
    /// `corrupt`, `trace`) or a path to a `.wasm` file (relative to the spec's directory).
    plugin: Option<String>,
    #[serde(default)]
    config: Value,
    /// tc-netem(8) options, expanded into built-ins ([`crate::netem`]).
    netem: Option<String>,
    /// App name; defaults to the plugin's name (for a netem line: the prefix of its
    /// stages' names, default `netem`).
    name: Option<String>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
struct NativeMatch {
    /// Address or prefix; matched against the source on ingress, the destination on
    /// egress.
    ip: Option<String>,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or a protocol number.
    protocol: Option<ProtoField>,
    port_min: Option<u16>,
    port_max: Option<u16>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
enum ProtoField {
    Number(u8),
    Name(String),
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct NativeFlow {
    label: String,
    #[serde(rename = "match", default)]
    matcher: NativeMatch,
    #[serde(default)]
    ingress: Vec<NativeStage>,
    #[serde(default)]
    egress: Vec<NativeStage>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct NativeSpec {
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    ingress: Vec<NativeStage>,
    #[serde(default)]
    egress: Vec<NativeStage>,
    #[serde(default)]
    flows: Vec<NativeFlow>,
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

/// Most steps a schedule may expand to (ramps make one every [`RAMP_STEP_S`]).
pub const MAX_SCHEDULE_STEPS: usize = 10_000;
/// A ramp moves its numbers this often.
pub const RAMP_STEP_S: f64 = 0.1;

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

/// The spec synthnet runs when given none: a mildly bad mobile link
/// (`specs/default.json`).
pub const DEFAULT_SPEC: &str = include_str!("../../../specs/default.json");

/// The largest spec file accepted.
pub const MAX_SPEC_BYTES: u64 = 4 << 20;

/// Read and validate the spec at `path` (plugin paths are resolved against its
/// directory).
pub fn load(path: &Path) -> Result<Plan, SpecError> {
    load_value(path).map(|(_, plan)| plan)
}

/// Read and validate the spec at `path`: the JSON as written, and its plan.
pub fn load_value(path: &Path) -> Result<(Value, Plan), SpecError> {
    let at = || path.display().to_string();
    let bytes =
        synthnet_runtime::loader::read_file(path, MAX_SPEC_BYTES).map_err(|e| err(at(), e))?;
    let text = String::from_utf8(bytes).map_err(|_| err(at(), "not UTF-8 text"))?;
    let value = json_of(&text)?;
    let plan = from_value(&value, base_of(path))?;
    Ok((value, plan))
}

/// The directory relative plugin paths of the spec file at `path` are resolved against.
pub fn base_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Spec `text` as JSON (not yet validated).
pub fn json_of(text: &str) -> Result<Value, SpecError> {
    serde_json::from_str(text).map_err(|e| err("(spec)", format!("not valid JSON: {e}")))
}

/// Validate spec `text`; relative plugin paths are resolved against `base`.
pub fn parse(text: &str, base: &Path) -> Result<Plan, SpecError> {
    from_value(&json_of(text)?, base)
}

/// Validate a spec already read as JSON; relative plugin paths are resolved against
/// `base`. Any shape may carry a `"schedule"`: `[{"at_s", "spec", "ramp_s"?}]`, changes
/// to other specs at set times after this one is applied; with `ramp_s`, the numbers
/// both specs give move linearly from the previous spec's to this one's over that
/// long, a step every [`RAMP_STEP_S`] (other differences take effect at `at_s`).
pub fn from_value(value: &Value, base: &Path) -> Result<Plan, SpecError> {
    let Some(schedule) = value.get("schedule") else {
        return shape_plan(value, base);
    };
    let mut rest = value.clone();
    if let Some(o) = rest.as_object_mut() {
        o.remove("schedule");
    }
    let mut plan = shape_plan(&rest, base)?;
    plan.schedule = schedule_steps(schedule, &rest, base)?;
    Ok(plan)
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct StepSpec {
    at_s: f64,
    spec: Option<Value>,
    #[serde(default)]
    ramp_s: f64,
    command: Option<CommandSpec>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct CommandSpec {
    stage: String,
    command: Value,
}

/// A schedule entry's command, checked against `plan` (the plan in force at its time).
fn step_command(c: &CommandSpec, plan: &Plan, at: &str) -> Result<StageCommand, SpecError> {
    let field = format!("{at}.command.stage");
    let stage: StageId = c.stage.parse().map_err(|e: String| err(&field, e))?;
    if !plan.stages(stage.chain.dir).any(|(id, _)| id == stage) {
        return Err(err(
            field,
            format!("no stage {stage} in the plan in force at that time"),
        ));
    }
    check_command(&c.command).map_err(|e| err(format!("{at}.command.command"), e))?;
    Ok(StageCommand {
        stage,
        command: c.command.clone(),
    })
}

/// A spec error inside `at`, with the field's path below it.
fn within(at: &str, e: SpecError) -> SpecError {
    let field = if e.field == "(spec)" {
        at.to_string()
    } else {
        format!("{at}.{}", e.field)
    };
    err(field, e.reason)
}

/// `a` moved a fraction `f` of the way to `b`: numbers both give are interpolated
/// (whole numbers stay whole), anything else is `b`'s.
fn lerp(a: &Value, b: &Value, f: f64) -> Value {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (xf, yf) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            let v = xf + (yf - xf) * f;
            match (x.is_u64() && y.is_u64(), x.is_i64() && y.is_i64()) {
                (true, _) => json!(v.round() as u64),
                (_, true) => json!(v.round() as i64),
                _ => json!(v),
            }
        }
        (Value::Object(x), Value::Object(y)) => Value::Object(
            y.iter()
                .map(|(k, vb)| (k.clone(), x.get(k).map_or(vb.clone(), |va| lerp(va, vb, f))))
                .collect(),
        ),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            Value::Array(x.iter().zip(y).map(|(va, vb)| lerp(va, vb, f)).collect())
        }
        _ => b.clone(),
    }
}

/// The steps of a `"schedule"` (ramps cut into steps), validated.
fn schedule_steps(schedule: &Value, first: &Value, base: &Path) -> Result<Vec<Step>, SpecError> {
    let steps: Vec<StepSpec> = typed(schedule).map_err(|e| {
        let field = if e.field == "(spec)" {
            "schedule".to_string()
        } else {
            format!("schedule{}", e.field)
        };
        err(field, e.reason)
    })?;
    let mut out = Vec::new();
    let (mut prev, mut prev_at) = (first.clone(), 0.0f64);
    // The plan in force after the entries so far (commands are checked against it).
    let mut in_force = shape_plan(first, base)?;
    for (i, st) in steps.iter().enumerate() {
        let at = format!("schedule[{i}]");
        if !(st.at_s.is_finite() && (prev_at..=86_400.0).contains(&st.at_s)) {
            return Err(err(
                format!("{at}.at_s"),
                format!(
                    "must be within {prev_at}..=86400 s (not before the step before it), got {}",
                    st.at_s
                ),
            ));
        }
        if !(st.ramp_s.is_finite() && (0.0..=3600.0).contains(&st.ramp_s)) {
            return Err(err(
                format!("{at}.ramp_s"),
                format!("must be within 0..=3600 s, got {}", st.ramp_s),
            ));
        }
        let Some(spec) = &st.spec else {
            let Some(c) = &st.command else {
                return Err(err(at, "needs a \"spec\", a \"command\" or both"));
            };
            if st.ramp_s > 0.0 {
                return Err(err(
                    format!("{at}.ramp_s"),
                    "ramps a spec: this entry has none",
                ));
            }
            out.push(Step {
                at_ns: (st.at_s * 1e9) as u64,
                plan: None,
                command: Some(step_command(c, &in_force, &at)?),
            });
            check_steps(out.len())?;
            prev_at = st.at_s;
            continue;
        };
        if spec.get("schedule").is_some() {
            return Err(err(
                format!("{at}.spec.schedule"),
                "a step cannot have a schedule of its own",
            ));
        }
        let target = shape_plan(spec, base).map_err(|e| within(&format!("{at}.spec"), e))?;
        if st.command.is_some() && st.ramp_s > 0.0 {
            return Err(err(
                format!("{at}.command"),
                "cannot be combined with ramp_s (give the command an entry of its own)",
            ));
        }
        let command = st
            .command
            .as_ref()
            .map(|c| step_command(c, &target, &at))
            .transpose()?;
        let n = (st.ramp_s / RAMP_STEP_S).ceil() as usize;
        if n == 0 {
            out.push(Step {
                at_ns: (st.at_s * 1e9) as u64,
                plan: Some(Box::new(target.clone())),
                command,
            });
        } else {
            for k in 1..=n {
                let f = k as f64 / n as f64;
                let plan = if k == n {
                    target.clone()
                } else {
                    shape_plan(&lerp(&prev, spec, f), base)
                        .map_err(|e| within(&format!("{at}.ramp_s"), e))?
                };
                out.push(Step {
                    at_ns: ((st.at_s + st.ramp_s * f) * 1e9) as u64,
                    plan: Some(Box::new(plan)),
                    command: None,
                });
                if out.len() > MAX_SCHEDULE_STEPS {
                    break;
                }
            }
        }
        check_steps(out.len())?;
        prev = spec.clone();
        prev_at = st.at_s + st.ramp_s;
        in_force = target;
    }
    Ok(out)
}

fn check_steps(n: usize) -> Result<(), SpecError> {
    if n > MAX_SCHEDULE_STEPS {
        return Err(err(
            "schedule",
            format!(
                "more than {MAX_SCHEDULE_STEPS} changes (a ramp makes one every {RAMP_STEP_S} s)"
            ),
        ));
    }
    Ok(())
}

/// A spec of one of the three shapes, without a schedule, within its limits.
fn shape_plan(value: &Value, base: &Path) -> Result<Plan, SpecError> {
    let plan = any_shape(value, base)?;
    let flows = plan.ingress.flows.len();
    let l = &plan.limits;
    if flows > l.max_flows {
        return Err(err(
            "flows",
            format!(
                "{flows} flows, more than the {} a spec of this shape may have",
                l.max_flows
            ),
        ));
    }
    let stages = plan.stage_count();
    if stages > l.max_stages {
        return Err(err(
            "(spec)",
            format!(
                "{stages} stages (plugin instances, about {} MiB at start), more than \
                 limits.max_stages = {} (raise it, up to {MAX_STAGES_CEILING}, if this \
                 machine has the memory)",
                (stages * STAGE_COST_BYTES) >> 20,
                l.max_stages
            ),
        ));
    }
    Ok(plan)
}

fn any_shape(value: &Value, base: &Path) -> Result<Plan, SpecError> {
    let Value::Object(obj) = value else {
        return Err(err("(spec)", "must be a JSON object"));
    };
    let is_native = ["ingress", "egress"]
        .iter()
        .any(|k| obj.get(*k).is_some_and(Value::is_array))
        || ["seed", "limits"].iter().any(|k| obj.contains_key(*k))
        || obj
            .get("flows")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|x| x.get("match").is_some()));
    if is_native {
        let spec: NativeSpec = typed(value)?;
        return native_plan(spec, base);
    }
    if obj.contains_key("default_link") || obj.contains_key("flows") {
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
        return Ok(Plan {
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
        });
    }
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

/// Deserialize with the path of the failing field in the error.
fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, SpecError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner().to_string();
        err(if field == "." { "(spec)".into() } else { field }, inner)
    })
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// A flow label or stage name: 1 to 64 letters, digits, '_' or '-' (they appear in
/// logs, metrics and URLs).
fn check_name(name: &str, at: &str) -> Result<(), SpecError> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(is_name_char) {
        return Err(err(
            at,
            format!("{name:?} must be 1 to 64 letters, digits, '_' or '-'"),
        ));
    }
    Ok(())
}

/// A flow label: a valid name, not `default`, and unique among `seen`.
fn check_label(
    label: &str,
    at: &str,
    seen: &mut std::collections::HashSet<String>,
) -> Result<(), SpecError> {
    check_name(label, at)?;
    if label == "default" {
        return Err(err(at, "\"default\" is reserved"));
    }
    if !seen.insert(label.to_string()) {
        return Err(err(at, format!("duplicate label {label:?}")));
    }
    Ok(())
}

fn ratio(v: Option<f64>, at: &str) -> Result<f64, SpecError> {
    let v = v.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&v) {
        return Err(err(at, format!("must be within 0..=1, got {v}")));
    }
    Ok(v)
}

fn non_negative(v: Option<f64>, at: &str, unit: &str) -> Result<f64, SpecError> {
    let v = v.unwrap_or(0.0);
    if !(v >= 0.0 && v.is_finite()) {
        return Err(err(at, format!("must be a number ≥ 0 ({unit}), got {v}")));
    }
    Ok(v)
}

fn stage(plugin: &str, config: Value) -> Stage {
    Stage {
        name: plugin.to_string(),
        plugin: PluginRef::Builtin(plugin.to_string()),
        config,
    }
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
        if v > synthnet_sdk::MAX_DELAY_MS {
            return Err(err(
                format!("{at}.{field}"),
                format!(
                    "must be at most {} ms (a day), got {v}",
                    synthnet_sdk::MAX_DELAY_MS
                ),
            ));
        }
    }
    let mut chain = Vec::new();
    if blocked {
        // synthetic-network's `rate: 0`: nothing gets through.
        chain.push(Stage {
            name: "blocked".into(),
            plugin: PluginRef::Builtin("loss".into()),
            config: json!({"loss_ratio": 1.0}),
        });
    }
    if rate > 0.0 {
        let rate_bps = rate.round() as u64;
        // A bucket of 1 ms of traffic (at least one full frame) and a queue of 100 ms
        // (at least 64 KiB): what a home router's shaper gives.
        let burst_bytes = (rate_bps / 8 / 1000).max(1514);
        let queue_bytes = (rate_bps / 8 / 10).max(64 * 1024);
        chain.push(stage(
            "rate",
            json!({"rate_bps": rate_bps, "burst_bytes": burst_bytes, "queue_bytes": queue_bytes}),
        ));
    }
    if loss > 0.0 {
        chain.push(stage("loss", json!({"loss_ratio": loss})));
    }
    if latency > 0.0 {
        chain.push(stage("latency", json!({"delay_ms": latency})));
    }
    if jitter > 0.0 && strength > 0.0 {
        let reorder = q.reorder_packets.unwrap_or(false);
        chain.push(stage(
            "jitter",
            json!({"jitter_ms": jitter, "strength": strength, "reorder": reorder}),
        ));
    }
    Ok(chain)
}

fn parse_prefix(s: &str, at: &str) -> Result<Prefix, SpecError> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| err(at, format!("{s:?} is not an IP address or prefix")))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| err(at, format!("prefix length in {s:?} must be 0..={max}")))?,
        None => max,
    };
    Ok(Prefix { addr, len })
}

fn native_chain(
    stages: &[NativeStage],
    at: &str,
    base: &Path,
    seed: &mut Option<u64>,
) -> Result<Vec<Stage>, SpecError> {
    let mut names = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (i, s) in stages.iter().enumerate() {
        let here = format!("{at}[{i}]");
        let expanded = match (&s.plugin, &s.netem) {
            (Some(_), Some(_)) => {
                return Err(err(here, "give either \"plugin\" or \"netem\", not both"))
            }
            (None, None) => return Err(err(here, "needs a \"plugin\" (or a \"netem\" line)")),
            (Some(plugin), None) => vec![native_stage(s, plugin, &here, base)?],
            (None, Some(line)) => {
                if !s.config.is_null() {
                    return Err(err(
                        format!("{here}.config"),
                        "a netem line takes no config: its options are in the line",
                    ));
                }
                let prefix = s.name.as_deref().unwrap_or("netem");
                check_name(prefix, &format!("{here}.name"))?;
                let (stages, line_seed) =
                    crate::netem::expand(line, prefix, &format!("{here}.netem"))?;
                if let Some(v) = line_seed {
                    match seed {
                        Some(s) if *s != v => {
                            return Err(err(
                                format!("{here}.netem"),
                                format!("seed {v} differs from the spec's seed {s}"),
                            ))
                        }
                        _ => *seed = Some(v),
                    }
                }
                stages
            }
        };
        for st in expanded {
            if !names.insert(st.name.clone()) {
                return Err(err(
                    format!("{here}.name"),
                    format!(
                        "{:?} is used twice in this chain: give one a \"name\"",
                        st.name
                    ),
                ));
            }
            out.push(st);
        }
    }
    Ok(out)
}

/// One plugin entry of a native chain, resolved.
fn native_stage(
    s: &NativeStage,
    plugin: &str,
    here: &str,
    base: &Path,
) -> Result<Stage, SpecError> {
    let resolved = if registry::wasm(plugin).is_some() {
        PluginRef::Builtin(plugin.to_string())
    } else if plugin.ends_with(".wasm") {
        let p = Path::new(plugin);
        PluginRef::File(if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        })
    } else {
        let known: Vec<&str> = registry::names().collect();
        return Err(err(
            format!("{here}.plugin"),
            format!(
                "{plugin:?} is neither a built-in ({}) nor a .wasm path",
                known.join(", ")
            ),
        ));
    };
    if !(s.config.is_object() || s.config.is_null()) {
        return Err(err(format!("{here}.config"), "must be a JSON object"));
    }
    let name = match (&s.name, &resolved) {
        (Some(n), _) => {
            check_name(n, &format!("{here}.name"))?;
            n.clone()
        }
        (None, PluginRef::Builtin(n)) => n.clone(),
        // A file's stem, made a valid name (`my-plugin.v2.wasm` → `my-plugin_v2`).
        (None, PluginRef::File(p)) => p
            .file_stem()
            .map(|s| {
                s.to_string_lossy()
                    .chars()
                    .map(|c| if is_name_char(c) { c } else { '_' })
                    .collect()
            })
            .filter(|n: &String| !n.is_empty())
            .unwrap_or_else(|| "plugin".into()),
    };
    let mut config = if s.config.is_null() {
        json!({})
    } else {
        s.config.clone()
    };
    if let (PluginRef::Builtin(b), Some(file)) = (&resolved, config.get("trace_file")) {
        if b == "trace" {
            let file = file
                .as_str()
                .ok_or_else(|| err(format!("{here}.config.trace_file"), "must be a path"))?;
            let trace = read_trace(&base.join(file), &format!("{here}.config.trace_file"))?;
            if let Some(m) = config.as_object_mut() {
                m.remove("trace_file");
                m.insert("trace_ms".into(), json!(trace));
            }
        }
    }
    Ok(Stage {
        name,
        plugin: resolved,
        config,
    })
}

/// The largest trace file read (Mahimahi's bundled traces are a few MB).
const MAX_TRACE_BYTES: u64 = 64 << 20;

/// A Mahimahi trace file: one delivery opportunity per line, its time in ms.
fn read_trace(path: &Path, at: &str) -> Result<Vec<u64>, SpecError> {
    let bytes = synthnet_runtime::loader::read_file(path, MAX_TRACE_BYTES)
        .map_err(|e| err(at, format!("{}: {e}", path.display())))?;
    let text = String::from_utf8(bytes).map_err(|_| err(at, "not UTF-8 text"))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            l.trim().parse::<u64>().map_err(|_| {
                err(
                    at,
                    format!(
                        "{} line {}: {:?} is not a time in ms",
                        path.display(),
                        i + 1,
                        l.trim()
                    ),
                )
            })
        })
        .collect()
}

fn native_plan(spec: NativeSpec, base: &Path) -> Result<Plan, SpecError> {
    let l = &spec.limits;
    let in_range = |field: &str, v: usize, lo: usize, hi: usize| {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(err(
                format!("limits.{field}"),
                format!("must be within {lo}..={hi}, got {v}"),
            ))
        }
    };
    in_range("pool_packets", l.pool_packets, 1024, 1 << 22)?;
    in_range("pool_large_packets", l.pool_large_packets, 16, 65_536)?;
    in_range("hold_packets", l.hold_packets, 1, 1 << 24)?;
    in_range("plugin_memory_mib", l.plugin_memory_mib, 1, 4096)?;
    in_range("max_flows", l.max_flows, 0, MAX_FLOWS_CEILING)?;
    in_range("max_stages", l.max_stages, 1, MAX_STAGES_CEILING)?;
    if spec.flows.len() > l.max_flows {
        return Err(err(
            "flows",
            format!(
                "{} flows, more than limits.max_flows = {} (raise it, up to {MAX_FLOWS_CEILING}, \
                 if this machine has the memory: see `synthnet check`)",
                spec.flows.len(),
                l.max_flows
            ),
        ));
    }
    // A netem line's `seed` is the spec's seed (when the spec gives none).
    let mut seed = (spec.seed != 0).then_some(spec.seed);
    let mut ingress = DirectionPlan {
        default: native_chain(&spec.ingress, "ingress", base, &mut seed)?,
        flows: vec![],
    };
    let mut egress = DirectionPlan {
        default: native_chain(&spec.egress, "egress", base, &mut seed)?,
        flows: vec![],
    };
    let mut labels = std::collections::HashSet::new();
    for (i, f) in spec.flows.iter().enumerate() {
        let at = format!("flows[{i}]");
        check_label(&f.label, &format!("{at}.label"), &mut labels)?;
        let m = &f.matcher;
        let prefix =
            m.ip.as_deref()
                .map(|s| parse_prefix(s, &format!("{at}.match.ip")))
                .transpose()?;
        let protocol = match &m.protocol {
            None => None,
            // 0 is "any", as in synthetic-network's form (IP protocol 0, IPv6
            // hop-by-hop, is an extension header, never a flow's transport).
            Some(ProtoField::Number(0)) => None,
            Some(ProtoField::Number(n)) => Some(*n),
            Some(ProtoField::Name(n)) => Some(match n.to_ascii_lowercase().as_str() {
                "tcp" => 6,
                "udp" => 17,
                "icmp" => 1,
                "icmpv6" => 58,
                "sctp" => 132,
                "dccp" => 33,
                "udplite" => 136,
                other => {
                    return Err(err(
                        format!("{at}.match.protocol"),
                        format!(
                        "{other:?} is not tcp, udp, icmp, icmpv6, sctp, dccp, udplite or a number"
                    ),
                    ))
                }
            }),
        };
        let ports = match (m.port_min, m.port_max) {
            (None, None) => None,
            (lo, hi) => {
                let (lo, hi) = (lo.unwrap_or(0), hi.unwrap_or(u16::MAX));
                if lo > hi {
                    return Err(err(
                        format!("{at}.match.port_min"),
                        format!("{lo} is above port_max {hi}"),
                    ));
                }
                if !protocol.is_some_and(|p| synthnet_sdk::flow::PORTED.contains(&p)) {
                    return Err(err(
                        format!("{at}.match.protocol"),
                        "port ranges need a protocol with ports: tcp, udp, udplite, sctp or dccp",
                    ));
                }
                Some((lo, hi))
            }
        };
        let matcher = FlowMatch {
            prefix,
            protocol,
            ports,
        };
        ingress.flows.push(FlowPlan {
            label: f.label.clone(),
            matcher: matcher.clone(),
            chain: native_chain(&f.ingress, &format!("{at}.ingress"), base, &mut seed)?,
        });
        egress.flows.push(FlowPlan {
            label: f.label.clone(),
            matcher,
            chain: native_chain(&f.egress, &format!("{at}.egress"), base, &mut seed)?,
        });
    }
    Ok(Plan {
        shape: Shape::Native,
        schedule: Vec::new(),
        seed: seed.unwrap_or(spec.seed),
        limits: spec.limits,
        ingress,
        egress,
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Plan, SpecError> {
        parse(text, Path::new("."))
    }

    #[test]
    fn empty_spec_forwards_everything() {
        let plan = p("{}").unwrap();
        assert!(plan.ingress.default.is_empty() && plan.egress.default.is_empty());
    }

    #[test]
    fn compat_simple_maps_in_synthetic_network_order() {
        let plan = p(r#"{"ingress": {"latency": 20, "loss": 0.1, "rate": 1000000, "jitter": 3}}"#)
            .unwrap();
        let names: Vec<&str> = plan
            .ingress
            .default
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["rate", "loss", "latency", "jitter"]);
        assert_eq!(plan.ingress.default[2].config, json!({"delay_ms": 20.0}));
        assert_eq!(plan.ingress.default[3].config["strength"], json!(1.0));
    }

    #[test]
    fn compat_flows_use_labels_and_matchers() {
        let plan = p(r#"{"default_link": {"ingress": {"rate": 10000000}, "egress": {}},
            "flows": [{"label": "http", "flow": {"ip": 0, "protocol": 6, "port_min": 80, "port_max": 80},
                       "link": {"ingress": {"latency": 50}, "egress": {"loss": 0.5}}}]}"#)
        .unwrap();
        assert_eq!(plan.shape, Shape::SyntheticNetworkFlows);
        let f = &plan.ingress.flows[0];
        assert_eq!(
            f.matcher,
            FlowMatch {
                prefix: None,
                protocol: Some(6),
                ports: Some((80, 80))
            }
        );
        assert_eq!(f.chain[0].name, "latency");
        assert_eq!(
            plan.egress.flows[0].chain[0].config,
            json!({"loss_ratio": 0.5})
        );
    }

    #[test]
    fn impossible_values_name_the_field() {
        let e = p(r#"{"ingress": {"loss": 1.5}}"#).unwrap_err();
        assert_eq!(e.field, "ingress.loss");
        let e = p(r#"{"egress": {"latency": -5}}"#).unwrap_err();
        assert_eq!(e.field, "egress.latency");
        let e = p(r#"{"ingress": {"lattency": 5}}"#).unwrap_err();
        assert_eq!(e.field, "ingress.lattency");
        assert!(e.reason.contains("unknown field"), "{e}");
        let e = p(r#"{"default_link": {"ingress": {}}, "flows": [{"label": "a b", "flow": {}}]}"#)
            .unwrap_err();
        assert_eq!(e.field, "flows[0].label");
        let e = p(r#"{"ingress": [{"plugin": "latncy"}]}"#).unwrap_err();
        assert_eq!(e.field, "ingress[0].plugin");
        let e = p(r#"{"flows": [{"label": "x", "match": {"ip": "10.0.0.0/33"}}]}"#).unwrap_err();
        assert_eq!(e.field, "flows[0].match.ip");
    }

    #[test]
    fn prefixes_match_v4_and_v6() {
        let v4 = parse_prefix("10.1.0.0/16", "x").unwrap();
        assert!(v4.contains("10.1.2.3".parse().unwrap()));
        assert!(!v4.contains("10.2.0.1".parse().unwrap()));
        assert!(!v4.contains("::1".parse().unwrap()));
        let v6 = parse_prefix("2001:db8::/32", "x").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::5".parse().unwrap()));
    }

    #[test]
    fn synthetic_network_ip_numbers_and_rate_zero_mean_what_they_mean_there() {
        let plan = p(r#"{"default_link": {"ingress": {"rate": 0}, "egress": {}},
            "flows": [{"label": "a", "flow": {"ip": 16777226}, "link": {}}]}"#)
        .unwrap();
        let ip = plan.ingress.flows[0].matcher.prefix.unwrap().addr;
        assert_eq!(ip, "10.0.0.1".parse::<IpAddr>().unwrap());
        let blocked = &plan.ingress.default[0];
        assert_eq!(
            (blocked.name.as_str(), &blocked.config),
            ("blocked", &json!({"loss_ratio": 1.0}))
        );
        assert!(
            p(r#"{"ingress": {}}"#).unwrap().ingress.default.is_empty(),
            "no rate: unlimited"
        );
        // Native protocol 0 is "any", as in the compat form.
        let plan = p(r#"{"flows": [{"label": "x", "match": {"protocol": 0}}]}"#).unwrap();
        assert_eq!(plan.ingress.flows[0].matcher.protocol, None);
    }

    #[test]
    fn flows_and_stages_past_their_limits_are_refused_with_the_numbers() {
        let e = p(r#"{"limits": {"max_stages": 2},
            "ingress": [{"plugin": "latency"}, {"plugin": "loss", "name": "l2"}],
            "egress": [{"plugin": "latency"}]}"#)
        .unwrap_err();
        assert!(e.reason.starts_with("3 stages"), "{e}");
        assert!(e.reason.contains("limits.max_stages = 2"), "{e}");
        let e = p(r#"{"limits": {"max_flows": 1}, "flows": [
            {"label": "a", "match": {"protocol": "udp"}},
            {"label": "b", "match": {"protocol": "tcp"}}]}"#)
        .unwrap_err();
        assert_eq!(e.field, "flows");
        assert!(
            e.reason.contains("2 flows, more than limits.max_flows = 1"),
            "{e}"
        );
        let ok = p(r#"{"limits": {"max_stages": 3},
            "ingress": [{"plugin": "latency"}, {"plugin": "loss", "name": "l2"}],
            "egress": [{"plugin": "latency"}]}"#)
        .unwrap();
        assert_eq!(ok.stage_count(), 3);
        assert!(
            describe(&ok).contains("3 stages × 96 KiB"),
            "{}",
            describe(&ok)
        );
    }

    #[test]
    fn compat_values_out_of_range_name_the_users_field() {
        let e = p(r#"{"ingress": {"rate": 1.4e12}}"#).unwrap_err();
        assert_eq!(e.field, "ingress.rate");
        let e = p(r#"{"ingress": {"latency": 1e308}}"#).unwrap_err();
        assert_eq!(e.field, "ingress.latency");
        let e = p(r#"{"egress": {"jitter": 1e13}}"#).unwrap_err();
        assert_eq!(e.field, "egress.jitter");
    }

    #[test]
    fn default_spec_is_valid() {
        p(DEFAULT_SPEC).unwrap();
    }

    #[test]
    fn netem_lines_expand_in_native_chains() {
        let plan = p(r#"{"ingress": [{"netem": "delay 10ms loss 1% seed 7"},
                                      {"plugin": "latency", "config": {"delay_ms": 1}}]}"#)
        .unwrap();
        let names: Vec<&str> = plan
            .ingress
            .default
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["netem-loss", "netem-delay", "latency"]);
        assert_eq!(plan.seed, 7);
        for (text, field) in [
            (
                r#"{"ingress": [{"netem": "delay 1ms", "plugin": "latency"}]}"#,
                "ingress[0]",
            ),
            (
                r#"{"ingress": [{"netem": "delay 1ms", "config": {"x": 1}}]}"#,
                "ingress[0].config",
            ),
            (
                r#"{"ingress": [{"netem": "delay 1ms"}, {"netem": "delay 2ms"}]}"#,
                "ingress[1].name",
            ),
            (
                r#"{"seed": 3, "ingress": [{"netem": "delay 1ms seed 4"}]}"#,
                "ingress[0].netem",
            ),
            (
                r#"{"egress": [{"netem": "delay 1ms bogus 3"}]}"#,
                "egress[0].netem",
            ),
            (r#"{"ingress": [{"config": {}}]}"#, "ingress[0]"),
        ] {
            assert_eq!(p(text).unwrap_err().field, field, "{text}");
        }
        // Two netem lines in one chain: named apart.
        let plan =
            p(r#"{"ingress": [{"netem": "delay 1ms"}, {"netem": "delay 2ms", "name": "lossy"}]}"#)
                .unwrap();
        assert_eq!(plan.ingress.default[1].name, "lossy-delay");
    }

    #[test]
    fn a_trace_file_is_read_into_the_trace_plugins_config() {
        let dir = std::env::temp_dir().join(format!("synthnet-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("link.trace"), "1\n1\n3\n\n7\n").unwrap();
        std::fs::write(dir.join("bad.trace"), "1\nsoon\n").unwrap();
        let spec = r#"{"ingress": [{"plugin": "trace", "config": {"trace_file": "link.trace"}}]}"#;
        let plan = parse(spec, &dir).unwrap();
        assert_eq!(
            plan.ingress.default[0].config,
            json!({"trace_ms": [1, 1, 3, 7]})
        );
        let e = parse(&spec.replace("link.trace", "bad.trace"), &dir).unwrap_err();
        assert_eq!(e.field, "ingress[0].config.trace_file");
        assert!(e.reason.contains("line 2"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn schedules_step_and_ramp() {
        let plan = p(r#"{"ingress": {"latency": 10}, "egress": {},
                         "schedule": [{"at_s": 1, "spec": {"ingress": {"latency": 20}, "egress": {}}},
                                      {"at_s": 2, "ramp_s": 0.5, "spec": {"ingress": {"latency": 70}, "egress": {}}}]}"#)
        .unwrap();
        let at: Vec<u64> = plan.schedule.iter().map(|s| s.at_ns / 1_000_000).collect();
        assert_eq!(at, [1000, 2100, 2200, 2300, 2400, 2500]);
        let delays: Vec<Value> = plan
            .schedule
            .iter()
            .map(|s| s.plan.as_ref().unwrap().ingress.default[0].config["delay_ms"].clone())
            .collect();
        assert_eq!(
            delays,
            [
                json!(20.0),
                json!(30.0),
                json!(40.0),
                json!(50.0),
                json!(60.0),
                json!(70.0)
            ]
        );
        assert!(plan
            .schedule
            .iter()
            .all(|s| s.plan.as_ref().unwrap().schedule.is_empty()));
        assert!(describe(&plan).contains("schedule: 6 changes from 1.000 s to 2.500 s"));
        for (text, field) in [
            (
                r#"{"schedule": [{"at_s": -1, "spec": {}}]}"#,
                "schedule[0].at_s",
            ),
            (
                r#"{"schedule": [{"at_s": 2, "spec": {}}, {"at_s": 1, "spec": {}}]}"#,
                "schedule[1].at_s",
            ),
            (
                r#"{"schedule": [{"at_s": 1, "spec": {"ingress": {"loss": 3}}}]}"#,
                "schedule[0].spec.ingress.loss",
            ),
            (
                r#"{"schedule": [{"at_s": 1, "spec": {"schedule": []}}]}"#,
                "schedule[0].spec.schedule",
            ),
            (r#"{"schedule": [{"at_s": 1}]}"#, "schedule[0]"),
            (
                r#"{"schedule": [{"at_s": 1, "ramp_s": 3600, "spec": {}}]}"#,
                "schedule",
            ),
        ] {
            assert_eq!(p(text).unwrap_err().field, field, "{text}");
        }
    }

    #[test]
    fn schedule_commands_are_checked_against_the_plan_in_force() {
        let plan = p(r#"{"ingress": {"latency": 10}, "egress": {},
                         "schedule": [{"at_s": 1, "command": {"stage": "ingress/default/latency", "command": {"x": 1}}},
                                      {"at_s": 2, "spec": {"ingress": {"loss": 0.1}, "egress": {}},
                                       "command": {"stage": "ingress/default/loss", "command": "reset"}}]}"#)
        .unwrap();
        assert_eq!(plan.schedule.len(), 2);
        let first = &plan.schedule[0];
        assert!(first.plan.is_none());
        let c = first.command.as_ref().unwrap();
        assert_eq!(c.stage.to_string(), "ingress/default/latency");
        assert_eq!(c.command, json!({"x": 1}));
        assert!(plan.schedule[1].plan.is_some());
        assert!(describe(&plan).contains("at 2.000 s, command to ingress/default/loss: \"reset\""));
        let big = "x".repeat(MAX_COMMAND_BYTES);
        for (text, field) in [
            // Not in the plan in force at 1 s (loss arrives at 2 s).
            (
                r#"{"ingress": {"latency": 10}, "schedule": [{"at_s": 1, "command": {"stage": "ingress/default/loss", "command": {}}},
                    {"at_s": 2, "spec": {"ingress": {"loss": 0.1}}}]}"#.to_string(),
                "schedule[0].command.stage",
            ),
            // Gone by 2 s: the step's spec comes first.
            (
                r#"{"ingress": {"latency": 10}, "schedule": [{"at_s": 2, "spec": {"ingress": {"loss": 0.1}},
                    "command": {"stage": "ingress/default/latency", "command": {}}}]}"#.to_string(),
                "schedule[0].command.stage",
            ),
            (
                r#"{"ingress": {"latency": 10}, "schedule": [{"at_s": 1, "command": {"stage": "sideways/default/latency", "command": {}}}]}"#.to_string(),
                "schedule[0].command.stage",
            ),
            (
                r#"{"ingress": {"latency": 10}, "schedule": [{"at_s": 1, "command": {"stage": "ingress/default/latency"}}]}"#.to_string(),
                "schedule[0].command",
            ),
            (
                format!(r#"{{"ingress": {{"latency": 10}}, "schedule": [{{"at_s": 1, "command": {{"stage": "ingress/default/latency", "command": "{big}"}}}}]}}"#),
                "schedule[0].command.command",
            ),
            (
                r#"{"ingress": {"latency": 10}, "schedule": [{"at_s": 1, "ramp_s": 1, "spec": {"ingress": {"latency": 20}},
                    "command": {"stage": "ingress/default/latency", "command": {}}}]}"#.to_string(),
                "schedule[0].command",
            ),
            (
                r#"{"ingress": {"latency": 10}, "schedule": [{"at_s": 1, "ramp_s": 1, "command": {"stage": "ingress/default/latency", "command": {}}}]}"#.to_string(),
                "schedule[0].ramp_s",
            ),
        ] {
            let e = p(&text).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
        }
    }

    #[test]
    fn stage_ids_parse_as_they_display() {
        for s in ["ingress/default/latency", "egress/dns/loss-2"] {
            let id: StageId = s.parse().unwrap();
            assert_eq!(id.to_string(), s);
        }
        let id: StageId = "ingress/default/latency".parse().unwrap();
        assert_eq!(id.chain.flow, None);
        for bad in [
            "ingress/latency",
            "up/default/x",
            "ingress/default/",
            "ingress/a b/x",
            "a/b/c/d",
        ] {
            assert!(bad.parse::<StageId>().is_err(), "{bad}");
        }
    }

    /// F15 of the review: a stage name carried control characters into the logs.
    #[test]
    fn stage_names_cannot_carry_control_characters() {
        let e = p(r#"{"ingress": [{"plugin": "latency", "config": {"delay_ms": 1}, "name": "a\nstats: FAKE\u001b[31mred"}], "egress": []}"#)
            .unwrap_err();
        assert_eq!(e.field, "ingress[0].name");
        assert!(e.reason.contains("letters, digits"), "{e}");
    }
}
