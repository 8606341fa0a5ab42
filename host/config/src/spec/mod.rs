//! Specs: the JSON a user writes, parsed and validated into a [`Plan`].
//!
//! Three shapes are accepted (see `specs/README.md`), each in a file of its own:
//!
//! - synthetic-network's `{"ingress": QoS, "egress": QoS}` and
//!   `{"default_link": {"ingress": QoS, "egress": QoS}, "flows": [..]}` ([`qos`]);
//! - the native form ([`native`]), whose chains may hold tc-netem(8) lines ([`netem`]).
//!
//! Any shape may carry a schedule ([`schedule`]). Unknown fields and impossible values
//! are errors naming the field (`ingress.loss: must be within 0..=1, got 1.5`). Only a
//! [`Plan`] reaches the engine.
//!
//! Imports run one way, down: this file → `schedule` → `shape` → `qos`, `native` →
//! `netem` → `fields` → [`crate::plan`].

mod fields;
pub mod native;
pub mod netem;
pub mod qos;
pub mod schedule;
mod shape;

pub use qos::{qos_chain, QoS};

use crate::plan::{err, Plan, SpecError};
use serde_json::Value;
use std::path::Path;

/// The spec synthnet runs when given none: a mildly bad mobile link
/// (`specs/default.json`).
pub const DEFAULT_SPEC: &str = include_str!("../../../../specs/default.json");

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
/// long, a step every [`schedule::RAMP_STEP_S`] (other differences take effect at `at_s`).
pub fn from_value(value: &Value, base: &Path) -> Result<Plan, SpecError> {
    let Some(schedule) = value.get("schedule") else {
        return shape::shape_plan(value, base);
    };
    let mut rest = value.clone();
    if let Some(o) = rest.as_object_mut() {
        o.remove("schedule");
    }
    let mut plan = shape::shape_plan(&rest, base)?;
    plan.schedule = schedule::schedule_steps(schedule, &rest, base)?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::describe;
    use crate::plan::{Shape, StageId, MAX_COMMAND_BYTES};
    use fields::parse_prefix;
    use serde_json::json;
    use std::net::IpAddr;
    use synthnet_core::flow::FlowMatch;

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
        // Settings at the plugin's default are left out of the JSON: the jitter
        // plugin reads strength 1 all the same.
        let jitter: synthnet_builtins::jitter::Config =
            serde_json::from_value(plan.ingress.default[3].config.clone()).unwrap();
        assert_eq!((jitter.jitter_ms, jitter.strength), (3.0, 1.0));
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
