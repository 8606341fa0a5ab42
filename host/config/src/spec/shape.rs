//! Which of the three shapes a spec is written in, and its plan within its limits
//! (without its schedule: [`super::schedule`] adds that).

use super::fields::typed;
use super::native::{native_plan, NativeSpec};
use super::qos;
use crate::plan::{err, Plan, SpecError, MAX_STAGES_CEILING, STAGE_COST_BYTES};
use serde_json::Value;
use std::path::Path;

/// A spec of one of the three shapes, without a schedule, within its limits.
pub(crate) fn shape_plan(value: &Value, base: &Path) -> Result<Plan, SpecError> {
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
        return qos::flows_plan(value);
    }
    qos::simple_plan(value)
}
