//! Every config the spec layer writes for a built-in plugin (from a synthetic-network
//! QoS object, a tc-netem(8) line or a Mahimahi trace file) is one the plugin accepts: the typed value,
//! serialized to the bytes the apply path hands over, parsed and started by the
//! plugin's own code (its native build, through the SDK's `Harness`, which fails as the
//! host would on a bad config).

use synthnet_config::plan::Stage;
use synthnet_config::spec::netem::expand;
use synthnet_config::spec::{qos_chain, QoS};
use synthnet_runtime::PluginRef;
use synthnet_sdk::{Harness, MAX_DELAY_MS};

/// Start built-in `plugin` with `config` as the plugin itself reads it.
fn start(plugin: &str, config: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(config).map_err(|e| e.to_string())?;
    match plugin {
        "corrupt" => Harness::<synthnet_plugin_corrupt::Corrupt>::new(text, 7).map(drop),
        "delay" => Harness::<synthnet_plugin_delay::Delay>::new(text, 7).map(drop),
        "duplicate" => Harness::<synthnet_plugin_duplicate::Duplicate>::new(text, 7).map(drop),
        "jitter" => Harness::<synthnet_plugin_jitter::Jitter>::new(text, 7).map(drop),
        "latency" => Harness::<synthnet_plugin_latency::Latency>::new(text, 7).map(drop),
        "loss" => Harness::<synthnet_plugin_loss::Loss>::new(text, 7).map(drop),
        "rate" => Harness::<synthnet_plugin_rate::Rate>::new(text, 7).map(drop),
        "slot" => Harness::<synthnet_plugin_slot::Slot>::new(text, 7).map(drop),
        "trace" => Harness::<synthnet_plugin_trace::Trace>::new(text, 7).map(drop),
        other => Err(format!(
            "the spec layer wrote a config for {other:?}, not tested here"
        )),
    }
}

/// Each stage's config, as bytes (as `apply` serializes it), accepted by its plugin.
/// Returns the plugins seen.
fn all_accepted(stages: &[Stage], what: &str) -> Vec<String> {
    stages
        .iter()
        .map(|s| {
            let PluginRef::Builtin(plugin) = &s.plugin else {
                panic!("{what}: stage {} is not a built-in", s.name);
            };
            let bytes = serde_json::to_vec(&s.config).unwrap();
            if let Err(e) = start(plugin, &bytes) {
                panic!(
                    "{what}: {plugin} refuses the config the spec layer wrote ({}): {e}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            plugin.clone()
        })
        .collect()
}

#[test]
fn netem_expansions_are_configs_the_plugins_accept() {
    let lines = [
        "delay 100ms",
        "delay 100ms 10ms",
        "delay 100ms 10ms 25%",
        "delay 100ms 20ms distribution normal",
        "delay 100ms 20ms distribution pareto",
        "delay 100ms 20ms distribution paretonormal",
        "delay 100ms 20ms 100% distribution uniform",
        "delay 1ms reorder 25% 50% gap 5",
        "delay 10ms reorder 25%",
        "delay 86400s",
        "delay 0.2ms limit 512",
        "loss 0.1%",
        "loss random 0.3% 25%",
        "loss 100%",
        "loss state 1% 10% 70% 0.1%",
        "loss state 1% 10% 70% 0.1% 0.5%",
        "loss gemodel 1% 10% 70% 0.1%",
        "loss gemodel 1%",
        "loss 1% ecn",
        "corrupt 0.1%",
        "corrupt 5% 25%",
        "duplicate 1%",
        "duplicate 2% 25%",
        "rate 10mbit",
        "rate 8bit",
        "rate 10tbit",
        "rate 5kbit 20 100 5",
        "rate 1gbit -20",
        "slot 800us 10ms",
        "slot 800us 10ms packets 42 bytes 64k",
        "slot 1ms",
        "slot distribution pareto 1ms 2ms packets 4",
        "slot distribution uniform 1ms 2ms",
        "limit 10000 delay 20ms duplicate 2% 25% loss 1% corrupt 0.1% rate 200mbit slot 1ms seed 5",
        "tc qdisc add dev eth0 root netem delay 100ms 10ms 25% distribution normal loss gemodel 1% 10% 70% 0.1% ecn rate 10mbit",
    ];
    let mut seen = std::collections::BTreeSet::new();
    for line in lines {
        let (stages, _) =
            expand(line, "netem", "ingress[0].netem").unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(!stages.is_empty(), "{line}");
        seen.extend(all_accepted(&stages, line));
    }
    let want = ["corrupt", "delay", "duplicate", "loss", "rate", "slot"];
    assert_eq!(seen.iter().map(String::as_str).collect::<Vec<_>>(), want);
}

#[test]
fn qos_chains_are_configs_the_plugins_accept() {
    let q = |rate, loss, latency, jitter, strength, reorder| QoS {
        rate,
        loss,
        latency,
        jitter,
        jitter_strength: strength,
        reorder_packets: reorder,
    };
    let cases = [
        q(Some(1e6), Some(0.1), Some(20.0), Some(3.0), None, None),
        q(Some(0.0), None, None, None, None, None),
        q(
            Some(8.0),
            Some(1.0),
            Some(MAX_DELAY_MS),
            Some(MAX_DELAY_MS),
            Some(0.5),
            Some(true),
        ),
        q(
            Some(1e12),
            Some(1e-9),
            Some(0.001),
            Some(0.001),
            Some(1.0),
            Some(false),
        ),
        q(Some(12_345.6), None, Some(5.5), Some(2.0), Some(1e-6), None),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (i, c) in cases.iter().enumerate() {
        let what = format!("case {i}: {c:?}");
        let stages = qos_chain(c, "ingress").unwrap_or_else(|e| panic!("{what}: {e}"));
        seen.extend(all_accepted(&stages, &what));
    }
    let want = ["jitter", "latency", "loss", "rate"];
    assert_eq!(seen.iter().map(String::as_str).collect::<Vec<_>>(), want);
}

#[test]
fn a_trace_files_config_is_one_the_trace_plugin_accepts() {
    let dir = std::env::temp_dir().join(format!("synthnet-builtins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("link.trace"), "1\n1\n3\n\n7\n").unwrap();
    std::fs::write(dir.join("down.trace"), "5\n3\n").unwrap();
    let spec = r#"{"ingress": [{"plugin": "trace", "config": {"trace_file": "link.trace", "queue": "codel", "once": true}}]}"#;
    let plan = synthnet_config::spec::parse(spec, &dir).unwrap();
    assert_eq!(all_accepted(&plan.ingress.default, spec), ["trace"]);
    // What the plugin would refuse is refused when the spec is read, naming the file.
    let e =
        synthnet_config::spec::parse(&spec.replace("link.trace", "down.trace"), &dir).unwrap_err();
    assert_eq!(e.field, "ingress[0].config.trace_file");
    assert!(e.reason.contains("must not decrease"), "{e}");
    let e = synthnet_config::spec::parse(&spec.replace("once", "onse"), &dir).unwrap_err();
    assert_eq!(e.field, "ingress[0].config.onse");
    assert!(e.reason.contains("unknown field `onse`"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
