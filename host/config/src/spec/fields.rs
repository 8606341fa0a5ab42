//! Field helpers the spec shapes share: typed deserialization with the failing field's
//! path, labels, IP prefixes and the range checks of QoS numbers.

use crate::plan::{check_name, err, SpecError, Stage};
use serde_json::Value;
use std::net::IpAddr;
use synthnet_builtins::Builtin;
use synthnet_core::flow::Prefix;
use synthnet_runtime::PluginRef;
use synthnet_sdk::config::{check_non_negative, check_ratio};

/// Deserialize with the path of the failing field in the error.
pub(crate) fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, SpecError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner().to_string();
        err(if field == "." { "(spec)".into() } else { field }, inner)
    })
}

/// A flow label: a valid name, not `default`, and unique among `seen`.
pub(crate) fn check_label(
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

/// A QoS ratio (absent: 0), within 0..=1.
pub(crate) fn ratio(v: Option<f64>, at: &str) -> Result<f64, SpecError> {
    check_ratio(v.unwrap_or(0.0)).map_err(|e| err(at, e))
}

/// A QoS number (absent: 0), finite and ≥ 0.
pub(crate) fn non_negative(v: Option<f64>, at: &str, unit: &str) -> Result<f64, SpecError> {
    check_non_negative(v.unwrap_or(0.0), unit).map_err(|e| err(at, e))
}

/// A stage `name` running the built-in `C::PLUGIN` with config `c`, checked by the
/// plugin's own [`Builtin::validate`] (an error names the plugin's field, within `at`).
/// Its JSON is serialized from the typed value, leaving out what is at its default, so
/// the config (and `synthnet check`) says what the spec chose.
pub(crate) fn builtin<C: Builtin>(name: &str, c: &C, at: &str) -> Result<Stage, SpecError> {
    c.validate()
        .map_err(|e| err(at, format!("{} ({}): {e}", name, C::PLUGIN)))?;
    let json = |c: &C| serde_json::to_value(c).map_err(|e| err(at, e.to_string()));
    let mut config = json(c)?;
    if let (Value::Object(m), Value::Object(d)) = (&mut config, json(&C::default())?) {
        m.retain(|k, v| d.get(k) != Some(v));
    }
    Ok(Stage {
        name: name.to_string(),
        plugin: PluginRef::Builtin(C::PLUGIN.to_string()),
        config,
    })
}

pub(crate) fn parse_prefix(s: &str, at: &str) -> Result<Prefix, SpecError> {
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
