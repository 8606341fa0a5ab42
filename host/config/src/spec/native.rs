//! The native shape: a plugin chain per direction (`"ingress": [..]`, `"egress": [..]`),
//! each entry a built-in or a `.wasm` path with its own config (or a netem line,
//! expanded by [`super::netem`]), a `seed`, memory and hold limits, and flows matching
//! IPv4/IPv6 prefixes, protocols and port ranges.

use super::fields::{builtin, check_label, parse_prefix, typed};
use super::netem;
use crate::plan::{
    check_name, err, is_name_char, DirectionPlan, FlowPlan, Limits, Plan, Shape, SpecError, Stage,
    MAX_FLOWS_CEILING, MAX_STAGES_CEILING,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::Path;
use synthnet_builtins::{trace, Builtin};
use synthnet_core::flow::FlowMatch;
use synthnet_runtime::{registry, PluginRef};

/// One entry of a native chain: a plugin with its config, or a netem line.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct NativeStage {
    /// A built-in name (`latency`, `delay`, `jitter`, `rate`, `loss`, `duplicate`,
    /// `corrupt`, `trace`) or a path to a `.wasm` file (relative to the spec's directory).
    plugin: Option<String>,
    #[serde(default)]
    config: Value,
    /// tc-netem(8) options, expanded into built-ins ([`super::netem`]).
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
pub(crate) struct NativeSpec {
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
                let (stages, line_seed) = netem::expand(line, prefix, &format!("{here}.netem"))?;
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
            // The trace plugin's config, its `trace_ms` read from the file.
            let field = format!("{here}.config.trace_file");
            let file = file.as_str().ok_or_else(|| err(&field, "must be a path"))?;
            let trace_ms = read_trace(&base.join(file), &field)?;
            if let Some(m) = config.as_object_mut() {
                m.remove("trace_file");
            }
            let mut c: trace::Config = typed(&config).map_err(|e| {
                let at = match e.field.as_str() {
                    "(spec)" => format!("{here}.config"),
                    f => format!("{here}.config.{f}"),
                };
                err(at, e.reason)
            })?;
            c.trace_ms = trace_ms;
            c.validate().map_err(|e| err(&field, e))?;
            return builtin(&name, &c, here);
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

pub(crate) fn native_plan(spec: NativeSpec, base: &Path) -> Result<Plan, SpecError> {
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
